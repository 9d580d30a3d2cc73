package ep

import (
	"cmp"
	"fmt"
	"math"
	"slices"
)

// Rebalancing as DeepSeek's EPLB does it (eplb.py, global policy: one group,
// one node): give the R redundant copies one at a time to the expert whose
// copies carry the most load each, then pack all copies onto ranks heaviest
// first, each to the least-loaded rank that still has a free slot, every rank
// getting the same number of slots. Two differences, both forced by the
// placement file (expert → set of ranks): two copies of one expert never share
// a rank, so an expert gets at most N copies; and ties in the replication go
// to the expert with fewer copies (EPLB's argmax takes the lowest index, which
// on equal loads piles every copy on expert 0).

// Rebalance proposes a placement over ranks ranks for the observed load of
// each expert (rows over any window) with redundant extra copies.
func Rebalance(load []float64, ranks, redundant int) (*Placement, error) {
	E := len(load)
	switch {
	case E == 0 || ranks < 1:
		return nil, badf("cannot place %d experts over %d ranks", E, ranks)
	case redundant < 0:
		return nil, badf("redundant copies must be 0 or more, not %d", redundant)
	case redundant > E*(ranks-1):
		return nil, badf("%d redundant copies of %d experts need more than %d ranks (at most one copy of an expert per rank)",
			redundant, E, ranks)
	case (E+redundant)%ranks != 0:
		return nil, badf("%d experts + %d redundant copies do not split evenly over %d ranks (EPLB gives every rank the same number of expert slots)",
			E, redundant, ranks)
	}
	for e, l := range load {
		if l < 0 || math.IsNaN(l) || math.IsInf(l, 0) {
			return nil, badf("expert %d has load %g (want a count of rows, 0 or more)", e, l)
		}
	}

	copies := make([]int, E)
	for e := range copies {
		copies[e] = 1
	}
	for range redundant {
		best := -1
		for e, l := range load {
			if copies[e] == ranks {
				continue
			}
			if best < 0 {
				best = e
				continue
			}
			a, b := l/float64(copies[e]), load[best]/float64(copies[best])
			if a > b || (a == b && copies[e] < copies[best]) {
				best = e
			}
		}
		copies[best]++
	}

	type item struct {
		e int
		w float64
	}
	var items []item
	for e, c := range copies {
		for range c {
			items = append(items, item{e, load[e] / float64(c)})
		}
	}
	slices.SortStableFunc(items, func(a, b item) int { return cmp.Compare(b.w, a.w) })

	slots := len(items) / ranks
	rankLoad := make([]float64, ranks)
	on := make([][]int, ranks) // experts on each rank
	holds := func(r, e int) bool { return slices.Contains(on[r], e) }
	weight := func(e int) float64 { return load[e] / float64(copies[e]) }
	for _, it := range items {
		best := -1
		for r := range ranks {
			if len(on[r]) < slots && !holds(r, it.e) && (best < 0 || rankLoad[r] < rankLoad[best]) {
				best = r
			}
		}
		if best < 0 {
			// Every rank with a free slot already holds this expert. Some full
			// rank p lacks it (the expert has fewer than N copies placed), and
			// p holds at least two experts the free rank q lacks (p has a full
			// set of slots, q at most slots−1 with this expert among them):
			// move the lightest such expert from p to q and use p's slot.
			q := slices.IndexFunc(on, func(es []int) bool { return len(es) < slots })
			p := slices.IndexFunc(on, func(es []int) bool { return !slices.Contains(es, it.e) })
			if q < 0 || p < 0 {
				return nil, fmt.Errorf("rebalance: no rank can take expert %d (a bug: slots %d, ranks %d)", it.e, slots, ranks)
			}
			xi := -1
			for i, x := range on[p] {
				if !holds(q, x) && (xi < 0 || weight(x) < weight(on[p][xi])) {
					xi = i
				}
			}
			if xi < 0 {
				return nil, fmt.Errorf("rebalance: no expert of rank %d can move to rank %d (a bug)", p, q)
			}
			x := on[p][xi]
			on[p] = slices.Delete(on[p], xi, xi+1)
			rankLoad[p] -= weight(x)
			on[q] = append(on[q], x)
			rankLoad[q] += weight(x)
			best = p
		}
		on[best] = append(on[best], it.e)
		rankLoad[best] += it.w
	}

	rep := make([][]int, E)
	for r, es := range on {
		for _, e := range es {
			rep[e] = append(rep[e], r)
		}
	}
	return NewPlacement(ranks, rep)
}

// WhatIf is a proposed placement beside the one it would replace, with the
// balancedness each gives the observed load (replicas sharing an expert's load
// evenly, see RankLoad).
type WhatIf struct {
	Placement *Placement
	// Actual is the current placement's balance; Predicted the proposal's.
	Actual, Predicted Balance
	// Load is the proposal's predicted load per rank.
	Load []float64
}

// WhatIfRebalance proposes a rebalanced placement for the observed per-expert
// load under current, keeping its number of ranks.
func WhatIfRebalance(current *Placement, load []float64, redundant int) (WhatIf, error) {
	if len(load) != current.Experts() {
		return WhatIf{}, badf("load covers %d experts, the layer has %d", len(load), current.Experts())
	}
	p, err := Rebalance(load, current.Ranks(), redundant)
	if err != nil {
		return WhatIf{}, err
	}
	rl := RankLoad(p, load)
	return WhatIf{Placement: p, Actual: Balancedness(RankLoad(current, load)), Predicted: Balancedness(rl), Load: rl}, nil
}
