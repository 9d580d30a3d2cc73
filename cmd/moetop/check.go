package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"math/rand/v2"
	"strings"
	"text/tabwriter"

	"github.com/moetop/moetop/kernels"
)

const checkUsage = `moetop check: every backend against the CPU reference.

Runs each backend in each dtype on random shapes (odd sizes, 1 to 256
experts, top-k up to 8 and now and then up to 64, experts with no rows),
with every activation (gelu, silu, swiglu, geglu), every router (softmax,
softmax-nonorm, sigmoid-grouped with groups and a routed scale) and shared
experts in every other case. The output is filled with NaN before each
run; the layer output is compared with the float32 CPU reference on the
same inputs and routing, and the router's choice with the reference
router's on the backend's own logits. A backend that cannot run on this
machine is skipped, saying why; one that takes only some shapes gets as
many random shapes it takes, and a dtype it refuses is skipped, saying
why. Exits 1 on any mismatch, or when no
backend could be checked.

Usage:
  moetop check [--cases N] [--backends LIST] [--dtypes LIST] [--seed S]
`

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("moetop check", flag.ContinueOnError)
	cases := fs.Int("cases", 6, "random shapes per backend and dtype")
	backends := fs.String("backends", strings.Join(kernels.Checked(), ","), "backends to check")
	dtypes := fs.String("dtypes", "bf16,fp16,fp32,tf32", "dtypes to check")
	seed := fs.Uint64("seed", 1, "seed for the random shapes")
	gpuFlags(fs)
	if err := parse(fs, args, checkUsage, stdout); err != nil {
		return err
	}
	if *cases < 1 {
		return usagef("invalid --cases %d; want at least 1", *cases)
	}
	names, err := splitBackends(*backends)
	if err != nil {
		return err
	}
	dts, err := splitDTypes(*dtypes)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(*seed, 0x6d6f65))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "backend\tdtype\ttokens\thidden\tffn\texperts\ttop-k\tact\tshared\trouter\tzero-row\trel err\ttolerance\tchoice\tresult")
	caps := probeGPU()
	failed, total := 0, 0
	var skipped []string
	for _, name := range names {
		if ctx.Err() != nil {
			break
		}
		reg, _ := kernels.Lookup(name)
		if err := reg.Check(caps, kernels.Shape{}); err != nil {
			skipped = append(skipped, "skipped "+oneLine(err.Error()))
			continue
		}
		be, err := openBackend(name)
		if err != nil {
			return fmt.Errorf("check %s: %w", name, err)
		}
		b, ok := be.(kernels.Checkable)
		if !ok {
			be.Close()
			return fmt.Errorf("check %s: the backend cannot read its output back (not kernels.Checkable)", name)
		}
		// A backend that takes only some shapes (hopper: sizes in
		// multiples of 8, bf16 and fp16) is checked on as many of those;
		// a dtype it refuses outright is reported as skipped.
		accepted, refused := kernels.AcceptedCases(rng, reg, caps, dts, *cases)
		for _, why := range refused {
			skipped = append(skipped, "skipped "+oneLine(why))
		}
		for _, c := range accepted {
			if ctx.Err() != nil {
				break // report the cases that ran
			}
			r := kernels.Check(ctx, b, c, rng)
			total++
			verdict := "ok"
			if !r.Pass() {
				failed++
				verdict = "FAIL"
				if r.Err != nil {
					verdict += ": " + oneLine(r.Err.Error())
				}
			}
			s := c.Shape
			shared := "-"
			if w := s.SharedWidth(); w > 0 {
				shared = fmt.Sprintf("%d×%d", s.SharedExperts, w/s.SharedExperts)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\t%d\t%.2e\t%.0e\t%d bad\t%s\n", name, s.DType, s.Tokens,
				s.Hidden, s.FFN, s.Experts, s.TopK, s.Act, shared, s.Router, r.ZeroRowExperts, r.RelErr, r.Tolerance,
				r.RouterMismatches, verdict)
		}
		b.Close()
	}
	tw.Flush()
	for _, s := range skipped {
		fmt.Fprintln(stdout, s)
	}
	fmt.Fprintf(stdout, "%d passed, %d failed, %d skipped (backends or dtypes)\n", total-failed, failed, len(skipped))
	switch {
	case ctx.Err() != nil:
		return fmt.Errorf("check: interrupted after %d cases", total)
	case failed > 0:
		return fmt.Errorf("check: %d of %d cases failed", failed, total)
	case total == 0:
		return fmt.Errorf("check: no backend could run here (%d skipped)", len(skipped))
	}
	return nil
}

// gpuFlags registers the flags that say where the GPU is.
func gpuFlags(fs *flag.FlagSet) {
	fs.StringVar(&cudaOptions.LibDir, "cuda-lib-dir", "", "look for libcuda, libcublas and libnvrtc here first")
	fs.IntVar(&cudaOptions.Device, "device", 0, "CUDA device ordinal, as moetop devices lists it under cuda (not always NVML's index)")
}

// splitBackends reads a comma-separated list of registered backends.
func splitBackends(list string) ([]string, error) {
	var out []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		if _, ok := kernels.Lookup(n); !ok {
			return nil, usagef("invalid backend %q; want one of %s", n, strings.Join(kernels.Names(), ", "))
		}
		out = append(out, n)
	}
	return out, nil
}

func splitDTypes(list string) ([]kernels.DType, error) {
	var out []kernels.DType
	for _, n := range strings.Split(list, ",") {
		d, err := kernels.ParseDType(strings.TrimSpace(n))
		if err != nil {
			return nil, usagef("invalid --dtypes: %v", err)
		}
		out = append(out, d)
	}
	return out, nil
}
