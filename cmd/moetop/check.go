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
	"github.com/moetop/moetop/kernels/cuda"
)

const checkUsage = `moetop check: every GPU backend against the CPU reference.

Runs each backend in each dtype on random shapes (odd sizes, 1 to 256
experts, top-k up to 8, experts with no rows), with the output filled with
NaN before each run, and compares the layer output with the float32 CPU
reference on the same inputs and routing. Exits 1 on any mismatch.

Usage:
  moetop check [--cases N] [--backends LIST] [--dtypes LIST] [--seed S]
`

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("moetop check", flag.ContinueOnError)
	cases := fs.Int("cases", 6, "random shapes per backend and dtype")
	backends := fs.String("backends", strings.Join(kernels.GPUBackends, ","), "backends to check")
	dtypes := fs.String("dtypes", "bf16,fp16,fp32,tf32", "dtypes to check")
	seed := fs.Uint64("seed", 1, "seed for the random shapes")
	gpuFlags(fs)
	if err := parse(fs, args, checkUsage, stdout); err != nil {
		return err
	}
	if *cases < 1 {
		return usagef("invalid --cases %d; want at least 1", *cases)
	}
	names, err := splitBackends(*backends, false)
	if err != nil {
		return err
	}
	dts, err := splitDTypes(*dtypes)
	if err != nil {
		return err
	}
	rng := rand.New(rand.NewPCG(*seed, 0x6d6f65))
	tw := tabwriter.NewWriter(stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "backend\tdtype\ttokens\thidden\tffn\texperts\ttop-k\tzero-row\trel err\ttolerance\trouter\tresult")
	failed, total := 0, 0
	for _, name := range names {
		b, err := cuda.New(name, cudaOptions)
		if err != nil {
			return fmt.Errorf("check %s: %w", name, err)
		}
		for _, c := range cuda.RandomCases(rng, []string{name}, dts, *cases) {
			if ctx.Err() != nil {
				b.Close()
				return ctx.Err()
			}
			r := cuda.Check(ctx, b, c, rng)
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
			fmt.Fprintf(tw, "%s\t%s\t%d\t%d\t%d\t%d\t%d\t%d\t%.2e\t%.0e\t%d bad\t%s\n", name, s.DType, s.Tokens, s.Hidden,
				s.FFN, s.Experts, s.TopK, r.ZeroRowExperts, r.RelErr, r.Tolerance, r.RouterMismatches, verdict)
		}
		b.Close()
	}
	tw.Flush()
	fmt.Fprintf(stdout, "%d passed, %d failed\n", total-failed, failed)
	if failed > 0 {
		return fmt.Errorf("check: %d of %d cases failed", failed, total)
	}
	return nil
}

// gpuFlags registers the flags that say where the GPU is.
func gpuFlags(fs *flag.FlagSet) {
	fs.StringVar(&cudaOptions.LibDir, "cuda-lib-dir", "", "look for libcuda, libcublas and libnvrtc here first")
	fs.IntVar(&cudaOptions.Device, "device", 0, "CUDA device ordinal, as `moetop devices` lists under cuda (not always NVML's index)")
}

func splitBackends(list string, allowCPU bool) ([]string, error) {
	var out []string
	for _, n := range strings.Split(list, ",") {
		n = strings.TrimSpace(n)
		ok := n == "cpu" && allowCPU
		for _, g := range kernels.GPUBackends {
			ok = ok || n == g
		}
		if !ok {
			want := strings.Join(kernels.GPUBackends, ", ")
			if allowCPU {
				want += ", cpu"
			}
			return nil, usagef("invalid backend %q; want one of %s", n, want)
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
