package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"
)

// The ranks of one NCCL clique that this process drives: the expert-parallel
// backend's (EPBackend) and the exchange bench's (ExchangeBench). Both run
// code on every rank at once, issue each exchange of all their ranks in one
// group, wait on the ranks' streams, and give up on the communicators when
// a peer hangs or dies, the user quits or the run is aborted; ncclRanks is
// that, once.
//
// NOT YET RUN ON A GPU, as the rest of GPU expert parallelism.

// ncclRank is what a set of ranks asks of each of its ranks.
type ncclRank interface {
	// id is the rank in the world, for messages.
	id() int
	// enter makes the rank's device current on the calling thread.
	enter() (leave func(), err error)
	// work is the stream the rank's NCCL calls and kernels run on.
	work() cuStream
}

// cuStream is a CUDA stream, named for code that cannot say C.CUstream
// (tests).
type cuStream = C.CUstream

// syncStream is cuStreamSynchronize, and commError a communicator's
// asynchronous error; tests replace them to wait without a GPU.
var (
	syncStream = func(s cuStream, what string) error {
		return check("cuStreamSynchronize("+what+")", C.call_cuStreamSynchronize(s))
	}
	commError = (*Comm).AsyncError
)

// limit bounds the waits of one step: they end when ctx does, at deadline,
// or when the ranks are aborted.
type limit struct {
	ctx      context.Context
	deadline time.Time
	timeout  time.Duration // what set the deadline, for messages
}

func newLimit(ctx context.Context, timeout time.Duration) limit {
	if ctx == nil {
		ctx = context.Background()
	}
	return limit{ctx: ctx, deadline: time.Now().Add(timeout), timeout: timeout}
}

// ncclRanks are this process's ranks of one NCCL clique: ranks[i] talks
// through comms[i].
type ncclRanks[R ncclRank] struct {
	// name starts the error of a call on ranks aborted earlier.
	name  string
	ranks []R
	comms []*Comm // set and cleared under mu

	mu sync.Mutex
	// dead is the error that aborted the communicators: every later call
	// returns it. deadCh is closed when it is set.
	dead   error
	deadCh chan struct{}
	// abandoned is set when an NCCL call or a synchronize on NCCL's work
	// never returned and was given up on: the communicators and devices
	// under it are left to the process's exit, since freeing them under
	// the call could crash the process.
	abandoned bool
}

// revive readies the set for new communicators: nothing is dead.
func (n *ncclRanks[R]) revive() {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.dead, n.deadCh = nil, make(chan struct{})
}

// setComms hands the set the communicators of its ranks, in their order.
func (n *ncclRanks[R]) setComms(comms []*Comm) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.comms = comms
}

// each runs fn for each of the ranks which (indices into ranks; all when
// nil) at once, each on its own goroutine with its device entered, and
// joins their errors, each naming its rank.
func (n *ncclRanks[R]) each(which []int, what string, fn func(rk R) error) error {
	if which == nil {
		which = make([]int, len(n.ranks))
		for i := range which {
			which[i] = i
		}
	}
	errs := make([]error, len(which))
	var wg sync.WaitGroup
	for j, i := range which {
		rk := n.ranks[i]
		wg.Go(func() {
			leave, err := rk.enter()
			if err == nil {
				err = fn(rk)
				leave()
			}
			if err != nil {
				errs[j] = fmt.Errorf("%s: rank %d: %w", what, rk.id(), err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// eachRank runs fn for every rank at once (each).
func (n *ncclRanks[R]) eachRank(what string, fn func(rk R) error) error {
	return n.each(nil, what, fn)
}

// failed is the error that aborted the communicators, or nil.
func (n *ncclRanks[R]) failed() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.dead == nil {
		return nil
	}
	name := n.name
	if name == "" {
		name = "NCCL ranks"
	}
	return fmt.Errorf("%s: the communicators were aborted earlier: %w", name, n.dead)
}

// watch is the channel closed once the ranks are dead, and why they are
// when they already are.
func (n *ncclRanks[R]) watch() (<-chan struct{}, error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.deadCh, n.dead
}

func (n *ncclRanks[R]) cause() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.dead
}

func (n *ncclRanks[R]) isAbandoned() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.abandoned
}

// die records cause unless another came first; the caller holds mu.
func (n *ncclRanks[R]) die(cause error) {
	if n.dead != nil {
		return
	}
	n.dead = cause
	if n.deadCh != nil {
		close(n.deadCh)
	}
}

// kill marks the ranks dead without touching the communicators, for a
// caller that may not (a call on them is in flight elsewhere): whatever
// waits on them sees it and gives up.
func (n *ncclRanks[R]) kill(cause error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.die(cause)
}

// giveUp marks the ranks dead after a call on them that never returned,
// and leaves them and their devices to the process's exit.
func (n *ncclRanks[R]) giveUp(cause error) {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.die(cause)
	n.abandoned = true
}

// abort ends every communicator after cause; the first cause is the one
// later calls return. It runs only where no NCCL call on the communicators
// is in flight on another goroutine: NCCL forbids calls on a communicator
// while it is aborted, and the abort frees it.
func (n *ncclRanks[R]) abort(cause error) error {
	n.mu.Lock()
	defer n.mu.Unlock()
	n.die(cause)
	errs := []error{cause}
	for _, c := range n.comms {
		if err := c.Abort(); err != nil { // nothing on one aborted already
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// groupGrace is how long a group given up on still has to return before
// its communicators are left behind: a group that is not stuck returns in
// microseconds, and one caught by a quit as it ends should not cost them.
const groupGrace = 100 * time.Millisecond

// group issues fn's NCCL calls for every rank between one
// ncclGroupStart/End on one thread: in one process driving several GPUs,
// each device's sends and receives must be in the same group from the same
// thread, or the first send blocks for a receive that is never issued.
//
// NCCL sets up the links between two ranks in the group end of their first
// exchange, which waits for the peer: a peer process that hangs there
// would hold this call forever. So the group runs on its own goroutine and
// is given up on at the deadline, when the step's context ends (q, Ctrl-C)
// or when the ranks are marked dead (kill: the session lost a peer), which
// cannot abort the communicators while the call holds them; a quit must
// not wait out the timeout. The communicators under a call that never
// returned cannot be aborted (NCCL forbids it), so they and the devices
// are left to the process's exit (giveUp).
func (n *ncclRanks[R]) group(l limit, what string, fn func(rk R, c *Comm) error) error {
	if err := n.failed(); err != nil {
		return err
	}
	if l.ctx.Err() != nil { // no call in flight: the communicators can be aborted
		return n.abort(fmt.Errorf("%s: %w", what, context.Cause(l.ctx)))
	}
	dead, _ := n.watch()
	done := make(chan error, 1)
	go func() {
		done <- Group(func() error {
			for i, rk := range n.ranks {
				if err := fn(rk, n.comms[i]); err != nil {
					return err
				}
			}
			return nil
		})
	}()
	timer := time.NewTimer(time.Until(l.deadline))
	defer timer.Stop()
	var cause error
	select {
	case err := <-done:
		if err != nil {
			return n.abort(fmt.Errorf("%s: %w", what, err))
		}
		return nil
	case <-timer.C:
		cause = fmt.Errorf("%s: ncclGroupEnd did not return within %v (a peer that never joins the exchange): %w", what, l.timeout, ErrEPTimeout)
	case <-dead:
		cause = fmt.Errorf("%s: given up on ncclGroupEnd: %w", what, n.cause())
	case <-l.ctx.Done():
		cause = fmt.Errorf("%s: given up on ncclGroupEnd: %w", what, context.Cause(l.ctx))
	}
	select { // finished as it was given up on: not a hang
	case err := <-done:
		if err != nil {
			return n.abort(fmt.Errorf("%s: %w", what, err))
		}
		return nil
	case <-time.After(groupGrace):
	}
	n.giveUp(cause)
	return cause
}

// drainTimeout bounds how long a wait, having aborted the communicators,
// waits for its synchronizes to return (a variable for the tests).
var drainTimeout = 10 * time.Second

// wait blocks until the streams of the ranks which (indices into ranks;
// all when none) are idle. NCCL work on them can hang forever when a peer
// is stuck, so the synchronizes run on their own goroutines while this one
// polls ncclCommGetAsyncError and watches the deadline, the context and
// the ranks' death; on any of them, or a synchronize that fails, it aborts
// every communicator, which ends the NCCL kernels and with them the
// synchronizes, and waits for those to return before returning itself:
// what the ranks hold must not be freed under them. Synchronizes the abort
// does not end within drainTimeout leave the ranks to the process's exit
// (abandoned).
func (n *ncclRanks[R]) wait(l limit, what string, which ...int) error {
	if which == nil {
		which = make([]int, len(n.ranks))
		for i := range which {
			which[i] = i
		}
	}
	dead, _ := n.watch()
	done := make(chan error, 1)
	go func() {
		sync := func(rk R) error { return syncStream(rk.work(), what) }
		if len(which) > 1 {
			done <- n.each(which, what, sync)
			return
		}
		// One rank: its caller names it already.
		rk := n.ranks[which[0]]
		leave, err := rk.enter()
		if err == nil {
			err = sync(rk)
			leave()
		}
		done <- err
	}()
	tick := time.NewTicker(time.Millisecond)
	defer tick.Stop()
	timer := time.NewTimer(time.Until(l.deadline))
	defer timer.Stop()
	var cause error
	for cause == nil {
		select {
		case err := <-done:
			if err != nil {
				// A rank whose work failed leaves its peers waiting on it.
				return n.abort(err)
			}
			return nil
		case <-l.ctx.Done():
			// q or Ctrl-C: end now rather than at the deadline of a rank
			// that may never answer.
			cause = fmt.Errorf("%s: %w", what, l.ctx.Err())
		case <-dead:
			cause = fmt.Errorf("%s: %w", what, n.cause())
		case <-tick.C:
			// Under the lock: abort frees the communicators, and a poll
			// racing it would read freed memory.
			n.mu.Lock()
			for _, i := range which {
				if err := commError(n.comms[i]); err != nil {
					cause = fmt.Errorf("%s: %w", what, err)
					break
				}
			}
			n.mu.Unlock()
		case <-timer.C:
			select { // finished as the deadline passed: not a hang
			case err := <-done:
				if err != nil {
					return n.abort(err)
				}
				return nil
			default:
			}
			who := "the ranks"
			if len(which) == 1 {
				who = fmt.Sprintf("rank %d", n.ranks[which[0]].id())
			}
			cause = fmt.Errorf("%s: %s waited %v: %w", what, who, l.timeout, ErrEPTimeout)
		}
	}
	err := n.abort(cause)
	select {
	case <-done:
	case <-time.After(drainTimeout):
		n.mu.Lock()
		n.abandoned = true
		n.mu.Unlock()
	}
	return err
}

// end ends the communicators, destroyed after a clean run and aborted
// after a failure (a peer may be gone), and says whether what the ranks
// hold may be released: not after a call given up on, whose communicators
// and devices are left as they are to the process's exit.
func (n *ncclRanks[R]) end() (release bool, err error) {
	n.mu.Lock()
	if n.abandoned { // the call given up on may still read them
		n.mu.Unlock()
		return false, nil
	}
	comms, dead := n.comms, n.dead
	n.comms = nil
	n.mu.Unlock()
	var errs []error
	for _, c := range comms {
		end := c.Destroy
		if dead != nil {
			end = c.Abort
		}
		errs = append(errs, end())
	}
	return true, errors.Join(errs...)
}
