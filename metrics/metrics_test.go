package metrics

import (
	"context"
	"errors"
	"io"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moetop/moetop/stream"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestListenAddrDefaultsToLoopback(t *testing.T) {
	for in, want := range map[string]string{":9100": "127.0.0.1:9100", "9100": "127.0.0.1:9100",
		"0.0.0.0:9100": "0.0.0.0:9100", "[::1]:80": "[::1]:80"} {
		if got, err := ListenAddr(in); err != nil || got != want {
			t.Errorf("ListenAddr(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	for _, bad := range []string{"host", ":99999", "a:b:c"} {
		if _, err := ListenAddr(bad); err == nil {
			t.Errorf("ListenAddr(%q) accepted", bad)
		}
	}
}

func ptr[T any](v T) *T { return &v }

// full is a sample that sets every series: two ranks, a GPU reading of
// each, the host, an OOM on rank 1.
func full() stream.Sample {
	gpu := func(i int) stream.Reading {
		return stream.Reading{Index: i, UUID: "GPU-" + string(rune('a'+i)), Name: "NVIDIA H100 80GB HBM3",
			PCIBusID: "00000000:1B:00.0", MemTotalBytes: ptr(uint64(80 << 30)), MemUsedBytes: ptr(uint64(30 << 30)),
			UtilPct: ptr(uint32(87)), MemUtilPct: ptr(uint32(40)), PowerW: ptr(432.5), PowerLimitW: ptr(700.0),
			TempC: ptr(uint32(51)), SMClockMHz: ptr(uint32(1980)), MemClockMHz: ptr(uint32(2619))}
	}
	return stream.Sample{Step: 1, Backend: "loop", Rows: []int{30, 10}, StepMS: 2.5, TFLOPS: 300, GEMMTFLOPS: 400,
		Imbalance: 1.5,
		Phases: stream.Phases{{Phase: "gemm1", MS: 1, Bytes: 1.5e9, FLOPs: 7e10}, {Phase: "gemm2", MS: 1.5},
			{Phase: "gemm1", Device: 1, MS: 0.5}, {Phase: "dispatch", Device: 1, MS: 0.25}},
		Memory: []stream.Memory{{HeadroomBytes: 1 << 30, OwnBytes: 4 << 30}, {Device: 1, HeadroomBytes: -(1 << 20)}},
		GPU: &stream.Snapshot{Driver: "580.65", Devices: []stream.Reading{gpu(0), gpu(1)},
			Host: &stream.Host{MemTotalBytes: 64 << 30, MemAvailableBytes: 32 << 30, CPUUtilPct: ptr(25.0)}},
		Events: []stream.Event{{Kind: stream.EventOOM, Device: 1}}}
}

// h100 is a run's header with both ceilings: 700 TFLOP/s and 3000 GB/s.
var h100 = stream.Header{DenseGEMMTFLOPS: 700, ReadGBps: 3000}

// exposition is what a scrape of m would read.
func exposition(t *testing.T, m *Metrics) string {
	t.Helper()
	rec := httptest.NewRecorder()
	promhttp.HandlerFor(m.Registry, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	return rec.Body.String()
}

func scrape(t *testing.T, addr string) string {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestServesSamplesAsSeriesInBaseUnits(t *testing.T) {
	m := New(h100)
	m.Observe(full())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := m.Serve(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	got := scrape(t, addr)
	for _, want := range []string{
		`moetop_expert_rows{expert="0"} 30`, `moetop_expert_rows{expert="1"} 10`,
		`moetop_expert_load_imbalance 1.5`,
		`moetop_phase_duration_seconds_sum{backend="loop",device="0",phase="gemm2"} 0.0015`,
		`moetop_phase_duration_seconds_count{backend="loop",device="1",phase="dispatch"} 1`,
		`moetop_step_duration_seconds_sum{backend="loop"} 0.0025`,
		`moetop_achieved_flops_per_second{backend="loop"} 3e+14`,
		`moetop_gemm_flops_per_second{backend="loop"} 4e+14`,
		// 1.5 GB in 1 ms; its floor is 1.5e9 / 3e12 s = 0.5 ms of the 1.
		`moetop_phase_bytes_per_second{backend="loop",device="0",phase="gemm1"} 1.5e+12`,
		`moetop_phase_roofline_ratio{backend="loop",device="0",phase="gemm1"} 0.5`,
		`moetop_ceiling_flops_per_second 7e+14`, `moetop_ceiling_read_bytes_per_second 3e+12`,
		`moetop_steps_total{backend="loop"} 1`, `moetop_skipped_steps_total{backend="loop"} 0`,
		`moetop_oom_events_total{device="0"} 0`, `moetop_oom_events_total{device="1"} 1`,
		`moetop_memory_headroom_bytes{device="0"} 1.073741824e+09`,
		`moetop_memory_headroom_bytes{device="1"} -1.048576e+06`,
		`moetop_memory_workload_bytes{device="0"} 4.294967296e+09`,
		`moetop_gpu_info{driver="580.65",gpu="1",name="NVIDIA H100 80GB HBM3",pci_bus_id="00000000:1B:00.0",uuid="GPU-b"} 1`,
		`moetop_gpu_utilization_ratio{gpu="0",uuid="GPU-a"} 0.87`,
		`moetop_gpu_memory_utilization_ratio{gpu="0",uuid="GPU-a"} 0.4`,
		`moetop_gpu_memory_used_bytes{gpu="1",uuid="GPU-b"} 3.221225472e+10`,
		`moetop_gpu_memory_total_bytes{gpu="1",uuid="GPU-b"} 8.589934592e+10`,
		`moetop_gpu_power_watts{gpu="0",uuid="GPU-a"} 432.5`,
		`moetop_gpu_power_limit_watts{gpu="0",uuid="GPU-a"} 700`,
		`moetop_gpu_temperature_celsius{gpu="0",uuid="GPU-a"} 51`,
		`moetop_gpu_sm_clock_hertz{gpu="0",uuid="GPU-a"} 1.98e+09`,
		`moetop_gpu_memory_clock_hertz{gpu="0",uuid="GPU-a"} 2.619e+09`,
		`moetop_host_memory_total_bytes 6.8719476736e+10`,
		`moetop_host_memory_available_bytes 3.4359738368e+10`,
		`moetop_host_cpu_utilization_ratio 0.25`,
	} {
		if !strings.Contains(got, want+"\n") {
			t.Errorf("no %q in /metrics", want)
		}
	}
	if strings.Contains(got, "milliseconds") || strings.Contains(got, "reading=") {
		t.Error("/metrics still has a series in milliseconds or a reading label mixing units")
	}
}

// families gathers m's metric families: name to type ("counter", "gauge",
// "histogram").
func families(t *testing.T, m *Metrics) map[string]string {
	t.Helper()
	fams, err := m.Registry.Gather()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]string{}
	for _, f := range fams {
		out[f.GetName()] = strings.ToLower(f.GetType().String())
	}
	return out
}

func TestEveryNamePassesPrometheusLint(t *testing.T) {
	m := New(h100)
	m.Observe(full())
	m.Observe(stream.Sample{Backend: "padded", Skipped: true})
	// Only series that exist are gathered, and so linted: every metric
	// must have one here, or the lint would pass by not seeing it.
	if got, want := len(families(t, m)), registered(t); got != want {
		t.Fatalf("the full sample sets %d of the %d metrics; the lint would miss the others", got, want)
	}
	problems, err := testutil.GatherAndLint(m.Registry)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}
}

// registered counts the metrics New registers, set or not.
func registered(t *testing.T) int {
	t.Helper()
	ch := make(chan *prometheus.Desc, 64)
	for _, c := range New(h100).all {
		c.Describe(ch)
	}
	close(ch)
	n := 0
	for range ch {
		n++
	}
	return n
}

// unitSuffix is what a metric name may end in: a base unit, a ratio
// (0–1), or a count (rows, events, steps, a ratio of counts).
var unitSuffix = regexp.MustCompile(`_(seconds|bytes|watts|celsius|hertz|ratio|per_second|total|rows|imbalance|info)$`)

func TestEveryNameEndsInItsUnit(t *testing.T) {
	m := New(h100)
	m.Observe(full())
	for name, typ := range families(t, m) {
		if !strings.HasPrefix(name, "moetop_") {
			t.Errorf("%s: not under moetop_", name)
		}
		if !unitSuffix.MatchString(name) {
			t.Errorf("%s: no unit suffix", name)
		}
		if (typ == "counter") != strings.HasSuffix(name, "_total") {
			t.Errorf("%s: a %s; counters and only counters end in _total", name, typ)
		}
	}
}

func TestMetricsDocListsEveryMetricWithItsType(t *testing.T) {
	doc, err := os.ReadFile("../docs/metrics.md")
	if err != nil {
		t.Fatal(err)
	}
	m := New(h100)
	m.Observe(full())
	m.Observe(stream.Sample{Backend: "padded", Skipped: true})
	documented := map[string]string{}
	row := regexp.MustCompile("(?m)^\\| `(moetop_[a-z_]+)` \\| (counter|gauge|histogram) \\|")
	for _, r := range row.FindAllStringSubmatch(string(doc), -1) {
		documented[r[1]] = r[2]
	}
	fams := families(t, m)
	for name, typ := range fams {
		if documented[name] != typ {
			t.Errorf("docs/metrics.md: %s is %q there, a %s here", name, documented[name], typ)
		}
	}
	for name := range documented {
		if fams[name] == "" {
			t.Errorf("docs/metrics.md lists %s, which moetop does not export", name)
		}
	}
}

func TestObserve(t *testing.T) {
	tests := []struct {
		name  string
		steps []stream.Sample
		check func(t *testing.T, m *Metrics)
	}{
		{"a skipped step counts as skipped, not as a step", []stream.Sample{
			{Backend: "padded", Skipped: true, Events: []stream.Event{{Kind: stream.EventOOM}}}},
			func(t *testing.T, m *Metrics) {
				if v := testutil.ToFloat64(m.skipped.WithLabelValues("padded")); v != 1 {
					t.Errorf("skipped %v, want 1", v)
				}
				if v := testutil.ToFloat64(m.steps.WithLabelValues("padded")); v != 0 {
					t.Errorf("steps %v, want 0", v)
				}
				if v := testutil.ToFloat64(m.ooms.WithLabelValues("0")); v != 1 {
					t.Errorf("OOM events %v, want 1", v)
				}
			}},
		{"a sample of a window of steps counts each step and their whole time", []stream.Sample{
			{Backend: "loop", Rows: []int{1}, Steps: 25, StepMS: 0.04, Phases: stream.Phases{{Phase: "gemm1", MS: 0.02}}}},
			func(t *testing.T, m *Metrics) {
				if v := testutil.ToFloat64(m.steps.WithLabelValues("loop")); v != 25 {
					t.Errorf("steps %v, want 25", v)
				}
				got := exposition(t, m)
				for _, w := range []string{
					`moetop_step_duration_seconds_count{backend="loop"} 25`,
					`moetop_phase_duration_seconds_count{backend="loop",device="0",phase="gemm1"} 25`,
				} {
					if !strings.Contains(got, w+"\n") {
						t.Errorf("no %q in /metrics", w)
					}
				}
				sum := regexp.MustCompile(`moetop_step_duration_seconds_sum\{backend="loop"\} (\S+)`).FindStringSubmatch(got)
				if sum == nil {
					t.Fatal("no step time sum in /metrics")
				}
				if v, err := strconv.ParseFloat(sum[1], 64); err != nil || math.Abs(v-0.001) > 1e-12 {
					t.Errorf("step time sum %s s, want 25 × 40 µs = 0.001", sum[1])
				}
			}},
		{"a phase faster than its floor is at the ceiling, not above", []stream.Sample{
			// 1.5 GB in 0.25 ms is 6 TB/s, twice the read ceiling.
			{Backend: "loop", Rows: []int{1}, Phases: stream.Phases{{Phase: "gemm2", MS: 0.25, Bytes: 1.5e9}}}},
			func(t *testing.T, m *Metrics) {
				if v := testutil.ToFloat64(m.roofline.WithLabelValues("gemm2", "0", "loop")); v != 1 {
					t.Errorf("roofline ratio %v, want 1", v)
				}
				if v := testutil.ToFloat64(m.phaseRate.WithLabelValues("gemm2", "0", "loop")); v != 6e12 {
					t.Errorf("%v bytes/s, want 6e12", v)
				}
			}},
		{"a compute-bound phase is placed by its FLOPs", []stream.Sample{
			// 7e11 FLOPs take 1 ms at 700 TFLOP/s; 16 bytes take nothing.
			{Backend: "loop", Rows: []int{1}, Phases: stream.Phases{{Phase: "gemm1", MS: 4, Bytes: 16, FLOPs: 7e11}}}},
			func(t *testing.T, m *Metrics) {
				if v := testutil.ToFloat64(m.roofline.WithLabelValues("gemm1", "0", "loop")); v != 0.25 {
					t.Errorf("roofline ratio %v, want 0.25", v)
				}
			}},
		{"a phase that stops counting its bytes loses its rate and roofline", []stream.Sample{
			{Backend: "loop", Rows: []int{1}, Phases: stream.Phases{{Phase: "act", MS: 1, Bytes: 1e9}}},
			{Backend: "loop", Rows: []int{1}, Phases: stream.Phases{{Phase: "act", MS: 1}}}},
			func(t *testing.T, m *Metrics) {
				if n := testutil.CollectAndCount(m.roofline) + testutil.CollectAndCount(m.phaseRate); n != 0 {
					t.Errorf("%d stale series", n)
				}
			}},
		{"fewer experts after a change leave no stale expert behind", []stream.Sample{
			{Backend: "loop", Rows: []int{1, 2, 3, 4}}, {Backend: "loop", Rows: []int{5, 6}}},
			func(t *testing.T, m *Metrics) {
				if n := testutil.CollectAndCount(m.rows); n != 2 {
					t.Errorf("%d expert series, want 2", n)
				}
			}},
		{"a reading that turns n/a disappears instead of going stale", []stream.Sample{
			{GPU: &stream.Snapshot{Devices: []stream.Reading{{PowerW: ptr(300.0), TempC: ptr(uint32(40))}}}},
			{GPU: &stream.Snapshot{Devices: []stream.Reading{{TempC: ptr(uint32(41)), Err: "power: GPU is lost"}}}}},
			func(t *testing.T, m *Metrics) {
				if n := testutil.CollectAndCount(m.power); n != 0 {
					t.Errorf("%d power series, want none", n)
				}
				if v := testutil.ToFloat64(m.temperature.WithLabelValues("0", "")); v != 41 {
					t.Errorf("temperature %v, want 41", v)
				}
			}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := New(h100)
			for _, s := range tc.steps {
				m.Observe(s)
			}
			tc.check(t, m)
		})
	}
}

// Without a GPU nothing measured the ceilings: no ceiling series and no
// roofline, rather than zeros that read as a card with no bandwidth; the
// bytes per second are known all the same.
func TestNoCeilingsNoRoofline(t *testing.T) {
	for _, h := range []stream.Header{{}, {DenseGEMMTFLOPS: math.NaN(), ReadGBps: math.Inf(1)}} {
		m := New(h)
		m.Observe(full())
		got := exposition(t, m)
		for _, absent := range []string{"moetop_ceiling_", "moetop_phase_roofline_ratio"} {
			if strings.Contains(got, absent) {
				t.Errorf("header %+v: %s in /metrics", h, absent)
			}
		}
		if !strings.Contains(got, `moetop_phase_bytes_per_second{backend="loop",device="0",phase="gemm1"} 1.5e+12`) {
			t.Errorf("header %+v: no bytes per second", h)
		}
	}
}

func TestServeReturnsAListenErrorAtOnce(t *testing.T) {
	busy, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	m := New(stream.Header{})
	_, err = m.Serve(context.Background(), busy.Addr().String())
	if !errors.Is(err, syscall.EADDRINUSE) {
		t.Fatalf("Serve on a port in use: %v, want EADDRINUSE", err)
	}
	if _, open := <-m.Errors(); open {
		t.Error("Errors is still open after Serve failed")
	}
}

// brokenListener accepts once it is told to fail, then fails for good.
type brokenListener struct {
	net.Listener
	fail chan struct{}
}

var errNIC = errors.New("network interface went away")

func (l brokenListener) Accept() (net.Conn, error) {
	<-l.fail
	return nil, errNIC
}

func TestAServeErrorAfterStartIsReported(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	m := New(stream.Header{})
	bl := brokenListener{Listener: ln, fail: make(chan struct{})}
	m.serve(context.Background(), bl)
	close(bl.fail)
	select {
	case err := <-m.Errors():
		if !errors.Is(err, errNIC) || !strings.Contains(err.Error(), "metrics: serving") {
			t.Errorf("reported %v, want the accept error with context", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a failed server was never reported")
	}
	if _, open := <-m.Errors(); open {
		t.Error("Errors still open after the server stopped")
	}
}

func TestServerStopsQuietlyWhenTheRunEnds(t *testing.T) {
	m := New(stream.Header{})
	ctx, cancel := context.WithCancel(context.Background())
	addr, err := m.Serve(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	scrape(t, addr)
	cancel()
	select {
	case err, open := <-m.Errors():
		if open {
			t.Errorf("an ordinary end reported %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the server did not stop after its context")
	}
	if _, err := net.DialTimeout("tcp", addr, time.Second); err == nil {
		t.Error("still listening after the run ended")
	}
}
