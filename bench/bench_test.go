package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels"
)

func TestGrids(t *testing.T) {
	r := Report()
	if len(r) != 96 {
		t.Fatalf("report grid has %d cases, want 3×2×4×4 = 96", len(r))
	}
	for _, c := range r {
		if c.Experts != 8 || c.FFN != 4*c.Hidden {
			t.Fatalf("report case %+v", c)
		}
	}
	if q := Quick("report", r); len(q) != 2 || q[0].Tokens != 16*512 || q[0].Hidden != 512 {
		t.Errorf("quick report %+v", q)
	}
	if q := Quick("modern", Modern()); len(q) != 2 {
		t.Errorf("quick modern %+v", q)
	}
}

func TestParseShape(t *testing.T) {
	c, err := ParseShape("mixtral:8192:4096:14336:8:2")
	if err != nil || c != (Case{"mixtral", 8192, 4096, 14336, 8, 2}) {
		t.Fatalf("%+v %v", c, err)
	}
	for _, bad := range []string{"x:1:2", "x:1:2:3:4:0", "x:a:2:3:4:1", "x:1:2:3:4:5:6"} {
		if _, err := ParseShape(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
}

func TestLoadGrid(t *testing.T) {
	dir := t.TempDir()
	csvPath := filepath.Join(dir, "g.csv")
	os.WriteFile(csvPath, []byte("name,tokens,hidden,experts,top_k\nsmall,64,32,4,2\n,128,16,8,1\n"), 0o644)
	cs, err := LoadGrid(csvPath)
	if err != nil || len(cs) != 2 || cs[0].FFN != 128 || cs[1].Name != "case2" {
		t.Fatalf("csv grid %+v %v", cs, err)
	}
	jsonPath := filepath.Join(dir, "g.json")
	os.WriteFile(jsonPath, []byte(`[{"name":"a","tokens":8,"hidden":4,"ffn":6,"experts":2,"top_k":1}]`), 0o644)
	if cs, err := LoadGrid(jsonPath); err != nil || len(cs) != 1 || cs[0].FFN != 6 {
		t.Fatalf("json grid %+v %v", cs, err)
	}
	for name, body := range map[string]string{"nohead.csv": "1,2,3\n", "bad.csv": "tokens,hidden,experts,top_k\n1,x,2,1\n",
		"empty.json": "[]", "broken.json": "[{"} {
		p := filepath.Join(dir, name)
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := LoadGrid(p); err == nil {
			t.Errorf("%s accepted", name)
		}
	}
}

// A run on the CPU of a tiny case: every result is there, dense first,
// with fixed counts that add up, and each format renders it.
func TestRunAndWrite(t *testing.T) {
	o := Options{Backends: []string{"cpu"}, DTypes: []kernels.DType{kernels.FP32}, Dists: []string{"uniform", "zipf:1.2"},
		Reps: 2, Open: func(string) (kernels.Backend, error) { return kernels.NewCPU(), nil }}
	cases := []Case{{"tiny", 32, 16, 24, 4, 2}}
	var seen int
	o.Progress = func(done, total int, r Result) { seen = done }
	rs, err := Run(context.Background(), cases, o)
	if err != nil {
		t.Fatal(err)
	}
	if len(rs) != Total(cases, o) || seen != len(rs) || rs[0].Backend != "dense" || rs[0].Counts[0] != 64 {
		t.Fatalf("results %+v", rs)
	}
	for _, r := range rs {
		if r.Status != StatusOK || r.Reps != 2 || r.TFLOPS <= 0 || r.PredictedPeakBytes == 0 {
			t.Errorf("%+v", r)
		}
		if r.Backend == "dense" {
			continue
		}
		// Uncapped, zipf:1.2 would give expert 0 35 of 64 rows; a router can give
		// it at most one per token.
		sum := 0
		for e, n := range r.Counts {
			if n > cases[0].Tokens {
				t.Errorf("%s %s: expert %d has %d rows of %d tokens", r.Dist, r.Backend, e, n, cases[0].Tokens)
			}
			sum += n
		}
		if sum != cases[0].Tokens*cases[0].TopK {
			t.Errorf("%s %s: counts %v sum to %d", r.Dist, r.Backend, r.Counts, sum)
		}
	}
	for _, f := range Formats {
		var b bytes.Buffer
		if err := Write(&b, f, rs); err != nil {
			t.Fatalf("%s: %v", f, err)
		}
		switch f {
		case "json":
			var back []Result
			if err := json.Unmarshal(b.Bytes(), &back); err != nil || len(back) != len(rs) {
				t.Errorf("json does not read back: %v", err)
			}
		case "csv":
			rows, err := csv.NewReader(&b).ReadAll()
			if err != nil || len(rows) != len(rs)+1 {
				t.Errorf("csv: %d rows, %v", len(rows), err)
			}
		default:
			if !strings.Contains(b.String(), "pass rate cpu") || !strings.Contains(b.String(), "tiny") {
				t.Errorf("%s:\n%s", f, b.String())
			}
		}
	}
	if _, err := Run(context.Background(), cases, Options{Reps: 0}); err == nil {
		t.Error("reps 0 accepted")
	}
}

func TestTableStreamLinesUp(t *testing.T) {
	var b bytes.Buffer
	ts := NewTableStream(&b, []Case{{Name: "a-long-case-name"}})
	e := 1.5e-3
	ts.Row(Result{Case: Case{Name: "x", Tokens: 8, Hidden: 4, FFN: 16, Experts: 2, TopK: 1}, Dist: "uniform", DType: "bf16",
		Backend: "loop", Status: StatusOK, MedianMS: 1.25, TFLOPS: 700, PctDense: 98, PredictedPeakBytes: 1 << 30, RelErr: &e})
	ts.Row(Result{Case: Case{Name: "a-long-case-name"}, Dist: "zipf:1.2", Backend: "padded", Status: StatusPredictedOOM})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "case") {
		t.Fatalf("%q", b.String())
	}
	if i, j := strings.Index(lines[0], "backend"), strings.Index(lines[2], "padded"); i != j {
		t.Errorf("backend column at %d in the header, %d in a row:\n%s", i, j, b.String())
	}
}
