package ep

import (
	"errors"
	"slices"
	"testing"
)

func TestContiguousBlocks(t *testing.T) {
	cases := []struct {
		name          string
		experts, rank int
		want          [][]int // rank → experts
	}{
		{"even split as the peer does", 8, 4, [][]int{{0, 1}, {2, 3}, {4, 5}, {6, 7}}},
		{"uneven split differs by at most one", 5, 3, [][]int{{0}, {1, 2}, {3, 4}}},
		{"one rank holds everything", 3, 1, [][]int{{0, 1, 2}}},
		{"fewer experts than ranks leaves ranks empty", 2, 4, [][]int{nil, {0}, nil, {1}}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Contiguous(tc.experts, tc.rank)
			if err != nil {
				t.Fatal(err)
			}
			for r, want := range tc.want {
				if got := p.Local(r); !slices.Equal(got, want) {
					t.Errorf("rank %d holds %v, want %v", r, got, want)
				}
			}
			if p.Physical() != tc.experts {
				t.Errorf("%d copies, want %d", p.Physical(), tc.experts)
			}
		})
	}
}

func TestNewPlacementRefusesBadMaps(t *testing.T) {
	cases := []struct {
		name     string
		ranks    int
		replicas [][]int
		want     string
	}{
		{"an expert with no rank", 2, [][]int{{0}, {}}, "expert 1 has no rank"},
		{"a rank past the run", 2, [][]int{{0}, {2}}, "expert 1 is on rank 2, but the run has 2 ranks (0–1)"},
		{"a negative rank", 2, [][]int{{-1}}, "expert 0 is on rank -1, but the run has 2 ranks (0–1)"},
		{"a rank listed twice", 3, [][]int{{1, 0, 1}}, "expert 0 lists rank 1 twice"},
		{"no experts", 2, nil, "no experts"},
		{"no ranks", 0, [][]int{{0}}, "a run needs at least one rank, not 0"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := NewPlacement(tc.ranks, tc.replicas)
			if !errors.Is(err, ErrBadPlacement) || err.Error() != tc.want {
				t.Fatalf("got %v, want %q wrapping ErrBadPlacement", err, tc.want)
			}
		})
	}
}

func TestChooserPrefersOwnRankThenTakesTurns(t *testing.T) {
	// Expert 0 on ranks 1 and 3; expert 1 only on rank 2.
	p, err := NewPlacement(4, [][]int{{3, 1}, {2}})
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name   string
		src    int
		expert int
		want   []int
	}{
		{"own copy serves every pair", 3, 0, []int{3, 3, 3}},
		{"the other own copy too", 1, 0, []int{1, 1}},
		{"rank 0 takes turns from the first copy", 0, 0, []int{1, 3, 1, 3}},
		{"rank 2 starts its turns one replica on", 2, 0, []int{3, 1, 3}},
		{"a single copy serves everyone", 0, 1, []int{2, 2}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := p.Chooser(tc.src)
			var got []int
			for range tc.want {
				got = append(got, c.Pick(tc.expert))
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("picked %v, want %v", got, tc.want)
			}
		})
	}
}

func TestReplicasShareAnExpertEvenlyWhenRanksRouteAlike(t *testing.T) {
	// Expert 0 on ranks 1 and 3 of 4.
	p, _ := NewPlacement(4, [][]int{{1, 3}})
	for _, pairs := range []int{1, 3, 6} {
		served := make([]int, 4)
		for src := range 4 {
			c := p.Chooser(src)
			for range pairs {
				served[c.Pick(0)]++
			}
		}
		if served[1] != served[3] {
			t.Errorf("with %d pairs from each rank the replicas served %v, want equal shares", pairs, served)
		}
	}
	if got := RankLoad(p, []float64{24}); !slices.Equal(got, []float64{0, 12, 0, 12}) {
		t.Fatalf("RankLoad predicts %v", got)
	}
}
