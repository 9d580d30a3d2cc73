// Package kernels holds the Backend interface that the step loop drives and the
// CPU reference backend, which is both the default without a GPU and the oracle
// the GPU backends are checked against.
package kernels

import (
	"context"
	"errors"
	"time"
)

// Sentinel errors callers test with errors.Is.
var (
	// ErrOutOfMemory means an allocation for a step failed; the step is skipped,
	// memory is released and the run may go on.
	ErrOutOfMemory = errors.New("out of memory")
	// ErrNoGPU means no usable CUDA device or library was found.
	ErrNoGPU = errors.New("no CUDA device")
	// ErrNotPrepared means Step was called before Prepare.
	ErrNotPrepared = errors.New("backend not prepared")
)

// Shape is the layer a backend runs: what kernels needs of profiler.Config.
type Shape struct {
	Tokens  int
	Hidden  int
	FFN     int
	Experts int
	TopK    int
	DType   DType
	Act     Activation
	Seed    uint64
	// CapacityFactor, when > 0, caps each expert's rows at
	// ceil(CapacityFactor·rows/experts) on backends that pad (others ignore it).
	CapacityFactor float64
	// SharedExperts is the number of dense experts every token also goes
	// through, each SharedFFN wide (0: FFN); together they are one FFN of
	// SharedWidth with the routed experts' activation, whose output is
	// added to the routed experts' (DeepSeek, Qwen2-MoE).
	SharedExperts, SharedFFN int
	// Router is how tokens choose experts.
	Router Router
}

// Rows is the number of routed rows: every token goes to TopK experts.
func (s Shape) Rows() int { return s.Tokens * s.TopK }

// W1Cols is gemm1's output width: FFN, or 2·FFN for a gated activation
// (the gate's columns, then the up projection's).
func (s Shape) W1Cols() int { return s.Act.Columns(s.FFN) }

// SharedWidth is the shared experts' FFN width all together (0: none).
func (s Shape) SharedWidth() int {
	if s.SharedExperts <= 0 {
		return 0
	}
	f := s.SharedFFN
	if f <= 0 {
		f = s.FFN
	}
	return s.SharedExperts * f
}

// ExpertFLOPs counts the two expert GEMMs over rows routed rows:
// 2·rows·hidden·(gemm1's columns + ffn), which is 4·rows·hidden·ffn, or
// 6· gated.
func (s Shape) ExpertFLOPs(rows int) float64 {
	return 2 * float64(rows) * float64(s.Hidden) * float64(s.W1Cols()+s.FFN)
}

// GEMMFLOPs counts the two expert GEMMs of one step.
func (s Shape) GEMMFLOPs() float64 { return s.ExpertFLOPs(s.Rows()) }

// SharedFLOPs counts the shared experts' two GEMMs of one step (0: none).
func (s Shape) SharedFLOPs() float64 {
	w := s.SharedWidth()
	return 2 * float64(s.Tokens) * float64(s.Hidden) * float64(s.Act.Columns(w)+w)
}

// RouterFLOPs counts the router GEMM of one step.
func (s Shape) RouterFLOPs() float64 {
	return 2 * float64(s.Tokens) * float64(s.Hidden) * float64(s.Experts)
}

// Assignment fixes routing instead of running the router: for token t and slot
// j, expert IDs[t*TopK+j] with weight Weights[t*TopK+j]. bench uses it so that
// every tool sees the same per-expert counts; check uses it to replay the GPU
// router's choice on the CPU.
type Assignment struct {
	IDs     []int32
	Weights []float32
}

// StepInput is what changes from one step to the next.
type StepInput struct {
	// Bias is added to the router logits, one value per expert (nil: none).
	Bias []float32
	// Fixed, when set, replaces the router (the router phase then takes 0).
	Fixed *Assignment
}

// Phase names one stage of a step, in order.
type Phase int

const (
	PhaseRouter Phase = iota
	PhasePermute
	PhaseGEMM1
	PhaseAct
	PhaseGEMM2
	PhaseCombine
	NumPhases
)

var phaseNames = [NumPhases]string{"router", "permute", "gemm1", "act", "gemm2", "combine"}

func (p Phase) String() string {
	if p < 0 || p >= NumPhases {
		return "unknown"
	}
	return phaseNames[p]
}

// StepResult is what one forward step reports.
type StepResult struct {
	Rows   []int // rows routed to each expert
	Phases [NumPhases]time.Duration
	// ExpertGEMM is the gemm1+gemm2 time per expert, when the backend can
	// time experts separately (Info.TimesExperts); nil otherwise.
	ExpertGEMM []time.Duration
	// Dropped counts rows a capacity limit threw away.
	Dropped int
	// Devices, when set, replaces Phases with each device's own phases: a
	// step spread over several devices (expert parallelism) has phases
	// that one device has and another does not (dispatch, wait), and its
	// wall time is its slowest device's.
	Devices []DeviceStep
	// Overlapped are phases that ran beside Phases, on a stream of their
	// own (the shared experts), each with when it started after the
	// step's start. Phases still add up to the step's wall time: the
	// phase that waits for an overlapped one (combine, which adds the
	// shared experts' output) includes the wait.
	Overlapped []OverlappedPhase
}

// OverlappedPhase is a phase that overlaps the step's sequence.
type OverlappedPhase struct {
	Name        string
	Start, Time time.Duration
}

// PhaseShared is the shared experts' phase (an OverlappedPhase on one
// device; on an expert-parallel rank, one of its phases).
const PhaseShared = "shared"

// DeviceStep is one device's (rank's) share of a step.
type DeviceStep struct {
	Device int
	// Phases in step order.
	Phases []NamedPhase
	// RecvTokens is the token rows the device received (its own
	// included); RecvRows the (token, expert) rows it ran: its GEMM load;
	// Rows those rows per expert (0 for experts it does not hold).
	RecvTokens, RecvRows int
	Rows                 []int
	// SentBytes went to other devices in dispatch (and came back in
	// combine); SavedBytes is what sending a token once per device, not
	// once per expert, saved.
	SentBytes, SavedBytes int64
}

// NamedPhase is a phase of a device's step.
type NamedPhase struct {
	Name string
	Time time.Duration
}

// Total is the sum of the phase times.
func (r StepResult) Total() time.Duration {
	var t time.Duration
	for _, d := range r.Phases {
		t += d
	}
	return t
}

// Info describes a backend.
type Info struct {
	Name         string
	Device       string
	TimesExperts bool
}

// Backend runs the MoE layer. A backend is driven from one goroutine.
type Backend interface {
	Info() Info
	// Prepare allocates and fills weights and buffers for s, releasing any
	// earlier shape first.
	Prepare(ctx context.Context, s Shape) error
	// Step runs one forward pass.
	Step(ctx context.Context, in StepInput) (StepResult, error)
	// Close releases everything; the backend is unusable afterwards.
	Close() error
}

// Checkable is a backend whose output can be compared with the reference.
type Checkable interface {
	Backend
	// Poison fills the output with NaN so that a row the next step does not
	// write cannot pass a comparison.
	Poison() error
	// Output returns the last step's output, tokens × hidden, row-major.
	Output() ([]float32, error)
	// Routing returns the last step's router choice.
	Routing() (Assignment, error)
	// Logits returns the last routed step's router logits, before the bias.
	Logits() ([]float32, error)
}
