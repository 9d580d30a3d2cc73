package kernels

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
)

// CheckCase is one backend on one shape.
type CheckCase struct {
	Backend string
	Shape   Shape
	// Starve gets a bias so low that the expert gets no rows (-1: none).
	Starve int
}

// CheckResult is how a backend's output compared with the CPU reference.
type CheckResult struct {
	CheckCase
	RelErr    float64 // ‖gpu − cpu‖ / ‖cpu‖ over the layer output
	LogitsErr float64 // the router GEMM against the CPU's
	Tolerance float64
	// RouterMismatches counts tokens whose top-k or weights differ from
	// Route applied to the backend's own logits.
	RouterMismatches int
	ZeroRowExperts   int
	Err              error
}

// Pass reports whether every comparison held.
func (r CheckResult) Pass() bool {
	return r.Err == nil && r.RelErr <= r.Tolerance && r.LogitsErr <= r.Tolerance && r.RouterMismatches == 0
}

// checkTopK is the largest top-k RandomCases draws: what the config
// accepts (profiler.MaxTopK), which the GPU router must take too.
const checkTopK = 64

// RandomCases draws n shapes per backend and dtype: odd sizes, 1 to 256
// experts, top-k up to 8 (one case in eight up to checkTopK), every
// activation, every router (with groups and a routed scale), shared
// experts in every other case, and an expert starved of rows in most.
// The first four cases of a backend and dtype take each activation once,
// the routers take turns and shared experts come and go, so that a short
// run covers them all.
func RandomCases(rng *rand.Rand, backends []string, dtypes []DType, n int) []CheckCase {
	var cs []CheckCase
	for _, b := range backends {
		for _, d := range dtypes {
			for i := 0; i < n; i++ {
				cs = append(cs, randomCase(rng, b, d, i, true))
			}
		}
	}
	return cs
}

// randomCase draws case i of a backend and dtype. With forms, its
// activation, router kind and shared experts follow i as RandomCases
// says; without, they are drawn too (for a backend that refuses a form).
func randomCase(rng *rand.Rand, backend string, d DType, i int, forms bool) CheckCase {
	e := []int{1, 2, 3, 7, 8, 13, 64, 128, 256}[rng.IntN(9)]
	k := 1 + rng.IntN(min(e, 8))
	if rng.IntN(8) == 0 {
		k = 1 + rng.IntN(min(e, checkTopK))
	}
	s := Shape{Tokens: 1 + rng.IntN(300), Hidden: 1 + rng.IntN(200), FFN: 1 + rng.IntN(300),
		Experts: e, TopK: k, DType: d, Act: Activation(rng.IntN(int(numActivations))), Seed: rng.Uint64()}
	kind, shared := RouterKind((i+1)%int(numRouterKinds)), i%2 == 1
	if forms && i < int(numActivations) {
		s.Act = Activation(i) // the first cases: each activation once
	}
	if !forms {
		kind, shared = RouterKind(rng.IntN(int(numRouterKinds))), rng.IntN(2) == 1
	}
	s.Router = randomRouter(rng, kind, e, k)
	if shared {
		s.SharedExperts = 1 + rng.IntN(2)
		if rng.IntN(2) == 0 {
			s.SharedFFN = 1 + rng.IntN(200)
		}
	}
	starve := -1
	if e > s.TopK && rng.IntN(4) != 0 {
		starve = rng.IntN(e)
	}
	return CheckCase{Backend: backend, Shape: s, Starve: starve}
}

// randomRouter draws a router of kind for top-k of e experts: for the
// grouped router a number of groups that divides e and enough kept groups
// to hold k experts; a routed scale now and then.
func randomRouter(rng *rand.Rand, kind RouterKind, e, k int) Router {
	r := Router{Kind: kind}
	if rng.IntN(3) == 0 {
		r.Scale = []float32{0.5, 2.5}[rng.IntN(2)]
	}
	if kind != SigmoidGrouped {
		return r
	}
	var divisors []int
	for g := 1; g <= min(e, MaxGroups); g++ {
		if e%g == 0 {
			divisors = append(divisors, g)
		}
	}
	r.Groups = divisors[rng.IntN(len(divisors))]
	per := e / r.Groups
	least := (k + per - 1) / per
	r.TopKGroups = least + rng.IntN(r.Groups-least+1)
	return r
}

// Check runs one case on b (already opened for c.Backend): prepare, poison
// the output, one routed step, then the CPU reference on b's routing.
func Check(ctx context.Context, b Checkable, c CheckCase, rng *rand.Rand) (r CheckResult) {
	r.CheckCase, r.Tolerance = c, c.Shape.DType.Tolerance()
	s := c.Shape
	if err := b.Prepare(ctx, s); err != nil {
		r.Err = err
		return r
	}
	bias := make([]float32, s.Experts)
	for i := range bias {
		bias[i] = float32(rng.NormFloat64() * 0.5)
	}
	if c.Starve >= 0 {
		bias[c.Starve] = -1e4
	}
	if err := b.Poison(); err != nil {
		r.Err = err
		return r
	}
	res, err := b.Step(ctx, StepInput{Bias: bias})
	if err != nil {
		r.Err = err
		return r
	}
	got, err := b.Output()
	if err != nil {
		r.Err = err
		return r
	}
	route, err := b.Routing()
	if err != nil {
		r.Err = err
		return r
	}
	logits, err := b.Logits()
	if err != nil {
		r.Err = err
		return r
	}
	// The router must do exactly what Route does to the logits it was
	// given (bar exp's last bits in the weights).
	want := s.Router.Route(logits, s.Tokens, s.Experts, s.TopK, bias)
	for t := 0; t < s.Tokens; t++ {
		for j := 0; j < s.TopK; j++ {
			i := t*s.TopK + j
			if route.IDs[i] != want.IDs[i] || math.Abs(float64(route.Weights[i]-want.Weights[i])) > 1e-5 {
				r.RouterMismatches++
				break
			}
		}
	}
	// A backend's own ids and rows are checked before they index anything:
	// a broken backend fails its check, it does not crash it.
	if len(res.Rows) != s.Experts {
		r.Err = fmt.Errorf("step reported rows for %d experts, the layer has %d", len(res.Rows), s.Experts)
		return r
	}
	counts := make([]int, s.Experts)
	for i, id := range route.IDs {
		if id < 0 || int(id) >= s.Experts {
			r.Err = fmt.Errorf("routing slot %d names expert %d of %d", i, id, s.Experts)
			return r
		}
		counts[id]++
	}
	for e, n := range counts {
		if n != res.Rows[e] {
			r.Err = fmt.Errorf("expert %d: step reported %d rows, routing has %d", e, res.Rows[e], n)
			return r
		}
		if n == 0 {
			r.ZeroRowExperts++
		}
	}
	cpu := NewCPU()
	if err := cpu.Prepare(ctx, s); err != nil {
		r.Err = fmt.Errorf("cpu reference: %w", err)
		return r
	}
	if _, err := cpu.Step(ctx, StepInput{Bias: bias}); err != nil {
		r.Err = fmt.Errorf("cpu reference: %w", err)
		return r
	}
	cpuLogits, _ := cpu.Logits()
	r.LogitsErr = RelErr(logits, cpuLogits)
	if _, err := cpu.Step(ctx, StepInput{Fixed: &route}); err != nil {
		r.Err = fmt.Errorf("cpu reference: %w", err)
		return r
	}
	ref, _ := cpu.Output()
	r.RelErr = RelErr(got, ref)
	return r
}
