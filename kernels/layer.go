package kernels

import (
	"context"
	"fmt"
	"math"
)

// The layer's steps that are not GEMMs, as plain functions over host slices.
// The CPU backend runs them and the checks use them as the oracle, so the GPU
// kernels in kernels/cuda must agree with exactly these semantics.

// topK writes into ids the indices of the len(ids) largest values, largest
// first; an insertion sort is right for k ≤ 8 of up to a few hundred experts.
func topK(v []float32, ids []int32) {
	n := 0
	for i, x := range v {
		if n == len(ids) && x <= v[ids[n-1]] {
			continue
		}
		p := n
		if n < len(ids) {
			n++
		} else {
			p = n - 1
		}
		for p > 0 && x > v[ids[p-1]] {
			ids[p] = ids[p-1]
			p--
		}
		ids[p] = int32(i)
	}
}

// Permutation groups routed rows by expert.
type Permutation struct {
	Counts  []int   // rows per expert
	Offsets []int   // first row of each expert (exclusive prefix sum of Counts)
	RowOf   []int32 // row of token t's slot j, at t*k+j
	Token   []int32 // token of each row
}

// Permute orders rows by expert, and within an expert by token then slot,
// so that the order is the same on every backend.
func Permute(a Assignment, t, k, e int) (Permutation, error) {
	p := Permutation{Counts: make([]int, e), Offsets: make([]int, e),
		RowOf: make([]int32, t*k), Token: make([]int32, t*k)}
	for _, id := range a.IDs {
		if id < 0 || int(id) >= e {
			return p, fmt.Errorf("permute: expert id %d out of range [0,%d)", id, e)
		}
		p.Counts[id]++
	}
	sum := 0
	for i, c := range p.Counts {
		p.Offsets[i] = sum
		sum += c
	}
	next := append([]int(nil), p.Offsets...)
	for i, id := range a.IDs {
		r := next[id]
		next[id]++
		p.RowOf[i] = int32(r)
		p.Token[r] = int32(i / k)
	}
	return p, nil
}

// Activate applies an elementwise activation in place: GELU is the exact
// erf form (PyTorch's default), SiLU is x·σ(x). A gated activation uses
// the same nonlinearity on its gate (ActivateRows).
func Activate(h []float32, act Activation) {
	if act.SiLUBased() {
		for i, x := range h {
			h[i] = silu(x)
		}
		return
	}
	for i, x := range h {
		h[i] = gelu(x)
	}
}

func silu(x float32) float32 { return x / (1 + float32(math.Exp(float64(-x)))) }

func gelu(x float32) float32 { return 0.5 * x * (1 + float32(math.Erf(float64(x)*(1/math.Sqrt2)))) }

// ActivateRows applies act to rows rows of gemm1's output h, each
// act.Columns(f) wide, and returns the activation's output, rows × f,
// packed at the start of h. Gated, a row holds the gate's f columns then
// the up projection's f, and its output is act(gate)·up. Rows go in
// order, so packing in place is safe: row r's output [r·f, (r+1)·f)
// overwrites only rows already read (for r ≥ 1, (r+1)·f ≤ 2r·f, where row
// r's input starts), and row 0 reads each column before writing it.
func ActivateRows(h []float32, rows, f int, act Activation) []float32 {
	activateRange(h, 0, rows, f, act)
	return h[:rows*f]
}

// activateRange is ActivateRows for rows [lo, hi): called over ascending
// ranges, it packs exactly as one call over all rows does.
func activateRange(h []float32, lo, hi, f int, act Activation) {
	if !act.Gated() {
		Activate(h[lo*f:hi*f], act)
		return
	}
	nl := gelu
	if act.SiLUBased() {
		nl = silu
	}
	for r := lo; r < hi; r++ {
		in := h[2*r*f : 2*(r+1)*f]
		o := h[r*f : (r+1)*f]
		for j := range o {
			o[j] = nl(in[j]) * in[f+j]
		}
	}
}

// activateInBlocks is ActivateRows in ascending blocks of rows, looking at
// ctx between them.
func activateInBlocks(ctx context.Context, h []float32, rows, f int, act Activation) error {
	return inBlocks(ctx, rows, max(1, elemBlock/max(1, act.Columns(f))), func(lo, hi int) {
		activateRange(h, lo, hi, f, act)
	})
}

// Combine writes out[t] = Σ_j w[t,j]·y[row(t,j)]; y is rows × h.
func Combine(out, y []float32, a Assignment, p Permutation, t, k, h int) {
	for tok := 0; tok < t; tok++ {
		o := out[tok*h : (tok+1)*h]
		for i := range o {
			o[i] = 0
		}
		for j := 0; j < k; j++ {
			w := a.Weights[tok*k+j]
			r := int(p.RowOf[tok*k+j])
			yr := y[r*h : (r+1)*h]
			for i := range o {
				o[i] += w * yr[i]
			}
		}
	}
}

// FixedAssignment spreads the given per-expert counts over tokens so that
// each token gets exactly k rows with weight 1/k. Rows of expert e follow
// those of e-1 and tokens are taken round-robin, so an expert with at most
// t rows meets each token at most once, as a router would route them: the
// capped counts of bench and the calibration (profiler.CappedCounts, the
// peer's count_rows with its cap) never exceed t. Counts over t are still
// taken, and then a token meets that expert more than once: the dense
// reference puts all t·k rows on one expert on purpose, to time one GEMM
// pair of the layer's FLOPs.
func FixedAssignment(counts []int, t, k int) (Assignment, error) {
	total := 0
	for e, c := range counts {
		if c < 0 {
			return Assignment{}, fmt.Errorf("fixed counts: expert %d has %d rows", e, c)
		}
		total += c
	}
	if total != t*k {
		return Assignment{}, fmt.Errorf("fixed counts sum to %d, want tokens×top-k = %d", total, t*k)
	}
	a := Assignment{IDs: make([]int32, t*k), Weights: make([]float32, t*k)}
	r := 0
	for e, c := range counts {
		for i := 0; i < c; i++ {
			tok, slot := r%t, r/t
			a.IDs[tok*k+slot] = int32(e)
			a.Weights[tok*k+slot] = 1 / float32(k)
			r++
		}
	}
	return a, nil
}
