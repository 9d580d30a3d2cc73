package recording

import (
	"fmt"
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/moetop/moetop/stream"
)

func heapBytes() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapAlloc
}

// A summary of a log of millions of samples must not hold them: issue 14
// measured 36 bytes a step kept for the percentiles.
func TestSummaryMemoryStaysFlat(t *testing.T) {
	sum := newSummarizer(&Log{Path: "big.jsonl"})
	s := plainSample(0)
	s.Events = nil
	add := func(from, to int) {
		for i := from; i < to; i++ {
			s.Step = i
			s.StepMS = 2 + float64(i%997)/100 // spread over buckets
			s.TFLOPS = 3 + float64(i%89)
			sum.add(s)
		}
	}
	add(0, 20_000) // past the exact phase: the sketch has its buckets
	before := heapBytes()
	add(20_000, 250_000)
	after := heapBytes()
	if after > before && after-before > 64<<10 {
		t.Errorf("heap grew %d bytes over 230,000 samples, want under 64 KiB", after-before)
	}
	out := sum.done()
	if out.Steps != 250_000 || len(out.Backends) != 1 || out.Backends[0].Steps != 250_000 {
		t.Fatalf("steps %d, backends %+v", out.Steps, out.Backends)
	}
	// p50 of 2 + (i mod 997)/100 is 2 + 498/100 within the sketch's 1%.
	if p50 := out.Backends[0].StepP50MS; math.Abs(p50-6.98)/6.98 > stream.QuantileRelErr {
		t.Errorf("step p50 %v, want 6.98 within %g%%", p50, 100*stream.QuantileRelErr)
	}
	runtime.KeepAlive(sum)
}

func TestSummaryListsAHundredOOMsAndCountsTheRest(t *testing.T) {
	sum := newSummarizer(&Log{Path: "oom.jsonl"})
	for i := 0; i < 250; i++ {
		sum.add(stream.Sample{Step: i, Skipped: true, Events: []stream.Event{{Kind: stream.EventOOM, Msg: "oom"}}})
	}
	out := sum.done()
	if len(out.OOMEvents) != maxOOMListed || out.OOMEventsNotListed != 150 || out.Skipped != 250 {
		t.Fatalf("listed %d, not listed %d, skipped %d", len(out.OOMEvents), out.OOMEventsNotListed, out.Skipped)
	}
}

func TestSummaryCountsTheStepsOfAWindow(t *testing.T) {
	sum := newSummarizer(&Log{Path: "decode.jsonl"})
	s := plainSample(0)
	s.Steps, s.Dropped = 4, 8 // four steps of 16 tokens × top-2, 8 rows dropped in all
	sum.add(s)
	sum.add(plainSample(1))
	out := sum.done()
	if out.Steps != 5 || len(out.Backends) != 1 || out.Backends[0].Steps != 5 {
		t.Errorf("%d steps, backends %+v; want 5 and 5", out.Steps, out.Backends)
	}
	if want := 8.0 / (16 * 2 * 5); out.DropRate != want {
		t.Errorf("drop rate %v, want %v", out.DropRate, want)
	}
}

// ceilinged is a one-phase sample of a run whose header has ceilings of
// 700 TFLOP/s and 3000 GB/s: gemm1 moves 1.5 MB and does 7 MFLOP, so its
// memory floor is 0.5 µs and its compute floor 0.01 µs.
func ceilinged(step int, ms float64, device int) stream.Sample {
	s := plainSample(step)
	s.Phases = stream.Phases{{Phase: "gemm1", Device: device, MS: ms, Bytes: 1.5e6, FLOPs: 7e6}}
	return s
}

func TestSummaryPlacesEachPhaseUnderItsRoofline(t *testing.T) {
	withCeilings := stream.Header{DenseGEMMTFLOPS: 700, ReadGBps: 3000}
	for _, tc := range []struct {
		name    string
		header  stream.Header
		samples []stream.Sample
		want    []PhaseSummary
		text    []string // lines the text must have
		notText []string
	}{
		{"the median step's GB/s and place, memory bound", withCeilings,
			// 1 µs: 1500 GB/s, 50%; 2 µs: 750 GB/s, 25%; 0.9 µs: 1667 GB/s, 55.6%.
			[]stream.Sample{ceilinged(0, 0.001, 0), ceilinged(1, 0.002, 0), ceilinged(2, 0.0009, 0)},
			[]PhaseSummary{{Phase: "gemm1", MedianMS: 0.001, GBps: 1500, TFLOPS: 7, PctRoofline: 50, Bound: "memory"}},
			[]string{"  ceilings   dense GEMM 700 TFLOP/s, read 3000 GB/s (measured at start)",
				"  phases of loop, medians per step", "gemm1  0.001  1500  7  50% mem"}, []string{"*:"}},
		{"most steps faster than the floor: 100% and marked, never above", withCeilings,
			[]stream.Sample{ceilinged(0, 0.0002, 0), ceilinged(1, 0.0003, 0), ceilinged(2, 0.001, 0)},
			[]PhaseSummary{{Phase: "gemm1", MedianMS: 0.0003, GBps: 5000, TFLOPS: 7e6 / (0.0003 * 1e9), PctRoofline: 100,
				Bound: "memory", Above: true}},
			[]string{"100%* mem", "*: faster than the floor"}, nil},
		{"each rank's phases after device 0's", withCeilings,
			[]stream.Sample{{Time: t0, Backend: "loop", Rows: []int{1}, Phases: stream.Phases{
				{Phase: "gemm1", Device: 1, MS: 0.001, Bytes: 1.5e6}, {Phase: "gemm1", MS: 0.002, Bytes: 1.5e6}}}},
			[]PhaseSummary{{Phase: "gemm1", MedianMS: 0.002, GBps: 750, PctRoofline: 25, Bound: "memory"},
				{Phase: "gemm1", Device: 1, MedianMS: 0.001, GBps: 1500, PctRoofline: 50, Bound: "memory"}},
			[]string{"phase device ms GB/s TFLOP/s roofline", "gemm1 1 0.001 1500 50% mem"}, nil},
		{"without ceilings: GB/s and TFLOP/s, no roofline", stream.Header{},
			[]stream.Sample{ceilinged(0, 0.001, 0)},
			[]PhaseSummary{{Phase: "gemm1", MedianMS: 0.001, GBps: 1500, TFLOPS: 7}},
			[]string{"gemm1  0.001  1500  7"}, []string{"ceilings", "roofline", "phase device"}},
		{"GPU ranks' all-to-all ceiling among the ceilings", stream.Header{AllToAllGBps: 370.5, AllToAllBytes: 256 << 20},
			[]stream.Sample{ceilinged(0, 0.001, 0)},
			[]PhaseSummary{{Phase: "gemm1", MedianMS: 0.001, GBps: 1500, TFLOPS: 7}},
			[]string{"ceilings all-to-all 370.5 GB/s bus (256 MiB per rank) (measured at start)"}, []string{"read ", "roofline"}},
		{"a log that counts no bytes (moetop/1) has no phase table", withCeilings,
			[]stream.Sample{plainSample(0), plainSample(1)}, nil,
			nil, []string{"phases of"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sum := newSummarizer(&Log{Path: "r.jsonl", Header: tc.header})
			for _, s := range tc.samples {
				sum.add(s)
			}
			out := sum.done()
			if len(out.Backends) != 1 {
				t.Fatalf("backends %+v", out.Backends)
			}
			got := out.Backends[0].Phases
			if len(got) != len(tc.want) {
				t.Fatalf("phases %+v, want %+v", got, tc.want)
			}
			near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Max(1, math.Abs(b)) }
			for i, w := range tc.want {
				g := got[i]
				if g.Phase != w.Phase || g.Device != w.Device || !near(g.MedianMS, w.MedianMS) || !near(g.GBps, w.GBps) ||
					!near(g.TFLOPS, w.TFLOPS) || !near(g.PctRoofline, w.PctRoofline) || g.Bound != w.Bound || g.Above != w.Above {
					t.Errorf("phase %d: %+v, want %+v", i, g, w)
				}
				if g.PctRoofline > 100 {
					t.Errorf("phase %d at %g%% of its roofline", i, g.PctRoofline)
				}
			}
			var b strings.Builder
			out.WriteText(&b)
			text := squeeze(b.String())
			for _, l := range tc.text {
				if !strings.Contains(text, squeeze(l)) {
					t.Errorf("no %q in\n%s", l, b.String())
				}
			}
			for _, l := range tc.notText {
				if strings.Contains(text, l) {
					t.Errorf("%q in\n%s", l, b.String())
				}
			}
		})
	}
}

// squeeze turns runs of spaces into one, so that a test can look for a
// table's row without its column widths.
func squeeze(s string) string {
	return strings.Join(strings.FieldsFunc(s, func(r rune) bool { return r == ' ' }), " ")
}

func TestSummaryKeepsABoundedNumberOfPhases(t *testing.T) {
	sum := newSummarizer(&Log{Path: "odd.jsonl"})
	s := plainSample(0)
	for i := 0; i < maxPhases+100; i++ {
		s.Phases = stream.Phases{{Phase: fmt.Sprintf("p%d", i), MS: 1, Bytes: 1}}
		sum.add(s)
	}
	out := sum.done()
	if n := len(out.Backends[0].Phases); n != maxPhases {
		t.Errorf("%d phases kept, want %d", n, maxPhases)
	}
	if len(out.Warnings) != 1 || !strings.Contains(out.Warnings[0], "100 phase timings") {
		t.Errorf("warnings %q", out.Warnings)
	}
}
