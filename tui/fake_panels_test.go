package tui

import (
	"math"
	"time"

	"github.com/moetop/moetop/stream"
)

// newFakeEP is an expert-parallel run of 4 ranks on 4 GPUs with a skewed
// load: 16 experts in contiguous blocks of 4, expert 0 taking 40% of the
// rows, so rank 0 runs three times the rows of the others and they wait
// for it.
func newFakeEP(n int) *fakeSource {
	const ranks = 4
	cfg := stream.Layer{Tokens: 4096, Hidden: 4096, FFN: 14336, Experts: 16, TopK: 2, DType: "bf16", Act: "gelu",
		Routing: "hot:0:0.4", Seed: 1}
	h := stream.Header{Device: "4 × NVIDIA H100 80GB HBM3 (sm_90)", Driver: "580.159.04", CUDA: "13.0", CUBLAS: "13.1.0",
		Backend: "grouped", Config: cfg, Start: t0, DenseGEMMTFLOPS: 700, ReadGBps: 3000, Ranks: ranks,
		AllToAllGBps: 370, AllToAllBytes: 256 << 20}
	for r := range ranks {
		h.Devices = append(h.Devices, stream.DeviceID{Rank: r, CUDA: r, NVML: r, Name: "NVIDIA H100 80GB HBM3"})
	}
	src := &fakeSource{ch: make(chan stream.Sample, n), mode: "LIVE", header: h}
	for i := 0; i < n; i++ {
		wob := 1 + 0.03*math.Sin(float64(i))
		total := cfg.Tokens * cfg.TopK * ranks
		rows := make([]int, cfg.Experts)
		rows[0] = int(0.4 * float64(total) * wob)
		for e := 1; e < cfg.Experts; e++ {
			rows[e] = (total - rows[0]) / (cfg.Experts - 1)
		}
		s := stream.Sample{Time: t0.Add(time.Duration(i) * 100 * time.Millisecond), Step: i, Backend: "grouped",
			Config: cfg, Rows: rows, Imbalance: stream.Imbalance(rows)}
		for r := range ranks {
			recv := 0
			for e := r * 4; e < r*4+4; e++ {
				recv += rows[e]
			}
			scale := float64(recv) / float64(total/ranks)
			busy := []float64{0.05, 0.08, 0.15 * wob, 0.9 * scale, 0.07 * scale, 0.85 * scale}
			s.Phases = append(s.Phases,
				stream.PhaseTime{Phase: stream.PhaseRouter, Device: r, MS: busy[0]},
				stream.PhaseTime{Phase: stream.PhasePermute, Device: r, MS: busy[1]},
				stream.PhaseTime{Phase: stream.PhaseDispatch, Device: r, MS: busy[2] * (1 + 0.1*float64(r))},
				stream.PhaseTime{Phase: stream.PhaseGEMM1, Device: r, MS: busy[3]},
				stream.PhaseTime{Phase: stream.PhaseAct, Device: r, MS: busy[4]},
				stream.PhaseTime{Phase: stream.PhaseGEMM2, Device: r, MS: busy[5]})
			s.Ranks = append(s.Ranks, stream.RankStat{Rank: r, RecvTokens: recv * 9 / 10, RecvRows: recv,
				SentBytes: int64(3500+100*r) * int64(cfg.Hidden) * 2, SavedBytes: int64(300+20*r) * int64(cfg.Hidden) * 2})
		}
		// Each rank waits for the busiest before combine.
		slowest := 0.0
		for r := range ranks {
			slowest = max(slowest, s.Phases.Total(r))
		}
		for r := range ranks {
			wait := slowest - s.Phases.Total(r) + 0.01
			s.Phases = append(s.Phases, stream.PhaseTime{Phase: stream.PhaseWait, Device: r, MS: wait},
				stream.PhaseTime{Phase: stream.PhaseCombine, Device: r, MS: 0.16 * (1 + 0.05*float64(r))})
		}
		// Wait and combine go after gemm2 in each rank's step order.
		var ordered stream.Phases
		for r := range ranks {
			for _, p := range s.Phases {
				if p.Device == r {
					ordered = append(ordered, p)
				}
			}
		}
		s.Phases = ordered
		for r := range ranks {
			s.StepMS = max(s.StepMS, s.Phases.Total(r))
		}
		flops := 4 * float64(total) * float64(cfg.Hidden) * float64(cfg.FFN)
		s.TFLOPS = flops / (s.StepMS * 1e9)
		s.GEMMTFLOPS = flops / ((s.Phases.MS(stream.PhaseGEMM1, 0) + s.Phases.MS(stream.PhaseGEMM2, 0)) * 1e9)
		if i%5 == 0 {
			g := &stream.Snapshot{Time: s.Time, Source: "nvml", Driver: "580.159.04", CUDA: "13.0"}
			for r := range ranks {
				util := uint32(55 + i%7)
				if r == 0 {
					util = uint32(95 + i%5)
				}
				g.Devices = append(g.Devices, stream.Reading{Index: r, Name: "NVIDIA H100 80GB HBM3", MemTotalBytes: u64(80 << 30),
					MemUsedBytes: u64(uint64(20+r) << 30), MemFreeBytes: u64(uint64(60-r) << 30), UtilPct: u32(util),
					MemUtilPct: u32(util / 2), PowerW: f64(300 + float64(util)*3), PowerLimitW: f64(700), TempC: u32(50 + util/10),
					SMClockMHz: u32(1980)})
			}
			s.GPU = g
		}
		for r := range ranks {
			used := uint64(20+r)<<30 + uint64(i)<<20
			m := stream.Memory{Device: r, TotalBytes: 80 << 30, UsedBytes: used, FreeBytes: 80<<30 - used, OwnBytes: 6 << 30,
				HeadroomBytes: int64(80<<30-used) - 2<<30}
			if r == 0 {
				m.UsedBytes, m.FreeBytes, m.HeadroomBytes = 75<<30, 5<<30, 3<<30 // the hot rank's receive buffers
				m.Backends = []stream.BackendMemory{
					{Backend: "grouped", PeakBytes: 8 << 30, HeadroomBytes: 3 << 30, MaxTokens: 5200, Fits: true},
					{Backend: "padded", PeakBytes: 30 << 30, HeadroomBytes: -(19 << 30), MaxTokens: 1300, Fits: false}}
			}
			s.Memory = append(s.Memory, m)
		}
		src.ch <- s
	}
	close(src.ch)
	return src
}

// newFakeTrace replays a traced model of 24 layers of 64 experts on the
// CPU, a layer a step in turn, each layer with its own hot expert.
func newFakeTrace(n int) *fakeSource {
	const layers = 24
	cfg := stream.Layer{Tokens: 256, Hidden: 256, FFN: 1024, Experts: 64, TopK: 4, DType: "bf16", Act: "gelu",
		Routing: "trace:qwen.jsonl", Seed: 1}
	cpu := newFakeCPU(1).header
	cpu.Config = cfg
	src := &fakeSource{ch: make(chan stream.Sample, n), mode: "LIVE", header: cpu}
	for i := 0; i < n; i++ {
		layer := i % layers
		hot := (layer * 7) % cfg.Experts
		w := make([]float64, cfg.Experts)
		sum := 0.0
		for e := range w {
			d := (e - hot + cfg.Experts) % cfg.Experts
			w[e] = 1 / math.Pow(float64(d+1), 0.9+0.02*float64(layer))
			sum += w[e]
		}
		total := cfg.Tokens * cfg.TopK
		rows := make([]int, cfg.Experts)
		left := total
		for e := range rows {
			rows[e] = int(w[e] / sum * float64(total))
			left -= rows[e]
		}
		rows[hot] += left
		l := layer
		s := stream.Sample{Time: t0.Add(time.Duration(i) * 100 * time.Millisecond), Step: i, Backend: "cpu", Config: cfg,
			LayerIndex: &l, Rows: rows, Imbalance: stream.Imbalance(rows)}
		rowsF, h, f := float64(total), float64(cfg.Hidden), float64(cfg.FFN)
		s.Phases = stream.Phases{
			{Phase: stream.PhaseRouter, MS: 0.4, FLOPs: 2 * 256 * h * 64, Bytes: 4 * 256 * h},
			{Phase: stream.PhasePermute, MS: 0.6, Bytes: 2 * 4 * rowsF * h},
			{Phase: stream.PhaseGEMM1, MS: 21 + 0.3*float64(i%5), FLOPs: 2 * rowsF * h * f, Bytes: 4 * (64*h*f + rowsF*h + rowsF*f)},
			{Phase: stream.PhaseAct, MS: 1.3, Bytes: 2 * 4 * rowsF * f},
			{Phase: stream.PhaseGEMM2, MS: 20, FLOPs: 2 * rowsF * h * f, Bytes: 4 * (64*h*f + rowsF*h + rowsF*f)},
			{Phase: stream.PhaseCombine, MS: 0.5, Bytes: 4 * rowsF * h}}
		s.StepMS = s.Phases.Total(0)
		s.TFLOPS = 4 * rowsF * h * f / (s.StepMS * 1e9)
		s.GEMMTFLOPS = 4 * rowsF * h * f / (41 * 1e9)
		if i%5 == 0 {
			s.GPU = &stream.Snapshot{Time: s.Time, Source: "host", Reason: cpu.BackendReason,
				Host: &stream.Host{MemTotalBytes: 23 << 30, MemAvailableBytes: 22 << 30, CPUUtilPct: f64(97), CPUs: 2}}
		}
		s.Memory = []stream.Memory{{Host: true, TotalBytes: 23 << 30, FreeBytes: 22 << 30, UsedBytes: 1 << 30, OwnBytes: 40 << 20,
			HeadroomBytes: 22 << 30, Backends: []stream.BackendMemory{
				{Backend: "cpu", PeakBytes: 40 << 20, HeadroomBytes: 22 << 30, MaxTokens: 140_000, Fits: true}}}}
		src.ch <- s
	}
	close(src.ch)
	return src
}

// newFakeRoofline is a GPU run with the card's ceilings measured, every
// phase's bytes and FLOPs counted, and a shared expert on its own stream
// overlapping gemm1 to gemm2; act runs faster than its memory floor (a
// cache served it).
func newFakeRoofline(n int) *fakeSource {
	src := newFake(8, n)
	cfg := src.header.Config
	cfg.SharedExperts, cfg.SharedFFN, cfg.Act = 1, 2048, "swiglu"
	src.header.Config = cfg
	src.header.ReadGBps = 3000
	out := &fakeSource{ch: make(chan stream.Sample, n), mode: "LIVE", header: src.header}
	for x := range src.ch {
		x.Config = cfg
		rows, h, f := 8192.0, 4096.0, 14336.0
		gemm := 2 * rows * h * f
		start := 1.0
		x.Phases = stream.Phases{
			{Phase: stream.PhaseRouter, MS: 0.05, FLOPs: 2 * 4096 * h * 8, Bytes: 2 * 4096 * h},
			{Phase: stream.PhasePermute, MS: 0.08, Bytes: 2 * 2 * rows * h},
			{Phase: stream.PhaseGEMM1, MS: 1.62 + 0.02*float64(x.Step%5), FLOPs: gemm, Bytes: 2 * (8*h*f + rows*h + rows*f)},
			{Phase: stream.PhaseAct, MS: 0.1, Bytes: 2 * 2 * rows * f},
			{Phase: stream.PhaseShared, MS: 1.2, FLOPs: 6 * 4096 * h * 2048, Bytes: 2 * (3*h*2048 + 2*4096*h), StartMS: &start},
			{Phase: stream.PhaseGEMM2, MS: 1.55, FLOPs: gemm, Bytes: 2 * (8*h*f + rows*h + rows*f)},
			{Phase: stream.PhaseCombine, MS: 0.1, Bytes: 2 * rows * h}}
		x.StepMS = x.Phases.Total(0) - 1.2 // wall: the shared expert ran beside the others
		x.ExpertMS = nil
		x.TFLOPS = (2*gemm + 6*4096*h*2048) / (x.StepMS * 1e9)
		x.GEMMTFLOPS = 2 * gemm / ((x.Phases.MS(stream.PhaseGEMM1, 0) + x.Phases.MS(stream.PhaseGEMM2, 0)) * 1e9)
		out.ch <- x
	}
	close(out.ch)
	return out
}
