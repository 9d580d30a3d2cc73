package ep

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"slices"
	"time"
)

// The wire format between moetop processes, on the coordinator's
// connections and on the TCP mesh alike: frames of a 4-byte big-endian
// payload length, one kind byte, then the payload. Control payloads are JSON;
// data payloads are the binary encoding of a msg below. Both ends run the
// same moetop (the handshake checks the protocol), so nothing here is meant
// to be read by anything else.
const (
	frameData      byte = iota + 1 // a collective's message (mesh)
	frameBye                       // the sender leaves cleanly; nothing follows
	frameAbort                     // the sender aborted; the payload says why
	frameMeshHello                 // opens a mesh connection: nonce and rank
	frameHello                     // a rank joins the coordinator (JSON Hello)
	frameWelcome                   // rank 0 accepts it (JSON welcome)
	frameRefuse                    // rank 0 refuses it; the payload is the reason
	frameReady                     // a rank's mesh is up, or why not
	frameGo                        // every rank's mesh is up
	frameReport                    // a rank's report of a step (JSON Report)
	frameReports                   // every rank's reports of a step, from rank 0
)

// Frame size limits. A control frame holds a hello or the reports of one
// step (a few KB per rank); a data frame holds a rank's token rows for one
// peer, tokens·(hidden+2·top-k) values, which stays far below 2 GiB for any
// layer a CPU steps through. A length beyond them is not a moetop frame.
const (
	maxControlFrame = 16 << 20
	maxDataFrame    = 1<<31 - 1
)

var errFrameTooLarge = errors.New("frame larger than the protocol allows")

// writeFrame writes one frame in a single call, so that frames written by
// one goroutine never interleave on the connection.
func writeFrame(w io.Writer, kind byte, payload []byte) error {
	var hdr [5]byte
	binary.BigEndian.PutUint32(hdr[:4], uint32(len(payload)))
	hdr[4] = kind
	bufs := net.Buffers{hdr[:], payload}
	_, err := bufs.WriteTo(w)
	return err
}

// readFrame reads one frame of at most limit payload bytes.
func readFrame(r io.Reader, limit int) (kind byte, payload []byte, err error) {
	var hdr [5]byte
	if _, err := io.ReadFull(r, hdr[:]); err != nil {
		return 0, nil, err
	}
	n := binary.BigEndian.Uint32(hdr[:4])
	if uint64(n) > uint64(limit) {
		return 0, nil, fmt.Errorf("%w: %d bytes of kind %d", errFrameTooLarge, n, hdr[4])
	}
	payload = make([]byte, n)
	if _, err := io.ReadFull(r, payload); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, nil, err
	}
	return hdr[4], payload, nil
}

// appendMsg encodes m: the collective's index and sequence number, then
// every buffer as a count and little-endian values (floats by their bits,
// so that what arrives is exactly what was sent).
func appendMsg(b []byte, m msg) ([]byte, error) {
	op := slices.Index(opNames[:], m.op)
	if op < 0 {
		return nil, fmt.Errorf("no wire code for collective %q", m.op)
	}
	n := 1 + 8 + 5*4 + 4*(len(m.counts)+len(m.rows.X)+len(m.rows.IDs)+len(m.rows.Weights)+len(m.vec)) + 8
	b = slices.Grow(b, n)
	b = append(b, byte(op))
	b = binary.LittleEndian.AppendUint64(b, m.seq)
	b = appendInt32s(b, m.counts)
	b = appendFloat32s(b, m.rows.X)
	b = appendInt32s(b, m.rows.IDs)
	b = appendFloat32s(b, m.rows.Weights)
	b = appendFloat32s(b, m.vec)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(m.val)), nil
}

func appendInt32s(b []byte, v []int32) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, uint32(x))
	}
	return b
}

func appendFloat32s(b []byte, v []float32) []byte {
	b = binary.LittleEndian.AppendUint32(b, uint32(len(v)))
	for _, x := range v {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

var errShortMsg = errors.New("message cut short")

// decodeMsg is appendMsg's inverse. Whatever the bytes, it returns an error
// rather than panicking or allocating more than the payload implies.
func decodeMsg(p []byte) (msg, error) {
	var m msg
	if len(p) < 1+8 {
		return m, errShortMsg
	}
	if int(p[0]) >= len(opNames) {
		return m, fmt.Errorf("unknown collective code %d", p[0])
	}
	m.op, m.seq = opNames[p[0]], binary.LittleEndian.Uint64(p[1:9])
	p = p[9:]
	words := func() ([]uint32, error) {
		if len(p) < 4 {
			return nil, errShortMsg
		}
		n := binary.LittleEndian.Uint32(p)
		p = p[4:]
		if uint64(n) > uint64(len(p)/4) {
			return nil, errShortMsg
		}
		w := make([]uint32, n)
		for i := range w {
			w[i] = binary.LittleEndian.Uint32(p[4*i:])
		}
		p = p[4*n:]
		return w, nil
	}
	ints := func(dst *[]int32) error {
		w, err := words()
		*dst = make([]int32, len(w))
		for i, x := range w {
			(*dst)[i] = int32(x)
		}
		return err
	}
	floats := func(dst *[]float32) error {
		w, err := words()
		*dst = make([]float32, len(w))
		for i, x := range w {
			(*dst)[i] = math.Float32frombits(x)
		}
		return err
	}
	for _, err := range []func() error{
		func() error { return ints(&m.counts) },
		func() error { return floats(&m.rows.X) },
		func() error { return ints(&m.rows.IDs) },
		func() error { return floats(&m.rows.Weights) },
		func() error { return floats(&m.vec) },
	} {
		if err := err(); err != nil {
			return msg{}, err
		}
	}
	if len(p) != 8 {
		return msg{}, fmt.Errorf("message of the wrong length: %d bytes after the buffers, want 8", len(p))
	}
	m.val = math.Float64frombits(binary.LittleEndian.Uint64(p))
	return m, nil
}

// An abort crosses processes as the sentinels its cause wraps, one bit
// each, and its message, so that errors.Is holds on the receiving side too.
var abortKinds = [...]error{ErrTimeout, ErrMismatch, ErrEnded, ErrPeerLost, ErrAborted}

func encodeAbort(cause error) []byte {
	var kinds byte
	for i, k := range abortKinds {
		if errors.Is(cause, k) {
			kinds |= 1 << i
		}
	}
	// A rank stopped by a signal or a quit ended its run: for its peers
	// that is the end of theirs, not a failure.
	if errors.Is(cause, context.Canceled) {
		kinds |= 1 << slices.Index(abortKinds[:], ErrEnded)
	}
	return append([]byte{kinds}, cause.Error()...)
}

// remoteError is a cause that came from another process.
type remoteError struct {
	kinds byte
	msg   string
}

func decodeAbort(p []byte) error {
	if len(p) == 0 {
		return &remoteError{msg: "a peer aborted without saying why"}
	}
	return &remoteError{kinds: p[0], msg: string(p[1:])}
}

func (e *remoteError) Error() string { return e.msg }

func (e *remoteError) Is(target error) bool {
	for i, k := range abortKinds {
		if target == k {
			return e.kinds&(1<<i) != 0
		}
	}
	return false
}

// peerGone is why a rank's messages stopped: it said goodbye (ended) or its
// connection closed without one (lost).
type peerGone struct {
	rank  int
	ended bool
	err   error // the connection's error, when lost
}

func (e *peerGone) Error() string {
	if e.ended {
		return fmt.Sprintf("rank %d ended its run and left", e.rank)
	}
	why := ""
	if e.err != nil && !errors.Is(e.err, io.EOF) {
		why = ": " + e.err.Error()
	}
	return fmt.Sprintf("rank %d closed its connection (its process died or was killed)%s", e.rank, why)
}

func (e *peerGone) Is(target error) bool {
	return (target == ErrEnded && e.ended) || (target == ErrPeerLost && !e.ended)
}

// dialRetry dials addr until it answers or ctx ends: ranks start in any
// order, so a refused connection means "not listening yet".
func dialRetry(ctx context.Context, addr string) (net.Conn, error) {
	var d net.Dialer
	wait := 20 * time.Millisecond
	for {
		c, err := d.DialContext(ctx, "tcp", addr)
		if err == nil {
			return c, nil
		}
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("dial %s: %w (gave up: %v)", addr, err, ctx.Err())
		case <-time.After(wait):
		}
		wait = min(2*wait, time.Second)
	}
}
