package main

import (
	"math"
	"slices"

	"github.com/moetop/moetop/stream"
)

// quantiles answers the percentiles of the run's closing line in bounded
// memory, however long the run: a profiler left recording for days must
// not keep every step time. The first exactKept values are kept as they
// are and answer exactly (a short run's line is what it always was); after
// that every value is counted in a bucket 2% wide on a log scale, and an
// answer is within 1% of the true value. Values span at most a few dozen
// decades, so the buckets stay in the low thousands.
//
// (A streaming quantile type for the stream package is under way; this
// one stands in until it is on main.)
type quantiles struct {
	n       int
	exact   []float64
	buckets map[int]int // log-scale bucket → count, once exact is full
	low     int         // values ≤ 0, below every bucket
}

const (
	exactKept     = 4096
	quantileError = 0.01
)

var logGamma = math.Log((1 + quantileError) / (1 - quantileError))

// Add counts v; NaN and ±Inf are not counted.
func (q *quantiles) Add(v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	q.n++
	if q.buckets == nil {
		if len(q.exact) < exactKept {
			q.exact = append(q.exact, v)
			return
		}
		q.buckets = map[int]int{}
		for _, x := range q.exact {
			q.bucket(x)
		}
		q.exact = nil
	}
	q.bucket(v)
}

func (q *quantiles) bucket(v float64) {
	if v <= 0 {
		q.low++
		return
	}
	q.buckets[int(math.Ceil(math.Log(v)/logGamma))]++
}

// Len is how many values were counted.
func (q *quantiles) Len() int { return q.n }

// Percentile is the nearest-rank percentile (p in 0..1), as
// stream.Percentile gives it; NaN when nothing was counted.
func (q *quantiles) Percentile(p float64) float64 {
	if q.buckets == nil {
		return stream.Percentile(q.exact, p)
	}
	rank := max(1, min(q.n, int(math.Ceil(p*float64(q.n)))))
	if rank <= q.low {
		return 0
	}
	seen := q.low
	keys := make([]int, 0, len(q.buckets))
	for k := range q.buckets {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		if seen += q.buckets[k]; seen >= rank {
			// The bucket holds (γ^(k-1), γ^k]; its middle in relative
			// terms is within quantileError of every value in it.
			return 2 * math.Exp(float64(k)*logGamma) / (1 + math.Exp(logGamma))
		}
	}
	return math.NaN() // unreachable: the counts add up to n
}
