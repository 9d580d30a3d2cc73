package cuda

import (
	"errors"
	"testing"

	"github.com/moetop/moetop/kernels"
)

// brokenContext is a device whose context can no longer be entered (the
// driver shutting down, the context destroyed); it counts releases.
type brokenContext struct{ closes int }

var errEnter = errors.New("cuCtxSetCurrent: CUDA_ERROR_DEINITIALIZED")

func (c *brokenContext) Enter() (func(), error) { return nil, errEnter }
func (c *brokenContext) Close() error           { c.closes++; return nil }

// Close must release the context even when it cannot be entered, and
// must not touch the handles it can no longer free (no CUDA call here:
// this runs without a GPU, where any would crash).
func TestCloseReleasesTheContextWhenEnteringFails(t *testing.T) {
	ctx := &brokenContext{}
	b := &Backend{name: "loop", ctx: ctx, run: &loop{}, lay: dense{}, prepared: true,
		counts: []int{1, 2}, offsets: []int{0, 1}}
	b.bufs[kernels.BufX] = 0xdead // a handle that must be forgotten, not freed
	err := b.Close()
	if !errors.Is(err, errEnter) {
		t.Errorf("Close: %v, want the enter error", err)
	}
	if ctx.closes != 1 {
		t.Errorf("context released %d times, want once", ctx.closes)
	}
	if b.prepared || b.bufs[kernels.BufX] != 0 || b.run != nil || b.counts != nil {
		t.Errorf("handles kept after Close: prepared %v, x %#x, runner %v", b.prepared, b.bufs[kernels.BufX], b.run)
	}
	if err := b.Close(); err != nil || ctx.closes != 1 {
		t.Errorf("second Close: %v, %d releases; want nothing done", err, ctx.closes)
	}
	if _, err := b.Step(t.Context(), kernels.StepInput{}); !errors.Is(err, kernels.ErrNotPrepared) {
		t.Errorf("Step after Close: %v", err)
	}
	if err := b.Prepare(t.Context(), kernels.Shape{}); !errors.Is(err, errClosed) {
		t.Errorf("Prepare after Close: %v", err)
	}
}
