package main

import (
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moetop/moetop/bench"
)

// The command, made short with one repetition and one distribution:
// it must run without a GPU and give well-formed JSON.
func TestBenchReportQuickOnCPU(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the report grid's quick cases on the CPU (about a minute)")
	}
	out := filepath.Join(t.TempDir(), "bench.json")
	code, _, stderr := runCLI(t, "bench", "--grid", "report", "--quick", "--backends", "cpu", "--format", "json",
		"--out", out, "--reps", "1", "--warmup", "0", "--dist", "uniform")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	b, _ := os.ReadFile(out)
	var rs []bench.Result
	if err := json.Unmarshal(b, &rs); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	var raw []map[string]any
	json.Unmarshal(b, &raw)
	if len(rs) != 4 { // 2 quick cases × (dense + cpu)
		t.Fatalf("%d results, want 4", len(rs))
	}
	valid := map[string]bool{bench.StatusOK: true, bench.StatusOOM: true, bench.StatusPredictedOOM: true, bench.StatusError: true}
	for i, r := range rs {
		for _, field := range []string{"case", "dist", "dtype", "backend", "status", "counts", "gflop", "predicted_peak_bytes", "predicted_oom"} {
			if _, ok := raw[i][field]; !ok {
				t.Errorf("result %d has no %q", i, field)
			}
		}
		if !valid[r.Status] {
			t.Errorf("result %d: status %q", i, r.Status)
		}
		if r.Status != bench.StatusOK || r.TFLOPS <= 0 || r.MedianMS <= 0 || r.Case.Experts != 8 || r.Case.FFN != 4*r.Case.Hidden {
			t.Errorf("result %d: %+v", i, r)
		}
		sum := 0
		for _, c := range r.Counts {
			sum += c
		}
		if sum != r.Case.Tokens*r.Case.TopK {
			t.Errorf("result %d: counts add up to %d", i, sum)
		}
		// The first backend is the reference the others' outputs are
		// compared with; with cpu alone there is nothing to compare.
		if r.Backend == "cpu" && (r.PctDense <= 0 || r.RelErr != nil) {
			t.Errorf("result %d: %% of dense %g, relative error %v", i, r.PctDense, r.RelErr)
		}
	}
	if !strings.Contains(stderr, "pass rate cpu") {
		t.Errorf("no pass-rate line: %s", stderr)
	}
}

func TestBenchRejectsBadInput(t *testing.T) {
	for _, args := range [][]string{
		{"bench", "--shape", "x:1:2:3"}, {"bench", "--shape", "x:0:2:3:4:1"}, {"bench", "--format", "xml"},
		{"bench", "--reps", "0"}, {"bench", "--grid", "/nonexistent.csv"}, {"bench", "--dist", "drift"},
		{"bench", "--shape", "x:8:8:8:2:3", "--backends", "cpu"}, {"bench", "--backends", "tpu"}, {"bench", "--dtypes", "int4"},
		// No router gives expert 0 more rows than there are tokens.
		{"bench", "--shape", "x:64:16:64:4:2", "--dist", "hot:0:1", "--backends", "cpu"},
		{"bench", "--shape", "x:64:16:64:4:2", "--dist", "hot:7:0.5", "--backends", "cpu"},
		{"bench", "--shape", "x:64:16:64:4:2", "--act", "relu", "--backends", "cpu"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != 2 || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, %q", args, code, stderr)
		}
	}
}

// --act runs gated experts where a case names no activation, and every
// row says what ran, with its bytes and GB/s; the CPU has no ceilings, so
// no roofline.
func TestBenchActAndBytesOnCPU(t *testing.T) {
	out := filepath.Join(t.TempDir(), "bench.csv")
	code, _, stderr := runCLI(t, "bench", "--shape", "tiny:32:16:24:4:2", "--act", "swiglu", "--backends", "cpu",
		"--format", "csv", "--out", out, "--reps", "1", "--warmup", "0", "--dist", "uniform")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	b, _ := os.ReadFile(out)
	rows, err := csv.NewReader(strings.NewReader(string(b))).ReadAll()
	if err != nil || len(rows) != 3 {
		t.Fatalf("%d rows, %v:\n%s", len(rows), err, b)
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[h] = i
	}
	for _, r := range rows[1:] {
		if r[col["act"]] != "swiglu" || r[col["gbytes"]] == "" || r[col["gbps"]] == "" {
			t.Errorf("row %v: want swiglu with bytes and GB/s", r)
		}
		if r[col["pct_roofline"]] != "" || r[col["ceiling_gbps"]] != "" {
			t.Errorf("row %v: a roofline on the CPU, without ceilings", r)
		}
	}
	if strings.Contains(stderr, "roofline ceilings") {
		t.Errorf("ceilings reported on the CPU: %s", stderr)
	}
}

// `moetop bench --grid modern` must not refuse its own cases: every
// decode step of every preset takes the default distributions (one token
// at top-8 gives eight experts a row each, whatever the skew).
func TestModernGridTakesTheDefaultDistributions(t *testing.T) {
	for _, c := range bench.Modern() {
		for _, d := range []string{"uniform", "seed-uneven", "zipf:1.2"} {
			if err := benchLoadFits(c, d); err != nil {
				t.Errorf("%s %s: %v", c.Name, d, err)
			}
		}
	}
}
