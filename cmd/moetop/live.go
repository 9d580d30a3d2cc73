package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"strings"
	"time"

	"golang.org/x/term"

	"github.com/moetop/moetop/bench"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/metrics"
	"github.com/moetop/moetop/nvml"
	"github.com/moetop/moetop/profiler"
	"github.com/moetop/moetop/recording"
	"github.com/moetop/moetop/stream"
)

const rootUsage = `moetop: top for Mixture-of-Experts layers.

Runs an MoE layer's forward pass continuously (cuBLAS on a GPU, a float32
reference on the CPU) and shows per-expert load, time per phase, TFLOP/s, GPU
readings and out-of-memory headroom.

Usage:
  moetop [flags]                      live view (the TUI)
  moetop --record FILE [flags]        headless: write a log of samples (.zst: compressed)
  moetop --replay FILE                the view over a recorded log
  moetop summary FILE [--json]        what a log holds, in numbers
  moetop export FILE --format csv|perfetto [--out F]
  moetop check [flags]                every GPU backend against the CPU reference
  moetop bench [flags]                time the expert GEMMs on fixed loads
  moetop placement LOG --redundant R  a rebalanced expert placement from a recording of --ep N
  moetop trace import --from F IN OUT routing statistics from SGLang, vLLM, EPLB or FLAME-MoE
  moetop models [--json]              the MoE layers of published models (--model NAME)
  moetop devices [--json]             NVML index, CUDA ordinal and a reading of every GPU
  moetop help [CMD] | version | --version

Examples:
  moetop --experts 64 --top-k 8 --routing zipf:1.2
  moetop --record run.jsonl.zst --duration 10m --listen :9464
  moetop --replay run.jsonl.zst
  moetop --model deepseek-v3 --tokens 128        a published model's layer, decode-sized
  moetop --ep 4 --backend cpu --record ep.jsonl   expert parallel over 4 ranks
  moetop --ep 2 --rank R --coordinator HOST:PORT --backend cpu   one process per rank
`

// liveFlags are the root command's flags.
type liveFlags struct {
	layer    layerFlags
	backend  string
	record   string
	replay   string
	steps    int
	duration time.Duration
	force    bool
	interval time.Duration
	maxSize  string
	listen   string
	window   time.Duration
	ep       epFlags
}

func runLive(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var f liveFlags
	fs := flag.NewFlagSet("moetop", flag.ContinueOnError)
	f.layer.register(fs)
	fs.StringVar(&f.backend, "backend", "auto", backendHelp())
	fs.StringVar(&f.record, "record", "", "write samples to `FILE` instead of showing the TUI (.zst: zstd)")
	fs.StringVar(&f.replay, "replay", "", "show a recorded `FILE` in the TUI")
	fs.IntVar(&f.steps, "steps", 0, "stop after N steps (0: no limit)")
	fs.DurationVar(&f.duration, "duration", 0, "stop after this long, e.g. 30s (0: no limit)")
	fs.BoolVar(&f.force, "force", false, "overwrite an existing --record file")
	fs.StringVar(&f.maxSize, "max-size", "", "with --record: start FILE.1, FILE.2 … after this much written, before compression, e.g. 500MB")
	fs.StringVar(&f.listen, "listen", "", "serve Prometheus /metrics at `ADDR` (:9464 binds 127.0.0.1)")
	gpuFlags(fs)
	f.ep.register(fs)
	fs.DurationVar(&f.window, "window", time.Millisecond, "fold steps shorter than this into one sample with their mean and spread, so decode-sized steps keep the log and view bounded (0: a sample per step)")
	fs.DurationVar(&f.interval, "interval", 500*time.Millisecond, "GPU sampling interval (at least 50ms)")
	if err := parse(fs, args, rootUsage, stdout); err != nil {
		return err
	}
	if f.replay != "" {
		if f.record != "" {
			return usagef("--replay and --record go separately: replay a log, or record a new one")
		}
		return replay(ctx, f.replay, stdout)
	}
	switch {
	case f.steps < 0:
		return usagef("invalid --steps %d; want 0 (no limit) or more", f.steps)
	case f.interval < nvml.MinInterval:
		return usagef("invalid --interval %s; want at least %s", f.interval, nvml.MinInterval)
	case f.window < 0:
		return usagef("invalid --window %s; want 0 (a sample per step) or a duration such as 1ms", f.window)
	case f.duration < 0:
		return usagef("invalid --duration %s; want 0 (no limit) or more", f.duration)
	case f.maxSize != "" && f.record == "":
		return usagef("--max-size needs --record")
	}
	maxBytes, err := parseSize(f.maxSize)
	if err != nil {
		return err
	}
	// A directory, or a file or old part in the way, is said before the
	// run starts, not after it has loaded a backend.
	if err := recording.CheckRecordPath(f.record, maxBytes, f.force); errors.Is(err, recording.ErrExists) {
		return usagef("%v; pass --force to overwrite it or choose another --record file", err)
	} else if err != nil {
		return usagef("%v", err)
	}
	listen := ""
	if f.listen != "" {
		if listen, err = metrics.ListenAddr(f.listen); err != nil {
			return usagef("%v", err)
		}
		// A port in use is the user's to change: say so now, not after
		// minutes of calibration and preparing.
		l, err := net.Listen("tcp", listen)
		if err != nil {
			return usagef("cannot serve metrics at %s: %v; choose another --listen address", listen, errors.Unwrap(err))
		}
		l.Close()
	}
	// Validate the layer against the CPU defaults first, so a bad flag is
	// reported before any library is loaded.
	if _, err := f.layer.config(fs, profiler.DefaultCPUConfig()); err != nil {
		return err
	}
	reg, named, err := lookupBackend(f.backend)
	if err != nil {
		return err
	}
	if err := f.ep.check(fs); err != nil {
		return err
	}
	var caps kernels.Caps // no GPU asked for: a host backend was named
	if !named || reg.NeedsGPU {
		caps = probeGPU()
	}
	base := profiler.DefaultCPUConfig()
	// Ranks on the CPU reference get its small default layer; GPUs, the
	// GPU's, also when --ep runs its ranks on GPUs (opted in).
	if caps.GPU && (f.ep.ranks == 0 || (!(named && !reg.NeedsGPU) && cuda.GPUEPAllowed() == nil)) {
		base = profiler.DefaultGPUConfig()
	}
	cfg, err := f.layer.config(fs, base)
	if err != nil {
		return err
	}
	if f.duration > 0 && !f.ep.headless() { // rank 0 ends a run of one process per rank
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, f.duration)
		defer cancel()
	}
	var be kernels.Backend
	var reason string
	if f.ep.ranks > 0 {
		be, reason, err = f.ep.backend(ctx, f.backend, cfg, stderr)
	} else {
		be, reason, err = chooseBackend(ctx, f.backend, cfg, caps, stderr)
	}
	if err != nil {
		return err
	}
	running := be.Info().Name
	fit, err := checkFit(running, cfg, f.ep.inProcess())
	if err != nil {
		be.Close()
		return err
	}
	poller := startSampler(ctx, running, f.interval)
	defer poller.Close() // NVML shuts down after the sampler's last read
	loop := &profiler.Loop{Backend: be, Config: cfg, Sampler: poller, Caps: caps, MinSampleMS: float64(f.window) / 1e6,
		HeldRanks: f.ep.inProcess()}
	if f.ep.headless() {
		return f.ep.follow(ctx, loop, stderr)
	}
	h := header(loop, reason)
	h.Weights, h.Notes = presetNotes(cfg)
	for _, n := range h.Notes {
		fmt.Fprintf(stderr, "moetop: %s\n", n)
	}
	f.ep.describe(&h, be)
	allToAllCeiling(ctx, &h, be, stderr)
	if dense, ok := kernels.DenseBackend(onGPU(running)); ok {
		// One dense GEMM pair of the same FLOPs: the view's "% of dense".
		// (Per-expert events fall on the first step only, a warm-up.)
		if d, err := profiler.DenseReference(ctx, cfg, dense, openWithoutGraphs, 5); err == nil {
			h.DenseGEMMTFLOPS = d
		} else {
			fmt.Fprintf(stderr, "moetop: no dense reference: %s\n", oneLine(err.Error()))
		}
		// The compute ceiling is a large dense GEMM's rate: a decode-sized
		// layer's own GEMM pair is bound by memory, not by the card.
		peak := cfg
		c := bench.CeilingCase
		peak.Tokens, peak.Hidden, peak.FFN, peak.Experts, peak.TopK = c.Tokens, c.Hidden, c.FFN, c.Experts, c.TopK
		peak.Act, peak.SharedExperts, peak.SharedFFN, peak.Router, peak.Groups, peak.TopKGroups, peak.RoutedScale = kernels.GELU, 0, 0, kernels.Softmax, 0, 0, 0
		if p, err := profiler.DenseReference(ctx, peak, dense, openWithoutGraphs, 5); err == nil {
			h.PeakTFLOPS = p
		} else {
			fmt.Fprintf(stderr, "moetop: no compute ceiling: %s\n", oneLine(err.Error()))
		}
		// The memory ceiling beside it: with both, every phase has a
		// roofline, and a decode step at HBM speed reads as fast, not slow.
		if gbps, err := readCeiling(); err == nil {
			h.ReadGBps = gbps
		} else {
			fmt.Fprintf(stderr, "moetop: no read-bandwidth ceiling: %s\n", oneLine(err.Error()))
		}
	}
	// Prepared before anything is created (a log, a listener), so that a
	// layer that cannot start leaves nothing behind.
	if err := loop.Prepare(ctx); err != nil {
		be.Close()
		if ctx.Err() != nil {
			return nil // stopped while preparing
		}
		return prepareFailed(err, fit)
	}
	var sinks []stream.Sink
	if listen != "" {
		m := metrics.New(h)
		addr, err := m.Serve(ctx, listen)
		if err != nil {
			be.Close()
			return usagef("cannot serve metrics at %s: %v; choose another --listen address", listen, err)
		}
		fmt.Fprintf(stderr, "moetop: serving metrics at http://%s/metrics\n", addr)
		sinks = append(sinks, observer(m.Observe))
		// A server that stops later (its listener closed under it) does
		// not stop the run; say so, once the TUI has given the terminal
		// back when there is one.
		serveErr := make(chan error, 1)
		go func() {
			for err := range m.Errors() {
				select {
				case serveErr <- err:
				default:
				}
			}
		}()
		defer func() {
			select {
			case err := <-serveErr:
				fmt.Fprintf(stderr, "moetop: %v; the run went on without /metrics\n", err)
			default:
			}
		}()
	}
	if f.record != "" {
		return record(ctx, loop, f, maxBytes, h, fit, sinks, stderr)
	}
	if f.steps > 0 || f.duration > 0 || !isTerminal(stdout) {
		return watch(ctx, loop, f.steps, fit, sinks, stdout)
	}
	if f.ep.multi {
		return show(ctx, loop, h, fixedControl{}, sinks, stdout)
	}
	return view(ctx, loop, h, cycle(running, caps, cfg), sinks, stdout)
}

// parseSize reads 500MB, 2GiB, 64k or a plain byte count.
func parseSize(s string) (int64, error) {
	if s == "" {
		return 0, nil
	}
	units := []struct {
		suffix string
		mult   int64
	}{{"gib", 1 << 30}, {"mib", 1 << 20}, {"kib", 1 << 10}, {"gb", 1e9}, {"mb", 1e6}, {"kb", 1e3},
		{"g", 1 << 30}, {"m", 1 << 20}, {"k", 1 << 10}, {"b", 1}}
	l := strings.ToLower(strings.TrimSpace(s))
	mult := int64(1)
	for _, u := range units {
		if strings.HasSuffix(l, u.suffix) {
			l, mult = strings.TrimSpace(strings.TrimSuffix(l, u.suffix)), u.mult
			break
		}
	}
	v, err := strconv.ParseFloat(l, 64)
	if err != nil || v < 1 || v*float64(mult) > 1<<62 {
		return 0, usagef("invalid --max-size %q; want a size such as 500MB or 2GiB", s)
	}
	if v*float64(mult) < 4096 {
		return 0, usagef("invalid --max-size %q; want at least 4KiB", s)
	}
	return int64(v * float64(mult)), nil
}

// startSampler polls NVML, or the host for a backend that runs there (its
// memory is host memory) and when NVML or a GPU is missing. The poller
// closes the source after its last read when ctx ends (closing it here,
// beside the poller's goroutine, shut NVML down under a read: issue 14's
// SIGSEGV).
func startSampler(ctx context.Context, backend string, interval time.Duration) *nvml.Poller {
	var src nvml.Source
	if !onGPU(backend) {
		src = nvml.NewHost("the " + backend + " backend runs on the host")
	} else {
		src, _ = nvml.Open(sampledDevices()...)
	}
	return nvml.Poll(ctx, src, interval)
}

// sampledDevices names the GPU the run uses, so that NVML reads that one (and
// only that one) whatever its NVML index.
func sampledDevices() []nvml.Want {
	ids, err := cuda.DeviceIDs(cudaOptions.LibDir)
	if err != nil || cudaOptions.Device < 0 || cudaOptions.Device >= len(ids) {
		return nil
	}
	id := ids[cudaOptions.Device]
	return []nvml.Want{{CUDA: id.Ordinal, PCIBusID: id.PCIBusID}}
}

// header describes the run for the log and the view.
func header(loop *profiler.Loop, reason string) stream.Header {
	info := loop.Backend.Info()
	host, _ := os.Hostname()
	h := stream.Header{Version: version, Host: host, Device: info.Device, Backend: info.Name,
		BackendReason: reason, Config: loop.Config.Layer(), Start: time.Now()}
	if p, ok := loop.Sampler.(*nvml.Poller); ok {
		snap, _ := p.Latest()
		h.Driver, h.CUDA = snap.Driver, snap.CUDA
		if onGPU(info.Name) && len(snap.Devices) > 0 {
			d := snap.Devices[0] // the sampler reads the run's device only
			h.Devices = []stream.DeviceID{{CUDA: cudaOptions.Device, NVML: d.Index, UUID: d.UUID,
				PCIBusID: d.PCIBusID, Name: d.Name}}
		}
	}
	if onGPU(info.Name) {
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

// drive runs the loop until it ends (steps, ctx, an error) and fans its
// samples out to sinks: the one path from the source to every sink. A
// sink that fails (a full disk) stops the run; what the loop made before
// it stopped still reaches the sinks.
func drive(ctx context.Context, loop *profiler.Loop, steps int, sinks ...stream.Sink) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	samples := make(chan stream.Sample, 64)
	runErr := make(chan error, 1)
	go func() { runErr <- loop.Run(ctx, samples, steps) }()
	sinkErr := stream.FanOut(samples, sinks...)
	cancel()
	for range samples {
		// Run closes samples once it has seen ctx end.
	}
	if err := <-runErr; err != nil {
		return err
	}
	return sinkErr
}

// record runs headless, writing each sample as it comes and flushing at
// least every second, so a run stopped by Ctrl-C or SIGTERM (which cancel
// ctx) ends with a valid log up to the last completed step.
func record(ctx context.Context, loop *profiler.Loop, f liveFlags, maxBytes int64, h stream.Header,
	fit profiler.Fit, sinks []stream.Sink, stderr io.Writer) error {
	rec, err := recording.CreateRecorder(f.record, maxBytes, f.force, h)
	if errors.Is(err, recording.ErrExists) {
		loop.Backend.Close()
		return usagef("%v; pass --force to overwrite it or choose another --record file", err)
	}
	if errors.Is(err, recording.ErrIsDir) {
		loop.Backend.Close()
		return usagef("%v", err)
	}
	if errors.Is(err, os.ErrNotExist) || errors.Is(err, os.ErrPermission) {
		loop.Backend.Close()
		return usagef("cannot create %s: %v; choose a path in a folder you can write", f.record, errors.Unwrap(errors.Unwrap(err)))
	}
	if err != nil {
		loop.Backend.Close()
		return err
	}
	stats := &statsSink{}
	sinks = append(sinks, &recordSink{rec: rec, lastFlush: time.Now()}, stats)
	if isTerminal(stderr) {
		sinks = append(sinks, &throttled{every: 500 * time.Millisecond, print: func(stream.Sample) {
			fmt.Fprintf(stderr, "\r\x1b[Krecording %s: %d steps, %d samples, %s, %s", f.record, stats.steps, rec.Written,
				sizeString(rec.Bytes()), time.Since(h.Start).Round(time.Second))
		}})
		defer fmt.Fprint(stderr, "\r\x1b[K")
	}
	err = drive(ctx, loop, f.steps, sinks...)
	if cerr := rec.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if err := stats.noStep(fit); err != nil {
			return err
		}
	}
	parts := ""
	if rec.Parts() > 1 {
		parts = fmt.Sprintf(" (%d files)", rec.Parts())
	}
	run := fmt.Sprintf("in %s to %s%s (%s, %s)", time.Since(h.Start).Round(time.Millisecond), f.record, parts,
		loop.Backend.Info().Name, loop.Config)
	if stats.steps == 0 && err == nil {
		fmt.Fprintf(stderr, "moetop: recorded no steps %s: stopped before the first step completed\n", run)
	} else if stats.steps > 0 {
		fmt.Fprintf(stderr, "moetop: recorded %d steps%s %s: step p50 %.3f ms, %.3f TFLOP/s\n", stats.steps,
			stats.skippedNote(), run, stats.stepMS.Quantile(0.5), stats.tflops.Quantile(0.5))
	}
	return err
}

func sizeString(b int64) string {
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(b)/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20))
	}
	return fmt.Sprintf("%.1f KiB", float64(b)/(1<<10))
}

// watch prints a line per second: the view where there is no terminal to
// draw on, or when the run is bounded by --steps or --duration.
func watch(ctx context.Context, loop *profiler.Loop, steps int, fit profiler.Fit, sinks []stream.Sink, stdout io.Writer) error {
	stats := &statsSink{}
	if err := drive(ctx, loop, steps, append(sinks, stats, watchLine(stdout))...); err != nil {
		return err
	}
	return stats.noStep(fit)
}
