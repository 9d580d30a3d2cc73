package nvml

import (
	"context"
	"errors"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// openSystem opens the machine's NVML, or skips saying why it cannot.
func openSystem(t *testing.T) *GPU {
	t.Helper()
	g, err := OpenGPU(system{gonvml.New()})
	var ng *NoGPUError
	if errors.As(err, &ng) {
		t.Skipf("no CUDA device: %s", ng.Reason)
	}
	if err != nil {
		t.Fatal(err)
	}
	return g
}

// On a real GPU, with the real dlopen/dlclose of libnvidia-ml.so under it:
// open, poll at the fastest interval and close, 20 times, ending each poll
// in one of the three ways a run ends it (its context, Close, and the old
// call site's Close from another goroutine, which crashed issue 14's run).
// Ending a poll must never call NVML after nvmlShutdown: here that would
// be a SIGSEGV, not a failed assertion.
func TestGPUOpenPollCloseTwentyTimes(t *testing.T) {
	for i := 0; i < 20; i++ {
		g := openSystem(t)
		ctx, cancel := context.WithCancel(context.Background())
		p := Poll(ctx, g, MinInterval)
		want := uint64(2 + i%4)
		deadline := time.Now().Add(5 * time.Second)
		for _, seq := p.Latest(); seq < want; _, seq = p.Latest() {
			if time.Now().After(deadline) {
				t.Fatalf("round %d: %d readings in 5 s at %s", i, seq, MinInterval)
			}
			time.Sleep(5 * time.Millisecond)
		}
		snap, _ := p.Latest()
		if len(snap.Devices) == 0 || snap.Devices[0].Err != "" || snap.Devices[0].MemTotalBytes == nil {
			t.Fatalf("round %d: reading %+v", i, snap)
		}
		switch i % 3 {
		case 0:
			cancel()
			<-p.Done()
		case 1:
			if err := p.Close(); err != nil {
				t.Errorf("round %d: Close: %v", i, err)
			}
		case 2:
			closed := make(chan error, 1)
			go func() { <-ctx.Done(); closed <- g.Close() }()
			cancel()
			if err := <-closed; err != nil {
				t.Errorf("round %d: Close from another goroutine: %v", i, err)
			}
			<-p.Done()
		}
		cancel()
		if s := g.Read(); s.Err != ErrClosed.Error() || len(s.Devices) != 0 {
			t.Errorf("round %d: a Read after Close returned %d devices, err %q", i, len(s.Devices), s.Err)
		}
	}
}
