package ep

import "testing"

func TestBalancedness(t *testing.T) {
	cases := []struct {
		name                       string
		load                       []int
		meanOverMax, maxOverMean   float64
		wantMean, wantMax, wantMin float64
	}{
		{"even load is perfectly balanced", []int{5, 5, 5, 5}, 1, 1, 5, 5, 5},
		{"one rank doing everything", []int{0, 0, 0, 8}, 0.25, 4, 2, 8, 0},
		{"a straggler at twice the mean", []int{1, 1, 4}, 0.5, 2, 2, 4, 1},
		{"no load counts as even", []int{0, 0}, 1, 1, 0, 0, 0},
		{"no ranks counts as even", nil, 1, 1, 0, 0, 0},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := Balancedness(tc.load)
			if b.MeanOverMax != tc.meanOverMax || b.MaxOverMean != tc.maxOverMean ||
				b.Mean != tc.wantMean || b.Max != tc.wantMax || b.Min != tc.wantMin {
				t.Fatalf("got %+v", b)
			}
		})
	}
}

func TestRankLoadSplitsReplicas(t *testing.T) {
	p, _ := NewPlacement(3, [][]int{{0, 1, 2}, {1}, {2, 0}})
	got := RankLoad(p, []float64{30, 7, 10})
	want := []float64{15, 17, 15}
	for r := range want {
		if got[r] != want[r] {
			t.Fatalf("rank loads %v, want %v", got, want)
		}
	}
}
