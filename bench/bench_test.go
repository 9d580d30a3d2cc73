package bench

import (
	"bytes"
	"context"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/presets"
	"github.com/moetop/moetop/profiler"
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
	if q := Quick("modern", Modern()); len(q) != 3 || q[2].Name != "qwen3-30b-a3b@128" {
		t.Errorf("quick modern %+v, want mixtral, qwen3-moe and one decode case", q)
	}
}

// The modern grid runs every preset's routed experts at decode sizes,
// gated as the model is; the peer's prefill shapes stay plain.
func TestModernHasEachPresetsDecodeSteps(t *testing.T) {
	byName := map[string]Case{}
	for _, c := range Modern() {
		if _, dup := byName[c.Name]; dup {
			t.Errorf("two cases named %s", c.Name)
		}
		byName[c.Name] = c
		act, err := c.activation()
		if err != nil {
			t.Errorf("%s: %v", c.Name, err)
		}
		cfg := profiler.Config{Tokens: c.Tokens, Hidden: c.Hidden, FFN: c.FFN, Experts: c.Experts, TopK: c.TopK,
			DType: kernels.BF16, Act: act, Routing: "uniform", Seed: 1}
		if err := cfg.Validate(); err != nil {
			t.Errorf("%s is no layer Run takes: %v", c.Name, err)
		}
	}
	if c := byName["mixtral"]; c.Act != "" || c.Tokens != 8192 {
		t.Errorf("mixtral prefill %+v, want the peer's plain 8192-token shape", c)
	}
	want := Case{Name: "qwen3-30b-a3b@128", Tokens: 128, Hidden: 2048, FFN: 768, Experts: 128, TopK: 8, Act: "swiglu"}
	if c := byName[want.Name]; c != want {
		t.Errorf("%s is %+v, want %+v", want.Name, c, want)
	}
	for _, p := range presets.All() {
		for _, tok := range DecodeTokens {
			c, ok := byName[fmt.Sprintf("%s@%d", p.Name, tok)]
			if !ok || c.Tokens != tok || c.Hidden != p.Hidden || c.FFN != p.FFN || c.Experts != p.Experts ||
				c.TopK != p.TopK || c.Act != p.Act {
				t.Errorf("%s at %d tokens: %+v", p.Name, tok, c)
			}
		}
	}
}

func TestParseShape(t *testing.T) {
	c, err := ParseShape("mixtral:8192:4096:14336:8:2")
	if err != nil || c != (Case{Name: "mixtral", Tokens: 8192, Hidden: 4096, FFN: 14336, Experts: 8, TopK: 2}) {
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
	os.WriteFile(csvPath, []byte("name,tokens,hidden,experts,top_k,act\nsmall,64,32,4,2,swiglu\n,128,16,8,1,\n"), 0o644)
	cs, err := LoadGrid(csvPath)
	if err != nil || len(cs) != 2 || cs[0].FFN != 128 || cs[1].Name != "case2" || cs[0].Act != "swiglu" || cs[1].Act != "" {
		t.Fatalf("csv grid %+v %v", cs, err)
	}
	jsonPath := filepath.Join(dir, "g.json")
	os.WriteFile(jsonPath, []byte(`[{"name":"a","tokens":8,"hidden":4,"ffn":6,"experts":2,"top_k":1}]`), 0o644)
	if cs, err := LoadGrid(jsonPath); err != nil || len(cs) != 1 || cs[0].FFN != 6 {
		t.Fatalf("json grid %+v %v", cs, err)
	}
	for name, body := range map[string]string{"nohead.csv": "1,2,3\n", "bad.csv": "tokens,hidden,experts,top_k\n1,x,2,1\n",
		"empty.json": "[]", "broken.json": "[{", "badact.csv": "tokens,hidden,experts,top_k,act\n8,4,2,1,relu\n",
		"badact.json": `[{"tokens":8,"hidden":4,"experts":2,"top_k":1,"act":"relu"}]`} {
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
	cases := []Case{{Name: "tiny", Tokens: 32, Hidden: 16, FFN: 24, Experts: 4, TopK: 2},
		{Name: "tiny-gated", Tokens: 32, Hidden: 16, FFN: 24, Experts: 4, TopK: 2, Act: "swiglu"}}
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
		if r.Status != StatusOK || r.Reps != 2 || r.TFLOPS <= 0 || r.PredictedPeakBytes == 0 || r.GBytes <= 0 || r.GBps <= 0 {
			t.Errorf("%+v", r)
		}
		// No ceilings on the CPU: no roofline, rather than one against a
		// GPU's numbers.
		if r.Bound != "" || r.PctRoofline != 0 || r.DenseTFLOPS != 0 {
			t.Errorf("%s %s: a roofline without ceilings: %+v", r.Case.Name, r.Backend, r)
		}
		if want := map[string]string{"tiny": "gelu", "tiny-gated": "swiglu"}[r.Case.Name]; r.Case.Act != want {
			t.Errorf("%s ran %q, want %q", r.Case.Name, r.Case.Act, want)
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
			var raw []map[string]any
			json.Unmarshal(b.Bytes(), &raw)
			for _, k := range []string{"gbytes", "gbps", "gflop"} {
				if _, ok := raw[0][k]; !ok {
					t.Errorf("json result has no %q", k)
				}
			}
		case "csv":
			rows, err := csv.NewReader(&b).ReadAll()
			if err != nil || len(rows) != len(rs)+1 {
				t.Fatalf("csv: %d rows, %v", len(rows), err)
			}
			col := map[string]int{}
			for i, h := range rows[0] {
				col[h] = i
			}
			for _, k := range []string{"act", "gbytes", "gbps", "pct_roofline", "bound", "ceiling_tflops", "ceiling_gbps"} {
				if _, ok := col[k]; !ok {
					t.Errorf("csv has no %q column", k)
				}
			}
			if g := rows[1][col["gbps"]]; g == "" {
				t.Errorf("csv row without GB/s: %v", rows[1])
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
	ts.Row(Result{Case: Case{Name: "x", Tokens: 8, Hidden: 4, FFN: 16, Experts: 2, TopK: 1, Act: "swiglu"}, Dist: "uniform", DType: "bf16",
		Backend: "loop", Status: StatusOK, MedianMS: 1.25, TFLOPS: 700, GBps: 3012, PctRoofline: 100, AboveRoofline: true,
		Bound: "memory", PctDense: 98, PredictedPeakBytes: 1 << 30, RelErr: &e})
	ts.Row(Result{Case: Case{Name: "a-long-case-name"}, Dist: "zipf:1.2", Backend: "padded", Status: StatusPredictedOOM})
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	if len(lines) != 3 || !strings.HasPrefix(lines[0], "case") {
		t.Fatalf("%q", b.String())
	}
	if i, j := strings.Index(lines[0], "backend"), strings.Index(lines[2], "padded"); i != j {
		t.Errorf("backend column at %d in the header, %d in a row:\n%s", i, j, b.String())
	}
	// GB/s beside TFLOP/s, and the roofline under its column, never above 100%.
	if i, j := strings.Index(lines[0], "GB/s"), strings.Index(lines[0], "TFLOP/s")+len("TFLOP/s"); i < j || i-j > 4 {
		t.Errorf("GB/s at %d, TFLOP/s at %d: not side by side:\n%s", i, j, b.String())
	}
	// Right-aligned, as the numbers are.
	if i, j := strings.Index(lines[0], "roofline")+len("roofline"), strings.Index(lines[1], "100%* mem")+len("100%* mem"); i != j {
		t.Errorf("roofline column ends at %d in the header, %d in a row:\n%s", i, j, b.String())
	}
}
