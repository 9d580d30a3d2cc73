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
		Name:  "streams",
		Doc:   fmt.Sprintf("the loop over %d CUDA streams, each with its own cuBLAS handle and workspace", StreamCount),
		Order: 30,
		Plan:  streamsPlan,
	}, func() runner { return &streams{} })
}

// StreamCount is how many CUDA streams (each with its own cuBLAS handle and
// workspace) the streams backend spreads experts over.
const StreamCount = 4

// streamsPlan: the dense rows, and a handle and workspace per stream
// besides the main stream's handle, which shares stream 0's workspace: it
// runs only the router GEMM, which the streams wait for.
func streamsPlan(s kernels.Shape, _ []int) ([]kernels.Buffer, error) {
	b := append(gpuCommon(s), kernels.DenseRows(s, uint64(s.DType.Size()))...)
	return append(b, kernels.Workspaces(StreamCount), kernels.Handles(1+StreamCount)), nil
}

// streams spreads the per-expert GEMMs over StreamCount CUDA streams, each
// with its own cuBLAS handle and workspace, as cuBLAS's docs suggest for
// many small independent GEMMs. Experts go busiest first to the stream
// with the fewest rows so far.
type streams struct {
	ev      expertEvents
	streams [StreamCount]C.CUstream
	handles [StreamCount]C.cublasHandle_t
	fork    C.CUevent
	join    [StreamCount]C.CUevent
}

func (s *streams) timesExperts() bool          { return true }
func (s *streams) graphable() bool             { return true }
func (s *streams) buffers() []kernels.BufferID { return nil }

// spread gives each expert of order (busiest first) the stream with the
// fewest rows so far, the lowest on a tie.
func spread(order, counts []int, n int) []int {
	load := make([]int, n)
	at := make([]int, len(order))
	for j, e := range order {
		i := 0
		for k := range load {
			if load[k] < load[i] {
				i = k
			}
		}
		load[i] += counts[e]
		at[j] = i
	}
	return at
}

func (s *streams) setup(b *Backend) error {
	if b.opts.TimeExperts {
		if err := s.ev.create(b.s.Experts); err != nil {
			return err
		}
	}
	if err := check("cuEventCreate(fork)", C.call_cuEventCreate(&s.fork, 2 /* disable timing */)); err != nil {
		return err
	}
	ws := b.bufs[kernels.BufWorkspace]
	for i := range s.streams {
		var err error
		if s.streams[i], s.handles[i], err = openBLASStream(ws+ptr(i*kernels.WorkspaceBytes), kernels.WorkspaceBytes); err != nil {
			return err
		}
		if err := check("cuEventCreate(join)", C.call_cuEventCreate(&s.join[i], 2)); err != nil {
			return err
		}
	}
	return nil
}

func (s *streams) gemm(b *Backend, second bool) error {
	g := 0
	if second {
		g = 1
	}
	if err := check("cuEventRecord(fork)", C.call_cuEventRecord(s.fork, b.stream)); err != nil {
		return err
	}
	for _, st := range s.streams {
		if err := check("cuStreamWaitEvent(fork)", C.call_cuStreamWaitEvent(st, s.fork, 0)); err != nil {
			return err
		}
	}
	order := b.expertOrder()
	for j, i := range spread(order, b.counts, StreamCount) {
		e := order[j]
		rows := b.counts[e]
		if err := s.ev.mark(b.timing, s.ev.start[g], e, s.streams[i]); err != nil {
			return err
		}
		n, k, ldx, x, w, y := b.operands(e, second)
		if err := b.gemmEx(s.handles[i], rows, n, k, ldx, x, w, y); err != nil {
			return err
		}
		if err := s.ev.mark(b.timing, s.ev.end[g], e, s.streams[i]); err != nil {
			return err
		}
	}
	for i, st := range s.streams {
		if err := check("cuEventRecord(join)", C.call_cuEventRecord(s.join[i], st)); err != nil {
			return err
		}
		if err := check("cuStreamWaitEvent(join)", C.call_cuStreamWaitEvent(b.stream, s.join[i], 0)); err != nil {
			return err
		}
	}
	return nil
}

func (s *streams) expertTimes(b *Backend) ([]time.Duration, error) { return s.ev.times(b.counts) }

func (s *streams) teardown(b *Backend) {
	r := b.rel
	s.ev.destroy(r)
	for i := range s.streams {
		r.blasStream(&s.streams[i], &s.handles[i], "streams")
	}
	r.events(s.join[:])
	r.event(&s.fork)
}
