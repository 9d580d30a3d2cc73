package profiler

import (
	"testing"

	"github.com/moetop/moetop/stream"
)

func step(i int, ms float64) stream.Sample {
	return stream.Sample{Step: i, Backend: "b", Rows: []int{i, 1}, StepMS: ms, TFLOPS: 10 / ms,
		Phases: stream.Phases{{Phase: "gemm1", MS: ms / 2}, {Phase: "gemm2", MS: ms / 2}}, GEMMTFLOPS: 10 / ms}
}

func TestWindowFoldsShortStepsWithTheirSpread(t *testing.T) {
	w := &window{min: 1}
	var out []stream.Sample
	for i, ms := range []float64{0.2, 0.3, 0.1, 0.4, 0.25} {
		out = append(out, w.add(step(i, ms))...)
	}
	if len(out) != 1 {
		t.Fatalf("%d samples from 1.25 ms of steps with a 1 ms window, want 1", len(out))
	}
	s := out[0]
	if s.Steps != 4 || s.Step != 3 {
		t.Errorf("window of %d steps ending at step %d, want 4 steps ending at 3", s.Steps, s.Step)
	}
	if s.StepMS != 0.25 || s.StepMinMS != 0.1 || s.StepMaxMS != 0.4 {
		t.Errorf("mean %.3f min %.3f max %.3f, want 0.25, 0.1, 0.4", s.StepMS, s.StepMinMS, s.StepMaxMS)
	}
	if got := s.Phases.MS("gemm1", 0); got != 0.125 {
		t.Errorf("gemm1 mean %.4f, want 0.125", got)
	}
	// Each step did 10 GFLOP-ms worth: the window's rate is total work over total time.
	if want := 40.0 / 1.0; s.TFLOPS != want {
		t.Errorf("TFLOP/s %.3f, want %.3f (work over time, not a mean of rates)", s.TFLOPS, want)
	}
	if rest := w.flush(); len(rest) != 1 || rest[0].Steps != 0 || rest[0].StepMinMS != 0 {
		t.Errorf("a window of one step must flush as that step unchanged: %+v", rest)
	}
}

func TestWindowKeepsEventsSkipsAndLongStepsApart(t *testing.T) {
	w := &window{min: 1}
	w.add(step(0, 0.2))
	ev := step(1, 0.2)
	ev.Events = []stream.Event{{Kind: stream.EventConfig}}
	out := w.add(ev)
	if len(out) != 2 || out[0].Step != 0 || len(out[1].Events) != 1 {
		t.Fatalf("a step with an event must close the window and stand alone: %+v", out)
	}
	if out := w.add(step(2, 5)); len(out) != 1 || out[0].Steps != 0 {
		t.Fatalf("a step longer than the window stands alone: %+v", out)
	}
	w.add(step(3, 0.2))
	other := step(4, 0.2)
	other.Backend = "c"
	if out := w.add(other); len(out) != 1 || out[0].Step != 3 {
		t.Fatalf("a backend change must close the window: %+v", out)
	}
}

func TestNoWindowSendsEveryStep(t *testing.T) {
	w := &window{}
	for i := range 3 {
		if out := w.add(step(i, 0.01)); len(out) != 1 {
			t.Fatalf("step %d: %d samples, want 1", i, len(out))
		}
	}
}

func TestWindowKeepsModelLayersApart(t *testing.T) {
	w := &window{min: 1}
	a, b := step(0, 0.2), step(1, 0.2)
	one, two := 1, 2
	a.LayerIndex, b.LayerIndex = &one, &two
	w.add(a)
	if out := w.add(b); len(out) != 1 || *out[0].LayerIndex != 1 || out[0].Step != 0 {
		t.Fatalf("a step of another model layer must close the window: %+v", out)
	}
}
