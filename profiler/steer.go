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
	// Unit is what Bias hands the router for a bias of 1 in logit units
	// (kernels.Router.BiasScale: 1/4 where the router adds the bias to
	// sigmoid scores); 0 means 1. The controller itself works in logits.
	Unit float32
	out  []float32
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

// Bias is the bias for the next step, in the router's units. The caller
// must not modify it.
func (s *Steering) Bias() []float32 {
	if s.Unit == 0 || s.Unit == 1 {
		return s.bias
	}
	if len(s.out) != len(s.bias) {
		s.out = make([]float32, len(s.bias))
	}
	for i, b := range s.bias {
		s.out[i] = b * s.Unit
	}
	return s.out
}

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
