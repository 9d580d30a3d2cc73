package trace

import (
	"strings"
	"testing"
)

// threeLayers is 2 steps of layers 3, 4, 5 over 2 experts; step s, layer
// row l has counts {10s+l+1, 1}.
func threeLayers(t *testing.T) *Trace {
	t.Helper()
	tr := New(2, 3)
	tr.LayerIDs = []int{3, 4, 5}
	for s := range 2 {
		rows := make([][]float64, 3)
		for l := range rows {
			rows[l] = []float64{float64(10*s + l + 1), 1}
		}
		if err := tr.Append(rows); err != nil {
			t.Fatal(err)
		}
	}
	return tr
}

func TestReplayStepsThroughLayersLikeAForwardPass(t *testing.T) {
	tr := threeLayers(t)
	for _, tc := range []struct {
		name      string
		sel       string
		cycle     int
		wantFirst []float64 // counts[0] of run steps 0..
		wantLayer []int
	}{
		{"all layers: each step is the next layer, then the next trace step", "all", 6,
			[]float64{1, 2, 3, 11, 12, 13, 1}, []int{3, 4, 5, 3, 4, 5, 3}},
		{"the default on a trace of several layers is all of them", "", 6,
			[]float64{1, 2, 3, 11}, []int{3, 4, 5, 3}},
		{"one layer by its model number replays it every step", "4", 2,
			[]float64{2, 12, 2}, []int{4, 4, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sel, err := ParseSelection(tc.sel)
			if err != nil {
				t.Fatal(err)
			}
			r, err := tr.Replay(sel)
			if err != nil {
				t.Fatal(err)
			}
			if r.Cycle() != tc.cycle {
				t.Errorf("cycle %d, want %d", r.Cycle(), tc.cycle)
			}
			for n, want := range tc.wantFirst {
				c, layer := r.At(n)
				if c[0] != want || layer != tc.wantLayer[n] {
					t.Errorf("run step %d: counts[0] %g layer %d, want %g layer %d", n, c[0], layer, want, tc.wantLayer[n])
				}
			}
		})
	}
}

func TestReplayModelShowsEveryLayerOfTheCurrentStep(t *testing.T) {
	r, err := threeLayers(t).Replay(Selection{All: true})
	if err != nil {
		t.Fatal(err)
	}
	rows, cur := r.Model(4) // trace step 1, layer row 1
	if len(rows) != 3 || cur != 1 || rows[0][0] != 11 || rows[2][0] != 13 {
		t.Errorf("model at run step 4: rows %v current %d", rows, cur)
	}
}

func TestReplayRefusesALayerTheTraceLacks(t *testing.T) {
	_, err := threeLayers(t).Replay(Selection{Layer: 7})
	if err == nil || !strings.Contains(err.Error(), "layer 7 is not in the trace (it has layers 3–5)") {
		t.Errorf("got %v", err)
	}
	if _, err := ParseSelection("-1"); err == nil {
		t.Error("a negative layer was accepted")
	}
	if _, err := ParseSelection("most"); err == nil {
		t.Error("a word other than all was accepted")
	}
}

func TestAppendChecksShapeAndValues(t *testing.T) {
	for _, tc := range []struct {
		name string
		rows [][]float64
		want string
	}{
		{"too few layers", [][]float64{{1, 1}}, "1 layers of counts, the trace has 3"},
		{"a short row", [][]float64{{1, 1}, {1}, {1, 1}}, "layer 4: 1 counts, the trace has 2 experts"},
		{"a negative count", [][]float64{{1, 1}, {1, -1}, {1, 1}}, "layer 4: expert 1 has count -1"},
		{"an all-zero layer", [][]float64{{1, 1}, {0, 0}, {1, 1}}, "layer 4: all counts are zero"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := threeLayers(t).Append(tc.rows)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
