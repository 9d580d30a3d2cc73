package trace

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
)

func write(t *testing.T, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "t.jsonl")
	if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

const v2Header = `{"format":"moetop-trace","version":2,"experts":4,"layers":[3,4],"top_k":2,"source":"test"}`

func TestReadAcceptsBothVersions(t *testing.T) {
	for _, tc := range []struct {
		name           string
		body           string
		steps, layers  int
		experts        int
		at             [3]int // step, layer row, expert
		want           float64
		layerIDs       []int
		topK           int
		wantSourceText string
	}{
		{name: "a v1 trace is one layer numbered 0",
			body:  "{\"counts\":[1,2,3]}\n\n{\"counts\":[4,5,6],\"step\":7}\n",
			steps: 2, layers: 1, experts: 3, at: [3]int{1, 0, 2}, want: 6, layerIDs: []int{0}},
		{name: "a v2 trace keeps its layer numbers and top-k",
			body:  v2Header + "\n" + `{"counts":[[1,0,0,0],[0,2,0,0]]}` + "\n" + `{"counts":[[0,0,3,1.5],[9,0,0,1]]}` + "\n",
			steps: 2, layers: 2, experts: 4, at: [3]int{1, 0, 3}, want: 1.5, layerIDs: []int{3, 4}, topK: 2, wantSourceText: "test"},
		{name: "top-k ids per token become counts, -1 skipped",
			body:  v2Header + "\n" + `{"topk_ids":[[[0,1],[1,2],[1,-1]],[[3,3],[0,1],[2,1]]]}` + "\n",
			steps: 1, layers: 2, experts: 4, at: [3]int{0, 0, 1}, want: 3, layerIDs: []int{3, 4}, topK: 2, wantSourceText: "test"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tr, err := ReadFile(write(t, tc.body))
			if err != nil {
				t.Fatal(err)
			}
			if tr.Steps() != tc.steps || tr.Layers() != tc.layers || tr.Experts != tc.experts {
				t.Fatalf("shape %d×%d×%d, want %d×%d×%d", tr.Steps(), tr.Layers(), tr.Experts, tc.steps, tc.layers, tc.experts)
			}
			if got := tr.At(tc.at[0], tc.at[1])[tc.at[2]]; got != tc.want {
				t.Errorf("count at %v = %g, want %g", tc.at, got, tc.want)
			}
			if !slices.Equal(tr.LayerIDs, tc.layerIDs) || tr.TopK != tc.topK || tr.Source != tc.wantSourceText {
				t.Errorf("layers %v top-k %d source %q", tr.LayerIDs, tr.TopK, tr.Source)
			}
		})
	}
}

func TestReadErrorsAreOneLineInUserWords(t *testing.T) {
	long := `{"counts":[` + strings.Repeat("1,", MaxLine/2) + `1]}`
	for _, tc := range []struct {
		name, body string
		want       string // in the message
	}{
		{"an empty file", "", "empty file"},
		{"only blank lines", "\n  \n", "only blank lines"},
		{"a too-long line", long, "line 1: longer than 16 MiB"},
		{"a number like 1e400", `{"counts":[1,1e400]}`, "line 1: counts: count 1e400 is out of range"},
		{"a negative count", "{\"counts\":[1,2]}\n{\"counts\":[1,-2]}", "line 2: counts: count -2 is negative"},
		{"all counts zero", `{"counts":[0,0]}`, "line 1: all counts are zero"},
		{"ragged v1 lines", "{\"counts\":[1,2]}\n{\"counts\":[1,2,3]}", "line 2: 3 counts, earlier lines have 2"},
		{"ragged layers", v2Header + "\n" + `{"counts":[[1,1,1,1],[1,1,1]]}`, "line 2: layer 4 has 3 counts, the header says 4 experts"},
		{"too few layers", v2Header + "\n" + `{"counts":[[1,1,1,1]]}`, "line 2: counts has 1 layers, the header lists 2"},
		{"not JSON", "hello", "line 1: not valid JSON"},
		{"a list, not an object", "[1,2]", "line 1: a line must be a JSON object, not a list"},
		{"a string count", `{"counts":[1,"x"]}`, "line 1: counts must be a list of numbers"},
		{"a header with a huge experts", `{"format":"moetop-trace","version":2,"experts":1e400,"layers":[0]}`, "experts: 1e400 is not a whole number"},
		{"a newer version", `{"format":"moetop-trace","version":3,"experts":2,"layers":[0]}`, "newer than this moetop reads"},
		{"a header and no steps", v2Header, "a header but no steps"},
		{"a layer listed twice", `{"format":"moetop-trace","version":2,"experts":2,"layers":[1,1]}` + "\n" + `{"counts":[[1,1],[1,1]]}`, "layer 1 is listed twice"},
		{"an expert id out of range", v2Header + "\n" + `{"topk_ids":[[[4]],[[0]]]}`, `expert "4"`},
		{"both counts and ids", v2Header + "\n" + `{"counts":[[1,1,1,1],[1,1,1,1]],"topk_ids":[]}`, "not both"},
		{"a line that is neither", `{"steps":1}`, "neither a trace header"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := write(t, tc.body)
			_, err := ReadFile(p)
			if err == nil {
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.Contains(msg, tc.want) || !strings.Contains(msg, p) {
				t.Errorf("message %q should name the file and say %q", msg, tc.want)
			}
			for _, goWords := range []string{"bufio.Scanner", "json: ", "cannot unmarshal", "strconv."} {
				if strings.Contains(msg, goWords) {
					t.Errorf("message %q uses Go's wording %q", msg, goWords)
				}
			}
			if strings.Contains(msg, "\n") {
				t.Errorf("message %q is more than one line", msg)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Errorf("%v should match ErrInvalid", err)
			}
		})
	}
}

func TestReadFileRefusesWhatIsNotARegularFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct{ name, path, want string }{
		{"a directory", dir, "is a directory"},
		{"a FIFO with no writer, without blocking", fifo, "is a named pipe (FIFO)"},
		{"a character device", "/dev/null", "is a character device"},
		{"a missing file", filepath.Join(dir, "nope"), "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := ReadFile(tc.path)
			if err == nil || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("got %v, want a message naming %s and saying %q", err, tc.path, tc.want)
			}
			if tc.want != "no such file" && !errors.Is(err, ErrNotRegular) {
				t.Errorf("%v should match ErrNotRegular", err)
			}
		})
	}
}

func TestWriteThenReadGivesTheSameTrace(t *testing.T) {
	tr := New(3, 2)
	tr.LayerIDs = []int{5, 9}
	tr.TopK, tr.Source = 2, "round trip"
	for s := range 3 {
		if err := tr.Append([][]float64{{float64(s + 1), 0, 0.25}, {1e15, 2, float64(s)}}); err != nil {
			t.Fatal(err)
		}
	}
	p := filepath.Join(t.TempDir(), "out.jsonl")
	if err := WriteFile(p, tr); err != nil {
		t.Fatal(err)
	}
	got, err := ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	if got.Steps() != 3 || !slices.Equal(got.LayerIDs, tr.LayerIDs) || got.TopK != 2 || got.Source != "round trip" {
		t.Fatalf("read back %d steps, layers %v, top-k %d, source %q", got.Steps(), got.LayerIDs, got.TopK, got.Source)
	}
	for s := range 3 {
		for l := range 2 {
			for e, want := range tr.At(s, l) {
				if g := got.At(s, l)[e]; g != want {
					t.Errorf("step %d layer %d expert %d: %g, want %g", s, l, e, g, want)
				}
			}
		}
	}
}

func TestWriteRefusesAnEmptyTrace(t *testing.T) {
	if err := Write(&bytes.Buffer{}, New(4, 1)); err == nil {
		t.Error("a trace with no steps was written")
	}
}

// FuzzRead feeds the JSON Lines reader anything: it must never panic, and
// what it accepts must be a valid trace that writes and reads back the same.
func FuzzRead(f *testing.F) {
	for _, s := range []string{
		`{"counts":[1,2,3]}`,
		"{\"counts\":[1,0]}\n{\"counts\":[0,1]}\n",
		v2Header + "\n" + `{"counts":[[1,0,0,0],[0,2,0,0]]}`,
		v2Header + "\n" + `{"topk_ids":[[[0,1],[2,-1]],[[3,3]]]}`,
		`{"counts":[1e400]}`,
		`{"format":"moetop-trace","version":2,"experts":1,"layers":[0]}` + "\n" + `{"counts":[[5]]}`,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		tr, err := Read(bytes.NewReader(b), "fuzz")
		if err != nil {
			if strings.Contains(err.Error(), "\n") {
				t.Fatalf("a message of several lines: %q", err)
			}
			return
		}
		if err := tr.Validate(); err != nil {
			t.Fatalf("accepted an invalid trace: %v", err)
		}
		var buf bytes.Buffer
		if err := Write(&buf, tr); err != nil {
			t.Fatalf("cannot write what was read: %v", err)
		}
		back, err := Read(&buf, "again")
		if err != nil || back.Steps() != tr.Steps() || back.Layers() != tr.Layers() {
			t.Fatalf("round trip: %v", err)
		}
		r, err := tr.Replay(Selection{All: true})
		if err != nil {
			t.Fatal(err)
		}
		for n := range 3 * r.Cycle() {
			if c, _ := r.At(n); len(c) != tr.Experts {
				t.Fatalf("step %d: %d counts", n, len(c))
			}
		}
	})
}
