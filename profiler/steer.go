package profiler

import "math"

// Steering turns a target distribution into a per-expert router bias. The
// router's logits depend on the input, so no closed form gives the bias that
// yields a share; instead each step moves every expert's bias by the log of
// target over measured rows (a multiplicative-weights controller, as in
// aux-loss-free load balancing, aimed at a target instead of uniform).
type Steering struct {
	bias []float32
	// Gain is the step size on the log ratio; 0.5 settles in a few dozen
	// steps without oscillating on unit-variance logits.
	Gain float64
}

const maxBias = 30

// NewSteering starts from log(share), which is exact when logits are Gumbel
// noise and close for the router's Gaussian logits.
func NewSteering(shares []float64) *Steering {
	s := &Steering{bias: make([]float32, len(shares)), Gain: 0.5}
	for i, x := range shares {
		s.bias[i] = clampBias(math.Log(x + 1e-9))
	}
	return s
}

// Bias is the bias for the next step. The caller must not modify it.
func (s *Steering) Bias() []float32 { return s.bias }

// Update moves the bias toward shares given the rows one step routed.
func (s *Steering) Update(shares []float64, rows []int) {
	total := 0
	for _, r := range rows {
		total += r
	}
	if total == 0 || len(rows) != len(s.bias) {
		return
	}
	for i, r := range rows {
		want := shares[i]*float64(total) + 0.5
		got := float64(r) + 0.5
		s.bias[i] = clampBias(float64(s.bias[i]) + s.Gain*math.Log(want/got))
	}
}

func clampBias(b float64) float32 {
	return float32(math.Max(-maxBias, math.Min(maxBias, b)))
}
