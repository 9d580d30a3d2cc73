package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"sort"
	"time"

	"golang.org/x/term"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/nvml"
	"github.com/moetop/moetop/profiler"
)

// startSampler polls NVML, or the host for the CPU backend (whose memory
// is host memory) and when NVML or a GPU is missing.
func startSampler(ctx context.Context, backend string, interval time.Duration) *nvml.Poller {
	var src nvml.Source
	if backend == "cpu" {
		src = nvml.NewHost("the cpu backend runs on the host")
	} else {
		src, _ = nvml.Open()
	}
	go func() { <-ctx.Done(); src.Close() }()
	return nvml.Poll(ctx, src, interval)
}

// modelBackends are the backends the memory model predicts for.
func modelBackends(running string) []string {
	if running == "cpu" {
		return []string{"cpu"}
	}
	return kernels.GPUBackends
}

const rootUsage = `moetop: top for Mixture-of-Experts layers.

Runs an MoE layer's forward pass continuously (cuBLAS on a GPU, a float32
reference on the CPU) and shows per-expert load, time per phase, TFLOP/s, GPU
readings and out-of-memory headroom.

Usage:
  moetop [flags]                      live view (the TUI)
  moetop --record FILE [flags]        headless: write a log of samples
  moetop check [flags]                every GPU backend against the CPU reference
  moetop bench [flags]                time the expert GEMMs on fixed loads
  moetop devices [--json]             one NVML reading of every GPU
  moetop help | version

Examples:
  moetop --experts 64 --top-k 8 --routing zipf:1.2
  moetop --record run.jsonl --steps 200 --seqs 16 --seq-len 512 --hidden 1024
`

// liveFlags are the root command's flags.
type liveFlags struct {
	layer    layerFlags
	backend  string
	record   string
	steps    int
	duration time.Duration
	force    bool
	interval time.Duration
}

func runLive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f liveFlags
	fs := flag.NewFlagSet("moetop", flag.ContinueOnError)
	f.layer.register(fs)
	fs.StringVar(&f.backend, "backend", "auto", "auto, cpu, grouped, loop, streams or padded")
	fs.StringVar(&f.record, "record", "", "write samples to `FILE` instead of showing the TUI")
	fs.IntVar(&f.steps, "steps", 0, "stop after N steps (0: no limit)")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this long, e.g. 30s (0: no limit)")
	fs.BoolVar(&f.force, "force", false, "overwrite an existing --record file")
	gpuFlags(fs)
	fs.DurationVar(&f.interval, "interval", 500*time.Millisecond, "GPU sampling interval (at least 50ms)")
	if err := parse(fs, args, rootUsage, stdout); err != nil {
		return err
	}
	if f.steps < 0 {
		return usagef("invalid --steps %d; want 0 (no limit) or more", f.steps)
	}
	if f.interval < nvml.MinInterval {
		return usagef("invalid --interval %s; want at least %s", f.interval, nvml.MinInterval)
	}
	if f.duration < 0 {
		return usagef("invalid --duration %s; want 0 (no limit) or more", f.duration)
	}
	// Validate the layer against the CPU defaults first, so a bad flag is
	// reported before any library is loaded.
	if _, err := f.layer.config(fs, profiler.DefaultCPUConfig()); err != nil {
		return err
	}
	if err := checkBackendName(f.backend); err != nil {
		return err
	}
	noGPU := ""
	if f.backend != "cpu" {
		noGPU = gpuReason()
	}
	base := profiler.DefaultGPUConfig()
	if f.backend == "cpu" || noGPU != "" {
		base = profiler.DefaultCPUConfig()
	}
	cfg, err := f.layer.config(fs, base)
	if err != nil {
		return err
	}
	be, reason, err := chooseBackend(ctx, f.backend, cfg, noGPU, stderr)
	if err != nil {
		return err
	}
	if f.duration > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	poller := startSampler(ctx, be.Info().Name, f.interval)
	loop := &profiler.Loop{Backend: be, Config: cfg, Sampler: poller, ModelBackends: modelBackends(be.Info().Name)}
	h := header(loop, reason)
	if f.record != "" {
		return record(ctx, loop, f, h, stderr)
	}
	if f.steps > 0 || f.duration > 0 || !isTerminal(stdout) {
		return watch(ctx, loop, f.steps, stdout)
	}
	return view(ctx, loop, h, stdout)
}

// header describes the run for the log and the view.
func header(loop *profiler.Loop, reason string) profiler.Header {
	info := loop.Backend.Info()
	host, _ := os.Hostname()
	h := profiler.Header{Version: version, Host: host, Device: info.Device, Backend: info.Name,
		BackendReason: reason, Config: loop.Config, Start: time.Now()}
	if p, ok := loop.Sampler.(*nvml.Poller); ok {
		snap, _ := p.Latest()
		h.Driver, h.CUDA = snap.Driver, snap.CUDA
	}
	if info.Name != "cpu" {
		if l, err := cuda.Load(cudaOptions.LibDir); err == nil {
			h.CUBLAS = l.CUBLAS
			if h.CUDA == "" {
				h.CUDA = l.Driver
			}
		}
	}
	return h
}

// isTerminal says whether w is a terminal the TUI can draw on.
func isTerminal(w io.Writer) bool {
	f, ok := w.(*os.File)
	return ok && term.IsTerminal(int(f.Fd()))
}

// openLog creates the log file, refusing to overwrite one without --force.
func openLog(path string, force bool) (*os.File, error) {
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	f, err := os.OpenFile(path, flags, 0o644)
	if errors.Is(err, os.ErrExist) {
		return nil, usagef("%s exists; pass --force to overwrite it or choose another --record file", path)
	}
	if err != nil {
		return nil, fmt.Errorf("record: %w", err)
	}
	return f, nil
}

// record runs headless, writing the header and one line per sample, and
// flushing at least every second so a killed run loses at most a second.
func record(ctx context.Context, loop *profiler.Loop, f liveFlags, h profiler.Header, stderr io.Writer) error {
	file, err := openLog(f.record, f.force)
	if err != nil {
		loop.Backend.Close()
		return err
	}
	defer file.Close()
	lw := profiler.NewLogWriter(file)
	info := loop.Backend.Info()
	start := h.Start
	if err := lw.WriteHeader(h); err != nil {
		return err
	}
	samples := make(chan profiler.Sample, 16)
	runErr := make(chan error, 1)
	go func() { runErr <- loop.Run(ctx, samples, f.steps) }()

	flush := time.NewTicker(time.Second)
	defer flush.Stop()
	var stepMS, tflops []float64
	n := 0
	for samples != nil {
		select {
		case s, ok := <-samples:
			if !ok {
				samples = nil
				break
			}
			if err := lw.WriteSample(&s); err != nil {
				return err
			}
			n++
			if !s.Skipped {
				stepMS = append(stepMS, s.StepMS)
				tflops = append(tflops, s.TFLOPS)
			}
		case <-flush.C:
			if err := lw.Flush(); err != nil {
				return err
			}
		}
	}
	err = <-runErr
	if ferr := lw.Flush(); ferr != nil && err == nil {
		err = ferr
	}
	if cerr := file.Close(); cerr != nil && err == nil {
		err = fmt.Errorf("record: %w", cerr)
	}
	fmt.Fprintf(stderr, "moetop: recorded %d steps in %s to %s (%s, %s): step p50 %.3f ms, %.3f TFLOP/s\n",
		n, time.Since(start).Round(time.Millisecond), f.record, info.Name, loop.Config,
		median(stepMS), median(tflops))
	return err
}

// watch prints a line per second: the view where there is no terminal to
// draw on, or when the run is bounded by --steps or --duration.
func watch(ctx context.Context, loop *profiler.Loop, steps int, stdout io.Writer) error {
	samples := make(chan profiler.Sample, 16)
	runErr := make(chan error, 1)
	go func() { runErr <- loop.Run(ctx, samples, steps) }()
	last := time.Time{}
	for s := range samples {
		if time.Since(last) >= time.Second {
			last = time.Now()
			fmt.Fprintf(stdout, "step %d  %.2f ms  %.3f TFLOP/s  imbalance %.2f  rows %v\n",
				s.Step, s.StepMS, s.TFLOPS, s.Imbalance, s.Rows)
		}
	}
	return <-runErr
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	s := append([]float64(nil), v...)
	sort.Float64s(s)
	return s[len(s)/2]
}
