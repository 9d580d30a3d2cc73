package cuda

import (
	"context"
	"errors"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
	"time"

	"github.com/moetop/moetop/bench"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/profiler"
)

// needGPU skips, saying why, where there is no GPU (CI).
func needGPU(t testing.TB) *Device {
	t.Helper()
	d, err := OpenDevice("", 0)
	if errors.Is(err, kernels.ErrNoGPU) {
		t.Skipf("skipping: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func open(t testing.TB, name string) *Backend {
	t.Helper()
	b, err := New(name, Options{TimeExperts: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { b.Close() })
	return b
}

var allDTypes = []kernels.DType{kernels.BF16, kernels.FP16, kernels.FP32, kernels.TF32}

func TestBackendsMatchCPUReference(t *testing.T) {
	d := needGPU(t)
	caps := d.Caps()
	d.Close()
	rng := rand.New(rand.NewPCG(42, 7))
	zeroRows := 0
	for _, name := range kernels.GPUNames() {
		reg, _ := kernels.Lookup(name)
		if err := reg.Check(caps, kernels.Shape{}); err != nil {
			t.Logf("skipping %v", err) // hopper off Hopper, or not yet verified
			continue
		}
		b := open(t, name)
		cases, refused := kernels.AcceptedCases(rng, reg, caps, allDTypes, 5)
		for _, why := range refused {
			t.Logf("skipping %s", why)
		}
		for _, c := range cases {
			r := kernels.Check(context.Background(), b, c, rng)
			if !r.Pass() {
				t.Errorf("%s %+v: rel err %.3g (tol %.0e), logits err %.3g, router mismatches %d, err %v",
					name, c.Shape, r.RelErr, r.Tolerance, r.LogitsErr, r.RouterMismatches, r.Err)
			}
			zeroRows += r.ZeroRowExperts
		}
	}
	if zeroRows == 0 {
		t.Error("no case had an expert with zero rows")
	}
}

func TestUnwrittenOutputFailsTheCheck(t *testing.T) {
	needGPU(t)
	b := open(t, "loop")
	s := kernels.Shape{Tokens: 8, Hidden: 16, FFN: 32, Experts: 4, TopK: 2, DType: kernels.BF16}
	if err := b.Prepare(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	b.Poison()
	out, err := b.Output()
	if err != nil {
		t.Fatal(err)
	}
	if e := kernels.RelErr(out, make([]float32, len(out))); !math.IsInf(e, 1) {
		t.Fatalf("poisoned output compared with error %g", e)
	}
}

func TestCapacityFactorDropsOverflow(t *testing.T) {
	needGPU(t)
	b := open(t, "padded")
	s := kernels.Shape{Tokens: 64, Hidden: 32, FFN: 64, Experts: 4, TopK: 1, DType: kernels.BF16, CapacityFactor: 1}
	if err := b.Prepare(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	fixed, _ := kernels.FixedAssignment([]int{40, 8, 8, 8}, 64, 1)
	res, err := b.Step(context.Background(), kernels.StepInput{Fixed: &fixed})
	if err != nil {
		t.Fatal(err)
	}
	// capacity = 1 × 64 / 4 = 16: expert 0 drops 24 rows.
	if res.Dropped != 24 {
		t.Fatalf("dropped %d rows, want 24", res.Dropped)
	}
	out, _ := b.Output()
	dropped := 0
	for tok := 0; tok < 40; tok++ {
		zero := true
		for _, v := range out[tok*32 : (tok+1)*32] {
			zero = zero && v == 0
		}
		if zero {
			dropped++
		}
	}
	if dropped != 24 {
		t.Errorf("%d tokens of expert 0 have a zero output, want the 24 dropped", dropped)
	}
}

// A padded step that cannot fit is an ErrOutOfMemory outcome: memory goes
// back to where it was after Prepare, and the next step that fits runs.
func TestPaddedOutOfMemoryIsAnOutcome(t *testing.T) {
	d := needGPU(t)
	b := open(t, "padded")
	// dsv3's layer at 16384 tokens with zipf:1.2 pads to ~260 GB.
	s := kernels.Shape{Tokens: 16384, Hidden: 7168, FFN: 2048, Experts: 256, TopK: 8, DType: kernels.BF16, Seed: 1}
	if err := b.Prepare(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	base, _, _ := d.MemInfo()
	uniform, _ := kernels.FixedAssignment(fixedCounts(t, "uniform", s), s.Tokens, s.TopK)
	// First a load whose padding fits, as a live run starts, so that the
	// OOM comes from growing buffers that were already there.
	if _, err := b.Step(context.Background(), kernels.StepInput{Fixed: &uniform}); err != nil {
		t.Fatalf("uniform step: %v", err)
	}
	fixed, _ := kernels.FixedAssignment(fixedCounts(t, "zipf:1.2", s), s.Tokens, s.TopK)
	for i := 0; i < 3; i++ {
		if _, err := b.Step(context.Background(), kernels.StepInput{Fixed: &fixed}); !errors.Is(err, kernels.ErrOutOfMemory) {
			t.Fatalf("step %d: %v, want ErrOutOfMemory", i, err)
		}
		after, _, _ := d.MemInfo()
		if diff := math.Abs(float64(after) - float64(base)); diff > 64<<20 {
			t.Errorf("after OOM %d: free memory %d MiB, %d MiB after Prepare: not back to baseline", i, after>>20, base>>20)
		}
	}
	if _, err := b.Step(context.Background(), kernels.StepInput{Fixed: &uniform}); err != nil {
		t.Fatalf("the step after the OOM failed: %v", err)
	}
}

// fixedCounts is the load bench gives routing on s: the peer script's
// count_rows, as profiler.FixedCounts computes it.
func fixedCounts(t testing.TB, routing string, s kernels.Shape) []int {
	t.Helper()
	d, err := profiler.ParseRouting(routing, s.Experts, s.TopK)
	if err != nil {
		t.Fatal(err)
	}
	c, err := profiler.FixedCounts(d, s.Rows())
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func TestPredictedPeakWithin5PercentOfMeasured(t *testing.T) {
	d := needGPU(t)
	shapes := []kernels.Shape{
		{Tokens: 4096, Hidden: 4096, FFN: 14336, Experts: 8, TopK: 2, DType: kernels.BF16, Seed: 1},
		{Tokens: 8192, Hidden: 2048, FFN: 768, Experts: 128, TopK: 8, DType: kernels.BF16, Seed: 2},
		{Tokens: 16384, Hidden: 1024, FFN: 4096, Experts: 8, TopK: 4, DType: kernels.FP32, Seed: 3},
		// Gated experts with two shared experts (their own stream, handle
		// and workspace) and the grouped router.
		{Tokens: 4096, Hidden: 2048, FFN: 1408, Experts: 64, TopK: 6, DType: kernels.BF16, Seed: 4, Act: kernels.SwiGLU,
			SharedExperts: 2, Router: kernels.Router{Kind: kernels.SigmoidGrouped, Groups: 8, TopKGroups: 4, Scale: 2.5}},
	}
	for _, name := range kernels.GPUNames() {
		for _, s := range shapes {
			counts := fixedCounts(t, "zipf:1.2", s)
			fixed, _ := kernels.FixedAssignment(counts, s.Tokens, s.TopK)
			b, err := New(name, Options{TimeExperts: true})
			if err != nil {
				t.Fatal(err)
			}
			before, _, _ := d.MemInfo()
			if err := b.Prepare(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			if _, err := b.Step(context.Background(), kernels.StepInput{Fixed: &fixed}); err != nil {
				t.Fatal(err)
			}
			during, _, _ := d.MemInfo()
			plan, _ := kernels.Plan(name, s, counts)
			predicted := float64(kernels.Total(plan))
			measured := float64(before - during)
			t.Logf("%-8s T=%-5d E=%-3d %s: predicted %8.1f MiB, measured %8.1f MiB (%+.2f%%)", name, s.Tokens,
				s.Experts, s.DType, predicted/(1<<20), measured/(1<<20), 100*(measured-predicted)/predicted)
			if math.Abs(measured-predicted) > 0.05*predicted {
				t.Errorf("%s %+v: predicted %.0f MiB, measured %.0f MiB", name, s, predicted/(1<<20), measured/(1<<20))
			}
			b.Close()
		}
	}
}

// Replaying a captured graph must compute what issuing the GEMMs does.
func TestGraphReplayMatchesDirectLaunch(t *testing.T) {
	needGPU(t)
	s := kernels.Shape{Tokens: 512, Hidden: 96, FFN: 160, Experts: 64, TopK: 4, DType: kernels.BF16, Seed: 5}
	fixed, _ := kernels.FixedAssignment(fixedCounts(t, "zipf:1.2", s), s.Tokens, s.TopK)
	for _, name := range graphedBackends() {
		outs := map[bool][]float32{}
		for _, noGraphs := range []bool{true, false} {
			b, err := New(name, Options{NoGraphs: noGraphs})
			if err != nil {
				t.Fatal(err)
			}
			if err := b.Prepare(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 4; i++ { // the second step captures, the rest replay
				b.Poison()
				if _, err := b.Step(context.Background(), kernels.StepInput{Fixed: &fixed}); err != nil {
					t.Fatal(err)
				}
			}
			outs[noGraphs], _ = b.Output()
			if !noGraphs && len(b.graphs.execs) != 2 {
				t.Errorf("%s: %d graphs captured, want one per GEMM", name, len(b.graphs.execs))
			}
			b.Close()
		}
		if e := kernels.RelErr(outs[false], outs[true]); e != 0 {
			t.Errorf("%s: graph replay differs from direct launch by %g", name, e)
		}
	}
}

// BenchmarkBenchOverhead compares what `moetop bench` reports for the loop
// backend with a bare loop of the same cublasGemmEx calls between two
// events, on the same shape and counts: the bench's own overhead.
func BenchmarkBenchOverhead(b *testing.B) {
	needGPU(b)
	for _, c := range []bench.Case{{Name: "mixtral", Tokens: 8192, Hidden: 4096, FFN: 14336, Experts: 8, TopK: 2},
		{Name: "seed-mid", Tokens: 16384, Hidden: 512, FFN: 2048, Experts: 8, TopK: 4}} {
		b.Run(c.Name, func(b *testing.B) {
			o := bench.Options{Backends: []string{"loop"}, DTypes: []kernels.DType{kernels.BF16}, Dists: []string{"uniform"},
				Reps: 20, Warmup: 3, Open: func(name string) (kernels.Backend, error) { return New(name, Options{NoGraphs: true}) }}
			rs, err := bench.Run(context.Background(), []bench.Case{c}, o)
			if err != nil || rs[1].Status != bench.StatusOK {
				b.Fatalf("bench: %v %+v", err, rs)
			}
			be, err := New("loop", Options{NoGraphs: true})
			if err != nil {
				b.Fatal(err)
			}
			defer be.Close()
			s := kernels.Shape{Tokens: c.Tokens, Hidden: c.Hidden, FFN: c.FFN, Experts: c.Experts, TopK: c.TopK, DType: kernels.BF16, Seed: 1}
			if err := be.Prepare(context.Background(), s); err != nil {
				b.Fatal(err)
			}
			fixed, _ := kernels.FixedAssignment(rs[1].Counts, s.Tokens, s.TopK)
			if _, err := be.Step(context.Background(), kernels.StepInput{Fixed: &fixed}); err != nil {
				b.Fatal(err)
			}
			leave, _ := be.ctx.Enter()
			defer leave()
			var ms []float64
			for i := 0; i < 23; i++ {
				be.record(0)
				be.run.gemm(be, false)
				be.run.gemm(be, true)
				be.record(1)
				span, err := be.phaseSpan(0, 1)
				if err != nil {
					b.Fatal(err)
				}
				if i >= 3 {
					ms = append(ms, span)
				}
			}
			sort.Float64s(ms)
			bare := ms[len(ms)/2]
			b.ReportMetric(rs[1].MedianMS, "bench_ms")
			b.ReportMetric(bare, "bare_ms")
			b.ReportMetric(100*(rs[1].MedianMS-bare)/bare, "overhead_%")
		})
	}
}

// hybrid splits experts between GemmEx and a grouped call on a second
// stream; a zipf load puts experts on both sides of the split.
func TestHybridSplitMatchesCPUReference(t *testing.T) {
	needGPU(t)
	s := kernels.Shape{Tokens: 2048, Hidden: 256, FFN: 384, Experts: 64, TopK: 4, DType: kernels.BF16, Seed: 11}
	counts := fixedCounts(t, "zipf:1.2", s)
	if counts[0] < HybridRows || counts[len(counts)-1] >= HybridRows {
		t.Fatalf("counts %v do not straddle the split at %d rows", counts, HybridRows)
	}
	fixed, _ := kernels.FixedAssignment(counts, s.Tokens, s.TopK)
	b := open(t, "hybrid")
	if err := b.Prepare(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	b.Poison()
	if _, err := b.Step(context.Background(), kernels.StepInput{Fixed: &fixed}); err != nil {
		t.Fatal(err)
	}
	got, _ := b.Output()
	cpu := kernels.NewCPU()
	cpu.Prepare(context.Background(), s)
	cpu.Step(context.Background(), kernels.StepInput{Fixed: &fixed})
	want, _ := cpu.Output()
	if e := kernels.RelErr(got, want); e > s.DType.Tolerance() {
		t.Fatalf("relative error %.3g over %.0e", e, s.DType.Tolerance())
	}
}

// graphedBackends are the GPU backends whose GEMMs replay as CUDA graphs.
func graphedBackends() []string {
	var out []string
	for _, name := range kernels.GPUNames() {
		if g, ok := gpuBackends[name].newRunner().(graphed); ok && g.graphable() {
			out = append(out, name)
		}
	}
	return out
}

// The router kernel takes every top-k the config accepts: past the old
// limit of 16 its candidates must still be sorted and weighted as the CPU
// router does.
func TestRouterTakesEveryTopKTheConfigAccepts(t *testing.T) {
	needGPU(t)
	b := open(t, "loop")
	rng := rand.New(rand.NewPCG(3, 4))
	for _, k := range []int{16, 17, 40, MaxTopK} {
		s := kernels.Shape{Tokens: 97, Hidden: 64, FFN: 96, Experts: 128, TopK: k, DType: kernels.FP32, Seed: uint64(k)}
		r := kernels.Check(context.Background(), b, kernels.CheckCase{Backend: "loop", Shape: s, Starve: 5}, rng)
		if !r.Pass() {
			t.Errorf("top-k %d: rel err %.3g, router mismatches %d, err %v", k, r.RelErr, r.RouterMismatches, r.Err)
		}
	}
}

// Shared experts run on their own stream beside the routed ones, replayed
// graphs included: every backend's output matches the reference, and the
// shared phase lies within the step, after its start.
func TestSharedExpertsRunBesideTheRoutedOnes(t *testing.T) {
	needGPU(t)
	s := kernels.Shape{Tokens: 1024, Hidden: 256, FFN: 192, Experts: 32, TopK: 4, DType: kernels.BF16, Seed: 21,
		Act: kernels.SwiGLU, SharedExperts: 2, SharedFFN: 160,
		Router: kernels.Router{Kind: kernels.SigmoidGrouped, Groups: 8, TopKGroups: 3, Scale: 2.5}}
	fixed, _ := kernels.FixedAssignment(fixedCounts(t, "zipf:1.2", s), s.Tokens, s.TopK)
	cpu := kernels.NewCPU()
	if err := cpu.Prepare(context.Background(), s); err != nil {
		t.Fatal(err)
	}
	if _, err := cpu.Step(context.Background(), kernels.StepInput{Fixed: &fixed}); err != nil {
		t.Fatal(err)
	}
	want, _ := cpu.Output()
	for _, name := range kernels.GPUNames() {
		b, err := New(name, Options{}) // graphs on: the third step on replays them
		if err != nil {
			t.Fatal(err)
		}
		if err := b.Prepare(context.Background(), s); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < 4; i++ {
			b.Poison()
			res, err := b.Step(context.Background(), kernels.StepInput{Fixed: &fixed})
			if err != nil {
				t.Fatalf("%s step %d: %v", name, i, err)
			}
			if len(res.Overlapped) != 1 {
				t.Fatalf("%s: %d overlapped phases, want the shared experts'", name, len(res.Overlapped))
			}
			p := res.Overlapped[0]
			if p.Name != kernels.PhaseShared || p.Time <= 0 || p.Start < 0 || p.Start+p.Time > res.Total()+time.Microsecond {
				t.Errorf("%s step %d: shared phase %+v outside the step's %v", name, i, p, res.Total())
			}
			got, _ := b.Output()
			if e := kernels.RelErr(got, want); e > s.DType.Tolerance() {
				t.Errorf("%s step %d: relative error %.3g over %.0e", name, i, e, s.DType.Tolerance())
			}
		}
		b.Close()
	}
}
