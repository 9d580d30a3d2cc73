package profiler

import (
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/nvml"
)

// Phases is the time of each phase of a step, in milliseconds.
type Phases struct {
	Router  float64 `json:"router"`
	Permute float64 `json:"permute"`
	GEMM1   float64 `json:"gemm1"`
	Act     float64 `json:"act"`
	GEMM2   float64 `json:"gemm2"`
	Combine float64 `json:"combine"`
}

// PhasesOf converts a backend's durations.
func PhasesOf(d [kernels.NumPhases]time.Duration) Phases {
	ms := func(p kernels.Phase) float64 { return float64(d[p]) / 1e6 }
	return Phases{ms(kernels.PhaseRouter), ms(kernels.PhasePermute), ms(kernels.PhaseGEMM1),
		ms(kernels.PhaseAct), ms(kernels.PhaseGEMM2), ms(kernels.PhaseCombine)}
}

// Slice lists the phases in step order, matching kernels.Phase.
func (p Phases) Slice() []float64 {
	return []float64{p.Router, p.Permute, p.GEMM1, p.Act, p.GEMM2, p.Combine}
}

// Total is the sum of the phases.
func (p Phases) Total() float64 {
	t := 0.0
	for _, v := range p.Slice() {
		t += v
	}
	return t
}

// Event kinds.
const (
	EventOOM     = "oom"
	EventBackend = "backend"
	EventConfig  = "config"
	EventError   = "error"
)

// Event is something that happened between steps.
type Event struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	Msg  string    `json:"msg"`
}

// Sample is what one step reports: the one type every source produces and
// every sink consumes.
type Sample struct {
	Time    time.Time `json:"time"`
	Step    int       `json:"step"`
	Backend string    `json:"backend"`
	Config  Config    `json:"config"`
	// Rows routed to each expert, and the target shares the router was
	// steered toward.
	Rows   []int     `json:"rows"`
	Target []float64 `json:"target,omitempty"`
	Phases Phases    `json:"phases_ms"`
	StepMS float64   `json:"step_ms"`
	// ExpertMS is gemm1+gemm2 time per expert where the backend times it.
	ExpertMS []float64 `json:"expert_ms,omitempty"`
	// TFLOPS counts the router and both expert GEMMs over the whole step;
	// GEMMTFLOPS counts the expert GEMMs over gemm1+gemm2 time.
	TFLOPS     float64 `json:"tflops"`
	GEMMTFLOPS float64 `json:"gemm_tflops"`
	// Imbalance is max rows / mean rows.
	Imbalance float64 `json:"imbalance"`
	Dropped   int     `json:"dropped,omitempty"`
	// Skipped is set when the step did not run (an OOM or an error event).
	Skipped bool    `json:"skipped,omitempty"`
	Memory  *Memory `json:"memory,omitempty"`
	// GPU is the sampler's newest reading, attached to the first sample
	// after it was taken (so a log holds each reading once).
	GPU    *nvml.Snapshot `json:"gpu,omitempty"`
	Events []Event        `json:"events,omitempty"`
	// Reset marks the first sample of a new timeline (a replay that
	// jumped): a view drops its history before taking it. Never logged.
	Reset bool `json:"-"`
}

// Imbalance is max/mean of rows; 0 when nothing was routed.
func Imbalance(rows []int) float64 {
	if len(rows) == 0 {
		return 0
	}
	maxR, sum := 0, 0
	for _, r := range rows {
		sum += r
		maxR = max(maxR, r)
	}
	if sum == 0 {
		return 0
	}
	return float64(maxR) * float64(len(rows)) / float64(sum)
}
