package ep

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// fakeRank is a LocalRank that exchanges with its peers elsewhere, as GPU
// ranks do over NCCL: its step reports numbers of its own rank, or, when
// it must wait for a peer, blocks until Abort, as an NCCL wait does until
// its communicator is aborted.
type fakeRank struct {
	rank  int
	shape kernels.Shape
	// hang makes StepRank (and Prepare, with hangPrepare) wait for Abort
	// or ctx instead of returning.
	hang, hangPrepare bool
	prepareErr        error
	// abortErr, when set, is what a hung call returns once aborted,
	// instead of an error wrapping the abort's cause.
	abortErr error

	mu      sync.Mutex
	aborted error
	abort   chan struct{}
	steps   int
	closed  bool
}

func newFakeRank(rank int) *fakeRank { return &fakeRank{rank: rank, abort: make(chan struct{})} }

func (f *fakeRank) Info() kernels.Info {
	return kernels.Info{Name: "fake", Device: fmt.Sprintf("rank %d", f.rank)}
}

func (f *fakeRank) Prepare(ctx context.Context, s kernels.Shape) error {
	f.shape = s
	if f.prepareErr != nil {
		return f.prepareErr
	}
	if f.hangPrepare {
		select {
		case <-f.abort:
			if f.abortErr != nil {
				return f.abortErr
			}
			return fmt.Errorf("joining the others: %w", f.abortCause())
		case <-ctx.Done():
			return fmt.Errorf("joining the others: %w", context.Cause(ctx))
		}
	}
	return nil
}

func (f *fakeRank) StepRank(ctx context.Context, in kernels.StepInput) (Report, error) {
	if f.hang {
		select {
		case <-f.abort:
			if f.abortErr != nil {
				return Report{}, f.abortErr
			}
			return Report{}, fmt.Errorf("waiting on the peers: communicator aborted: %w", f.abortCause())
		case <-ctx.Done():
			return Report{}, ctx.Err()
		}
	}
	f.steps++
	rows := make([]int, f.shape.Experts)
	rows[f.rank%len(rows)] = 10*f.rank + f.steps
	ph := make([]int64, len(PhaseNames))
	for i := range ph {
		ph[i] = int64(1000*(f.rank+1) + i)
	}
	return Report{Rank: f.rank, PhasesNS: ph, RecvTokens: f.rank + 1, RecvRows: 2*f.rank + f.steps,
		SentBytes: int64(100 * f.rank), ExpertRows: rows}, nil
}

func (f *fakeRank) Abort(cause error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.aborted == nil {
		f.aborted = cause
		close(f.abort)
	}
}

func (f *fakeRank) abortCause() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.aborted
}

func (f *fakeRank) Close() error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.closed = true
	return nil
}

var gpuShape = kernels.Shape{Tokens: 6, Hidden: 8, FFN: 4, Experts: 4, TopK: 2, DType: kernels.BF16, Seed: 1}

// gpuProcs are the ranks of a run of one process per GPU, here goroutines
// over a real coordinator without a mesh, each stepping a fake rank.
func gpuProcs(t *testing.T, world int, timeout time.Duration, set func(*fakeRank)) ([]*SessionBackend, []*fakeRank) {
	t.Helper()
	cfgs := configs(world, false, timeout)
	for i := range cfgs {
		cfgs[i].Spec.Layer = stream.Layer{Tokens: gpuShape.Tokens, Hidden: gpuShape.Hidden, FFN: gpuShape.FFN,
			Experts: gpuShape.Experts, TopK: gpuShape.TopK, DType: gpuShape.DType.String(), Act: gpuShape.Act.String(),
			Routing: "uniform", Seed: gpuShape.Seed}
	}
	sess, errs := joinAll(t, cfgs)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	bs := make([]*SessionBackend, world)
	ranks := make([]*fakeRank, world)
	for r := range bs {
		ranks[r] = newFakeRank(r)
		if set != nil {
			set(ranks[r])
		}
		bs[r] = &SessionBackend{Session: sess[r], Rank: ranks[r]}
	}
	return bs, ranks
}

func prepareAll(t *testing.T, bs []*SessionBackend) []error {
	t.Helper()
	errs := make([]error, len(bs))
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for r, b := range bs {
			wg.Go(func() { errs[r] = b.Prepare(context.Background(), gpuShape) })
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(bound):
		t.Fatal("Prepare still waiting: a hang")
	}
	return errs
}

// stepGPU steps the ranks in only (all when nil) at once, failing the test
// if any is still stepping after the bound.
func stepGPU(t *testing.T, bs []*SessionBackend, only ...int) ([]kernels.StepResult, []error) {
	t.Helper()
	res := make([]kernels.StepResult, len(bs))
	errs := make([]error, len(bs))
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for r, b := range bs {
			if only == nil || slices.Contains(only, r) {
				wg.Go(func() { res[r], errs[r] = b.Step(context.Background(), kernels.StepInput{}) })
			}
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(bound):
		t.Fatalf("ranks %v still stepping after %v: a hang", only, bound)
	}
	return res, errs
}

// Every process returns the whole step, made of every rank's own report:
// rank 0 can make the sample, and all steer alike.
func TestSessionBackendGathersEveryRanksReport(t *testing.T) {
	const world = 3
	bs, ranks := gpuProcs(t, world, bound, nil)
	if err := errors.Join(prepareAll(t, bs)...); err != nil {
		t.Fatal(err)
	}
	for step := range 3 {
		got, errs := stepGPU(t, bs)
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		// What the ranks reported, put together in one process.
		var reps []Report
		for _, f := range ranks {
			f.steps-- // replay the step the rank just ran
			rep, _ := f.StepRank(context.Background(), kernels.StepInput{})
			reps = append(reps, rep)
		}
		want := ResultOf(gpuShape, reps)
		for r, g := range got {
			if !slices.Equal(g.Rows, want.Rows) || len(g.Devices) != world {
				t.Fatalf("step %d: rank %d returned rows %v over %d devices, want %v over %d", step, r, g.Rows,
					len(g.Devices), want.Rows, world)
			}
			for d, dev := range g.Devices {
				w := want.Devices[d]
				if dev.Device != d || dev.RecvRows != w.RecvRows || dev.RecvTokens != w.RecvTokens ||
					dev.SentBytes != w.SentBytes || !slices.Equal(dev.Phases, w.Phases) {
					t.Errorf("step %d: rank %d sees rank %d as %+v, want %+v", step, r, d, dev, w)
				}
			}
		}
	}
}

// A GPU rank waits on its peers through NCCL, which knows nothing of the
// session: a peer process that dies must still end its wait, through the
// session's loss of it, well within the (here long) timeout.
func TestSessionBackendAbortsTheRankWhenAPeerIsLost(t *testing.T) {
	bs, ranks := gpuProcs(t, 3, time.Minute, func(f *fakeRank) { f.hang = true })
	if err := errors.Join(prepareAll(t, bs)...); err != nil {
		t.Fatal(err)
	}
	go func() {
		time.Sleep(100 * time.Millisecond) // the others are waiting
		bs[1].Session.kill()
	}()
	start := time.Now()
	_, errs := stepGPU(t, bs, 0, 2)
	for _, r := range []int{0, 2} {
		if err := errs[r]; !errors.Is(err, ErrPeerLost) && !errors.Is(err, ErrAborted) {
			t.Errorf("rank %d: got %v, want the run's loss of a rank", r, err)
		}
		if ranks[r].abortCause() == nil {
			t.Errorf("rank %d's own exchange was never aborted", r)
		}
	}
	// Rank 0, which tells the user, names the rank that died.
	if err := errs[0]; err == nil || !strings.Contains(err.Error(), "rank 1 closed its connection") {
		t.Errorf("rank 0: %v; want rank 1 named", err)
	}
	if took := time.Since(start); took > bound/2 {
		t.Errorf("the ranks took %v to end", took)
	}
}

// When rank 0 ends the run, a rank waiting on it through NCCL (its next
// step, which rank 0 will never run) ends cleanly, with ErrEnded.
func TestSessionBackendEndsTheOthersWhenRankZeroCloses(t *testing.T) {
	bs, ranks := gpuProcs(t, 3, time.Minute, nil)
	if err := errors.Join(prepareAll(t, bs)...); err != nil {
		t.Fatal(err)
	}
	if _, errs := stepGPU(t, bs); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	ranks[1].hang, ranks[2].hang = true, true
	closed := make(chan error, 1)
	go func() {
		time.Sleep(100 * time.Millisecond)
		closed <- bs[0].Close()
	}()
	_, errs := stepGPU(t, bs, 1, 2)
	for _, r := range []int{1, 2} {
		if err := errs[r]; !errors.Is(err, ErrEnded) || !strings.Contains(err.Error(), "rank 0") {
			t.Errorf("rank %d: got %v, want the end of the run by rank 0", r, err)
		}
	}
	select {
	case err := <-closed:
		if err != nil {
			t.Error(err)
		}
	case <-time.After(bound):
		t.Fatal("rank 0's Close still waiting")
	}
	if !ranks[0].closed || ranks[0].abortCause() == nil {
		t.Errorf("rank 0 closed %v, aborted %v; want its links aborted, then it closed", ranks[0].closed, ranks[0].abortCause())
	}
}

// Joining NCCL waits for every rank: one that cannot prepare must end the
// others' wait, and they say why.
func TestSessionBackendARankThatCannotPrepareEndsTheOthers(t *testing.T) {
	bs, _ := gpuProcs(t, 3, time.Minute, func(f *fakeRank) {
		f.hangPrepare = true
		if f.rank == 1 {
			f.prepareErr = errors.New("no CUDA device 3")
		}
	})
	errs := prepareAll(t, bs)
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "no CUDA device 3") {
			t.Errorf("rank %d: got %v, want rank 1's reason", r, err)
		}
	}
	if err := errs[0]; err == nil || !strings.Contains(err.Error(), "rank 1 could not prepare") {
		t.Errorf("rank 0: %v; want rank 1 named", err)
	}
}

func TestSessionBackendKeepsTheAgreedLayer(t *testing.T) {
	bs, ranks := gpuProcs(t, 2, time.Minute, func(f *fakeRank) { f.hangPrepare = true })
	other := gpuShape
	other.Hidden *= 2
	// Rank 0 waits for rank 1 (in NCCL's init, for GPU ranks); rank 1
	// refuses the layer, and rank 0 hears why at once rather than at the
	// join's timeout.
	prep := make(chan error, 1)
	go func() { prep <- bs[0].Prepare(context.Background(), gpuShape) }()
	if err := bs[1].Prepare(context.Background(), other); err == nil || !strings.Contains(err.Error(), "keeps its layer") {
		t.Fatalf("got %v, want a refusal to change the layer", err)
	}
	select {
	case err := <-prep:
		if err == nil || !strings.Contains(err.Error(), "keeps its layer") || ranks[0].abortCause() == nil {
			t.Errorf("rank 0: %v (aborted %v); want rank 1's reason", err, ranks[0].abortCause())
		}
	case <-time.After(bound):
		t.Fatal("rank 0 still preparing")
	}
	if _, err := bs[1].Step(context.Background(), kernels.StepInput{}); !errors.Is(err, kernels.ErrNotPrepared) {
		t.Errorf("a step before a good Prepare: %v, want ErrNotPrepared", err)
	}
}

// A rank whose own caller gives up on preparing it (the user quit) does
// not end the run as a failure: it leaves with a goodbye when closed.
func TestSessionBackendAPrepareStoppedByItsCallerAbortsNothing(t *testing.T) {
	bs, ranks := gpuProcs(t, 2, time.Minute, func(f *fakeRank) { f.hangPrepare = true })
	ctx, cancel := context.WithCancel(context.Background())
	time.AfterFunc(50*time.Millisecond, cancel)
	if err := bs[1].Prepare(ctx, gpuShape); !errors.Is(err, context.Canceled) {
		t.Fatalf("Prepare = %v, want the caller's cancellation", err)
	}
	for r, b := range bs {
		if err := b.Session.Err(); err != nil {
			t.Errorf("rank %d: the run was aborted: %v", r, err)
		}
	}
	if ranks[0].abortCause() != nil {
		t.Errorf("rank 0 was aborted: %v", ranks[0].abortCause())
	}
}

// The run's cause and the rank's own error are both kept whole: a caller
// finds either with errors.Is.
func TestSessionBackendKeepsBothErrorChains(t *testing.T) {
	own := fmt.Errorf("rank's own: %w", kernels.ErrOutOfMemory)
	t.Run("prepare", func(t *testing.T) {
		bs, _ := gpuProcs(t, 2, time.Minute, func(f *fakeRank) { f.hangPrepare, f.abortErr = true, own })
		go func() {
			time.Sleep(50 * time.Millisecond)
			bs[0].Session.kill()
		}()
		err := bs[1].Prepare(context.Background(), gpuShape)
		if !errors.Is(err, kernels.ErrOutOfMemory) || (!errors.Is(err, ErrPeerLost) && !errors.Is(err, ErrAborted)) {
			t.Errorf("Prepare = %v; want both the run's end and the rank's ErrOutOfMemory", err)
		}
	})
	t.Run("step", func(t *testing.T) {
		bs, _ := gpuProcs(t, 2, time.Minute, func(f *fakeRank) { f.hang, f.abortErr = true, own })
		if err := errors.Join(prepareAll(t, bs)...); err != nil {
			t.Fatal(err)
		}
		go func() {
			time.Sleep(50 * time.Millisecond)
			bs[0].Session.kill()
		}()
		_, errs := stepGPU(t, bs, 1)
		if err := errs[1]; !errors.Is(err, kernels.ErrOutOfMemory) || (!errors.Is(err, ErrPeerLost) && !errors.Is(err, ErrAborted)) {
			t.Errorf("Step = %v; want both the run's end and the rank's ErrOutOfMemory", err)
		}
	})
}
