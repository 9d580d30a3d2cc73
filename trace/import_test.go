package trace

import (
	"archive/zip"
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/parquet-go/parquet-go"
)

// The .pt fixtures come from scripts/make_trace_fixtures.py, which writes
// torch.save's layout with Python's standard library; the numbers checked
// here are the formulas in that script.

func TestImportSGLangStatDump(t *testing.T) {
	tr, err := Load("sglang", []string{"testdata/sglang_stat.pt"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	// 6 passes × 4 layers × 8 experts; layer 0 is dense (zeros), passes 4
	// and 5 an unfilled ring buffer.
	if tr.Steps() != 4 || !slices.Equal(tr.LayerIDs, []int{1, 2, 3}) || tr.Experts != 8 {
		t.Fatalf("got %d steps, layers %v, %d experts; want 4, [1 2 3], 8", tr.Steps(), tr.LayerIDs, tr.Experts)
	}
	for _, c := range []struct{ pass, row, expert int }{{0, 0, 0}, {2, 1, 5}, {3, 2, 7}} {
		layer := tr.LayerIDs[c.row]
		want := float64((c.pass+1)*10 + layer*100 + c.expert)
		if got := tr.At(c.pass, c.row)[c.expert]; got != want {
			t.Errorf("pass %d layer %d expert %d: %g, want %g", c.pass, layer, c.expert, got, want)
		}
	}
	if !strings.Contains(tr.Source, "4 of 6 steps (2 empty dropped)") || !strings.Contains(tr.Source, "1 that routed nothing dropped") {
		t.Errorf("source %q should say what was dropped", tr.Source)
	}
}

// p2l is the fixtures' physical → logical map, 6 physical experts per layer.
var p2l = [2][6]int{{0, 1, 2, 3, 0, 1}, {0, 1, 2, 3, 3, 2}}

func TestImportSGLangPerTokenDump(t *testing.T) {
	tr, err := Load("sglang", []string{"testdata/sglang_per_token.pt"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Steps() != 2 || tr.Layers() != 2 || tr.Experts != 4 || tr.TopK != 2 {
		t.Fatalf("got %d steps × %d layers × %d experts, top-k %d; want 2×2×4, 2", tr.Steps(), tr.Layers(), tr.Experts, tr.TopK)
	}
	for p := range 2 {
		for l := range 2 {
			want := make([]float64, 4)
			for tok := range 5 {
				want[p2l[l][(tok+l+p)%6]]++
				want[p2l[l][(2*tok+1)%6]]++
			}
			for e, w := range want {
				if got := tr.At(p, l)[e]; got != w {
					t.Errorf("pass %d layer %d expert %d: %g, want %g", p, l, e, got, w)
				}
			}
		}
	}
}

func TestImportVLLMWindowFromATorchViewAndFromJSON(t *testing.T) {
	// window w, layer l, physical p holds w*100 + l*10 + p + 1, stored at
	// offset 12 of a larger buffer; logical experts sum their replicas.
	want := func(w, l, e int) float64 {
		s := 0.0
		for p, le := range p2l[l] {
			if le == e {
				s += float64(w*100 + l*10 + p + 1)
			}
		}
		return s
	}
	js := filepath.Join(t.TempDir(), "load.json")
	os.WriteFile(js, []byte(`{"expert_load_window":[`+
		`[[1,2,3,4,5,6],[11,12,13,14,15,16]],[[101,102,103,104,105,106],[111,112,113,114,115,116]],`+
		`[[201,202,203,204,205,206],[211,212,213,214,215,216]]],`+
		`"physical_to_logical_map":[[0,1,2,3,0,1],[0,1,2,3,3,2]]}`), 0o644)
	for _, in := range []string{"testdata/vllm_window.pt", js} {
		t.Run(filepath.Ext(in), func(t *testing.T) {
			tr, err := Load("vllm", []string{in}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if tr.Steps() != 3 || tr.Layers() != 2 || tr.Experts != 4 {
				t.Fatalf("got %d×%d×%d, want 3×2×4", tr.Steps(), tr.Layers(), tr.Experts)
			}
			for w := range 3 {
				for l := range 2 {
					for e := range 4 {
						if got := tr.At(w, l)[e]; got != want(w, l, e) {
							t.Errorf("window %d layer %d expert %d: %g, want %g", w, l, e, got, want(w, l, e))
						}
					}
				}
			}
		})
	}
}

func TestImportEPLBWeightFromCSVAndJSON(t *testing.T) {
	dir := t.TempDir()
	for name, body := range map[string]string{
		"weight.csv":      "e0,e1,e2\n5,0,1\n0, 7 ,2.5\n",
		"weight.json":     `{"weight":[[5,0,1],[0,7,2.5]]}`,
		"bare.json":       `[[5,0,1],[0,7,2.5]]`,
		"noheader.csv":    "5,0,1\n0,7,2.5",
		"crlf-header.csv": "layer_a,layer_b,layer_c\r\n5,0,1\r\n0,7,2.5\r\n",
	} {
		t.Run(name, func(t *testing.T) {
			p := filepath.Join(dir, name)
			os.WriteFile(p, []byte(body), 0o644)
			tr, err := Load("eplb", []string{p}, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if tr.Steps() != 1 || tr.Layers() != 2 || tr.Experts != 3 || tr.At(0, 1)[2] != 2.5 || tr.At(0, 0)[0] != 5 {
				t.Errorf("got %d×%d×%d, layer 1 %v", tr.Steps(), tr.Layers(), tr.Experts, tr.At(0, 1))
			}
		})
	}
}

// writeFLAME writes a FLAME-MoE-style parquet file: a row per token with
// indices list<int16> and scores (here raw float16 bits: parquet-go has no
// FLOAT16 annotation to write; the importer reads only indices).
func writeFLAME(t testing.TB, path string, picks [][]int16) {
	t.Helper()
	type row struct {
		Indices []int16   `parquet:"indices,list"`
		Scores  [][2]byte `parquet:"scores,list"`
	}
	rows := make([]row, len(picks))
	for i, p := range picks {
		rows[i] = row{Indices: p, Scores: make([][2]byte, len(p))}
	}
	var buf bytes.Buffer
	if err := parquet.Write(&buf, rows); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, buf.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestImportFLAMEParquetCutsTokensIntoSteps(t *testing.T) {
	dir := t.TempDir()
	// 10 tokens, top-6 of 64 experts; token i picks i, i+1, ..., i+5.
	var picks [][]int16
	for i := range 10 {
		picks = append(picks, []int16{int16(i), int16(i + 1), int16(i + 2), int16(i + 3), int16(i + 4), int16(i + 5)})
	}
	a, b := filepath.Join(dir, "layer2.parquet"), filepath.Join(dir, "layer3.parquet")
	writeFLAME(t, a, picks)
	writeFLAME(t, b, picks[:9])

	tr, err := Load("flame", []string{a}, Options{TokensPerStep: 4, Experts: 64})
	if err != nil {
		t.Fatal(err)
	}
	if tr.Steps() != 3 || tr.Experts != 64 || tr.TopK != 6 {
		t.Fatalf("got %d steps of %d experts, top-k %d; want 3 (4+4+2 tokens), 64, 6", tr.Steps(), tr.Experts, tr.TopK)
	}
	// Step 1 holds tokens 4..7: expert 7 is picked by tokens 4..7 (4 times),
	// expert 12 by token 7 only.
	if s := tr.At(1, 0); s[7] != 4 || s[12] != 1 || s[3] != 0 {
		t.Errorf("step 1 counts %v", s[:14])
	}
	if tr.At(2, 0)[14] != 1 || sum(tr.At(2, 0)) != 12 {
		t.Errorf("the last, short step: %v", tr.At(2, 0)[:16])
	}

	if _, err := Load("flame", []string{a, b}, Options{TokensPerStep: 4}); err == nil || !strings.Contains(err.Error(), "same tokens") {
		t.Errorf("layers of different token counts: %v", err)
	}
	two, err := Load("flame", []string{a, a}, Options{TokensPerStep: 5})
	if err != nil || two.Layers() != 2 || two.Experts != 15 || two.Steps() != 2 {
		t.Errorf("two layers: %v; want 2 layers of 15 experts (the highest id + 1), 2 steps", err)
	}
}

func sum(r []float64) float64 {
	s := 0.0
	for _, x := range r {
		s += x
	}
	return s
}

func TestImportWritesAV2TraceThatReadsBack(t *testing.T) {
	out := filepath.Join(t.TempDir(), "sglang.jsonl")
	if err := ImportFiles("sglang", []string{"testdata/sglang_stat.pt"}, out, Options{}); err != nil {
		t.Fatal(err)
	}
	tr, err := ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	if tr.Steps() != 4 || tr.Layers() != 3 || tr.At(3, 2)[7] != 40+300+7 {
		t.Errorf("read back %d steps × %d layers, last count %g", tr.Steps(), tr.Layers(), tr.At(3, 2)[7])
	}
	if err := ImportFiles("sglang", []string{out}, out, Options{}); err == nil {
		t.Error("overwriting the input was allowed")
	}
}

func TestImportErrorsNameTheFileInUserWords(t *testing.T) {
	dir := t.TempDir()
	file := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		os.WriteFile(p, b, 0o644)
		return p
	}
	stat, _ := os.ReadFile("testdata/sglang_stat.pt")
	for _, tc := range []struct {
		name, from string
		in         string
		want       string
	}{
		{"an unknown source", "megatron", "x", `unknown source "megatron"`},
		{"a directory", "sglang", dir, "is a directory"},
		{"not a zip", "sglang", file("a.pt", []byte("hello")), "not a torch.save file"},
		{"an old torch.save", "sglang", file("old.pt", []byte{0x80, 0x02, 0x8a, 0x0a}), "before PyTorch 1.6"},
		{"a truncated dump", "sglang", file("cut.pt", stat[:len(stat)/2]), "not a readable zip archive"},
		{"a vLLM dump fed as SGLang", "sglang", "testdata/vllm_window.pt", "neither logical_count"},
		{"an EPLB file with a negative load", "eplb", file("neg.csv", []byte("1,2\n3,-4\n")), "line 2 column 2: load -4 is negative"},
		{"an EPLB file of ragged rows", "eplb", file("rag.csv", []byte("1,2\n3\n")), "line 2 has 1 experts, the first layer has 2"},
		{"an EPLB number like 1e400", "eplb", file("big.json", []byte(`{"weight":[[1,1e400]]}`)), "1e400 is not a number in range"},
		{"an empty EPLB file", "eplb", file("empty.csv", nil), "empty file"},
		{"a vLLM JSON without the window", "vllm", file("w.json", []byte(`{"load":[]}`)), "expert_load_window is missing"},
		{"a parquet file without indices", "flame", file("x.parquet", []byte("PAR1junkPAR1")), "parquet"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.from, []string{tc.in}, Options{})
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || strings.Contains(msg, "\n") {
				t.Errorf("%q should be one line saying %q", msg, tc.want)
			}
			if tc.from != "megatron" && !strings.Contains(msg, tc.in) {
				t.Errorf("%q should name %s", msg, tc.in)
			}
		})
	}
}

func TestTorchReaderRefusesTensorsThatOverrunTheirStorage(t *testing.T) {
	// Rewrite the vLLM fixture's storage record shorter than its tensor.
	b, _ := os.ReadFile("testdata/vllm_window.pt")
	zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	for _, f := range zr.File {
		w, _ := zw.CreateHeader(&zip.FileHeader{Name: f.Name, Method: zip.Store})
		rc, _ := f.Open()
		var data bytes.Buffer
		data.ReadFrom(rc)
		rc.Close()
		if f.Name == "archive/data/0" {
			data.Truncate(data.Len() - 8)
		}
		w.Write(data.Bytes())
	}
	zw.Close()
	r, size := bytesReaderAt(out.Bytes())
	_, err = readVLLM(input{name: "short.pt", r: r, size: size})
	if err == nil || !errors.Is(err, ErrInvalid) || !strings.Contains(err.Error(), "record data/0 holds") {
		t.Errorf("a storage shorter than its tensor: %v", err)
	}
}
