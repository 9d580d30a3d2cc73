package bench

import (
	"context"
	"errors"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
)

// fixedTimes is a backend whose every step takes the same phase times, so
// that a result's GB/s and roofline can be checked against hand values.
type fixedTimes struct{ gemm1, act, gemm2 time.Duration }

func (f fixedTimes) Info() kernels.Info                           { return kernels.Info{Name: "cpu"} }
func (f fixedTimes) Prepare(context.Context, kernels.Shape) error { return nil }
func (f fixedTimes) Close() error                                 { return nil }
func (f fixedTimes) Step(context.Context, kernels.StepInput) (kernels.StepResult, error) {
	var r kernels.StepResult
	r.Phases[kernels.PhaseGEMM1], r.Phases[kernels.PhaseAct], r.Phases[kernels.PhaseGEMM2] = f.gemm1, f.act, f.gemm2
	return r, nil
}

// A result's bytes are the peer's gbytes, its time the peer's timed part,
// and its roofline the floor over that time, never above 100%.
//
// The case: 4 tokens, hidden 8, ffn 16, 2 experts, top-1, fp32 (4 bytes),
// uniform: 2 rows on each expert. Steps take gemm1 1 ms, act 0.5 ms, gemm2
// 1 ms.
//
//	plain: bytes 4·(2·8·(16+16) + 4·(2·8 + 2·16)) = 2816, FLOPs 2·4·8·32 = 2048, 2 ms
//	gated: bytes 4·(2·8·(32+16) + 4·(2·8 + 2·32)) = 4352, FLOPs 2·4·8·48 = 3072, 2.5 ms
//	dense (all 4 rows on one expert, plain): bytes 4·(8·32 + 4·48) = 1792
//
// At 0.002 GB/s (2e6 B/s) the memory floor of 2816 bytes is 1.408 ms, 70.4%
// of 2 ms; gated, 2.176 ms of 2.5: 87.04%; dense, 0.896 ms of 2: 44.8%.
// At 1e-5 TFLOP/s (1e7 FLOP/s) 2048 FLOPs take 0.2048 ms: memory bound; at
// 1e-6, 2.048 ms: more than the 2 measured.
func TestRooflineOfAResultAgainstHandValues(t *testing.T) {
	base := Case{Name: "hand", Tokens: 4, Hidden: 8, FFN: 16, Experts: 2, TopK: 1}
	gated := base
	gated.Act = "swiglu"
	for _, tc := range []struct {
		name       string
		c          Case
		ceil       Ceilings
		backend    string
		gbytes, ms float64
		gbps       float64
		pct        float64
		bound      string
		above      bool
		noRoof     bool
		text       string
	}{
		{"plain experts under the memory ceiling", base, Ceilings{DenseTFLOPS: 1e-5, ReadGBps: 0.002}, "cpu",
			2816e-9, 2, 2816.0 / 2e6, 70.4, "memory", false, false, "70% mem"},
		{"gated experts time the activation and count h as the peer does", gated, Ceilings{DenseTFLOPS: 1e-5, ReadGBps: 0.002}, "cpu",
			4352e-9, 2.5, 4352.0 / 2.5e6, 87.04, "memory", false, false, "87% mem"},
		{"a compute floor above the measurement is clamped to 100% and marked", base, Ceilings{DenseTFLOPS: 1e-6, ReadGBps: 0.002}, "cpu",
			2816e-9, 2, 2816.0 / 2e6, 100, "compute", true, false, "100%* comp"},
		{"the dense reference reads one expert's weights", base, Ceilings{DenseTFLOPS: 1e-5, ReadGBps: 0.002}, "dense",
			1792e-9, 2, 1792.0 / 2e6, 44.8, "memory", false, false, "45% mem"},
		{"without ceilings there are bytes and GB/s but no roofline", base, Ceilings{}, "cpu",
			2816e-9, 2, 2816.0 / 2e6, 0, "", false, true, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := Options{Backends: []string{"cpu"}, DTypes: []kernels.DType{kernels.FP32}, Dists: []string{"uniform"}, Reps: 3,
				Open: func(string) (kernels.Backend, error) {
					return fixedTimes{time.Millisecond, 500 * time.Microsecond, time.Millisecond}, nil
				}}
			if tc.ceil != (Ceilings{}) {
				o.Ceilings = map[kernels.DType]Ceilings{kernels.FP32: tc.ceil}
			}
			rs, err := Run(context.Background(), []Case{tc.c}, o)
			if err != nil || len(rs) != 2 {
				t.Fatalf("%d results, %v", len(rs), err)
			}
			r := rs[1]
			if tc.backend == "dense" {
				r = rs[0]
			}
			near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }
			if !near(r.GBytes, tc.gbytes) || !near(r.MedianMS, tc.ms) || !near(r.GBps, tc.gbps) {
				t.Errorf("%g GB in %g ms at %g GB/s; want %g, %g, %g", r.GBytes, r.MedianMS, r.GBps, tc.gbytes, tc.ms, tc.gbps)
			}
			if !near(r.PctRoofline, tc.pct) || r.Bound != tc.bound || r.AboveRoofline != tc.above {
				t.Errorf("roofline %g%% %q above %v; want %g%% %q above %v", r.PctRoofline, r.Bound, r.AboveRoofline,
					tc.pct, tc.bound, tc.above)
			}
			if r.PctRoofline > 100 {
				t.Errorf("roofline %g%%: above 100", r.PctRoofline)
			}
			if r.Ceilings != tc.ceil {
				t.Errorf("ceilings %+v recorded, want the run's %+v", r.Ceilings, tc.ceil)
			}
			if got := RooflineText(r); got != tc.text {
				t.Errorf("roofline text %q, want %q", got, tc.text)
			}
		})
	}
}

func TestMeasureCeilings(t *testing.T) {
	tiny := Case{Name: "tiny", Tokens: 64, Hidden: 32, FFN: 64, Experts: 1, TopK: 1}
	open := func(string) (kernels.Backend, error) { return kernels.NewCPU(), nil }
	dts := []kernels.DType{kernels.BF16, kernels.FP32}
	t.Run("each dtype gets its dense GEMM and the one read bandwidth", func(t *testing.T) {
		reads := 0
		got, err := MeasureCeilings(context.Background(), tiny, dts, "cpu", open, func() (float64, error) { reads++; return 3000, nil })
		if err != nil {
			t.Fatal(err)
		}
		if reads != 1 {
			t.Errorf("read bandwidth measured %d times, want once per run", reads)
		}
		for _, dt := range dts {
			if c := got[dt]; c.DenseTFLOPS <= 0 || c.ReadGBps != 3000 {
				t.Errorf("%s: %+v", dt, c)
			}
		}
	})
	t.Run("a ceiling that cannot be measured stays 0 and says why", func(t *testing.T) {
		got, err := MeasureCeilings(context.Background(), tiny, dts[:1], "cpu", open, func() (float64, error) {
			return 0, errors.New("no CUDA device")
		})
		if err == nil || !strings.Contains(err.Error(), "read bandwidth: no CUDA device") {
			t.Errorf("error %v", err)
		}
		if c := got[kernels.BF16]; c.ReadGBps != 0 || c.DenseTFLOPS <= 0 {
			t.Errorf("%+v: want the dense ceiling alone", c)
		}
	})
	t.Run("a shape no layer can have is refused", func(t *testing.T) {
		bad := tiny
		bad.TopK = 2
		if _, err := MeasureCeilings(context.Background(), bad, dts, "cpu", open, func() (float64, error) { return 1, nil }); err == nil {
			t.Error("top-k 2 of 1 expert accepted")
		}
	})
}
