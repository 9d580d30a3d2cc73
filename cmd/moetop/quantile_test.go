package main

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/moetop/moetop/stream"
)

func TestQuantilesAgreeWithTheExactPercentile(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	cases := []struct {
		name   string
		n      int
		draw   func() float64
		relErr float64 // allowed; 0: exact
	}{
		{"a short run is exact", 1000, func() float64 { return 3 + rng.NormFloat64() }, 0},
		{"a long run of step times is within 1%", 200_000, func() float64 { return math.Exp(rng.NormFloat64()) }, quantileError},
		{"times spanning nine decades", 50_000, func() float64 { return math.Pow(10, 9*rng.Float64()-3) }, quantileError},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var q quantiles
			all := make([]float64, tc.n)
			for i := range all {
				all[i] = tc.draw()
				q.Add(all[i])
			}
			for _, p := range []float64{0, 0.01, 0.5, 0.9, 0.99, 1} {
				want, got := stream.Percentile(all, p), q.Percentile(p)
				if e := math.Abs(got-want) / math.Abs(want); e > tc.relErr+1e-12 {
					t.Errorf("p%g: %g, exact %g (relative error %.3g > %g)", 100*p, got, want, e, tc.relErr)
				}
			}
			if q.Len() != tc.n {
				t.Errorf("len %d, want %d", q.Len(), tc.n)
			}
		})
	}
}

func TestQuantilesOfNothingAndOfOddValues(t *testing.T) {
	var q quantiles
	if !math.IsNaN(q.Percentile(0.5)) {
		t.Error("an empty quantiles gave a number")
	}
	q.Add(math.NaN())
	q.Add(math.Inf(1))
	if q.Len() != 0 {
		t.Errorf("NaN and Inf were counted: len %d", q.Len())
	}
	for i := 0; i < exactKept+10; i++ {
		q.Add(0) // a step the clock could not resolve
	}
	q.Add(5)
	if got := q.Percentile(0.5); got != 0 {
		t.Errorf("p50 of zeros: %g", got)
	}
	if got := q.Percentile(1); math.Abs(got-5)/5 > quantileError {
		t.Errorf("p100: %g, want 5 within 1%%", got)
	}
}
