// Package metrics exposes the Sample stream to Prometheus at /metrics.
//
// Names follow Prometheus's conventions (and NVIDIA dcgm-exporter's
// quantities, in base units): one metric per quantity, its unit as the
// suffix (_seconds, _bytes, _watts, _celsius, _hertz, _ratio for 0–1),
// _total on counters. docs/metrics.md lists every series.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/moetop/moetop/stream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// durationBuckets span 10 µs to about 42 s in powers of two: a phase of a
// small layer on an H100 up to a large layer's step on the CPU.
var durationBuckets = prometheus.ExponentialBuckets(10e-6, 2, 23)

// Metrics turns samples into Prometheus series.
type Metrics struct {
	Registry *prometheus.Registry

	rows      *prometheus.GaugeVec
	imbalance prometheus.Gauge
	phase     *prometheus.HistogramVec
	step      *prometheus.HistogramVec
	flops     *prometheus.GaugeVec
	gemmFlops *prometheus.GaugeVec
	roofline  *prometheus.GaugeVec
	phaseRate *prometheus.GaugeVec
	ceilFlops *prometheus.GaugeVec
	ceilRead  *prometheus.GaugeVec
	steps     *prometheus.CounterVec
	skipped   *prometheus.CounterVec
	ooms      *prometheus.CounterVec
	headroom  *prometheus.GaugeVec
	own       *prometheus.GaugeVec

	gpuInfo     *prometheus.GaugeVec
	util        *prometheus.GaugeVec
	memUtil     *prometheus.GaugeVec
	memUsed     *prometheus.GaugeVec
	memTotal    *prometheus.GaugeVec
	power       *prometheus.GaugeVec
	powerLimit  *prometheus.GaugeVec
	temperature *prometheus.GaugeVec
	smClock     *prometheus.GaugeVec
	memClock    *prometheus.GaugeVec

	hostMemTotal prometheus.Gauge
	hostMemAvail prometheus.Gauge
	hostCPU      prometheus.Gauge

	all     []prometheus.Collector // every metric above, as registered
	experts int                    // len(rows) of the last sample, to drop stale experts
	// tflops and gbps are the run's roofline ceilings (the header's; 0:
	// not measured).
	tflops, gbps float64
	errs         chan error
}

// New registers moetop's series on a registry of their own, for the run
// h describes: its ceilings place each phase under its roofline.
func New(h stream.Header) *Metrics {
	gpuLabels := []string{"gpu", "uuid"}
	gauge := func(name, help string, labels ...string) *prometheus.GaugeVec {
		return prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: name, Help: help}, labels)
	}
	counter := func(name, help string, labels ...string) *prometheus.CounterVec {
		return prometheus.NewCounterVec(prometheus.CounterOpts{Name: name, Help: help}, labels)
	}
	scalar := func(name, help string) prometheus.Gauge {
		return prometheus.NewGauge(prometheus.GaugeOpts{Name: name, Help: help})
	}
	m := &Metrics{Registry: prometheus.NewRegistry(), errs: make(chan error, 1),
		rows: gauge("moetop_expert_rows", "Rows (token copies) routed to each expert in the newest step.", "expert"),
		imbalance: scalar("moetop_expert_load_imbalance",
			"Most rows of one expert over the mean rows per expert in the newest step (1: even)."),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moetop_phase_duration_seconds",
			Help: "Time of each phase of a step on each device (rank) of the run.", Buckets: durationBuckets},
			[]string{"phase", "device", "backend"}),
		step: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moetop_step_duration_seconds",
			Help: "Wall time of a whole step (on the slowest device).", Buckets: durationBuckets}, []string{"backend"}),
		flops: gauge("moetop_achieved_flops_per_second",
			"Floating-point operations per second of the newest step: router and expert GEMMs over the step's wall time.", "backend"),
		gemmFlops: gauge("moetop_gemm_flops_per_second",
			"Floating-point operations per second of the newest step's expert GEMMs over gemm1+gemm2 time.", "backend"),
		roofline: gauge("moetop_phase_roofline_ratio",
			"The newest step's phase time at the roofline, max(FLOPs / dense FLOP/s, bytes / read bytes/s), over its measured time: 1 is at the ceiling, never more.",
			"phase", "device", "backend"),
		phaseRate: gauge("moetop_phase_bytes_per_second",
			"Least bytes the newest step's phase must move over its time.", "phase", "device", "backend"),
		ceilFlops: gauge("moetop_ceiling_flops_per_second",
			"The roofline's compute ceiling: a dense GEMM pair's FLOP/s, measured at start on the GPU."),
		ceilRead: gauge("moetop_ceiling_read_bytes_per_second",
			"The roofline's memory ceiling: a read-mostly kernel's bytes/s, measured at start on the GPU."),
		steps:   counter("moetop_steps_total", "Steps that completed.", "backend"),
		skipped: counter("moetop_skipped_steps_total", "Steps that did not run (out of memory, or an error event).", "backend"),
		ooms:    counter("moetop_oom_events_total", "Out-of-memory events (each skips a step).", "device"),
		headroom: gauge("moetop_memory_headroom_bytes",
			"Device memory left at the running backend's predicted peak (negative: it does not fit).", "device"),
		own: gauge("moetop_memory_workload_bytes", "Device memory the running backend holds.", "device"),

		gpuInfo: gauge("moetop_gpu_info", "Always 1: names each GPU the sampler reads (gpu is its NVML index).",
			"gpu", "uuid", "name", "pci_bus_id", "driver"),
		util: gauge("moetop_gpu_utilization_ratio",
			"Fraction of the last sample period in which a kernel ran on the GPU (NVML utilization.gpu / 100).", gpuLabels...),
		memUtil: gauge("moetop_gpu_memory_utilization_ratio",
			"Fraction of the last sample period in which device memory was read or written (NVML utilization.memory / 100).", gpuLabels...),
		memUsed:     gauge("moetop_gpu_memory_used_bytes", "Device memory in use, by every process.", gpuLabels...),
		memTotal:    gauge("moetop_gpu_memory_total_bytes", "Device memory in all.", gpuLabels...),
		power:       gauge("moetop_gpu_power_watts", "Power draw of the GPU.", gpuLabels...),
		powerLimit:  gauge("moetop_gpu_power_limit_watts", "Enforced power limit of the GPU.", gpuLabels...),
		temperature: gauge("moetop_gpu_temperature_celsius", "GPU core temperature.", gpuLabels...),
		smClock:     gauge("moetop_gpu_sm_clock_hertz", "Streaming multiprocessor clock.", gpuLabels...),
		memClock:    gauge("moetop_gpu_memory_clock_hertz", "Device memory clock.", gpuLabels...),

		hostMemTotal: scalar("moetop_host_memory_total_bytes", "Host memory in all (read without a GPU, or for the cpu backend)."),
		hostMemAvail: scalar("moetop_host_memory_available_bytes", "Host memory available (MemAvailable)."),
		hostCPU:      scalar("moetop_host_cpu_utilization_ratio", "Fraction of the host's CPU time busy since the previous reading."),
	}
	m.all = []prometheus.Collector{m.rows, m.imbalance, m.phase, m.step, m.flops, m.gemmFlops, m.roofline, m.phaseRate,
		m.ceilFlops, m.ceilRead, m.steps, m.skipped, m.ooms, m.headroom, m.own, m.gpuInfo, m.util, m.memUtil, m.memUsed, m.memTotal, m.power, m.powerLimit,
		m.temperature, m.smClock, m.memClock, m.hostMemTotal, m.hostMemAvail, m.hostCPU}
	m.Registry.MustRegister(m.all...)
	// A ceiling that was not measured has no series rather than a 0.
	m.tflops, m.gbps = finitePositive(h.ComputeCeiling()), finitePositive(h.ReadGBps)
	if m.tflops > 0 {
		m.ceilFlops.WithLabelValues().Set(m.tflops * 1e12)
	}
	if m.gbps > 0 {
		m.ceilRead.WithLabelValues().Set(m.gbps * 1e9)
	}
	return m
}

// finitePositive is v, or 0 where v is no ceiling (negative, NaN, ±Inf).
func finitePositive(v float64) float64 {
	if v > 0 && !math.IsInf(v, 1) {
		return v
	}
	return 0
}

// Observe records one sample; samples come from one goroutine at a time
// (the fan-out).
func (m *Metrics) Observe(s stream.Sample) {
	for _, mem := range s.Memory {
		d := strconv.Itoa(mem.Device)
		m.headroom.WithLabelValues(d).Set(float64(mem.HeadroomBytes))
		m.own.WithLabelValues(d).Set(float64(mem.OwnBytes))
		m.ooms.WithLabelValues(d) // a device with no OOM yet reads 0, not absent
	}
	for _, e := range s.Events {
		if e.Kind == stream.EventOOM {
			m.ooms.WithLabelValues(strconv.Itoa(e.Device)).Inc()
		}
	}
	if s.GPU != nil {
		m.observeSnapshot(s.GPU)
	}
	// A sample may stand for a window of n short steps (--window), with
	// their mean times.
	n := s.StepCount()
	m.steps.WithLabelValues(s.Backend).Add(0)
	m.skipped.WithLabelValues(s.Backend).Add(0)
	if s.Skipped || s.Rows == nil {
		if s.Skipped {
			m.skipped.WithLabelValues(s.Backend).Add(float64(n))
		}
		return
	}
	m.steps.WithLabelValues(s.Backend).Add(float64(n))
	if len(s.Rows) != m.experts {
		m.rows.Reset() // fewer experts after a config change: drop the old ones
		m.experts = len(s.Rows)
	}
	for e, r := range s.Rows {
		m.rows.WithLabelValues(strconv.Itoa(e)).Set(float64(r))
	}
	m.imbalance.Set(s.Imbalance)
	// A window's mean goes in once per step it stands for, so that a
	// histogram's count is the steps run and its sum their time.
	for _, p := range s.Phases {
		l := []string{p.Phase, strconv.Itoa(p.Device), s.Backend}
		h := m.phase.WithLabelValues(l...)
		for range n {
			h.Observe(p.MS / 1e3)
		}
		// The newest step's rate and place; a phase that no longer counts
		// its bytes (or has no time) loses its series rather than keeping
		// a stale value.
		if p.Bytes > 0 && p.MS > 0 {
			m.phaseRate.WithLabelValues(l...).Set(p.Bytes / (p.MS / 1e3))
		} else {
			m.phaseRate.DeleteLabelValues(l...)
		}
		if rf, ok := p.Roofline(m.tflops, m.gbps); ok {
			m.roofline.WithLabelValues(l...).Set(rf.Pct / 100)
		} else {
			m.roofline.DeleteLabelValues(l...)
		}
	}
	h := m.step.WithLabelValues(s.Backend)
	for range n {
		h.Observe(s.StepMS / 1e3)
	}
	m.flops.WithLabelValues(s.Backend).Set(s.TFLOPS * 1e12)
	m.gemmFlops.WithLabelValues(s.Backend).Set(s.GEMMTFLOPS * 1e12)
}

// observeSnapshot sets the readings of each GPU (or of the host). A
// reading the device does not give (nil: "n/a", or lost with the device)
// removes its series rather than leaving a stale value behind.
func (m *Metrics) observeSnapshot(snap *stream.Snapshot) {
	if h := snap.Host; h != nil {
		m.hostMemTotal.Set(float64(h.MemTotalBytes))
		m.hostMemAvail.Set(float64(h.MemAvailableBytes))
		if h.CPUUtilPct != nil {
			m.hostCPU.Set(*h.CPUUtilPct / 100)
		}
	}
	for _, d := range snap.Devices {
		l := []string{strconv.Itoa(d.Index), d.UUID}
		m.gpuInfo.WithLabelValues(l[0], l[1], d.Name, d.PCIBusID, snap.Driver).Set(1)
		set(m.util, l, d.UtilPct, 1.0/100)
		set(m.memUtil, l, d.MemUtilPct, 1.0/100)
		set(m.memUsed, l, d.MemUsedBytes, 1)
		set(m.memTotal, l, d.MemTotalBytes, 1)
		set(m.power, l, d.PowerW, 1)
		set(m.powerLimit, l, d.PowerLimitW, 1)
		set(m.temperature, l, d.TempC, 1)
		set(m.smClock, l, d.SMClockMHz, 1e6)
		set(m.memClock, l, d.MemClockMHz, 1e6)
	}
}

// set writes *v times scale to the series of labels, or deletes the series
// when v is nil.
func set[T uint32 | uint64 | float64](g *prometheus.GaugeVec, labels []string, v *T, scale float64) {
	if v == nil {
		g.DeleteLabelValues(labels...)
		return
	}
	g.WithLabelValues(labels...).Set(float64(*v) * scale)
}

// ListenAddr binds to loopback unless the address names a host:
// ":9100" becomes "127.0.0.1:9100"; "0.0.0.0:9100" stays as given.
func ListenAddr(addr string) (string, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		if !strings.Contains(addr, ":") {
			if _, perr := strconv.Atoi(addr); perr == nil {
				return "127.0.0.1:" + addr, nil
			}
		}
		return "", fmt.Errorf("--listen %q: want HOST:PORT or :PORT", addr)
	}
	if p, err := strconv.Atoi(port); err != nil || p < 0 || p > 65535 {
		return "", fmt.Errorf("--listen %q: bad port", addr)
	}
	if host == "" {
		host = "127.0.0.1"
	}
	return net.JoinHostPort(host, port), nil
}

// Serve serves /metrics on addr until ctx ends. It returns once listening,
// with the address actually bound, or at once with the error of listening
// (a port in use, a host not of this machine). An error that stops the
// server later comes on Errors.
func (m *Metrics) Serve(ctx context.Context, addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		close(m.errs)
		return "", fmt.Errorf("metrics: listen on %s: %w", addr, err)
	}
	m.serve(ctx, ln)
	return ln.Addr().String(), nil
}

// Errors delivers the error that stopped the metrics server before its
// context ended (at most one), and is closed once the server has stopped:
// a caller ranges over it and logs what comes. Only for a Metrics that
// Serve was called on.
func (m *Metrics) Errors() <-chan error { return m.errs }

func (m *Metrics) serve(ctx context.Context, ln net.Listener) {
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	stop := context.AfterFunc(ctx, func() {
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if srv.Shutdown(sctx) != nil {
			srv.Close() // a scrape that would not finish
		}
	})
	go func() {
		defer close(m.errs)
		err := srv.Serve(ln)
		stop()
		if err != nil && !errors.Is(err, http.ErrServerClosed) {
			m.errs <- fmt.Errorf("metrics: serving %s: %w", ln.Addr(), err)
		}
	}()
}
