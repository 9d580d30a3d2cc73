package ep

import (
	"bufio"
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"
)

// TCP is a Transport between processes: the CPU ranks of a run with one
// process per rank. Every pair of ranks has its own connection (a full
// mesh), set up through the coordinator (Join with Mesh).
//
// Why a mesh and not everything relayed through rank 0: each exchange is
// then the same all-to-all the in-process Fake runs (a mailbox per peer,
// the same code in comm), transfer time is spread over the pairs as NCCL
// spreads it, and rank 0 carries no one else's rows. The cost is a port
// per rank, as NCCL itself needs.
//
// A reader goroutine per connection turns frames into the peer's mailbox
// and a writer goroutine drains this rank's mailbox into the socket, so a
// send never waits on the network and two ranks writing large rows to each
// other cannot deadlock. A peer that closes its connection without a
// goodbye fails the next call that needs it with ErrPeerLost; one that
// hangs, with ErrTimeout; either way every rank is aborted.
type TCP struct {
	comm
	conns []net.Conn // per peer; nil for this rank
	outs  []chan msg
	ins   []chan msg
	grace time.Duration

	done      chan struct{}
	abortOnce sync.Once
	cause     error

	mu   sync.Mutex
	left []error // why ins[p] was closed

	closeOnce sync.Once
	readers   sync.WaitGroup
	writers   sync.WaitGroup
	finished  chan struct{}
}

// graceFor is how long a rank that leaves or aborts waits for its last
// frames to reach the peers and theirs to arrive: long enough for any
// network, short against the timeout, so that a run with a hung rank ends
// soon after the timeout names it.
func graceFor(timeout time.Duration) time.Duration { return min(timeout/2, time.Second) }

// opBye asks a writer to say goodbye and stop.
const opBye = "bye"

// newTCP runs rank's collectives over conns (conns[rank] is nil). A call
// waits at most timeout for a peer.
func newTCP(rank int, conns []net.Conn, timeout time.Duration) *TCP {
	n := len(conns)
	t := &TCP{conns: conns, outs: make([]chan msg, n), ins: make([]chan msg, n), left: make([]error, n),
		grace: graceFor(timeout), done: make(chan struct{}), finished: make(chan struct{})}
	t.comm = comm{rank: rank, n: n, timeout: timeout, out: make([]chan<- msg, n), in: make([]<-chan msg, n),
		done: t.done, cause: func() error { return t.cause }, abort: t.abort, gone: t.gone}
	for p := range n {
		if p == rank {
			self := make(chan msg, 2)
			t.outs[p], t.ins[p] = self, self
		} else {
			t.outs[p], t.ins[p] = make(chan msg, 2), make(chan msg, 2)
		}
		t.comm.out[p], t.comm.in[p] = t.outs[p], t.ins[p]
	}
	for p, c := range conns {
		if p == rank {
			continue
		}
		t.readers.Add(1)
		t.writers.Add(1)
		go t.reader(p, c)
		go t.writer(p, c)
	}
	return t
}

// Abort implements Transport: the cause goes to every peer, whose pending
// and later calls fail with it.
func (t *TCP) Abort(cause error) { t.abort(cause) }

func (t *TCP) abort(cause error) {
	t.abortOnce.Do(func() {
		t.cause = cause
		close(t.done)
		// Writers send the abort and stop; readers drain what the peers
		// still send so that closing does not reset a connection whose
		// last frames the peer has yet to read. Both within the grace.
		dl := time.Now().Add(t.grace)
		for _, c := range t.conns {
			if c != nil {
				c.SetDeadline(dl)
			}
		}
		go t.finish()
	})
}

// Close says goodbye to every peer, after any message still queued, and
// releases the connections. Peers that still need this rank then fail with
// ErrEnded. Close waits at most a couple of seconds for the peers to close
// their side.
func (t *TCP) Close() error {
	t.closeOnce.Do(func() {
		select {
		case <-t.done:
		default:
			for p, out := range t.outs {
				if p == t.rank {
					continue
				}
				select {
				case out <- msg{op: opBye}:
				case <-t.done:
				case <-time.After(t.grace):
				}
			}
			byes := make(chan struct{})
			go func() { t.writers.Wait(); close(byes) }()
			select {
			case <-byes:
			case <-time.After(t.grace):
			}
			// Writers have said goodbye: the abort sends nothing more,
			// and a call after Close says this rank ended.
			t.abort(&peerGone{rank: t.rank, ended: true})
		}
	})
	<-t.finished
	return nil
}

// finish closes the connections once writers and readers are done (both
// bounded by the deadline abort set).
func (t *TCP) finish() {
	t.writers.Wait()
	t.readers.Wait()
	for _, c := range t.conns {
		if c != nil {
			c.Close()
		}
	}
	close(t.finished)
}

func (t *TCP) gone(p int) error {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.left[p]
}

// leave records why peer p's messages stopped and closes its mailbox; only
// p's reader calls it, once.
func (t *TCP) leave(p int, why error) {
	t.mu.Lock()
	t.left[p] = why
	t.mu.Unlock()
	close(t.ins[p])
}

// saidBye reports whether peer p said goodbye: a connection error after
// that is the peer closing, not a failure.
func (t *TCP) saidBye(p int) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	return errors.Is(t.left[p], ErrEnded)
}

func (t *TCP) reader(p int, c net.Conn) {
	defer t.readers.Done()
	br := bufio.NewReaderSize(c, 256<<10)
	open := true // until the peer said goodbye or the connection ended
	for {
		kind, payload, err := readFrame(br, maxDataFrame)
		if err != nil {
			if open {
				t.leave(p, &peerGone{rank: p, err: err})
				open = false
			}
			return
		}
		if !open {
			continue // draining after a goodbye or an abort
		}
		switch kind {
		case frameData:
			m, err := decodeMsg(payload)
			if err != nil {
				t.abort(fmt.Errorf("rank %d sent a malformed message to rank %d: %v: %w", p, t.rank, err, ErrMismatch))
				continue
			}
			select {
			case t.ins[p] <- m:
			case <-t.done:
			}
		case frameBye:
			t.leave(p, &peerGone{rank: p, ended: true})
			open = false
		case frameAbort:
			t.abort(decodeAbort(payload))
		default:
			t.abort(fmt.Errorf("rank %d sent rank %d a frame of unknown kind %d: %w", p, t.rank, kind, ErrMismatch))
		}
	}
}

func (t *TCP) writer(p int, c net.Conn) {
	defer t.writers.Done()
	var buf []byte
	for {
		select {
		case m := <-t.outs[p]:
			if m.op == opBye {
				writeFrame(c, frameBye, nil)
				closeWrite(c)
				return
			}
			var err error
			if buf, err = appendMsg(buf[:0], m); err == nil {
				err = writeFrame(c, frameData, buf)
			}
			if err != nil {
				if t.saidBye(p) {
					t.abort(fmt.Errorf("send to rank %d: %w", p, &peerGone{rank: p, ended: true}))
				} else {
					t.abort(fmt.Errorf("send to rank %d: %w", p, &peerGone{rank: p, err: err}))
				}
				return
			}
		case <-t.done:
			writeFrame(c, frameAbort, encodeAbort(t.cause))
			closeWrite(c)
			return
		}
	}
}

// closeWrite sends FIN but keeps reading, so that the peer reads every
// frame before it sees the end.
func closeWrite(c net.Conn) {
	if cw, ok := c.(interface{ CloseWrite() error }); ok {
		cw.CloseWrite()
	}
}

// meshHello opens a mesh connection: the session's nonce, so that nothing
// but a rank of this run joins, then the dialling rank.
func meshHello(nonce []byte, rank int) []byte {
	return binary.BigEndian.AppendUint32(append([]byte(nil), nonce...), uint32(rank))
}

// connectMesh connects rank to every other rank of n: it dials the ranks
// below it at addrs and accepts the ranks above it on ln, until deadline.
// It returns a connection per peer (nil at rank).
func connectMesh(ctx context.Context, rank, n int, nonce []byte, ln net.Listener, addrs []string, deadline time.Time) ([]net.Conn, error) {
	ctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	type arrival struct {
		peer int // -1: not a rank of this run
		conn net.Conn
		err  error
	}
	arrivals := make(chan arrival)
	deliver := func(a arrival) {
		select {
		case arrivals <- a:
		case <-ctx.Done():
			if a.conn != nil {
				a.conn.Close()
			}
		}
	}
	for p := range rank {
		go func() {
			c, err := dialRetry(ctx, addrs[p])
			if err == nil {
				c.SetWriteDeadline(deadline)
				if err = writeFrame(c, frameMeshHello, meshHello(nonce, rank)); err != nil {
					c.Close()
				} else {
					c.SetWriteDeadline(time.Time{})
				}
			}
			if err != nil {
				err = fmt.Errorf("rank %d connecting to rank %d at %s: %w", rank, p, addrs[p], err)
				c = nil
			}
			deliver(arrival{peer: p, conn: c, err: err})
		}()
	}
	if rank < n-1 {
		if tl, ok := ln.(*net.TCPListener); ok {
			tl.SetDeadline(deadline)
		}
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					deliver(arrival{peer: -2, err: err})
					return
				}
				go func() {
					c.SetReadDeadline(deadline)
					kind, p, err := readFrame(c, 64)
					peer := -1
					if err == nil && kind == frameMeshHello && len(p) == len(nonce)+4 && bytes.Equal(p[:len(nonce)], nonce) {
						if r := int(binary.BigEndian.Uint32(p[len(nonce):])); r > rank && r < n {
							peer = r
						}
					}
					if peer < 0 {
						c.Close()
						return
					}
					c.SetReadDeadline(time.Time{})
					deliver(arrival{peer: peer, conn: c})
				}()
			}
		}()
	}
	conns := make([]net.Conn, n)
	fail := func(err error) ([]net.Conn, error) {
		cancel()
		for _, c := range conns {
			if c != nil {
				c.Close()
			}
		}
		return nil, err
	}
	for have := 0; have < n-1; {
		select {
		case a := <-arrivals:
			switch {
			case a.err != nil && a.peer == -2:
				return fail(fmt.Errorf("rank %d waiting for ranks %s to connect: %w", rank, missing(conns, rank), a.err))
			case a.err != nil:
				return fail(a.err)
			case conns[a.peer] != nil:
				a.conn.Close()
				return fail(fmt.Errorf("rank %d: two connections claim rank %d", rank, a.peer))
			}
			conns[a.peer] = a.conn
			have++
		case <-ctx.Done():
			return fail(fmt.Errorf("rank %d: ranks %s did not connect in time: %w", rank, missing(conns, rank), ctx.Err()))
		}
	}
	return conns, nil
}

// missing lists the peers without a connection, for messages.
func missing(conns []net.Conn, self int) string {
	var b []byte
	for p, c := range conns {
		if c == nil && p != self {
			if len(b) > 0 {
				b = append(b, ", "...)
			}
			b = fmt.Appendf(b, "%d", p)
		}
	}
	return string(b)
}
