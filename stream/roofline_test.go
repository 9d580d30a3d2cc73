package stream

import (
	"math"
	"testing"
)

func TestRooflineNeverAbove100(t *testing.T) {
	for _, c := range []struct {
		name      string
		w         struct{ Bytes, FLOPs float64 }
		ms        float64
		pct       float64
		bound     string
		above, ok bool
	}{
		{"compute-bound at half the ceiling", struct{ Bytes, FLOPs float64 }{FLOPs: 1e12, Bytes: 1e6}, 2, 50, "compute", false, true},
		{"memory-bound at the ceiling", struct{ Bytes, FLOPs float64 }{FLOPs: 1e6, Bytes: 3e9}, 1, 100, "memory", false, true},
		{"faster than the ceiling is clamped and said", struct{ Bytes, FLOPs float64 }{FLOPs: 1e6, Bytes: 6e9}, 1, 100, "memory", true, true},
		{"no time", struct{ Bytes, FLOPs float64 }{FLOPs: 1}, 0, 0, "", false, false},
		{"NaN time", struct{ Bytes, FLOPs float64 }{FLOPs: 1}, math.NaN(), 0, "", false, false},
		{"nothing to do", struct{ Bytes, FLOPs float64 }{}, 1, 0, "", false, false},
	} {
		rf, ok := PhaseTime{Bytes: c.w.Bytes, FLOPs: c.w.FLOPs, MS: c.ms}.Roofline(1000, 3000) // 1000 TFLOP/s, 3000 GB/s
		if ok != c.ok || (ok && (math.Abs(rf.Pct-c.pct) > 1e-9 || rf.Bound != c.bound || rf.Above != c.above)) {
			t.Errorf("%s: %+v %v, want %.0f%% %s above=%v ok=%v", c.name, rf, ok, c.pct, c.bound, c.above, c.ok)
		}
	}
}

func TestComputeCeilingPrefersTheCardsPeak(t *testing.T) {
	if got := (Header{DenseGEMMTFLOPS: 90, PeakTFLOPS: 700}).ComputeCeiling(); got != 700 {
		t.Errorf("ceiling %v, want the measured peak 700 (a decode layer's own GEMM is bound by memory)", got)
	}
	if got := (Header{DenseGEMMTFLOPS: 650}).ComputeCeiling(); got != 650 {
		t.Errorf("ceiling %v, want the layer's dense GEMM where no peak was measured", got)
	}
}
