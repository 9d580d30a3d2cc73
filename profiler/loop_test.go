package profiler

import (
	"context"
	"errors"
	"math"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

func TestLoopStopsWhenCancelled(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	l := &Loop{Backend: kernels.NewCPU(), Config: smallConfig("uniform")}
	out := make(chan stream.Sample)
	done := make(chan error, 1)
	go func() { done <- l.Run(ctx, out, 0) }()
	for i := 0; i < 3; i++ {
		s := <-out
		if s.Step != i || s.StepMS <= 0 || s.TFLOPS <= 0 || s.Imbalance < 1 {
			t.Fatalf("sample %d: %+v", i, s)
		}
	}
	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("loop did not stop after cancel")
	}
	if _, ok := <-out; ok {
		t.Fatal("channel left open")
	}
}

// oomBackend fails to prepare shapes over a token limit, like a GPU would.
type oomBackend struct {
	*kernels.CPU
	limit int
}

func (b oomBackend) Prepare(ctx context.Context, s kernels.Shape) error {
	if s.Tokens > b.limit {
		return kernels.ErrOutOfMemory
	}
	return b.CPU.Prepare(ctx, s)
}

func TestRefusedChangeBecomesEventAndRunGoesOn(t *testing.T) {
	c := smallConfig("uniform")
	changes := make(chan Change, 1)
	l := &Loop{Backend: oomBackend{kernels.NewCPU(), 2000}, Config: c, Changes: changes}
	big := c
	big.Tokens = 4096
	changes <- Change{Config: &big}
	out := make(chan stream.Sample, 4)
	if err := l.Run(context.Background(), out, 2); err != nil {
		t.Fatal(err)
	}
	var events []stream.Event
	for s := range out {
		events = append(events, s.Events...)
		if s.Config.Tokens != c.Tokens {
			t.Errorf("config changed to %d tokens despite the OOM", s.Config.Tokens)
		}
	}
	if len(events) != 1 || events[0].Kind != stream.EventOOM {
		t.Fatalf("events %+v, want one oom event", events)
	}
}

func TestImbalance(t *testing.T) {
	for _, c := range []struct {
		rows []int
		want float64
	}{{[]int{4, 4}, 1}, {[]int{8, 0}, 2}, {[]int{0, 0}, 0}, {nil, 0}, {[]int{6, 1, 1}, 2.25}} {
		if got := stream.Imbalance(c.rows); got != c.want {
			t.Errorf("stream.Imbalance(%v) = %g, want %g", c.rows, got, c.want)
		}
	}
}

func TestStepErrorEndsRun(t *testing.T) {
	l := &Loop{Backend: failing{kernels.NewCPU()}, Config: smallConfig("uniform")}
	out := make(chan stream.Sample, 1)
	if err := l.Run(context.Background(), out, 3); err == nil || !errors.Is(err, errBroken) {
		t.Fatalf("got %v, want errBroken", err)
	}
}

var errBroken = errors.New("broken")

type failing struct{ *kernels.CPU }

func (failing) Step(context.Context, kernels.StepInput) (kernels.StepResult, error) {
	return kernels.StepResult{}, errBroken
}

type fakeSampler struct {
	snap stream.Snapshot
	seq  uint64
}

func (f *fakeSampler) Latest() (stream.Snapshot, uint64) { return f.snap, f.seq }

func TestSamplesCarryReadingsOnceAndMemoryEveryStep(t *testing.T) {
	free, total := uint64(50<<30), uint64(80<<30)
	fs := &fakeSampler{seq: 1, snap: stream.Snapshot{Source: "nvml",
		Devices: []stream.Reading{{Name: "H100", MemFreeBytes: &free, MemTotalBytes: &total}}}}
	c := smallConfig("uniform")
	// The model covers the host backends: cpu and memory_test.go's test-host.
	l := &Loop{Backend: kernels.NewCPU(), Config: c, Sampler: fs}
	if err := l.prepare(context.Background(), c); err != nil {
		t.Fatal(err)
	}
	a, _ := l.Step(context.Background())
	b, _ := l.Step(context.Background())
	if a.GPU == nil || b.GPU != nil {
		t.Errorf("reading attached to steps: first %v, second %v; want first only", a.GPU != nil, b.GPU != nil)
	}
	m := b.Mem(0)
	if m == nil || len(m.Backends) != 2 || m.FreeBytes != free {
		t.Fatalf("memory %+v", b.Memory)
	}
	want, _ := Peak("cpu", c, b.Rows)
	if m.OwnBytes != want || m.HeadroomBytes != int64(free) {
		t.Errorf("own %d (want %d), headroom %d (want free)", m.OwnBytes, want, m.HeadroomBytes)
	}
}

// The shared experts' phase overlaps the routed ones: it keeps its start,
// the step's time stays its wall time, and its FLOPs count.
func TestFillStepKeepsAnOverlappedPhaseApart(t *testing.T) {
	sh := kernels.Shape{Tokens: 100, Hidden: 10, FFN: 20, Experts: 4, TopK: 2, Act: kernels.SwiGLU, SharedExperts: 1}
	res := kernels.StepResult{Rows: []int{50, 50, 50, 50}}
	for p := range res.Phases {
		res.Phases[p] = time.Millisecond
	}
	res.Overlapped = []kernels.OverlappedPhase{{Name: kernels.PhaseShared, Start: 500 * time.Microsecond, Time: 3 * time.Millisecond}}
	var s stream.Sample
	FillStep(&s, sh, res)
	if s.StepMS != 6 {
		t.Errorf("step %g ms, want the 6 ms of wall time the sequential phases take", s.StepMS)
	}
	var shared *stream.PhaseTime
	for i := range s.Phases {
		if s.Phases[i].Phase == stream.PhaseShared {
			shared = &s.Phases[i]
		}
	}
	if shared == nil || shared.MS != 3 || shared.StartMS == nil || *shared.StartMS != 0.5 {
		t.Fatalf("shared phase %+v, want 3 ms starting at 0.5 ms", shared)
	}
	flops := sh.GEMMFLOPs() + sh.RouterFLOPs() + sh.SharedFLOPs()
	if want := flops / (6 * 1e9); math.Abs(s.TFLOPS-want) > 1e-12 {
		t.Errorf("%g TFLOP/s, want %g: the shared experts' FLOPs over the wall time", s.TFLOPS, want)
	}
	if want := sh.GEMMFLOPs() / (2 * 1e9); math.Abs(s.GEMMTFLOPS-want) > 1e-12 {
		t.Errorf("GEMM %g TFLOP/s, want %g: the gated experts' 6·rows·H·F over gemm1+gemm2", s.GEMMTFLOPS, want)
	}
	// A shared phase that outlasts the sequence (a backend that did not
	// wait for it) still bounds the step.
	res.Overlapped[0].Time = 10 * time.Millisecond
	FillStep(&s, sh, res)
	if s.StepMS != 10.5 {
		t.Errorf("step %g ms, want the shared phase's end, 10.5", s.StepMS)
	}
}

// The CPU backend runs shared experts beside the routed ones; the loop's
// samples show them as an overlapped phase.
func TestLoopSamplesShowTheSharedPhase(t *testing.T) {
	c := smallConfig("uniform")
	c.Act, c.SharedExperts = kernels.SwiGLU, 1
	out := make(chan stream.Sample, 2)
	if err := (&Loop{Backend: kernels.NewCPU(), Config: c}).Run(context.Background(), out, 2); err != nil {
		t.Fatal(err)
	}
	for s := range out {
		n := 0
		for _, p := range s.Phases {
			if p.Phase == stream.PhaseShared {
				n++
				if p.StartMS == nil || *p.StartMS+p.MS > s.StepMS+1e-9 {
					t.Errorf("step %d: shared phase %+v outside the step's %g ms", s.Step, p, s.StepMS)
				}
			}
		}
		if n != 1 {
			t.Errorf("step %d has %d shared phases, want 1", s.Step, n)
		}
	}
}
