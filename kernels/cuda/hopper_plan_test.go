package cuda

import (
	"errors"
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
		{"too many experts for the schedule is refused", "1", h100,
			with(func(s *kernels.Shape) { s.Experts = hopperMaxExperts + 1 }), "at most 8192"},
		{"an activation the epilogue lacks is refused", "1", h100,
			with(func(s *kernels.Shape) { s.Act = kernels.Activation(99) }), "not fused"},
		{"a gated activation is refused until the epilogue multiplies gate and up", "1", h100,
			with(func(s *kernels.Shape) { s.Act = kernels.SwiGLU }), "swiglu activation is not fused"},
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
	s := kernels.Shape{Tokens: 8192, Hidden: 2048, FFN: 768, Experts: 128, TopK: 8, DType: kernels.BF16}
	hp, _ := kernels.Plan("hopper", s, nil)
	lp, _ := kernels.Plan("loop", s, nil)
	if kernels.Total(hp) != kernels.Total(lp) {
		t.Errorf("hopper plans %d bytes, loop %d: want the same buffers", kernels.Total(hp), kernels.Total(lp))
	}
}

func TestHopperKernelNamesMatchTheSource(t *testing.T) {
	for _, name := range hopperProgram.Kernels {
		if !strings.Contains(hopperSource, name) {
			t.Errorf("hopper.cu defines no %s", name)
		}
	}
	if got := hopperDefault.kernel(kernels.FP16); got != "hopper_gemm_fp16_n128_s4" {
		t.Errorf("default fp16 kernel %q", got)
	}
}
