package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/moetop/moetop/bench"
	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/kernels/cuda"
)

// benchEP is `moetop bench --ep N`'s flags.
type benchEP struct {
	ranks         int
	timeout       time.Duration
	shapes        []string
	grid          string
	quick         bool
	dists         string
	backends, act string
	dtypes        string
	reps, warmup  int
	format, out   string
	force         bool
	noGraphs      bool
	set           map[string]bool // the flags given
}

// epShapes are the shapes bench --ep times on GPUs when none are named:
// the EP peer's prefill shapes, with many experts and with few.
var epShapes = []string{"mixtral:8192:4096:14336:8:2", "qwen3-moe:8192:2048:768:128:8", "dsv3:4096:7168:2048:256:8"}

// maxCPUGFLOP bounds a step of the CPU ranks: past it a step takes the
// CPU reference tens of seconds, and the peer's shapes take hours.
const maxCPUGFLOP = 100

// runBenchEP times the expert path over a.ranks ranks: GPUs of this
// process through NCCL once the user opts in, else the CPU reference over
// the in-process transport.
func runBenchEP(ctx context.Context, a benchEP, stdout, stderr io.Writer) (err error) {
	switch {
	case a.ranks < 1:
		return usagef("invalid --ep %d; want the number of ranks, at least 1", a.ranks)
	case a.timeout <= 0:
		return usagef("invalid --ep-timeout %s; want a positive duration such as 1m", a.timeout)
	case a.set["run-predicted-oom"]:
		return usagef("--run-predicted-oom does not apply to --ep")
	case a.set["device"]:
		return usagef("--device does not apply to --ep: its ranks run on CUDA devices 0 … %d (choose them with CUDA_VISIBLE_DEVICES)", a.ranks-1)
	}
	if a.act != kernels.GELU.String() {
		return usagef("invalid --act %q with --ep: %v", a.act, bench.ErrNotPlain)
	}
	ref, _ := kernels.Reference()
	gpu, err := epBenchOnGPU(a.backends, ref.Name, stderr)
	if err != nil {
		return err
	}
	if !gpu && a.noGraphs {
		return usagef("--no-graphs applies to --ep's GPU ranks; the CPU ranks replay no CUDA graphs")
	}
	dt := kernels.FP32
	if gpu {
		dt = kernels.BF16
	}
	if a.set["dtypes"] {
		if d, err := kernels.ParseDType(strings.TrimSpace(a.dtypes)); err != nil || d != dt {
			return usagef("--dtypes with --ep: the GPU ranks run bf16 (the peer's), the CPU ranks float32; leave --dtypes out")
		}
	}
	shapes := a.shapes
	if len(shapes) == 0 && a.grid == "" {
		if !gpu {
			return usagef("bench --ep on the CPU ranks needs --shape NAME:T:H:F:E:K: the peer's shapes would take the CPU reference hours")
		}
		shapes = epShapes
	}
	cases, err := benchCases(a.grid, a.quick, shapes)
	if err != nil {
		return err
	}
	dists := strings.Split(a.dists, ",")
	for i, c := range cases {
		if c.Act == "" {
			cases[i].Act = a.act
		}
		if err := bench.CheckEPCase(cases[i], a.ranks); err != nil {
			return usagef("invalid case for --ep %d: %v", a.ranks, err)
		}
		if gflop := 4 * float64(a.ranks*c.Tokens*c.TopK) * float64(c.Hidden) * float64(c.FFN) / 1e9; !gpu && gflop > maxCPUGFLOP {
			return usagef("case %s: %.0f GFLOP a step over %d CPU ranks, more than %d: choose a smaller --shape for the CPU reference",
				c.Name, gflop, a.ranks, maxCPUGFLOP)
		}
		for _, d := range dists {
			if !strings.HasPrefix(d, "uniform") && !strings.HasPrefix(d, "seed-uneven") && !strings.HasPrefix(d, "zipf:") && !strings.HasPrefix(d, "hot:") {
				return usagef("invalid --dist %q; bench takes uniform, seed-uneven, zipf:S or hot:E:P", d)
			}
			if err := benchLoadFits(c, d); err != nil {
				return err
			}
		}
	}
	if a.out != "" {
		if err := checkOutput("", a.out, a.force); err != nil {
			return err
		}
	}
	o := bench.EPOptions{Ranks: a.ranks, Dists: dists, DType: dt, Reps: a.reps, Warmup: a.warmup}
	if gpu {
		ids, err := cuda.DeviceIDs(cudaOptions.LibDir)
		if err != nil {
			return usagef("--ep %d over GPUs: %s", a.ranks, oneLine(err.Error()))
		}
		if len(ids) < a.ranks {
			return usagef("--ep %d needs %d GPUs, one per rank; %d found (moetop devices lists them)", a.ranks, a.ranks, len(ids))
		}
		devs := make([]int, a.ranks)
		for i := range devs {
			devs[i] = ids[i].Ordinal
		}
		xb, err := cuda.OpenExchangeBench(devs, cudaOptions.LibDir)
		if err != nil {
			return fmt.Errorf("bench --ep: %w", err)
		}
		defer func() {
			if cerr := xb.Close(); cerr != nil {
				err = errors.Join(err, fmt.Errorf("bench --ep: releasing the GPUs: %w", cerr))
			}
		}()
		xb.Timeout, xb.NoGraphs = a.timeout, a.noGraphs
		fmt.Fprintf(stderr, "moetop: bench --ep %d over GPUs %v through NCCL (not yet checked on GPUs: %s=1)\n", a.ranks, devs, cuda.UnverifiedGPUEPEnv)
		if a.ranks > 1 {
			// The ceiling the phases' GB/s are put under, once for the run.
			gbps, err := xb.AllToAll(ctx, cuda.AllToAllCeilingBytes, 5)
			if ctx.Err() != nil {
				return fmt.Errorf("bench --ep: interrupted while measuring the all-to-all ceiling")
			}
			if err != nil {
				return fmt.Errorf("bench --ep: the all-to-all ceiling: %w", err)
			}
			o.AllToAllGBps, o.AllToAllBytes = gbps, cuda.AllToAllCeilingBytes
		}
		o.Run, o.Backend, o.Device = xb.Run, "loop", xb.DeviceName()
	} else {
		o.Backend = ref.Name
		o.Run = func(ctx context.Context, x *ep.Exchange, warmup, reps int) ([][]ep.XTimes, error) {
			return ep.RunExchangeCPU(ctx, x, warmup, reps, a.timeout)
		}
	}
	prog := newProgress(stderr, bench.TotalEP(cases, o))
	o.Progress = func(done, total int, r bench.EPResult) {
		what := fmt.Sprintf("%s %s N=%d: %s", r.Case.Name, r.Dist, r.World, r.Status)
		if r.Status == bench.StatusOK {
			what += fmt.Sprintf(" step %.3g ms, dispatch %.4g GB/s", r.StepMS, r.DispatchGBps)
		}
		prog.show(done, total, what)
	}
	results, runErr := bench.RunEP(ctx, cases, o)
	prog.done()
	if err := writeResults(stdout, a.out, func(w io.Writer) error { return bench.WriteEP(w, a.format, results) }); err != nil {
		return fmt.Errorf("bench --ep: writing results: %w", err)
	}
	if a.format == "json" || a.format == "csv" || a.out != "" {
		bench.WriteAllToAll(stderr, results)
	}
	if runErr != nil && ctx.Err() != nil {
		return fmt.Errorf("bench --ep: interrupted after %d results (written)", len(results))
	}
	return runErr
}

// epBenchOnGPU decides where the ranks run: --backends loop is the GPUs
// (refused without opting in), cpu the CPU reference; left out, the GPUs
// when there are any and the user opted in, else the CPU, saying why.
func epBenchOnGPU(backends, ref string, stderr io.Writer) (bool, error) {
	gate := cuda.GPUEPAllowed()
	switch backends {
	case "loop":
		if gate != nil {
			return false, usagef("bench --ep over GPUs: %v (or use --backends %s)", gate, ref)
		}
		return true, nil
	case ref:
		return false, nil
	case "":
	default:
		return false, usagef("bench --ep runs its ranks' experts through loop (GPUs, over NCCL) or %s; not --backends %s", ref, backends)
	}
	caps := probeGPU()
	switch {
	case caps.GPU && gate == nil:
		return true, nil
	case caps.GPU:
		fmt.Fprintf(stderr, "moetop: bench --ep: %v; timing the CPU ranks\n", gate)
	default:
		fmt.Fprintf(stderr, "moetop: %s; bench --ep times the CPU ranks\n", caps.NoGPU)
	}
	return false, nil
}
