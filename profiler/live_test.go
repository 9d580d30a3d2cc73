package profiler

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

func TestSkewRouting(t *testing.T) {
	for _, c := range []struct {
		in   string
		up   bool
		want string
		err  bool
	}{
		{"uniform", true, "zipf:0.2", false},
		{"uniform", false, "", true},
		{"zipf:1.2", true, "zipf:1.4", false},
		{"zipf:0.2", false, "uniform", false},
		{"hot:3:0.4", true, "hot:3:0.5", false},
		{"hot:3:1", true, "hot:3:1", false},
		{"drift", false, "drift:0.4", false},
		{"drift:0.5:20", true, "drift:0.6:20", false},
		{"seed-uneven", true, "", true},
	} {
		got, err := SkewRouting(c.in, c.up)
		if (err != nil) != c.err || got != c.want {
			t.Errorf("SkewRouting(%q, %v) = %q, %v; want %q (error %v)", c.in, c.up, got, err, c.want, c.err)
		}
	}
}

func TestLiveRefusesAChangePredictedToRunOutOfMemory(t *testing.T) {
	c := smallConfig("uniform")
	live, changes := NewLive(c, "cpu", []string{"cpu"}, nil)
	own, _ := Peak("cpu", c, []int{256, 256, 256, 256, 256, 256, 256, 256})
	// Room for about 3× the current layer.
	live.Observe(stream.Sample{Rows: []int{256, 256, 256, 256, 256, 256, 256, 256},
		Memory: []stream.Memory{{FreeBytes: 2 * own, OwnBytes: own}}})
	if _, err := live.ScaleTokens(2, 1); err != nil {
		t.Fatalf("doubling should fit: %v", err)
	}
	if ch := <-changes; ch.Config == nil || ch.Config.Tokens != 2*c.Tokens {
		t.Fatalf("queued change %+v", ch)
	}
	_, err := live.ScaleTokens(2, 1) // 4× does not fit
	if err == nil || !strings.Contains(err.Error(), "out of memory predicted") {
		t.Fatalf("got %v, want a refusal", err)
	}
	select {
	case ch := <-changes:
		t.Fatalf("a refused change was queued: %+v", ch)
	default:
	}
	if _, err := live.NextBackend(); err == nil {
		t.Error("switching backends with only one accepted")
	}
}

func TestPauseStopsSteppingUntilResumed(t *testing.T) {
	c := smallConfig("uniform")
	live, changes := NewLive(c, "cpu", []string{"cpu"}, nil)
	l := &Loop{Backend: kernels.NewCPU(), Config: c, Changes: changes}
	out := make(chan stream.Sample)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go l.Run(ctx, out, 0)
	<-out
	live.TogglePause()
	select { // the step that was running when the pause arrived, at most
	case <-out:
	case <-time.After(time.Second):
	}
	select {
	case <-out:
		t.Fatal("stepped while paused")
	case <-time.After(300 * time.Millisecond):
	}
	live.TogglePause()
	select {
	case <-out:
	case <-time.After(5 * time.Second):
		t.Fatal("did not resume")
	}
}
