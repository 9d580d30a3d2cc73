// Package bench times the MoE layer's expert GEMMs on fixed loads, the way
// the founding report and the peer script (shared/peer/torch_moe_peer.py)
// do, so that moetop's numbers and the peer's can be compared case by case.
package bench

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/profiler"
	"github.com/moetop/moetop/stream"
)

// Case is one layer shape.
type Case struct {
	Name    string `json:"name"`
	Tokens  int    `json:"tokens"`
	Hidden  int    `json:"hidden"`
	FFN     int    `json:"ffn"`
	Experts int    `json:"experts"`
	TopK    int    `json:"top_k"`
}

// Statuses of a result.
const (
	StatusOK           = "ok"
	StatusOOM          = "oom"
	StatusPredictedOOM = "predicted-oom"
	StatusError        = "error"
)

// Result is one case × distribution × dtype × backend.
type Result struct {
	Case    Case    `json:"case"`
	Dist    string  `json:"dist"`
	DType   string  `json:"dtype"`
	Backend string  `json:"backend"`
	Status  string  `json:"status"`
	Counts  []int   `json:"counts"`
	GFLOP   float64 `json:"gflop"`
	// MedianMS is the median of gemm1+gemm2 over the timed repetitions.
	MedianMS float64 `json:"median_ms,omitempty"`
	StepMS   float64 `json:"step_ms,omitempty"` // median of the whole step
	TFLOPS   float64 `json:"tflops,omitempty"`
	// PctDense is TFLOPS over the dense reference's, measured in the same run.
	PctDense float64 `json:"pct_dense,omitempty"`
	Reps     int     `json:"reps,omitempty"`
	// Peak memory the model predicts, and what cuMemGetInfo saw (0: not
	// measured, as on the CPU).
	PredictedPeakBytes uint64 `json:"predicted_peak_bytes"`
	MeasuredPeakBytes  uint64 `json:"measured_peak_bytes,omitempty"`
	PredictedOOM       bool   `json:"predicted_oom"`
	// RelErr compares the output with RefBackend's, the first backend of
	// the run; the reference itself has none.
	RelErr     *float64 `json:"rel_err,omitempty"`
	RefBackend string   `json:"ref_backend,omitempty"`
	Error      string   `json:"error,omitempty"`
}

// Opener opens a backend by name; "dense" is the reference (any backend
// will do: it runs with every row on one expert).
type Opener func(name string) (kernels.Backend, error)

// MemInfo reports free and total bytes where the backends allocate.
type MemInfo func() (free, total uint64, err error)

// Options control a run.
type Options struct {
	Backends []string
	DTypes   []kernels.DType
	Dists    []string
	Reps     int // timed repetitions (≥ 1)
	Warmup   int
	Open     Opener
	// DenseBackend runs the dense reference (default: the first backend).
	DenseBackend string
	MemInfo      MemInfo // nil: memory not measured
	// RunPredictedOOM runs cases the model predicts will not fit, to check
	// the prediction, instead of skipping them.
	RunPredictedOOM bool
	// Progress is called after each result.
	Progress func(done, total int, r Result)
}

// Total is how many results Run will produce.
func Total(cases []Case, o Options) int {
	return len(cases) * len(o.Dists) * len(o.DTypes) * (len(o.Backends) + 1)
}

// Run times every case. A failure of one case is a result, not the end of
// the run; only a cancelled ctx stops it early.
func Run(ctx context.Context, cases []Case, o Options) ([]Result, error) {
	if o.Reps < 1 {
		return nil, errors.New("bench: reps must be at least 1")
	}
	if o.DenseBackend == "" && len(o.Backends) > 0 {
		o.DenseBackend = o.Backends[0]
	}
	var out []Result
	total := Total(cases, o)
	emit := func(r Result) {
		out = append(out, r)
		if o.Progress != nil {
			o.Progress(len(out), total, r)
		}
	}
	for _, c := range cases {
		for _, dist := range o.Dists {
			for _, dt := range o.DTypes {
				if err := ctx.Err(); err != nil {
					return out, err
				}
				cfg := profiler.Config{Tokens: c.Tokens, Hidden: c.Hidden, FFN: c.FFN, Experts: c.Experts,
					TopK: c.TopK, DType: dt, Routing: dist, Seed: 1}
				if err := cfg.Validate(); err != nil {
					return out, fmt.Errorf("case %s: %w", c.Name, err)
				}
				d, _ := profiler.ParseRouting(dist, c.Experts, c.TopK)
				// The peer's counts for the same case: no expert above the
				// token count, as a router would route them.
				counts, err := profiler.CappedCounts(d, cfg.Tokens, cfg.TopK)
				if err != nil {
					return out, fmt.Errorf("case %s %s: %w", c.Name, dist, err)
				}
				// The dense reference: the same rows and FLOPs as one GEMM pair.
				// It is no routing, so its one expert may hold more rows than
				// there are tokens (the peer's dense variant does the same).
				denseCounts := make([]int, c.Experts)
				denseCounts[0] = cfg.Tokens * cfg.TopK
				dense := o.one(ctx, cfg, c, dist, o.DenseBackend, denseCounts, nil)
				dense.Backend = "dense"
				emit(dense)
				var ref reference
				for _, b := range o.Backends {
					r := o.one(ctx, cfg, c, dist, b, counts, &ref)
					if dense.TFLOPS > 0 && r.TFLOPS > 0 {
						r.PctDense = 100 * r.TFLOPS / dense.TFLOPS
					}
					emit(r)
				}
			}
		}
	}
	return out, nil
}

// reference is the output later backends are compared with.
type reference struct {
	out     []float32
	backend string
}

// outputter is a backend whose output can be read back.
type outputter interface{ Output() ([]float32, error) }

// one times one backend; ref holds the first successful backend's output,
// which later backends are compared with.
func (o Options) one(ctx context.Context, cfg profiler.Config, c Case, dist, backend string, counts []int, ref *reference) (r Result) {
	s := cfg.Shape()
	r = Result{Case: c, Dist: dist, DType: cfg.DType.String(), Backend: backend, Counts: counts,
		GFLOP: s.GEMMFLOPs() / 1e9}
	plan, err := kernels.Plan(backend, s, counts)
	if err != nil {
		r.Status, r.Error = StatusError, err.Error()
		return r
	}
	r.PredictedPeakBytes = kernels.Total(plan)
	var before uint64
	if o.MemInfo != nil {
		free, _, err := o.MemInfo()
		if err == nil {
			before = free
			r.PredictedOOM = r.PredictedPeakBytes > free
		}
	}
	if r.PredictedOOM && !o.RunPredictedOOM {
		r.Status = StatusPredictedOOM
		return r
	}
	fail := func(err error) Result {
		r.Status, r.Error = StatusError, err.Error()
		if errors.Is(err, kernels.ErrOutOfMemory) {
			r.Status = StatusOOM
		}
		return r
	}
	b, err := o.Open(backend)
	if err != nil {
		return fail(err)
	}
	defer b.Close()
	if err := b.Prepare(ctx, s); err != nil {
		return fail(err)
	}
	fixed, err := kernels.FixedAssignment(counts, s.Tokens, s.TopK)
	if err != nil {
		return fail(err)
	}
	in := kernels.StepInput{Fixed: &fixed}
	if _, err := b.Step(ctx, in); err != nil {
		return fail(err)
	}
	if o.MemInfo != nil && before > 0 {
		if free, _, err := o.MemInfo(); err == nil && free < before {
			r.MeasuredPeakBytes = before - free
		}
	}
	if out, ok := b.(outputter); ok && ref != nil {
		if y, err := out.Output(); err == nil {
			if ref.out == nil {
				ref.out, ref.backend = y, backend
			} else {
				e := kernels.RelErr(y, ref.out)
				if math.IsInf(e, 0) || math.IsNaN(e) {
					return fail(errors.New("output is not finite (an unwritten or overflowed row)"))
				}
				r.RelErr, r.RefBackend = &e, ref.backend
			}
		}
	}
	for i := 0; i < o.Warmup; i++ {
		if _, err := b.Step(ctx, in); err != nil {
			return fail(err)
		}
	}
	gemm := make([]float64, 0, o.Reps)
	step := make([]float64, 0, o.Reps)
	for i := 0; i < o.Reps; i++ {
		res, err := b.Step(ctx, in)
		if err != nil {
			return fail(err)
		}
		gemm = append(gemm, ms(res.Phases[kernels.PhaseGEMM1]+res.Phases[kernels.PhaseGEMM2]))
		step = append(step, ms(res.Total()))
	}
	r.Status, r.Reps = StatusOK, o.Reps
	r.MedianMS, r.StepMS = stream.Percentile(gemm, 0.5), stream.Percentile(step, 0.5)
	if r.MedianMS > 0 {
		r.TFLOPS = s.GEMMFLOPs() / (r.MedianMS * 1e9)
	}
	return r
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
