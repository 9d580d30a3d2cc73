package kernels

import "fmt"

// What a backend keeps in memory, buffer by buffer. The CUDA backends
// allocate exactly these, so the memory model and the allocations cannot
// drift apart; the model adds nothing a backend does not allocate.

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

// Buffer is one allocation.
type Buffer struct {
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

// StreamCount is how many CUDA streams (each with its own cuBLAS handle and
// workspace) the streams backend spreads experts over.
const StreamCount = 4

// GPUBackends are the CUDA backends, in the order the TUI cycles them.
var GPUBackends = []string{"grouped", "loop", "streams", "padded", "hybrid"}

// Capacity is the padded backend's rows per expert: the busiest expert's
// rows when dropless, else ceil(factor·rows/experts).
func Capacity(s Shape, counts []int) int {
	if s.CapacityFactor > 0 {
		c := s.CapacityFactor * float64(s.Rows()) / float64(s.Experts)
		n := int(c)
		if float64(n) < c {
			n++
		}
		return n
	}
	m := 0
	for _, c := range counts {
		m = max(m, c)
	}
	return m
}

// Plan lists the buffers backend needs for s when the experts get counts
// rows (counts matters only to the padded backend).
func Plan(backend string, s Shape, counts []int) ([]Buffer, error) {
	t, h, f, e, r := u(s.Tokens), u(s.Hidden), u(s.FFN), u(s.Experts), u(s.Rows())
	dt := u(s.DType.Size())
	if backend == "cpu" {
		dt = 4 // the CPU computes and stores float32
	}
	b := []Buffer{
		{"router weights", KindWeights, h * e * dt},
		{"w1", KindWeights, e * h * f * dt},
		{"w2", KindWeights, e * f * h * dt},
		{"x", KindActivations, t * h * dt},
		{"logits", KindActivations, t * e * 4},
		{"out", KindActivations, t * h * dt},
		{"top-k ids", KindIndex, r * 4},
		{"top-k weights", KindIndex, r * 4},
		{"row of slot", KindIndex, r * 4},
		{"counts, offsets, cursors", KindIndex, 3 * e * 4},
	}
	if backend == "cpu" {
		b = append(b, Buffer{"token of row", KindIndex, r * 4})
	} else {
		b = append(b, Buffer{"router bias", KindIndex, e * 4})
	}
	dense := []Buffer{
		{"permuted x", KindActivations, r * h * dt},
		{"h", KindActivations, r * f * dt},
		{"y", KindActivations, r * h * dt},
	}
	switch backend {
	case "cpu":
		b = append(b, dense...)
	case "grouped":
		b = append(b, dense...)
		b = append(b, Buffer{"pointer arrays", KindIndex, 6 * e * 8},
			Buffer{"cuBLAS workspace", KindWorkspace, WorkspaceBytes}, handles(1))
	case "loop":
		b = append(b, dense...)
		b = append(b, Buffer{"cuBLAS workspace", KindWorkspace, WorkspaceBytes}, handles(1))
	case "streams":
		b = append(b, dense...)
		b = append(b, Buffer{"cuBLAS workspace", KindWorkspace, StreamCount * WorkspaceBytes}, handles(1+StreamCount))
	case "hybrid":
		b = append(b, dense...)
		b = append(b, Buffer{"pointer arrays", KindIndex, 6 * e * 8},
			Buffer{"cuBLAS workspace", KindWorkspace, 2 * WorkspaceBytes}, handles(2))
	case "padded":
		c := u(Capacity(s, counts))
		b = append(b,
			Buffer{"padded x", KindPadding, e * c * h * dt},
			Buffer{"padded h", KindPadding, e * c * f * dt},
			Buffer{"padded y", KindPadding, e * c * h * dt},
			Buffer{"cuBLAS workspace", KindWorkspace, WorkspaceBytes}, handles(1))
	default:
		return nil, fmt.Errorf("no memory plan for backend %q", backend)
	}
	return b, nil
}

// handles is the cuBLAS handles' own memory: cuBLAS allocates it, not us,
// so the backends skip buffers of this name.
func handles(n int) Buffer { return Buffer{HandlesBuffer, KindWorkspace, uint64(n) * HandleBytes} }

// HandlesBuffer names the plan entry that cuBLAS allocates itself.
const HandlesBuffer = "cuBLAS handles"

// Total adds up a plan.
func Total(b []Buffer) uint64 {
	var n uint64
	for _, x := range b {
		n += x.Bytes
	}
	return n
}

func u(n int) uint64 { return uint64(n) }
