package ep

import (
	"sync"
	"time"
)

// Fake is an in-process Transport: N ranks on N goroutines exchanging copies
// of their buffers through channels. It checks what a real communicator
// cannot afford to (every rank calls the same collective, every buffer has the
// size its receiver expected) and bounds every call by a timeout, so a rank
// that never arrives ends the others with ErrTimeout instead of a hang.
type Fake struct {
	comm
	w *fakeWorld
}

type fakeWorld struct {
	done  chan struct{}
	once  sync.Once
	cause error
}

// NewFake returns the n ranks of one in-process communicator; each call waits
// at most timeout for its peers.
func NewFake(n int, timeout time.Duration) []*Fake {
	w := &fakeWorld{done: make(chan struct{})}
	// box[s][d] carries rank s's messages to rank d.
	box := make([][]chan msg, n)
	for s := range box {
		box[s] = make([]chan msg, n)
		for d := range box[s] {
			box[s][d] = make(chan msg, 2)
		}
	}
	ranks := make([]*Fake, n)
	for r := range ranks {
		c := comm{rank: r, n: n, timeout: timeout, out: make([]chan<- msg, n), in: make([]<-chan msg, n),
			done: w.done, cause: func() error { return w.cause }, abort: w.abort}
		for p := range n {
			c.out[p], c.in[p] = box[r][p], box[p][r]
		}
		ranks[r] = &Fake{comm: c, w: w}
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

// Abort ends the communicator; the first cause wins.
func (f *Fake) Abort(cause error) { f.w.abort(cause) }

func (w *fakeWorld) abort(cause error) {
	w.once.Do(func() {
		w.cause = cause
		close(w.done)
	})
}
