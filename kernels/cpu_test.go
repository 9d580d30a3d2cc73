package kernels

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"
)

// refLayer is the layer's semantics written out plainly in float64, with no
// code shared with the backend beyond Fill: the oracle for the oracle.
func refLayer(s Shape, bias []float32) (out []float64, counts []int) {
	t, h, e, k := s.Tokens, s.Hidden, s.Experts, s.TopK
	at := func(tensor uint32, i int, scale float32) float64 {
		return float64(Fill(s.Seed, tensor, uint64(i), scale))
	}
	counts = make([]int, e)
	out = make([]float64, t*h)
	for tok := 0; tok < t; tok++ {
		x := make([]float64, h)
		for i := range x {
			x[i] = at(TensorX, tok*h+i, ScaleX())
		}
		logits := make([]float64, e)
		for ex := 0; ex < e; ex++ {
			for i := 0; i < h; i++ {
				logits[ex] += x[i] * at(TensorRouter, i*e+ex, ScaleRouter(h))
			}
		}
		chosen, weights := refRoute(s.Router, logits, bias, k)
		for j, ex := range chosen {
			counts[ex]++
			y := refFFN(s, x, s.FFN, TensorW1, TensorW2, ex)
			for i := range y {
				out[tok*h+i] += weights[j] * y[i]
			}
		}
		if w := s.SharedWidth(); w > 0 {
			y := refFFN(s, x, w, TensorSharedW1, TensorSharedW2, 0)
			for i := range y {
				out[tok*h+i] += y[i]
			}
		}
	}
	return out, counts
}

// refRoute is the router for one token in float64: the chosen experts and
// their weights.
func refRoute(r Router, logits []float64, bias []float32, k int) ([]int, []float64) {
	e := len(logits)
	b := func(i int) float64 {
		if bias == nil {
			return 0
		}
		return float64(bias[i])
	}
	// byValue lists candidates by v, largest first, ties to the lower index.
	byValue := func(cand []int, v []float64) []int {
		sort.SliceStable(cand, func(a, c int) bool { return v[cand[a]] > v[cand[c]] })
		return cand
	}
	all := make([]int, e)
	for i := range all {
		all[i] = i
	}
	scale := 1.0
	if r.Scale != 0 {
		scale = float64(r.Scale)
	}
	var chosen []int
	var w []float64
	switch r.Kind {
	case Softmax, SoftmaxNoNorm:
		v := make([]float64, e)
		for i := range v {
			v[i] = logits[i] + b(i)
		}
		chosen = byValue(all, v)[:k]
		var z float64
		for _, i := range chosen {
			z += math.Exp(v[i])
		}
		if r.Kind == SoftmaxNoNorm {
			z = 0
			for i := range v {
				z += math.Exp(v[i])
			}
		}
		for _, i := range chosen {
			w = append(w, math.Exp(v[i])/z*scale)
		}
	case SigmoidGrouped:
		g := max(1, r.Groups)
		kept := g
		if r.TopKGroups > 0 {
			kept = r.TopKGroups
		}
		per := e / g
		score, choice := make([]float64, e), make([]float64, e)
		for i := range score {
			score[i] = 1 / (1 + math.Exp(-logits[i]))
			choice[i] = score[i] + b(i)
		}
		groupScore := make([]float64, g)
		groups := make([]int, g)
		for gi := range groups {
			groups[gi] = gi
			members := byValue(append([]int(nil), all[gi*per:(gi+1)*per]...), choice)
			for _, i := range members[:min(2, per)] {
				groupScore[gi] += choice[i]
			}
		}
		var cand []int
		for _, gi := range byValue(groups, groupScore)[:kept] {
			cand = append(cand, all[gi*per:(gi+1)*per]...)
		}
		sort.Ints(cand)
		chosen = byValue(cand, choice)[:k]
		var z float64
		for _, i := range chosen {
			z += score[i]
		}
		for _, i := range chosen {
			w = append(w, score[i]/z*scale)
		}
	}
	return chosen, w
}

// refFFN is one expert (or the shared experts, f wide) on one token x:
// gemm1 from tensor t1 at expert ex's offset, the activation (gated: gate
// columns then up columns), gemm2 from tensor t2.
func refFFN(s Shape, x []float64, f int, t1, t2 uint32, ex int) []float64 {
	h := len(x)
	cols := f
	if s.Act == SwiGLU || s.Act == GeGLU {
		cols = 2 * f
	}
	w1 := func(i, j int) float64 { return float64(Fill(s.Seed, t1, uint64(ex*h*cols+i*cols+j), ScaleW1(h))) }
	w2 := func(j, i int) float64 { return float64(Fill(s.Seed, t2, uint64(ex*f*h+j*h+i), ScaleW2(f))) }
	pre := make([]float64, cols)
	for j := range pre {
		for i := 0; i < h; i++ {
			pre[j] += x[i] * w1(i, j)
		}
	}
	silu := func(v float64) float64 { return v / (1 + math.Exp(-v)) }
	gelu := func(v float64) float64 { return 0.5 * v * (1 + math.Erf(v/math.Sqrt2)) }
	a := make([]float64, f)
	for j := range a {
		switch s.Act {
		case GELU:
			a[j] = gelu(pre[j])
		case SiLU:
			a[j] = silu(pre[j])
		case SwiGLU:
			a[j] = silu(pre[j]) * pre[f+j]
		case GeGLU:
			a[j] = gelu(pre[j]) * pre[f+j]
		}
	}
	y := make([]float64, h)
	for i := range y {
		for j := range a {
			y[i] += a[j] * w2(j, i)
		}
	}
	return y
}

func relErr(got []float32, want []float64) float64 {
	var num, den float64
	for i := range want {
		d := float64(got[i]) - want[i]
		if math.IsNaN(float64(got[i])) {
			return math.Inf(1)
		}
		num += d * d
		den += want[i] * want[i]
	}
	return math.Sqrt(num / den)
}

func TestCPULayerMatchesFloat64Reference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	grouped := func(g, kept int, scale float32) Router {
		return Router{Kind: SigmoidGrouped, Groups: g, TopKGroups: kept, Scale: scale}
	}
	type testCase struct {
		name  string
		shape Shape
		// starve, when ≥ 0, gets a bias so low that the expert gets no rows.
		starve int
	}
	cases := []testCase{
		{"odd sizes, gelu", Shape{Tokens: 37, Hidden: 23, FFN: 45, Experts: 5, TopK: 2, Act: GELU}, -1},
		{"empty expert gets no rows", Shape{Tokens: 29, Hidden: 17, FFN: 33, Experts: 7, TopK: 3, Act: SiLU}, 4},
		{"top-1 of 3", Shape{Tokens: 51, Hidden: 9, FFN: 13, Experts: 3, TopK: 1, Act: GELU}, 0},
		{"every expert chosen", Shape{Tokens: 11, Hidden: 31, FFN: 19, Experts: 4, TopK: 4, Act: SiLU}, -1},
		{"swiglu multiplies silu of the gate by the up projection",
			Shape{Tokens: 23, Hidden: 19, FFN: 27, Experts: 5, TopK: 2, Act: SwiGLU}, 3},
		{"geglu multiplies gelu of the gate by the up projection",
			Shape{Tokens: 17, Hidden: 13, FFN: 9, Experts: 4, TopK: 3, Act: GeGLU}, -1},
		{"swiglu with an odd ffn of 1", Shape{Tokens: 9, Hidden: 5, FFN: 1, Experts: 3, TopK: 2, Act: SwiGLU}, -1},
		{"a shared expert adds a dense ffn over every token",
			Shape{Tokens: 21, Hidden: 15, FFN: 11, Experts: 4, TopK: 2, Act: GELU, SharedExperts: 1}, 1},
		{"two gated shared experts of their own width",
			Shape{Tokens: 19, Hidden: 12, FFN: 10, Experts: 6, TopK: 2, Act: SwiGLU, SharedExperts: 2, SharedFFN: 7}, -1},
		{"softmax without renormalisation keeps the full softmax's shares",
			Shape{Tokens: 31, Hidden: 14, FFN: 12, Experts: 8, TopK: 3, Act: SiLU, Router: Router{Kind: SoftmaxNoNorm}}, 6},
		{"softmax with a routed scale",
			Shape{Tokens: 13, Hidden: 10, FFN: 8, Experts: 5, TopK: 2, Act: GELU, Router: Router{Scale: 2.5}}, -1},
		{"grouped sigmoid keeps two of four groups",
			Shape{Tokens: 41, Hidden: 16, FFN: 12, Experts: 16, TopK: 4, Act: SwiGLU, Router: grouped(4, 2, 2.5)}, 5},
		{"grouped sigmoid with one expert per group",
			Shape{Tokens: 27, Hidden: 11, FFN: 9, Experts: 6, TopK: 2, Act: GELU, Router: grouped(6, 3, 0)}, -1},
		{"grouped sigmoid needing every kept expert",
			Shape{Tokens: 15, Hidden: 9, FFN: 7, Experts: 8, TopK: 4, Act: SiLU, Router: grouped(4, 2, 0)}, -1},
		{"sigmoid over one group is a plain sigmoid top-k",
			Shape{Tokens: 25, Hidden: 13, FFN: 10, Experts: 7, TopK: 3, Act: GeGLU, Router: grouped(0, 0, 0)}, 2},
		{"deepseek-like: swiglu, a shared expert, grouped sigmoid, scale 2.5",
			Shape{Tokens: 33, Hidden: 24, FFN: 8, Experts: 32, TopK: 8, Act: SwiGLU, SharedExperts: 1,
				Router: grouped(8, 4, 2.5)}, 11},
	}
	for i := 0; i < 4; i++ {
		e := 2 + rng.IntN(14)
		s := Shape{Tokens: 1 + rng.IntN(60), Hidden: 1 + rng.IntN(40), FFN: 1 + rng.IntN(50),
			Experts: e, Act: Activation(rng.IntN(int(numActivations))), SharedExperts: rng.IntN(2)}
		s.TopK = 1 + rng.IntN(min(e-1, 8))
		s.Router = randomRouter(rng, RouterKind(i%int(numRouterKinds)), e, s.TopK)
		cases = append(cases, testCase{"random shape", s, rng.IntN(e)})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := tc.shape
			s.DType = FP32
			s.Seed = rng.Uint64()
			var bias []float32
			if tc.starve >= 0 {
				bias = make([]float32, s.Experts)
				for i := range bias {
					bias[i] = float32(rng.NormFloat64() * 0.3)
				}
				bias[tc.starve] = -1e4
			}
			b := NewCPU()
			if err := b.Prepare(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			if err := b.Poison(); err != nil {
				t.Fatal(err)
			}
			res, err := b.Step(context.Background(), StepInput{Bias: bias})
			if err != nil {
				t.Fatal(err)
			}
			out, _ := b.Output()
			want, counts := refLayer(s, bias)
			if e := relErr(out, want); e > 1e-5 {
				t.Errorf("relative error %.3g > 1e-5 (shape %+v)", e, s)
			}
			for ex, c := range counts {
				if res.Rows[ex] != c {
					t.Errorf("expert %d: %d rows, reference %d", ex, res.Rows[ex], c)
				}
			}
			if tc.starve >= 0 && counts[tc.starve] == 0 && res.Rows[tc.starve] != 0 {
				t.Errorf("starved expert %d got %d rows", tc.starve, res.Rows[tc.starve])
			}
			if got := len(res.Overlapped); got != min(1, s.SharedExperts) {
				t.Errorf("%d overlapped phases with %d shared experts, want the shared phase alone", got, s.SharedExperts)
			}
			for _, p := range res.Overlapped {
				if p.Name != PhaseShared || p.Time <= 0 || p.Start < 0 || p.Start+p.Time > res.Total() {
					t.Errorf("shared phase %+v does not lie within the step's %v", p, res.Total())
				}
			}
		})
	}
}

func TestPoisonedOutputFailsComparison(t *testing.T) {
	s := Shape{Tokens: 4, Hidden: 3, FFN: 5, Experts: 2, TopK: 1, DType: FP32}
	b := NewCPU()
	if err := b.Prepare(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	b.Poison()
	out, _ := b.Output()
	want, _ := refLayer(s, nil)
	if e := relErr(out, want); !math.IsInf(e, 1) {
		t.Fatalf("an unwritten output compared with error %g", e)
	}
}

func TestStepBeforePrepare(t *testing.T) {
	if _, err := NewCPU().Step(context.Background(), StepInput{}); err != ErrNotPrepared {
		t.Fatalf("got %v, want ErrNotPrepared", err)
	}
}

func TestTopKTiesPreferLowerIndex(t *testing.T) {
	ids := make([]int32, 3)
	topK([]float32{1, 5, 5, 0, 5, 2}, ids)
	if ids[0] != 1 || ids[1] != 2 || ids[2] != 4 {
		t.Fatalf("got %v, want [1 2 4]", ids)
	}
}

func TestFixedAssignmentMatchesCounts(t *testing.T) {
	counts := []int{7, 0, 3, 2}
	a, err := FixedAssignment(counts, 4, 3)
	if err != nil {
		t.Fatal(err)
	}
	p, err := Permute(a, 4, 3, 4)
	if err != nil {
		t.Fatal(err)
	}
	for e, c := range counts {
		if p.Counts[e] != c {
			t.Errorf("expert %d: %d rows, want %d", e, p.Counts[e], c)
		}
	}
	if _, err := FixedAssignment([]int{1, 1}, 4, 3); err == nil {
		t.Error("counts summing to 2 for 12 rows were accepted")
	}
}

func TestRoundingMatchesKnownValues(t *testing.T) {
	cases := []struct {
		in   float32
		bf16 uint16
		half uint16
	}{
		{1, 0x3f80, 0x3c00},
		{-2, 0xc000, 0xc000},
		{65504, 0x4780, 0x7bff},
		{1e6, 0x4974, 0x7c00},                   // overflows half
		{5.960464477539063e-08, 0x3380, 0x0001}, // smallest half subnormal
		{1.00390625, 0x3f80, 0x3c04},            // bf16 tie rounds to even
	}
	for _, c := range cases {
		if got := FloatToBF16(c.in); got != c.bf16 {
			t.Errorf("bf16(%g) = %#x, want %#x", c.in, got, c.bf16)
		}
		if got := FloatToHalf(c.in); got != c.half {
			t.Errorf("half(%g) = %#x, want %#x", c.in, got, c.half)
		}
	}
	for i := 0; i < 1<<16; i++ {
		f := HalfToFloat(uint16(i))
		if f != f {
			continue
		}
		if back := FloatToHalf(f); back != uint16(i) {
			t.Fatalf("half %#x → %g → %#x", i, f, back)
		}
	}
}

func BenchmarkCPUStep(b *testing.B) {
	s := Shape{Tokens: 256, Hidden: 256, FFN: 1024, Experts: 8, TopK: 2, DType: BF16, Seed: 1}
	c := NewCPU()
	if err := c.Prepare(context.Background(), s); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := c.Step(context.Background(), StepInput{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric((s.GEMMFLOPs()+s.RouterFLOPs())*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOP/s")
}

func TestGEMMInBlocksEqualsOneCall(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, tc := range []struct {
		name    string
		n, k, m int
		flops   int
	}{
		{"row blocks of a few rows", 37, 19, 23, 2 * 19 * 23 * 5},
		{"column blocks when one row is over the budget", 9, 33, 100, 2 * 33 * 20},
		{"one block holds it all", 5, 4, 3, 1 << 30},
		{"a single row", 1, 7, 50, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			a := make([]float32, tc.n*tc.k)
			b := make([]float32, tc.k*tc.m)
			for i := range a {
				a[i] = float32(rng.NormFloat64())
			}
			for i := range b {
				b[i] = float32(rng.NormFloat64())
			}
			want := make([]float32, tc.n*tc.m)
			MatMul(want, a, tc.n, tc.k, b, tc.m)
			got := make([]float32, tc.n*tc.m)
			if err := gemmBlocks(context.Background(), tc.flops, tc.n, tc.k, tc.m, a, b, got); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("element %d: %g in blocks, %g in one call", i, got[i], want[i])
				}
			}
		})
	}
}

// bigShape is a layer whose step takes far longer than the bounds below on
// any CPU: 550 GFLOP of expert GEMMs (tens of seconds on a few cores), in
// about 800 MiB.
var bigShape = Shape{Tokens: 8192, Hidden: 2048, FFN: 8192, Experts: 2, TopK: 1, DType: FP32, Seed: 1}

// bigShared is a layer whose shared expert alone is as slow (550 GFLOP)
// while its routed experts are quick: a cancelled step must not wait for
// the shared experts' goroutine to finish, in about 700 MiB.
var bigShared = Shape{Tokens: 8192, Hidden: 2048, FFN: 64, Experts: 2, TopK: 1, DType: FP32, Seed: 1,
	SharedExperts: 1, SharedFFN: 8192}

func TestCancelledStepEndsWithinSeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: prepares an 800 MiB layer")
	}
	for _, tc := range []struct {
		name  string
		shape Shape
	}{{"inside the routed experts", bigShape}, {"inside the shared experts", bigShared}} {
		t.Run(tc.name, func(t *testing.T) {
			c := NewCPU()
			defer c.Close()
			if err := c.Prepare(context.Background(), tc.shape); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithCancel(context.Background())
			done := make(chan error, 1)
			start := time.Now()
			go func() {
				_, err := c.Step(ctx, StepInput{})
				done <- err
			}()
			time.Sleep(time.Second) // past the router and the permutation, inside a long GEMM
			cancel()
			select {
			case err := <-done:
				if !errors.Is(err, context.Canceled) {
					t.Fatalf("step returned %v after %s; want context.Canceled (did the whole step run?)", err, time.Since(start))
				}
				t.Logf("cancelled step returned after %s", time.Since(start))
			case <-time.After(10 * time.Second):
				t.Fatal("a cancelled step was still running 10 s later")
			}
			// The backend stays usable: a later step on a live ctx starts afresh.
			ctx2, cancel2 := context.WithTimeout(context.Background(), 200*time.Millisecond)
			defer cancel2()
			if _, err := c.Step(ctx2, StepInput{}); !errors.Is(err, context.DeadlineExceeded) {
				t.Errorf("next step: %v, want it to run until its deadline", err)
			}
		})
	}
}

func TestCancelledPrepareReleasesAndSaysSo(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: starts preparing an 800 MiB layer")
	}
	c := NewCPU()
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	err := c.Prepare(ctx, bigShape)
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("prepare: %v, want the deadline's error", err)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Errorf("a cancelled prepare took %s", d)
	}
	if _, err := c.Step(context.Background(), StepInput{}); err != ErrNotPrepared {
		t.Errorf("step after a cancelled prepare: %v, want ErrNotPrepared", err)
	}
}
