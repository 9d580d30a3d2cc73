package metrics

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/stream"
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

func TestServesSamplesAsSeries(t *testing.T) {
	m := New()
	util, power := uint32(87), 432.5
	m.Observe(stream.Sample{Step: 1, Backend: "loop", Rows: []int{30, 10}, StepMS: 2.5, TFLOPS: 300, Imbalance: 1.5,
		Phases: stream.Phases{{Phase: "gemm1", MS: 1}, {Phase: "gemm2", MS: 1.5}}, Memory: []stream.Memory{{HeadroomBytes: 1 << 30}},
		GPU:    &stream.Snapshot{Devices: []stream.Reading{{UtilPct: &util, PowerW: &power}}},
		Events: []stream.Event{{Kind: stream.EventOOM}}})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	addr, err := m.Serve(ctx, "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{`moetop_expert_rows{expert="0"} 30`, `moetop_expert_rows{expert="1"} 10`,
		`moetop_phase_milliseconds_count{backend="loop",phase="gemm2"} 1`, `moetop_tflops 300`,
		`moetop_headroom_bytes 1.073741824e+09`, `moetop_gpu{gpu="0",reading="util_pct"} 87`,
		`moetop_gpu{gpu="0",reading="power_w"} 432.5`, `moetop_oom_events_total 1`, `moetop_steps_total 1`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("no %q in /metrics", want)
		}
	}
}
