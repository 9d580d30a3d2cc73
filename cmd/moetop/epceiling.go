package main

import (
	"context"
	"fmt"
	"io"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/stream"
)

// allToAllCeiling puts in the header, for expert-parallel ranks on GPUs
// of this process, their all-to-all ceiling: an NCCL all-to-all of 256
// MiB per rank, best of 5, in nccl-tests' bus bandwidth, which the ranks
// panel puts each rank's dispatch and combine GB/s under. Measured before
// the layer is prepared, so that its buffers do not crowd the layer's.
// CPU ranks and a single rank have none, nor yet a run of one process per
// GPU (ep.SessionBackend): every process would have to join the same
// all-to-all over its communicator, and rank 0 gather their times. A
// failure is said and the run goes on without it. (Not yet checked on GPUs, as the ranks are not: the
// same opt-in, MOETOP_UNVERIFIED_GPU_EP=1, guards it.)
func allToAllCeiling(ctx context.Context, h *stream.Header, be kernels.Backend, stderr io.Writer) {
	b, ok := be.(*cuda.EPBackend)
	if !ok || b.Ranks() < 2 {
		return
	}
	gbps, err := cuda.MeasureAllToAll(ctx, b.Devices, cudaOptions.LibDir, 5)
	if err != nil {
		if ctx.Err() == nil {
			fmt.Fprintf(stderr, "moetop: no all-to-all ceiling: %s\n", oneLine(err.Error()))
		}
		return
	}
	h.AllToAllGBps, h.AllToAllBytes = gbps, cuda.AllToAllCeilingBytes
}
