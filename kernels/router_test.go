package kernels

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// Worked by hand: four groups of two experts, sigmoid scores
// σ(3)=.953, σ(-3)=.047 | σ(1)=.731, .731 | σ(.5)=.622, .622 | σ(-1)=.269, .269.
// Group scores (sum of the best two): 1.000, 1.462, 1.245, 0.538, so groups
// 1 and 2 are kept and expert 0, the best single expert, is not chosen.
func TestRoutersChooseAsWorkedByHand(t *testing.T) {
	grouped := Router{Kind: SigmoidGrouped, Groups: 4, TopKGroups: 2}
	four := []float32{3, -3, 1, 1, 0.5, 0.5, -1, -1}
	s := func(x float64) float64 { return 1 / (1 + math.Exp(-x)) }
	cases := []struct {
		name   string
		r      Router
		logits []float32
		bias   []float32
		k      int
		ids    []int32
		w      []float64
	}{
		{"softmax renormalises over the chosen", Router{}, []float32{2, 1, 0}, nil, 1, []int32{0}, []float64{1}},
		{"softmax without renormalisation keeps the full share", Router{Kind: SoftmaxNoNorm}, []float32{2, 1, 0}, nil, 1,
			[]int32{0}, []float64{math.Exp(2) / (math.Exp(2) + math.E + 1)}},
		{"the bias moves the choice and the softmax weights", Router{}, []float32{2, 1, 0}, []float32{0, 0, 3}, 2,
			[]int32{2, 0}, []float64{math.Exp(3) / (math.Exp(3) + math.Exp(2)), math.Exp(2) / (math.Exp(3) + math.Exp(2))}},
		{"a routed scale multiplies the weights", Router{Scale: 2.5}, []float32{0, 0}, nil, 2, []int32{0, 1}, []float64{1.25, 1.25}},
		{"groups are scored by their best two, not their best one", grouped, four, nil, 2,
			[]int32{2, 3}, []float64{0.5, 0.5}},
		{"the bias chooses but does not weight", grouped, four, []float32{0, 0, 0, 0, 0.3, 0, 0, 0}, 2,
			[]int32{4, 2}, []float64{s(0.5) / (s(0.5) + s(1)), s(1) / (s(0.5) + s(1))}},
		{"the grouped router scales after renormalising", Router{Kind: SigmoidGrouped, Groups: 4, TopKGroups: 2, Scale: 2.5},
			four, nil, 4, []int32{2, 3, 4, 5}, []float64{2.5 * s(1) / (2*s(1) + 2*s(0.5)), 2.5 * s(1) / (2*s(1) + 2*s(0.5)),
				2.5 * s(0.5) / (2*s(1) + 2*s(0.5)), 2.5 * s(0.5) / (2*s(1) + 2*s(0.5))}},
		{"every group kept is a plain sigmoid top-k", Router{Kind: SigmoidGrouped, Groups: 4}, four, nil, 1,
			[]int32{0}, []float64{1}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if err := tc.r.Check(len(tc.logits), tc.k); err != nil {
				t.Fatal(err)
			}
			a := tc.r.Route(tc.logits, 1, len(tc.logits), tc.k, tc.bias)
			if !slices.Equal(a.IDs, tc.ids) {
				t.Fatalf("chose %v, want %v", a.IDs, tc.ids)
			}
			for j, w := range tc.w {
				if math.Abs(float64(a.Weights[j])-w) > 1e-6 {
					t.Errorf("weight %d is %g, want %g", j, a.Weights[j], w)
				}
			}
		})
	}
}

func TestRouterCheckRefusesImpossibleRouters(t *testing.T) {
	cases := []struct {
		name       string
		r          Router
		experts, k int
		ok         bool
	}{
		{"the zero router routes anything", Router{}, 7, 3, true},
		{"deepseek-v3's router", Router{Kind: SigmoidGrouped, Groups: 8, TopKGroups: 4, Scale: 2.5}, 256, 8, true},
		{"groups that do not divide the experts", Router{Kind: SigmoidGrouped, Groups: 3}, 8, 2, false},
		{"more kept groups than groups", Router{Kind: SigmoidGrouped, Groups: 4, TopKGroups: 5}, 8, 2, false},
		{"top-k beyond the kept groups' experts", Router{Kind: SigmoidGrouped, Groups: 4, TopKGroups: 1}, 8, 3, false},
		{"top-k filling the kept groups exactly", Router{Kind: SigmoidGrouped, Groups: 4, TopKGroups: 1}, 8, 2, true},
		{"groups on a softmax router", Router{Groups: 2}, 8, 2, false},
		{"more groups than the GPU router holds", Router{Kind: SigmoidGrouped, Groups: 128}, 256, 2, false},
		{"a negative scale", Router{Scale: -1}, 8, 2, false},
		{"a NaN scale", Router{Scale: float32(math.NaN())}, 8, 2, false},
		{"an unknown kind", Router{Kind: numRouterKinds}, 8, 2, false},
	}
	for _, tc := range cases {
		if err := tc.r.Check(tc.experts, tc.k); (err == nil) != tc.ok {
			t.Errorf("%s: Check = %v, want ok=%v", tc.name, err, tc.ok)
		}
	}
}

// The grouped router's sigmoid must be a good sigmoid: the GPU computes it
// with the same operations, so it is checked here once.
func TestSigmoid32IsWithinAFewUlps(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	worst := 0.0
	for i := 0; i < 200000; i++ {
		x := float32(rng.Float64()*160 - 80)
		if i < 4000 {
			x = float32(i-2000) / 100 // densely over [-20, 20)
		}
		want := 1 / (1 + math.Exp(-float64(x)))
		got := float64(Sigmoid32(x))
		worst = max(worst, math.Abs(got-want)/want)
	}
	if worst > 5e-7 {
		t.Errorf("worst relative error %.3g, want ≤ 5e-7 (a few float32 ulps)", worst)
	}
	for _, x := range []float32{-1000, -80, 0, 80, 1000} {
		if v := Sigmoid32(x); v < 0 || v > 1 || math.IsNaN(float64(v)) {
			t.Errorf("Sigmoid32(%g) = %g", x, v)
		}
	}
	if Sigmoid32(0) != 0.5 {
		t.Errorf("Sigmoid32(0) = %g, want 0.5 exactly", Sigmoid32(0))
	}
}

func TestActivationAndRouterNamesRoundTrip(t *testing.T) {
	for _, n := range ActivationNames() {
		a, err := ParseActivation(n)
		if err != nil || a.String() != n {
			t.Errorf("%s: parsed %v, %v", n, a, err)
		}
		b, _ := json.Marshal(a)
		var back Activation
		if err := json.Unmarshal(b, &back); err != nil || back != a {
			t.Errorf("%s: JSON %s read back as %v, %v", n, b, back, err)
		}
	}
	for _, n := range RouterNames() {
		k, err := ParseRouterKind(n)
		if err != nil || k.String() != n {
			t.Errorf("%s: parsed %v, %v", n, k, err)
		}
		b, _ := json.Marshal(k)
		var back RouterKind
		if err := json.Unmarshal(b, &back); err != nil || back != k {
			t.Errorf("%s: JSON %s read back as %v, %v", n, b, back, err)
		}
	}
	if k, err := ParseRouterKind(""); err != nil || k != Softmax {
		t.Errorf("no router named (a moetop/1 log): %v, %v; want softmax", k, err)
	}
	for _, bad := range []string{"relu", "swish"} {
		if _, err := ParseActivation(bad); err == nil {
			t.Errorf("activation %q accepted", bad)
		}
	}
	if _, err := ParseRouterKind("sigmoid"); err == nil {
		t.Error("router \"sigmoid\" accepted")
	}
	if _, err := json.Marshal(Activation(9)); err == nil {
		t.Error("an unknown activation marshalled")
	}
}

// Packing the gated output in place must give what a separate buffer gives.
func TestActivateRowsPacksGatedRowsInPlace(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	for _, act := range []Activation{GELU, SiLU, SwiGLU, GeGLU} {
		for _, f := range []int{1, 2, 7} {
			rows := 5
			cols := act.Columns(f)
			h := make([]float32, rows*cols)
			for i := range h {
				h[i] = float32(rng.NormFloat64())
			}
			want := make([]float32, rows*f)
			for r := 0; r < rows; r++ {
				for j := 0; j < f; j++ {
					x := h[r*cols+j]
					var v float32
					if act.SiLUBased() {
						v = silu(x)
					} else {
						v = gelu(x)
					}
					if act.Gated() {
						v *= h[r*cols+f+j]
					}
					want[r*f+j] = v
				}
			}
			if got := ActivateRows(h, rows, f, act); !slices.Equal(got, want) {
				t.Errorf("%v f=%d: in place %v, separately %v", act, f, got, want)
			}
		}
	}
}

func TestFLOPsCountGatedAndSharedExperts(t *testing.T) {
	s := Shape{Tokens: 10, Hidden: 3, FFN: 5, Experts: 4, TopK: 2}
	cases := []struct {
		name           string
		act            Activation
		shared, sffn   int
		gemm, shrdFLOP float64
	}{
		{"plain experts: 4·rows·H·F", GELU, 0, 0, 4 * 20 * 3 * 5, 0},
		{"gated experts: 6·rows·H·F", SwiGLU, 0, 0, 6 * 20 * 3 * 5, 0},
		{"a shared expert of the routed width", SiLU, 1, 0, 4 * 20 * 3 * 5, 4 * 10 * 3 * 5},
		{"two gated shared experts 7 wide", GeGLU, 2, 7, 6 * 20 * 3 * 5, 6 * 10 * 3 * 14},
	}
	for _, tc := range cases {
		sh := s
		sh.Act, sh.SharedExperts, sh.SharedFFN = tc.act, tc.shared, tc.sffn
		if g := sh.GEMMFLOPs(); g != tc.gemm {
			t.Errorf("%s: GEMM FLOPs %g, want %g", tc.name, g, tc.gemm)
		}
		if g := sh.SharedFLOPs(); g != tc.shrdFLOP {
			t.Errorf("%s: shared FLOPs %g, want %g", tc.name, g, tc.shrdFLOP)
		}
	}
}

func TestPrepareRefusesAnImpossibleTopK(t *testing.T) {
	for _, k := range []int{0, -1, 9} {
		s := Shape{Tokens: 4, Hidden: 8, FFN: 8, Experts: 8, TopK: k, DType: FP32}
		if err := NewCPU().Prepare(context.Background(), s); err == nil {
			t.Errorf("top-%d of 8 experts was prepared; want it refused", k)
		}
	}
}

func TestPoisonCoversTheSharedExpertsOutput(t *testing.T) {
	c := NewCPU()
	s := Shape{Tokens: 4, Hidden: 8, FFN: 8, Experts: 4, TopK: 2, DType: FP32, SharedExperts: 1}
	if err := c.Prepare(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if err := c.Poison(); err != nil {
		t.Fatal(err)
	}
	for i, v := range c.sy {
		if v == v { // not NaN
			t.Fatalf("shared output %d is %v after Poison; a step that skipped the shared experts would pass", i, v)
		}
	}
	if _, err := c.Step(context.Background(), StepInput{}); err != nil {
		t.Fatal(err)
	}
	out, _ := c.Output()
	for i, v := range out {
		if v != v {
			t.Fatalf("output %d is NaN after a step: the shared experts were not recomputed", i)
		}
	}
}
