package cuda

import (
	"context"
	"fmt"
	"time"

	"github.com/moetop/moetop/ep"
)

// One process per GPU: each process is one rank of the run on its own
// device, on one host or many. The processes join an ep.Session first
// (rank 0 is the coordinator); rank 0 makes the NCCL unique id once all
// have joined and the session hands it to every rank (JoinConfig.Blob);
// each rank then joins the NCCL communicator with ncclCommInitRank. Rows
// go over NCCL, and the session carries each step's reports to rank 0 and
// tells every rank when a peer is gone (ep.SessionBackend).
//
// NOT YET RUN ON GPUs, like the rest of GPU expert parallelism.

// The process's rank is one of the world: rank 0 gathers the reports, and
// the session aborts it when a peer is lost.
var _ ep.LocalRank = (*EPBackend)(nil)

// NewEPRank is rank of a world of ranks spread over processes, on the
// CUDA device ordinal device; join makes its communicator with the
// device current (ncclCommInitRank with the run's unique id).
func NewEPRank(device, rank, world int, join func(rank int) (*Comm, error)) *EPBackend {
	return &EPBackend{Devices: []int{device}, Rank: rank, World: world, Join: join}
}

// UniqueIDBlob is rank 0's ep.JoinConfig.Blob in a run of GPU ranks: a
// fresh NCCL unique id, as its bytes. The session calls it once every
// rank has joined, so that NCCL's bootstrap listener, which the id names,
// opens only for a run that will start. NCCL must be loaded (LoadNCCL).
func UniqueIDBlob() ([]byte, error) { return uniqueIDBlob(NewUniqueID) }

func uniqueIDBlob(newID func() (UniqueID, error)) ([]byte, error) {
	id, err := newID()
	if err != nil {
		return nil, err
	}
	return id.MarshalBinary()
}

// SessionUniqueID is the NCCL unique id rank 0 handed every rank of the
// session when they joined.
func SessionUniqueID(sess *ep.Session) (UniqueID, error) {
	var id UniqueID
	if err := id.UnmarshalBinary(sess.Blob()); err != nil {
		return id, fmt.Errorf("rank %d: the NCCL unique id from the coordinator: %w", sess.Rank(), err)
	}
	return id, nil
}

// NewEPProcess is this process's rank of a joined session, on the CUDA
// device ordinal device, as a kernels.Backend: the rank joins the NCCL
// communicator with the unique id from the session, and every step rank 0
// gathers every rank's report. placement is the one the ranks agreed on
// (nil: contiguous blocks); timeout bounds each wait on a peer.
func NewEPProcess(sess *ep.Session, device int, placement *ep.Placement, timeout time.Duration, o Options) (*ep.SessionBackend, error) {
	id, err := SessionUniqueID(sess)
	if err != nil {
		return nil, err
	}
	world := sess.World()
	e := NewEPRank(device, sess.Rank(), world, func(rank int) (*Comm, error) { return CommInitRank(world, id, rank) })
	e.Placement, e.Timeout, e.Options = placement, timeout, o
	return &ep.SessionBackend{Session: sess, Rank: e, Placement: placement}, nil
}

func (e *EPBackend) joinTimeout() time.Duration {
	if e.JoinTimeout > 0 {
		return e.JoinTimeout
	}
	return max(e.timeout(), time.Minute)
}

// joinComms makes this process's communicators with Join. NCCL's init
// returns once every rank of the world has joined, and one that never
// comes would hold it forever: it runs on its own goroutine, given up on
// when ctx ends (the session lost a peer, or the user quit), Abort is
// called or the join timeout passes. An init given up on cannot be
// aborted, having no communicator yet: it is left to the process's exit
// (abandoned), and aborted should it return after all, so that its peers
// stop waiting on this rank.
func (e *EPBackend) joinComms(ctx context.Context) ([]*Comm, error) {
	type joined struct {
		comms []*Comm
		err   error
	}
	dead, cause := e.watch()
	if cause == nil && ctx.Err() != nil {
		cause = context.Cause(ctx)
	}
	if cause != nil { // over before it began: nothing to give up on
		return nil, fmt.Errorf("ep over GPUs: joining the communicator: %w", cause)
	}
	done := make(chan joined, 1)
	ranks := e.ranks
	go func() {
		comms, err := e.initRanks(ranks)
		done <- joined{comms, err}
	}()
	timer := time.NewTimer(e.joinTimeout())
	defer timer.Stop()
	select {
	case j := <-done:
		return j.comms, j.err
	case <-ctx.Done():
		cause = context.Cause(ctx)
	case <-dead:
		cause = e.cause()
	case <-timer.C:
		cause = fmt.Errorf("ncclCommInitRank: rank %s waited %v for the other ranks of %d to join: %w", e.rankSpan(),
			e.joinTimeout(), e.world, ErrEPTimeout)
	}
	cause = fmt.Errorf("ep over GPUs: joining the communicator: %w", cause)
	select { // joined as it was given up on: end what it made
	case j := <-done:
		for _, c := range j.comms {
			c.Abort()
		}
		return nil, cause
	default:
	}
	e.giveUp(cause)
	go func() {
		for _, c := range (<-done).comms {
			c.Abort()
		}
	}()
	return nil, cause
}

// initRanks makes the communicators of ranks with Join, each with its
// rank's device current. Several ranks of one process join inside one
// group, as NCCL asks of a thread that initialises several devices.
func (e *EPBackend) initRanks(ranks []*epRank) ([]*Comm, error) {
	comms := make([]*Comm, len(ranks))
	join := func() error {
		for i, rk := range ranks {
			leave, err := rk.b.ctx.Enter()
			if err != nil {
				return fmt.Errorf("rank %d: %w", rk.r, err)
			}
			comms[i], err = e.Join(rk.r)
			leave()
			if err != nil {
				return fmt.Errorf("rank %d: %w", rk.r, err)
			}
		}
		return nil
	}
	var err error
	if len(ranks) == 1 {
		err = join()
	} else {
		err = Group(join)
	}
	if err != nil {
		for _, c := range comms {
			if c != nil {
				c.Abort()
			}
		}
		return nil, err
	}
	return comms, nil
}
