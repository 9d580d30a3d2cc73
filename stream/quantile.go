package stream

import (
	"math"
	"slices"
)

// Quantiles estimates percentiles of a stream in bounded memory: the
// first ExactQuantiles values are kept as they are and answer exactly
// (the nearest rank, as Percentile does); from then on they are counted in
// logarithmic buckets, DDSketch's way (Masson, Rim and Lee, VLDB 2019), and
// an answer is within QuantileRelErr of the true nearest-rank value. A
// profiler left running for days keeps at most a few tens of kilobytes per
// Quantiles, however many steps it sees.
//
// The zero value is ready to use. NaN and ±Inf are not counted.
type Quantiles struct {
	n        int
	exact    []float64
	sorted   bool
	sketched bool
	min, max float64
	zero     int
	pos, neg logStore // positive values, and negative ones by magnitude
}

const (
	// ExactQuantiles is how many values a Quantiles keeps as they are.
	ExactQuantiles = 4096
	// QuantileRelErr bounds the relative error of a percentile once more
	// than ExactQuantiles values were added.
	QuantileRelErr = 0.01
	// maxBuckets bounds each store. At 1% a bucket is 2% wide, so 2048
	// buckets span 18 decades: from a nanosecond to years, in any unit
	// moetop uses. Beyond that the lowest buckets merge, and only values
	// that far below the largest lose their accuracy.
	maxBuckets = 2048
)

var (
	quantileGamma    = (1 + QuantileRelErr) / (1 - QuantileRelErr)
	quantileLogGamma = math.Log(quantileGamma)
)

// Add counts v.
func (q *Quantiles) Add(v float64) {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return
	}
	if q.n == 0 || v < q.min {
		q.min = v
	}
	if q.n == 0 || v > q.max {
		q.max = v
	}
	q.n++
	if !q.sketched {
		if len(q.exact) < ExactQuantiles {
			q.exact = append(q.exact, v)
			q.sorted = false
			return
		}
		// The exact values go into the sketch and their memory is let go.
		q.sketched = true
		for _, x := range q.exact {
			q.bucket(x)
		}
		q.exact = nil
	}
	q.bucket(v)
}

func (q *Quantiles) bucket(v float64) {
	switch {
	case v > 0:
		q.pos.add(bucketKey(v))
	case v < 0:
		q.neg.add(bucketKey(-v))
	default:
		q.zero++
	}
}

// bucketKey is k with γ^(k-1) < v ≤ γ^k.
func bucketKey(v float64) int {
	return int(math.Ceil(math.Log(v) / quantileLogGamma))
}

// bucketValue is the point of bucket k nearest, in relative terms, to
// every value in it: 2γ^k/(γ+1).
func bucketValue(k int) float64 {
	return 2 * math.Exp(float64(k)*quantileLogGamma) / (quantileGamma + 1)
}

// Count is how many values were added.
func (q *Quantiles) Count() int { return q.n }

// Exact says whether Quantile answers exactly (no more than
// ExactQuantiles values so far).
func (q *Quantiles) Exact() bool { return !q.sketched }

// Quantile is the nearest-rank percentile (p in 0..1); NaN when empty.
func (q *Quantiles) Quantile(p float64) float64 {
	if q.n == 0 || math.IsNaN(p) {
		return math.NaN()
	}
	rank := max(0, min(int(math.Ceil(p*float64(q.n)))-1, q.n-1))
	if !q.sketched {
		if !q.sorted {
			slices.Sort(q.exact)
			q.sorted = true
		}
		return q.exact[rank]
	}
	// The extremes are known exactly.
	switch rank {
	case 0:
		return q.min
	case q.n - 1:
		return q.max
	}
	// Walk from the most negative value up: negative buckets by falling
	// magnitude, then zeros, then positive buckets by rising magnitude.
	seen := 0
	v, found := 0.0, false
	for i := len(q.neg.counts) - 1; i >= 0 && !found; i-- {
		if seen += int(q.neg.counts[i]); seen > rank {
			v, found = -bucketValue(q.neg.offset+i), true
		}
	}
	if !found {
		if seen += q.zero; seen > rank {
			v, found = 0, true
		}
	}
	for i := 0; i < len(q.pos.counts) && !found; i++ {
		if seen += int(q.pos.counts[i]); seen > rank {
			v, found = bucketValue(q.pos.offset+i), true
		}
	}
	// A bucket's middle can lie beyond the extremes actually seen.
	return max(q.min, min(v, q.max))
}

// logStore counts values per bucket key in a dense window of at most
// maxBuckets keys, merging the lowest keys when a new key would widen it
// further.
type logStore struct {
	offset int // the key of counts[0]
	counts []uint64
}

func (s *logStore) add(k int) {
	if len(s.counts) == 0 {
		s.offset, s.counts = k, []uint64{1}
		return
	}
	top := s.offset + len(s.counts) - 1
	switch {
	case k < s.offset:
		if top-k+1 > maxBuckets {
			// Below the window it may span: counted in its lowest key.
			k = top - maxBuckets + 1
			if k >= s.offset {
				s.counts[k-s.offset]++
				return
			}
		}
		grown := make([]uint64, top-k+1)
		copy(grown[s.offset-k:], s.counts)
		s.offset, s.counts = k, grown
	case k > top:
		if k-s.offset+1 > maxBuckets {
			low := k - maxBuckets + 1
			var merged uint64
			kept := make([]uint64, 0, maxBuckets)
			for i, c := range s.counts {
				if s.offset+i <= low {
					merged += c
				} else {
					kept = append(kept, c)
				}
			}
			s.counts = append([]uint64{merged}, kept...)
			s.offset = low
		}
		s.counts = append(s.counts, make([]uint64, k-(s.offset+len(s.counts)-1))...)
	}
	s.counts[k-s.offset]++
}
