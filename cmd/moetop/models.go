package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/moetop/moetop/presets"
)

const modelsUsage = `moetop models: the MoE layers of published models that --model NAME runs,
from each model's config.json: shapes, router, the format its weights are
published in, and the memory one layer's experts take (moetop runs them in
bf16 for now). Flags given beside --model override the preset's fields.

Usage:
  moetop models [--json]
`

// bytesPerParam is what one weight takes in a published format.
func bytesPerParam(format string) float64 {
	switch format {
	case presets.FP32:
		return 4
	case presets.FP8Block:
		return 1 + 4.0/(128*128) // a float32 scale per 128×128 block
	case presets.MXFP4:
		return (4 + 8.0/32) / 8 // e2m1 values, an 8-bit scale per 32
	}
	return 2
}

func runModels(_ context.Context, args []string, stdout, _ io.Writer) error {
	fs := flag.NewFlagSet("moetop models", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print the presets as JSON")
	if err := parse(fs, args, modelsUsage, stdout); err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", " ")
		return enc.Encode(presets.All())
	}
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "name\thidden\tffn\texperts\ttop-k\tshared\trouter\tmoe layers\tweights\tlayer in bf16\tas published")
	for _, p := range presets.All() {
		shared := "-"
		if p.SharedExperts > 0 {
			shared = fmt.Sprintf("%d×%d", p.SharedExperts, p.SharedFFN/max(1, p.SharedExperts))
		}
		params := float64(p.LayerParams())
		fmt.Fprintf(tw, "%s\t%d\t%d\t%d\t%d\t%s\t%s\t%d\t%s\t%.2f GiB\t%.2f GiB\n", p.Name, p.Hidden, p.FFN, p.Experts,
			p.TopK, shared, routerName(p.Router), p.Layers, p.Weights, params*2/(1<<30), params*bytesPerParam(p.Weights)/(1<<30))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Fprintln(stdout, "\nNot modelled:")
	for _, p := range presets.All() {
		if p.Differs != "" {
			fmt.Fprintf(stdout, "  %s: %s\n", p.Name, p.Differs)
		}
	}
	return nil
}

func routerName(r presets.Router) string {
	switch r.Kind {
	case presets.Softmax:
		if r.NormTopK {
			return "softmax"
		}
		return "softmax-nonorm"
	case presets.SigmoidGrouped:
		return fmt.Sprintf("sigmoid %d/%d groups ×%g", r.TopKGroups, r.Groups, r.ScalingFactor)
	}
	return string(r.Kind)
}
