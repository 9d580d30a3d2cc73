package recording

import (
	"math"
	"runtime"
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
