package main

import (
	"context"
	"io"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/profiler"
	"github.com/moetop/moetop/recording"
	"github.com/moetop/moetop/stream"
)

// heapProbe reads the live heap (after a collection) at two steps.
type heapProbe struct {
	at       [2]int
	heap     [2]uint64
	recorded int
}

func (p *heapProbe) Observe(s stream.Sample) error {
	for i, at := range p.at {
		if s.Step == at {
			runtime.GC()
			var m runtime.MemStats
			runtime.ReadMemStats(&m)
			p.heap[i] = m.HeapAlloc
			p.recorded++
		}
	}
	return nil
}

// A recording left running for days must not grow: 100,000 steps of a real
// CPU loop through the recorder's sinks (the log, the closing line's
// statistics, the progress line) may not add to the live heap beyond
// noise. Keeping every step time, as the closing line once did, adds 16
// bytes a step: 1.6 MB here.
func TestRecordingSinksKeepTheHeapFlat(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: runs 120,000 steps")
	}
	const first, last = 20_000, 120_000
	cfg := profiler.Config{Tokens: 4, Hidden: 4, FFN: 4, Experts: 2, TopK: 1, DType: kernels.FP32,
		Routing: "zipf:1.2", Seed: 1}
	loop := &profiler.Loop{Backend: kernels.NewCPU(), Config: cfg}
	rec, err := recording.CreateRecorder(filepath.Join(t.TempDir(), "run.jsonl"), 0, false, stream.Header{Config: cfg.Layer()})
	if err != nil {
		t.Fatal(err)
	}
	defer rec.Close()
	stats := &statsSink{}
	probe := &heapProbe{at: [2]int{first, last}}
	progress := &throttled{every: time.Millisecond, print: func(stream.Sample) {}}
	if err := drive(context.Background(), loop, last+1, &recordSink{rec: rec, lastFlush: time.Now()}, stats,
		progress, watchLine(io.Discard), probe); err != nil {
		t.Fatal(err)
	}
	if probe.recorded != 2 || stats.steps != last+1 {
		t.Fatalf("probed %d times over %d steps", probe.recorded, stats.steps)
	}
	grew := int64(probe.heap[1]) - int64(probe.heap[0])
	t.Logf("live heap %d B at step %d, %d B at step %d: %+d B over %d steps", probe.heap[0], first, probe.heap[1], last,
		grew, last-first)
	if grew > 256<<10 {
		t.Errorf("the live heap grew by %d B over %d steps (%.1f B a step); a long recording must stay flat",
			grew, last-first, float64(grew)/float64(last-first))
	}
	if p50 := stats.stepMS.Quantile(0.5); !(p50 > 0) {
		t.Errorf("step p50 %g ms", p50)
	}
}
