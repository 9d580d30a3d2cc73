package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"github.com/moetop/moetop/trace"
)

func traceUsage() string {
	var b strings.Builder
	b.WriteString(`moetop trace import: convert a serving stack's routing statistics into a
moetop trace (docs/trace-format.md, v2), which --routing trace:FILE replays
(--layers all steps through its layers like a forward pass; --layer L replays one).

Usage:
  moetop trace import --from FORMAT [--tokens-per-step N] [--experts N] [--force] IN... OUT

Formats:
`)
	for _, im := range trace.Importers() {
		fmt.Fprintf(&b, "  %-7s %s\n", im[0], im[1])
	}
	return b.String()
}

func runTrace(_ context.Context, args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		return usagef("moetop trace needs a subcommand: import; run 'moetop trace --help'")
	}
	if args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		fmt.Fprint(stdout, traceUsage())
		return errHelp
	}
	if args[0] != "import" {
		return usagef("unknown trace subcommand %q; the one there is: import", args[0])
	}
	fs := flag.NewFlagSet("moetop trace import", flag.ContinueOnError)
	from := fs.String("from", "", "the dump's `FORMAT`: sglang, vllm, eplb or flame")
	var opt trace.Options
	fs.IntVar(&opt.TokensPerStep, "tokens-per-step", 0, "flame: tokens per step (default 4096)")
	force := fs.Bool("force", false, "overwrite OUT if it exists")
	fs.IntVar(&opt.Experts, "experts", 0, "flame: experts per layer (default: the highest expert id seen + 1)")
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	files, err := parseAnywhere(fs, args[1:])
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, traceUsage())
			printDefaults(fs, stdout)
			return errHelp
		}
		return flagError(fs, err)
	}
	switch {
	case *from == "":
		return usagef("moetop trace import needs --from sglang, vllm, eplb or flame")
	case len(files) < 2:
		return usagef("moetop trace import needs an input file and an output file: IN... OUT")
	case opt.TokensPerStep < 0 || opt.Experts < 0:
		return usagef("--tokens-per-step and --experts must be positive (0: the default)")
	}
	var formats []string
	for _, im := range trace.Importers() {
		formats = append(formats, im[0])
	}
	if !slices.Contains(formats, *from) {
		return usagef("invalid --from %q; want one of %s", *from, strings.Join(formats, ", "))
	}
	ins, out := files[:len(files)-1], files[len(files)-1]
	if o, err := os.Stat(out); err == nil {
		for _, in := range ins {
			if i, err := os.Stat(in); err == nil && os.SameFile(i, o) {
				return usagef("the output %s is also an input; choose another OUT", out)
			}
		}
	}
	if err := checkOutput("", out, *force); err != nil {
		return err
	}
	err = trace.ImportFiles(*from, ins, out, opt)
	if errors.Is(err, trace.ErrInvalid) || errors.Is(err, trace.ErrNotRegular) ||
		errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
		return usagef("%v", err)
	}
	if err != nil {
		return err
	}
	t, err := trace.ReadFile(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(stderr, "moetop: wrote %s: %d steps × %d layers × %d experts; replay it with --routing trace:%s --layers all\n",
		out, t.Steps(), t.Layers(), t.Experts, out)
	return nil
}
