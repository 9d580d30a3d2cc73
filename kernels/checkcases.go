package kernels

import (
	"fmt"
	"math/rand/v2"
)

// maxDraws bounds the shapes AcceptedCases draws for one case: a check
// that takes one shape in 64 (hidden and ffn multiples of 8) fails all of
// them with probability (63/64)^2000 ≈ 2e-14.
const maxDraws = 2000

// AcceptedCases draws n cases per dtype for the backend r as RandomCases
// does, drawing again each shape r's capability check refuses on c, so
// that a backend that takes only some shapes (sizes in multiples of 8, a
// few dtypes) is checked on as many cases as the others. Case i keeps
// RandomCases's activation, router and shared experts for the first half
// of the draws, then takes any, so that a backend that refuses a form (an
// activation it does not fuse) is still checked on the others. A backend
// that takes every shape gets exactly RandomCases's cases. A dtype
// refused on every draw is left out, and refused says why, one line per
// dtype.
func AcceptedCases(rng *rand.Rand, r Registration, c Caps, dtypes []DType, n int) (cases []CheckCase, refused []string) {
	for _, d := range dtypes {
		for i := 0; i < n; i++ {
			var last error
			found := false
			for try := 0; try < maxDraws && !found; try++ {
				cc := randomCase(rng, r.Name, d, i, try < maxDraws/2)
				if last = r.Check(c, cc.Shape); last == nil {
					cases = append(cases, cc)
					found = true
				}
			}
			if !found {
				refused = append(refused, fmt.Sprintf("%s %s: no shape of %d drawn was accepted, the last because %v", r.Name, d, maxDraws, last))
				break
			}
		}
	}
	return cases, refused
}
