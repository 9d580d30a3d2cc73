package trace

import (
	"archive/zip"
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzUnpickle runs the restricted unpickler on anything: no panic, and no
// message of several lines. Seeds are the fixtures' pickles and a few
// hand-made ones.
func FuzzUnpickle(f *testing.F) {
	for _, name := range []string{"sglang_stat.pt", "sglang_per_token.pt", "vllm_window.pt"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		zr, err := zip.NewReader(bytes.NewReader(b), int64(len(b)))
		if err != nil {
			f.Fatal(err)
		}
		for _, zf := range zr.File {
			if strings.HasSuffix(zf.Name, "data.pkl") {
				rc, _ := zf.Open()
				var buf bytes.Buffer
				buf.ReadFrom(rc)
				rc.Close()
				f.Add(buf.Bytes())
			}
		}
	}
	f.Add([]byte("\x80\x02]q\x00(K\x01K\x02e."))                  // [1, 2]
	f.Add([]byte("\x80\x02}q\x00X\x01\x00\x00\x00aq\x01h\x00s.")) // d = {}; d["a"] = d
	f.Add([]byte("\x80\x02\x8a\x09\xff\xff\xff\xff\xff\xff\xff\xff\x7f."))
	f.Fuzz(func(t *testing.T, b []byte) {
		v, err := unpickle(b)
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a message of several lines: %q", err)
			}
			return
		}
		_ = describe(v)
		if d, ok := v.(*pyDict); ok {
			_ = dictKeys(d)
		}
	})
}

// FuzzImportTorch feeds whole torch.save archives to the SGLang and vLLM
// importers, seeded with the fixtures: whatever is accepted is a valid
// trace.
func FuzzImportTorch(f *testing.F) {
	for _, name := range []string{"sglang_stat.pt", "sglang_per_token.pt", "vllm_window.pt"} {
		b, err := os.ReadFile(filepath.Join("testdata", name))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, read := range []func(input) (*Trace, error){readSGLang, readVLLM} {
			r, size := bytesReaderAt(b)
			tr, err := read(input{name: "fuzz.pt", r: r, size: size})
			if err != nil {
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("a message of several lines: %q", err)
				}
				continue
			}
			if err := tr.Validate(); err != nil {
				t.Fatalf("accepted an invalid trace: %v", err)
			}
		}
	})
}

// FuzzImportTables feeds the EPLB (CSV and JSON) and vLLM JSON readers.
func FuzzImportTables(f *testing.F) {
	for _, s := range []string{"e0,e1\n1,2\n3,4\n", `{"weight":[[1,2],[3,4]]}`, `[[0,1]]`,
		`{"expert_load_window":[[[1,2]]],"physical_to_logical_map":[[1,0]]}`, "\"a\nb\",1"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		for _, read := range []func(input) (*Trace, error){readEPLB, readVLLM} {
			r, size := bytesReaderAt(b)
			tr, err := read(input{name: "fuzz", r: r, size: size})
			if err != nil {
				if strings.Contains(err.Error(), "\n") {
					t.Fatalf("a message of several lines: %q", err)
				}
				continue
			}
			if err := tr.Validate(); err != nil {
				t.Fatalf("accepted an invalid trace: %v", err)
			}
		}
	})
}

// FuzzImportFLAME feeds the parquet reader damaged files.
func FuzzImportFLAME(f *testing.F) {
	p := filepath.Join(f.TempDir(), "seed.parquet")
	writeFLAME(f, p, [][]int16{{0, 1}, {2, 3}, {1, 1}})
	b, _ := os.ReadFile(p)
	f.Add(b)
	f.Add([]byte("PAR1PAR1"))
	f.Fuzz(func(t *testing.T, b []byte) {
		r, size := bytesReaderAt(b)
		tr, err := readFLAME([]input{{name: "fuzz.parquet", r: r, size: size}}, Options{TokensPerStep: 2})
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a message of several lines: %q", err)
			}
			return
		}
		if err := tr.Validate(); err != nil {
			t.Fatalf("accepted an invalid trace: %v", err)
		}
	})
}
