package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"errors"
	"time"
	"unsafe"

	"github.com/moetop/moetop/kernels"
)

func init() {
	register(kernels.Registration{
		Name:     "grouped",
		Doc:      "cublasGemmGroupedBatchedEx, experts of equal rows in one group",
		Order:    10,
		Plan:     groupedPlan,
		Supports: needsGroupedGEMM,
	}, func() runner { return &grouped{} })
}

// groupedPlan: the dense rows, both GEMMs' pointer arrays and one handle.
func groupedPlan(s kernels.Shape, _ []int) ([]kernels.Buffer, error) {
	b := append(gpuCommon(s), kernels.DenseRows(s, uint64(s.DType.Size()))...)
	return append(b, pointerArrays(s), kernels.Workspaces(1), kernels.Handles(1)), nil
}

// pointerArrays are A, B and C's device arrays of device pointers for both
// GEMMs: 6 pointers per expert.
func pointerArrays(s kernels.Shape) kernels.Buffer {
	return kernels.Buffer{ID: kernels.BufPointers, Name: "pointer arrays", Kind: kernels.KindIndex, Bytes: uint64(6 * 8 * s.Experts)}
}

// needsGroupedGEMM refuses a cuBLAS without the grouped GEMM.
func needsGroupedGEMM(c kernels.Caps, _ kernels.Shape) error {
	if !c.GroupedGEMM {
		return errors.New("this cuBLAS has no cublasGemmGroupedBatchedEx (needs 12.5 or newer)")
	}
	return nil
}

// grouped runs each GEMM as one cublasGemmGroupedBatchedEx call. Experts
// with the same rows form one group (group sizes then carry the batch);
// experts with no rows are left out. The founding report's wrong results
// came from offsets of i·m_e: each expert's rows start at the running sum
// of the earlier experts' rows (Backend.operands).
type grouped struct {
	m, n, k, ldb, size []C.int
	problems           int
}

func (g *grouped) setup(*Backend) error { return nil }

func (g *grouped) buffers() []kernels.BufferID { return []kernels.BufferID{kernels.BufPointers} }

// gemm for gemm1 also builds both GEMMs' pointer arrays and uploads them
// in one copy: the host-side cost of this API is known to be high, so a
// step pays for one upload, not two.
func (g *grouped) gemm(b *Backend, second bool) error {
	if !second {
		if err := g.upload(b, b.expertOrder(), b.stream); err != nil {
			return err
		}
	}
	return g.launch(b, b.handle, second)
}

// groupRows splits experts (listed with equal rows next to each other, as
// busiest first lists them) into groups of equal rows: rows[i] rows for
// each of size[i] experts.
func groupRows(experts, counts []int) (rows, size []int) {
	for i, ex := range experts {
		if i == 0 || counts[experts[i-1]] != counts[ex] {
			rows = append(rows, counts[ex])
			size = append(size, 0)
		}
		size[len(size)-1]++
	}
	return rows, size
}

// upload writes both GEMMs' pointer arrays for experts (busiest first, so
// experts of equal rows sit together and form one group) and copies them
// to the device on stream.
func (g *grouped) upload(b *Backend, experts []int, stream C.CUstream) error {
	e := b.s.Experts
	host := unsafe.Slice((*uint64)(b.hostPtrs), 6*e)
	for i, ex := range experts {
		for gemm := 0; gemm < 2; gemm++ {
			_, _, _, x, w, y := b.operands(ex, gemm == 1)
			host[(3*gemm+0)*e+i] = uint64(w)
			host[(3*gemm+1)*e+i] = uint64(x)
			host[(3*gemm+2)*e+i] = uint64(y)
		}
	}
	rows, size := groupRows(experts, b.counts)
	g.n, g.size = g.n[:0], g.size[:0]
	for i := range rows {
		g.n = append(g.n, C.int(rows[i]))
		g.size = append(g.size, C.int(size[i]))
	}
	g.problems = len(experts)
	if g.problems == 0 {
		return nil
	}
	return check("cuMemcpyHtoDAsync_v2(pointer arrays)", C.call_cuMemcpyHtoDAsync_v2(b.bufs[kernels.BufPointers], b.hostPtrs, C.size_t(6*8*e), stream))
}

// launch runs one GEMM over the uploaded experts with handle h.
func (g *grouped) launch(b *Backend, h C.cublasHandle_t, second bool) error {
	if g.problems == 0 {
		return nil
	}
	s := b.s
	e := s.Experts
	arrays := b.bufs[kernels.BufPointers]
	// Sizes as Backend.operands gives them: gated, gemm1 is 2·ffn wide and
	// gemm2 reads its ffn columns from those 2·ffn-wide rows.
	N, K, ldx := gemmShape(s, second)
	base := 0
	if second {
		base = 3
	}
	g.m, g.k, g.ldb = g.m[:0], g.k[:0], g.ldb[:0]
	for range g.n {
		g.m = append(g.m, C.int(N))
		g.k = append(g.k, C.int(K))
		g.ldb = append(g.ldb, C.int(ldx))
	}
	data, compute, _ := dtypes(s.DType)
	at := func(i int) ptr { return arrays + ptr(8*(base+i)*e) }
	// Row-major to column-major as in gemmEx: A = W, B = X, m = N, n = rows.
	return checkBLAS("cublasGemmGroupedBatchedEx", C.moetop_gemm_grouped(h, C.int(len(g.n)),
		&g.m[0], &g.n[0], &g.k[0], &g.ldb[0], &g.size[0], at(0), at(1), at(2), C.int(data), C.int(compute)))
}

func (g *grouped) expertTimes(*Backend) ([]time.Duration, error) { return nil, nil }
func (g *grouped) teardown(*Backend)                             {}
