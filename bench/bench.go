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
	// Act is the experts' activation (kernels.ParseActivation's names;
	// "": gelu). A gated one (swiglu, geglu) makes gemm1 H→2F and is timed
	// with the GEMMs, as the peer's --gated is.
	Act string `json:"act,omitempty"`
}

// activation is c's activation; "" is gelu, the layer's default.
func (c Case) activation() (kernels.Activation, error) {
	if c.Act == "" {
		return kernels.GELU, nil
	}
	a, err := kernels.ParseActivation(c.Act)
	if err != nil {
		return 0, fmt.Errorf("case %s: %w", c.Name, err)
	}
	return a, nil
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
	// MedianMS is the median of gemm1+gemm2 (and a gated activation
	// between them: see timed) over the timed repetitions.
	MedianMS float64 `json:"median_ms,omitempty"`
	StepMS   float64 `json:"step_ms,omitempty"` // median of the whole step
	TFLOPS   float64 `json:"tflops,omitempty"`
	// PctDense is TFLOPS over the dense reference's, measured in the same run.
	PctDense float64 `json:"pct_dense,omitempty"`
	Reps     int     `json:"reps,omitempty"`
	// GBytes is the least the timed GEMMs must move, by the peer's
	// accounting (its gbytes; see work), and GBps that over MedianMS.
	GBytes float64 `json:"gbytes"`
	GBps   float64 `json:"gbps,omitempty"`
	// PctRoofline is the roofline time, max(FLOPs / dense ceiling, bytes /
	// read ceiling), over MedianMS in percent, never above 100; Bound is the
	// ceiling that sets it ("compute" or "memory"), and AboveRoofline marks
	// a measurement faster than that floor (shown as 100). Absent without
	// the run's ceilings (on the CPU).
	PctRoofline   float64 `json:"pct_roofline,omitempty"`
	Bound         string  `json:"bound,omitempty"`
	AboveRoofline bool    `json:"above_roofline,omitempty"`
	// Ceilings are the run's, for this result's dtype.
	Ceilings
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

// Ceilings are the roofline's two ceilings, measured once per run on the
// GPU (0: not measured).
type Ceilings struct {
	// DenseTFLOPS is a large dense GEMM pair's TFLOP/s in the result's
	// dtype; ReadGBps the card's read bandwidth in GB/s (1e9 B/s) from a
	// read-mostly kernel.
	DenseTFLOPS float64 `json:"ceiling_tflops,omitempty"`
	ReadGBps    float64 `json:"ceiling_gbps,omitempty"`
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
	// Ceilings are the roofline's ceilings for each dtype (MeasureCeilings;
	// nil: no roofline, as on the CPU).
	Ceilings map[kernels.DType]Ceilings
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
				act, err := c.activation()
				if err != nil {
					return out, err
				}
				cfg := profiler.Config{Tokens: c.Tokens, Hidden: c.Hidden, FFN: c.FFN, Experts: c.Experts,
					TopK: c.TopK, DType: dt, Act: act, Routing: dist, Seed: 1}
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
	w := work(cfg, counts)
	r = Result{Case: c, Dist: dist, DType: cfg.DType.String(), Backend: backend, Counts: counts,
		GFLOP: s.GEMMFLOPs() / 1e9, GBytes: w.Bytes / 1e9, Ceilings: o.Ceilings[cfg.DType]}
	r.Case.Act = cfg.Act.String() // what ran, where the case left it to the default
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
		gemm = append(gemm, ms(timed(res, cfg.Act)))
		step = append(step, ms(res.Total()))
	}
	r.Status, r.Reps = StatusOK, o.Reps
	r.MedianMS, r.StepMS = stream.Percentile(gemm, 0.5), stream.Percentile(step, 0.5)
	if r.MedianMS > 0 {
		r.TFLOPS = s.GEMMFLOPs() / (r.MedianMS * 1e9)
		r.GBps = w.Bytes / (r.MedianMS * 1e6)
	}
	if rf, ok := stream.RooflineOf(w.Bytes, w.FLOPs, r.MedianMS, r.DenseTFLOPS, r.ReadGBps); ok {
		r.PctRoofline, r.Bound, r.AboveRoofline = rf.Pct, rf.Bound, rf.Above
	}
	return r
}

// timed is the part of a step a result times, the peer's: gemm1 and
// gemm2, and between them a gated activation (the peer's --gated applies
// silu(gate)·up between its two GEMMs and times it with them).
func timed(res kernels.StepResult, act kernels.Activation) time.Duration {
	t := res.Phases[kernels.PhaseGEMM1] + res.Phases[kernels.PhaseGEMM2]
	if act.Gated() {
		t += res.Phases[kernels.PhaseAct]
	}
	return t
}

// work is what the timed part of a step must move and compute at least,
// by profiler.PhaseWork, summed as the peer sums its gbytes and gflop
// (shared/peer/torch_moe_peer.py): every active expert's weights once, x
// read, h written and read, y written. For plain experts that is gemm1 and
// gemm2; for gated ones the activation too, less its output, which the
// peer does not count (h, 2F wide, written and read, as if gemm2 read it
// and applied the gate itself).
func work(cfg profiler.Config, counts []int) profiler.Work {
	w := profiler.PhaseWork(profiler.LayerDims{Tokens: cfg.Tokens, Hidden: cfg.Hidden, FFN: cfg.FFN,
		Experts: cfg.Experts, TopK: cfg.TopK, ElemBytes: cfg.DType.Size(), Gated: cfg.Act.Gated()}, counts)
	g1, act, g2 := w[stream.PhaseGEMM1], w[stream.PhaseAct], w[stream.PhaseGEMM2]
	out := profiler.Work{Bytes: g1.Bytes + g2.Bytes, FLOPs: g1.FLOPs + g2.FLOPs}
	if cfg.Act.Gated() {
		rows := 0
		for _, n := range counts {
			rows += n
		}
		out.Bytes += act.Bytes - 2*float64(rows)*float64(cfg.FFN)*float64(cfg.DType.Size())
	}
	return out
}

// CeilingCase is the dense GEMM pair the compute ceiling is timed on:
// mixtral's 16,384 routed rows as one expert, a GEMM an H100 or H200 runs
// at its dense peak (the 722 TFLOP/s of design.md's anchors), in under
// 2 GiB of bf16 so that the cases keep the card.
var CeilingCase = Case{Name: "ceiling", Tokens: 16384, Hidden: 4096, FFN: 14336, Experts: 1, TopK: 1}

// MeasureCeilings times the roofline's ceilings once for a run: for each
// dtype a dense GEMM pair of c on backend (profiler.DenseReference), and
// the card's read bandwidth through read, the same for every dtype. A
// ceiling that cannot be measured stays 0 (no roofline where it is
// needed) and its error is joined to the one returned; the map holds what
// was measured.
func MeasureCeilings(ctx context.Context, c Case, dts []kernels.DType, backend string, open Opener,
	read func() (float64, error)) (map[kernels.DType]Ceilings, error) {
	var errs []error
	gbps, err := read()
	if err != nil {
		errs = append(errs, fmt.Errorf("read bandwidth: %w", err))
		gbps = 0
	}
	out := map[kernels.DType]Ceilings{}
	for _, dt := range dts {
		cfg := profiler.Config{Tokens: c.Tokens, Hidden: c.Hidden, FFN: c.FFN, Experts: c.Experts, TopK: c.TopK,
			DType: dt, Routing: "uniform", Seed: 1}
		if err := cfg.Validate(); err != nil {
			return out, fmt.Errorf("ceiling case %s: %w", c.Name, err)
		}
		tf, err := profiler.DenseReference(ctx, cfg, backend, open, 10)
		if err != nil {
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			errs = append(errs, fmt.Errorf("dense %s GEMM ceiling: %w", dt, err))
			tf = 0
		}
		out[dt] = Ceilings{DenseTFLOPS: tf, ReadGBps: gbps}
	}
	return out, errors.Join(errs...)
}

func ms(d time.Duration) float64 { return float64(d) / 1e6 }
