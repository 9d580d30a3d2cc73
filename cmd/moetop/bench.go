package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/moetop/moetop/bench"
	"github.com/moetop/moetop/files"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/profiler"
)

const benchUsage = `moetop bench: time the expert GEMMs on fixed loads.

For every case × distribution × dtype × backend: the median of gemm1+gemm2
(and a gated activation between them) over --reps timed steps after
--warmup (CUDA events on a GPU), TFLOP/s, the least bytes those must move
(the peer's gbytes) and GB/s, % of a dense GEMM pair of the same FLOPs
measured in the same run, predicted and measured peak memory, status and
relative error against the first backend. On a GPU each result is also
placed under its roofline, max(FLOPs / dense TFLOP/s, bytes / read GB/s),
with the two ceilings measured once at the start of the run: never above
100%, a * where the measurement beat the floor. Per-expert counts are
computed as the peer script's count_rows does.

With --ep N: the expert path over N ranks instead, on the same shapes and
counts as the EP peer (torch_ep_peer.py): every rank holds the case's
tokens and sends its tokens × top-k rows (bf16, no token sent once per
rank) by the same fixed counts, experts in contiguous blocks. Per case and
distribution: dispatch (the rows to the experts' ranks), gemm (the local
experts' x·w1, gelu, ·w2), wait (a one-element all-reduce) and combine
(the rows back), each the slowest rank's, of each rank's median step;
the step; dispatch and combine GB/s, the most bytes a rank sends to other
ranks over the phase's time, which for an even all-to-all is nccl-tests'
bus bandwidth, algbw × (n−1)/n; gemm TFLOP/s, 4 · the most rows a rank
ran · hidden · ffn over its time. On GPUs (ranks on CUDA devices 0 … N−1
of this process, over NCCL; not yet checked on GPUs: needs
MOETOP_UNVERIFIED_GPU_EP=1) an NCCL all-to-all of 256 MiB per rank is
timed first, in the same bus-bandwidth convention, and dispatch and combine
are given as a share of it. Without GPUs the ranks run on the CPU
reference over the in-process transport, in float32, on shapes you name.

The modern grid is the peer's prefill shapes (plain experts) and every
preset's routed experts (moetop models) at 1, 32 and 128 tokens, gated as
the model is, named MODEL@TOKENS.

Usage:
  moetop bench [--grid report|modern|FILE] [--quick] [--shape NAME:T:H:F:E:K ...] [--act ACT]
               [--dist LIST] [--backends LIST] [--dtypes LIST] [--format table|json|csv|md] [--out FILE]
  moetop bench --ep N [--shape NAME:T:H:F:E:K ...] [--dist LIST] [--backends loop|cpu] [--format ...] [--out FILE]

Examples:
  moetop bench --grid modern --dtypes bf16
  moetop bench --shape mixtral:8192:4096:14336:8:2 --act swiglu
  moetop bench --grid report --quick --backends cpu --format json
  MOETOP_UNVERIFIED_GPU_EP=1 moetop bench --ep 2 --shape mixtral:8192:4096:14336:8:2 --dist uniform,zipf:1.2,hot:0:0.5
  moetop bench --ep 4 --shape small:256:128:256:16:2 --dist uniform,zipf:1.2   # CPU ranks
`

type stringList []string

func (s *stringList) String() string     { return strings.Join(*s, ",") }
func (s *stringList) Set(v string) error { *s = append(*s, v); return nil }

func runBench(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("moetop bench", flag.ContinueOnError)
	var shapes stringList
	fs.Var(&shapes, "shape", "a case NAME:TOKENS:HIDDEN:FFN:EXPERTS:TOPK (repeatable)")
	grid := fs.String("grid", "", "report, modern, or a CSV/JSON file of cases (default: modern)")
	quick := fs.Bool("quick", false, "a small subset of the grid")
	dists := fs.String("dist", "uniform,seed-uneven,zipf:1.2", "routing distributions (fixed counts)")
	backends := fs.String("backends", "", fmt.Sprintf("backends to time (default: %s with a GPU, %s without)",
		strings.Join(kernels.GPUNames(), ","), strings.Join(kernels.HostNames(), ",")))
	act := fs.String("act", "gelu", "activation of the cases that do not name one ("+
		strings.Join(kernels.ActivationNames(), ", ")+"; swiglu is the peer's --gated)")
	dtypes := fs.String("dtypes", "bf16", "dtypes")
	reps := fs.Int("reps", 20, "timed repetitions per result")
	warmup := fs.Int("warmup", 3, "untimed steps before timing")
	format := fs.String("format", "table", "table, json, csv or md")
	out := fs.String("out", "", "write results to FILE instead of stdout")
	force := fs.Bool("force", false, "overwrite --out if it exists")
	runOOM := fs.Bool("run-predicted-oom", false, "run cases the memory model says will not fit, to test the model")
	noGraphs := fs.Bool("no-graphs", false, "issue every GEMM from the host (loop, streams, --ep's GPU ranks): no CUDA graph replay")
	epRanks := fs.Int("ep", 0, "time the expert path over N ranks (dispatch, gemm, wait, combine), as torch_ep_peer.py does, instead of the GEMMs (0: off)")
	epTimeout := fs.Duration("ep-timeout", time.Minute, "with --ep: how long a step may wait for its ranks before the run ends")
	gpuFlags(fs)
	if err := parse(fs, args, benchUsage, stdout); err != nil {
		return err
	}
	if *reps < 1 || *warmup < 0 {
		return usagef("invalid --reps %d / --warmup %d; want reps ≥ 1 and warmup ≥ 0", *reps, *warmup)
	}
	okFormat := false
	for _, f := range bench.Formats {
		okFormat = okFormat || f == *format
	}
	if !okFormat {
		return usagef("invalid --format %q; want one of %s", *format, strings.Join(bench.Formats, ", "))
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if *epRanks == 0 && set["ep-timeout"] {
		return usagef("--ep-timeout needs --ep N")
	}
	if *epRanks != 0 {
		return runBenchEP(ctx, benchEP{ranks: *epRanks, timeout: *epTimeout, shapes: shapes, grid: *grid, quick: *quick,
			dists: *dists, backends: *backends, act: *act, dtypes: *dtypes, reps: *reps, warmup: *warmup, format: *format, out: *out,
			force: *force, noGraphs: *noGraphs, set: set}, stdout, stderr)
	}
	if _, err := kernels.ParseActivation(*act); err != nil {
		return usagef("invalid --act: %v", err)
	}
	cases, err := benchCases(*grid, *quick, shapes)
	if err != nil {
		return err
	}
	for i := range cases {
		if cases[i].Act == "" {
			cases[i].Act = *act
		}
	}
	for _, c := range cases {
		for _, d := range strings.Split(*dists, ",") {
			if !strings.HasPrefix(d, "uniform") && !strings.HasPrefix(d, "seed-uneven") && !strings.HasPrefix(d, "zipf:") && !strings.HasPrefix(d, "hot:") {
				return usagef("invalid --dist %q; bench takes uniform, seed-uneven, zipf:S or hot:E:P", d)
			}
			if c.TopK > c.Experts {
				return usagef("case %s: top-k %d is more than its %d experts", c.Name, c.TopK, c.Experts)
			}
			if err := benchLoadFits(c, d); err != nil {
				return err
			}
		}
	}
	dts, err := splitDTypes(*dtypes)
	if err != nil {
		return err
	}
	o := bench.Options{Dists: strings.Split(*dists, ","), DTypes: dts, Reps: *reps, Warmup: *warmup,
		RunPredictedOOM: *runOOM}
	opts := backendOptions()
	opts.TimeExperts = false // an event between experts would be timed too
	opts.NoGraphs = *noGraphs
	if *backends == "" {
		*backends = defaultBenchBackends(probeGPU(), stderr)
	}
	if o.Backends, err = splitBackends(*backends); err != nil {
		return err
	}
	o.Open = func(name string) (kernels.Backend, error) { return kernels.Open(name, opts) }
	gpu := false
	for _, b := range o.Backends {
		gpu = gpu || onGPU(b)
	}
	if gpu {
		dev, err := cuda.OpenDevice(opts.LibDir, opts.Device)
		if err != nil {
			return fmt.Errorf("bench: %w", err)
		}
		defer dev.Close()
		o.MemInfo = dev.MemInfo
		o.DenseBackend, _ = kernels.DenseBackend(true)
		// The roofline's ceilings, once for the run: a GEMM pair large
		// enough to run at the card's dense peak, and a read-mostly kernel
		// over 1 GiB, more than any L2 (best of 5).
		readGBps := func() (float64, error) { return dev.ReadBandwidth(1<<30, 5) }
		c, err := bench.MeasureCeilings(ctx, bench.CeilingCase, o.DTypes, o.DenseBackend, o.Open, readGBps)
		if ctx.Err() != nil {
			return fmt.Errorf("bench: interrupted while measuring the roofline's ceilings")
		}
		if err != nil {
			fmt.Fprintf(stderr, "moetop: bench: %s; no roofline where that ceiling is needed\n", oneLine(err.Error()))
		}
		o.Ceilings = c
	}
	if *out != "" {
		if err := checkOutput("", *out, *force); err != nil {
			return err
		}
	}
	prog := newProgress(stderr, bench.Total(cases, o))
	o.Progress = prog.update
	// A table on stdout grows as results come; other formats are written
	// whole at the end.
	live := *format == "table" && *out == ""
	if live {
		table := bench.NewTableStream(stdout, cases)
		o.Progress = func(done, total int, r bench.Result) {
			prog.clear()
			table.Row(r)
			prog.update(done, total, r)
		}
	}
	results, runErr := bench.Run(ctx, cases, o)
	prog.done()
	if live {
		bench.WriteCeilings(stdout, results)
		bench.PassRates(stdout, results)
	} else if err := writeResults(stdout, *out, func(w io.Writer) error { return bench.Write(w, *format, results) }); err != nil {
		// An interrupted bench keeps what it measured; --out is written
		// whole or not at all.
		return fmt.Errorf("bench: writing results: %w", err)
	}
	if *format == "json" || *format == "csv" || *out != "" {
		bench.WriteCeilings(stderr, results)
		bench.PassRates(stderr, results)
	}
	if runErr != nil && ctx.Err() != nil {
		return fmt.Errorf("bench: interrupted after %d results (written)", len(results))
	}
	return runErr
}

// defaultBenchBackends is every backend that runs on this machine: the
// GPU backends with a GPU, the others without.
func defaultBenchBackends(caps kernels.Caps, stderr io.Writer) string {
	if caps.GPU {
		return strings.Join(kernels.GPUNames(), ",")
	}
	host := strings.Join(kernels.HostNames(), ",")
	fmt.Fprintf(stderr, "moetop: %s; benchmarking %s\n", caps.NoGPU, host)
	return host
}

// benchLoadFits refuses, before anything runs, a distribution that has no
// load a router could give the case (profiler.ErrCountsCannotFit: hot:E:1
// at top-k > 1 would put more rows on E than there are tokens).
func benchLoadFits(c bench.Case, dist string) error {
	d, err := profiler.ParseRouting(dist, c.Experts, c.TopK)
	if err != nil {
		return usagef("invalid --dist %q for case %s: %v", dist, c.Name, err)
	}
	if _, err := profiler.CappedCounts(d, c.Tokens, c.TopK); errors.Is(err, profiler.ErrCountsCannotFit) {
		why := strings.TrimPrefix(err.Error(), profiler.ErrCountsCannotFit.Error()+": ")
		return usagef("invalid --dist %q for case %s: no router gives that load at top-k %d (%s)", dist, c.Name, c.TopK, why)
	}
	return nil
}

func benchCases(grid string, quick bool, shapes []string) ([]bench.Case, error) {
	var cs []bench.Case
	for _, s := range shapes {
		c, err := bench.ParseShape(s)
		if err != nil {
			return nil, usagef("invalid --shape: %v", err)
		}
		cs = append(cs, c)
	}
	if grid == "" && len(cs) > 0 {
		return cs, nil
	}
	var g []bench.Case
	switch grid {
	case "", "modern":
		grid, g = "modern", bench.Modern()
	case "report":
		g = bench.Report()
	default:
		var err error
		if g, err = bench.LoadGrid(grid); err != nil {
			return nil, usagef("invalid --grid: %v", err)
		}
	}
	if quick {
		g = bench.Quick(grid, g)
	}
	return append(cs, g...), nil
}

// writeResults writes to stdout, or to the file out whole or not at all.
func writeResults(stdout io.Writer, out string, write func(io.Writer) error) error {
	if out == "" {
		return write(stdout)
	}
	return files.WriteAtomic(out, write)
}
