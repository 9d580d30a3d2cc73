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

// sharedExperts runs the layer's shared experts, one dense FFN over every
// token, on a stream and cuBLAS handle of their own, so that they overlap
// the routed experts on the main stream: they need only x, so they start
// with the step (waiting on its first event) and the main stream waits for
// them just before combine, which adds their output. Events on their
// stream time them as their own phase, with its start in the step.
type sharedExperts struct {
	stream     C.CUstream
	handle     C.cublasHandle_t
	start, end C.CUevent
}

// sharedPlan is what the shared experts add to a GPU plan beyond
// kernels.SharedBuffers: their handle's workspace and the handle itself.
func sharedPlan(s kernels.Shape) []kernels.Buffer {
	if s.SharedWidth() == 0 {
		return nil
	}
	return []kernels.Buffer{
		{ID: kernels.BufSharedWorkspace, Name: "shared experts' cuBLAS workspace", Kind: kernels.KindWorkspace, Bytes: kernels.WorkspaceBytes},
		{ID: kernels.BufCuBLAS, Name: "shared experts' cuBLAS handle", Kind: kernels.KindWorkspace, Bytes: kernels.HandleBytes},
	}
}

// sharedReads are the buffers the shared experts' step reads.
var sharedReads = []kernels.BufferID{kernels.BufSharedW1, kernels.BufSharedW2, kernels.BufSharedH, kernels.BufSharedY,
	kernels.BufSharedWorkspace}

// setup creates the stream, handle and events; the caller has entered the
// device and allocated the plan.
func (sh *sharedExperts) setup(b *Backend) error {
	for _, e := range []*C.CUevent{&sh.start, &sh.end} {
		if err := check("cuEventCreate(shared)", C.call_cuEventCreate(e, 0 /* timed */)); err != nil {
			return err
		}
	}
	var err error
	if sh.stream, sh.handle, err = openBLASStream(b.bufs[kernels.BufSharedWorkspace], kernels.WorkspaceBytes); err != nil {
		return wrapShared(err)
	}
	return nil
}

// launch queues the shared experts on their stream once the step's first
// event (b.events[0], on the main stream) has passed.
func (sh *sharedExperts) launch(b *Backend) error {
	s := b.s
	w := s.SharedWidth()
	c1 := s.Act.Columns(w)
	if err := check("cuStreamWaitEvent(shared fork)", C.call_cuStreamWaitEvent(sh.stream, b.events[0], 0)); err != nil {
		return err
	}
	if err := check("cuEventRecord(shared start)", C.call_cuEventRecord(sh.start, sh.stream)); err != nil {
		return err
	}
	x, w1, w2 := b.bufs[kernels.BufX], b.bufs[kernels.BufSharedW1], b.bufs[kernels.BufSharedW2]
	h, y := b.bufs[kernels.BufSharedH], b.bufs[kernels.BufSharedY]
	// h[T × c1] = x[T × H]·w1[H × c1]
	if err := b.gemmEx(sh.handle, s.Tokens, c1, s.Hidden, s.Hidden, x, w1, h); err != nil {
		return wrapShared(err)
	}
	if err := b.activate(h, s.Tokens, w, sh.stream); err != nil {
		return wrapShared(err)
	}
	// y[T × H] = a[T × w]·w2[w × H], a being h's first w columns of each
	// c1-wide row (all of them when not gated).
	if err := b.gemmEx(sh.handle, s.Tokens, s.Hidden, w, c1, h, w2, y); err != nil {
		return wrapShared(err)
	}
	return check("cuEventRecord(shared end)", C.call_cuEventRecord(sh.end, sh.stream))
}

func wrapShared(err error) error { return fmt.Errorf("%s: %w", kernels.PhaseShared, err) }

// join makes the main stream wait for the shared experts: combine reads
// their output.
func (sh *sharedExperts) join(b *Backend) error {
	return check("cuStreamWaitEvent(shared join)", C.call_cuStreamWaitEvent(b.stream, sh.end, 0))
}

// phase times the shared experts once the step is done: from the step's
// first event to their start, and their start to their end.
func (sh *sharedExperts) phase(b *Backend) (kernels.OverlappedPhase, error) {
	var start, ms C.float
	if err := check("cuEventElapsedTime(shared start)", C.call_cuEventElapsedTime(&start, b.events[0], sh.start)); err != nil {
		return kernels.OverlappedPhase{}, err
	}
	if err := check("cuEventElapsedTime(shared)", C.call_cuEventElapsedTime(&ms, sh.start, sh.end)); err != nil {
		return kernels.OverlappedPhase{}, err
	}
	return kernels.OverlappedPhase{Name: kernels.PhaseShared, Start: time.Duration(float64(start) * 1e6),
		Time: time.Duration(float64(ms) * 1e6)}, nil
}

// teardown waits for the stream and releases what setup made.
func (sh *sharedExperts) teardown(r *releaser) {
	r.sync(sh.stream, "shared")
	r.blas(&sh.handle)
	r.event(&sh.start)
	r.event(&sh.end)
	r.stream(&sh.stream)
}
