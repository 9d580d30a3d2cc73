package main

import (
	"context"
	"fmt"
	"io"
	"time"

	"github.com/moetop/moetop/profiler"
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

// statsSink keeps what the run's closing line reports, in memory that
// does not grow with the steps.
type statsSink struct {
	steps, skipped int
	ooms           int
	stepMS, tflops stream.Quantiles
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
	st.steps += s.StepCount() // a window stands for several steps
	st.stepMS.Add(s.StepMS)
	st.tflops.Add(s.TFLOPS)
	return nil
}

// noStep is the run's verdict when steps ran and none completed (every
// one skipped, out of memory), as bad input (exit code 2): there are no
// step times to report, and the user must change the layer or backend.
func (st *statsSink) noStep(f profiler.Fit) error {
	if st.steps > 0 || st.skipped == 0 {
		return nil
	}
	msg := fmt.Sprintf("no step completed: all %d steps were skipped (%d out-of-memory events)", st.skipped, st.ooms)
	if f.Backend != "" {
		msg += fmt.Sprintf("; the memory model expected --tokens %d to fit the %s backend (up to %d), but the steps could not allocate: try fewer --tokens or another --backend",
			f.Config.Tokens, f.Backend, f.MaxTokens)
	}
	return usageError{msg}
}

// skippedNote says how many steps were skipped, for the closing line.
func (st *statsSink) skippedNote() string {
	if st.skipped == 0 {
		return ""
	}
	return fmt.Sprintf(" (%d more skipped, %d out-of-memory events)", st.skipped, st.ooms)
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
		fmt.Fprintf(w, "step %d  %.2f ms  %.3f TFLOP/s  imbalance %.2f  rows %s\n",
			s.Step, s.StepMS, s.TFLOPS, s.Imbalance, rowsLine(s.Rows))
	}}
}

// rowsLine is the experts' rows for a line of text: all of a few experts,
// the first 16 of many, and how many more.
func rowsLine(rows []int) string {
	const show = 16
	if len(rows) <= show {
		return fmt.Sprint(rows)
	}
	return fmt.Sprintf("%v… (%d more experts)", rows[:show], len(rows)-show)
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
