package main

import (
	"context"
	"fmt"
	"io"
	"strings"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/profiler"
)

// Every backend comes from the registry (kernels.Register, one file per
// backend); "auto" is the only name spelled here, and it is not a backend.

// probeGPU says what the GPU of --device looks like, or why there is none.
// Tests replace it.
var probeGPU = func() kernels.Caps { return cuda.Probe(cudaOptions.LibDir, cudaOptions.Device) }

// backendHelp is --backend's help: auto, then each backend with its line.
func backendHelp() string {
	var b strings.Builder
	b.WriteString("auto (time the backends that can run here on the layer, keep the fastest), or one of:")
	regs := kernels.All()
	w := 0
	for _, r := range regs {
		w = max(w, len(r.Name))
	}
	for _, r := range regs {
		fmt.Fprintf(&b, "\n  %-*s  %s", w, r.Name, r.Doc)
	}
	return b.String()
}

// lookupBackend validates --backend: auto (ok false) or a registered one.
func lookupBackend(name string) (r kernels.Registration, ok bool, err error) {
	if name == "auto" {
		return r, false, nil
	}
	if r, ok = kernels.Lookup(name); !ok {
		return r, false, usagef("invalid --backend %q; want auto or one of %s", name, strings.Join(kernels.Names(), ", "))
	}
	return r, true, nil
}

// backendOptions are the options a backend opens with: the GPU flags, and
// host memory for those that allocate on the host.
func backendOptions() kernels.Options {
	o := cudaOptions
	o.MemAvailable = hostMemAvailable
	return o
}

// openBackend opens a registered backend by name.
func openBackend(name string) (kernels.Backend, error) {
	return kernels.Open(name, backendOptions())
}

// openWithoutGraphs opens a backend that issues every GEMM from the host,
// as the live loop effectively runs: its router's counts change every
// step, so a replayed graph of one fixed load would flatter the backends
// that replay graphs in a calibration or a reference measured on fixed
// loads.
func openWithoutGraphs(name string) (kernels.Backend, error) {
	o := backendOptions()
	o.NoGraphs = true
	return kernels.Open(name, o)
}

// chooseBackend opens --backend, resolving auto: the candidates the
// registry gives for this machine and layer (GPU backends with a GPU, the
// others without) that pass their capability check, each refusal said on
// stderr; one candidate is taken as is, several are timed on the layer and
// the fastest is kept. why goes into the header.
func chooseBackend(ctx context.Context, name string, cfg profiler.Config, caps kernels.Caps, stderr io.Writer) (b kernels.Backend, why string, err error) {
	reg, named, err := lookupBackend(name)
	if err != nil {
		return nil, "", err
	}
	if named {
		// A backend this machine cannot run is an input to change (exit 2).
		if err := reg.Check(caps, cfg.Shape()); err != nil {
			if reg.NeedsGPU && !caps.GPU {
				return nil, "", usagef("%v (use --backend %s)", err, strings.Join(kernels.HostNames(), " or "))
			}
			return nil, "", usagef("%v", err)
		}
		if b, err = openBackend(name); err != nil {
			return nil, "", fmt.Errorf("backend %s: %w", name, err)
		}
		return b, "", nil
	}
	cands, refused := kernels.Candidates(caps, cfg.Shape())
	for _, r := range refused {
		fmt.Fprintf(stderr, "moetop: auto skips %s\n", oneLine(r.Err.Error()))
	}
	prefix := ""
	if !caps.GPU {
		prefix, why = caps.NoGPU+"; ", "no GPU: "+caps.NoGPU
	}
	switch len(cands) {
	case 0:
		return nil, "", fmt.Errorf("auto: no backend can run %s here", cfg)
	case 1:
		name = cands[0]
		fmt.Fprintf(stderr, "moetop: %susing the %s backend\n", prefix, name)
	default:
		fmt.Fprintf(stderr, "moetop: %scalibrating %s on %s ...\n", prefix, strings.Join(cands, ", "), cfg)
		cal, err := profiler.Calibrate(ctx, cfg, cands, openWithoutGraphs, 5)
		if err != nil {
			return nil, "", err
		}
		why = strings.TrimPrefix(why+"; "+cal.Reason(), "; ")
		fmt.Fprintf(stderr, "moetop: %s\n", cal.Reason())
		name = cal.Best
	}
	if b, err = openBackend(name); err != nil {
		return nil, "", fmt.Errorf("backend %s: %w", name, err)
	}
	return b, why, nil
}

// onGPU says whether the named backend runs on a GPU.
func onGPU(name string) bool {
	r, ok := kernels.Lookup(name)
	return ok && r.NeedsGPU
}

// cycle is what the live view's "next backend" goes through: the running
// backend's peers that pass their capability check on this machine.
func cycle(running string, caps kernels.Caps, cfg profiler.Config) []string {
	var out []string
	for _, n := range kernels.Peers(running) {
		if r, _ := kernels.Lookup(n); r.Check(caps, cfg.Shape()) == nil {
			out = append(out, n)
		}
	}
	return out
}

// readCeiling measures the run's GPU's read bandwidth (GB/s) over 1 GiB,
// larger than any L2.
func readCeiling() (float64, error) {
	d, err := cuda.OpenDevice(cudaOptions.LibDir, cudaOptions.Device)
	if err != nil {
		return 0, err
	}
	defer d.Close()
	return d.ReadBandwidth(1<<30, 5)
}
