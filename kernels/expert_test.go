package kernels

import (
	"context"
	"slices"
	"testing"
)

// The pieces must rebuild exactly what the CPU backend computes: with top-1
// routing every weight is 1, so a token's output is its expert's FFN output.
func TestExpertPiecesRebuildTheCPUBackend(t *testing.T) {
	for _, c := range []struct {
		d   DType
		act Activation
	}{{FP32, SiLU}, {BF16, SiLU}, {FP32, SwiGLU}, {BF16, GeGLU}} {
		d := c.d
		t.Run("top-1 output is the chosen expert's "+c.act.String()+" FFN in "+d.String(), func(t *testing.T) {
			s := Shape{Tokens: 13, Hidden: 7, FFN: 11, Experts: 4, TopK: 1, DType: d, Act: c.act, Seed: 99}
			c := NewCPU()
			if err := c.Prepare(context.Background(), s); err != nil {
				t.Fatal(err)
			}
			if _, err := c.Step(context.Background(), StepInput{}); err != nil {
				t.Fatal(err)
			}
			want, _ := c.Output()
			ref, _ := c.Routing()

			x := InputRows(s, 0, s.Tokens)
			a, err := RouteRows(s, x, RouterWeights(s), s.Tokens, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a.IDs, ref.IDs) || !slices.Equal(a.Weights, ref.Weights) {
				t.Fatalf("router chose %v %v, CPU backend %v %v", a.IDs, a.Weights, ref.IDs, ref.Weights)
			}
			h, f := s.Hidden, s.FFN
			for tok := 0; tok < s.Tokens; tok++ {
				w1, w2 := ExpertWeights(s, int(a.IDs[tok]))
				hid := make([]float32, s.W1Cols())
				y := make([]float32, h)
				MatMul(hid, x[tok*h:], 1, h, w1, s.W1Cols())
				d.RoundSlice(hid)
				hid = ActivateRows(hid, 1, f, s.Act)
				d.RoundSlice(hid)
				MatMul(y, hid, 1, f, w2, h)
				d.RoundSlice(y)
				for i := range y {
					y[i] = d.Round(y[i] * a.Weights[tok])
				}
				if got := want[tok*h : (tok+1)*h]; !slices.Equal(got, y) {
					t.Fatalf("token %d: pieces give %v, CPU backend %v", tok, y, got)
				}
			}
		})
	}
}

func TestInputRowsIsASliceOfTheWholeInput(t *testing.T) {
	s := Shape{Hidden: 5, DType: BF16, Seed: 3}
	all := InputRows(s, 0, 9)
	if part := InputRows(s, 4, 3); !slices.Equal(part, all[4*5:7*5]) {
		t.Fatalf("rows 4..6 differ from the whole input's")
	}
}

func TestRouteRowsRefusesMismatchedSizes(t *testing.T) {
	s := Shape{Hidden: 4, Experts: 3, TopK: 2}
	cases := []struct {
		name string
		x    []float32
		wg   []float32
		bias []float32
	}{
		{"short input", make([]float32, 7), make([]float32, 12), nil},
		{"wrong router size", make([]float32, 8), make([]float32, 11), nil},
		{"bias of the wrong length", make([]float32, 8), make([]float32, 12), make([]float32, 2)},
	}
	for _, tc := range cases {
		if _, err := RouteRows(s, tc.x, tc.wg, 2, tc.bias); err == nil {
			t.Errorf("%s: accepted", tc.name)
		}
	}
}
