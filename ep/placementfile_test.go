package ep

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestParsePlacement(t *testing.T) {
	cases := []struct {
		name string
		text string
		want string // error text; empty: accepted
	}{
		{"a map with replicas", `{"0": [0], "1": [1, 0], "2": [1], "3": [0]}`, ""},
		{"keys in any order", `{"3": [1], "0": [0], "2": [0], "1": [1]}`, ""},
		{"an expert past the layer", `{"0": [0], "1": [1], "2": [1], "3": [0], "4": [1]}`,
			"expert 4 is not in the layer (it has 4 experts, 0–3)"},
		{"a key that is no number", `{"zero": [0]}`, `"zero" is not an expert number`},
		{"a negative expert", `{"-1": [0]}`, "expert -1 is not in the layer (it has 4 experts, 0–3)"},
		{"a rank past the run", `{"0": [0], "1": [2], "2": [1], "3": [0]}`,
			"expert 1 is on rank 2, but the run has 2 ranks (0–1)"},
		{"an expert left out", `{"0": [0], "1": [1], "3": [0]}`, "expert 2 has no rank (every expert 0–3 needs one)"},
		{"an empty list", `{"0": [0], "1": [], "2": [1], "3": [0]}`, "expert 1 has no rank"},
		{"null for a list", `{"0": null, "1": [1], "2": [1], "3": [0]}`, "expert 0 has no rank"},
		{"an expert twice", `{"0": [0], "1": [1], "00": [1], "2": [1], "3": [0]}`, "expert 0 appears twice"},
		{"a rank twice", `{"0": [0, 0], "1": [1], "2": [1], "3": [0]}`, "expert 0 lists rank 0 twice"},
		{"a fractional rank", `{"0": [0.5], "1": [1], "2": [1], "3": [0]}`, "expert 0: want a list of rank numbers like [0, 2]"},
		{"a rank as a string", `{"0": ["0"], "1": [1], "2": [1], "3": [0]}`, "expert 0: want a list of rank numbers like [0, 2]"},
		{"a list at the top", `[[0], [1]]`, `not a JSON object of expert → ranks (like {"0": [0], "1": [1]})`},
		{"an empty file", ``, `not a JSON object of expert → ranks (like {"0": [0], "1": [1]})`},
		{"cut short", `{"0": [0], "1": [1`, "not valid JSON: it ends early"},
		{"text after the object", `{"0": [0], "1": [1], "2": [1], "3": [0]} {}`, "text after the JSON object"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := ParsePlacement([]byte(tc.text), 4, 2)
			if tc.want == "" {
				if err != nil {
					t.Fatal(err)
				}
				if p.Experts() != 4 || p.Ranks() != 2 {
					t.Fatalf("parsed %d experts over %d ranks", p.Experts(), p.Ranks())
				}
				return
			}
			if !errors.Is(err, ErrBadPlacement) || err.Error() != tc.want {
				t.Fatalf("got %v, want %q wrapping ErrBadPlacement", err, tc.want)
			}
		})
	}
}

func TestPlacementFileRoundTrip(t *testing.T) {
	p, err := NewPlacement(3, [][]int{{0}, {2, 1}, {0, 1, 2}, {1}, {2}})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "placement.json")
	if err := WritePlacementFile(path, p); err != nil {
		t.Fatal(err)
	}
	q, err := ReadPlacement(path, 5, 3)
	if err != nil {
		t.Fatal(err)
	}
	if !p.Equal(q) {
		t.Fatalf("read back %v, wrote %v", q.replicas, p.replicas)
	}
	b, _ := os.ReadFile(path)
	want := "{\n  \"0\": [0],\n  \"1\": [1, 2],\n  \"2\": [0, 1, 2],\n  \"3\": [1],\n  \"4\": [2]\n}\n"
	if string(b) != want {
		t.Fatalf("file reads\n%s\nwant\n%s", b, want)
	}
	if left, _ := filepath.Glob(filepath.Join(filepath.Dir(path), ".placement.json.*")); len(left) != 0 {
		t.Errorf("temporary files left behind: %v", left)
	}
}

// Whatever a user hands the reader, it must not panic, and what it accepts
// must survive a write and a read unchanged.
func FuzzParsePlacement(f *testing.F) {
	f.Add([]byte(`{"0": [0], "1": [1, 0], "2": [1], "3": [0]}`), 4, 2)
	f.Add([]byte(`{"0": [0]}`), 1, 1)
	f.Add([]byte(`{"1": [3], "0": [0, 1, 2, 3]}`), 2, 4)
	f.Add([]byte(`{"0": [1e9], "1": [-0]}`), 2, 2)
	f.Fuzz(func(t *testing.T, data []byte, experts, ranks int) {
		experts, ranks = experts%300, ranks%64
		p, err := ParsePlacement(data, experts, ranks)
		if err != nil {
			if !errors.Is(err, ErrBadPlacement) || strings.Contains(err.Error(), "\n") {
				t.Fatalf("error %q is not a one-line ErrBadPlacement", err)
			}
			return
		}
		for e := range p.Experts() {
			if len(p.Replicas(e)) == 0 {
				t.Fatalf("accepted expert %d with no rank", e)
			}
		}
		var buf bytes.Buffer
		if err := WritePlacement(&buf, p); err != nil {
			t.Fatal(err)
		}
		q, err := ParsePlacement(buf.Bytes(), experts, ranks)
		if err != nil || !p.Equal(q) {
			t.Fatalf("round trip failed: %v", err)
		}
	})
}
