package ep

import (
	"errors"
	"math"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"
)

func TestRebalanceByHand(t *testing.T) {
	cases := []struct {
		name      string
		load      []float64
		ranks     int
		redundant int
		want      [][]int // expert → ranks
		wantLoad  []float64
	}{
		{"without copies the hot expert gets the light ones' company",
			[]float64{100, 10, 10, 10}, 2, 0, [][]int{{0}, {1}, {1}, {0}}, []float64{110, 20}},
		{"two copies split the hot expert and even the ranks",
			[]float64{100, 10, 10, 10}, 2, 2, [][]int{{0, 1}, {0, 1}, {0}, {1}}, []float64{65, 65}},
		{"copies never exceed one per rank",
			[]float64{90, 1}, 2, 2, [][]int{{0, 1}, {0, 1}}, []float64{45.5, 45.5}},
		{"a swap frees a slot when only ranks holding the expert have room",
			[]float64{0, 0, 0, 7}, 3, 5, [][]int{{1, 2}, {0, 1}, {0, 2}, {0, 1, 2}}, []float64{7. / 3, 7. / 3, 7. / 3}},
		{"equal loads spread copies over experts",
			[]float64{0, 0, 0, 0}, 2, 2, [][]int{{0, 1}, {0, 1}, {0}, {1}}, []float64{0, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Rebalance(tc.load, tc.ranks, tc.redundant)
			if err != nil {
				t.Fatal(err)
			}
			for e, want := range tc.want {
				if got := p.Replicas(e); !slices.Equal(got, want) {
					t.Errorf("expert %d on ranks %v, want %v", e, got, want)
				}
			}
			if got := RankLoad(p, tc.load); !slices.Equal(got, tc.wantLoad) {
				t.Errorf("rank loads %v, want %v", got, tc.wantLoad)
			}
		})
	}
}

func TestRebalanceRefuses(t *testing.T) {
	cases := []struct {
		name      string
		load      []float64
		ranks     int
		redundant int
		want      string
	}{
		{"slots that do not split evenly", []float64{1, 2, 3}, 2, 0,
			"3 experts + 0 redundant copies do not split evenly over 2 ranks (EPLB gives every rank the same number of expert slots)"},
		{"more copies than ranks can hold", []float64{1, 2}, 2, 3,
			"3 redundant copies of 2 experts need more than 2 ranks (at most one copy of an expert per rank)"},
		{"a negative load", []float64{1, -2}, 2, 0, "expert 1 has load -2 (want a count of rows, 0 or more)"},
		{"a load that is not a number", []float64{math.NaN(), 1}, 2, 0, "expert 0 has load NaN (want a count of rows, 0 or more)"},
		{"negative copies", []float64{1, 1}, 2, -2, "redundant copies must be 0 or more, not -2"},
		{"no experts", nil, 2, 0, "cannot place 0 experts over 2 ranks"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Rebalance(tc.load, tc.ranks, tc.redundant)
			if !errors.Is(err, ErrBadPlacement) || err.Error() != tc.want {
				t.Fatalf("got %v, want %q", err, tc.want)
			}
		})
	}
}

// Whatever the load, a proposal is a valid placement with the same number of
// copies on every rank, E+R copies in all, and the hottest expert among
// the most copied.
func TestRebalanceKeepsEPLBsShape(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 500 {
		ranks := 1 + rng.IntN(8)
		experts := 1 + rng.IntN(40)
		slots := (experts + ranks - 1) / ranks
		slots += rng.IntN(min(ranks, 3))                    // some spare slots for copies
		redundant := slots*ranks - experts                  // fills every slot
		if redundant > experts*(ranks-1) || redundant < 0 { // too few experts for that many copies
			continue
		}
		load := make([]float64, experts)
		for e := range load {
			if i%2 == 0 {
				load[e] = math.Floor(1000 * math.Pow(rng.Float64(), 3))
			} else { // small counts: many ties, and the packing's swap
				load[e] = float64(rng.IntN(10))
			}
		}
		p, err := Rebalance(load, ranks, redundant)
		if err != nil {
			t.Fatalf("case %d (%d experts, %d ranks, %d copies): %v", i, experts, ranks, redundant, err)
		}
		if p.Physical() != experts+redundant {
			t.Fatalf("case %d: %d copies, want %d", i, p.Physical(), experts+redundant)
		}
		for r := range ranks {
			if len(p.Local(r)) != slots {
				t.Fatalf("case %d: rank %d holds %d experts, want %d", i, r, len(p.Local(r)), slots)
			}
		}
		hot := 0
		for e := range load {
			if load[e] > load[hot] {
				hot = e
			}
		}
		most := 0
		for e := range load {
			most = max(most, len(p.Replicas(e)))
		}
		if len(p.Replicas(hot)) != most && len(p.Replicas(hot)) != ranks {
			t.Fatalf("case %d: hottest expert %d has %d copies, another has %d", i, hot, len(p.Replicas(hot)), most)
		}
	}
}

func zipf(n int, s float64) []float64 {
	w := make([]float64, n)
	for i := range w {
		w[i] = math.Floor(10000 / math.Pow(float64(i+1), s))
	}
	return w
}

func TestWhatIfImprovesAZipfLoadAndRoundTrips(t *testing.T) {
	cur, _ := Contiguous(8, 4)
	load := zipf(8, 1.2)
	w, err := WhatIfRebalance(cur, load, 4)
	if err != nil {
		t.Fatal(err)
	}
	// Contiguous blocks put experts 0 and 1 (10000 + 4352) on rank 0.
	if w.Actual.Max != 14352 {
		t.Errorf("actual busiest rank carries %g, want 14352", w.Actual.Max)
	}
	if w.Predicted.MeanOverMax <= w.Actual.MeanOverMax || w.Predicted.MeanOverMax < 0.9 {
		t.Errorf("predicted balancedness %.3f against actual %.3f, want ≥ 0.9 and better",
			w.Predicted.MeanOverMax, w.Actual.MeanOverMax)
	}
	var sum float64
	for _, l := range w.Load {
		sum += l
	}
	if total := sum; math.Abs(total-w.Actual.Mean*4) > 1e-6 {
		t.Errorf("predicted loads sum to %g, the load to %g", total, w.Actual.Mean*4)
	}
	path := filepath.Join(t.TempDir(), "rebalanced.json")
	if err := WritePlacementFile(path, w.Placement); err != nil {
		t.Fatal(err)
	}
	back, err := ReadPlacement(path, 8, 4)
	if err != nil {
		t.Fatal(err)
	}
	if !back.Equal(w.Placement) {
		t.Fatalf("placement read back differs")
	}
	if _, err := WhatIfRebalance(cur, load[:7], 4); !errors.Is(err, ErrBadPlacement) {
		t.Errorf("a load of 7 experts for 8: got %v", err)
	}
}
