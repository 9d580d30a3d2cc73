package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/profiler"
	"github.com/moetop/moetop/stream"
)

// alwaysOOM prepares but never completes a step, as a padded backend whose
// padding never fits.
type alwaysOOM struct{ *kernels.CPU }

func (alwaysOOM) Step(context.Context, kernels.StepInput) (kernels.StepResult, error) {
	return kernels.StepResult{}, kernels.ErrOutOfMemory
}

func TestARunWithNoCompletedStepSaysSoWithExit2(t *testing.T) {
	cfg := profiler.Config{Tokens: 64, Hidden: 16, FFN: 64, Experts: 4, TopK: 2, DType: kernels.FP32,
		Routing: "uniform", Seed: 1}
	fit := profiler.Fit{Backend: "padded", Config: cfg, Need: 1 << 20, Avail: 1 << 30, MaxTokens: 70000}
	for _, mode := range []string{"record", "watch"} {
		t.Run(mode, func(t *testing.T) {
			loop := &profiler.Loop{Backend: alwaysOOM{kernels.NewCPU()}, Config: cfg}
			var stdout, stderr bytes.Buffer
			var err error
			if mode == "record" {
				f := liveFlags{record: filepath.Join(t.TempDir(), "run.jsonl"), steps: 18}
				err = record(context.Background(), loop, f, 0, stream.Header{Config: cfg.Layer()}, fit, nil, &stderr)
			} else {
				err = watch(context.Background(), loop, 18, fit, nil, &stdout)
			}
			code := report(err, &stderr)
			msg := stderr.String()
			if code != 2 || strings.Count(msg, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want 2 and one line", code, msg)
			}
			for _, w := range []string{"no step completed", "all 18 steps were skipped", "18 out-of-memory events",
				"expected --tokens 64 to fit the padded backend (up to 70000)"} {
				if !strings.Contains(msg, w) {
					t.Errorf("%q does not say %q", msg, w)
				}
			}
			if strings.Contains(msg, "NaN") || strings.Contains(msg, "recorded") {
				t.Errorf("%q reports step times of steps that did not run", msg)
			}
		})
	}
}

func TestSkippedStepsAreCountedInTheClosingLine(t *testing.T) {
	var st statsSink
	for i := 0; i < 10; i++ {
		s := stream.Sample{Step: i, Rows: []int{1}, StepMS: 2, TFLOPS: 1}
		if i%5 == 0 {
			s = stream.Sample{Step: i, Skipped: true, Events: []stream.Event{{Kind: stream.EventOOM}}}
		}
		st.Observe(s)
	}
	if st.steps != 8 || st.noStep(profiler.Fit{}) != nil || st.skippedNote() != " (2 more skipped, 2 out-of-memory events)" {
		t.Errorf("steps %d, note %q", st.steps, st.skippedNote())
	}
}
