package bench

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/csv"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/profiler"
)

// peerEPKeys are the keys of a result of shared/peer/torch_ep_peer.py's
// run_shape, which scripts/compare_ep.py reads from both.
var peerEPKeys = []string{"shape", "tokens_per_rank", "hidden", "ffn", "experts", "topk", "dist", "world", "gpu", "counts",
	"recv_rows", "dispatch_ms", "gemm_ms", "wait_ms", "combine_ms", "step_ms", "dispatch_gbps", "combine_gbps", "gemm_tflops"}

// steady is a runner whose every rank takes the same times each step:
// dispatch d, gemm g, wait w, combine c (ms), rank r's gemm scaled by
// 1 + r/10.
func steady(d, g, w, c float64, calls *int) EPRunner {
	return func(_ context.Context, x *ep.Exchange, warmup, reps int) ([][]ep.XTimes, error) {
		*calls++
		out := make([][]ep.XTimes, x.Ranks)
		for r := range out {
			for range reps {
				out[r] = append(out[r], ep.XTimes{time.Duration(d * 1e6), time.Duration(g * (1 + float64(r)/10) * 1e6),
					time.Duration(w * 1e6), time.Duration(c * 1e6)})
			}
		}
		return out, nil
	}
}

func TestRunEPReportsThePeersFigures(t *testing.T) {
	calls := 0
	c := Case{Name: "mixtral", Tokens: 8192, Hidden: 4096, FFN: 14336, Experts: 8, TopK: 2}
	o := EPOptions{Ranks: 4, Dists: []string{"uniform", "zipf:1.2"}, DType: kernels.BF16, Reps: 5, Warmup: 1,
		Run: steady(2, 10, 1, 3, &calls), Backend: "loop", Device: "GPU", AllToAllGBps: 100, AllToAllBytes: 256 << 20}
	rs, err := RunEP(context.Background(), []Case{c}, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != 2 || calls != 2 {
		t.Fatalf("%d results from %d runs, want 2 and 2", len(rs), calls)
	}
	for _, r := range rs {
		d, _ := profiler.ParseRouting(r.Dist, 8, 2)
		counts, _ := profiler.CappedCounts(d, 8192, 2)
		if r.Status != StatusOK || !slices.Equal(r.Counts, counts) || r.World != 4 || r.GPU != "GPU" {
			t.Fatalf("%+v", r)
		}
		// Rank r owns experts 2r and 2r+1 and gets their rows from all 4.
		var recv []int
		maxRemote := int64(0)
		for rk := range 4 {
			block := counts[2*rk] + counts[2*rk+1]
			recv = append(recv, 4*block)
			maxRemote = max(maxRemote, int64(16384-block)*4096*2)
		}
		if !slices.Equal(r.RecvRows, recv) || r.RemoteBytes != maxRemote {
			t.Errorf("%s: recv rows %v, remote bytes %d; want %v and %d", r.Dist, r.RecvRows, r.RemoteBytes, recv, maxRemote)
		}
		near := func(a, b float64) bool { return math.Abs(a-b) <= 1e-9*math.Abs(b) }
		// The slowest rank's gemm is rank 3's, 1.3×; the step its sum.
		if !near(r.GEMMMS, 13) || !near(r.StepMS, 19) || !near(r.DispatchMS, 2) || !near(r.CombineMS, 3) {
			t.Errorf("%s: gemm %v step %v dispatch %v combine %v", r.Dist, r.GEMMMS, r.StepMS, r.DispatchMS, r.CombineMS)
		}
		if !near(r.DispatchGBps, float64(maxRemote)/2/1e6) || !near(r.DispatchPctAllToAll, r.DispatchGBps) ||
			!near(r.CombinePctAllToAll, r.CombineGBps) {
			t.Errorf("%s: dispatch %v GB/s, %v%% and %v%% of 100 GB/s", r.Dist, r.DispatchGBps, r.DispatchPctAllToAll, r.CombinePctAllToAll)
		}
		if want := 4 * float64(slices.Max(recv)) * 4096 * 14336 / 13 / 1e9; !near(r.GEMMTFLOPS, want) {
			t.Errorf("%s: %v TFLOP/s, want %v", r.Dist, r.GEMMTFLOPS, want)
		}
	}
	// zipf puts the hot experts on rank 0: it receives most.
	if z := rs[1].RecvRows; z[0] <= z[3] {
		t.Errorf("zipf:1.2 recv rows %v", z)
	}
}

func TestRunEPKeepsGoingPastAFailedCase(t *testing.T) {
	c := Case{Name: "x", Tokens: 64, Hidden: 16, FFN: 32, Experts: 8, TopK: 2}
	gated := c
	gated.Name, gated.Act = "gated", "swiglu"
	odd := c
	odd.Name, odd.Experts = "odd", 6
	n := 0
	o := EPOptions{Ranks: 4, Dists: []string{"uniform"}, DType: kernels.BF16, Reps: 1,
		Run: func(ctx context.Context, x *ep.Exchange, warmup, reps int) ([][]ep.XTimes, error) {
			n++
			if n == 1 {
				return nil, fmt.Errorf("rank 2: %w", kernels.ErrOutOfMemory)
			}
			return nil, errors.New("boom")
		}}
	rs, err := RunEP(context.Background(), []Case{c, gated, odd, c}, o)
	if err != nil {
		t.Fatal(err)
	}
	want := []struct{ status, says string }{{StatusOOM, "out of memory"}, {StatusError, "gelu"},
		{StatusError, "do not split"}, {StatusError, "boom"}}
	for i, w := range want {
		if rs[i].Status != w.status || !strings.Contains(rs[i].Error, w.says) {
			t.Errorf("result %d: %s %q, want %s saying %q", i, rs[i].Status, rs[i].Error, w.status, w.says)
		}
	}
	if n != 2 {
		t.Errorf("%d runs; the gated and odd cases should not have run", n)
	}
}

// The CPU ranks end to end, and the JSON has every key the peer writes.
func TestRunEPOnTheCPURanksGivesThePeersKeys(t *testing.T) {
	c := Case{Name: "small", Tokens: 32, Hidden: 16, FFN: 32, Experts: 8, TopK: 2}
	o := EPOptions{Ranks: 2, Dists: []string{"zipf:1.2"}, DType: kernels.FP32, Reps: 3, Warmup: 1, Backend: "cpu",
		Run: func(ctx context.Context, x *ep.Exchange, warmup, reps int) ([][]ep.XTimes, error) {
			return ep.RunExchangeCPU(ctx, x, warmup, reps, 10*time.Second)
		}}
	rs, err := RunEP(context.Background(), []Case{c}, o)
	if err != nil {
		t.Fatal(err)
	}
	if rs[0].Status != StatusOK || !(rs[0].StepMS > 0) || !(rs[0].DispatchGBps > 0) || rs[0].DType != "fp32" {
		t.Fatalf("%+v", rs[0])
	}
	// fp32 on the CPU: 4 bytes an element.
	if want := int64(64-rs[0].RecvRows[1]/2) * 16 * 4; rs[0].RemoteBytes != want {
		t.Errorf("remote bytes %d, want %d", rs[0].RemoteBytes, want)
	}
	var buf bytes.Buffer
	if err := WriteEP(&buf, "json", rs); err != nil {
		t.Fatal(err)
	}
	var raw []map[string]any
	if err := json.Unmarshal(buf.Bytes(), &raw); err != nil {
		t.Fatal(err)
	}
	for _, k := range append(peerEPKeys, "case", "dtype", "backend", "status", "reps", "remote_bytes") {
		if _, ok := raw[0][k]; !ok {
			t.Errorf("no %q in %s", k, buf.String())
		}
	}
}

// moetop's counts for the EP cases are the EP peer's own (count_rows as
// its run_shape calls it), for every case of ep's fixture.
func TestEPCountsAreTheEPPeers(t *testing.T) {
	f, err := os.Open("../ep/testdata/exchange.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var cases []struct {
		Tokens, Experts, TopK int
		Dist                  string
		Counts                []int
	}
	if err := json.NewDecoder(z).Decode(&cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) < 50 {
		t.Fatalf("only %d cases in the fixture", len(cases))
	}
	for _, c := range cases {
		d, err := profiler.ParseRouting(c.Dist, c.Experts, c.TopK)
		if err != nil {
			t.Fatal(err)
		}
		got, err := profiler.CappedCounts(d, c.Tokens, c.TopK)
		if err != nil || !slices.Equal(got, c.Counts) {
			t.Errorf("%s T=%d E=%d K=%d: %v (%v), the peer's %v", c.Dist, c.Tokens, c.Experts, c.TopK, got, err, c.Counts)
		}
	}
}

func TestWriteEPFormats(t *testing.T) {
	r := EPResult{Shape: "m", Case: Case{Name: "m", Tokens: 8, Hidden: 4, FFN: 4, Experts: 2, TopK: 1}, Dist: "uniform",
		World: 2, Status: StatusOK, StepMS: 1.5, DispatchGBps: 40, CombineGBps: 50, RecvRows: []int{8, 8},
		DispatchPctAllToAll: 40, CombinePctAllToAll: 50, AllToAllGBps: 100, AllToAllBytes: 256 << 20}
	var b bytes.Buffer
	if err := WriteEP(&b, "csv", []EPResult{r}); err != nil {
		t.Fatal(err)
	}
	rows, err := csv.NewReader(&b).ReadAll()
	if err != nil || len(rows) != 2 || len(rows[0]) != len(epColumns) || len(rows[1]) != len(epColumns) {
		t.Fatalf("csv %v %v", rows, err)
	}
	b.Reset()
	if err := WriteEP(&b, "table", []EPResult{r}); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"of_alltoall", "40%/50%", "all-to-all ceiling 100 GB/s over 2 ranks", "256 MiB per rank",
		"algbw × (n−1)/n"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("the table lacks %q:\n%s", want, b.String())
		}
	}
	// Without a ceiling, no column for it.
	r.AllToAllGBps, r.DispatchPctAllToAll, r.CombinePctAllToAll = 0, 0, 0
	b.Reset()
	WriteEP(&b, "md", []EPResult{r})
	if strings.Contains(b.String(), "alltoall") || strings.Contains(b.String(), "all-to-all") {
		t.Errorf("a ceiling that was not measured:\n%s", b.String())
	}
	if err := WriteEP(&b, "xml", nil); err == nil {
		t.Error("xml")
	}
}

// scripts/compare_ep.py reads moetop's JSON as WriteEP writes it and the
// peer's, pools rounds, and marks exactly the figures off target.
func TestCompareEPMarksTheMisses(t *testing.T) {
	python, err := exec.LookPath("python3")
	if err != nil {
		t.Skip("no python3 to run scripts/compare_ep.py")
	}
	dir := t.TempDir()
	ours := func(shape, dist string, d, c, step float64) EPResult {
		return EPResult{Shape: shape, Dist: dist, World: 2, Case: Case{Name: shape}, Backend: "loop", Status: StatusOK,
			DispatchGBps: d, CombineGBps: c, StepMS: step, GEMMTFLOPS: 500, AllToAllGBps: 321.5}
	}
	write := func(name string, v any) string {
		p := filepath.Join(dir, name)
		b, _ := json.Marshal(v)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	var buf bytes.Buffer
	// Round 1 misses mixtral's dispatch; round 2 makes it (the best round
	// counts). dsv3's combine is off in both, qwen's step is slower.
	if err := WriteEP(&buf, "json", []EPResult{ours("mixtral", "uniform", 90, 100, 5), ours("dsv3", "zipf:1.2", 100, 90, 5),
		ours("qwen", "uniform", 100, 100, 5.5), {Shape: "big", Dist: "uniform", World: 2, Case: Case{Name: "big"},
			Backend: "loop", Status: StatusOOM, Error: "out of memory"}}); err != nil {
		t.Fatal(err)
	}
	r1 := write("r1-moetop.json", json.RawMessage(buf.Bytes()))
	r2 := write("r2-moetop.json", []EPResult{ours("mixtral", "uniform", 96, 100, 6)})
	peer := func(shape, dist string) map[string]any {
		return map[string]any{"shape": shape, "dist": dist, "world": 2, "dispatch_gbps": 100, "combine_gbps": 100,
			"step_ms": 5, "gemm_tflops": 400}
	}
	p := write("peer.json", []map[string]any{peer("mixtral", "uniform"), peer("dsv3", "zipf:1.2"), peer("qwen", "uniform"),
		peer("only-peer", "uniform")})
	out, err := exec.Command(python, "../scripts/compare_ep.py", r1, r2, "--", p).CombinedOutput()
	if err != nil {
		t.Fatalf("compare_ep.py: %v\n%s", err, out)
	}
	lines := map[string]string{}
	for _, l := range strings.Split(string(out), "\n") {
		if f := strings.Fields(l); len(f) > 0 {
			lines[f[0]] = l
		}
	}
	for shape, want := range map[string]string{"mixtral": "", "dsv3": "MISS combine", "qwen": "MISS step",
		"only-peer": "only the peer ran it", "big": "moetop: oom out of memory"} {
		l, ok := lines[shape]
		if !ok || (want == "" && strings.Contains(l, "MISS")) || (want != "" && !strings.Contains(l, want)) {
			t.Errorf("%s: %q, want %q\n%s", shape, l, want, out)
		}
	}
	for _, want := range []string{"0.96x", "3 cases on both sides, 2 off target", "all-to-all ceiling over 2 ranks: 321.5 GB/s"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("no %q in\n%s", want, out)
		}
	}
}

// scripts/gpu-run.sh parses, and names its epbench part in its help and
// its refusal of an unknown part.
func TestGPURunHasTheEPBenchPart(t *testing.T) {
	bash, err := exec.LookPath("bash")
	if err != nil {
		t.Skip("no bash")
	}
	if out, err := exec.Command(bash, "-n", "../scripts/gpu-run.sh").CombinedOutput(); err != nil {
		t.Fatalf("bash -n: %v\n%s", err, out)
	}
	help, _ := exec.Command(bash, "../scripts/gpu-run.sh", "--help").CombinedOutput()
	bad, _ := exec.Command(bash, "../scripts/gpu-run.sh", "nosuchpart").CombinedOutput()
	if !strings.Contains(string(help), "epbench") || !strings.Contains(string(help), "(= check live bench, the default)") ||
		strings.Count(string(help), "\n") > 12 || !strings.Contains(string(bad), "epbench") {
		t.Errorf("help:\n%s\nunknown part:\n%s", help, bad)
	}
}
