package ep

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/moetop/moetop/kernels"
)

// LocalRank is this process's rank of a run of one process per rank, when
// the rank talks to its peers through something other than the session:
// the GPU ranks of kernels/cuda, which exchange rows over NCCL. The session
// then only carries the reports, and tells the rank when a peer is gone.
type LocalRank interface {
	Info() kernels.Info
	// Prepare builds the rank for s (Tokens is each rank's). It gives up
	// when ctx ends, which it does when the run is over (a peer died, or
	// rank 0 ended it) with the session's Err as its cause.
	Prepare(ctx context.Context, s kernels.Shape) error
	// StepRank runs the rank's share of one step and reports it.
	StepRank(ctx context.Context, in kernels.StepInput) (Report, error)
	// Abort, from any goroutine, ends the rank's links to its peers: a
	// step waiting on them returns an error wrapping cause, and so does
	// every later step. SessionBackend calls it when the run is over, so
	// that no rank waits on a peer that is gone.
	Abort(cause error)
	Close() error
}

// SessionBackend is this process's rank of a run of one process per rank,
// as kernels.Backend, for a rank whose exchange is its own (LocalRank):
// each step it runs the rank, then gathers every rank's report through the
// session as ProcBackend does, so that every process returns the whole
// step and rank 0 alone makes the sample of it. When the session says the
// run is over, it aborts the rank at once.
type SessionBackend struct {
	Session *Session
	Rank    LocalRank
	// Placement is the one the ranks agreed on (nil: contiguous blocks);
	// kept for the run's header.
	Placement *Placement

	shape kernels.Shape
	steps int
	// run ends, with the session's Err as its cause, when the run is over
	// or the backend closes; the watcher then aborts the rank.
	run     context.Context
	stop    context.CancelCauseFunc
	watcher sync.WaitGroup
}

// Info is the rank's.
func (b *SessionBackend) Info() kernels.Info { return b.Rank.Info() }

// Prepare builds the rank for s, which must be the layer the ranks agreed
// on, and starts watching the session.
func (b *SessionBackend) Prepare(ctx context.Context, s kernels.Shape) error {
	sess := b.Session
	if err := sess.keepsLayer(s); err != nil {
		// The others wait for this rank (in NCCL's init, for GPU ranks):
		// they learn why it will not come, rather than wait for it.
		sess.Abort(err)
		return err
	}
	if b.run == nil {
		b.run, b.stop = context.WithCancelCause(context.Background())
		b.watcher.Go(func() {
			select {
			case <-sess.Done():
				b.stop(sess.Err())
				b.Rank.Abort(sess.Err())
			case <-b.run.Done():
			}
		})
	}
	// Preparing waits on the peers too (NCCL's init returns once every
	// rank has joined): it ends with the run.
	pctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	defer context.AfterFunc(b.run, func() { cancel(context.Cause(b.run)) })()
	if err := b.Rank.Prepare(pctx, s); err != nil {
		if cause := sess.Err(); cause != nil {
			if !errors.Is(err, cause) {
				// Both chains stay whole: callers test either with errors.Is
				// (ErrPeerLost, kernels.ErrOutOfMemory, a timeout).
				err = fmt.Errorf("%w (%w)", cause, err)
			}
			return err
		}
		// The others cannot start without this rank: they learn why,
		// rather than that it left. A rank stopped by its own caller (the
		// user quit) is not a failure of the run: its Close says goodbye.
		if ctx.Err() == nil {
			sess.Abort(fmt.Errorf("rank %d could not prepare: %w", sess.Rank(), err))
		}
		return err
	}
	b.shape = s
	return ctx.Err()
}

// Step runs the rank's share of one step and returns the whole step. A
// failure ends the run for every rank.
func (b *SessionBackend) Step(ctx context.Context, in kernels.StepInput) (kernels.StepResult, error) {
	if b.run == nil || b.shape.Tokens == 0 {
		return kernels.StepResult{}, kernels.ErrNotPrepared
	}
	if in.Fixed != nil {
		return kernels.StepResult{}, errors.New("ep: a fixed routing is not supported across ranks")
	}
	step := b.steps
	b.steps++
	return b.Session.runStep(ctx, b.shape, step, in, func() (Report, error) { return b.Rank.StepRank(ctx, in) })
}

// Close leaves the run, then releases the rank: the goodbye goes first, so
// that the peers stop waiting on this process (they end with ErrEnded)
// while it cleans up, and the rank is aborted rather than closed in step
// with peers that may be gone.
func (b *SessionBackend) Close() error {
	err := b.Session.Close()
	if b.stop != nil {
		b.watcher.Wait() // the session is over: the watcher has aborted the rank
		b.stop(nil)
	}
	return errors.Join(err, b.Rank.Close())
}

// keepsLayer refuses a layer other than the one the ranks agreed on when
// they joined: the others cannot follow a change made on one process.
func (s *Session) keepsLayer(sh kernels.Shape) error {
	l := s.Spec().Layer
	if sh.Tokens != l.Tokens || sh.Hidden != l.Hidden || sh.FFN != l.FFN || sh.Experts != l.Experts || sh.TopK != l.TopK ||
		sh.Seed != l.Seed || sh.DType.String() != l.DType || sh.Act.String() != l.Act {
		return fmt.Errorf("ep: rank %d asked for %v, but the ranks agreed on %v: a multi-process run keeps its layer",
			s.Rank(), sh, l)
	}
	return nil
}

// runStep runs this process's rank through step n (run), hands its report to
// rank 0 and returns the whole step, every rank's report, on every
// process. A failure aborts the run for every rank. A rank's own failure
// that came because the run was already over (its links to a dead peer
// aborted) leads with the reason the run is over.
func (s *Session) runStep(ctx context.Context, sh kernels.Shape, n int, in kernels.StepInput, run func() (Report, error)) (kernels.StepResult, error) {
	rep, err := run()
	if err != nil {
		if cause := s.Err(); cause != nil && !errors.Is(err, cause) && !speaksOfTheRun(err) {
			err = fmt.Errorf("%w (%w)", cause, err)
		}
		err = fmt.Errorf("step %d: %w", n, err)
	} else {
		rep.Bias = biasPrint(in.Bias)
		var reps []Report
		if reps, err = s.Gather(ctx, rep); err == nil {
			return resultOf(sh, reps), nil
		}
	}
	if ctx.Err() == nil {
		s.Abort(err)
	}
	return kernels.StepResult{}, err
}

// speaksOfTheRun says whether err already tells how the run ended.
func speaksOfTheRun(err error) bool {
	for _, k := range abortKinds {
		if errors.Is(err, k) {
			return true
		}
	}
	return false
}
