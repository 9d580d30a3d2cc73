package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"time"

	"github.com/moetop/moetop/kernels"
)

func init() {
	register(kernels.Registration{
		Name:  "padded",
		Doc:   "cublasGemmStridedBatchedEx over rows padded to the busiest expert or --capacity-factor",
		Order: 40,
		Plan:  paddedPlan,
	}, func() runner { return &padded{} })
}

// paddedPlan: instead of the dense rows, x, h and y padded to capacity
// rows for every expert (kind padding: they follow the step's counts).
func paddedPlan(s kernels.Shape, counts []int) ([]kernels.Buffer, error) {
	dt, e, h, c1 := uint64(s.DType.Size()), uint64(s.Experts), uint64(s.Hidden), uint64(s.W1Cols())
	c := uint64(capacity(s, counts))
	return append(gpuCommon(s),
		kernels.Buffer{ID: kernels.BufPermutedX, Name: "padded x", Kind: kernels.KindPadding, Bytes: e * c * h * dt},
		kernels.Buffer{ID: kernels.BufH, Name: "padded h", Kind: kernels.KindPadding, Bytes: e * c * c1 * dt},
		kernels.Buffer{ID: kernels.BufY, Name: "padded y", Kind: kernels.KindPadding, Bytes: e * c * h * dt},
		kernels.Workspaces(1), kernels.Handles(1)), nil
}

// capacity is the rows per expert: the busiest expert's rows when
// dropless, else ceil(factor·rows/experts).
func capacity(s kernels.Shape, counts []int) int {
	if s.CapacityFactor > 0 {
		c := s.CapacityFactor * float64(s.Rows()) / float64(s.Experts)
		n := int(c)
		if float64(n) < c {
			n++
		}
		return n
	}
	m := 0
	for _, c := range counts {
		m = max(m, c)
	}
	return m
}

// overflow counts the rows over capacity that a step drops.
func overflow(counts []int, capacity int) int {
	n := 0
	for _, c := range counts {
		n += max(0, c-capacity)
	}
	return n
}

// padded is the torch.bmm / GShard baseline: every expert padded to the
// same capacity (the busiest expert's rows, or a capacity factor that
// drops the overflow) and one cublasGemmStridedBatchedEx per GEMM. Its
// layout hooks replace the shared dense layout.
type padded struct {
	rowsPer int // rows per expert this step
	held    int // rows per expert the padding buffers hold
	drops   int // rows over capacity this step
}

func (*padded) setup(*Backend) error                          { return nil }
func (*padded) buffers() []kernels.BufferID                   { return nil }
func (*padded) expertTimes(*Backend) ([]time.Duration, error) { return nil, nil }

// teardown forgets the padding: Backend.release frees its buffers with
// the rest.
func (p *padded) teardown(*Backend) { *p = padded{} }

// place sets this step's capacity and grows the padding buffers to it.
// They are kept while the capacity does not grow, as a framework's caching
// allocator would. The scatter then puts each expert's rows at
// expert·capacity and drops those past it.
func (p *padded) place(b *Backend) (int, error) {
	// At least one row: a capacity of 0 would tell the scatter "dense".
	p.rowsPer = max(1, capacity(b.s, b.counts))
	p.drops = overflow(b.counts, p.rowsPer)
	if p.rowsPer <= p.held {
		return p.rowsPer, nil
	}
	if err := p.shrink(b); err != nil {
		return 0, err
	}
	plan, err := paddedPlan(b.s, b.counts)
	if err != nil {
		return 0, err
	}
	if err := b.allocate(plan, func(k kernels.BufferKind) bool { return k == kernels.KindPadding }); err != nil {
		return 0, err
	}
	p.held = p.rowsPer
	return p.rowsPer, nil
}

// rows: the activation runs over every padded row.
func (p *padded) rows(b *Backend) int { return b.s.Experts * p.rowsPer }

func (p *padded) dropped(*Backend) int { return p.drops }

// shrink frees the padding buffers, waiting for the work that may use them.
func (p *padded) shrink(b *Backend) error {
	var r releaser
	r.sync(b.stream, "padding")
	r.add(b.freeBuffers(kernels.BufPermutedX, kernels.BufH, kernels.BufY))
	p.held = 0
	return r.err()
}

func (p *padded) gemm(b *Backend, second bool) error {
	s := b.s
	n, k, ldx := gemmShape(s, second)
	x, w, y := b.bufs[kernels.BufPermutedX], b.bufs[kernels.BufW1], b.bufs[kernels.BufH]
	if second {
		x, w, y = b.bufs[kernels.BufH], b.bufs[kernels.BufW2], b.bufs[kernels.BufY]
	}
	c := p.rowsPer
	data, compute, _ := dtypes(s.DType)
	// Batched row-major Y_e[c×N] = X_e[c×K]·W_e[K×N], swapped to column-major
	// as in gemmEx, with each operand's batch stride: X_e's rows are ldx
	// apart (2·ffn for gemm2 when gated), so its batch stride is c·ldx.
	return checkBLAS("cublasGemmStridedBatchedEx", C.moetop_gemm_strided(b.handle, C.int(n), C.int(c), C.int(k),
		w, C.int(n), C.longlong(k*n), x, C.int(ldx), C.longlong(c*ldx), y, C.int(n), C.longlong(c*n),
		C.int(s.Experts), C.int(data), C.int(compute)))
}
