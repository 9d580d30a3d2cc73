package profiler

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// Calibration is how each candidate backend did on the layer.
type Calibration struct {
	Best    string
	Timings []BackendTiming
}

// BackendTiming is one candidate's median step time, or why it has none.
type BackendTiming struct {
	Backend string
	StepMS  float64
	Err     error
}

// Reason says which backend was picked and why, for the header.
func (c Calibration) Reason() string {
	var parts []string
	for _, t := range c.Timings {
		if t.Err != nil {
			parts = append(parts, fmt.Sprintf("%s: %s", t.Backend, shortErr(t.Err)))
		} else {
			parts = append(parts, fmt.Sprintf("%s %.3g ms", t.Backend, t.StepMS))
		}
	}
	return fmt.Sprintf("auto picked %s, the fastest median step (%s)", c.Best, strings.Join(parts, ", "))
}

func shortErr(err error) string {
	if errors.Is(err, kernels.ErrOutOfMemory) {
		return "out of memory"
	}
	return err.Error()
}

// Calibrate times steps of every candidate on c's layer at the load its
// routing targets (fixed counts, so each backend sees the same GEMMs) and
// returns them fastest first. A backend that fails is reported, not fatal;
// only when all fail is there an error.
func Calibrate(ctx context.Context, c Config, candidates []string, open func(string) (kernels.Backend, error), steps int) (Calibration, error) {
	var cal Calibration
	d, err := ParseRouting(c.Routing, c.Experts, c.TopK)
	if err != nil {
		return cal, err
	}
	counts, err := countsFor(d, c)
	if err != nil {
		return cal, err
	}
	fixed, err := kernels.FixedAssignment(counts, c.Tokens, c.TopK)
	if err != nil {
		return cal, err
	}
	for _, name := range candidates {
		t := BackendTiming{Backend: name}
		t.StepMS, t.Err = timeBackend(ctx, c, name, open, &fixed, steps)
		cal.Timings = append(cal.Timings, t)
	}
	sort.SliceStable(cal.Timings, func(i, j int) bool {
		a, b := cal.Timings[i], cal.Timings[j]
		if (a.Err == nil) != (b.Err == nil) {
			return a.Err == nil
		}
		return a.StepMS < b.StepMS
	})
	if len(cal.Timings) == 0 || cal.Timings[0].Err != nil {
		return cal, fmt.Errorf("auto: no backend could run %s: %s", c, cal.Reason())
	}
	cal.Best = cal.Timings[0].Backend
	return cal, ctx.Err()
}

// countsFor is the target load as whole rows, the way bench counts them:
// no expert above the token count, as a router would route them. A target
// whose excess over the cap has no expert of nonzero weight to go to
// (hot:E:1 with top-k > 1) has no such split; an even one stands in.
func countsFor(d Distribution, c Config) ([]int, error) {
	shares := Shares(d.Weights(0), c.TopK)
	counts, err := CappedCounts(fixedDist{d.Name(), shares}, c.Tokens, c.TopK)
	if errors.Is(err, ErrCountsCannotFit) {
		return evenCounts(c.Tokens*c.TopK, c.Experts), nil
	}
	return counts, err
}

// evenCounts splits rows evenly, the remainder to the first experts.
func evenCounts(rows, experts int) []int {
	c := make([]int, experts)
	for i := range c {
		c[i] = rows / experts
		if i < rows%experts {
			c[i]++
		}
	}
	return c
}

func timeBackend(ctx context.Context, c Config, name string, open func(string) (kernels.Backend, error), fixed *kernels.Assignment, steps int) (float64, error) {
	return medianStep(ctx, c, name, open, fixed, steps, func(r kernels.StepResult) time.Duration { return r.Total() })
}

// medianStep prepares a backend, runs two warm-up steps and then steps on
// a fixed load, returning the median of what measure takes of each, in ms.
func medianStep(ctx context.Context, c Config, name string, open func(string) (kernels.Backend, error),
	fixed *kernels.Assignment, steps int, measure func(kernels.StepResult) time.Duration) (float64, error) {
	b, err := open(name)
	if err != nil {
		return 0, err
	}
	defer b.Close()
	if err := b.Prepare(ctx, c.Shape()); err != nil {
		return 0, err
	}
	var ms []float64
	for i := 0; i < steps+2; i++ {
		res, err := b.Step(ctx, kernels.StepInput{Fixed: fixed})
		if err != nil {
			return 0, err
		}
		if i >= 2 {
			ms = append(ms, float64(measure(res))/float64(time.Millisecond))
		}
	}
	return stream.Percentile(ms, 0.5), nil
}

// DenseReference times one GEMM pair with every routed row on one expert:
// the same FLOPs as the layer's expert GEMMs with none of the spread, so
// the view can say how close the layer gets to dense (expert GEMM TFLOP/s).
func DenseReference(ctx context.Context, c Config, backend string, open func(string) (kernels.Backend, error), steps int) (float64, error) {
	// Without shared experts: on their own stream they would share the
	// card with the GEMM pair being timed.
	c.SharedExperts, c.SharedFFN = 0, 0
	counts := make([]int, c.Experts)
	counts[0] = c.Tokens * c.TopK
	fixed, err := kernels.FixedAssignment(counts, c.Tokens, c.TopK)
	if err != nil {
		return 0, err
	}
	ms, err := medianStep(ctx, c, backend, open, &fixed, steps, func(r kernels.StepResult) time.Duration {
		return r.Phases[kernels.PhaseGEMM1] + r.Phases[kernels.PhaseGEMM2]
	})
	if err != nil {
		return 0, err
	}
	if ms <= 0 {
		return 0, fmt.Errorf("dense reference: no time measured")
	}
	return c.Shape().GEMMFLOPs() / (ms * 1e9), nil
}
