package profiler

import "github.com/moetop/moetop/stream"

// Work is what a phase must move and compute at least: the floor the
// roofline measures a kernel against, not what a kernel happens to do.
type Work struct{ Bytes, FLOPs float64 }

// LayerDims is what the work of a step depends on.
type LayerDims struct {
	Tokens, Hidden, FFN, Experts, TopK int
	// ElemBytes is the storage size of activations and weights.
	ElemBytes int
	// Gated experts' gemm1 is H→2F (gate and up).
	Gated bool
	// SharedFFN is the total width of the shared experts (0: none).
	SharedFFN int
}

// PhaseWork is each phase's least bytes and FLOPs for a step whose
// experts got rows[e] rows. The expert GEMMs follow the peer benchmark's
// accounting (shared/peer/torch_moe_peer.py: every active expert's weights
// once, x read, h written and read, y written), split at the activation:
// gemm1 reads x and writes h, the activation reads h and writes its
// output, gemm2 reads that and writes y.
func PhaseWork(d LayerDims, rows []int) map[string]Work {
	es := float64(d.ElemBytes)
	t, h, f, e := float64(d.Tokens), float64(d.Hidden), float64(d.FFN), float64(d.Experts)
	f1 := f
	if d.Gated {
		f1 = 2 * f
	}
	r, nz := 0.0, 0.0
	for _, n := range rows {
		r += float64(n)
		if n > 0 {
			nz++
		}
	}
	w := map[string]Work{
		// x and the router weights read, fp32 logits written.
		stream.PhaseRouter: {Bytes: es*(t*h+h*e) + 4*t*e, FLOPs: 2 * t * h * e},
		// every routed row read from x and written in expert order.
		stream.PhasePermute: {Bytes: 2 * r * h * es},
		stream.PhaseGEMM1:   {Bytes: es * (nz*h*f1 + r*h + r*f1), FLOPs: 2 * r * h * f1},
		stream.PhaseAct:     {Bytes: es * (r*f1 + r*f)},
		stream.PhaseGEMM2:   {Bytes: es * (nz*f*h + r*f + r*h), FLOPs: 2 * r * f * h},
		// each routed row read and weighted into its token's output.
		stream.PhaseCombine: {Bytes: es * (r*h + t*h), FLOPs: 2 * r * h},
	}
	if d.SharedFFN > 0 {
		s := float64(d.SharedFFN)
		s1 := s
		if d.Gated {
			s1 = 2 * s
		}
		w[stream.PhaseShared] = Work{Bytes: es * (h*(s1+s) + t*(2*h+2*s1)), FLOPs: 2 * t * h * (s1 + s)}
	}
	return w
}
