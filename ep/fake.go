package ep

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"time"
)

// Fake is an in-process Transport: N ranks on N goroutines exchanging copies
// of their buffers through channels. It checks what a real communicator
// cannot afford to (every rank calls the same collective, every buffer has the
// size its receiver expected) and bounds every call by a timeout, so a rank
// that never arrives ends the others with ErrTimeout instead of a hang.
type Fake struct {
	w    *fakeWorld
	rank int
	seq  uint64 // collectives this rank has called
}

type fakeWorld struct {
	n       int
	timeout time.Duration
	// box[s][d] carries rank s's messages to rank d. Two slots suffice for a
	// send never to block: a rank runs at most one collective ahead of a
	// peer that has not yet read its previous message.
	box   [][]chan fakeMsg
	done  chan struct{}
	once  sync.Once
	cause error
}

type fakeMsg struct {
	op     string
	seq    uint64
	counts []int32
	rows   Rows
	vec    []float32
	val    float64
}

// NewFake returns the n ranks of one in-process communicator; each call waits
// at most timeout for its peers.
func NewFake(n int, timeout time.Duration) []*Fake {
	w := &fakeWorld{n: n, timeout: timeout, box: make([][]chan fakeMsg, n), done: make(chan struct{})}
	for s := range w.box {
		w.box[s] = make([]chan fakeMsg, n)
		for d := range w.box[s] {
			w.box[s][d] = make(chan fakeMsg, 2)
		}
	}
	ranks := make([]*Fake, n)
	for r := range ranks {
		ranks[r] = &Fake{w: w, rank: r}
	}
	return ranks
}

// Transports returns the ranks as the interface, for callers that take a
// []Transport.
func Transports(f []*Fake) []Transport {
	t := make([]Transport, len(f))
	for i, r := range f {
		t[i] = r
	}
	return t
}

func (f *Fake) Rank() int { return f.rank }
func (f *Fake) Size() int { return f.w.n }

// Abort ends the communicator; the first cause wins.
func (f *Fake) Abort(cause error) { f.w.abort(cause) }

func (w *fakeWorld) abort(cause error) {
	w.once.Do(func() {
		w.cause = cause
		close(w.done)
	})
}

func (f *Fake) aborted(op string) error {
	return fmt.Errorf("%s on rank %d: %w: %w", op, f.rank, ErrAborted, f.w.cause)
}

// exchange sends out(d) to every rank d, then hands every rank s's message to
// in(s, m). An error from in is a mismatch that breaks the communicator for
// everyone, as does a timeout.
func (f *Fake) exchange(ctx context.Context, op string, out func(d int) fakeMsg, in func(s int, m fakeMsg) error) error {
	w := f.w
	select {
	case <-w.done:
		return f.aborted(op)
	default:
	}
	f.seq++
	timer := time.NewTimer(w.timeout)
	defer timer.Stop()
	for d := 0; d < w.n; d++ {
		m := out(d)
		m.op, m.seq = op, f.seq
		select {
		case w.box[f.rank][d] <- m:
		case <-w.done:
			return f.aborted(op)
		case <-ctx.Done():
			return fmt.Errorf("%s on rank %d: %w", op, f.rank, ctx.Err())
		case <-timer.C:
			err := fmt.Errorf("%s: rank %d waited %v to send to rank %d: %w", op, f.rank, w.timeout, d, ErrTimeout)
			w.abort(err)
			return err
		}
	}
	for s := 0; s < w.n; s++ {
		select {
		case m := <-w.box[s][f.rank]:
			err := error(nil)
			if m.op != op || m.seq != f.seq {
				err = fmt.Errorf("rank %d called %s (collective %d) while rank %d called %s (collective %d): %w",
					s, m.op, m.seq, f.rank, op, f.seq, ErrMismatch)
			} else if err = in(s, m); err != nil {
				err = fmt.Errorf("%s: %w: %w", op, err, ErrMismatch)
			}
			if err != nil {
				w.abort(err)
				return err
			}
		case <-w.done:
			return f.aborted(op)
		case <-ctx.Done():
			return fmt.Errorf("%s on rank %d: %w", op, f.rank, ctx.Err())
		case <-timer.C:
			err := fmt.Errorf("%s: rank %d waited %v for rank %d: %w", op, f.rank, w.timeout, s, ErrTimeout)
			w.abort(err)
			return err
		}
	}
	return nil
}

func (f *Fake) checkLen(op string, n int) error {
	if n != f.w.n {
		return fmt.Errorf("%s on rank %d: %d buffers for %d ranks: %w", op, f.rank, n, f.w.n, ErrMismatch)
	}
	return nil
}

// ExchangeCounts implements Transport.
func (f *Fake) ExchangeCounts(ctx context.Context, send, recv [][]int32) error {
	if err := f.checkLen("counts", len(send)); err != nil {
		return err
	}
	if err := f.checkLen("counts", len(recv)); err != nil {
		return err
	}
	return f.exchange(ctx, "counts",
		func(d int) fakeMsg { return fakeMsg{counts: slices.Clone(send[d])} },
		func(s int, m fakeMsg) error {
			if len(m.counts) != len(recv[s]) {
				return fmt.Errorf("rank %d expected %d counts from rank %d, got %d", f.rank, len(recv[s]), s, len(m.counts))
			}
			copy(recv[s], m.counts)
			return nil
		})
}

// Dispatch implements Transport.
func (f *Fake) Dispatch(ctx context.Context, send, recv []Rows) error {
	if err := f.checkLen("dispatch", len(send)); err != nil {
		return err
	}
	if err := f.checkLen("dispatch", len(recv)); err != nil {
		return err
	}
	return f.exchange(ctx, "dispatch",
		func(d int) fakeMsg {
			return fakeMsg{rows: Rows{X: slices.Clone(send[d].X), IDs: slices.Clone(send[d].IDs),
				Weights: slices.Clone(send[d].Weights)}}
		},
		func(s int, m fakeMsg) error {
			r := &recv[s]
			if len(m.rows.X) != len(r.X) || len(m.rows.IDs) != len(r.IDs) || len(m.rows.Weights) != len(r.Weights) {
				return fmt.Errorf("rank %d expected %d/%d/%d values from rank %d, got %d/%d/%d", f.rank,
					len(r.X), len(r.IDs), len(r.Weights), s, len(m.rows.X), len(m.rows.IDs), len(m.rows.Weights))
			}
			copy(r.X, m.rows.X)
			copy(r.IDs, m.rows.IDs)
			copy(r.Weights, m.rows.Weights)
			return nil
		})
}

// Combine implements Transport.
func (f *Fake) Combine(ctx context.Context, send, recv [][]float32) error {
	if err := f.checkLen("combine", len(send)); err != nil {
		return err
	}
	if err := f.checkLen("combine", len(recv)); err != nil {
		return err
	}
	return f.exchange(ctx, "combine",
		func(d int) fakeMsg { return fakeMsg{vec: slices.Clone(send[d])} },
		func(s int, m fakeMsg) error {
			if len(m.vec) != len(recv[s]) {
				return fmt.Errorf("rank %d expected %d values from rank %d, got %d", f.rank, len(recv[s]), s, len(m.vec))
			}
			copy(recv[s], m.vec)
			return nil
		})
}

// AllReduce implements Transport.
func (f *Fake) AllReduce(ctx context.Context, v float64) (float64, error) {
	vals := make([]float64, f.w.n)
	err := f.exchange(ctx, "all-reduce",
		func(int) fakeMsg { return fakeMsg{val: v} },
		func(s int, m fakeMsg) error { vals[s] = m.val; return nil })
	if err != nil {
		return 0, err
	}
	var sum float64
	for _, x := range vals {
		sum += x
	}
	return sum, nil
}
