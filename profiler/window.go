package profiler

import "github.com/moetop/moetop/stream"

// window folds steps shorter than a minimum into one sample: a decode
// step of a few tens of microseconds would otherwise be tens of thousands
// of samples a second, more than a log, a view or Prometheus should take.
// A window keeps the mean of its steps and their spread (StepMinMS,
// StepMaxMS); a step with events, a skipped step or a change of layer or
// backend ends the window, so nothing that happened is averaged away.
type window struct {
	min float64 // ms of step time a sample should stand for; 0: every step
	acc *stream.Sample
	n   int
	// sums for the means: time-weighted FLOP rates and plain phase means
	stepMS, flopMS, gemmMS, gemmFlopMS float64
}

// add takes a step and returns the samples ready to send (none, one or
// two: the window it closed and the step itself).
func (w *window) add(s stream.Sample) []stream.Sample {
	if w.min <= 0 {
		return []stream.Sample{s}
	}
	var out []stream.Sample
	special := s.Skipped || s.Rows == nil || len(s.Events) > 0 || s.StepMS >= w.min
	if w.acc != nil && (special || !sameRun(*w.acc, s)) {
		out = append(out, w.flush()...)
	}
	if special {
		return append(out, s)
	}
	w.fold(s)
	if w.stepMS >= w.min {
		out = append(out, w.flush()...)
	}
	return out
}

func sameRun(a, b stream.Sample) bool {
	sameLayer := (a.LayerIndex == nil) == (b.LayerIndex == nil) &&
		(a.LayerIndex == nil || *a.LayerIndex == *b.LayerIndex)
	return a.Backend == b.Backend && a.Config == b.Config && len(a.Phases) == len(b.Phases) && sameLayer
}

func (w *window) fold(s stream.Sample) {
	g := gemmMS(s.Phases)
	w.stepMS += s.StepMS
	w.flopMS += s.TFLOPS * s.StepMS
	w.gemmMS += g
	w.gemmFlopMS += s.GEMMTFLOPS * g
	w.n++
	if w.acc == nil {
		c := s
		c.Phases = append(stream.Phases(nil), s.Phases...)
		c.ExpertMS = append([]float64(nil), s.ExpertMS...)
		c.StepMinMS, c.StepMaxMS = s.StepMS, s.StepMS
		w.acc = &c
		return
	}
	a := w.acc
	for i := range a.Phases {
		a.Phases[i].MS += s.Phases[i].MS
	}
	for i := range a.ExpertMS {
		if i < len(s.ExpertMS) {
			a.ExpertMS[i] += s.ExpertMS[i]
		}
	}
	a.StepMinMS, a.StepMaxMS = min(a.StepMinMS, s.StepMS), max(a.StepMaxMS, s.StepMS)
	// The newest load, readings and memory stand for the window.
	a.Step, a.Rows, a.Target, a.Imbalance, a.Ranks = s.Step, s.Rows, s.Target, s.Imbalance, s.Ranks
	a.Dropped += s.Dropped
	if s.GPU != nil {
		a.GPU = s.GPU
	}
	if s.Memory != nil {
		a.Memory = s.Memory
	}
}

// flush returns the open window as one sample (a single step unchanged).
func (w *window) flush() []stream.Sample {
	if w.acc == nil {
		return nil
	}
	a, n := *w.acc, float64(w.n)
	if w.n > 1 {
		for i := range a.Phases {
			a.Phases[i].MS /= n
		}
		for i := range a.ExpertMS {
			a.ExpertMS[i] /= n
		}
		a.Steps = w.n
		a.StepMS = w.stepMS / n
		if w.stepMS > 0 {
			a.TFLOPS = w.flopMS / w.stepMS
		}
		if w.gemmMS > 0 {
			a.GEMMTFLOPS = w.gemmFlopMS / w.gemmMS
		}
	} else {
		a.StepMinMS, a.StepMaxMS = 0, 0
	}
	*w = window{min: w.min}
	return []stream.Sample{a}
}
