package cuda

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// A rank in a process of its own is laid out exactly as the same rank of
// one process holding every rank: the experts it holds, its slice of the
// batch, its layer and its exchange buffers (sized for the whole world).
// The step then runs the same code over it.
func TestARankOfItsOwnProcessIsLaidOutAsInOneProcessOfAllRanks(t *testing.T) {
	s := kernels.Shape{Tokens: 13, Hidden: 64, FFN: 96, Experts: 8, TopK: 2, DType: kernels.BF16, Seed: 5}
	replicas, err := ep.NewPlacement(3, [][]int{{0, 1}, {0}, {0}, {1}, {1, 2}, {2}, {2}, {2, 0}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name      string
		world     int
		placement *ep.Placement
	}{
		{"two ranks, contiguous experts", 2, nil},
		{"four ranks, contiguous experts", 4, nil},
		{"three ranks with replicated experts", 3, replicas},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			devs := make([]int, tc.world)
			for i := range devs {
				devs[i] = 10 + i
			}
			all := &EPBackend{Devices: devs, Placement: tc.placement}
			pAll, worldAll, whole, err := all.plan(s)
			if err != nil {
				t.Fatal(err)
			}
			if worldAll != tc.world || len(whole) != tc.world {
				t.Fatalf("one process: world %d, %d ranks; want %d", worldAll, len(whole), tc.world)
			}
			for r := range tc.world {
				one := NewEPRank(devs[r], r, tc.world, func(int) (*Comm, error) { return nil, errors.New("not here") })
				one.Placement = tc.placement
				p, world, got, err := one.plan(s)
				if err != nil {
					t.Fatalf("rank %d: %v", r, err)
				}
				if world != tc.world || len(got) != 1 {
					t.Fatalf("rank %d: world %d, %d ranks in the process; want %d and 1", r, world, len(got), tc.world)
				}
				for e := range s.Experts {
					if !reflect.DeepEqual(p.Replicas(e), pAll.Replicas(e)) {
						t.Errorf("rank %d: expert %d on ranks %v, in one process on %v", r, e, p.Replicas(e), pAll.Replicas(e))
					}
				}
				if !reflect.DeepEqual(got[0], whole[r]) {
					t.Errorf("rank %d alone: %+v\nin one process: %+v", r, got[0], whole[r])
				}
				if got[0].firstRow != r*s.Tokens || len(got[0].exchange) != len(exchangeNames) {
					t.Errorf("rank %d: first row %d, %d exchange buffers", r, got[0].firstRow, len(got[0].exchange))
				}
				// The counts buffers hold every rank's counts, not this
				// process's rank alone.
				if c := got[0].exchange[0]; c != uint64(4*tc.world*(1+s.Experts)) {
					t.Errorf("rank %d: counts buffer of %d bytes, want %d ranks' worth", r, c, tc.world)
				}
			}
		})
	}
}

func TestARunOverProcessesIsCheckedBeforeAnythingLoads(t *testing.T) {
	t.Setenv(UnverifiedGPUEPEnv, "1")
	s := kernels.Shape{Tokens: 4, Hidden: 8, FFN: 8, Experts: 4, TopK: 2}
	join := func(int) (*Comm, error) { return nil, errors.New("not here") }
	cases := []struct {
		name string
		b    *EPBackend
		want string
	}{
		{"a rank beyond the world", NewEPRank(0, 2, 2, join), "ranks 2 … 2 of a world of 2"},
		{"a negative rank", NewEPRank(0, -1, 2, join), "of a world of 2"},
		{"ranks of other processes without a way to join them", &EPBackend{Devices: []int{0}, Rank: 1, World: 2},
			"need Join"},
		{"more ranks than experts over the world", NewEPRank(0, 0, 5, join), "4 experts over 5 ranks"},
		{"a placement over another world", func() *EPBackend {
			b := NewEPRank(0, 1, 2, join)
			b.Placement, _ = ep.Contiguous(4, 4)
			return b
		}(), "over 4 ranks, the run has 4 over 2"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.b.Prepare(context.Background(), s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Prepare = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

// joinAll makes every rank of world join one session over a real
// coordinator on 127.0.0.1, rank 0 handing out blob, as moetop's processes
// do (here goroutines).
func joinSessions(t *testing.T, world int, blob func() ([]byte, error)) []*ep.Session {
	t.Helper()
	ln, err := ep.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	spec := ep.Spec{World: world, Version: "test", Backend: "loop",
		Layer: stream.Layer{Tokens: 4, Hidden: 8, FFN: 8, Experts: 4, TopK: 2, DType: "bf16", Act: "gelu", Routing: "uniform"}}
	sess := make([]*ep.Session, world)
	errs := make([]error, world)
	var wg sync.WaitGroup
	for r := range world {
		c := ep.JoinConfig{Rank: r, World: world, Addr: ln.Addr().String(), Spec: spec, Host: "localhost", LocalRank: r,
			Timeout: 10 * time.Second}
		if r == 0 {
			c.Listener, c.Blob = ln, blob
		}
		wg.Go(func() { sess[r], errs[r] = ep.Join(context.Background(), c) })
	}
	wg.Wait()
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, s := range sess {
			if s != nil {
				wg.Go(func() { s.Close() })
			}
		}
		wg.Wait()
	})
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	return sess
}

// Rank 0's unique id reaches every rank through the coordinator, byte for
// byte, and each rank's backend is built to join NCCL as its own rank of
// the world with it.
func TestTheUniqueIDReachesEveryRankThroughTheCoordinator(t *testing.T) {
	const world = 3
	var want UniqueID
	for i := range want {
		want[i] = byte(7*i + 3)
	}
	made := 0
	sess := joinSessions(t, world, func() ([]byte, error) {
		return uniqueIDBlob(func() (UniqueID, error) { made++; return want, nil })
	})
	if made != 1 {
		t.Errorf("rank 0 made %d unique ids, want 1", made)
	}
	for r, s := range sess {
		got, err := SessionUniqueID(s)
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
		if got != want {
			t.Errorf("rank %d got another id: % x…", r, got[:8])
		}
		be, err := NewEPProcess(s, 5, nil, time.Second, Options{})
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
		e, ok := be.Rank.(*EPBackend)
		if !ok || be.Session != s {
			t.Fatalf("rank %d: backend %T over another session", r, be.Rank)
		}
		if e.Rank != r || e.World != world || !reflect.DeepEqual(e.Devices, []int{5}) || e.Join == nil || e.Timeout != time.Second {
			t.Errorf("rank %d: built as rank %d of %d on %v (timeout %v)", r, e.Rank, e.World, e.Devices, e.Timeout)
		}
		if e.Ranks() != world || !strings.Contains(e.Info().Device, fmt.Sprintf("rank %d of %d", r, world)) {
			t.Errorf("rank %d: %d ranks, %q", r, e.Ranks(), e.Info().Device)
		}
		// Without NCCL loaded (here) the join fails before reaching NCCL,
		// naming the call it would make: this rank of this world.
		if !ncclLoaded.Load() {
			_, err := e.Join(r)
			if want := fmt.Sprintf("ncclCommInitRank(rank %d of %d)", r, world); err == nil || !strings.Contains(err.Error(), want) {
				t.Errorf("rank %d: Join = %v, want %q", r, err, want)
			}
		}
	}
}

func TestAUniqueIDThatIsNotOneIsRefused(t *testing.T) {
	sess := joinSessions(t, 2, func() ([]byte, error) { return []byte("short"), nil })
	for r, s := range sess {
		if _, err := NewEPProcess(s, 0, nil, time.Second, Options{}); !errors.Is(err, ErrBadUniqueID) {
			t.Errorf("rank %d: %v, want ErrBadUniqueID", r, err)
		}
	}
	if _, err := uniqueIDBlob(func() (UniqueID, error) { return UniqueID{}, ErrNoNCCL }); !errors.Is(err, ErrNoNCCL) {
		t.Errorf("a unique id NCCL could not make: %v", err)
	}
}

// fakeContext is a device that needs no GPU: entering does nothing.
type fakeContext struct{ closes int }

func (c *fakeContext) Enter() (func(), error) { return func() {}, nil }
func (c *fakeContext) Close() error           { c.closes++; return nil }

// hangingRank is a backend of one rank on a fake device whose Join blocks
// until released, as ncclCommInitRank does until every rank has joined.
func hangingRank(release <-chan struct{}) (*EPBackend, *fakeContext) {
	ctx := &fakeContext{}
	e := NewEPRank(0, 1, 2, func(int) (*Comm, error) {
		<-release
		return &Comm{rank: 1, size: 2}, nil
	})
	e.world, e.deadCh = 2, make(chan struct{})
	e.ranks = []*epRank{{r: 1, b: &Backend{name: "loop", ctx: ctx}}}
	return e, ctx
}

// Joining NCCL waits for every rank of the world; one that never comes
// must not hold this rank forever: the join is given up on when the
// session says a peer is gone (Abort), when the user quits (ctx) or at the
// join timeout, and the call still in NCCL is left alone.
func TestJoiningTheCommunicatorGivesUpOnRanksThatNeverCome(t *testing.T) {
	cases := []struct {
		name string
		run  func(e *EPBackend) ([]*Comm, error)
		want string
	}{
		{"a peer lost", func(e *EPBackend) ([]*Comm, error) {
			go func() { time.Sleep(50 * time.Millisecond); e.Abort(errors.New("rank 0 closed its connection")) }()
			return e.joinComms(context.Background())
		}, "rank 0 closed its connection"},
		{"the user quits", func(e *EPBackend) ([]*Comm, error) {
			ctx, cancel := context.WithCancelCause(context.Background())
			go func() { time.Sleep(50 * time.Millisecond); cancel(errors.New("interrupted")) }()
			return e.joinComms(ctx)
		}, "interrupted"},
		{"the join timeout", func(e *EPBackend) ([]*Comm, error) {
			e.JoinTimeout = 100 * time.Millisecond
			return e.joinComms(context.Background())
		}, "waited 100ms for the other ranks of 2 to join"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			defer close(release)
			e, dev := hangingRank(release)
			type result struct {
				comms []*Comm
				err   error
			}
			done := make(chan result, 1)
			go func() {
				c, err := tc.run(e)
				done <- result{c, err}
			}()
			var res result
			select {
			case res = <-done:
			case <-time.After(10 * time.Second):
				t.Fatal("still joining: a hang")
			}
			if res.comms != nil || res.err == nil || !strings.Contains(res.err.Error(), tc.want) {
				t.Fatalf("joinComms = %v, %v; want an error saying %q", res.comms, res.err, tc.want)
			}
			if !e.abandoned || e.failed() == nil {
				t.Errorf("abandoned %v, failed %v; want the ranks marked dead and left alone", e.abandoned, e.failed())
			}
			// The call still in NCCL holds the device: Close leaves it.
			if err := e.Close(); err != nil || dev.closes != 0 {
				t.Errorf("Close = %v with %d device releases; want none under a call in flight", err, dev.closes)
			}
			t.Setenv(UnverifiedGPUEPEnv, "1")
			e.Placement = nil
			if err := e.Prepare(context.Background(), kernels.Shape{Tokens: 4, Hidden: 8, FFN: 8, Experts: 4, TopK: 2}); err == nil ||
				!strings.Contains(err.Error(), "never returned") {
				t.Errorf("Prepare after a join given up on: %v", err)
			}
		})
	}
	t.Run("a run over before the join begins does not start it", func(t *testing.T) {
		e := NewEPRank(0, 1, 2, func(int) (*Comm, error) { t.Error("joined a run that is over"); return nil, nil })
		e.world, e.deadCh = 2, make(chan struct{})
		e.ranks = []*epRank{{r: 1, b: &Backend{name: "loop", ctx: &fakeContext{}}}}
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(errors.New("rank 0 ended its run and left"))
		if _, err := e.joinComms(ctx); err == nil || !strings.Contains(err.Error(), "rank 0 ended") || e.abandoned {
			t.Errorf("joinComms = %v (abandoned %v); want the cause, nothing left behind", err, e.abandoned)
		}
	})
	t.Run("a join that returns is kept", func(t *testing.T) {
		release := make(chan struct{})
		close(release)
		e, _ := hangingRank(release)
		comms, err := e.joinComms(context.Background())
		if err != nil || len(comms) != 1 || comms[0].Rank() != 1 || e.abandoned {
			t.Fatalf("joinComms = %v, %v (abandoned %v); want rank 1's communicator", comms, err, e.abandoned)
		}
	})
}

// NCCL connects two ranks in the group end of their first exchange, which
// waits for the peer: a group that never returns fails the step at its
// deadline instead of holding it.
func TestAnExchangeThatNeverReturnsEndsAtTheDeadline(t *testing.T) {
	ended := make(chan struct{}, 2)
	withGroupHooks(t, func() error { return nil }, func() error { ended <- struct{}{}; return nil })
	release := make(chan struct{})
	e, _ := hangingRank(release)
	e.comms = []*Comm{{rank: 1, size: 2}}
	e.Timeout = 100 * time.Millisecond
	calls := 0
	err := e.group(newLimit(context.Background(), e.timeout()), "ncclSend/Recv(counts)", func(*epRank, *Comm) error { calls++; return nil })
	if err != nil || calls != 1 || e.abandoned {
		t.Fatalf("a group that returns: %v after %d calls (abandoned %v)", err, calls, e.abandoned)
	}
	start := time.Now()
	err = e.group(newLimit(context.Background(), e.timeout()), "ncclSend/Recv(dispatch)", func(*epRank, *Comm) error { <-release; return nil })
	if !errors.Is(err, ErrEPTimeout) || !strings.Contains(err.Error(), "dispatch") {
		t.Fatalf("a group that never returns: %v, want ErrEPTimeout naming it", err)
	}
	if took := time.Since(start); took > 5*time.Second {
		t.Errorf("given up after %v", took)
	}
	if !e.abandoned || !errors.Is(e.failed(), ErrEPTimeout) {
		t.Errorf("abandoned %v, failed %v; want the ranks dead and left alone", e.abandoned, e.failed())
	}
	// The call given up on still closes its group once it returns.
	close(release)
	<-ended
	<-ended
}

// stopByPeerLoss and stopByQuit end a step from outside, as a lost peer
// (the session's Abort) and the user (the step's context) do.
func stopByPeerLoss(e *EPBackend, _ context.CancelCauseFunc) {
	e.Abort(errors.New("rank 0 closed its connection"))
}

func stopByQuit(_ *EPBackend, cancel context.CancelCauseFunc) { cancel(errors.New("interrupted")) }

// A step stuck in ncclGroupEnd ends at once when the session loses a peer
// (Abort, which cannot abort the communicators while the step holds them)
// or the user quits (the step's context), not at the step's deadline.
func TestAnExchangeStuckInItsGroupEndsOnAbortOrQuit(t *testing.T) {
	cases := []struct {
		name string
		stop func(e *EPBackend, cancel context.CancelCauseFunc)
		want string
	}{
		{"a peer lost", stopByPeerLoss, "rank 0 closed its connection"},
		{"the user quits", stopByQuit, "interrupted"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			release := make(chan struct{})
			ended := make(chan struct{}, 1)
			withGroupHooks(t, func() error { return nil }, func() error { <-release; ended <- struct{}{}; return nil })
			e, _ := hangingRank(nil)
			e.comms = []*Comm{{rank: 1, size: 2}}
			e.Timeout = 5 * time.Minute
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			e.stepping.Lock() // as Step holds it
			go func() {
				time.Sleep(50 * time.Millisecond)
				tc.stop(e, cancel)
			}()
			start := time.Now()
			l := newLimit(ctx, e.timeout())
			err := e.group(l, "ncclSend/Recv(dispatch)", func(*epRank, *Comm) error { return nil })
			took := time.Since(start)
			e.stepping.Unlock()
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "dispatch") {
				t.Fatalf("group = %v; want an error naming the exchange and saying %q", err, tc.want)
			}
			if took > 10*time.Second {
				t.Errorf("given up on after %v, with a timeout of %v", took, e.Timeout)
			}
			if !e.abandoned || e.failed() == nil {
				t.Errorf("abandoned %v, failed %v; want the ranks dead and left alone", e.abandoned, e.failed())
			}
			// The next exchange does not start on communicators given up on.
			calls := 0
			if err := e.group(l, "ncclAllReduce(wait)", func(*epRank, *Comm) error { calls++; return nil }); err == nil || calls != 0 {
				t.Errorf("a group after it: %v after %d calls; want the earlier failure, no calls", err, calls)
			}
			close(release)
			<-ended
		})
	}
	t.Run("a quit before the group starts none", func(t *testing.T) {
		withGroupHooks(t, func() error { t.Error("a group started after the quit"); return nil }, func() error { return nil })
		e, _ := hangingRank(nil)
		e.comms = []*Comm{{rank: 1, size: 2}}
		ctx, cancel := context.WithCancelCause(context.Background())
		cancel(errors.New("interrupted"))
		err := e.group(newLimit(ctx, time.Minute), "ncclSend/Recv(counts)", func(*epRank, *Comm) error { return nil })
		if err == nil || !strings.Contains(err.Error(), "interrupted") || e.abandoned || e.failed() == nil {
			t.Errorf("group = %v (abandoned %v, failed %v); want the quit, the communicators aborted, nothing left behind",
				err, e.abandoned, e.failed())
		}
	})
}

// withStreamHooks replaces cuStreamSynchronize and the communicators'
// asynchronous errors for one test.
func withStreamHooks(t *testing.T, sync func(what string) error) {
	t.Helper()
	s, c := syncStream, commError
	syncStream = func(_ cuStream, what string) error { return sync(what) }
	commError = func(*Comm) error { return nil }
	t.Cleanup(func() { syncStream, commError = s, c })
}

// A wait that gives up aborts the communicators, which ends the NCCL
// kernels and the synchronize under them; it returns only once that
// synchronize has, so that Close does not free the buffers and the context
// under it, and one that never returns leaves the devices to the process.
func TestAWaitGivenUpOnOutlivesNoSynchronize(t *testing.T) {
	stuck := func(e *EPBackend, returned *atomic.Bool) func(string) error {
		return func(string) error {
			<-e.deadCh // the abort that ends the NCCL kernels
			time.Sleep(100 * time.Millisecond)
			returned.Store(true)
			return errors.New("CUDA_ERROR_LAUNCH_FAILED")
		}
	}
	cases := []struct {
		name string
		stop func(e *EPBackend, cancel context.CancelCauseFunc)
		want string
	}{
		{"a peer lost", stopByPeerLoss, "rank 0 closed its connection"},
		{"the user quits", stopByQuit, "canceled"},
		{"the deadline", func(*EPBackend, context.CancelCauseFunc) {}, "waited 200ms"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			e, _ := hangingRank(nil)
			e.comms = []*Comm{{rank: 1, size: 2}}
			e.Timeout = 200 * time.Millisecond
			var returned atomic.Bool
			withStreamHooks(t, stuck(e, &returned))
			ctx, cancel := context.WithCancelCause(context.Background())
			defer cancel(nil)
			e.stepping.Lock() // as Step holds it
			go func() {
				time.Sleep(50 * time.Millisecond)
				tc.stop(e, cancel)
			}()
			err := e.wait(newLimit(ctx, e.timeout()), "dispatch", 0)
			e.stepping.Unlock()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("wait = %v; want an error saying %q", err, tc.want)
			}
			if !returned.Load() {
				t.Error("wait returned while its synchronize still ran")
			}
			if e.abandoned || e.failed() == nil {
				t.Errorf("abandoned %v, failed %v; want the communicators aborted and the devices kept to close", e.abandoned, e.failed())
			}
		})
	}
	t.Run("a synchronize the abort does not end", func(t *testing.T) {
		e, _ := hangingRank(nil)
		e.comms = []*Comm{{rank: 1, size: 2}}
		e.Timeout = 50 * time.Millisecond
		release, synced := make(chan struct{}), make(chan struct{})
		withStreamHooks(t, func(string) error { <-release; close(synced); return nil })
		defer func() { close(release); <-synced }() // before the hooks are put back
		defer func(d time.Duration) { drainTimeout = d }(drainTimeout)
		drainTimeout = 100 * time.Millisecond
		err := e.wait(newLimit(context.Background(), e.timeout()), "combine", 0)
		if !errors.Is(err, ErrEPTimeout) || !e.abandoned {
			t.Errorf("wait = %v (abandoned %v); want the timeout, the devices left to the process", err, e.abandoned)
		}
	})
}

func TestAbortOutsideAStepEndsTheRankForGood(t *testing.T) {
	e, _ := hangingRank(nil)
	cause := errors.New("rank 2 closed its connection")
	e.Abort(cause)
	e.Abort(errors.New("a later cause"))
	if err := e.failed(); !errors.Is(err, cause) || strings.Contains(err.Error(), "later") {
		t.Errorf("failed() = %v; want the first cause", err)
	}
	select {
	case <-e.deadCh:
	default:
		t.Error("a join waiting on the ranks would not hear of it")
	}
	if _, err := (&EPBackend{Devices: []int{0, 1}}).StepRank(context.Background(), kernels.StepInput{}); err == nil ||
		!strings.Contains(err.Error(), "holds 2 ranks") {
		t.Errorf("StepRank over two ranks of one process: %v", err)
	}
}
