package ep

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"runtime"

	"github.com/moetop/moetop/kernels"
)

// ProcBackend is one rank of a run with one process per rank, as
// kernels.Backend. Each step it runs its rank's share of the layer on the
// CPU reference over the session's TCP mesh, then gathers every rank's
// report through the coordinator, so that every process returns the whole
// step: rank 0 makes the sample of it, and the others steer their router
// from the same rows, which keeps every rank's bias, and so the layer,
// identical to a single process running all ranks.
type ProcBackend struct {
	Session *Session
	// Placement says which rank holds each expert; nil: contiguous blocks.
	// It must be the one the ranks agreed on (Spec.Placement).
	Placement *Placement

	shape kernels.Shape
	rank  *Rank
	steps int
}

// Info names the backend after the reference its rank runs, as CPUBackend
// does.
func (b *ProcBackend) Info() kernels.Info {
	ref, _ := kernels.Reference()
	return kernels.Info{Name: ref.Name, Device: fmt.Sprintf("CPU reference, rank %d of %d expert-parallel processes (%d threads)",
		b.Session.Rank(), b.Session.World(), runtime.GOMAXPROCS(0))}
}

// Prepare builds this process's rank for s, whose Tokens is each rank's.
// The layer must be the one the ranks agreed on when they joined: the
// others cannot follow a change made on one process.
func (b *ProcBackend) Prepare(ctx context.Context, s kernels.Shape) error {
	sess := b.Session
	if sess.Transport() == nil {
		return errors.New("ep: the session has no mesh to run CPU ranks over (join with Mesh)")
	}
	if err := sess.keepsLayer(s); err != nil {
		sess.Abort(err) // the others learn why this rank will not come
		return err
	}
	p := b.Placement
	if p == nil {
		var err error
		if p, err = Contiguous(s.Experts, sess.World()); err != nil {
			return err
		}
	}
	rk, err := NewRank(Config{Shape: s, Placement: p}, sess.Transport())
	if err != nil {
		return err
	}
	b.shape, b.rank = s, rk
	return ctx.Err()
}

// Step runs this rank's share of one step and returns the whole step. A
// failure ends the run for every rank.
func (b *ProcBackend) Step(ctx context.Context, in kernels.StepInput) (kernels.StepResult, error) {
	if b.rank == nil {
		return kernels.StepResult{}, kernels.ErrNotPrepared
	}
	if in.Fixed != nil {
		return kernels.StepResult{}, errors.New("ep: a fixed routing is not supported across ranks")
	}
	b.rank.cfg.Bias = in.Bias
	step := b.steps
	b.steps++
	return b.Session.runStep(ctx, b.shape, step, in, func() (Report, error) {
		res, err := b.rank.Step(ctx)
		if err != nil {
			return Report{}, err
		}
		return reportOf(res, b.shape), nil
	})
}

// Close leaves the run: after rank 0's Close, the other ranks end with
// ErrEnded.
func (b *ProcBackend) Close() error {
	b.rank = nil
	return b.Session.Close()
}

// biasPrint fingerprints a router bias by its bits (0 for none).
func biasPrint(bias []float32) uint64 {
	if bias == nil {
		return 0
	}
	h := fnv.New64a()
	var b [4]byte
	for _, v := range bias {
		u := math.Float32bits(v)
		b[0], b[1], b[2], b[3] = byte(u), byte(u>>8), byte(u>>16), byte(u>>24)
		h.Write(b[:])
	}
	return h.Sum64() | 1 // never 0, which means none
}
