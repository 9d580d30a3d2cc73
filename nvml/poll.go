package nvml

import (
	"context"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// MinInterval is the shortest sampling interval: NVML's counters update
// no faster, and sampling faster only costs the step loop CPU.
const MinInterval = 50 * time.Millisecond

// Open reads the wanted GPUs (every GPU when none is named) through the
// system's NVML, or the host when NVML or a GPU is missing; reason then
// says why.
func Open(wants ...Want) (src Source, reason string) {
	g, err := OpenGPU(system{gonvml.New()}, wants...)
	if err != nil {
		r := err.Error()
		if ng, ok := err.(*NoGPUError); ok {
			r = ng.Reason
		}
		return NewHost("no GPU: " + r), r
	}
	return g, ""
}

// system adapts go-nvml's library, which checks symbols through its
// extensions, to Library.
type system struct{ gonvml.Interface }

func (s system) LookupSymbol(name string) error { return s.Extensions().LookupSymbol(name) }

// Poller reads a Source on its own goroutine so that a slow NVML call never
// blocks the step loop or the UI; Latest returns the newest reading. The
// Poller owns its source: it closes it itself, after its last Read, so that
// nothing can shut NVML down under a Read in flight (issue 14's SIGSEGV).
type Poller struct {
	mu     sync.Mutex
	latest Snapshot
	seq    uint64

	stop     context.CancelFunc
	done     chan struct{}
	closeErr error // set before done is closed
}

// Poll starts reading src every interval until ctx ends or Close is
// called, then closes src. The first reading is taken before Poll returns,
// so Latest is never empty. The caller hands src over: it must not close
// it (if it does, src's own Read/Close exclusion still keeps NVML safe).
func Poll(ctx context.Context, src Source, interval time.Duration) *Poller {
	if interval < MinInterval {
		interval = MinInterval
	}
	ctx, stop := context.WithCancel(ctx)
	p := &Poller{stop: stop, done: make(chan struct{})}
	p.store(src.Read())
	go func() {
		defer close(p.done)
		// The last Read has returned when the loop ends: only now may the
		// library go.
		defer func() { p.closeErr = src.Close() }()
		t := time.NewTicker(interval)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
				// A tick and the end can be ready together; select picks
				// at random, so check the end first.
				if ctx.Err() != nil {
					return
				}
				p.store(src.Read())
			}
		}
	}()
	return p
}

func (p *Poller) store(s Snapshot) {
	p.mu.Lock()
	p.latest = s
	p.seq++
	p.mu.Unlock()
}

// Latest returns the newest snapshot and how many were taken so far. After
// Close it keeps returning the last one.
func (p *Poller) Latest() (Snapshot, uint64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.latest, p.seq
}

// Close stops polling, waits for the Read in flight, closes the source and
// returns what its Close returned. It may be called more than once, from
// any goroutine.
func (p *Poller) Close() error {
	p.stop()
	<-p.done
	return p.closeErr
}

// Done is closed when the polling goroutine has ended and the source is
// closed.
func (p *Poller) Done() <-chan struct{} { return p.done }
