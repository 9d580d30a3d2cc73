package profiler

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"path/filepath"
	"sort"
	"testing"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

func TestFixedCountsMatchPeerCountRows(t *testing.T) {
	b, err := os.ReadFile("testdata/count_rows.json")
	if err != nil {
		t.Fatal(err)
	}
	// Produced by count_rows in shared/peer/torch_moe_peer.py.
	var cases []struct {
		Dist    string `json:"dist"`
		Rows    int    `json:"rows"`
		Experts int    `json:"experts"`
		Counts  []int  `json:"counts"`
	}
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	for _, c := range cases {
		d, err := ParseRouting(c.Dist, c.Experts, 1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := FixedCounts(d, c.Rows)
		if err != nil {
			t.Fatal(err)
		}
		for e := range got {
			if got[e] != c.Counts[e] {
				t.Errorf("%s rows=%d experts=%d: expert %d has %d rows, peer %d", c.Dist, c.Rows, c.Experts, e, got[e], c.Counts[e])
				break
			}
		}
	}
}

func TestSharesCapAtOneOverTopK(t *testing.T) {
	s := Shares([]float64{10, 1, 1, 1}, 2)
	if math.Abs(s[0]-0.5) > 1e-12 {
		t.Errorf("hot share %g, want capped at 0.5", s[0])
	}
	sum := 0.0
	for _, x := range s {
		sum += x
	}
	if math.Abs(sum-1) > 1e-12 {
		t.Errorf("shares sum to %g", sum)
	}
}

// run steers the CPU backend's real router and returns the share of rows
// each expert got in every step.
func run(t *testing.T, c Config, steps int) [][]float64 {
	t.Helper()
	l := &Loop{Backend: kernels.NewCPU(), Config: c}
	out := make(chan stream.Sample, steps)
	if err := l.Run(context.Background(), out, steps); err != nil {
		t.Fatal(err)
	}
	var shares [][]float64
	for s := range out {
		row := make([]float64, len(s.Rows))
		for i, r := range s.Rows {
			row[i] = float64(r) / float64(c.Tokens*c.TopK)
		}
		shares = append(shares, row)
	}
	return shares
}

func smallConfig(routing string) Config {
	return Config{Tokens: 1024, Hidden: 32, FFN: 16, Experts: 8, TopK: 2, DType: kernels.FP32,
		Routing: routing, Seed: 7}
}

// The steering settles within 30 steps; over the next 50 every expert's mean
// share must be within 0.01 (absolute) of its target share.
const shareTolerance = 0.01

func TestZipfSteeringReachesTarget(t *testing.T) {
	c := smallConfig("zipf:1.2")
	shares := run(t, c, 80)
	d, _ := ParseRouting(c.Routing, c.Experts, c.TopK)
	target := Shares(d.Weights(0), c.TopK)
	for e := range target {
		mean := 0.0
		for _, s := range shares[30:] {
			mean += s[e]
		}
		mean /= 50
		if math.Abs(mean-target[e]) > shareTolerance {
			t.Errorf("expert %d: mean share %.4f, target %.4f", e, mean, target[e])
		}
	}
}

func TestSeedUnevenRanksExpertsInReportOrder(t *testing.T) {
	c := smallConfig("seed-uneven")
	shares := run(t, c, 60)
	mean := make([]float64, c.Experts)
	for _, s := range shares[30:] {
		for e := range s {
			mean[e] += s[e]
		}
	}
	rank := func(v []float64) []int {
		idx := []int{0, 1, 2, 3, 4, 5, 6, 7}
		sort.Slice(idx, func(a, b int) bool { return v[idx[a]] > v[idx[b]] })
		return idx
	}
	want, got := rank(SeedUneven), rank(mean)
	for i := range want {
		if want[i] != got[i] {
			t.Fatalf("experts by load %v, report's order %v (shares %v)", got, want, mean)
		}
	}
}

func TestDriftMovesTheBusiestExpert(t *testing.T) {
	c := smallConfig("drift:0.4:20")
	shares := run(t, c, 60)
	busiest := func(s []float64) int {
		b := 0
		for e := range s {
			if s[e] > s[b] {
				b = e
			}
		}
		return b
	}
	// Sampled late in each period, once the steering has caught up.
	for period, want := range []int{0, 1, 2} {
		if got := busiest(shares[period*20+18]); got != want {
			t.Errorf("period %d: busiest expert %d, want %d", period, got, want)
		}
	}
}

func TestTraceRoutingFollowsRecordedCounts(t *testing.T) {
	path := filepath.Join(t.TempDir(), "trace.jsonl")
	os.WriteFile(path, []byte(`{"counts":[100,0,0,0,0,0,0,100]}`+"\n\n"+`{"counts":[1,1,1,1,1,1,1,1]}`+"\n"), 0o644)
	d, err := ParseRouting("trace:"+path, 8, 2)
	if err != nil {
		t.Fatal(err)
	}
	if w := d.Weights(2); w[0] != 100 || w[1] != 0 {
		t.Errorf("step 2 should wrap to the first line, got %v", w)
	}
	for name, body := range map[string]string{
		"wrong expert count": `{"counts":[1,2]}`,
		"not json":           "hello",
		"negative":           `{"counts":[1,1,1,1,1,1,1,-1]}`,
		"empty":              "",
	} {
		p := filepath.Join(t.TempDir(), "bad.jsonl")
		os.WriteFile(p, []byte(body), 0o644)
		if _, err := ParseRouting("trace:"+p, 8, 2); err == nil {
			t.Errorf("%s: trace accepted", name)
		}
	}
}
