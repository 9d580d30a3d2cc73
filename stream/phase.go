package stream

// Phase names a stage of a step. The layer's own phases come in this order;
// expert parallelism and shared experts add theirs.
const (
	PhaseRouter   = "router"
	PhasePermute  = "permute"
	PhaseDispatch = "dispatch"
	PhaseGEMM1    = "gemm1"
	PhaseAct      = "act"
	PhaseGEMM2    = "gemm2"
	PhaseShared   = "shared"
	PhaseWait     = "wait"
	PhaseCombine  = "combine"
)

// LayerPhases are a single-GPU step's phases in step order (moetop/1's six).
var LayerPhases = []string{PhaseRouter, PhasePermute, PhaseGEMM1, PhaseAct, PhaseGEMM2, PhaseCombine}

// PhaseTime is one phase of a step on one device (a rank under expert
// parallelism; 0 on a single GPU or the CPU).
type PhaseTime struct {
	Phase  string  `json:"phase"`
	Device int     `json:"device"`
	MS     float64 `json:"ms"`
	// Bytes and FLOPs are what the phase must move and compute at least
	// (0: not counted), for GB/s, TFLOP/s and the roofline.
	Bytes float64 `json:"bytes,omitempty"`
	FLOPs float64 `json:"flops,omitempty"`
	// StartMS is when the phase began after the step's start, where phases
	// overlap (a shared expert on its own stream); nil: in sequence.
	StartMS *float64 `json:"start_ms,omitempty"`
}

// Phases is a step's phase list.
type Phases []PhaseTime

// MS is the time of phase name on device (0 when absent).
func (p Phases) MS(name string, device int) float64 {
	for _, t := range p {
		if t.Phase == name && t.Device == device {
			return t.MS
		}
	}
	return 0
}

// Names lists the phase names in order of first appearance.
func (p Phases) Names() []string {
	var out []string
	seen := map[string]bool{}
	for _, t := range p {
		if !seen[t.Phase] {
			seen[t.Phase] = true
			out = append(out, t.Phase)
		}
	}
	return out
}

// Devices lists the devices in order of first appearance.
func (p Phases) Devices() []int {
	var out []int
	seen := map[int]bool{}
	for _, t := range p {
		if !seen[t.Device] {
			seen[t.Device] = true
			out = append(out, t.Device)
		}
	}
	return out
}

// Total is the sum of device's phases.
func (p Phases) Total(device int) float64 {
	s := 0.0
	for _, t := range p {
		if t.Device == device {
			s += t.MS
		}
	}
	return s
}
