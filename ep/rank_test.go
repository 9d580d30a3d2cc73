package ep

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
)

// The test that matters: N ranks, each holding its slice of one batch, give
// the same output as the single-device CPU reference over the whole batch.
// Rank r holds tokens [r·T, (r+1)·T) of a batch of N·T (Config's contract),
// which checks more than each rank running the reference on its own tokens
// would: that every token's rows come back to the right rank and position.
func TestRanksMatchTheSingleDeviceReference(t *testing.T) {
	cases := []struct {
		name  string
		shape kernels.Shape // Tokens per rank
		ranks int
		// replicas, when set, is the placement; else contiguous blocks.
		replicas [][]int
		// starve gives these experts a bias so low that they get no rows.
		starve []int
	}{
		{"one rank is the plain layer",
			kernels.Shape{Tokens: 9, Hidden: 8, FFN: 12, Experts: 4, TopK: 2}, 1, nil, nil},
		{"two ranks with odd sizes",
			kernels.Shape{Tokens: 7, Hidden: 13, FFN: 9, Experts: 5, TopK: 2}, 2, nil, nil},
		{"three ranks over uneven blocks with a starved expert",
			kernels.Shape{Tokens: 11, Hidden: 6, FFN: 17, Experts: 5, TopK: 3, Act: kernels.SiLU}, 3, nil, []int{2}},
		{"four ranks, top-3 of 8",
			kernels.Shape{Tokens: 6, Hidden: 16, FFN: 8, Experts: 8, TopK: 3}, 4, nil, nil},
		{"replicas on own and other ranks",
			kernels.Shape{Tokens: 10, Hidden: 5, FFN: 7, Experts: 4, TopK: 2, Act: kernels.SiLU}, 3,
			[][]int{{0, 1, 2}, {0, 2}, {1}, {2, 1}}, nil},
		{"a rank whose only expert gets no rows",
			kernels.Shape{Tokens: 8, Hidden: 9, FFN: 5, Experts: 3, TopK: 1}, 2,
			[][]int{{0}, {0}, {1}}, []int{2}},
		{"more ranks than experts leaves a rank with none",
			kernels.Shape{Tokens: 5, Hidden: 4, FFN: 6, Experts: 3, TopK: 2}, 4, nil, nil},
		{"every expert chosen by every token",
			kernels.Shape{Tokens: 4, Hidden: 7, FFN: 3, Experts: 4, TopK: 4}, 2, [][]int{{1}, {0, 1}, {0}, {1}}, nil},
		{"one token per rank",
			kernels.Shape{Tokens: 1, Hidden: 3, FFN: 2, Experts: 6, TopK: 2}, 3, nil, nil},
		{"gated swiglu experts over three ranks with a starved expert",
			kernels.Shape{Tokens: 9, Hidden: 10, FFN: 7, Experts: 6, TopK: 2, Act: kernels.SwiGLU}, 3, nil, []int{4}},
		{"gated geglu experts with replicas",
			kernels.Shape{Tokens: 8, Hidden: 6, FFN: 5, Experts: 4, TopK: 3, Act: kernels.GeGLU}, 2,
			[][]int{{0, 1}, {1}, {0}, {1, 0}}, nil},
		{"shared experts run on every rank's own tokens",
			kernels.Shape{Tokens: 7, Hidden: 9, FFN: 6, Experts: 4, TopK: 2, Act: kernels.SwiGLU, SharedExperts: 2, SharedFFN: 5}, 2, nil, nil},
		{"deepseek's grouped sigmoid router across ranks",
			kernels.Shape{Tokens: 6, Hidden: 8, FFN: 4, Experts: 8, TopK: 3, Act: kernels.SwiGLU, SharedExperts: 1,
				Router: kernels.Router{Kind: kernels.SigmoidGrouped, Groups: 4, TopKGroups: 2, Scale: 2.5}}, 4, nil, nil},
		{"softmax without renormalisation across ranks",
			kernels.Shape{Tokens: 5, Hidden: 7, FFN: 6, Experts: 6, TopK: 2, Router: kernels.Router{Kind: kernels.SoftmaxNoNorm}}, 3, nil, nil},
	}
	for _, d := range []kernels.DType{kernels.FP32, kernels.BF16} {
		for ci, tc := range cases {
			t.Run(tc.name+" in "+d.String(), func(t *testing.T) {
				s := tc.shape
				s.DType, s.Seed = d, uint64(100+ci)
				var bias []float32
				if tc.starve != nil {
					bias = make([]float32, s.Experts)
					for _, e := range tc.starve {
						bias[e] = -1e4
					}
				}
				p := mustPlacement(t, s.Experts, tc.ranks, tc.replicas)

				whole := s
				whole.Tokens = s.Tokens * tc.ranks
				ref := kernels.NewCPU()
				if err := ref.Prepare(context.Background(), whole); err != nil {
					t.Fatal(err)
				}
				refRes, err := ref.Step(context.Background(), kernels.StepInput{Bias: bias})
				if err != nil {
					t.Fatal(err)
				}
				want, _ := ref.Output()
				route, _ := ref.Routing()

				g, err := NewCPUGroup(Config{Shape: s, Placement: p, Bias: bias}, 10*time.Second)
				if err != nil {
					t.Fatal(err)
				}
				res, err := g.Step(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				var got []float32
				rows := make([]int, s.Experts)
				for r, rr := range res {
					lo, hi := r*s.Tokens*s.TopK, (r+1)*s.Tokens*s.TopK
					if !slices.Equal(rr.Routing.IDs, route.IDs[lo:hi]) {
						t.Fatalf("rank %d routed %v, reference %v", r, rr.Routing.IDs, route.IDs[lo:hi])
					}
					got = append(got, rr.Output...)
					for e, c := range rr.ExpertRows {
						rows[e] += c
						if c > 0 && !slices.Contains(p.Local(r), e) {
							t.Errorf("rank %d ran %d rows of expert %d, which it does not hold", r, c, e)
						}
					}
					if rr.RecvTokens > rr.RecvRows {
						t.Errorf("rank %d received %d tokens for %d rows: deduplication cannot add rows", r, rr.RecvTokens, rr.RecvRows)
					}
					if rr.Phases.Total() <= 0 {
						t.Errorf("rank %d timed no phase", r)
					}
				}
				if !slices.Equal(rows, refRes.Rows) {
					t.Errorf("rows per expert over all ranks %v, reference %v", rows, refRes.Rows)
				}
				for _, e := range tc.starve {
					if rows[e] != 0 {
						t.Errorf("starved expert %d ran %d rows", e, rows[e])
					}
				}
				// fp32 differs from the reference only in the order of the
				// top-k sum; bf16 also rounds each rank's partial sum to
				// bf16 on the wire, as a GPU would send it.
				tol := 1e-6
				if d == kernels.BF16 {
					tol = 8e-3
				}
				if e := kernels.RelErr(got, want); e > tol {
					t.Errorf("relative error %.3g against the reference, want ≤ %g", e, tol)
				}
			})
		}
	}
}

func mustPlacement(t *testing.T, experts, ranks int, replicas [][]int) *Placement {
	t.Helper()
	var p *Placement
	var err error
	if replicas == nil {
		p, err = Contiguous(experts, ranks)
	} else {
		p, err = NewPlacement(ranks, replicas)
	}
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestGroupRunsManySteps(t *testing.T) {
	s := kernels.Shape{Tokens: 5, Hidden: 4, FFN: 3, Experts: 4, TopK: 2, DType: kernels.FP32, Seed: 7}
	g, err := NewCPUGroup(Config{Shape: s, Placement: mustPlacement(t, 4, 2, nil)}, 10*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	var first []float32
	for step := range 3 {
		res, err := g.Step(context.Background())
		if err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		if step == 0 {
			first = res[1].Output
		} else if !slices.Equal(res[1].Output, first) {
			t.Fatalf("step %d gave a different output for the same tokens", step)
		}
	}
}

func TestARankThatNeverStepsEndsTheOthers(t *testing.T) {
	s := kernels.Shape{Tokens: 4, Hidden: 3, FFN: 2, Experts: 3, TopK: 1, DType: kernels.FP32}
	cfg := Config{Shape: s, Placement: mustPlacement(t, 3, 3, nil)}
	fakes := NewFake(3, 200*time.Millisecond)
	errs := make(chan error, 2)
	start := time.Now()
	for r := range 2 { // rank 2 never calls Step
		rk, err := NewRank(cfg, fakes[r])
		if err != nil {
			t.Fatal(err)
		}
		go func() { _, err := rk.Step(context.Background()); errs <- err }()
	}
	for range 2 {
		select {
		case err := <-errs:
			if !errors.Is(err, ErrTimeout) {
				t.Errorf("got %v, want a timeout", err)
			}
			if err != nil && !strings.Contains(err.Error(), "rank 2") {
				t.Errorf("error %q does not name the missing rank 2", err)
			}
		case <-time.After(20 * time.Second):
			t.Fatal("ranks still waiting after 20s: a hang")
		}
	}
	t.Logf("both ranks ended after %v", time.Since(start))
}

func TestACancelledRankEndsTheOthersWithItsCause(t *testing.T) {
	s := kernels.Shape{Tokens: 4, Hidden: 3, FFN: 2, Experts: 2, TopK: 1, DType: kernels.FP32}
	cfg := Config{Shape: s, Placement: mustPlacement(t, 2, 2, nil)}
	fakes := NewFake(2, time.Minute) // far longer than the test may take
	r0, _ := NewRank(cfg, fakes[0])
	r1, _ := NewRank(cfg, fakes[1])
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	done := make(chan error, 1)
	go func() { _, err := r0.Step(context.Background()); done <- err }()
	if _, err := r1.Step(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled rank: got %v", err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrAborted) || !errors.Is(err, context.Canceled) {
			t.Errorf("peer: got %v, want an abort naming the cancellation", err)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("peer still waiting after the cancelled rank aborted")
	}
}

func TestNewRankRefusesMismatchedConfig(t *testing.T) {
	good := kernels.Shape{Tokens: 2, Hidden: 2, FFN: 2, Experts: 4, TopK: 2}
	p4, _ := Contiguous(4, 2)
	p3, _ := Contiguous(3, 2)
	p4x3, _ := Contiguous(4, 3)
	cases := []struct {
		name string
		cfg  Config
	}{
		{"no placement", Config{Shape: good}},
		{"top-k above the experts", Config{Shape: kernels.Shape{Tokens: 2, Hidden: 2, FFN: 2, Experts: 4, TopK: 5}, Placement: p4}},
		{"zero tokens", Config{Shape: kernels.Shape{Hidden: 2, FFN: 2, Experts: 4, TopK: 1}, Placement: p4}},
		{"placement of other experts", Config{Shape: good, Placement: p3}},
		{"placement of other ranks", Config{Shape: good, Placement: p4x3}},
		{"bias of the wrong length", Config{Shape: good, Placement: p4, Bias: []float32{1}}},
	}
	for _, tc := range cases {
		if _, err := NewRank(tc.cfg, NewFake(2, time.Second)[0]); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}

func BenchmarkGroupStep(b *testing.B) {
	s := kernels.Shape{Tokens: 64, Hidden: 128, FFN: 256, Experts: 8, TopK: 2, DType: kernels.BF16, Seed: 1}
	p, _ := Contiguous(8, 4)
	g, err := NewCPUGroup(Config{Shape: s, Placement: p}, time.Minute)
	if err != nil {
		b.Fatal(err)
	}
	for b.Loop() {
		if _, err := g.Step(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
}

// The backend's phases per rank name the shared experts only when the
// layer has them.
func TestCPUBackendReportsTheSharedPhaseWhenThereIsOne(t *testing.T) {
	for _, shared := range []int{0, 1} {
		s := kernels.Shape{Tokens: 4, Hidden: 6, FFN: 5, Experts: 4, TopK: 2, DType: kernels.FP32, Act: kernels.SwiGLU,
			SharedExperts: shared}
		b := &CPUBackend{Ranks: 2}
		if err := b.Prepare(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		res, err := b.Step(context.Background(), kernels.StepInput{})
		if err != nil {
			t.Fatal(err)
		}
		for _, d := range res.Devices {
			n := 0
			for _, p := range d.Phases {
				if p.Name == kernels.PhaseShared {
					n++
				}
			}
			if n != shared {
				t.Errorf("%d shared experts: rank %d has %d shared phases, want %d", shared, d.Device, n, shared)
			}
		}
	}
}
