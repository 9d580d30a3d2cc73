package main

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"

	"github.com/moetop/moetop/bench"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/profiler"
	"github.com/moetop/moetop/stream"
	"github.com/moetop/moetop/tui"
)

// A backend registered here, from a test file and nowhere else, must show
// up in everything that lists backends. It runs on the host (the CPU
// reference under another name), so that it runs here without a GPU.
const (
	fakeName = "fake"
	fakeDoc  = "a backend a test registered"
)

// fakeScratch sets the fake's plan apart from the CPU's.
const fakeScratch = 7 << 20

func init() {
	kernels.Register(kernels.Registration{
		Name:  fakeName,
		Doc:   fakeDoc,
		Order: 150,
		Plan: func(s kernels.Shape, _ []int) ([]kernels.Buffer, error) {
			b := append(kernels.CommonBuffers(s, 4), kernels.DenseRows(s, 4)...)
			return append(b, kernels.Buffer{ID: kernels.BufWorkspace, Name: "scratch", Kind: kernels.KindWorkspace, Bytes: fakeScratch}), nil
		},
		New: func(o kernels.Options) (kernels.Backend, error) { return fakeBackend{kernels.NewCPU()}, nil },
	})
}

type fakeBackend struct{ *kernels.CPU }

func (f fakeBackend) Info() kernels.Info {
	i := f.CPU.Info()
	i.Name = fakeName
	return i
}

// noGPU makes this machine one without a GPU for the test, whatever it
// has, so that auto and bench pick among the host backends.
func noGPU(t *testing.T) {
	old := probeGPU
	probeGPU = func() kernels.Caps { return kernels.Caps{NoGPU: "no CUDA device: a test says so"} }
	t.Cleanup(func() { probeGPU = old })
}

var tiny = []string{"--tokens", "16", "--hidden", "8", "--ffn", "16", "--experts", "4", "--top-k", "2"}

func TestARegisteredBackendIsListedEverywhere(t *testing.T) {
	noGPU(t)
	t.Run("the --backend help lists it with its line", func(t *testing.T) {
		code, out, _ := runCLI(t, "--help")
		if code != 0 || !regexp.MustCompile(`\n\s+`+fakeName+` +`+fakeDoc).MatchString(out) {
			t.Errorf("--help (exit %d) has no %q line:\n%s", code, fakeName, out)
		}
		if code, _, stderr := runCLI(t, append([]string{"--backend", fakeName, "--steps", "1"}, tiny...)...); code != 0 {
			t.Errorf("--backend %s: exit %d, %s", fakeName, code, stderr)
		}
	})
	t.Run("auto calibrates it among the candidates", func(t *testing.T) {
		code, _, stderr := runCLI(t, append([]string{"--steps", "2"}, tiny...)...)
		if code != 0 || !strings.Contains(stderr, "calibrating cpu, "+fakeName) || !strings.Contains(stderr, "auto picked") {
			t.Errorf("auto: exit %d, stderr %q", code, stderr)
		}
	})
	t.Run("check lists it and checks it against the reference", func(t *testing.T) {
		if _, out, _ := runCLI(t, "check", "--help"); !strings.Contains(out, fakeName) {
			t.Errorf("check --help has no %q in its default list:\n%s", fakeName, out)
		}
		// The default list: the GPU backends are skipped here, the fake runs.
		code, out, stderr := runCLI(t, "check", "--cases", "1", "--dtypes", "fp32", "--seed", "3")
		if code != 0 || !strings.Contains(out, "\n"+fakeName+" ") || !strings.Contains(out, "1 passed, 0 failed") {
			t.Errorf("check: exit %d, %s\n%s", code, stderr, out)
		}
	})
	t.Run("bench times it by default without a GPU", func(t *testing.T) {
		if _, out, _ := runCLI(t, "bench", "--help"); !strings.Contains(out, fakeName) {
			t.Errorf("bench --help has no %q:\n%s", fakeName, out)
		}
		code, out, stderr := runCLI(t, "bench", "--shape", "tiny:16:8:16:4:2", "--dist", "uniform", "--reps", "1",
			"--warmup", "0", "--format", "json")
		var rs []bench.Result
		if err := json.Unmarshal([]byte(out), &rs); code != 0 || err != nil {
			t.Fatalf("bench: exit %d, %v, %s", code, err, stderr)
		}
		found := false
		for _, r := range rs {
			if r.Backend == fakeName {
				found = r.Status == bench.StatusOK
			}
		}
		if !found {
			t.Errorf("no ok result for %s in %+v", fakeName, rs)
		}
	})
	cfg := profiler.Config{Tokens: 16, Hidden: 8, FFN: 16, Experts: 4, TopK: 2, DType: kernels.FP32, Routing: "uniform"}
	counts := []int{8, 8, 8, 8}
	m := profiler.Model(cfg, counts, "cpu", kernels.Caps{}, 1<<30, 2<<30)
	t.Run("the memory model predicts for it", func(t *testing.T) {
		plan, _ := kernels.Plan(fakeName, cfg.Shape(), counts)
		for _, b := range m.Backends {
			if b.Backend == fakeName {
				if want := kernels.Total(plan); b.PeakBytes != want || want < fakeScratch {
					t.Errorf("predicted peak %d, want its plan's %d", b.PeakBytes, want)
				}
				return
			}
		}
		t.Errorf("no prediction for %s in %+v", fakeName, m.Backends)
	})
	t.Run("the memory panel shows the prediction", func(t *testing.T) {
		src := &liveSource{header: stream.Header{Backend: "cpu", Config: cfg.Layer()}, samples: make(chan stream.Sample, 1)}
		src.samples <- stream.Sample{Time: time.Now(), Backend: "cpu", Config: cfg.Layer(), Rows: counts, Memory: []stream.Memory{m}}
		close(src.samples)
		var v tea.Model = tui.New(src, nil)
		v, _ = v.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
		for deadline := time.Now().Add(5 * time.Second); !tui.HasData(v) && time.Now().Before(deadline); {
			v, _ = v.Update(tui.Tick())
			time.Sleep(time.Millisecond)
		}
		var row string
		for _, l := range strings.Split(v.View(), "\n") {
			if i := strings.Index(l, fakeName+" "); i >= 0 {
				row = l[i:]
			}
		}
		if !strings.Contains(row, "7.") || !strings.Contains(row, "fits") {
			t.Errorf("memory panel row %q: want %s's peak (7.x MiB) and that it fits:\n%s", row, fakeName, v.View())
		}
	})
	t.Run("the live view's backend key goes to it", func(t *testing.T) {
		backends := cycle("cpu", kernels.Caps{}, cfg)
		live, changes := profiler.NewLive(cfg, "cpu", backends, openBackend)
		msg, err := live.NextBackend()
		if err != nil || msg != "switching to "+fakeName {
			t.Fatalf("next backend from cpu over %v: %q, %v", backends, msg, err)
		}
		ch := <-changes
		if ch.Backend == nil || ch.Backend.Info().Name != fakeName {
			t.Errorf("queued %+v", ch)
		}
		ch.Backend.Close()
	})
}
