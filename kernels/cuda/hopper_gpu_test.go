package cuda

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
)

// GPU tests of the hopper backend, in the order to read their failures:
// the weight generator, one dense GEMM against the host, the grouped GEMM
// with empty and ragged experts against the host, then the whole layer
// against the CPU reference. They skip without an sm_90 device (the
// kernels are sm_90a code, which runs on nothing else). The kernel tests
// need no MOETOP_UNVERIFIED_HOPPER; the backend test opens the gate
// itself, since checking the backend is what the gate waits for.

// hopperDevice opens device 0 if it is sm_90, and loads the kernels.
func hopperDevice(t testing.TB) (*Device, *Module) {
	t.Helper()
	d, err := OpenDevice("", 0)
	if errors.Is(err, kernels.ErrNoGPU) {
		t.Skip(err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { d.Close() })
	if d.Major != 9 || d.Minor != 0 {
		t.Skipf("no CUDA device with sm_90: %s is sm_%d%d (the kernels are sm_90a code)", d.Name, d.Major, d.Minor)
	}
	m, err := d.Load(hopperProgram)
	if err != nil {
		t.Fatal(err)
	}
	leave, err := d.Enter()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(leave)
	return d, m
}

func toBits(dt kernels.DType, v float32) uint16 {
	if dt == kernels.FP16 {
		return kernels.FloatToHalf(v)
	}
	return kernels.FloatToBF16(v)
}

func fromBits(dt kernels.DType, h uint16) float32 {
	if dt == kernels.FP16 {
		return kernels.HalfToFloat(h)
	}
	return kernels.BF16ToFloat(h)
}

// upload16 stores v (already rounded to dt) as 16-bit values.
func upload16(t *testing.T, d *Device, dt kernels.DType, v []float32) DevicePtr {
	b := make([]byte, 2*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint16(b[2*i:], toBits(dt, x))
	}
	return buffer(t, d, len(b), b)
}

func uploadInts(t *testing.T, d *Device, v []int) DevicePtr {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], uint32(int32(x)))
	}
	return buffer(t, d, len(b), b)
}

// randomRounded is n values uniform in [-scale, scale), rounded to dt.
func randomRounded(rng *rand.Rand, dt kernels.DType, n int, scale float64) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = dt.Round(float32((2*rng.Float64() - 1) * scale))
	}
	return v
}

// gemmCase is one grouped GEMM: experts of counts rows each, out = act(a·wᵀ),
// or, with a gated act, out = act(a·gateᵀ)·(a·upᵀ), n being 2·ffn.
type gemmCase struct {
	name   string
	dt     kernels.DType
	counts []int
	n, k   int
	act    kernels.Activation
	fused  bool // apply act (else the kernel's ACT_NONE)
	cfg    hopperConfig
	grid   int // blocks; 0: one per SM
	// lda and ldo, when set, space a's and out's rows wider than k and the
	// output, as the backend's h is (2·ffn wide gated); the gaps hold NaN,
	// so reading or writing one shows.
	lda, ldo int
}

// poisoned is n 16-bit NaNs (0xffff is a NaN in bf16 and fp16).
func poisoned(n int) []byte {
	b := make([]byte, 2*n)
	for i := range b {
		b[i] = 0xff
	}
	return b
}

// runGEMMCase runs c on the device and compares every row with a float64
// host GEMM of the same rounded inputs; a row past the last, and the gaps
// between rows, must stay as poisoned (NaN), proving the stores are
// masked. Gated, the weights go up in the kernel's interleaved layout
// (hopperW1Row) and the host reference multiplies the logical gate and up
// columns: the test holds the layout and the epilogue to each other.
func runGEMMCase(t *testing.T, d *Device, m *Module, c gemmCase) {
	// A subtest runs on a goroutine (an OS thread) of its own, where the
	// context must be made current again for the launch.
	leave, err := d.Enter()
	if err != nil {
		t.Fatal(err)
	}
	defer leave()
	rng := rand.New(rand.NewPCG(uint64(len(c.name)), uint64(c.n*c.k)))
	experts := len(c.counts)
	offsets := make([]int, experts)
	rows := 0
	for e, n := range c.counts {
		offsets[e] = rows
		rows += n
	}
	gated := c.fused && c.act.Gated()
	width := c.n // the output's columns
	if gated {
		width = c.n / 2
	}
	lda, ldo := max(c.lda, c.k), max(c.ldo, width)
	// a as the kernel reads it, lda apart, NaN in the gaps.
	a := randomRounded(rng, c.dt, rows*c.k, 1)
	aBytes := poisoned(rows * lda)
	for r := range rows {
		for k := range c.k {
			binary.LittleEndian.PutUint16(aBytes[2*(r*lda+k):], toBits(c.dt, a[r*c.k+k]))
		}
	}
	// w[e][col][k]: col the logical column (gated: gate's f, then up's
	// F + f); the kernel's row of it is col, or interleaved when gated.
	w := randomRounded(rng, c.dt, experts*c.n*c.k, 1/math.Sqrt(float64(c.k)))
	wk := w
	if gated {
		wk = make([]float32, len(w))
		for e := range experts {
			for n := range c.n {
				col := hopperW1Col(n, width)
				copy(wk[(e*c.n+n)*c.k:(e*c.n+n+1)*c.k], w[(e*c.n+col)*c.k:(e*c.n+col+1)*c.k])
			}
		}
	}
	outBytes := 2 * (rows + 1) * ldo
	op := hopperOperands{DType: c.dt, A: buffer(t, d, len(aBytes), aBytes), W: upload16(t, d, c.dt, wk),
		Out: buffer(t, d, outBytes, poisoned((rows+1)*ldo)), Counts: uploadInts(t, d, c.counts),
		Offsets: uploadInts(t, d, offsets), Rows: rows, Experts: experts, N: c.n, K: c.k, LdA: c.lda, LdOut: c.ldo}
	if c.fused {
		act, err := hopperAct(c.act)
		if err != nil {
			t.Fatal(err)
		}
		op.Act = act
	}
	grid := c.grid
	if grid == 0 {
		var err error
		if grid, err = d.Multiprocessors(); err != nil {
			t.Fatal(err)
		}
	}
	g, err := newHopperGEMM(m, c.cfg, op, grid, 0)
	if err != nil {
		t.Fatal(err)
	}
	if err := g.launch(); err != nil {
		t.Fatal(err)
	}
	raw := download(t, d, op.Out, outBytes)
	got := make([]float32, rows*width)
	for r := range rows {
		for n := range ldo {
			h := binary.LittleEndian.Uint16(raw[2*(r*ldo+n):])
			if n < width {
				got[r*width+n] = fromBits(c.dt, h)
			} else if h != 0xffff {
				t.Fatalf("row %d column %d, past the output's %d, was written (%#04x): a store is not masked", r, n, width, h)
			}
		}
	}
	for i := rows * ldo; i < (rows+1)*ldo; i++ {
		if h := binary.LittleEndian.Uint16(raw[2*i:]); h != 0xffff {
			t.Fatalf("the row after the last was written (column %d: %#04x): a store is not masked", i-rows*ldo, h)
		}
	}
	// The float64 GEMM over logical columns, then the activation on the
	// unrounded sums, as the kernel applies it to its fp32 accumulators.
	full := make([]float32, rows*c.n)
	for e := range experts {
		for r := offsets[e]; r < offsets[e]+c.counts[e]; r++ {
			for n := 0; n < c.n; n++ {
				var sum float64
				for k := 0; k < c.k; k++ {
					sum += float64(a[r*c.k+k]) * float64(w[(e*c.n+n)*c.k+k])
				}
				full[r*c.n+n] = float32(sum)
			}
		}
	}
	want := full
	if c.fused {
		want = kernels.ActivateRows(full, rows, width, c.act)
	}
	tol := 2e-2
	if c.dt == kernels.FP16 {
		tol = 4e-3
	}
	var rms float64
	for _, v := range want {
		rms += float64(v) * float64(v)
	}
	rms = math.Sqrt(rms / float64(max(1, len(want))))
	bad := 0
	for i := range want {
		diff := math.Abs(float64(got[i] - want[i]))
		if math.IsNaN(float64(got[i])) || diff > tol*(math.Abs(float64(want[i]))+rms) {
			if bad == 0 {
				r, n := i/width, i%width
				e := 0
				for e+1 < experts && offsets[e+1] <= r {
					e++
				}
				t.Errorf("expert %d row %d column %d: got %g, want %g", e, r-offsets[e], n, got[i], want[i])
			}
			bad++
		}
	}
	if bad > 0 {
		t.Errorf("%d of %d values off (rel err %.3g)", bad, len(want), kernels.RelErr(got, want))
	}
}

// The kernel rewrites the weights transposed with kernels.Fill's values,
// the values every other backend and the CPU reference hold; gated, the
// gate's and up's rows interleaved (hopperW1Col), still the same values.
func TestHopperTransposedWeightsMatchFill(t *testing.T) {
	d, m := hopperDevice(t)
	const experts, K, N, seed, scale = 3, 40, 48, 7, float32(0.3)
	for _, dt := range []kernels.DType{kernels.BF16, kernels.FP16} {
		for _, gated := range []bool{false, true} {
			f, err := m.Function("hopper_fill_t_" + hopperSuffix(dt))
			if err != nil {
				t.Fatal(err)
			}
			flag := uint32(0)
			if gated {
				flag = 1
			}
			out := buffer(t, d, 2*experts*K*N, nil)
			args := new(Args).Ptr(out).U64(experts).U64(K).U64(N).U64(seed).U32(kernels.TensorW1).F32(scale).U32(flag)
			if err := f.Launch(LaunchConfig{Grid: D(4), Block: D(256)}, args); err != nil {
				t.Fatal(err)
			}
			raw := download(t, d, out, 2*experts*K*N)
			for e := 0; e < experts; e++ {
				for n := 0; n < N; n++ {
					col := n
					if gated {
						col = hopperW1Col(n, N/2)
					}
					for k := 0; k < K; k++ {
						j := (e*N+n)*K + k
						want := toBits(dt, kernels.Fill(seed, kernels.TensorW1, uint64((e*K+k)*N+col), scale))
						if got := binary.LittleEndian.Uint16(raw[2*j:]); got != want {
							t.Fatalf("%v gated %v expert %d row %d (column %d) k %d: %#04x, want %#04x", dt, gated, e, n, col, k, got, want)
						}
					}
				}
			}
		}
	}
}

// Start here: one expert is a plain dense GEMM.
func TestHopperDenseGEMMMatchesTheHost(t *testing.T) {
	d, m := hopperDevice(t)
	var cases []gemmCase
	for _, dt := range []kernels.DType{kernels.BF16, kernels.FP16} {
		for _, s := range []struct{ m, n, k int }{
			{256, 256, 512},   // whole tiles
			{200, 136, 200},   // a ragged edge on every side
			{1, 8, 8},         // smaller than one TMA box
			{1000, 768, 2048}, // a real gemm1's k
		} {
			cases = append(cases, gemmCase{name: fmt.Sprintf("%v %dx%dx%d", dt, s.m, s.n, s.k), dt: dt,
				counts: []int{s.m}, n: s.n, k: s.k, cfg: hopperDefault})
		}
	}
	for _, act := range []kernels.Activation{kernels.GELU, kernels.SiLU} {
		cases = append(cases, gemmCase{name: "bf16 fused " + act.String(), dt: kernels.BF16, counts: []int{200},
			n: 136, k: 200, act: act, fused: true, cfg: hopperDefault})
	}
	// Gated: n is 2·ffn; ffn 72 leaves a ragged last tile of gate/up
	// pairs; the output goes into rows 2·ffn wide, as in the backend.
	for _, act := range []kernels.Activation{kernels.SwiGLU, kernels.GeGLU} {
		for _, dt := range []kernels.DType{kernels.BF16, kernels.FP16} {
			cases = append(cases, gemmCase{name: fmt.Sprintf("%v fused %v", dt, act), dt: dt, counts: []int{200},
				n: 2 * 72, k: 200, act: act, fused: true, cfg: hopperDefault, ldo: 2 * 72})
		}
	}
	// gemm2 after a gated gemm1: a's rows 2·k apart, the second half NaN.
	cases = append(cases, gemmCase{name: "bf16 a's rows strided", dt: kernels.BF16, counts: []int{130}, n: 96, k: 72,
		cfg: hopperDefault, lda: 2 * 72})
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runGEMMCase(t, d, m, c) })
	}
}

// Grouped: experts with no rows, one row, a row tile exactly, tiles that
// straddle an expert's end; more experts than a warp scans at once; an
// expert of more than GROUP_M row tiles (two L2 bands); few blocks, so
// that each runs many tiles around the ring; every compiled configuration.
func TestHopperGroupedGEMMMatchesTheHost(t *testing.T) {
	d, m := hopperDevice(t)
	ragged := []int{0, 130, 1, 0, 255, 128, 37}
	many := make([]int, 128)
	rng := rand.New(rand.NewPCG(1, 2))
	for i := range many {
		if rng.IntN(4) != 0 {
			many[i] = rng.IntN(300)
		}
	}
	many[17] = 1100
	var cases []gemmCase
	for _, cfg := range hopperConfigs {
		cases = append(cases, gemmCase{name: "bf16 ragged " + cfg.String(), dt: kernels.BF16, counts: ragged, n: 200, k: 136, cfg: cfg},
			// Gated in every tile width: a 64-wide tile holds 4 gate/up
			// pairs, and ffn 72 leaves each width a different ragged end.
			gemmCase{name: "bf16 ragged, swiglu " + cfg.String(), dt: kernels.BF16, counts: ragged, n: 2 * 72, k: 136,
				act: kernels.SwiGLU, fused: true, cfg: cfg, ldo: 2 * 72})
	}
	decode := []int{3, 0, 1, 64, 65, 200, 8} // a few rows each, and a hot expert: several 64-row tiles
	cases = append(cases,
		gemmCase{name: "fp16 ragged", dt: kernels.FP16, counts: ragged, n: 200, k: 136, cfg: hopperDefault},
		gemmCase{name: "fp16 ragged, decode", dt: kernels.FP16, counts: ragged, n: 200, k: 136, cfg: hopperDecode},
		gemmCase{name: "bf16 decode rows, swiglu", dt: kernels.BF16, counts: decode, n: 2 * 136, k: 264, act: kernels.SwiGLU,
			fused: true, cfg: hopperDecode, ldo: 2 * 136},
		gemmCase{name: "fp16 decode rows, geglu, 5 blocks", dt: kernels.FP16, counts: decode, n: 2 * 136, k: 264,
			act: kernels.GeGLU, fused: true, cfg: hopperDecode, grid: 5, ldo: 2 * 136},
		gemmCase{name: "bf16 128 experts, swiglu", dt: kernels.BF16, counts: many, n: 2 * 384, k: 256, act: kernels.SwiGLU,
			fused: true, cfg: hopperDefault, ldo: 2 * 384},
		gemmCase{name: "bf16 128 experts, decode, gemm2 of a gated layer", dt: kernels.BF16, counts: many, n: 256, k: 384,
			cfg: hopperDecode, lda: 2 * 384},
		gemmCase{name: "bf16 ragged on 3 blocks", dt: kernels.BF16, counts: ragged, n: 200, k: 136, cfg: hopperDefault, grid: 3},
		gemmCase{name: "bf16 128 experts, silu", dt: kernels.BF16, counts: many, n: 768, k: 256, act: kernels.SiLU, fused: true, cfg: hopperDefault},
		gemmCase{name: "fp16 128 experts on 5 blocks", dt: kernels.FP16, counts: many, n: 256, k: 768, cfg: hopperDefault, grid: 5},
		gemmCase{name: "all experts empty but one row", dt: kernels.BF16, counts: []int{0, 0, 1, 0}, n: 64, k: 64, cfg: hopperDefault},
	)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) { runGEMMCase(t, d, m, c) })
	}
}

// The backend through kernels.Check, as `moetop check --backends hopper`
// runs it: random shapes it takes (each activation among them, gated
// ones too), experts starved of rows, and layers of qwen3-moe's sizes at
// 1 and 32 rows per expert on average (the decode configuration) and at
// 128 (the prefill one), plain and gated.
func TestHopperBackendMatchesCPUReference(t *testing.T) {
	d, _ := hopperDevice(t)
	t.Setenv(UnverifiedHopperEnv, "1")
	caps := d.Caps()
	reg, _ := kernels.Lookup("hopper")
	b := open(t, "hopper")
	rng := rand.New(rand.NewPCG(12, 34))
	cases, refused := kernels.AcceptedCases(rng, reg, caps, []kernels.DType{kernels.BF16, kernels.FP16}, 12)
	if len(refused) > 0 {
		t.Fatalf("bf16 or fp16 refused: %v", refused)
	}
	gated := 0
	for _, c := range cases {
		if c.Shape.Act.Gated() {
			gated++
		}
	}
	if gated == 0 {
		t.Error("no random case is gated")
	}
	configs := map[hopperConfig]int{}
	for _, act := range []kernels.Activation{kernels.GELU, kernels.SiLU, kernels.SwiGLU, kernels.GeGLU} {
		for _, size := range []struct{ tokens, experts, topK int }{
			{512, 128, 8}, // 32 rows an expert: decode tiles
			{16, 128, 8},  // 1 row an expert
			{1024, 16, 2}, // 128 rows an expert: prefill tiles
		} {
			s := kernels.Shape{Tokens: size.tokens, Hidden: 2048, FFN: 768, Experts: size.experts, TopK: size.topK,
				DType: kernels.BF16, Act: act, Seed: 3}
			configs[hopperConfigFor(s)]++
			cases = append(cases, kernels.CheckCase{Backend: "hopper", Starve: 5, Shape: s})
		}
	}
	if configs[hopperDecode] == 0 || configs[hopperDefault] == 0 {
		t.Errorf("cases per configuration %v: want both the decode and the prefill one", configs)
	}
	zeroRows := 0
	for _, c := range cases {
		r := kernels.Check(context.Background(), b, c, rng)
		if !r.Pass() {
			t.Errorf("%+v: rel err %.3g (tol %.0e), logits err %.3g, router mismatches %d, err %v",
				c.Shape, r.RelErr, r.Tolerance, r.LogitsErr, r.RouterMismatches, r.Err)
		}
		zeroRows += r.ZeroRowExperts
	}
	if zeroRows == 0 {
		t.Error("no case had an expert with zero rows")
	}
	// The activation is in gemm1: the act phase runs nothing.
	res, err := b.Step(context.Background(), kernels.StepInput{})
	if err != nil {
		t.Fatal(err)
	}
	if act := res.Phases[kernels.PhaseAct]; act > 50*time.Microsecond {
		t.Errorf("act phase took %v; the activation should be fused into gemm1", act)
	}
}

// BenchmarkHopperGEMM times each compiled configuration's kernel alone on
// the qwen3-moe-like layer (hidden 2048, ffn 768, 128 experts, top-8) at
// 8192 tokens (prefill) and 128 (decode: 8 rows per expert on average),
// gemm1 with silu fused, gemm1 gated (swiglu, 2·ffn wide) and gemm2 after
// it, with the loads bench uses, in TFLOP/s of the real rows and in GB/s
// of the active experts' weights read once (what bounds decode):
//
//	go test -run '^$' -bench HopperGEMM ./kernels/cuda
func BenchmarkHopperGEMM(b *testing.B) {
	for _, tokens := range []int{8192, 128} {
		s := kernels.Shape{Tokens: tokens, Hidden: 2048, FFN: 768, Experts: 128, TopK: 8, DType: kernels.BF16}
		b.Run(fmt.Sprintf("tokens=%d", tokens), func(b *testing.B) { benchHopperGEMM(b, s) })
	}
}

func benchHopperGEMM(b *testing.B, s kernels.Shape) {
	d, m := hopperDevice(b)
	rows := s.Rows()
	sms, err := d.Multiprocessors()
	if err != nil {
		b.Fatal(err)
	}
	alloc := func(n int) DevicePtr {
		p, err := d.Alloc(n)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { d.Free(p) })
		return p
	}
	// h and w1 as wide as the gated layer needs; the plain gemm1 uses
	// their first part.
	x, h, y := alloc(2*rows*s.Hidden), alloc(2*rows*2*s.FFN), alloc(2*rows*s.Hidden)
	w1, w2 := alloc(2*s.Experts*s.Hidden*2*s.FFN), alloc(2*s.Experts*s.FFN*s.Hidden)
	fill, err := m.Function("hopper_fill_t_bf16")
	if err != nil {
		b.Fatal(err)
	}
	for i, f := range []struct {
		p             DevicePtr
		experts, k, n int
		gated         uint32
	}{{x, 1, s.Hidden, rows, 0}, {h, 1, 2 * s.FFN, rows, 0}, {w1, s.Experts, s.Hidden, 2 * s.FFN, 1}, {w2, s.Experts, s.FFN, s.Hidden, 0}} {
		args := new(Args).Ptr(f.p).U64(uint64(f.experts)).U64(uint64(f.k)).U64(uint64(f.n)).U64(1).U32(uint32(10 + i)).
			F32(1 / float32(math.Sqrt(float64(f.k)))).U32(f.gated)
		if err := fill.Launch(LaunchConfig{Grid: D(4096), Block: D(256)}, args); err != nil {
			b.Fatal(err)
		}
	}
	for _, routing := range []string{"uniform", "zipf:1.2", "seed-uneven"} {
		counts := fixedCounts(b, routing, s)
		offsets := make([]int, len(counts))
		for e := 1; e < len(counts); e++ {
			offsets[e] = offsets[e-1] + counts[e-1]
		}
		cb, ob := make([]byte, 4*len(counts)), make([]byte, 4*len(counts))
		for e := range counts {
			binary.LittleEndian.PutUint32(cb[4*e:], uint32(counts[e]))
			binary.LittleEndian.PutUint32(ob[4*e:], uint32(offsets[e]))
		}
		cp, op := alloc(len(cb)), alloc(len(ob))
		if err := d.Upload(cp, cb); err != nil {
			b.Fatal(err)
		}
		if err := d.Upload(op, ob); err != nil {
			b.Fatal(err)
		}
		active := 0 // experts with rows: their weights are what a GEMM must read
		for _, n := range counts {
			if n > 0 {
				active++
			}
		}
		for _, cfg := range hopperConfigs {
			for _, g := range []struct {
				name           string
				a, w, out      DevicePtr
				n, k, act      int
				lda, ldo       int
				flops, weights float64 // per launch: real rows' FLOPs, active experts' weight bytes
			}{
				{"gemm1", x, w1, h, s.FFN, s.Hidden, hopperActSiLU, 0, 0, 0, 0},
				{"gemm1-swiglu", x, w1, h, 2 * s.FFN, s.Hidden, hopperActSwiGLU, 0, 2 * s.FFN, 0, 0},
				{"gemm2-gated", h, w2, y, s.Hidden, s.FFN, hopperActNone, 2 * s.FFN, 0, 0, 0},
			} {
				g.flops = 2 * float64(rows) * float64(g.n) * float64(g.k)
				g.weights = 2 * float64(active) * float64(g.n) * float64(g.k)
				// The configuration the backend runs for this shape is marked.
				chosen := ""
				if cfg == hopperConfigFor(s) {
					chosen = "_chosen"
				}
				name := fmt.Sprintf("%s/%dx%d_s%d%s/%s", routing, cfg.BM, cfg.BN, cfg.Stages, chosen, g.name)
				b.Run(name, func(b *testing.B) {
					leave, err := d.Enter() // a goroutine of its own: make the context current
					if err != nil {
						b.Fatal(err)
					}
					defer leave()
					k, err := newHopperGEMM(m, cfg, hopperOperands{DType: s.DType, A: g.a, W: g.w, Out: g.out, Counts: cp,
						Offsets: op, Rows: rows, Experts: s.Experts, N: g.n, K: g.k, Act: g.act, LdA: g.lda, LdOut: g.ldo}, sms, 0)
					if err != nil {
						b.Fatal(err)
					}
					if err := k.launch(); err != nil { // warm-up, and the first launch's errors
						b.Fatal(err)
					}
					if err := d.Synchronize(); err != nil {
						b.Fatal(err)
					}
					b.ResetTimer()
					per, err := timeLaunches(0, b.N, k.launch)
					if err != nil {
						b.Fatal(err)
					}
					b.ReportMetric(g.flops/per.Seconds()/1e12, "TFLOP/s")
					b.ReportMetric(g.weights/per.Seconds()/1e9, "weightGB/s")
				})
			}
		}
	}
}
