package profiler

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
)

// slowCPU is the CPU backend with a fixed extra delay per step.
type slowCPU struct {
	*kernels.CPU
	name  string
	delay time.Duration
}

func (s slowCPU) Info() kernels.Info { i := s.CPU.Info(); i.Name = s.name; return i }
func (s slowCPU) Step(ctx context.Context, in kernels.StepInput) (kernels.StepResult, error) {
	r, err := s.CPU.Step(ctx, in)
	r.Phases[kernels.PhaseGEMM1] += s.delay
	return r, err
}

func TestCalibratePicksTheFastestAndReportsFailures(t *testing.T) {
	open := func(name string) (kernels.Backend, error) {
		switch name {
		case "slow":
			return slowCPU{kernels.NewCPU(), name, 50 * time.Millisecond}, nil
		case "fast":
			return slowCPU{kernels.NewCPU(), name, 0}, nil
		}
		return oomBackend{kernels.NewCPU(), 0}, nil
	}
	cal, err := Calibrate(context.Background(), smallConfig("zipf:1.2"), []string{"slow", "oom", "fast"}, open, 3)
	if err != nil {
		t.Fatal(err)
	}
	if cal.Best != "fast" || cal.Timings[2].Backend != "oom" {
		t.Fatalf("calibration %+v", cal)
	}
	if r := cal.Reason(); !strings.Contains(r, "auto picked fast") || !strings.Contains(r, "oom: out of memory") {
		t.Errorf("reason %q", r)
	}
	if _, err := Calibrate(context.Background(), smallConfig("uniform"), []string{"oom"}, open, 1); err == nil {
		t.Error("no error when every backend failed")
	}
}

func TestDenseReferenceTimesOneGEMMPairOfTheSameFLOPs(t *testing.T) {
	c := smallConfig("zipf:1.2")
	var got kernels.Shape
	open := func(string) (kernels.Backend, error) {
		return &shapeSpy{CPU: kernels.NewCPU(), shape: &got}, nil
	}
	tf, err := DenseReference(context.Background(), c, "cpu", open, 3)
	if err != nil || tf <= 0 {
		t.Fatalf("dense reference %g, %v", tf, err)
	}
	if got != c.Shape() {
		t.Errorf("prepared %+v, want the layer's shape", got)
	}
}

// shapeSpy records the shape it was prepared for and checks every step
// put all rows on expert 0.
type shapeSpy struct {
	*kernels.CPU
	shape *kernels.Shape
}

func (s *shapeSpy) Prepare(ctx context.Context, sh kernels.Shape) error {
	*s.shape = sh
	return s.CPU.Prepare(ctx, sh)
}

func (s *shapeSpy) Step(ctx context.Context, in kernels.StepInput) (kernels.StepResult, error) {
	r, err := s.CPU.Step(ctx, in)
	if err == nil && r.Rows[0] != s.shape.Rows() {
		return r, fmt.Errorf("expert 0 got %d of %d rows", r.Rows[0], s.shape.Rows())
	}
	return r, err
}
