package kernels

import (
	"errors"
	"math/rand/v2"
	"reflect"
	"strings"
	"testing"
)

func TestAcceptedCases(t *testing.T) {
	plan := func(Shape, []int) ([]Buffer, error) { return nil, nil }
	all := Registration{Name: "takes-all", Plan: plan}
	eights := Registration{Name: "eights", Plan: plan, Supports: func(_ Caps, s Shape) error {
		switch {
		case s.DType == FP32 || s.DType == TF32:
			return errors.New("16-bit only")
		case s.Hidden%8 != 0 || s.FFN%8 != 0:
			return errors.New("sizes in multiples of 8")
		}
		return nil
	}}
	dts := []DType{BF16, FP16, FP32, TF32}
	plainOnly := Registration{Name: "plain-only", Plan: plan, Supports: func(_ Caps, s Shape) error {
		if s.Act.Gated() {
			return errors.New("gated activations are not fused")
		}
		return nil
	}}

	t.Run("a backend that takes every shape gets RandomCases's cases", func(t *testing.T) {
		got, refused := AcceptedCases(rand.New(rand.NewPCG(3, 4)), all, Caps{}, dts, 5)
		want := RandomCases(rand.New(rand.NewPCG(3, 4)), []string{all.Name}, dts, 5)
		if !reflect.DeepEqual(got, want) || refused != nil {
			t.Errorf("cases differ from RandomCases's (refused %v)", refused)
		}
	})
	t.Run("a backend that refuses a form is checked on the others", func(t *testing.T) {
		got, refused := AcceptedCases(rand.New(rand.NewPCG(7, 8)), plainOnly, Caps{}, []DType{BF16}, 6)
		acts := map[Activation]bool{}
		for _, c := range got {
			acts[c.Shape.Act] = true
		}
		if len(got) != 6 || refused != nil || acts[SwiGLU] || acts[GeGLU] || !acts[GELU] || !acts[SiLU] {
			t.Errorf("%d cases with activations %v (refused %v), want 6 of gelu and silu", len(got), acts, refused)
		}
	})
	t.Run("a picky backend gets n accepted cases of each dtype it takes", func(t *testing.T) {
		got, refused := AcceptedCases(rand.New(rand.NewPCG(5, 6)), eights, Caps{}, dts, 6)
		per := map[DType]int{}
		for _, c := range got {
			per[c.Shape.DType]++
			if err := eights.Check(Caps{}, c.Shape); err != nil {
				t.Errorf("a refused case was kept: %+v: %v", c.Shape, err)
			}
		}
		if per[BF16] != 6 || per[FP16] != 6 || per[FP32] != 0 || per[TF32] != 0 {
			t.Errorf("cases per dtype %v, want 6 bf16, 6 fp16", per)
		}
		if len(refused) != 2 || !strings.Contains(refused[0], "fp32") || !strings.Contains(refused[0], "16-bit only") ||
			!strings.Contains(refused[1], "tf32") {
			t.Errorf("refused %q, want fp32 and tf32 with the reason", refused)
		}
	})
}
