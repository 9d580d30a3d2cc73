package profiler

import (
	"math"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// Peak is what backend needs for c when the experts get counts rows.
func Peak(backend string, c Config, counts []int) (uint64, error) {
	b, err := kernels.Plan(backend, c.Shape(), counts)
	return kernels.Total(b), err
}

// scaleCounts spreads rows over the experts in the shares of counts,
// rounding each up so that no expert is under-counted.
func scaleCounts(counts []int, rows int) []int {
	total := 0
	for _, n := range counts {
		total += n
	}
	out := make([]int, len(counts))
	for i, n := range counts {
		out[i] = int(math.Ceil(float64(n) * float64(rows) / float64(max(total, 1))))
	}
	return out
}

// MaxTokens solves Peak(tokens) ≤ avail for tokens at the load shares of
// counts. Every buffer is linear in tokens at fixed shares (the padded
// capacity too: it is the busiest share × tokens × top-k), so two
// evaluations give the line's intercept and slope and the answer follows.
func MaxTokens(backend string, c Config, counts []int, avail uint64) int {
	scaled := func(t int) (float64, bool) {
		cc := c
		cc.Tokens = t
		p, err := Peak(backend, cc, scaleCounts(counts, t*c.TopK))
		return float64(p), err == nil
	}
	t1 := c.Tokens
	n1, ok1 := scaled(t1)
	n2, ok2 := scaled(2 * t1)
	if !ok1 || !ok2 || n2 <= n1 {
		return 0
	}
	slope := (n2 - n1) / float64(t1)
	fixed := n1 - slope*float64(t1)
	if float64(avail) < fixed {
		return 0
	}
	t := int(math.Floor((float64(avail) - fixed) / slope))
	// Row indices are 32-bit.
	return min(t, maxIndex/c.TopK)
}

// Model computes the memory section for the running backend (which holds
// its own peak already) and every registered backend that runs where it
// does (kernels.Peers), given free and total bytes of the device (or host)
// it runs on. caps is that device's, for each backend's capability check
// (Refused); a GPU backend running with caps that hold no GPU means they
// are unknown, and nothing is refused.
func Model(c Config, counts []int, running string, caps kernels.Caps, free, total uint64) stream.Memory {
	m := stream.Memory{TotalBytes: total, FreeBytes: free, UsedBytes: total - min(free, total)}
	if p, err := Peak(running, c, counts); err == nil {
		m.OwnBytes = p
	}
	avail := free + m.OwnBytes
	self, _ := kernels.Lookup(running)
	known := caps.GPU || !self.NeedsGPU
	for _, b := range kernels.Peers(running) {
		p, err := Peak(b, c, counts)
		if err != nil {
			continue
		}
		bm := stream.BackendMemory{Backend: b, PeakBytes: p, HeadroomBytes: int64(avail) - int64(p),
			MaxTokens: MaxTokens(b, c, counts, avail)}
		bm.Fits = bm.HeadroomBytes >= 0
		if r, _ := kernels.Lookup(b); known {
			if err := r.Check(caps, c.Shape()); err != nil {
				bm.Refused = err.Error()
			}
		}
		m.Backends = append(m.Backends, bm)
		if b == running {
			m.HeadroomBytes = bm.HeadroomBytes
		}
	}
	return m
}
