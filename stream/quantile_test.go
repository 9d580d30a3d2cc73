package stream

import (
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"testing"
)

func TestQuantilesExactUpToTheLimit(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, n := range []int{1, 2, 7, 100, ExactQuantiles} {
		var q Quantiles
		v := make([]float64, n)
		for i := range v {
			v[i] = rng.ExpFloat64() * 3
			q.Add(v[i])
		}
		if !q.Exact() || q.Count() != n {
			t.Fatalf("%d values: exact %v count %d", n, q.Exact(), q.Count())
		}
		for _, p := range []float64{0, 0.01, 0.5, 0.9, 0.99, 1} {
			if got, want := q.Quantile(p), Percentile(v, p); got != want {
				t.Errorf("%d values, p%g: %v, want Percentile's %v", n, 100*p, got, want)
			}
		}
	}
}

func TestQuantilesSketchWithinItsRelativeError(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, c := range []struct {
		name string
		draw func() float64
	}{
		{"step times around 5 ms", func() float64 { return 5 * math.Exp(0.3*rng.NormFloat64()) }},
		{"a heavy tail over six decades", func() float64 { return math.Pow(10, 6*rng.Float64()-3) }},
		{"zeros, negatives and positives", func() float64 { return float64(rng.IntN(21)-10) * 0.37 }},
		{"one value repeated", func() float64 { return 2.5 }},
		{"rising values", func() func() float64 { x := 0.0; return func() float64 { x += 0.001; return x } }()},
	} {
		t.Run(c.name, func(t *testing.T) {
			var q Quantiles
			v := make([]float64, 200_000)
			for i := range v {
				v[i] = c.draw()
				q.Add(v[i])
			}
			if q.Exact() {
				t.Fatal("200000 values still exact")
			}
			sorted := slices.Clone(v)
			slices.Sort(sorted)
			for _, p := range []float64{0, 0.001, 0.1, 0.5, 0.9, 0.99, 0.999, 1} {
				got, want := q.Quantile(p), Percentile(sorted, p)
				if math.Abs(got-want) > QuantileRelErr*math.Abs(want)*(1+1e-9) {
					t.Errorf("p%g = %v, want %v within %g%%", 100*p, got, want, 100*QuantileRelErr)
				}
			}
		})
	}
}

func TestQuantilesEdgeCases(t *testing.T) {
	var empty Quantiles
	if !math.IsNaN(empty.Quantile(0.5)) {
		t.Error("an empty Quantiles must answer NaN")
	}
	var q Quantiles
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		q.Add(v)
	}
	if q.Count() != 0 {
		t.Errorf("NaN and Inf were counted: %d", q.Count())
	}
	// Values 300 decades apart: the store stays bounded and the top is
	// still right; what merged is at most the bottom.
	var v []float64
	for i := 0; i < 3*ExactQuantiles; i++ {
		v = append(v, math.Pow(10, float64(i%601-300)))
		q.Add(v[i])
	}
	if len(q.pos.counts) > maxBuckets {
		t.Errorf("%d buckets, want at most %d", len(q.pos.counts), maxBuckets)
	}
	for _, p := range []float64{0.99, 0.999, 1} {
		if got, want := q.Quantile(p), Percentile(v, p); math.Abs(got-want) > QuantileRelErr*want {
			t.Errorf("p%g = %v, want %v", 100*p, got, want)
		}
	}
	if got, want := q.Quantile(0), Percentile(v, 0); got != want {
		t.Errorf("min = %v, want %v exactly", got, want)
	}
	if got := q.Quantile(math.NaN()); !math.IsNaN(got) {
		t.Errorf("p NaN = %v, want NaN", got)
	}
}

// A profiler recording for days adds a value per step: the heap must not
// grow with them.
func TestQuantilesMemoryStaysFlat(t *testing.T) {
	var q Quantiles
	rng := rand.New(rand.NewPCG(5, 6))
	add := func(n int) {
		for i := 0; i < n; i++ {
			q.Add(4 + 2*rng.ExpFloat64())
		}
	}
	heap := func() uint64 {
		var m runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&m)
		return m.HeapAlloc
	}
	add(2 * ExactQuantiles)
	before := heap()
	add(1_000_000)
	after := heap()
	if after > before && after-before > 64<<10 {
		t.Errorf("heap grew %d bytes over 1,000,000 values, want under 64 KiB", after-before)
	}
	if q.Count() != 2*ExactQuantiles+1_000_000 {
		t.Errorf("count %d", q.Count())
	}
	runtime.KeepAlive(&q)
}

func BenchmarkQuantilesAdd(b *testing.B) {
	var q Quantiles
	for i := 0; i < b.N; i++ {
		q.Add(float64(i%1000) + 0.5)
	}
}
