package main

import (
	"errors"
	"fmt"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/profiler"
)

// runsOnHost says whether a backend's memory is the host's.
func runsOnHost(backend string) bool { return !onGPU(backend) }

// room is the memory a backend may use where it runs.
type room struct {
	where string // "the host", "GPU 0"
	free  uint64 // free (available) there now
	spare uint64 // of free, kept back
}

func (r room) usable() uint64 { return r.free - min(r.spare, r.free) }

// roomFor reads what is free where backend runs: the host's available
// memory less a spare for the CPU backend, the device's free memory for a
// GPU one (its plan counts everything it allocates, cuBLAS's own included).
func roomFor(backend string) (room, error) {
	if runsOnHost(backend) {
		avail, err := hostMemAvailable()
		return room{where: "the host", free: avail, spare: hostSpare(avail)}, err
	}
	d, err := cuda.OpenDevice(cudaOptions.LibDir, cudaOptions.Device)
	if err != nil {
		return room{}, err
	}
	defer d.Close()
	free, _, err := d.MemInfo()
	return room{where: fmt.Sprintf("GPU %d", cudaOptions.Device), free: free}, err
}

// checkFit asks the memory model, before anything is prepared, whether the
// layer fits where the backend runs, and refuses one that does not as bad
// input (exit code 2): a layer the host cannot hold would otherwise be
// prepared for minutes and swap, or be killed. When the memory cannot be
// read the run goes on, and preparing tells.
//
// ranks > 1 is --ep N with every rank in this process: the process holds
// all ranks' tokens (and each expert's weights once), and the largest
// --tokens it names is each rank's.
func checkFit(backend string, cfg profiler.Config, ranks int) (profiler.Fit, error) {
	r, err := roomFor(backend)
	if err != nil {
		return profiler.Fit{}, nil
	}
	all := cfg
	if ranks > 1 {
		all.Tokens *= ranks
	}
	fit, err := profiler.PlanFit(backend, all, r.usable())
	if err != nil {
		return profiler.Fit{}, nil
	}
	if !fit.Fits() {
		msg := doesNotFit(fit, r)
		if ranks > 1 {
			fit.MaxTokens /= ranks
			msg = fmt.Sprintf("%d expert-parallel ranks of --tokens %d in this process: %s", ranks, cfg.Tokens, doesNotFit(fit, r))
		}
		return fit, usageError{msg}
	}
	if runsOnHost(backend) {
		limitHeapToHost(r.free)
	}
	return fit, nil
}

// doesNotFit is the refusal: what the layer needs, what there is, and the
// largest --tokens that fits.
func doesNotFit(f profiler.Fit, r room) string {
	spare := ""
	if r.spare > 0 {
		spare = fmt.Sprintf(", of which %s is kept spare", gibs(r.spare))
	}
	return fmt.Sprintf("the %s backend needs %s for %s, and %s has %s available%s; %s",
		f.Backend, gibs(f.Need), f.Config, r.where, gibs(r.free), spare, largest(f))
}

// largest names the largest --tokens the memory model says fits.
func largest(f profiler.Fit) string {
	if f.MaxTokens < 1 {
		return "no --tokens fits: lower --experts, --hidden or --ffn"
	}
	return fmt.Sprintf("at most --tokens %d fits", f.MaxTokens)
}

// prepareFailed turns a failed Prepare into what the user should do: an
// allocation that failed although the model said it fits is still an
// input to change (exit code 2).
func prepareFailed(err error, f profiler.Fit) error {
	if !errors.Is(err, kernels.ErrOutOfMemory) {
		return err
	}
	if f.Backend == "" {
		return usagef("%s; try fewer --tokens", oneLine(err.Error()))
	}
	return usagef("%s, although the memory model expected it to fit (%s of %s usable); try fewer --tokens",
		oneLine(err.Error()), gibs(f.Need), gibs(f.Avail))
}

func gibs(b uint64) string {
	if b >= 1<<40 {
		return fmt.Sprintf("%.1f TiB", float64(b)/(1<<40))
	}
	return fmt.Sprintf("%.1f GiB", float64(b)/(1<<30))
}
