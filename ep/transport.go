package ep

import (
	"context"
	"errors"
)

// Sentinel errors of a transport, tested with errors.Is.
var (
	// ErrTimeout means a peer did not reach a collective within the
	// transport's timeout: it died, hangs, or runs a different step.
	ErrTimeout = errors.New("rank timed out")
	// ErrAborted means the communicator was aborted (by a rank that failed,
	// or after a timeout); every later call fails with it too.
	ErrAborted = errors.New("ranks aborted")
	// ErrMismatch means ranks disagree on a collective: a different call, or
	// a buffer whose size the receiver did not expect.
	ErrMismatch = errors.New("ranks disagree")
	// ErrEnded means a rank that others still needed left the run cleanly:
	// its run ended (rank 0's --steps or --duration, a signal, a quit).
	ErrEnded = errors.New("run ended")
	// ErrPeerLost means a rank's connection closed without a goodbye: its
	// process died or was killed, or the network between the two failed.
	ErrPeerLost = errors.New("rank lost")
)

// Rows is what dispatch carries from one rank to another: token rows and, for
// each, the top-k slots the receiver serves, as DeepEP sends x with
// topk_idx and topk_weights.
type Rows struct {
	X       []float32 // tokens × hidden
	IDs     []int32   // tokens × top-k: the expert the receiver runs for the slot, or -1
	Weights []float32 // tokens × top-k: the router's weight of the slot
}

// Transport is what a rank needs of its peers in a step: collectives over all
// ranks, each called by every rank in the same order. In every exchange,
// send[d] goes to rank d (itself included) and recv[s] receives what rank s
// sent; the caller sizes recv, from the counts for the row buffers, so that a
// transport over NCCL can post its receives up front. A call blocks until the
// exchange is done, the context ends, the timeout passes or the communicator
// is aborted, and never longer.
type Transport interface {
	// Rank is this rank's number, 0 ≤ Rank < Size.
	Rank() int
	// Size is the number of ranks.
	Size() int
	// ExchangeCounts is an all-to-all of small integer vectors (per-expert
	// row counts) that tells every rank what it will receive.
	ExchangeCounts(ctx context.Context, send, recv [][]int32) error
	// Dispatch sends token rows to the ranks that serve them.
	Dispatch(ctx context.Context, send, recv []Rows) error
	// Combine sends each received token's result back to its rank.
	Combine(ctx context.Context, send, recv [][]float32) error
	// AllReduce returns the sum of v over all ranks, in the same order on
	// every rank. A step calls it with one element before combine: the time
	// it takes is the time a rank waits for the slowest.
	AllReduce(ctx context.Context, v float64) (float64, error)
	// Abort ends the communicator for every rank: their pending and later
	// calls return an error wrapping ErrAborted and cause.
	Abort(cause error)
}
