package cuda

import (
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels"
)

// The hopper backend's capability check, without a GPU: what it refuses
// and that each refusal says why.
func TestHopperRefusesWhatItCannotRun(t *testing.T) {
	h100 := kernels.Caps{GPU: true, Device: "H100", Major: 9, Minor: 0, GroupedGEMM: true}
	ok := kernels.Shape{Tokens: 64, Hidden: 2048, FFN: 768, Experts: 128, TopK: 8, DType: kernels.BF16, Act: kernels.SiLU}
	with := func(f func(*kernels.Shape)) kernels.Shape {
		s := ok
		f(&s)
		return s
	}
	cases := []struct {
		name string
		env  string
		caps kernels.Caps
		s    kernels.Shape
		want string // "" accepts; else a part of the reason
	}{
		{"bf16 on an H100 with the gate open runs", "1", h100, ok, ""},
		{"fp16 runs too", "1", h100, with(func(s *kernels.Shape) { s.DType = kernels.FP16 }), ""},
		{"gelu runs too", "1", h100, with(func(s *kernels.Shape) { s.Act = kernels.GELU }), ""},
		{"swiglu runs: the epilogue multiplies silu(gate) by up", "1", h100, with(func(s *kernels.Shape) { s.Act = kernels.SwiGLU }), ""},
		{"geglu runs too", "1", h100, with(func(s *kernels.Shape) { s.Act = kernels.GeGLU }), ""},
		{"gated fp16 at decode runs", "1", h100, with(func(s *kernels.Shape) {
			s.Act, s.DType, s.Tokens = kernels.SwiGLU, kernels.FP16, 4
		}), ""},
		{"the shape a device check asks about runs", "1", h100, kernels.Shape{}, ""},
		{"without the variable it is refused, saying how to try it", "", h100, ok,
			"not yet checked against the CPU reference on a GPU; set MOETOP_UNVERIFIED_HOPPER=1 to try it"},
		{"the variable must say 1", "yes", h100, ok, "MOETOP_UNVERIFIED_HOPPER=1"},
		{"an Ampere card is refused", "1", kernels.Caps{GPU: true, Major: 8, Minor: 0}, ok, "this device is sm_80"},
		{"a Blackwell card is refused: sm_90a code runs on sm_90 only", "1", kernels.Caps{GPU: true, Major: 10, Minor: 0}, ok, "sm_100"},
		{"fp32 stays on cuBLAS", "1", h100, with(func(s *kernels.Shape) { s.DType = kernels.FP32 }), "fp32 stays on cuBLAS"},
		{"tf32 stays on cuBLAS", "1", h100, with(func(s *kernels.Shape) { s.DType = kernels.TF32 }), "tf32 stays on cuBLAS"},
		{"hidden not a multiple of 8 is refused", "1", h100, with(func(s *kernels.Shape) { s.Hidden = 2044 }), "multiples of 8"},
		{"ffn not a multiple of 8 is refused", "1", h100, with(func(s *kernels.Shape) { s.FFN = 770 }), "multiples of 8"},
		{"gated, ffn not a multiple of 8 is refused, saying gate and up interleave in 8s", "1", h100,
			with(func(s *kernels.Shape) { s.FFN, s.Act = 772, kernels.GeGLU }), "interleave in blocks of 8"},
		{"too many experts for the schedule is refused", "1", h100,
			with(func(s *kernels.Shape) { s.Experts = hopperMaxExperts + 1 }), "at most 8192"},
		{"an activation the epilogue lacks is refused", "1", h100,
			with(func(s *kernels.Shape) { s.Act = kernels.Activation(99) }), "not fused"},
		{"shared experts and the grouped router run: the shared runner does them", "1", h100,
			with(func(s *kernels.Shape) {
				s.SharedExperts = 1
				s.Router = kernels.Router{Kind: kernels.SigmoidGrouped, Groups: 8, TopKGroups: 4, Scale: 2.5}
			}), ""},
	}
	r, found := kernels.Lookup("hopper")
	if !found {
		t.Fatal("hopper is not registered")
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(UnverifiedHopperEnv, c.env)
			err := r.Check(c.caps, c.s)
			if c.want == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if !errors.Is(err, kernels.ErrUnsupported) {
				t.Fatalf("Check = %v, want ErrUnsupported", err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Errorf("reason %q does not say %q", err, c.want)
			}
		})
	}
}

// auto passes hopper over on an H100 until the gate is opened, and lists
// it among the refused with the reason.
func TestAutoSkipsHopperUntilItIsVerified(t *testing.T) {
	caps := kernels.Caps{GPU: true, Major: 9, Minor: 0, GroupedGEMM: true}
	s := kernels.Shape{Tokens: 64, Hidden: 256, FFN: 512, Experts: 8, TopK: 2, DType: kernels.BF16}
	for _, c := range []struct {
		env     string
		listed  bool
		refused bool
	}{{"", false, true}, {"1", true, false}} {
		t.Setenv(UnverifiedHopperEnv, c.env)
		ok, refused := kernels.Candidates(caps, s)
		listed := false
		for _, n := range ok {
			listed = listed || n == "hopper"
		}
		why := ""
		for _, r := range refused {
			if r.Name == "hopper" {
				why = r.Err.Error()
			}
		}
		if listed != c.listed || (why != "") != c.refused {
			t.Errorf("%s=%q: candidate %v, refused %q", UnverifiedHopperEnv, c.env, listed, why)
		}
		if c.refused && !strings.Contains(why, UnverifiedHopperEnv) {
			t.Errorf("the refusal %q does not name %s", why, UnverifiedHopperEnv)
		}
	}
}

// The kernel's dynamic shared memory fits an H100's 227 KiB for every
// compiled configuration at the most experts the check accepts, and the
// plan holds exactly the loop's buffers: the weights are rewritten in
// place and nothing is padded.
func TestHopperSharedMemoryAndPlan(t *testing.T) {
	const h100Shared = 227 << 10
	for _, c := range hopperConfigs {
		if n := c.shared(hopperMaxExperts); n > h100Shared {
			t.Errorf("%v: %d bytes of shared memory at %d experts, over %d", c, n, hopperMaxExperts, h100Shared)
		}
	}
	// 4 stages of 128×64 and 128×64 bf16 tiles, slack, 8 barriers, 129 ints.
	if got, want := hopperDefault.shared(128), 1024+4*(16384+16384)+64+4*129; got != want {
		t.Errorf("default config at 128 experts: %d bytes, want %d", got, want)
	}
	// Decode: 6 stages of 64×64 and 128×64 tiles.
	if got, want := hopperDecode.shared(256), 1024+6*(8192+16384)+96+4*257; got != want {
		t.Errorf("decode config at 256 experts: %d bytes, want %d", got, want)
	}
	for _, act := range []kernels.Activation{kernels.SiLU, kernels.SwiGLU} {
		s := kernels.Shape{Tokens: 8192, Hidden: 2048, FFN: 768, Experts: 128, TopK: 8, DType: kernels.BF16, Act: act}
		hp, _ := kernels.Plan("hopper", s, nil)
		lp, _ := kernels.Plan("loop", s, nil)
		if kernels.Total(hp) != kernels.Total(lp) {
			t.Errorf("%v: hopper plans %d bytes, loop %d: want the same buffers", act, kernels.Total(hp), kernels.Total(lp))
		}
	}
}

func TestHopperKernelNamesMatchTheSource(t *testing.T) {
	for _, name := range hopperProgram.Kernels {
		if !strings.Contains(hopperSource, name) {
			t.Errorf("hopper.cu defines no %s", name)
		}
	}
	if got := hopperDefault.kernel(kernels.FP16); got != "hopper_gemm_fp16_m128_n128_s4" {
		t.Errorf("default fp16 kernel %q", got)
	}
	// The backend runs the default and decode configurations in both
	// dtypes: each is compiled.
	for _, c := range []hopperConfig{hopperDefault, hopperDecode} {
		for _, dt := range []kernels.DType{kernels.BF16, kernels.FP16} {
			if !slices.Contains(hopperProgram.Kernels, c.kernel(dt)) {
				t.Errorf("%s (%v, %v) is not among the program's kernels", c.kernel(dt), c, dt)
			}
		}
	}
}

// Every activation has a kernel code, the gated ones above the plain ones
// by hopperActGated (hopper.cu's ACT_GATED: the epilogue's test for a
// gated form, and the gate's nonlinearity as the code less it).
func TestHopperActCodes(t *testing.T) {
	for _, a := range []kernels.Activation{kernels.GELU, kernels.SiLU, kernels.SwiGLU, kernels.GeGLU} {
		code, err := hopperAct(a)
		if err != nil {
			t.Fatalf("%v: %v", a, err)
		}
		gate := code
		if a.Gated() {
			if code < hopperActGeGLU {
				t.Errorf("%v: code %d, under the gated codes", a, code)
			}
			gate = code - hopperActGated
		} else if code >= hopperActGeGLU {
			t.Errorf("%v: code %d, among the gated codes", a, code)
		}
		if want := map[bool]int{true: hopperActSiLU, false: hopperActGELU}[a.SiLUBased()]; gate != want {
			t.Errorf("%v: the gate's nonlinearity is code %d, want %d", a, gate, want)
		}
	}
	for _, src := range []string{"#define ACT_GELU 1", "#define ACT_SILU 2", "#define ACT_GEGLU 3", "#define ACT_SWIGLU 4", "#define ACT_GATED 2"} {
		if !strings.Contains(hopperSource, src) {
			t.Errorf("hopper.cu has no %q: the codes differ from hopper.go's", src)
		}
	}
}

// The gated layout of w1 (each expert's 2F rows of W1ᵀ, gate and up
// interleaved in blocks of 8) holds every weight once: (expert, gate or
// up, f, k) maps to one place of the buffer and back, and the buffer has
// no place left over. The values in it are then a permutation of the
// other backends' w1, as fill_transposed writes them.
func TestHopperInterleavedW1IsAPermutation(t *testing.T) {
	for _, c := range []struct{ experts, ffn, hidden int }{{1, 8, 8}, {3, 24, 16}, {2, 72, 40}, {2, 768, 8}} {
		n := c.experts * 2 * c.ffn * c.hidden
		seen := make([]bool, n)
		for e := range c.experts {
			for half := range 2 {
				for f := range c.ffn {
					row := hopperW1Row(half, f)
					if row < 0 || row >= 2*c.ffn {
						t.Fatalf("%+v: half %d f %d goes to row %d, outside 2·ffn", c, half, f, row)
					}
					if col := hopperW1Col(row, c.ffn); col != half*c.ffn+f {
						t.Fatalf("%+v: row %d maps back to column %d, want %d", c, row, col, half*c.ffn+f)
					}
					for k := range c.hidden {
						p := (e*2*c.ffn+row)*c.hidden + k
						if seen[p] {
							t.Fatalf("%+v: expert %d half %d f %d k %d lands on a place already taken", c, e, half, f, k)
						}
						seen[p] = true
					}
				}
			}
		}
		for p, ok := range seen {
			if !ok {
				t.Fatalf("%+v: place %d of %d holds no weight", c, p, n)
			}
		}
	}
}

// hopperGatedEpilogue mirrors hopper.cu's store_half_gated for one thread:
// the output column of accumulator pair i (fragment blocks 2i and 2i+1)
// and the GEMM columns its gate and up values come from.
func hopperGatedEpilogue(bn, tileN, i, lane, b int) (out, gateCol, upCol int) {
	out = tileN*(bn/2) + 8*i + 2*(lane%4) + b
	// A thread's fragment: column 8j + 2·(lane%4) + b of the tile for
	// its register 4j + 2·h8 + b (h8 the row half), j = 2i for the gate
	// and 2i+1 for up.
	gateCol = tileN*bn + 8*(2*i) + 2*(lane%4) + b
	upCol = tileN*bn + 8*(2*i+1) + 2*(lane%4) + b
	return out, gateCol, upCol
}

// The gated epilogue multiplies the gate and the up projection of the same
// output column: with the weights interleaved, the fragment column it
// takes the gate from holds the gate's column f, the one it takes up from
// holds up's column f, and f is the column it writes; across a row's
// tiles and threads every output column is written exactly once.
//
// It checks the index arithmetic as hopperGatedEpilogue copies it from
// hopper.cu, against the Go layout of the interleaved weights; a change to
// the CUDA alone escapes it, and TestHopperBackendMatchesCPUReference on a
// GPU is what holds the kernel itself.
func TestHopperGatedEpiloguePairsGateAndUp(t *testing.T) {
	for _, bn := range []int{64, 128} {
		for _, ffn := range []int{8, 72, 768} {
			written := make([]int, ffn)
			tiles := (2*ffn + bn - 1) / bn
			for tn := range tiles {
				for i := range bn / 16 {
					for lane := range 4 { // lanes of one row: lane%4 picks the columns
						for b := range 2 {
							out, g, u := hopperGatedEpilogue(bn, tn, i, lane, b)
							if out >= ffn { // the kernel masks col < F
								if g < 2*ffn {
									t.Fatalf("bn %d ffn %d: masked column %d has its gate at GEMM column %d, inside 2·ffn", bn, ffn, out, g)
								}
								continue
							}
							if got := hopperW1Col(g, ffn); got != out {
								t.Fatalf("bn %d ffn %d: output column %d takes its gate from logical column %d", bn, ffn, out, got)
							}
							if got := hopperW1Col(u, ffn); got != ffn+out {
								t.Fatalf("bn %d ffn %d: output column %d takes up from logical column %d, want %d", bn, ffn, out, got, ffn+out)
							}
							written[out]++
						}
					}
				}
			}
			for f, n := range written {
				if n != 1 {
					t.Fatalf("bn %d ffn %d: output column %d written %d times", bn, ffn, f, n)
				}
			}
		}
	}
}

// The backend runs the decode configuration when experts average at most
// 64 rows (tokens·top-k ≤ 64·experts), the prefill one above.
func TestHopperChoosesDecodeBySize(t *testing.T) {
	cases := []struct {
		name string
		s    kernels.Shape
		want hopperConfig
	}{
		{"deepseek-v3 decode: 4 rows an expert", kernels.Shape{Tokens: 128, TopK: 8, Experts: 256}, hopperDecode},
		{"qwen3-moe at 128 tokens: 8 rows an expert", kernels.Shape{Tokens: 128, TopK: 8, Experts: 128}, hopperDecode},
		{"one token", kernels.Shape{Tokens: 1, TopK: 2, Experts: 8}, hopperDecode},
		{"exactly 64 rows an expert", kernels.Shape{Tokens: 64, TopK: 8, Experts: 8}, hopperDecode},
		{"one row more", kernels.Shape{Tokens: 65, TopK: 8, Experts: 8}, hopperDefault},
		{"qwen3-moe prefill: 512 rows an expert", kernels.Shape{Tokens: 8192, TopK: 8, Experts: 128}, hopperDefault},
		{"mixtral at 128 tokens: 32 rows an expert", kernels.Shape{Tokens: 128, TopK: 2, Experts: 8}, hopperDecode},
		{"mixtral at 4096 tokens", kernels.Shape{Tokens: 4096, TopK: 2, Experts: 8}, hopperDefault},
	}
	for _, c := range cases {
		if got := hopperConfigFor(c.s); got != c.want {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	if hopperDecode.BM != 64 || hopperDefault.BM != 128 {
		t.Errorf("decode tiles %v, prefill %v: want 64 and 128 rows", hopperDecode, hopperDefault)
	}
}

// The step's two GEMMs: gated, gemm1 is 2·ffn wide and writes its ffn
// output columns at the start of h's 2·ffn-wide rows, where gemm2 reads
// them (and where the other backends' act kernel leaves them); plain,
// everything is packed. Each passes the launch's own check, and the
// check refuses what the kernel would get wrong.
func TestHopperStepOperands(t *testing.T) {
	for _, act := range []kernels.Activation{kernels.GELU, kernels.SiLU, kernels.SwiGLU, kernels.GeGLU} {
		s := kernels.Shape{Tokens: 64, Hidden: 2048, FFN: 768, Experts: 128, TopK: 8, DType: kernels.BF16, Act: act}
		code, err := hopperAct(act)
		if err != nil {
			t.Fatal(err)
		}
		ops := hopperStepOperands(s, code)
		g1, g2 := ops[0], ops[1]
		for i, o := range ops {
			o.Rows, o.Experts = s.Rows(), s.Experts
			if err := o.check(); err != nil {
				t.Errorf("%v gemm%d: %v", act, i+1, err)
			}
		}
		lda1, ldo1 := g1.strides()
		lda2, ldo2 := g2.strides()
		if g1.N != s.W1Cols() || g1.K != s.Hidden || g1.width() != s.FFN || lda1 != s.Hidden || ldo1 != s.W1Cols() ||
			g1.bufs != [3]kernels.BufferID{kernels.BufPermutedX, kernels.BufW1, kernels.BufH} {
			t.Errorf("%v gemm1: n %d k %d width %d lda %d ldo %d bufs %v", act, g1.N, g1.K, g1.width(), lda1, ldo1, g1.bufs)
		}
		if g2.N != s.Hidden || g2.K != s.FFN || g2.Act != hopperActNone || lda2 != s.W1Cols() || ldo2 != s.Hidden ||
			g2.bufs != [3]kernels.BufferID{kernels.BufH, kernels.BufW2, kernels.BufY} {
			t.Errorf("%v gemm2: n %d k %d act %d lda %d ldo %d bufs %v", act, g2.N, g2.K, g2.Act, lda2, ldo2, g2.bufs)
		}
	}
	ok := hopperOperands{Rows: 10, Experts: 2, N: 144, K: 64, Act: hopperActSwiGLU}
	for _, c := range []struct {
		name string
		f    func(*hopperOperands)
		want string
	}{
		{"gated n that splits a gate/up pair", func(o *hopperOperands) { o.N = 136 }, "gated n 136"},
		{"a's rows closer than k", func(o *hopperOperands) { o.LdA = 32 }, "row strides"},
		{"out's rows closer than the output", func(o *hopperOperands) { o.LdOut = 64 }, "row strides"},
		{"a stride not a multiple of 8", func(o *hopperOperands) { o.LdA = 68 }, "row strides"},
		{"an unknown activation code", func(o *hopperOperands) { o.Act = 9 }, "activation code 9"},
		{"no rows", func(o *hopperOperands) { o.Rows = 0 }, "at least one of each"},
	} {
		o := ok
		c.f(&o)
		if err := o.check(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error saying %q", c.name, err, c.want)
		}
	}
	if err := ok.check(); err != nil {
		t.Errorf("gated 2·72 columns refused: %v", err)
	}
}
