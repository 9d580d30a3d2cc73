package kernels

import (
	"context"
	"time"
)

// sharedRun is the CPU backend's shared experts running on a goroutine of
// their own beside the routed experts, as a GPU backend runs them on a
// stream of their own.
type sharedRun struct {
	done  chan struct{}
	phase OverlappedPhase
	err   error
}

// startShared runs the shared experts over every token into c.sy; step is
// when the step started, which the phase's start is measured from. They
// look at ctx between blocks of work, as the routed experts do.
func (c *CPU) startShared(ctx context.Context, step time.Time) *sharedRun {
	r := &sharedRun{done: make(chan struct{})}
	go func() {
		defer close(r.done)
		start := time.Now()
		r.err = c.shared(ctx)
		r.phase = OverlappedPhase{Name: PhaseShared, Start: start.Sub(step), Time: time.Since(start)}
	}()
	return r
}

// wait returns the phase once the shared experts are done; it may be
// called again.
func (r *sharedRun) wait() (OverlappedPhase, error) {
	<-r.done
	return r.phase, r.err
}

// shared is SharedForward over every token in blocks that look at ctx:
// the same GEMMs, activation and rounding points.
func (c *CPU) shared(ctx context.Context) error {
	s := c.s
	t, h, w := s.Tokens, s.Hidden, s.SharedWidth()
	c1 := s.Act.Columns(w)
	if err := gemm(ctx, t, h, c1, c.x, c.sw1, c.sh); err != nil {
		return err
	}
	if err := c.round(ctx, c.sh); err != nil {
		return err
	}
	if err := activateInBlocks(ctx, c.sh, t, w, s.Act); err != nil {
		return err
	}
	if err := c.round(ctx, c.sh[:t*w]); err != nil {
		return err
	}
	if err := gemm(ctx, t, w, h, c.sh, c.sw2, c.sy); err != nil {
		return err
	}
	return c.round(ctx, c.sy)
}
