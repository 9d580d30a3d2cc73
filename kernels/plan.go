package kernels

import "fmt"

// What a backend keeps in memory, buffer by buffer. Each backend's plan is
// registered with it, and the CUDA backends allocate exactly their plan,
// so the memory model and the allocations cannot drift apart; the model
// adds nothing a backend does not allocate.

// BufferKind groups buffers for the memory breakdown.
type BufferKind int

const (
	KindWeights BufferKind = iota
	KindActivations
	KindIndex
	KindPadding
	KindWorkspace
)

func (k BufferKind) String() string {
	return [...]string{"weights", "activations", "index", "padding", "workspace"}[k]
}

// BufferID is the role of a buffer: a backend finds its allocations by
// this typed key, never by a buffer's display name.
type BufferID int

const (
	// BufCuBLAS is memory cuBLAS allocates itself (its handles): counted
	// by the model, never allocated by a backend.
	BufCuBLAS BufferID = iota
	BufRouterWeights
	BufW1
	BufW2
	BufX
	BufLogits
	BufOut
	BufTopKIDs
	BufTopKWeights
	BufRowOfSlot
	BufTokenOfRow
	BufIndex      // per-expert counts, offsets and cursors
	BufRouterBias // per-expert bias added to the logits
	BufPermutedX  // x's rows grouped by expert
	BufH          // gemm1's output, the activation's input and output
	BufY          // gemm2's output
	BufPointers   // device arrays of device pointers (grouped GEMM)
	BufWorkspace  // every cuBLAS handle's workspace, one after the other
	// The shared experts' weights, their gemm1 output (the activation's
	// input and output) and gemm2 output, and the workspace of the
	// cuBLAS handle on their own stream.
	BufSharedW1
	BufSharedW2
	BufSharedH
	BufSharedY
	BufSharedWorkspace
	NumBufferIDs
)

// Buffer is one allocation.
type Buffer struct {
	ID    BufferID
	Name  string
	Kind  BufferKind
	Bytes uint64
}

// WorkspaceBytes is the cuBLAS workspace each handle gets (cuBLAS's own
// default on Hopper), set explicitly so that it is counted.
const WorkspaceBytes = 32 << 20

// HandleBytes is what one cuBLAS handle takes on the device beyond its
// workspace (measured on an H100 with cuBLAS 13.1: 64 MiB each, through
// cuMemGetInfo around cublasCreate and its first GEMM).
const HandleBytes = 64 << 20

// CommonBuffers is what every backend holds whatever its GEMMs: the
// weights, the input and output, the router's logits and the routing's
// index arrays, with elem bytes per stored element.
//
// w1 is hidden × W1Cols per expert (twice ffn when gated). With shared
// experts, their weights and activations come too (SharedBuffers).
func CommonBuffers(s Shape, elem uint64) []Buffer {
	t, h, f, e, r := u(s.Tokens), u(s.Hidden), u(s.FFN), u(s.Experts), u(s.Rows())
	c1 := u(s.W1Cols())
	b := []Buffer{
		{BufRouterWeights, "router weights", KindWeights, h * e * elem},
		{BufW1, "w1", KindWeights, e * h * c1 * elem},
		{BufW2, "w2", KindWeights, e * f * h * elem},
		{BufX, "x", KindActivations, t * h * elem},
		{BufLogits, "logits", KindActivations, t * e * 4},
		{BufOut, "out", KindActivations, t * h * elem},
		{BufTopKIDs, "top-k ids", KindIndex, r * 4},
		{BufTopKWeights, "top-k weights", KindIndex, r * 4},
		{BufRowOfSlot, "row of slot", KindIndex, r * 4},
		{BufIndex, "counts, offsets, cursors", KindIndex, 3 * e * 4},
	}
	return append(b, SharedBuffers(s, elem)...)
}

// SharedBuffers are the shared experts' weights (hidden × their gemm1
// columns, width × hidden) and their activations over every token: h,
// tokens × gemm1's columns, and y, tokens × hidden. None without shared
// experts.
func SharedBuffers(s Shape, elem uint64) []Buffer {
	w := u(s.SharedWidth())
	if w == 0 {
		return nil
	}
	t, h, c1 := u(s.Tokens), u(s.Hidden), u(s.Act.Columns(s.SharedWidth()))
	return []Buffer{
		{BufSharedW1, "shared w1", KindWeights, h * c1 * elem},
		{BufSharedW2, "shared w2", KindWeights, w * h * elem},
		{BufSharedH, "shared h", KindActivations, t * c1 * elem},
		{BufSharedY, "shared y", KindActivations, t * h * elem},
	}
}

// DenseRows are the routed rows packed expert after expert: x gathered,
// h (gemm1's W1Cols per row) and y, with elem bytes per element.
func DenseRows(s Shape, elem uint64) []Buffer {
	h, c1, r := u(s.Hidden), u(s.W1Cols()), u(s.Rows())
	return []Buffer{
		{BufPermutedX, "permuted x", KindActivations, r * h * elem},
		{BufH, "h", KindActivations, r * c1 * elem},
		{BufY, "y", KindActivations, r * h * elem},
	}
}

// Workspaces is n cuBLAS workspaces in one allocation.
func Workspaces(n int) Buffer {
	return Buffer{BufWorkspace, "cuBLAS workspace", KindWorkspace, u(n) * WorkspaceBytes}
}

// Handles is n cuBLAS handles' own memory: cuBLAS allocates it, not the
// backend, so only the model counts it.
func Handles(n int) Buffer {
	return Buffer{BufCuBLAS, "cuBLAS handles", KindWorkspace, u(n) * HandleBytes}
}

// Plan lists the buffers the named backend needs for s when the experts
// get counts rows (counts matters only to backends that pad).
func Plan(backend string, s Shape, counts []int) ([]Buffer, error) {
	r, ok := Lookup(backend)
	if !ok {
		return nil, fmt.Errorf("no memory plan: %w %q", ErrUnknownBackend, backend)
	}
	return r.Plan(s, counts)
}

// Total adds up a plan.
func Total(b []Buffer) uint64 {
	var n uint64
	for _, x := range b {
		n += x.Bytes
	}
	return n
}

func u(n int) uint64 { return uint64(n) }
