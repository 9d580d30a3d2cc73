package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/moetop/moetop/files"
	"github.com/moetop/moetop/recording"
)

// openLogFile opens a log; a file that is not a readable log is bad input
// (exit code 2), with the reason.
func openLogFile(path string) (*recording.Log, error) {
	l, err := recording.OpenLog(path)
	var le *recording.LogError
	switch {
	case errors.As(err, &le):
		return nil, usagef("%v", le)
	case errors.Is(err, os.ErrNotExist):
		return nil, usagef("%s: no such file", path)
	case err != nil:
		return nil, err
	}
	return l, nil
}

// parseAnywhere parses fs over args whose flags may come before, between
// or after the positional arguments, as people type them
// (`moetop trace import IN OUT --force`), and returns the positionals in
// order. A "--" ends the flags: what follows it is positional.
func parseAnywhere(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			return nil, err
		}
		rest := fs.Args()
		if len(rest) == 0 {
			return pos, nil
		}
		if i := len(args) - len(rest); i > 0 && args[i-1] == "--" {
			return append(pos, rest...), nil
		}
		pos, args = append(pos, rest[0]), rest[1:]
	}
}

// fileArg takes the one FILE argument, before, between or after the flags.
func fileArg(fs *flag.FlagSet, args []string, help string, stdout io.Writer) (string, error) {
	fs.SetOutput(io.Discard)
	pos, err := parseAnywhere(fs, args)
	if errors.Is(err, flag.ErrHelp) {
		fmt.Fprint(stdout, help)
		printDefaults(fs, stdout)
		return "", errHelp
	}
	if err != nil {
		return "", flagError(fs, err)
	}
	switch {
	case len(pos) > 1:
		return "", usagef("unexpected argument %q; run '%s --help'", pos[1], fs.Name())
	case len(pos) == 0:
		return "", usagef("%s needs a log FILE; run '%s --help'", fs.Name(), fs.Name())
	}
	return pos[0], nil
}

const summaryUsage = `moetop summary: what a recorded log holds.

Duration, steps, step time p50/p90/p99 and TFLOP/s per backend; each
phase's median time, GB/s and TFLOP/s on each device, and its % of the
roofline under the ceilings measured at start (never above 100%; a * where
most steps beat the floor); mean share per expert, worst imbalance, lowest
headroom, OOM events and lines skipped. A moetop/1 log counts no bytes:
its summary has no phase table.

Usage:
  moetop summary FILE [--json]
`

func runSummary(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("moetop summary", flag.ContinueOnError)
	asJSON := fs.Bool("json", false, "print JSON")
	path, err := fileArg(fs, args, summaryUsage, stdout)
	if err != nil {
		return err
	}
	l, err := openLogFile(path)
	if err != nil {
		return err
	}
	defer l.Close()
	sum, err := recording.Summarize(l)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", " ")
		return enc.Encode(sum)
	}
	sum.WriteText(stdout)
	return nil
}

const exportUsage = `moetop export: a log for the tools you already use.

  csv       one row per sample
  perfetto  a Chrome/Perfetto JSON trace: a track per phase, a slice per step,
            counters for TFLOP/s and imbalance; open it at ui.perfetto.dev

Usage:
  moetop export FILE --format csv|perfetto [--out F]
`

func runExport(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("moetop export", flag.ContinueOnError)
	format := fs.String("format", "", "csv or perfetto")
	out := fs.String("out", "", "write to F instead of stdout")
	force := fs.Bool("force", false, "overwrite --out if it exists")
	path, err := fileArg(fs, args, exportUsage, stdout)
	if err != nil {
		return err
	}
	export := map[string]func(*recording.Log, io.Writer) (int, error){"csv": recording.ExportCSV, "perfetto": recording.ExportPerfetto}[*format]
	if export == nil {
		return usagef("invalid --format %q; want csv or perfetto", *format)
	}
	l, err := openLogFile(path)
	if err != nil {
		return err
	}
	defer l.Close()
	var skipped int
	if *out == "" {
		skipped, err = export(l, stdout)
	} else {
		if err := checkOutput(path, *out, *force); err != nil {
			return err
		}
		err = files.WriteAtomic(*out, func(w io.Writer) (err error) {
			skipped, err = export(l, w)
			return err
		})
	}
	if err != nil {
		return fmt.Errorf("export: %w", err)
	}
	if skipped > 0 {
		noun := "lines"
		if skipped == 1 {
			noun = "line"
		}
		fmt.Fprintf(stderr, "moetop: skipped %d %s of %s:\n", skipped, noun, path)
		for _, r := range recording.DescribeSkips(l.Skips) {
			fmt.Fprintf(stderr, "  %s\n", r)
		}
	}
	if *out != "" {
		fmt.Fprintf(stderr, "moetop: wrote %s\n", *out)
	}
	return nil
}

// checkOutput refuses a results file the user must change: one that
// exists without --force, or the input log itself under another name.
// The file is then written whole or not at all (files.WriteAtomic).
func checkOutput(log, out string, force bool) error {
	if a, err := os.Stat(log); log != "" && err == nil {
		if b, err := os.Stat(out); err == nil && os.SameFile(a, b) {
			return usagef("--out %s is the log being exported; choose another file", out)
		}
	}
	if _, err := os.Lstat(out); err == nil && !force {
		return usagef("%s exists; pass --force to overwrite it", out)
	}
	if st, err := os.Stat(filepath.Dir(out)); err != nil || !st.IsDir() {
		return usagef("cannot write %s: its folder does not exist", out)
	}
	return nil
}
