package ep

import (
	"context"
	"fmt"
	"slices"
	"time"
)

// msg is one rank's part of a collective, as it travels to one peer.
type msg struct {
	op     string
	seq    uint64
	counts []int32
	rows   Rows
	vec    []float32
	val    float64
}

// The collectives, in the names errors use; the TCP transport sends their
// index.
var opNames = [...]string{"counts", "dispatch", "combine", "all-reduce"}

// comm runs one rank's collectives over mailboxes: out[d] takes messages for
// rank d and in[s] yields rank s's in the order they were sent. Any
// communicator that delivers whole messages in order between every pair of
// ranks gets the Transport's collectives, checks and timeouts from it: the
// in-process Fake (channels) and the TCP mesh (a connection per pair).
//
// Two slots per mailbox suffice for a send never to block on a live peer: a
// rank runs at most one collective ahead of a peer that has not yet read its
// previous message.
type comm struct {
	rank, n int
	timeout time.Duration
	seq     uint64 // collectives this rank has called
	out     []chan<- msg
	in      []<-chan msg
	// done is closed when the communicator is aborted; cause says why.
	done  <-chan struct{}
	cause func() error
	// abort ends the communicator for every rank; the first cause wins.
	abort func(error)
	// gone says why in[s] was closed: rank s left the run. Nil where a
	// mailbox is never closed.
	gone func(s int) error
}

func (c *comm) Rank() int { return c.rank }
func (c *comm) Size() int { return c.n }

func (c *comm) aborted(op string) error {
	return fmt.Errorf("%s on rank %d: %w: %w", op, c.rank, ErrAborted, c.cause())
}

// exchange sends out(d) to every rank d, then hands every rank s's message to
// in(s, m). An error from in is a mismatch that breaks the communicator for
// everyone, as does a timeout or a peer that left.
func (c *comm) exchange(ctx context.Context, op string, out func(d int) msg, in func(s int, m msg) error) error {
	select {
	case <-c.done:
		return c.aborted(op)
	default:
	}
	c.seq++
	timer := time.NewTimer(c.timeout)
	defer timer.Stop()
	for d := 0; d < c.n; d++ {
		m := out(d)
		m.op, m.seq = op, c.seq
		select {
		case c.out[d] <- m:
		case <-c.done:
			return c.aborted(op)
		case <-ctx.Done():
			return fmt.Errorf("%s on rank %d: %w", op, c.rank, ctx.Err())
		case <-timer.C:
			err := fmt.Errorf("%s: rank %d waited %v to send to rank %d: %w", op, c.rank, c.timeout, d, ErrTimeout)
			c.abort(err)
			return err
		}
	}
	for s := 0; s < c.n; s++ {
		select {
		case m, ok := <-c.in[s]:
			var err error
			switch {
			case !ok:
				err = fmt.Errorf("%s on rank %d: %w", op, c.rank, c.gone(s))
			case m.op != op || m.seq != c.seq:
				err = fmt.Errorf("rank %d called %s (collective %d) while rank %d called %s (collective %d): %w",
					s, m.op, m.seq, c.rank, op, c.seq, ErrMismatch)
			default:
				if err = in(s, m); err != nil {
					err = fmt.Errorf("%s: %w: %w", op, err, ErrMismatch)
				}
			}
			if err != nil {
				c.abort(err)
				return err
			}
		case <-c.done:
			return c.aborted(op)
		case <-ctx.Done():
			return fmt.Errorf("%s on rank %d: %w", op, c.rank, ctx.Err())
		case <-timer.C:
			err := fmt.Errorf("%s: rank %d waited %v for rank %d: %w", op, c.rank, c.timeout, s, ErrTimeout)
			c.abort(err)
			return err
		}
	}
	return nil
}

func (c *comm) checkLen(op string, n int) error {
	if n != c.n {
		return fmt.Errorf("%s on rank %d: %d buffers for %d ranks: %w", op, c.rank, n, c.n, ErrMismatch)
	}
	return nil
}

// The messages are copies: the caller may reuse its buffers once a call
// returns, while a peer (or a connection's writer) may still read them.

// ExchangeCounts implements Transport.
func (c *comm) ExchangeCounts(ctx context.Context, send, recv [][]int32) error {
	if err := c.checkLen("counts", len(send)); err != nil {
		return err
	}
	if err := c.checkLen("counts", len(recv)); err != nil {
		return err
	}
	return c.exchange(ctx, "counts",
		func(d int) msg { return msg{counts: slices.Clone(send[d])} },
		func(s int, m msg) error {
			if len(m.counts) != len(recv[s]) {
				return fmt.Errorf("rank %d expected %d counts from rank %d, got %d", c.rank, len(recv[s]), s, len(m.counts))
			}
			copy(recv[s], m.counts)
			return nil
		})
}

// Dispatch implements Transport.
func (c *comm) Dispatch(ctx context.Context, send, recv []Rows) error {
	if err := c.checkLen("dispatch", len(send)); err != nil {
		return err
	}
	if err := c.checkLen("dispatch", len(recv)); err != nil {
		return err
	}
	return c.exchange(ctx, "dispatch",
		func(d int) msg {
			return msg{rows: Rows{X: slices.Clone(send[d].X), IDs: slices.Clone(send[d].IDs),
				Weights: slices.Clone(send[d].Weights)}}
		},
		func(s int, m msg) error {
			r := &recv[s]
			if len(m.rows.X) != len(r.X) || len(m.rows.IDs) != len(r.IDs) || len(m.rows.Weights) != len(r.Weights) {
				return fmt.Errorf("rank %d expected %d/%d/%d values from rank %d, got %d/%d/%d", c.rank,
					len(r.X), len(r.IDs), len(r.Weights), s, len(m.rows.X), len(m.rows.IDs), len(m.rows.Weights))
			}
			copy(r.X, m.rows.X)
			copy(r.IDs, m.rows.IDs)
			copy(r.Weights, m.rows.Weights)
			return nil
		})
}

// Combine implements Transport.
func (c *comm) Combine(ctx context.Context, send, recv [][]float32) error {
	if err := c.checkLen("combine", len(send)); err != nil {
		return err
	}
	if err := c.checkLen("combine", len(recv)); err != nil {
		return err
	}
	return c.exchange(ctx, "combine",
		func(d int) msg { return msg{vec: slices.Clone(send[d])} },
		func(s int, m msg) error {
			if len(m.vec) != len(recv[s]) {
				return fmt.Errorf("rank %d expected %d values from rank %d, got %d", c.rank, len(recv[s]), s, len(m.vec))
			}
			copy(recv[s], m.vec)
			return nil
		})
}

// AllReduce implements Transport. Every rank sums the values in rank order,
// so all get the same bits.
func (c *comm) AllReduce(ctx context.Context, v float64) (float64, error) {
	vals := make([]float64, c.n)
	err := c.exchange(ctx, "all-reduce",
		func(int) msg { return msg{val: v} },
		func(s int, m msg) error { vals[s] = m.val; return nil })
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, x := range vals {
		sum += x
	}
	return sum, nil
}
