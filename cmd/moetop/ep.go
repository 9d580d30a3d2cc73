package main

import (
	"errors"
	"flag"
	"fmt"
	"os"
	"time"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/profiler"
	"github.com/moetop/moetop/stream"
)

// epFlags are the expert-parallel flags of the live run.
type epFlags struct {
	ranks     int
	placement string
	timeout   time.Duration
}

func (f *epFlags) register(fs *flag.FlagSet) {
	fs.IntVar(&f.ranks, "ep", 0, "run the layer expert-parallel over N ranks, each holding --tokens tokens (0: off)")
	fs.StringVar(&f.placement, "placement", "", "with --ep: JSON `FILE` of expert → [ranks] (replicas allowed; default: contiguous blocks)")
	fs.DurationVar(&f.timeout, "ep-timeout", 30*time.Second, "with --ep: how long a rank waits for the others before the run ends")
}

// check validates the flags against each other before anything is opened.
func (f *epFlags) check() error {
	switch {
	case f.ranks < 0:
		return usagef("invalid --ep %d; want 0 (off) or the number of ranks", f.ranks)
	case f.ranks == 0 && f.placement != "":
		return usagef("--placement needs --ep N")
	case f.timeout <= 0:
		return usagef("invalid --ep-timeout %s; want a positive duration such as 30s", f.timeout)
	}
	return nil
}

// backend opens the expert-parallel layer. Its ranks run the CPU
// reference over an in-process transport; over GPUs (NCCL) expert
// parallelism is not built yet, and a run that asks for a GPU backend is
// told so rather than silently moved to the CPU.
func (f *epFlags) backend(name string, cfg profiler.Config) (kernels.Backend, string, error) {
	if ref, _ := kernels.Reference(); name != ref.Name && name != "auto" {
		return nil, "", usagef("--ep runs on the CPU reference for now (expert parallelism over GPUs through NCCL is not built yet); use --backend %s", ref.Name)
	}
	if f.ranks > cfg.Experts {
		return nil, "", usagef("invalid --ep %d; want at most one rank per expert (%d experts)", f.ranks, cfg.Experts)
	}
	b := &ep.CPUBackend{Ranks: f.ranks, Timeout: f.timeout}
	if f.placement != "" {
		p, err := ep.ReadPlacement(f.placement, cfg.Experts, f.ranks)
		if errors.Is(err, ep.ErrBadPlacement) || errors.Is(err, os.ErrNotExist) {
			return nil, "", usagef("%v", err)
		}
		if err != nil {
			return nil, "", err
		}
		b.Placement = p
	}
	return b, fmt.Sprintf("expert-parallel over %d ranks on the CPU reference", f.ranks), nil
}

// describe records the run's ranks and placement in the header, so that a
// recording can be rebalanced later (moetop placement).
func (f *epFlags) describe(h *stream.Header, be kernels.Backend) {
	b, ok := be.(*ep.CPUBackend)
	if !ok {
		return
	}
	h.Ranks = b.Ranks
	if p := b.Placement; p != nil {
		h.Placement = make([][]int, p.Experts())
		for e := range h.Placement {
			h.Placement[e] = append([]int(nil), p.Replicas(e)...)
		}
	}
}
