package stream

import "time"

// Sample is what one step reports (or, for steps too short to log one by
// one, a window of steps): the one type every source produces and every
// sink consumes.
type Sample struct {
	Time    time.Time `json:"time"`
	Step    int       `json:"step"`
	Backend string    `json:"backend"`
	Config  Layer     `json:"config"`
	// LayerIndex is the model layer whose routing a trace replays (nil:
	// not from a layered trace).
	LayerIndex *int `json:"layer,omitempty"`
	// Rows routed to each expert, and the target shares the router was
	// steered toward.
	Rows   []int     `json:"rows"`
	Target []float64 `json:"target,omitempty"`
	Phases Phases    `json:"phases"`
	// StepMS is the step's wall time on the slowest device; with phases
	// that overlap it is less than their sum.
	StepMS float64 `json:"step_ms"`
	// Steps is how many steps the sample aggregates (0 or 1: one);
	// StepMinMS and StepMaxMS keep the spread of such a window.
	Steps     int     `json:"steps,omitempty"`
	StepMinMS float64 `json:"step_min_ms,omitempty"`
	StepMaxMS float64 `json:"step_max_ms,omitempty"`
	// ExpertMS is gemm1+gemm2 time per expert where the backend times it.
	ExpertMS []float64 `json:"expert_ms,omitempty"`
	// TFLOPS counts the router and the expert GEMMs over the whole step;
	// GEMMTFLOPS counts the expert GEMMs over gemm1+gemm2 time.
	TFLOPS     float64 `json:"tflops"`
	GEMMTFLOPS float64 `json:"gemm_tflops"`
	// Imbalance is max rows / mean rows.
	Imbalance float64 `json:"imbalance"`
	Dropped   int     `json:"dropped,omitempty"`
	// Skipped is set when the step did not run (an OOM or an error event).
	Skipped bool `json:"skipped,omitempty"`
	// Ranks is each rank's traffic and load under expert parallelism.
	Ranks []RankStat `json:"ranks,omitempty"`
	// Memory has one entry per device of the run.
	Memory []Memory `json:"memory,omitempty"`
	// GPU is the sampler's newest reading, attached to the first sample
	// after it was taken (so a log holds each reading once).
	GPU    *Snapshot `json:"gpu,omitempty"`
	Events []Event   `json:"events,omitempty"`
	// Reset marks the first sample of a new timeline (a replay that
	// jumped): a view drops its history before taking it. Never logged.
	Reset bool `json:"-"`
}

// StepCount is how many steps the sample stands for: one, or a window's.
func (s *Sample) StepCount() int { return max(1, s.Steps) }

// Mem is device's memory entry, or nil.
func (s *Sample) Mem(device int) *Memory {
	for i := range s.Memory {
		if s.Memory[i].Device == device {
			return &s.Memory[i]
		}
	}
	return nil
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

// RankStat is one rank's share of an expert-parallel step.
type RankStat struct {
	Rank int `json:"rank"`
	// RecvTokens is the token rows the rank received (its own included);
	// RecvRows the (token, expert) rows it ran through its experts.
	RecvTokens int `json:"recv_tokens"`
	RecvRows   int `json:"recv_rows"`
	// SentBytes went to other ranks in dispatch (and came back in
	// combine); SavedBytes is what sending each token to a rank once, not
	// once per expert there, saved.
	SentBytes  int64 `json:"sent_bytes"`
	SavedBytes int64 `json:"saved_bytes,omitempty"`
}
