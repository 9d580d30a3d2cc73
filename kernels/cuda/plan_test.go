package cuda

import (
	"errors"
	"os"
	"reflect"
	"regexp"
	"strconv"
	"testing"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/profiler"
)

// Tests of the GPU backends' pure logic: they run without a GPU.

const (
	mib32  = kernels.WorkspaceBytes
	handle = kernels.HandleBytes
)

func TestPlansMatchHandCounts(t *testing.T) {
	// T=4 H=8 F=16 E=2 k=1 bf16, counts [3 1]. By hand:
	// weights: router 8·2·2=32, w1 2·8·16·2=512, w2 512        = 1056
	// x 4·8·2=64, logits 4·2·4=32, out 64                     =  160
	// index: 3 arrays of 4 rows × 4 B = 48, counts etc 3·2·4=24,
	//        router bias 2·4=8                                =   80
	// common                                                  = 1296
	// dense: permuted x 64, h 4·16·2=128, y 64                 =  256
	// padded (capacity 3): x 2·3·8·2=96, h 2·3·16·2=192, y 96  =  384
	small := kernels.Shape{Tokens: 4, Hidden: 8, FFN: 16, Experts: 2, TopK: 1, DType: kernels.BF16}
	// T=3 H=5 F=7 E=3 k=2 fp32 (4 B), counts [2 2 2], capacity factor 1.5:
	// weights 5·3·4=60 + 2·3·5·7·4=840                    = 900
	// x 3·5·4=60, logits 3·3·4=36, out 60                 = 156
	// index 3·6·4=72 + 3·3·4=36 + bias 3·4=12             = 120
	// common                                              = 1176
	// dense: 6·5·4=120, 6·7·4=168, 120                    = 408
	// padded capacity ceil(1.5·6/3)=3: 3·3·5·4=180, 3·3·7·4=252, 180 = 612
	odd := kernels.Shape{Tokens: 3, Hidden: 5, FFN: 7, Experts: 3, TopK: 2, DType: kernels.FP32, CapacityFactor: 1.5}
	// Gated (swiglu), the small shape's w1 is 2·8·32·2=1024 (+512) and h
	// is 4·32·2=256 (+128) dense, 2·3·32·2=384 (+192) padded.
	gated := small
	gated.Act = kernels.SwiGLU
	// One shared expert of the routed width on the small shape: w1 8·16·2
	// =256, w2 256, h 4·16·2=128, y 4·8·2=64 (=704), plus its workspace
	// and handle. Two gated ones of width 3: w1 8·12·2=192, w2 6·8·2=96,
	// h 4·12·2=96, y 64 (=448).
	shared := small
	shared.SharedExperts = 1
	sharedGated := gated
	sharedGated.SharedExperts, sharedGated.SharedFFN = 2, 3
	cases := []struct {
		name    string
		s       kernels.Shape
		counts  []int
		backend string
		want    uint64
	}{
		{"gated: w1 and h are twice as wide", gated, []int{3, 1}, "loop", 1296 + 512 + 256 + 128 + mib32 + handle},
		{"gated padded", gated, []int{3, 1}, "padded", 1296 + 512 + 384 + 192 + mib32 + handle},
		{"a shared expert brings its stream's handle", shared, []int{3, 1}, "loop", 1296 + 256 + 704 + 2*mib32 + 2*handle},
		{"gated shared experts of their own width", sharedGated, []int{3, 1}, "grouped",
			1296 + 512 + 256 + 128 + 6*2*8 + 448 + 2*mib32 + 2*handle},
		{"loop holds the dense rows and one handle", small, []int{3, 1}, "loop", 1296 + 256 + mib32 + handle},
		{"grouped adds pointer arrays", small, []int{3, 1}, "grouped", 1296 + 256 + 6*2*8 + mib32 + handle},
		{"streams has a workspace per stream", small, []int{3, 1}, "streams", 1296 + 256 + 4*mib32 + 5*handle},
		{"padded pads to the busiest expert", small, []int{3, 1}, "padded", 1296 + 384 + mib32 + handle},
		{"hybrid has two handles and workspaces", small, []int{3, 1}, "hybrid", 1296 + 256 + 96 + 2*mib32 + 2*handle},
		{"fp32 loop", odd, []int{2, 2, 2}, "loop", 1176 + 408 + mib32 + handle},
		{"capacity factor sets padding", odd, []int{2, 2, 2}, "padded", 1176 + 612 + mib32 + handle},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := kernels.Plan(tc.backend, tc.s, tc.counts)
			if err != nil {
				t.Fatal(err)
			}
			if got := kernels.Total(plan); got != tc.want {
				t.Errorf("plan %d bytes, hand count %d", got, tc.want)
			}
		})
	}
}

// Every buffer the shared steps and a backend's runner read is in its
// plan, once: a name or ID mistake here would otherwise be a null pointer
// in a kernel, found only on a GPU.
func TestEveryGPUPlanHoldsWhatItsStepsRead(t *testing.T) {
	s := kernels.Shape{Tokens: 64, Hidden: 32, FFN: 48, Experts: 8, TopK: 2, DType: kernels.BF16}
	counts := []int{40, 30, 20, 10, 10, 10, 5, 3}
	if len(gpuBackends) == 0 {
		t.Fatal("no GPU backend registered")
	}
	shared := s
	shared.Act, shared.SharedExperts = kernels.GeGLU, 2
	for name, g := range gpuBackends {
		for _, c := range [][]int{nil, counts} {
			for _, s := range []kernels.Shape{s, shared} {
				checkOnePlan(t, name, g, s, c)
			}
		}
	}
}

func checkOnePlan(t *testing.T, name string, g gpuBackend, s kernels.Shape, c []int) {
	t.Helper()
	plan, err := g.reg.Plan(s, c)
	if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if err := checkPlan(name, plan, g.newRunner(), s); err != nil {
		t.Errorf("%s: %v", name, err)
	}
	seen := map[kernels.BufferID]string{}
	for _, b := range plan {
		if prev, dup := seen[b.ID]; dup && b.ID != kernels.BufCuBLAS {
			t.Errorf("%s: %q and %q share buffer ID %d", name, prev, b.Name, b.ID)
		}
		seen[b.ID] = b.Name
	}
}

func TestCheckPlanNamesWhatIsMissing(t *testing.T) {
	s := kernels.Shape{Tokens: 4, Hidden: 8, FFN: 16, Experts: 2, TopK: 1, DType: kernels.BF16}
	plan, _ := loopPlan(s, nil) // no pointer arrays, which grouped reads
	if err := checkPlan("grouped", plan, &grouped{}, s); err == nil {
		t.Error("a plan without the pointer arrays passed for grouped")
	}
	if err := checkPlan("loop", plan, &loop{}, s); err != nil {
		t.Errorf("loop's own plan: %v", err)
	}
	shared := s
	shared.SharedExperts = 1
	if err := checkPlan("loop", plan, &loop{}, shared); err == nil {
		t.Error("a plan without the shared experts' buffers passed for a shape with shared experts")
	}
}

// withEverything is a Hopper GPU whose cuBLAS has the grouped GEMM, with
// the hopper backend allowed: every GPU backend can run there.
func withEverything(t *testing.T) kernels.Caps {
	t.Setenv(UnverifiedHopperEnv, "1")
	return kernels.Caps{GPU: true, GroupedGEMM: true, Major: 9, Minor: 0}
}

func TestGPUBackendsRegisterWhatTheyNeed(t *testing.T) {
	gpu := withEverything(t)
	old := kernels.Caps{GPU: true, Major: 9, Minor: 0}
	for _, name := range kernels.GPUNames() {
		r, _ := kernels.Lookup(name)
		if r.Doc == "" || !r.NeedsGPU {
			t.Errorf("%s: doc %q, needs a GPU %v", name, r.Doc, r.NeedsGPU)
		}
		if err := r.Check(gpu, kernels.Shape{TopK: MaxTopK}); err != nil {
			t.Errorf("%s refuses a GPU with everything: %v", name, err)
		}
		err := r.Check(gpu, kernels.Shape{TopK: MaxTopK + 1})
		if !errors.Is(err, kernels.ErrUnsupported) {
			t.Errorf("%s takes top-k %d, over the router's limit: %v", name, MaxTopK+1, err)
		}
		if err := r.Check(kernels.Caps{NoGPU: "no driver"}, kernels.Shape{}); !errors.Is(err, kernels.ErrNoGPU) {
			t.Errorf("%s without a GPU: %v, want ErrNoGPU", name, err)
		}
		// Only the backends that call the grouped GEMM need it.
		_, usesGrouped := map[string]bool{"grouped": true, "hybrid": true}[name]
		if err := r.Check(old, kernels.Shape{}); (err != nil) != usesGrouped {
			t.Errorf("%s on a cuBLAS without the grouped GEMM: %v", name, err)
		}
	}
	if d, ok := kernels.DenseBackend(true); !ok || d != "loop" {
		t.Errorf("dense reference %q, want loop (a plain GemmEx pair)", d)
	}
}

// layer.cu's router, cuda.MaxTopK and the config must agree: a top-k the
// config accepts and the kernel cannot take overruns its local arrays.
func TestMaxTopKAgreesWithTheRouterKernelAndTheConfig(t *testing.T) {
	src, err := os.ReadFile("layer.cu")
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^#define MAX_TOP_K (\d+)$`).FindSubmatch(src)
	if m == nil {
		t.Fatal("layer.cu defines no MAX_TOP_K")
	}
	kernel, _ := strconv.Atoi(string(m[1]))
	if kernel != MaxTopK || MaxTopK != profiler.MaxTopK {
		t.Errorf("layer.cu MAX_TOP_K %d, cuda.MaxTopK %d, profiler.MaxTopK %d: want all equal", kernel, MaxTopK, profiler.MaxTopK)
	}
	if n := len(regexp.MustCompile(`\[MAX_TOP_K\]`).FindAll(src, -1)); n != 2 {
		t.Errorf("%d arrays sized MAX_TOP_K in layer.cu, want the router's two", n)
	}
}

// layer.cu's router constants are kernels': the group limit, and the
// router kinds the host passes as numbers.
func TestLayerCURouterConstantsAgreeWithKernels(t *testing.T) {
	src, err := os.ReadFile("layer.cu")
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]int{
		"MAX_GROUPS":             kernels.MaxGroups,
		"ROUTER_SOFTMAX":         int(kernels.Softmax),
		"ROUTER_SOFTMAX_NONORM":  int(kernels.SoftmaxNoNorm),
		"ROUTER_SIGMOID_GROUPED": int(kernels.SigmoidGrouped),
	} {
		m := regexp.MustCompile(`(?m)^#define ` + name + ` (\d+)$`).FindSubmatch(src)
		if m == nil {
			t.Errorf("layer.cu defines no %s", name)
			continue
		}
		if got, _ := strconv.Atoi(string(m[1])); got != want {
			t.Errorf("layer.cu's %s is %d, kernels' %d", name, got, want)
		}
	}
	if n := len(kernels.RouterNames()); n != 3 {
		t.Errorf("kernels has %d routers; layer.cu's route knows 3: teach it the new one", n)
	}
}

func TestBusiestFirst(t *testing.T) {
	for _, c := range []struct {
		name   string
		counts []int
		want   []int
	}{
		{"empty experts are left out", []int{0, 3, 0, 1}, []int{1, 3}},
		{"ties keep expert order", []int{2, 5, 2, 5}, []int{1, 3, 0, 2}},
		{"no rows at all", []int{0, 0}, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := busiestFirst(c.counts); !reflect.DeepEqual(got, c.want) {
				t.Errorf("busiestFirst(%v) = %v, want %v", c.counts, got, c.want)
			}
		})
	}
}

func TestGroupRowsMergesEqualRows(t *testing.T) {
	for _, c := range []struct {
		name             string
		counts           []int
		wantRows, wantSz []int
	}{
		{"equal experts form one group", []int{4, 4, 4}, []int{4}, []int{3}},
		{"each size its own group", []int{9, 0, 4, 4, 1}, []int{9, 4, 1}, []int{1, 2, 1}},
		{"no experts, no groups", []int{0, 0}, nil, nil},
	} {
		t.Run(c.name, func(t *testing.T) {
			rows, size := groupRows(busiestFirst(c.counts), c.counts)
			if !reflect.DeepEqual(rows, c.wantRows) || !reflect.DeepEqual(size, c.wantSz) {
				t.Errorf("groups rows %v × %v, want %v × %v", rows, size, c.wantRows, c.wantSz)
			}
			n := 0
			for _, x := range size {
				n += x
			}
			if n != len(busiestFirst(c.counts)) {
				t.Errorf("groups hold %d experts, want every expert with rows", n)
			}
		})
	}
}

func TestHybridSplit(t *testing.T) {
	many := func(busy, small int) []int {
		c := make([]int, 0, busy+small)
		for i := 0; i < busy; i++ {
			c = append(c, HybridRows+100*i)
		}
		for i := 0; i < small; i++ {
			c = append(c, 1+i)
		}
		return c
	}
	for _, c := range []struct {
		name   string
		counts []int
		want   int // experts before the tail
	}{
		{"a long tail goes to the grouped call", many(2, HybridTail), 2},
		{"a short tail stays with GemmEx", many(2, HybridTail-1), 2 + HybridTail - 1},
		{"all small: one grouped call", many(0, 20), 0},
		{"an expert of exactly HybridRows is busy", append(many(0, HybridTail), HybridRows), 1},
		{"all busy: no tail", many(5, 0), 5},
	} {
		t.Run(c.name, func(t *testing.T) {
			order := busiestFirst(c.counts)
			split := hybridSplit(order, c.counts)
			if split != c.want {
				t.Fatalf("split at %d, want %d", split, c.want)
			}
			for _, e := range order[:split] {
				if split < len(order) && c.counts[e] < HybridRows {
					t.Errorf("expert %d (%d rows) is before the tail", e, c.counts[e])
				}
			}
		})
	}
	// The load the hybrid GPU test runs must put experts on both sides.
	s := kernels.Shape{Tokens: 2048, Hidden: 256, FFN: 384, Experts: 64, TopK: 4}
	counts := fixedCounts(t, "zipf:1.2", s)
	order := busiestFirst(counts)
	if split := hybridSplit(order, counts); split == 0 || split == len(order) {
		t.Errorf("zipf:1.2 at %d tokens splits at %d of %d experts: one side is empty", s.Tokens, split, len(order))
	}
}

func TestSpreadGivesTheLeastLoadedStream(t *testing.T) {
	counts := []int{10, 8, 6, 5, 1}
	got := spread(busiestFirst(counts), counts, 2)
	// Loads after each: 10→0 (10,0), 8→1 (10,8), 6→1 (10,14), 5→0
	// (15,14), 1→1 (15,15).
	if want := []int{0, 1, 1, 0, 1}; !reflect.DeepEqual(got, want) {
		t.Errorf("streams %v, want %v", got, want)
	}
}

func TestPaddedCapacityAndOverflow(t *testing.T) {
	s := kernels.Shape{Tokens: 64, Experts: 4, TopK: 1}
	counts := []int{40, 8, 8, 8}
	if c := capacity(s, counts); c != 40 {
		t.Errorf("dropless capacity %d, want the busiest expert's 40", c)
	}
	if n := overflow(counts, 40); n != 0 {
		t.Errorf("dropless: %d rows dropped", n)
	}
	s.CapacityFactor = 1
	if c := capacity(s, counts); c != 16 {
		t.Errorf("capacity at factor 1: %d, want 64/4 = 16", c)
	}
	if n := overflow(counts, 16); n != 24 {
		t.Errorf("%d rows dropped at capacity 16, want 24", n)
	}
	s.CapacityFactor = 1.01
	if c := capacity(s, counts); c != 17 {
		t.Errorf("capacity at factor 1.01: %d, want ceil(16.16) = 17", c)
	}
}

// padded does not fit where the others do: dsv3's layer with zipf:1.2 on
// an 80 GB card where grouped runs and 1 GiB more is taken (context,
// other processes): the busiest expert takes ~24% of 32768 rows, so
// padding every expert to it needs ~66 GB on top of 15 GB of weights.
func TestPaddedDoesNotFitWhereOthersDo(t *testing.T) {
	c := profiler.Config{Tokens: 4096, Hidden: 7168, FFN: 2048, Experts: 256, TopK: 8, DType: kernels.BF16,
		Routing: "zipf:1.2"}
	counts := fixedCounts(t, c.Routing, c.Shape())
	const total = 80 << 30
	own, _ := profiler.Peak("grouped", c, counts)
	free := uint64(total) - own - 1<<30
	m := profiler.Model(c, counts, "grouped", withEverything(t), free, total)
	if len(m.Backends) != len(kernels.GPUNames()) {
		t.Fatalf("the model predicts for %d backends, want every GPU backend's %d", len(m.Backends), len(kernels.GPUNames()))
	}
	for _, b := range m.Backends {
		if b.Refused != "" {
			t.Errorf("%s refused on a GPU with everything: %s", b.Backend, b.Refused)
		}
		if wantFit := b.Backend != "padded"; b.Fits != wantFit {
			t.Errorf("%s: fits=%v (peak %.1f GiB), want %v", b.Backend, b.Fits, float64(b.PeakBytes)/(1<<30), wantFit)
		}
		// The largest token count must fit, and a few more tokens must not.
		at := func(tokens int) uint64 {
			cc := c
			cc.Tokens = tokens
			sc := make([]int, len(counts))
			for i, n := range counts {
				sc[i] = n * tokens / c.Tokens
			}
			p, _ := profiler.Peak(b.Backend, cc, sc)
			return p
		}
		avail := free + m.OwnBytes
		if b.MaxTokens <= 0 || at(b.MaxTokens) > avail || at(b.MaxTokens+8) <= avail {
			t.Errorf("%s: max tokens %d does not bound the memory (%d at max, %d at max+8, %d available)",
				b.Backend, b.MaxTokens, at(b.MaxTokens), at(b.MaxTokens+8), avail)
		}
		if (b.MaxTokens >= c.Tokens) != b.Fits {
			t.Errorf("%s: max tokens %d disagrees with fits=%v at %d tokens", b.Backend, b.MaxTokens, b.Fits, c.Tokens)
		}
	}
	if m.HeadroomBytes != int64(free) || m.OwnBytes != own {
		t.Errorf("running backend's headroom %d, want the free memory %d (it holds its peak already)", m.HeadroomBytes, int64(free))
	}
}

// span is the bytes a row-major GEMM operand touches: rows rows of cols
// elements, ld elements apart, from at.
type span struct{ lo, hi uint64 }

func touched(at ptr, rows, cols, ld, dt int) span {
	if rows == 0 {
		return span{uint64(at), uint64(at)}
	}
	return span{uint64(at), uint64(at) + uint64(((rows-1)*ld+cols)*dt)}
}

// fakeBuffers lays a plan out at addresses far apart, as if allocated,
// and says which buffer each address range is.
func fakeBuffers(plan []kernels.Buffer) (bufs [kernels.NumBufferIDs]ptr, size map[kernels.BufferID]uint64) {
	size = map[kernels.BufferID]uint64{}
	for _, b := range plan {
		if b.ID != kernels.BufCuBLAS {
			bufs[b.ID] = ptr(uint64(b.ID+1) << 40)
			size[b.ID] = b.Bytes
		}
	}
	return bufs, size
}

func within(t *testing.T, what string, sp span, bufs [kernels.NumBufferIDs]ptr, size map[kernels.BufferID]uint64, id kernels.BufferID) {
	t.Helper()
	lo, hi := uint64(bufs[id]), uint64(bufs[id])+size[id]
	if sp.lo < lo || sp.hi > hi {
		t.Errorf("%s touches [%#x, %#x), outside buffer %d [%#x, %#x)", what, sp.lo, sp.hi, id, lo, hi)
	}
}

// Every expert's GEMM operands, gated or not, stay within the buffers the
// plan allocates, and gemm2 reads exactly the rows gemm1 wrote, from the
// start of each (where the activation leaves act(gate)·up): a wrong
// offset here is an out-of-bounds write found only on a GPU.
func TestDenseOperandsStayInTheirBuffers(t *testing.T) {
	counts := []int{5, 0, 3, 1}
	for _, act := range []kernels.Activation{kernels.GELU, kernels.SwiGLU} {
		s := kernels.Shape{Tokens: 3, Hidden: 7, FFN: 5, Experts: 4, TopK: 3, DType: kernels.BF16, Act: act}
		plan, _ := loopPlan(s, counts)
		bufs, size := fakeBuffers(plan)
		dt, c1 := s.DType.Size(), s.W1Cols()
		off := 0
		for e, rows := range counts {
			n, k, ldx, x, w, y := denseOperands(s, &bufs, off, e, false)
			if n != c1 || k != s.Hidden || ldx != k {
				t.Errorf("%v gemm1: N=%d K=%d ldx=%d, want %d, %d, %d", act, n, k, ldx, c1, s.Hidden, s.Hidden)
			}
			within(t, "gemm1 x", touched(x, rows, k, ldx, dt), bufs, size, kernels.BufPermutedX)
			within(t, "gemm1 w", touched(w, k, n, n, dt), bufs, size, kernels.BufW1)
			within(t, "gemm1 y", touched(y, rows, n, n, dt), bufs, size, kernels.BufH)
			h1 := y
			n, k, ldx, x, w, y = denseOperands(s, &bufs, off, e, true)
			if n != s.Hidden || k != s.FFN || ldx != c1 {
				t.Errorf("%v gemm2: N=%d K=%d ldx=%d, want %d, %d, %d", act, n, k, ldx, s.Hidden, s.FFN, c1)
			}
			if x != h1 {
				t.Errorf("%v expert %d: gemm2 reads h at %#x, gemm1 wrote it at %#x", act, e, x, h1)
			}
			within(t, "gemm2 x", touched(x, rows, k, ldx, dt), bufs, size, kernels.BufH)
			within(t, "gemm2 w", touched(w, k, n, n, dt), bufs, size, kernels.BufW2)
			within(t, "gemm2 y", touched(y, rows, n, n, dt), bufs, size, kernels.BufY)
			if e == len(counts)-1 {
				// The last expert ends exactly where the buffers do.
				if got := touched(y, rows, n, n, dt).hi; got != uint64(bufs[kernels.BufY])+size[kernels.BufY] {
					t.Errorf("%v: the last expert's y ends at %#x, not at y's end", act, got)
				}
			}
			off += rows
		}
	}
}

// The padded backend's batched GEMMs (and the grouped GEMM's sizes, which
// come from the same gemmShape) stay within the padded buffers at the
// step's capacity, gated or not.
func TestPaddedOperandsStayInTheirBuffers(t *testing.T) {
	counts := []int{5, 0, 3, 1}
	for _, act := range []kernels.Activation{kernels.SiLU, kernels.GeGLU} {
		s := kernels.Shape{Tokens: 3, Hidden: 7, FFN: 5, Experts: 4, TopK: 3, DType: kernels.FP16, Act: act}
		plan, _ := paddedPlan(s, counts)
		bufs, size := fakeBuffers(plan)
		c, dt := capacity(s, counts), s.DType.Size()
		for _, second := range []bool{false, true} {
			n, k, ldx := gemmShape(s, second)
			xb, yb := kernels.BufPermutedX, kernels.BufH
			if second {
				xb, yb = kernels.BufH, kernels.BufY
			}
			last := s.Experts - 1 // the batch's last matrix, at the largest offset
			within(t, "x", touched(bufs[xb]+ptr(last*c*ldx*dt), c, k, ldx, dt), bufs, size, xb)
			within(t, "y", touched(bufs[yb]+ptr(last*c*n*dt), c, n, n, dt), bufs, size, yb)
		}
		// The activation runs over every padded row of h, 2·ffn wide gated.
		if rows := s.Experts * c; uint64(rows*s.W1Cols()*dt) != size[kernels.BufH] {
			t.Errorf("%v: the activation's %d rows of %d do not fill padded h's %d bytes", act, rows, s.W1Cols(), size[kernels.BufH])
		}
	}
}
