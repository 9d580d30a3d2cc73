package profiler

import (
	"fmt"
	"testing"

	"github.com/moetop/moetop/kernels"
)

func TestPlanFitRefusesWhatTheModelSaysCannotFit(t *testing.T) {
	// The layer: the router's logits alone are 65536² float32.
	c := Config{Tokens: 65536, Hidden: 16, FFN: 64, Experts: 65536, TopK: 8, DType: kernels.BF16,
		Routing: "zipf:1.2"}
	need, _ := Peak("cpu", c, nil)
	cases := []struct {
		name  string
		avail uint64
		fits  bool
	}{
		{"more than the plan fits", need + 1, true},
		{"exactly the plan fits", need, true},
		{"a byte less does not", need - 1, false},
		{"half the plan does not", need / 2, false},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, err := PlanFit("cpu", c, tc.avail)
			if err != nil {
				t.Fatal(err)
			}
			if f.Need != need || f.Fits() != tc.fits {
				t.Fatalf("need %d fits %v; want %d and %v", f.Need, f.Fits(), need, tc.fits)
			}
			if (f.MaxTokens >= c.Tokens) != tc.fits {
				t.Errorf("max tokens %d disagrees with fits=%v at %d tokens", f.MaxTokens, tc.fits, c.Tokens)
			}
			at := c
			at.Tokens = f.MaxTokens
			if p, _ := Peak("cpu", at, nil); f.MaxTokens > 0 && p > tc.avail {
				t.Errorf("at the max of %d tokens the plan needs %d > %d available", f.MaxTokens, p, tc.avail)
			}
		})
	}
}

func TestALoadWithNoCappedCountsIsTakenEvenly(t *testing.T) {
	// hot:0:1 with top-k 2 leaves no other expert any weight to take the
	// excess over the cap: no capped split exists, and the calibration and
	// the memory model take an even load instead of failing.
	c := Config{Tokens: 64, Hidden: 8, FFN: 16, Experts: 4, TopK: 2, DType: kernels.BF16, Routing: "hot:0:1"}
	d, _ := ParseRouting(c.Routing, c.Experts, c.TopK)
	if _, err := CappedCounts(fixedDist{d.Name(), Shares(d.Weights(0), c.TopK)}, c.Tokens, c.TopK); err == nil {
		t.Fatal("hot:0:1 at top-k 2 has capped counts; pick a load that has none")
	}
	counts, err := countsFor(d, c)
	if err != nil || fmt.Sprint(counts) != "[32 32 32 32]" {
		t.Fatalf("counts %v, %v; want an even split of 128 rows", counts, err)
	}
	f, err := PlanFit("test-padded", c, 1<<40)
	if err != nil || !f.Fits() || f.Need == 0 {
		t.Errorf("%+v, %v", f, err)
	}
}
