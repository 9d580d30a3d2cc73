package profiler

import (
	"context"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// stuck is a backend whose Step runs until ctx ends, as a long CPU step
// does, and counts its Close calls.
type stuck struct {
	*kernels.CPU
	stepping chan struct{} // closed when a step starts
	closed   *atomic.Int32
}

func (b stuck) Step(ctx context.Context, _ kernels.StepInput) (kernels.StepResult, error) {
	select {
	case <-b.stepping:
	default:
		close(b.stepping)
	}
	<-ctx.Done()
	return kernels.StepResult{}, ctx.Err()
}

func (b stuck) Close() error { b.closed.Add(1); return b.CPU.Close() }

func newStuck() stuck {
	return stuck{CPU: kernels.NewCPU(), stepping: make(chan struct{}), closed: new(atomic.Int32)}
}

func TestCancelledStepIsTheEndOfTheRunNotAnError(t *testing.T) {
	b := newStuck()
	l := &Loop{Backend: b, Config: smallConfig("uniform")}
	ctx, cancel := context.WithCancel(context.Background())
	out := make(chan stream.Sample, 4)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, out, 0) }()
	<-b.stepping
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("run ended with %v; a cancelled step is the end, not an error", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("run did not end after its step was cancelled")
	}
	if n := len(out); n != 0 {
		t.Errorf("%d samples from a cancelled step; want none", n)
	}
	if n := b.closed.Load(); n != 1 {
		t.Errorf("backend closed %d times, want once", n)
	}
}

func TestCancelledBeforePreparingEndsQuietly(t *testing.T) {
	b := newStuck()
	l := &Loop{Backend: b, Config: smallConfig("uniform")}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := l.Run(ctx, make(chan stream.Sample), 0); err != nil {
		t.Fatalf("run: %v, want nil for a run cancelled while it prepared", err)
	}
	if n := b.closed.Load(); n != 1 {
		t.Errorf("backend closed %d times, want once", n)
	}
}

func TestRunClosesTheBackendAChangeSwitchedTo(t *testing.T) {
	first, second := newStuck(), newStuck()
	changes := make(chan Change, 1)
	l := &Loop{Backend: first, Config: smallConfig("uniform"), Changes: changes}
	changes <- Change{Backend: second}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, make(chan stream.Sample, 4), 0) }()
	<-second.stepping
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if a, b := first.closed.Load(), second.closed.Load(); a != 1 || b != 1 {
		t.Errorf("closed: first %d, second %d times; want each once", a, b)
	}
}

func TestPrepareAheadOfRunIsNotRepeated(t *testing.T) {
	l := &Loop{Backend: kernels.NewCPU(), Config: smallConfig("uniform")}
	if err := l.Prepare(context.Background()); err != nil {
		t.Fatal(err)
	}
	// Run must not prepare again: a backend that fails to prepare shows it.
	l.Backend = prepareFails{l.Backend.(*kernels.CPU)}
	out := make(chan stream.Sample, 2)
	if err := l.Run(context.Background(), out, 2); err != nil {
		t.Fatalf("run after Prepare: %v", err)
	}
	if n := len(out); n != 2 {
		t.Errorf("%d samples, want 2", n)
	}
}

type prepareFails struct{ *kernels.CPU }

func (prepareFails) Prepare(context.Context, kernels.Shape) error { return errBroken }
