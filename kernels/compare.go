package kernels

import "math"

// RelErr is ‖got − want‖ / ‖want‖, the measure every check and benchmark
// compares outputs by. A NaN or Inf in got (an unwritten, poisoned or
// overflowed element) makes it +Inf, so it can never pass a tolerance.
func RelErr(got, want []float32) float64 {
	if len(got) != len(want) {
		return math.Inf(1)
	}
	var num, den float64
	for i := range want {
		g, w := float64(got[i]), float64(want[i])
		if math.IsNaN(g) || math.IsInf(g, 0) {
			return math.Inf(1)
		}
		num += (g - w) * (g - w)
		den += w * w
	}
	if den == 0 {
		return math.Sqrt(num)
	}
	return math.Sqrt(num / den)
}
