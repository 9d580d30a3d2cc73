package kernels

import (
	"fmt"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas32"
)

// Pieces of the layer for callers that hold only part of it. An
// expert-parallel rank keeps its own slice of the tokens and its own experts;
// it runs them with exactly the CPU backend's inputs and arithmetic (same Fill
// elements, same gonum GEMM, same rounding points), so that the output of N
// ranks can be checked against one CPU backend over the whole batch.

// FillRange fills dst with elements [first, first+len(dst)) of tensor t,
// rounded to d: the part of what FillSlice fills over the whole tensor.
func FillRange(dst []float32, seed uint64, t uint32, first uint64, scale float32, d DType) {
	for i := range dst {
		dst[i] = d.Round(Fill(seed, t, first+uint64(i), scale))
	}
}

// InputRows returns tokens [first, first+n) of the layer's input x, n ×
// hidden, as CPU.Prepare fills x for a batch that starts at token 0.
func InputRows(s Shape, first, n int) []float32 {
	x := make([]float32, n*s.Hidden)
	FillRange(x, s.Seed, TensorX, uint64(first*s.Hidden), ScaleX(), s.DType)
	return x
}

// RouterWeights returns the router's Wg, hidden × experts, as CPU.Prepare
// fills it.
func RouterWeights(s Shape) []float32 {
	wg := make([]float32, s.Hidden*s.Experts)
	FillSlice(wg, s.Seed, TensorRouter, ScaleRouter(s.Hidden), s.DType)
	return wg
}

// ExpertWeights returns expert e's w1 (hidden × W1Cols: gate then up
// when gated) and w2 (ffn × hidden), the slices of CPU.Prepare's w1 and
// w2 that belong to e.
func ExpertWeights(s Shape, e int) (w1, w2 []float32) {
	n1, n2 := s.Hidden*s.W1Cols(), s.FFN*s.Hidden
	w1 = make([]float32, n1)
	w2 = make([]float32, n2)
	FillRange(w1, s.Seed, TensorW1, uint64(e*n1), ScaleW1(s.Hidden), s.DType)
	FillRange(w2, s.Seed, TensorW2, uint64(e*n2), ScaleW2(s.FFN), s.DType)
	return w1, w2
}

// SharedWeights returns the shared experts' w1 (hidden × their gemm1
// columns) and w2 (SharedWidth × hidden), as CPU.Prepare fills them; nil
// without shared experts.
func SharedWeights(s Shape) (w1, w2 []float32) {
	w := s.SharedWidth()
	if w == 0 {
		return nil, nil
	}
	w1 = make([]float32, s.Hidden*s.Act.Columns(w))
	w2 = make([]float32, w*s.Hidden)
	FillSlice(w1, s.Seed, TensorSharedW1, ScaleW1(s.Hidden), s.DType)
	FillSlice(w2, s.Seed, TensorSharedW2, ScaleW2(w), s.DType)
	return w1, w2
}

// SharedForward runs the shared experts on n rows of x (n × hidden) into
// y (n × hidden), with h (n × their gemm1 columns) as scratch, rounding
// where a GPU stores: gemm1, activation, gemm2, exactly as the routed
// experts are run. The CPU backend and an expert-parallel rank both call
// it, so that their shared outputs agree bit for bit.
func SharedForward(s Shape, x []float32, n int, w1, w2, h, y []float32) {
	w := s.SharedWidth()
	c1 := s.Act.Columns(w)
	MatMul(h, x, n, s.Hidden, w1, c1)
	s.DType.RoundSlice(h[:n*c1])
	a := ActivateRows(h, n, w, s.Act)
	s.DType.RoundSlice(a)
	MatMul(y, a, n, w, w2, s.Hidden)
	s.DType.RoundSlice(y[:n*s.Hidden])
}

// RouteRows runs the router step on n rows of x (n × hidden): logits = x·Wg
// as the CPU backend computes them, then s.Router with bias (nil: none).
func RouteRows(s Shape, x, wg []float32, n int, bias []float32) (Assignment, error) {
	h, e := s.Hidden, s.Experts
	switch {
	case len(x) < n*h:
		return Assignment{}, fmt.Errorf("route: %d values for %d rows of hidden %d", len(x), n, h)
	case len(wg) != h*e:
		return Assignment{}, fmt.Errorf("route: router weights hold %d values, want hidden×experts = %d", len(wg), h*e)
	case bias != nil && len(bias) != e:
		return Assignment{}, fmt.Errorf("router bias has %d values, want %d experts", len(bias), e)
	case s.TopK < 1 || s.TopK > e:
		return Assignment{}, fmt.Errorf("route: top-k %d of %d experts", s.TopK, e)
	}
	if err := s.Router.Check(e, s.TopK); err != nil {
		return Assignment{}, fmt.Errorf("route: %w", err)
	}
	logits := make([]float32, n*e)
	MatMul(logits, x, n, h, wg, e)
	return s.Router.Route(logits, n, e, s.TopK, bias), nil
}

// MatMul sets out (n × m) = a (n × k) · b (k × m), all row-major, through the
// same gonum call the CPU backend makes, so that a row's result does not
// depend on which other rows share the call.
func MatMul(out, a []float32, n, k int, b []float32, m int) {
	if n == 0 || m == 0 {
		return
	}
	if k == 0 {
		clear(out[:n*m])
		return
	}
	blas32.Gemm(blas.NoTrans, blas.NoTrans, 1, general(n, k, a), general(k, m, b), 0, general(n, m, out))
}

// RoundSlice rounds every element to d in place, where the CPU backend rounds
// its intermediates (a no-op for fp32 and tf32).
func (d DType) RoundSlice(v []float32) {
	if d != BF16 && d != FP16 {
		return
	}
	for i, x := range v {
		v[i] = d.Round(x)
	}
}
