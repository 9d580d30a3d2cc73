package stream

import "math"

// Roofline is a phase's place under the card's two ceilings.
type Roofline struct {
	// Pct is the roofline time over the measured time, in percent: 100
	// is at the ceiling. Never above 100; Above says the measurement beat
	// the ceiling (a cache served what the floor counts as HBM traffic).
	Pct   float64
	Above bool
	// Bound is "compute" or "memory": the ceiling that sets the floor.
	Bound string
}

// RooflineOf places bytes moved and FLOPs done in ms under ceilings of tflops (dense FLOP/s,
// 1e12) and gbps (read bandwidth, 1e9 B/s); ok is false without a ceiling
// or a time.
func RooflineOf(bytes, flops, ms, tflops, gbps float64) (Roofline, bool) {
	if ms <= 0 || (tflops <= 0 && gbps <= 0) || math.IsNaN(ms) || math.IsInf(ms, 0) {
		return Roofline{}, false
	}
	var compute, memory float64 // ms at each ceiling
	if tflops > 0 {
		compute = flops / (tflops * 1e9)
	}
	if gbps > 0 {
		memory = bytes / (gbps * 1e6)
	}
	rf := Roofline{Bound: "compute"}
	floor := compute
	if memory > compute {
		rf.Bound, floor = "memory", memory
	}
	if floor <= 0 {
		return Roofline{}, false
	}
	rf.Pct = 100 * floor / ms
	if rf.Pct > 100 {
		rf.Pct, rf.Above = 100, true
	}
	return rf, true
}

// Roofline places the phase under the run's ceilings (the header's dense
// TFLOP/s and read GB/s); ok is false where it has no counted work or
// there is no ceiling.
func (p PhaseTime) Roofline(tflops, gbps float64) (Roofline, bool) {
	return RooflineOf(p.Bytes, p.FLOPs, p.MS, tflops, gbps)
}
