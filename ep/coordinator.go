package ep

import (
	"bufio"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/moetop/moetop/stream"
)

// Protocol is the version of what moetop processes say to each other; a
// rank of another protocol is refused when it joins.
const Protocol = 1

// DefaultPort is the coordinator's port when none is given: moetop's own,
// since a launcher such as torchrun already holds MASTER_PORT for its store.
const DefaultPort = 29731

// Spec is what every rank of a run must agree on. Join compares each
// rank's with rank 0's and names the first field that differs.
type Spec struct {
	World   int          `json:"world"`
	Version string       `json:"version"`
	Backend string       `json:"backend"`
	Layer   stream.Layer `json:"layer"`
	// Placement is expert → ranks holding it.
	Placement [][]int `json:"placement"`
}

// hello is what a rank sends rank 0 when it joins.
type hello struct {
	Protocol  int    `json:"protocol"`
	Rank      int    `json:"rank"`
	Host      string `json:"host"`
	LocalRank int    `json:"local_rank"`
	// DataPort is where the rank accepts mesh connections (0: no mesh).
	DataPort int  `json:"data_port,omitempty"`
	Spec     Spec `json:"spec"`
}

// welcome is rank 0's answer: the blob, the session's nonce (mesh
// connections prove they belong to the run with it) and every rank.
type welcome struct {
	Blob  []byte `json:"blob,omitempty"`
	Nonce []byte `json:"nonce"`
	Peers []Peer `json:"peers"`
}

// Peer is one rank of a run, as rank 0 saw it join.
type Peer struct {
	Rank      int    `json:"rank"`
	Host      string `json:"host"`
	LocalRank int    `json:"local_rank"`
	// DataAddr is where the rank accepts mesh connections; an empty host
	// means the coordinator's.
	DataAddr string `json:"data_addr,omitempty"`
}

// Report is one rank's account of a step. Rank 0 gathers every rank's and
// hands all of them back, so that rank 0 alone builds the sample while the
// others steer their router from the same numbers.
type Report struct {
	Rank int `json:"rank"`
	Step int `json:"step"`
	// PhasesNS is each phase's time in ns, in the order of PhaseNames.
	PhasesNS   []int64 `json:"phases_ns"`
	RecvTokens int     `json:"recv_tokens"`
	RecvRows   int     `json:"recv_rows"`
	SentBytes  int64   `json:"sent_bytes"`
	SavedBytes int64   `json:"saved_bytes,omitempty"`
	// ExpertRows[e] is the rows the rank ran through expert e.
	ExpertRows []int `json:"expert_rows"`
	// Bias fingerprints the router bias of the step: ranks that steer
	// differently no longer compute one layer.
	Bias uint64 `json:"bias"`
}

// JoinConfig is one process's part in a run of World processes.
type JoinConfig struct {
	Rank, World int
	// Addr is the coordinator, HOST:PORT: rank 0 listens there (unless
	// Listener is set) and the other ranks connect to it.
	Addr string
	// Listener, on rank 0, is already listening; Join closes it.
	Listener net.Listener
	Spec     Spec
	// Host and LocalRank say where the rank runs (LOCAL_RANK picks its
	// GPU); rank 0 hands them to every rank, for messages and the view.
	Host      string
	LocalRank int
	// Timeout bounds every wait once the run has started: a step's report,
	// and each call on the mesh.
	Timeout time.Duration
	// JoinTimeout bounds joining: rank 0 waits this long for all ranks,
	// the others keep trying to connect this long (0: Timeout).
	JoinTimeout time.Duration
	// Blob, on rank 0, makes the bytes every rank receives once all have
	// joined: the NCCL unique id on GPUs. Nil: none.
	Blob func() ([]byte, error)
	// Mesh opens a TCP connection between every pair of ranks, the
	// transport of CPU ranks (GPU ranks talk through NCCL instead).
	Mesh bool
}

// Session is a process's membership of a run: its connection to the
// coordinator (rank 0) or, on rank 0, to every other rank; and, with Mesh,
// its TCP transport. A rank that leaves, dies or hangs ends every other
// within Timeout, with an error that names it.
type Session struct {
	rank, world int
	timeout     time.Duration
	grace       time.Duration
	spec        Spec
	blob        []byte
	peers       []Peer
	addr        string
	mesh        *TCP

	conns  []*ctlConn // rank 0: one per rank (nil at 0); others: [0]
	events chan ctlEvent
	step   int

	done      chan struct{}
	abortOnce sync.Once
	cause     error
	// over is closed once the run is over for this process, aborted or
	// ended by a goodbye (its own or a peer's); overCause says why.
	over      chan struct{}
	overOnce  sync.Once
	overCause error
	closing   atomic.Bool
	closeOnce sync.Once
	readers   sync.WaitGroup
}

type ctlConn struct {
	c  net.Conn
	mu sync.Mutex // one writer at a time
}

// send writes one frame, failing if it cannot within timeout.
func (cc *ctlConn) send(kind byte, payload []byte, timeout time.Duration) error {
	cc.mu.Lock()
	defer cc.mu.Unlock()
	cc.c.SetWriteDeadline(time.Now().Add(timeout))
	return writeFrame(cc.c, kind, payload)
}

func (cc *ctlConn) sendJSON(kind byte, v any, timeout time.Duration) error {
	b, err := json.Marshal(v)
	if err != nil {
		return err
	}
	return cc.send(kind, b, timeout)
}

// ctlEvent is a frame from a peer, or the news that it left.
type ctlEvent struct {
	from    int
	kind    byte
	payload []byte
}

// Rank is this process's rank.
func (s *Session) Rank() int { return s.rank }

// World is the number of ranks.
func (s *Session) World() int { return s.world }

// Spec is what the ranks agreed on.
func (s *Session) Spec() Spec { return s.spec }

// Blob is what rank 0's JoinConfig.Blob made.
func (s *Session) Blob() []byte { return s.blob }

// Peers lists every rank of the run, in rank order.
func (s *Session) Peers() []Peer { return slices.Clone(s.peers) }

// Addr is the coordinator's address: where rank 0 listened, or what the
// other ranks dialled.
func (s *Session) Addr() string { return s.addr }

// Transport is the TCP mesh between the ranks (nil without Mesh).
func (s *Session) Transport() *TCP { return s.mesh }

// Listen opens the coordinator's port for rank 0 (ahead of Join, to learn
// the port when addr asks for any, as tests do with 127.0.0.1:0).
func Listen(addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("coordinator: %w", err)
	}
	return ln, nil
}

// Join makes this process rank cfg.Rank of the run. Rank 0 waits for every
// other rank to connect and checks that each runs the same Spec; the
// others connect, retrying until JoinTimeout. A mismatch fails every rank
// with an error that wraps ErrMismatch and names the field.
func Join(ctx context.Context, cfg JoinConfig) (*Session, error) {
	switch {
	case cfg.World < 1:
		return nil, fmt.Errorf("join: world of %d ranks; want at least 1", cfg.World)
	case cfg.Rank < 0 || cfg.Rank >= cfg.World:
		return nil, fmt.Errorf("join: rank %d of a world of %d; want 0 … %d", cfg.Rank, cfg.World, cfg.World-1)
	case cfg.Spec.World != cfg.World:
		return nil, fmt.Errorf("join: the spec is for %d ranks, the world has %d", cfg.Spec.World, cfg.World)
	case cfg.Timeout <= 0:
		return nil, fmt.Errorf("join: timeout %v; want a positive duration", cfg.Timeout)
	}
	if cfg.JoinTimeout <= 0 {
		cfg.JoinTimeout = cfg.Timeout
	}
	s := &Session{rank: cfg.Rank, world: cfg.World, timeout: cfg.Timeout, grace: graceFor(cfg.Timeout),
		spec: cfg.Spec, addr: cfg.Addr, done: make(chan struct{}), over: make(chan struct{}),
		events: make(chan ctlEvent, 4*cfg.World)}
	var err error
	if cfg.Rank == 0 {
		err = s.lead(ctx, cfg)
	} else {
		err = s.follow(ctx, cfg)
	}
	if err != nil {
		return nil, err
	}
	for p, cc := range s.conns {
		if cc != nil {
			s.readers.Add(1)
			go s.reader(p, cc)
		}
	}
	return s, nil
}

// lead is rank 0's side of Join.
func (s *Session) lead(ctx context.Context, cfg JoinConfig) (err error) {
	ln := cfg.Listener
	if ln == nil {
		if ln, err = Listen(cfg.Addr); err != nil {
			return err
		}
	}
	defer ln.Close()
	s.addr = ln.Addr().String()
	var data net.Listener
	if cfg.Mesh {
		// Mesh connections come in on the coordinator's interface.
		if data, err = net.Listen("tcp", net.JoinHostPort(ipOf(ln.Addr()), "0")); err != nil {
			return fmt.Errorf("coordinator: mesh: %w", err)
		}
		defer data.Close()
	}
	deadline := time.Now().Add(cfg.JoinTimeout)
	jctx, cancel := context.WithDeadline(ctx, deadline)
	defer cancel()
	go func() { <-jctx.Done(); ln.Close() }() // unblocks Accept

	type arrival struct {
		conn net.Conn
		h    hello
		err  error
	}
	arrivals := make(chan arrival)
	deliver := func(a arrival) {
		select {
		case arrivals <- a:
		case <-jctx.Done():
			if a.conn != nil {
				a.conn.Close()
			}
		}
	}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				deliver(arrival{err: err})
				return
			}
			go func() {
				c.SetReadDeadline(deadline)
				kind, p, err := readFrame(c, maxControlFrame)
				var h hello
				if err == nil && kind == frameHello && json.Unmarshal(p, &h) == nil {
					c.SetReadDeadline(time.Time{})
					deliver(arrival{conn: c, h: h})
					return
				}
				c.Close() // not a moetop rank: a port scan, a stray client
			}()
		}
	}()

	s.conns = make([]*ctlConn, cfg.World)
	hellos := make([]hello, cfg.World)
	hellos[0] = hello{Protocol: Protocol, Host: cfg.Host, LocalRank: cfg.LocalRank, Spec: cfg.Spec}
	if data != nil {
		hellos[0].DataPort = portOf(data.Addr())
	}
	// fail refuses every rank that joined. After a mismatch it also waits
	// a moment for the ranks still on their way, so that each learns why
	// instead of retrying a coordinator that is gone.
	refused := 0
	fail := func(err error, linger bool) error {
		refusal := encodeAbort(err)
		refuse := func(c net.Conn) {
			(&ctlConn{c: c}).send(frameRefuse, refusal, s.grace)
			c.Close()
			refused++
		}
		for _, cc := range s.conns {
			if cc != nil {
				refuse(cc.c)
			}
		}
		wait := time.NewTimer(s.grace)
		defer wait.Stop()
		for linger && refused < cfg.World-1 {
			select {
			case a := <-arrivals:
				if a.conn == nil {
					linger = false
					break
				}
				refuse(a.conn)
			case <-wait.C:
				linger = false
			}
		}
		cancel()
		return err
	}
	for have := 1; have < cfg.World; {
		select {
		case a := <-arrivals:
			if a.err != nil {
				if ctx.Err() != nil {
					return fail(ctx.Err(), false)
				}
				return fail(fmt.Errorf("coordinator %s: ranks %s did not join within %v", s.addr,
					s.absent(), cfg.JoinTimeout), false)
			}
			h := a.h
			cc := &ctlConn{c: a.conn}
			var bad error
			switch {
			case h.Protocol != Protocol:
				bad = fmt.Errorf("rank %d speaks protocol %d, rank 0 protocol %d (run the same moetop on every rank): %w",
					h.Rank, h.Protocol, Protocol, ErrMismatch)
			case h.Rank < 1 || h.Rank >= cfg.World:
				bad = fmt.Errorf("a process on %s joined as rank %d, but the world has ranks 0 … %d: %w",
					h.Host, h.Rank, cfg.World-1, ErrMismatch)
			case s.conns[h.Rank] != nil:
				bad = fmt.Errorf("two processes joined as rank %d (on %s and %s): %w",
					h.Rank, hellos[h.Rank].Host, h.Host, ErrMismatch)
			default:
				if d := specDiff(h.Spec, cfg.Spec); d != "" {
					bad = fmt.Errorf("rank %d does not run what rank 0 runs: %s: %w", h.Rank, d, ErrMismatch)
				}
			}
			if bad != nil {
				cc.send(frameRefuse, encodeAbort(bad), s.grace)
				cc.c.Close()
				refused++
				return fail(bad, true)
			}
			s.conns[h.Rank], hellos[h.Rank] = cc, h
			have++
		case <-jctx.Done():
			if ctx.Err() != nil {
				return fail(ctx.Err(), false)
			}
			return fail(fmt.Errorf("coordinator %s: ranks %s did not join within %v", s.addr, s.absent(), cfg.JoinTimeout), false)
		}
	}
	cancel()

	w := welcome{Nonce: make([]byte, 16)}
	rand.Read(w.Nonce)
	if cfg.Blob != nil {
		if w.Blob, err = cfg.Blob(); err != nil {
			return fail(fmt.Errorf("coordinator: %w", err), false)
		}
	}
	for r, h := range hellos {
		p := Peer{Rank: r, Host: h.Host, LocalRank: h.LocalRank}
		if h.DataPort > 0 {
			host := "" // rank 0: the coordinator's host, as each rank dialled it
			if r > 0 {
				host = ipOf(s.conns[r].c.RemoteAddr())
			}
			p.DataAddr = net.JoinHostPort(host, strconv.Itoa(h.DataPort))
		}
		w.Peers = append(w.Peers, p)
	}
	s.blob, s.peers = w.Blob, w.Peers
	for r, cc := range s.conns {
		if cc != nil {
			if err := cc.sendJSON(frameWelcome, w, s.timeout); err != nil {
				return fail(fmt.Errorf("coordinator: welcome to rank %d: %w", r, err), false)
			}
		}
	}
	if !cfg.Mesh {
		return nil
	}

	// The mesh: connect, then hear from every rank that its own side is
	// up (or why not) before anyone steps.
	mctx, mcancel := context.WithCancel(ctx)
	defer mcancel()
	meshDone := make(chan error, 1)
	var conns []net.Conn
	go func() {
		var err error
		conns, err = connectMesh(mctx, 0, cfg.World, w.Nonce, data, nil, time.Now().Add(cfg.JoinTimeout))
		meshDone <- err
	}()
	ready := make(chan error, cfg.World)
	for r, cc := range s.conns {
		if cc == nil {
			continue
		}
		go func() {
			cc.c.SetReadDeadline(time.Now().Add(cfg.JoinTimeout + s.grace))
			kind, p, err := readFrame(cc.c, maxControlFrame)
			cc.c.SetReadDeadline(time.Time{})
			switch {
			case err != nil:
				ready <- fmt.Errorf("coordinator: rank %d did not report its mesh: %w", r, err)
			case kind != frameReady:
				ready <- fmt.Errorf("coordinator: rank %d sent frame %d, not its mesh's state: %w", r, kind, ErrMismatch)
			case len(p) > 0:
				ready <- decodeAbort(p)
			default:
				ready <- nil
			}
		}()
	}
	meshUp := false
	for pending := cfg.World - 1; pending > 0 || !meshUp; {
		select {
		case err := <-meshDone:
			if err != nil {
				return fail(err, false)
			}
			meshUp = true
		case err := <-ready:
			if err != nil {
				mcancel()
				if <-meshDone == nil {
					closeAll(conns)
				}
				return fail(err, false)
			}
			pending--
		}
	}
	for r, cc := range s.conns {
		if cc != nil {
			if err := cc.send(frameGo, nil, s.timeout); err != nil {
				closeAll(conns)
				return fail(fmt.Errorf("coordinator: start rank %d: %w", r, err), false)
			}
		}
	}
	s.mesh = newTCP(0, conns, cfg.Timeout)
	return nil
}

// follow is the side of Join of a rank other than 0.
func (s *Session) follow(ctx context.Context, cfg JoinConfig) (err error) {
	start := time.Now()
	dctx, cancel := context.WithDeadline(ctx, start.Add(cfg.JoinTimeout))
	c, err := dialRetry(dctx, cfg.Addr)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("rank %d: no coordinator at %s within %v: %w", cfg.Rank, cfg.Addr, cfg.JoinTimeout, err)
	}
	// Until Join returns, a cancelled ctx unblocks whatever waits on c.
	stop, stopped := make(chan struct{}), make(chan struct{})
	go func() {
		defer close(stopped)
		select {
		case <-ctx.Done():
			c.SetDeadline(time.Now())
		case <-stop:
		}
	}()
	defer func() {
		close(stop)
		<-stopped
		if err != nil {
			c.Close()
		} else {
			c.SetDeadline(time.Time{})
		}
	}()
	h := hello{Protocol: Protocol, Rank: cfg.Rank, Host: cfg.Host, LocalRank: cfg.LocalRank, Spec: cfg.Spec}
	var data net.Listener
	if cfg.Mesh {
		// Listen where this rank reaches rank 0 from: the interface the
		// others will reach it on too.
		if data, err = net.Listen("tcp", net.JoinHostPort(ipOf(c.LocalAddr()), "0")); err != nil {
			return fmt.Errorf("rank %d: mesh: %w", cfg.Rank, err)
		}
		defer data.Close()
		h.DataPort = portOf(data.Addr())
	}
	cc := &ctlConn{c: c}
	if err := cc.sendJSON(frameHello, h, cfg.JoinTimeout); err != nil {
		return fmt.Errorf("rank %d: hello to the coordinator at %s: %w", cfg.Rank, cfg.Addr, err)
	}
	// expect reads rank 0's next frame; a refusal is rank 0's reason.
	expect := func(want byte, what string) ([]byte, error) {
		kind, p, err := readFrame(c, maxControlFrame)
		switch {
		case err != nil && ctx.Err() != nil:
			return nil, ctx.Err()
		case err != nil:
			return nil, fmt.Errorf("rank %d: waiting for %s from the coordinator at %s: %w", cfg.Rank, what, cfg.Addr, err)
		case kind == frameRefuse:
			return nil, fmt.Errorf("coordinator refused rank %d: %w", cfg.Rank, decodeAbort(p))
		case kind != want:
			return nil, fmt.Errorf("rank %d: the coordinator sent frame %d, not %s: %w", cfg.Rank, kind, what, ErrMismatch)
		}
		return p, nil
	}
	// Rank 0 waits JoinTimeout for the last rank; wait a little longer
	// for its welcome, so that its verdict (who is missing) arrives.
	c.SetReadDeadline(start.Add(cfg.JoinTimeout + s.grace))
	p, err := expect(frameWelcome, "a welcome")
	if err != nil {
		return err
	}
	var w welcome
	if err := json.Unmarshal(p, &w); err != nil || len(w.Peers) != cfg.World {
		return fmt.Errorf("rank %d: a welcome of %d ranks from the coordinator (%v): %w", cfg.Rank, len(w.Peers), err, ErrMismatch)
	}
	s.blob, s.peers = w.Blob, w.Peers
	if !cfg.Mesh {
		s.conns = []*ctlConn{cc}
		return nil
	}
	coordHost, _, _ := net.SplitHostPort(cfg.Addr)
	addrs := make([]string, cfg.World)
	for r, peer := range w.Peers {
		host, port, err := net.SplitHostPort(peer.DataAddr)
		if err != nil {
			return fmt.Errorf("rank %d: rank %d's mesh address %q: %v: %w", cfg.Rank, r, peer.DataAddr, err, ErrMismatch)
		}
		if host == "" {
			host = coordHost
		}
		addrs[r] = net.JoinHostPort(host, port)
	}
	meshDeadline := time.Now().Add(cfg.JoinTimeout)
	conns, err := connectMesh(ctx, cfg.Rank, cfg.World, w.Nonce, data, addrs, meshDeadline)
	var state []byte
	if err != nil {
		state = encodeAbort(err)
	}
	if serr := cc.send(frameReady, state, cfg.JoinTimeout); serr != nil && err == nil {
		err = fmt.Errorf("rank %d: telling the coordinator the mesh is up: %w", cfg.Rank, serr)
	}
	if err == nil {
		c.SetReadDeadline(meshDeadline.Add(cfg.JoinTimeout))
		_, err = expect(frameGo, "the start")
	}
	if err != nil {
		closeAll(conns)
		return err
	}
	s.mesh = newTCP(cfg.Rank, conns, cfg.Timeout)
	s.conns = []*ctlConn{cc}
	return nil
}

// absent lists the ranks that have not joined, for messages.
func (s *Session) absent() string {
	var out []string
	for r, cc := range s.conns {
		if r > 0 && cc == nil {
			out = append(out, strconv.Itoa(r))
		}
	}
	return strings.Join(out, ", ")
}

// reader turns a control connection's frames into events. A connection
// that ends without a goodbye aborts the run: the rank at the other end
// is gone.
func (s *Session) reader(p int, cc *ctlConn) {
	defer s.readers.Done()
	br := bufio.NewReader(cc.c)
	bye := false
	for {
		kind, payload, err := readFrame(br, maxControlFrame)
		if err != nil {
			if !bye && !s.closing.Load() {
				s.Abort(&peerGone{rank: p, err: err})
			}
			return
		}
		if bye {
			continue // drain until the peer closes
		}
		switch kind {
		case frameReport, frameReports, frameBye:
			bye = kind == frameBye
			if bye {
				// Ranks that wait on something else than this session
				// (GPU ranks on NCCL) stop waiting for a rank that left.
				s.end(&peerGone{rank: p, ended: true})
			}
			select {
			case s.events <- ctlEvent{from: p, kind: kind, payload: payload}:
			case <-s.done:
			}
		case frameAbort:
			s.Abort(decodeAbort(payload))
		default:
			s.Abort(fmt.Errorf("rank %d sent a control frame of unknown kind %d: %w", p, kind, ErrMismatch))
		}
	}
}

// end marks the run over for this process; the first cause wins.
func (s *Session) end(cause error) {
	s.overOnce.Do(func() {
		s.overCause = cause
		close(s.over)
	})
}

// Done is closed once the run is over for this process: aborted (a rank
// died, hung or disagreed, or this process aborted it), or ended by a
// goodbye, a peer's (rank 0 ended the run) or its own (Close). Err says
// why. A rank that waits on its peers through something other than the
// session, as GPU ranks do on NCCL, watches it to stop waiting for a rank
// that is gone.
func (s *Session) Done() <-chan struct{} { return s.over }

// Err is why the run is over for this process (it wraps ErrEnded after a
// goodbye), or nil while it is not.
func (s *Session) Err() error {
	select {
	case <-s.over:
		return s.overCause
	default:
		return nil
	}
}

// Abort ends the run for every rank: the cause goes to rank 0, which passes
// it on to all, and aborts the mesh. The first cause wins.
func (s *Session) Abort(cause error) {
	s.abortOnce.Do(func() {
		s.cause = cause
		close(s.done)
		s.end(cause)
		if s.mesh != nil {
			s.mesh.Abort(cause)
		}
		payload := encodeAbort(cause)
		for _, cc := range s.conns {
			if cc == nil {
				continue
			}
			// A write blocked on a hung peer gives way within the grace.
			cc.c.SetWriteDeadline(time.Now().Add(s.grace))
			go func() {
				if cc.send(frameAbort, payload, s.grace) == nil {
					closeWrite(cc.c)
				}
			}()
		}
	})
}

// Close leaves the run cleanly: goodbyes on the mesh and to the
// coordinator, after which ranks that still need this one end with
// ErrEnded. It waits at most a few seconds for the peers to close.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.closing.Store(true)
		// The mesh and the control connections drain side by side, so
		// that leaving takes one grace at most, not two.
		var mesh sync.WaitGroup
		if s.mesh != nil {
			mesh.Go(func() { s.mesh.Close() })
		}
		defer mesh.Wait()
		select {
		case <-s.done:
		default:
			for _, cc := range s.conns {
				if cc != nil && cc.send(frameBye, nil, s.grace) == nil {
					closeWrite(cc.c)
				}
			}
			s.abortOnce.Do(func() {
				s.cause = &peerGone{rank: s.rank, ended: true}
				close(s.done)
				s.end(s.cause)
			})
		}
		dl := time.Now().Add(s.grace)
		for _, cc := range s.conns {
			if cc != nil {
				cc.c.SetReadDeadline(dl)
			}
		}
		s.readers.Wait()
		for _, cc := range s.conns {
			if cc != nil {
				cc.c.Close()
			}
		}
	})
	return nil
}

// Gather hands rank 0 this rank's report of the step and returns every
// rank's, in rank order, on every rank. Rank 0 waits at most Timeout for
// the reports; the others wait a little longer for rank 0's answer, so
// that rank 0, which knows who is late, names the rank.
func (s *Session) Gather(ctx context.Context, rep Report) ([]Report, error) {
	step := s.step
	s.step++
	rep.Rank, rep.Step = s.rank, step
	if s.rank != 0 {
		return s.gatherFollow(ctx, rep)
	}
	reps := make([]Report, s.world)
	reps[0] = rep
	have := make([]bool, s.world)
	have[0] = true
	timer := time.NewTimer(s.timeout)
	defer timer.Stop()
	for n := 1; n < s.world; {
		select {
		case ev := <-s.events:
			var r Report
			var err error
			switch {
			case ev.kind == frameBye:
				err = fmt.Errorf("step %d: %w", step, &peerGone{rank: ev.from, ended: true})
			case ev.kind != frameReport:
				err = fmt.Errorf("step %d: rank %d sent frame %d, not its report: %w", step, ev.from, ev.kind, ErrMismatch)
			case json.Unmarshal(ev.payload, &r) != nil:
				err = fmt.Errorf("step %d: rank %d sent a report that does not parse: %w", step, ev.from, ErrMismatch)
			default:
				err = s.checkReport(ev.from, r, rep)
			}
			if err == nil && have[ev.from] {
				err = fmt.Errorf("step %d: rank %d reported twice: %w", step, ev.from, ErrMismatch)
			}
			if err != nil {
				s.Abort(err)
				return nil, err
			}
			reps[ev.from], have[ev.from] = r, true
			n++
		case <-s.done:
			return nil, s.aborted(step)
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-timer.C:
			var late []string
			for r, ok := range have {
				if !ok {
					late = append(late, strconv.Itoa(r))
				}
			}
			err := fmt.Errorf("step %d: rank %s sent no report within %v (hung?): %w", step, strings.Join(late, ", "),
				s.timeout, ErrTimeout)
			s.Abort(err)
			return nil, err
		}
	}
	b, err := json.Marshal(reps)
	if err != nil {
		return nil, err
	}
	for r, cc := range s.conns {
		if cc == nil {
			continue
		}
		if err := cc.send(frameReports, b, s.timeout); err != nil {
			err = fmt.Errorf("step %d: the reports to rank %d: %w", step, r, &peerGone{rank: r, err: err})
			s.Abort(err)
			return nil, err
		}
	}
	return reps, nil
}

func (s *Session) gatherFollow(ctx context.Context, rep Report) ([]Report, error) {
	b, err := json.Marshal(rep)
	if err != nil {
		return nil, err
	}
	if err := s.conns[0].send(frameReport, b, s.timeout); err != nil {
		err = fmt.Errorf("step %d: report to rank 0: %w", rep.Step, &peerGone{rank: 0, err: err})
		s.Abort(err)
		return nil, err
	}
	timer := time.NewTimer(s.timeout + s.grace)
	defer timer.Stop()
	select {
	case ev := <-s.events:
		var reps []Report
		var err error
		switch {
		case ev.kind == frameBye:
			// Rank 0 ended the run: not a failure of this rank.
			return nil, fmt.Errorf("step %d: %w", rep.Step, &peerGone{rank: 0, ended: true})
		case ev.kind != frameReports:
			err = fmt.Errorf("step %d: rank 0 sent frame %d, not the reports: %w", rep.Step, ev.kind, ErrMismatch)
		case json.Unmarshal(ev.payload, &reps) != nil || len(reps) != s.world:
			err = fmt.Errorf("step %d: rank 0 sent reports that do not parse or miss ranks: %w", rep.Step, ErrMismatch)
		case reps[0].Step != rep.Step:
			err = fmt.Errorf("rank 0 sent the reports of step %d at step %d: %w", reps[0].Step, rep.Step, ErrMismatch)
		}
		if err != nil {
			s.Abort(err)
			return nil, err
		}
		return reps, nil
	case <-s.done:
		return nil, s.aborted(rep.Step)
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-timer.C:
		err := fmt.Errorf("step %d: rank 0 sent no reports within %v (hung?): %w", rep.Step, s.timeout+s.grace, ErrTimeout)
		s.Abort(err)
		return nil, err
	}
}

func (s *Session) aborted(step int) error {
	if errors.Is(s.cause, ErrEnded) {
		return fmt.Errorf("step %d: %w", step, s.cause)
	}
	return fmt.Errorf("step %d: %w: %w", step, ErrAborted, s.cause)
}

// checkReport tells whether rank from's report fits rank 0's own.
func (s *Session) checkReport(from int, r, own Report) error {
	switch {
	case r.Rank != from:
		return fmt.Errorf("step %d: rank %d's report says rank %d: %w", own.Step, from, r.Rank, ErrMismatch)
	case r.Step != own.Step:
		return fmt.Errorf("step %d: rank %d reported step %d: %w", own.Step, from, r.Step, ErrMismatch)
	case len(r.PhasesNS) != len(own.PhasesNS) || len(r.ExpertRows) != len(own.ExpertRows):
		return fmt.Errorf("step %d: rank %d reported %d phases and %d experts, rank 0 %d and %d: %w", own.Step, from,
			len(r.PhasesNS), len(r.ExpertRows), len(own.PhasesNS), len(own.ExpertRows), ErrMismatch)
	case r.Bias != own.Bias:
		return fmt.Errorf("step %d: rank %d steered its router with another bias than rank 0: %w", own.Step, from, ErrMismatch)
	}
	return nil
}

// specDiff names the first field where a rank's spec differs from rank
// 0's, with both values (`layer.routing is "zipf:1.2" there, "uniform" on
// rank 0`), or "". The fields go from the most telling: a rank of another
// world size also disagrees on the placement.
func specDiff(got, want Spec) string {
	for _, f := range []struct {
		name      string
		got, want any
	}{{"world", got.World, want.World}, {"version", got.Version, want.Version}, {"backend", got.Backend, want.Backend},
		{"layer", got.Layer, want.Layer}, {"placement", got.Placement, want.Placement}} {
		if d := treeDiff(f.name, toTree(f.got), toTree(f.want)); d != "" {
			return d
		}
	}
	return ""
}

func toTree(v any) any {
	b, _ := json.Marshal(v)
	var t any
	json.Unmarshal(b, &t)
	return t
}

func treeDiff(path string, got, want any) string {
	gm, gok := got.(map[string]any)
	wm, wok := want.(map[string]any)
	if gok && wok {
		keys := make([]string, 0, len(wm)+len(gm))
		for k := range wm {
			keys = append(keys, k)
		}
		for k := range gm {
			if _, ok := wm[k]; !ok {
				keys = append(keys, k)
			}
		}
		sort.Strings(keys)
		for _, k := range keys {
			p := k
			if path != "" {
				p = path + "." + k
			}
			if d := treeDiff(p, gm[k], wm[k]); d != "" {
				return d
			}
		}
		return ""
	}
	if reflect.DeepEqual(got, want) {
		return ""
	}
	return fmt.Sprintf("%s is %s there, %s on rank 0", path, short(got), short(want))
}

func short(v any) string {
	if v == nil {
		return "unset"
	}
	b, _ := json.Marshal(v)
	if len(b) > 60 {
		return string(b[:57]) + "..."
	}
	return string(b)
}

func ipOf(a net.Addr) string {
	if t, ok := a.(*net.TCPAddr); ok && !t.IP.IsUnspecified() {
		return t.IP.String()
	}
	return ""
}

func portOf(a net.Addr) int {
	if t, ok := a.(*net.TCPAddr); ok {
		return t.Port
	}
	return 0
}

func closeAll(conns []net.Conn) {
	for _, c := range conns {
		if c != nil {
			c.Close()
		}
	}
}
