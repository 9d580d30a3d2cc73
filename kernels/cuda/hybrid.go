package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"fmt"
	"time"

	"github.com/moetop/moetop/kernels"
)

func init() {
	register(kernels.Registration{
		Name: "hybrid",
		Doc: fmt.Sprintf("cublasGemmEx for experts of ≥ %d rows, beside one grouped call for a tail of ≥ %d smaller ones",
			HybridRows, HybridTail),
		Order:    50,
		Plan:     hybridPlan,
		Supports: needsGroupedGEMM,
	}, func() runner { return &hybrid{} })
}

// hybridPlan: the dense rows, the grouped call's pointer arrays, and a
// handle and workspace for each of the two streams.
func hybridPlan(s kernels.Shape, _ []int) ([]kernels.Buffer, error) {
	b := append(gpuCommon(s), kernels.DenseRows(s, uint64(s.DType.Size()))...)
	return append(b, pointerArrays(s), kernels.Workspaces(2), kernels.Handles(2)), nil
}

// hybrid splits the experts by size. The busy ones (at least HybridRows
// rows) go through cublasGemmEx, which reaches Hopper's fast kernels; the
// long tail of small ones goes through one cublasGemmGroupedBatchedEx call
// on a second stream at the same time, where one launch does the work of
// a hundred small GEMMs that could not fill the card one by one.
type hybrid struct {
	g      grouped
	side   C.CUstream
	handle C.cublasHandle_t
	fork   C.CUevent
	join   C.CUevent
	small  []int
}

// HybridRows is the fewest rows an expert needs to get a GEMM of its own
// in the hybrid backend: 2048 rows of a 768- to 2048-wide output are
// 96-256 tiles of 128×128, enough to keep most of a Hopper card busy.
const HybridRows = 2048

// HybridTail is the fewest small experts worth one grouped call. Measured
// on an H200: with 8 experts, a tail of two or three small ones run by the
// grouped kernel beside the big GEMMs slowed the step by a third (mixtral,
// zipf:1.2: 449 TFLOP/s against the loop's 728), while a tail of 120 at
// 128 experts sped it up by a third (qwen3-moe: 396 against 294).
const HybridTail = 16

func (h *hybrid) setup(b *Backend) error {
	if err := check("cuEventCreate(fork)", C.call_cuEventCreate(&h.fork, 2)); err != nil {
		return err
	}
	if err := check("cuEventCreate(join)", C.call_cuEventCreate(&h.join, 2)); err != nil {
		return err
	}
	var err error
	h.side, h.handle, err = openBLASStream(b.bufs[kernels.BufWorkspace]+ptr(kernels.WorkspaceBytes), kernels.WorkspaceBytes)
	return err
}

func (h *hybrid) buffers() []kernels.BufferID { return []kernels.BufferID{kernels.BufPointers} }

// hybridSplit is where the tail starts in order (experts busiest first):
// at the first expert under HybridRows rows, or at the end (GemmEx for
// all) when fewer than HybridTail experts would be in it.
func hybridSplit(order, counts []int) int {
	split := len(order)
	for i, e := range order {
		if counts[e] < HybridRows {
			split = i
			break
		}
	}
	if len(order)-split < HybridTail {
		return len(order)
	}
	return split
}

func (h *hybrid) gemm(b *Backend, second bool) error {
	order := b.expertOrder() // busiest first
	split := hybridSplit(order, b.counts)
	if !second {
		h.small = order[split:]
		// Uploaded on the main stream, before the fork, so the side stream
		// sees the arrays.
		if err := h.g.upload(b, h.small, b.stream); err != nil {
			return err
		}
	}
	if len(h.small) > 0 {
		if err := check("cuEventRecord(fork)", C.call_cuEventRecord(h.fork, b.stream)); err != nil {
			return err
		}
		if err := check("cuStreamWaitEvent(fork)", C.call_cuStreamWaitEvent(h.side, h.fork, 0)); err != nil {
			return err
		}
		if err := h.g.launch(b, h.handle, second); err != nil {
			return err
		}
	}
	for _, e := range order[:split] {
		n, k, ldx, x, w, y := b.operands(e, second)
		if err := b.gemmEx(b.handle, b.counts[e], n, k, ldx, x, w, y); err != nil {
			return err
		}
	}
	if len(h.small) > 0 {
		if err := check("cuEventRecord(join)", C.call_cuEventRecord(h.join, h.side)); err != nil {
			return err
		}
		return check("cuStreamWaitEvent(join)", C.call_cuStreamWaitEvent(b.stream, h.join, 0))
	}
	return nil
}

func (h *hybrid) expertTimes(*Backend) ([]time.Duration, error) { return nil, nil }

func (h *hybrid) teardown(b *Backend) {
	b.rel.blasStream(&h.side, &h.handle, "hybrid side")
	b.rel.event(&h.fork)
	b.rel.event(&h.join)
}
