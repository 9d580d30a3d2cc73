package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/moetop/moetop/recording"
	"github.com/moetop/moetop/stream"
)

// The sinks of a live run. runLive picks them by mode and stream.FanOut
// feeds them; none of them knows about the others.

// recordSink writes each sample to the log and flushes at most once a
// second, so a run stopped by a signal loses nothing that reached it long
// enough ago, and a fast run does not flush every step.
type recordSink struct {
	rec       *recording.Recorder
	lastFlush time.Time
}

func (r *recordSink) Observe(s stream.Sample) error {
	if err := r.rec.Write(&s); err != nil {
		return err
	}
	if time.Since(r.lastFlush) >= time.Second {
		r.lastFlush = time.Now()
		return r.rec.Flush()
	}
	return nil
}

// statsSink keeps what the run's closing line reports.
type statsSink struct {
	steps, skipped int
	ooms           int
	stepMS, tflops []float64
}

func (st *statsSink) Observe(s stream.Sample) error {
	for _, e := range s.Events {
		if e.Kind == stream.EventOOM {
			st.ooms++
		}
	}
	if s.Skipped || s.Rows == nil {
		st.skipped++
		return nil
	}
	st.steps += max(1, s.Steps) // a window stands for several steps
	st.stepMS = append(st.stepMS, s.StepMS)
	st.tflops = append(st.tflops, s.TFLOPS)
	return nil
}

// throttled calls print with a sample at most once per every.
type throttled struct {
	every time.Duration
	last  time.Time
	print func(stream.Sample)
}

func (t *throttled) Observe(s stream.Sample) error {
	if time.Since(t.last) >= t.every {
		t.last = time.Now()
		t.print(s)
	}
	return nil
}

// watchLine is the line-per-second view for a run with no terminal.
func watchLine(w io.Writer) stream.Sink {
	return &throttled{every: time.Second, print: func(s stream.Sample) {
		fmt.Fprintf(w, "step %d  %.2f ms  %.3f TFLOP/s  imbalance %.2f  rows %v\n",
			s.Step, s.StepMS, s.TFLOPS, s.Imbalance, s.Rows)
	}}
}

// forward hands samples to a consumer on another goroutine (the TUI),
// giving up when ctx ends so a closed view never blocks the run.
func forward(ctx context.Context, to chan<- stream.Sample) stream.Sink {
	return stream.SinkFunc(func(s stream.Sample) error {
		select {
		case to <- s:
		case <-ctx.Done():
		}
		return nil
	})
}

// observer adapts a sink that cannot fail.
func observer(f func(stream.Sample)) stream.Sink {
	return stream.SinkFunc(func(s stream.Sample) error { f(s); return nil })
}
