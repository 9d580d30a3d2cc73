package ep

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"time"

	"github.com/moetop/moetop/kernels"
)

// CPUBackend runs the layer expert-parallel over N CPU ranks in one
// process (goroutines over the in-process transport), as kernels.Backend:
// the step loop, recorder and view drive it like any backend, and its
// result carries each rank's phases and traffic.
type CPUBackend struct {
	// Placement says which rank holds each expert; nil: contiguous blocks
	// over Ranks.
	Placement *Placement
	Ranks     int
	// Timeout bounds how long a rank waits for the others.
	Timeout time.Duration

	shape kernels.Shape
	group *Group
}

// Info names the backend: its ranks run the reference backend's layer,
// so it goes by that name (the memory model and the sampler follow it).
func (b *CPUBackend) Info() kernels.Info {
	ref, _ := kernels.Reference()
	return kernels.Info{Name: ref.Name, Device: fmt.Sprintf("CPU reference, %d expert-parallel ranks (%d threads)",
		b.Ranks, runtime.GOMAXPROCS(0))}
}

// Prepare builds the ranks for s, whose Tokens is each rank's.
func (b *CPUBackend) Prepare(ctx context.Context, s kernels.Shape) error {
	p := b.Placement
	if p == nil {
		var err error
		if p, err = Contiguous(s.Experts, b.Ranks); err != nil {
			return err
		}
	}
	if p.Experts() != s.Experts {
		return fmt.Errorf("%w: the placement covers %d experts, the layer has %d", ErrBadPlacement, p.Experts(), s.Experts)
	}
	timeout := b.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	g, err := NewCPUGroup(Config{Shape: s, Placement: p}, timeout)
	if err != nil {
		return err
	}
	b.shape, b.group = s, g
	return ctx.Err()
}

// Step runs one step on every rank.
func (b *CPUBackend) Step(ctx context.Context, in kernels.StepInput) (kernels.StepResult, error) {
	if b.group == nil {
		return kernels.StepResult{}, kernels.ErrNotPrepared
	}
	if in.Fixed != nil {
		return kernels.StepResult{}, errors.New("ep: a fixed routing is not supported across ranks")
	}
	b.group.SetBias(in.Bias)
	ranks, err := b.group.Step(ctx)
	if err != nil {
		return kernels.StepResult{}, err
	}
	reps := make([]Report, len(ranks))
	for i, r := range ranks {
		reps[i] = reportOf(r, b.shape)
	}
	return resultOf(b.shape, reps), nil
}

// reportOf is what rank r tells the others of its step.
func reportOf(r *RankResult, s kernels.Shape) Report {
	d := r.Phases.Durations()
	ns := make([]int64, len(d))
	for i := range d {
		ns[i] = int64(d[i])
	}
	sent, saved := r.SentBytes(s.Hidden, s.DType.Size())
	return Report{Rank: r.Rank, PhasesNS: ns, RecvTokens: r.RecvTokens, RecvRows: r.RecvRows,
		SentBytes: sent, SavedBytes: saved, ExpertRows: r.ExpertRows}
}

// ResultOf is the whole step from every rank's report, in rank order: what
// a backend whose ranks are not CPUBackend's (the GPUs, kernels/cuda)
// reports, in the same form.
func ResultOf(s kernels.Shape, reps []Report) kernels.StepResult { return resultOf(s, reps) }

// resultOf is the whole step from every rank's report, in rank order:
// rows per expert over all ranks and each rank's phases and traffic.
func resultOf(s kernels.Shape, reps []Report) kernels.StepResult {
	res := kernels.StepResult{Rows: make([]int, s.Experts)}
	for _, r := range reps {
		for e, n := range r.ExpertRows[:min(len(r.ExpertRows), s.Experts)] {
			res.Rows[e] += n
		}
		ph := make([]kernels.NamedPhase, 0, len(PhaseNames))
		for i := range min(len(r.PhasesNS), len(PhaseNames)) {
			if PhaseNames[i] == kernels.PhaseShared && s.SharedWidth() == 0 {
				continue // a layer without shared experts has no such phase
			}
			ph = append(ph, kernels.NamedPhase{Name: PhaseNames[i], Time: time.Duration(r.PhasesNS[i])})
		}
		res.Devices = append(res.Devices, kernels.DeviceStep{Device: r.Rank, Phases: ph,
			RecvTokens: r.RecvTokens, RecvRows: r.RecvRows, SentBytes: r.SentBytes, SavedBytes: r.SavedBytes,
			Rows: r.ExpertRows})
	}
	return res
}

// Close releases the ranks.
func (b *CPUBackend) Close() error {
	b.group = nil
	return nil
}
