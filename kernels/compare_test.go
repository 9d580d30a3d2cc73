package kernels

import (
	"math"
	"testing"
)

func TestRelErr(t *testing.T) {
	nan := float32(math.NaN())
	for _, c := range []struct {
		got, want []float32
		err       float64
	}{
		{[]float32{1, 2}, []float32{1, 2}, 0},
		{[]float32{1, 0}, []float32{0, 1}, math.Sqrt2},
		{[]float32{3, 4}, []float32{0, 0}, 5},
		{[]float32{1, nan}, []float32{1, 2}, math.Inf(1)},
		{[]float32{1}, []float32{1, 2}, math.Inf(1)},
	} {
		if got := RelErr(c.got, c.want); math.Abs(got-c.err) > 1e-12 && !(math.IsInf(got, 1) && math.IsInf(c.err, 1)) {
			t.Errorf("RelErr(%v, %v) = %g, want %g", c.got, c.want, got, c.err)
		}
	}
}
