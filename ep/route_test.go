package ep

import (
	"reflect"
	"slices"
	"testing"
	"time"
)

func TestPlanStepSendsEachTokenToARankOnce(t *testing.T) {
	// Experts 0, 1 on rank 0; 2, 3 on rank 1; top-2.
	p, _ := Contiguous(4, 2)
	ids := [][]int32{
		{0, 1, 0, 2, 2, 3}, // rank 0: local only; split; both remote on rank 1
		{3, 2, 1, 0},       // rank 1: local only; both remote on rank 0
	}
	s, err := PlanStep(p, ids, 2)
	if err != nil {
		t.Fatal(err)
	}
	src0 := s.Sources[0]
	checks := []struct {
		name      string
		got, want any
	}{
		{"rank 0's tokens per destination", src0.Tokens, [][]int32{{0, 1}, {1, 2}}},
		{"rank 0's slots per destination", src0.Slots, [][]int32{{0, 1, 0, -1}, {-1, 2, 2, 3}}},
		{"rank 0's rows per destination and expert", src0.Rows, [][]int{{2, 1, 0, 0}, {0, 0, 2, 1}}},
		{"rank 1's tokens per destination", s.Sources[1].Tokens, [][]int32{{1}, {0}}},
		{"rank 1's slots per destination", s.Sources[1].Slots, [][]int32{{1, 0}, {3, 2}}},
		{"rows each rank's experts run", s.ExpertRows, [][]int{{3, 2, 0, 0}, {0, 0, 3, 2}}},
		{"pairs each rank runs", s.RecvRows, []int{5, 5}},
		{"tokens each rank receives", s.RecvTokens, []int{3, 3}},
		{"tokens sent to other ranks", s.SentTokens, []int{2, 1}},
		{"pairs a transfer without dedup would send", s.SentPairs, []int{3, 2}},
	}
	for _, c := range checks {
		if !reflect.DeepEqual(c.got, c.want) {
			t.Errorf("%s: got %v, want %v", c.name, c.got, c.want)
		}
	}
	tr := s.Traffic(4, 2) // rows of 8 bytes
	if !slices.Equal(tr.SentBytes, []int64{16, 8}) || !slices.Equal(tr.SavedBytes, []int64{8, 8}) || tr.MaxSentBytes != 16 {
		t.Errorf("traffic %+v, want sent [16 8], saved [8 8], max 16", tr)
	}
}

func TestPlanStepRefusesBadRouting(t *testing.T) {
	p, _ := Contiguous(4, 2)
	cases := []struct {
		name string
		ids  [][]int32
		k    int
	}{
		{"an expert past the layer", [][]int32{{0, 4}, {1, 2}}, 2},
		{"a negative expert", [][]int32{{0, -1}, {1, 2}}, 2},
		{"ids that are not whole tokens", [][]int32{{0, 1, 2}, {1, 2}}, 2},
		{"routing for too few ranks", [][]int32{{0, 1}}, 2},
		{"top-0", [][]int32{{}, {}}, 0},
	}
	for _, tc := range cases {
		if _, err := PlanStep(p, tc.ids, tc.k); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func TestPlanStepWithNoTokens(t *testing.T) {
	p, _ := Contiguous(3, 3)
	s, err := PlanStep(p, [][]int32{nil, nil, nil}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if tr := s.Traffic(8, 2); tr.MaxSentBytes != 0 || slices.Max(s.RecvRows) != 0 {
		t.Fatalf("an empty step planned traffic: %+v %v", tr, s.RecvRows)
	}
}

func TestBusGBps(t *testing.T) {
	if got := BusGBps(3e9, 2*time.Second); got != 1.5 {
		t.Errorf("3 GB in 2 s gave %g GB/s", got)
	}
	if got := BusGBps(100, 0); got != 0 {
		t.Errorf("no time gave %g GB/s, want 0", got)
	}
}

func BenchmarkPlanStep(b *testing.B) {
	// dsv3-like: 256 experts, top-8, 4096 tokens on each of 8 ranks.
	const ranks, tokens, k, experts = 8, 4096, 8, 256
	p, _ := Contiguous(experts, ranks)
	ids := make([][]int32, ranks)
	for r := range ids {
		ids[r] = make([]int32, tokens*k)
		for i := range ids[r] {
			ids[r][i] = int32((i*37 + r*11 + i/k*5) % experts)
		}
	}
	for b.Loop() {
		if _, err := PlanStep(p, ids, k); err != nil {
			b.Fatal(err)
		}
	}
}
