// Package metrics exposes the Sample stream to Prometheus at /metrics.
package metrics

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/moetop/moetop/stream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Metrics turns samples into Prometheus series.
type Metrics struct {
	Registry  *prometheus.Registry
	rows      *prometheus.GaugeVec
	phase     *prometheus.HistogramVec
	step      prometheus.Histogram
	tflops    prometheus.Gauge
	imbalance prometheus.Gauge
	headroom  prometheus.Gauge
	steps     prometheus.Counter
	ooms      prometheus.Counter
	gpu       *prometheus.GaugeVec
}

// New registers moetop's series on a registry of their own.
func New() *Metrics {
	reg := prometheus.NewRegistry()
	buckets := prometheus.ExponentialBuckets(0.01, 2, 18) // 10 µs to ~1.3 s, in ms
	m := &Metrics{Registry: reg,
		rows: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moetop_expert_rows",
			Help: "Rows routed to each expert in the newest step."}, []string{"expert"}),
		phase: prometheus.NewHistogramVec(prometheus.HistogramOpts{Name: "moetop_phase_milliseconds",
			Help: "Time of each phase of a step.", Buckets: buckets}, []string{"phase", "backend"}),
		step: prometheus.NewHistogram(prometheus.HistogramOpts{Name: "moetop_step_milliseconds",
			Help: "Time of a whole step.", Buckets: buckets}),
		tflops: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moetop_tflops",
			Help: "Achieved TFLOP/s of the newest step (router and expert GEMMs)."}),
		imbalance: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moetop_imbalance",
			Help: "Max over mean rows per expert in the newest step."}),
		headroom: prometheus.NewGauge(prometheus.GaugeOpts{Name: "moetop_headroom_bytes",
			Help: "Memory left at the running backend's predicted peak."}),
		steps: prometheus.NewCounter(prometheus.CounterOpts{Name: "moetop_steps_total", Help: "Steps run."}),
		ooms:  prometheus.NewCounter(prometheus.CounterOpts{Name: "moetop_oom_events_total", Help: "Out-of-memory events."}),
		gpu: prometheus.NewGaugeVec(prometheus.GaugeOpts{Name: "moetop_gpu",
			Help: "NVML readings of the GPU (util_pct, mem_util_pct, power_w, power_limit_w, temp_c, sm_clock_mhz, mem_used_bytes)."},
			[]string{"gpu", "reading"}),
	}
	reg.MustRegister(m.rows, m.phase, m.step, m.tflops, m.imbalance, m.headroom, m.steps, m.ooms, m.gpu)
	return m
}

// Observe records one sample.
func (m *Metrics) Observe(s stream.Sample) {
	for _, e := range s.Events {
		if e.Kind == stream.EventOOM {
			m.ooms.Inc()
		}
	}
	if mem := s.Mem(0); mem != nil {
		m.headroom.Set(float64(mem.HeadroomBytes))
	}
	if s.GPU != nil {
		for _, d := range s.GPU.Devices {
			g := strconv.Itoa(d.Index)
			set := func(name string, v *float64) {
				if v != nil {
					m.gpu.WithLabelValues(g, name).Set(*v)
				}
			}
			u := func(p *uint32) *float64 {
				if p == nil {
					return nil
				}
				v := float64(*p)
				return &v
			}
			set("util_pct", u(d.UtilPct))
			set("mem_util_pct", u(d.MemUtilPct))
			set("power_w", d.PowerW)
			set("power_limit_w", d.PowerLimitW)
			set("temp_c", u(d.TempC))
			set("sm_clock_mhz", u(d.SMClockMHz))
			if d.MemUsedBytes != nil {
				v := float64(*d.MemUsedBytes)
				set("mem_used_bytes", &v)
			}
		}
	}
	if s.Skipped || s.Rows == nil {
		return
	}
	m.steps.Inc()
	for e, r := range s.Rows {
		m.rows.WithLabelValues(strconv.Itoa(e)).Set(float64(r))
	}
	for _, p := range s.Phases {
		if p.Device == 0 {
			m.phase.WithLabelValues(p.Phase, s.Backend).Observe(p.MS)
		}
	}
	m.step.Observe(s.StepMS)
	m.tflops.Set(s.TFLOPS)
	m.imbalance.Set(s.Imbalance)
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

// Serve serves /metrics on addr until ctx ends. It returns once listening
// (or failing to), with the address actually bound.
func (m *Metrics) Serve(ctx context.Context, addr string) (string, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", fmt.Errorf("metrics: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			_ = err // the listener is gone; the run goes on without metrics
		}
	}()
	return ln.Addr().String(), nil
}
