package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/moetop/moetop/profiler"
	"github.com/moetop/moetop/recording"
	"github.com/moetop/moetop/stream"
	"github.com/moetop/moetop/tui"
)

// bigLog writes n samples shaped like a GPU run's: 8 experts, the memory
// model for four backends, an NVML reading every 100th step.
func bigLog(tb testing.TB, path string, n int) {
	cfg := profiler.DefaultGPUConfig().Layer()
	r, err := recording.CreateRecorder(path, 0, true, stream.Header{Device: "H100", Backend: "loop", Config: cfg})
	if err != nil {
		tb.Fatal(err)
	}
	u := uint32(97)
	t0 := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	for i := 0; i < n; i++ {
		s := stream.Sample{Time: t0.Add(time.Duration(i) * time.Millisecond), Step: i, Backend: "loop", Config: cfg,
			Rows: []int{3500, 1500, 900, 700, 500, 400, 350, 342}, Target: []float64{.43, .19, .11, .08, .06, .05, .04, .04},
			Phases: stream.Phases{{Phase: "router", MS: 0.05}, {Phase: "permute", MS: 0.1}, {Phase: "gemm1", MS: 2.5},
				{Phase: "act", MS: 0.3}, {Phase: "gemm2", MS: 2.4}, {Phase: "combine", MS: 0.1}}, StepMS: 5.45, TFLOPS: 700, GEMMTFLOPS: 740, Imbalance: 3.4,
			Memory: []stream.Memory{{TotalBytes: 80 << 30, FreeBytes: 70 << 30, UsedBytes: 10 << 30, OwnBytes: 3 << 30,
				HeadroomBytes: 70 << 30, Backends: []stream.BackendMemory{bm("grouped", 3, 70, 90000), bm("loop", 3, 70, 90000),
					bm("streams", 3, 69, 89000), bm("padded", 9, 64, 30000)}}}}
		if i%100 == 0 {
			s.GPU = &stream.Snapshot{Source: "nvml", Devices: []stream.Reading{{Name: "H100", UtilPct: &u}}}
		}
		if err := r.Write(&s); err != nil {
			tb.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		tb.Fatal(err)
	}
}

// BenchmarkOpenAndFirstFrame1M opens a 1,000,000-sample log and draws the
// replay's first frame at 160×48. Set MOETOP_BIGLOG to keep the log
// between runs (it is about 1 GB).
func BenchmarkOpenAndFirstFrame1M(b *testing.B) {
	path := os.Getenv("MOETOP_BIGLOG")
	if path == "" {
		path = filepath.Join(b.TempDir(), "big.jsonl")
	}
	if _, err := os.Stat(path); err != nil {
		bigLog(b, path, 1_000_000)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		l, err := recording.OpenLog(path)
		if err != nil {
			b.Fatal(err)
		}
		ctx, cancel := context.WithCancel(context.Background())
		r := recording.NewReplay(l)
		go r.Run(ctx)
		var m tea.Model = tui.New(replaySource{l, r}, replayControl{r})
		m, _ = m.Update(tea.WindowSizeMsg{Width: 160, Height: 48})
		for {
			m, _ = m.Update(tui.Tick())
			if v := m.View(); len(v) > 0 && l.Len() == 1_000_000 && tui.HasData(m) {
				break
			}
			time.Sleep(time.Millisecond)
		}
		b.ReportMetric(float64(time.Since(start).Milliseconds()), "ms/open+frame")
		cancel()
		l.Close()
	}
}

func bm(name string, peakGiB, headGiB int64, maxTokens int) stream.BackendMemory {
	return stream.BackendMemory{Backend: name, PeakBytes: uint64(peakGiB) << 30, HeadroomBytes: headGiB << 30,
		MaxTokens: maxTokens, Fits: true}
}
