package profiler

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// peerCase is one call of the peer's count_rows(dist, tokens×topk, experts,
// cap=tokens), written by testdata/count_rows.py from the peer's own function.
type peerCase struct {
	Dist    string  `json:"dist"`
	Tokens  int     `json:"tokens"`
	Experts int     `json:"experts"`
	TopK    int     `json:"topk"`
	Counts  [][]int `json:"counts"` // run-length: [count, how many experts]
	Error   bool    `json:"error"`
}

func (c peerCase) String() string {
	return fmt.Sprintf("%s tokens=%d experts=%d top-k=%d", c.Dist, c.Tokens, c.Experts, c.TopK)
}

func loadPeerCases(t *testing.T) []peerCase {
	t.Helper()
	b, err := os.ReadFile("testdata/count_rows.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases []peerCase
	if err := json.Unmarshal(b, &cases); err != nil {
		t.Fatal(err)
	}
	return cases
}

func (c peerCase) counts(t *testing.T) []int {
	t.Helper()
	var out []int
	for _, run := range c.Counts {
		if len(run) != 2 || run[1] < 1 {
			t.Fatalf("%v: bad run %v in the fixture", c, run)
		}
		for range run[1] {
			out = append(out, run[0])
		}
	}
	if len(out) != c.Experts {
		t.Fatalf("%v: fixture has %d counts", c, len(out))
	}
	return out
}

// checkLoad fails unless counts is a load a router could produce: no
// expert negative or above tokens, tokens×topK rows in all.
func checkLoad(t *testing.T, name string, counts []int, tokens, topK int) {
	t.Helper()
	sum := 0
	for e, x := range counts {
		if x < 0 || x > tokens {
			t.Errorf("%s: expert %d has %d rows of %d tokens", name, e, x, tokens)
			return
		}
		sum += x
	}
	if sum != tokens*topK {
		t.Errorf("%s: counts sum to %d, want tokens×top-k = %d", name, sum, tokens*topK)
	}
}

func TestCappedCountsMatchPeerCountRows(t *testing.T) {
	cases := loadPeerCases(t)
	binds, refused := 0, 0
	for _, c := range cases {
		d, err := ParseRouting(c.Dist, c.Experts, c.TopK)
		if err != nil {
			t.Fatalf("%v: %v", c, err)
		}
		got, err := CappedCounts(d, c.Tokens, c.TopK)
		if c.Error {
			refused++
			if !errors.Is(err, ErrCountsCannotFit) {
				t.Errorf("%v: the peer refuses it; CappedCounts gave %v, %v", c, got, err)
			}
			continue
		}
		if err != nil {
			t.Errorf("%v: %v", c, err)
			continue
		}
		want := c.counts(t)
		for e := range want {
			if got[e] != want[e] {
				t.Errorf("%v: expert %d has %d rows, peer %d", c, e, got[e], want[e])
				break
			}
		}
		checkLoad(t, c.String(), got, c.Tokens, c.TopK)

		// Where no expert goes over, the uncapped split is the same load.
		raw, err := FixedCounts(d, c.Tokens*c.TopK)
		if err != nil {
			t.Errorf("%v: FixedCounts: %v", c, err)
			continue
		}
		if maxOf(raw) > c.Tokens {
			binds++
		} else if !slices.Equal(raw, want) {
			t.Errorf("%v: the cap does not bind, yet FixedCounts gives %v, peer %v", c, raw, want)
		}
	}
	// The fixture must exercise the cap, or matching it proves little.
	if binds < 50 || refused < 2 {
		t.Errorf("fixture: the cap binds in %d cases and %d are refused; want ≥ 50 and ≥ 2", binds, refused)
	}
}

func TestCappedCounts(t *testing.T) {
	for _, tc := range []struct {
		name                  string
		dist                  string
		tokens, experts, topK int
		want                  []int
		wantErr               error
	}{
		{name: "one token puts one row on each of top-k experts", dist: "zipf:1.2", tokens: 1, experts: 8, topK: 4,
			want: []int{1, 1, 1, 1, 0, 0, 0, 0}},
		{name: "a hot expert stops at the token count and the rest share its excess", dist: "hot:0:0.9", tokens: 10, experts: 4, topK: 2,
			want: []int{10, 4, 3, 3}},
		{name: "top-k equal to the experts gives every expert every token", dist: "zipf:3", tokens: 5, experts: 4, topK: 4,
			want: []int{5, 5, 5, 5}},
		{name: "a hot expert with every weight has nowhere to send its excess", dist: "hot:0:1", tokens: 10, experts: 4, topK: 2,
			wantErr: ErrCountsCannotFit},
		{name: "more rows than experts × tokens cannot fit", dist: "uniform", tokens: 3, experts: 2, topK: 3,
			wantErr: ErrCountsCannotFit},
		{name: "zero tokens is refused", dist: "uniform", tokens: 0, experts: 2, topK: 1},
		{name: "a moving distribution has no fixed counts", dist: "drift", tokens: 8, experts: 4, topK: 2},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := ParseRouting(tc.dist, tc.experts, tc.topK)
			if err != nil {
				t.Fatal(err)
			}
			got, err := CappedCounts(d, tc.tokens, tc.topK)
			switch {
			case tc.want != nil:
				if err != nil || !slices.Equal(got, tc.want) {
					t.Errorf("got %v, %v; want %v", got, err, tc.want)
				}
			case tc.wantErr != nil:
				if !errors.Is(err, tc.wantErr) {
					t.Errorf("got %v, %v; want %v", got, err, tc.wantErr)
				}
			default:
				if err == nil {
					t.Errorf("got %v, want an error", got)
				}
			}
		})
	}
}

// Sizes the fixture does not hold: every load a fixed distribution gives
// is one a router could produce.
func TestCappedCountsAlwaysFitTheTokens(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for range 2000 {
		experts := 1 + rng.IntN(300)
		topK := 1 + rng.IntN(min(experts, 16))
		tokens := 1 + rng.IntN(20000)
		var dist string
		switch rng.IntN(4) {
		case 0:
			dist = "uniform"
		case 1:
			dist = "seed-uneven"
		case 2:
			dist = fmt.Sprintf("zipf:%.2f", 4*rng.Float64())
		case 3:
			dist = fmt.Sprintf("hot:%d:%.3f", rng.IntN(experts), 0.001+0.998*rng.Float64())
		}
		name := fmt.Sprintf("%s tokens=%d experts=%d top-k=%d", dist, tokens, experts, topK)
		d, err := ParseRouting(dist, experts, topK)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		got, err := CappedCounts(d, tokens, topK)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		checkLoad(t, name, got, tokens, topK)
	}
}

func BenchmarkCappedCounts(b *testing.B) {
	d, _ := ParseRouting("zipf:1.2", 256, 8)
	for b.Loop() {
		CappedCounts(d, 4096, 8)
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

// The steering reaches its target through every router: the grouped
// sigmoid router takes the bias on its scores, in a quarter of the units.
func TestSteeringReachesTargetThroughEveryRouter(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit func(*Config)
	}{
		{"softmax without renormalisation", func(c *Config) { c.Router = kernels.SoftmaxNoNorm }},
		{"grouped sigmoid keeping every group", func(c *Config) { c.Router = kernels.SigmoidGrouped }},
		{"grouped sigmoid keeping 3 of 4 groups, scaled", func(c *Config) {
			c.Router, c.Groups, c.TopKGroups, c.RoutedScale = kernels.SigmoidGrouped, 4, 3, 2.5
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := smallConfig("zipf:1.2")
			tc.edit(&c)
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
		})
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

func TestTraceRoutingReplaysOneLayerOrEveryLayerInTurn(t *testing.T) {
	path := filepath.Join(t.TempDir(), "v2.jsonl")
	os.WriteFile(path, []byte(`{"format":"moetop-trace","version":2,"experts":4,"layers":[3,4]}`+"\n"+
		`{"counts":[[9,1,1,1],[1,9,1,1]]}`+"\n"+`{"counts":[[1,1,9,1],[1,1,1,9]]}`+"\n"), 0o644)
	busiest := func(w []float64) int {
		b := 0
		for i, x := range w {
			if x > w[b] {
				b = i
			}
		}
		return b
	}
	for _, tc := range []struct {
		name, layers string
		want         []int // busiest expert of run steps 0..3
		layer        []int
	}{
		{"all layers step like a forward pass", "all", []int{0, 1, 2, 3}, []int{3, 4, 3, 4}},
		{"one layer by its model number", "4", []int{1, 3, 1, 3}, []int{4, 4, 4, 4}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			spec := TraceRouting(path, tc.layers)
			d, err := ParseRouting(spec, 4, 2)
			if err != nil {
				t.Fatal(err)
			}
			if d.Name() != spec {
				t.Errorf("name %q, want %q", d.Name(), spec)
			}
			l, ok := d.(Layered)
			if !ok {
				t.Fatal("a trace distribution should say its layer")
			}
			for n := range tc.want {
				if b := busiest(d.Weights(n)); b != tc.want[n] || l.Layer(n) != tc.layer[n] {
					t.Errorf("step %d: busiest %d of layer %d, want %d of layer %d", n, b, l.Layer(n), tc.want[n], tc.layer[n])
				}
			}
		})
	}
	for spec, want := range map[string]string{
		"trace@7:" + path:      "layer 7 is not in the trace",
		"trace@x:" + path:      `want "all" or a layer number`,
		"trace@all:":           "needs a file name",
		TraceRouting(path, ""): "",
	} {
		_, err := ParseRouting(spec, 4, 2)
		if (want == "") != (err == nil) || (err != nil && !strings.Contains(err.Error(), want)) {
			t.Errorf("%s: got %v, want %q", spec, err, want)
		}
	}
	if _, err := ParseRouting("trace:"+path, 8, 2); err == nil || !strings.Contains(err.Error(), "has 4 experts, the layer has 8") {
		t.Errorf("a trace of the wrong experts: %v", err)
	}
}
