package tui

import (
	"fmt"
	"math"
	"time"

	"github.com/moetop/moetop/profiler"
	"github.com/moetop/moetop/stream"
)

// fakeSource replays n deterministic samples of a layer with e experts,
// then closes: the view's input with no clock, GPU or randomness.
type fakeSource struct {
	ch     chan stream.Sample
	header stream.Header
	mode   string
}

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func u32(v uint32) *uint32   { return &v }
func u64(v uint64) *uint64   { return &v }
func f64(v float64) *float64 { return &v }

func newFake(experts, n int) *fakeSource {
	cfg := stream.Layer{Tokens: 4096, Hidden: 4096, FFN: 14336, Experts: experts, TopK: 2,
		DType: "bf16", Act: "gelu", Routing: "zipf:1.2", Seed: 1}
	if experts > 8 {
		cfg.TopK = 8
	}
	src := &fakeSource{ch: make(chan stream.Sample, n), mode: "LIVE", header: stream.Header{
		Device: "NVIDIA H100 80GB HBM3 (sm_90)", Driver: "580.159.04", CUDA: "13.0", CUBLAS: "13.1.0",
		Backend: "grouped", Config: cfg, Start: t0, DenseGEMMTFLOPS: 700}}
	for i := 0; i < n; i++ {
		src.ch <- fakeSample(cfg, i)
	}
	close(src.ch)
	return src
}

func fakeSample(cfg stream.Layer, i int) stream.Sample {
	rows := make([]int, cfg.Experts)
	w := make([]float64, cfg.Experts)
	sum := 0.0
	for e := range w {
		w[e] = 1 / math.Pow(float64(e+1), 1.2)
		sum += w[e]
	}
	total := cfg.Tokens * cfg.TopK
	left := total
	for e := range rows {
		rows[e] = int(w[e] / sum * float64(total) * (1 + 0.05*math.Sin(float64(i+e))))
		left -= rows[e]
	}
	rows[0] += left
	expert := make([]float64, cfg.Experts)
	for e, r := range rows {
		expert[e] = float64(r) * 0.001
	}
	s := stream.Sample{Time: t0.Add(time.Duration(i) * 100 * time.Millisecond), Step: i, Backend: "grouped",
		Config: cfg, Rows: rows, Target: profiler.Shares(w, cfg.TopK), ExpertMS: expert,
		Phases: stream.Phases{{Phase: "router", MS: 0.05}, {Phase: "permute", MS: 0.08}, {Phase: "gemm1", MS: 6 + 0.1*float64(i%7)},
			{Phase: "act", MS: 0.4}, {Phase: "gemm2", MS: 6}, {Phase: "combine", MS: 0.1}}}
	s.StepMS = s.Phases.Total(0)
	flops := 4 * float64(cfg.Tokens*cfg.TopK) * float64(cfg.Hidden) * float64(cfg.FFN)
	s.TFLOPS = flops / (s.StepMS * 1e9)
	s.GEMMTFLOPS = flops / ((s.Phases.MS("gemm1", 0) + s.Phases.MS("gemm2", 0)) * 1e9)
	s.Imbalance = stream.Imbalance(rows)
	if i%5 == 0 {
		s.GPU = &stream.Snapshot{Time: s.Time, Source: "nvml", Driver: "580.159.04", CUDA: "13.0",
			Devices: []stream.Reading{{Name: "NVIDIA H100 80GB HBM3", MemTotalBytes: u64(80 << 30), MemUsedBytes: u64(71 << 30),
				MemFreeBytes: u64(9 << 30), UtilPct: u32(uint32(90 + i%10)), MemUtilPct: u32(uint32(40 + i%20)),
				PowerW: f64(500 + float64(i%30)), PowerLimitW: f64(700), TempC: u32(60 + uint32(i%5)), SMClockMHz: u32(1980)}}}
	}
	s.Memory = []stream.Memory{{TotalBytes: 80 << 30, FreeBytes: 9 << 30, UsedBytes: 71 << 30, OwnBytes: 3 << 30,
		HeadroomBytes: 6 << 30, Backends: []stream.BackendMemory{
			{Backend: "grouped", PeakBytes: 3 << 30, HeadroomBytes: 9 << 30, MaxTokens: 15000, Fits: true},
			{Backend: "loop", PeakBytes: 3 << 30, HeadroomBytes: 9 << 30, MaxTokens: 15000, Fits: true},
			{Backend: "streams", PeakBytes: 3<<30 + 400<<20, HeadroomBytes: 8<<30 + 600<<20, MaxTokens: 14000, Fits: true},
			{Backend: "padded", PeakBytes: 14 << 30, HeadroomBytes: -(2 << 30), MaxTokens: 3000, Fits: false},
			{Backend: "hybrid", PeakBytes: 3<<30 + 100<<20, HeadroomBytes: 8<<30 + 900<<20, MaxTokens: 14500, Fits: true}}}}
	if i == 7 {
		s.Events = []stream.Event{{Time: s.Time, Kind: stream.EventOOM, Msg: fmt.Sprintf("step %d: out of memory", i)}}
	}
	return s
}

// newFakeCPU is a run on the CPU backend with no GPU: host readings, host
// memory, and the reason in the header.
func newFakeCPU(n int) *fakeSource {
	cfg := stream.Layer{Tokens: 256, Hidden: 256, FFN: 1024, Experts: 8, TopK: 2, DType: "bf16", Act: "gelu",
		Routing: "zipf:1.2", Seed: 1}
	src := &fakeSource{ch: make(chan stream.Sample, n), mode: "LIVE", header: stream.Header{
		Device: "CPU reference (2 threads)", Backend: "cpu", Config: cfg, Start: t0,
		BackendReason: "no GPU: no CUDA device: libcuda.so.1: library not found (install the NVIDIA driver, or pass --cuda-lib-dir)"}}
	for i := 0; i < n; i++ {
		s := fakeSample(cfg, i)
		s.Backend = "cpu"
		for j := range s.Phases {
			s.Phases[j].MS *= 3
		}
		s.StepMS = s.Phases.Total(0)
		s.GPU = nil
		if i%5 == 0 {
			s.GPU = &stream.Snapshot{Time: s.Time, Source: "host", Reason: "no GPU: no CUDA device: libcuda.so.1: library not found (install the NVIDIA driver, or pass --cuda-lib-dir)",
				Host: &stream.Host{MemTotalBytes: 23 << 30, MemAvailableBytes: 22<<30 - uint64(i)<<24, CPUUtilPct: f64(80 + float64(i%20)), CPUs: 2}}
		}
		used := uint64(1<<30 + i<<24)
		s.Memory = []stream.Memory{{Host: true, TotalBytes: 23 << 30, FreeBytes: 23<<30 - used, UsedBytes: used, OwnBytes: 20 << 20,
			HeadroomBytes: int64(22<<30 - used), Backends: []stream.BackendMemory{
				{Backend: "cpu", PeakBytes: 20 << 20, HeadroomBytes: 22 << 30, MaxTokens: 1_720_000, Fits: true}}}}
		s.Events = nil
		src.ch <- s
	}
	close(src.ch)
	return src
}

func (f *fakeSource) Samples() <-chan stream.Sample { return f.ch }
func (f *fakeSource) Header() stream.Header         { return f.header }
func (f *fakeSource) Mode() string                  { return f.mode }

// recorder is a Controller that remembers what it was asked.
type recorder struct {
	got    []Request
	refuse bool
	paused bool
}

func (r *recorder) Do(q Request) (string, error) {
	r.got = append(r.got, q)
	if r.refuse {
		return "", fmt.Errorf("refused: grouped at T=8192 needs 90.0 GiB, 70.0 GiB available (out of memory predicted)")
	}
	if q.Action == ActPause {
		r.paused = !r.paused
	}
	return fmt.Sprintf("did %d", q.Action), nil
}

func (r *recorder) Status() Status { return Status{Paused: r.paused} }
