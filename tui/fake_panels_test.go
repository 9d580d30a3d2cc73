package tui

import "github.com/moetop/moetop/stream"

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
