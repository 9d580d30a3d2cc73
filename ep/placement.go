// Package ep is the rank logic of expert parallelism (EP): where experts live
// over N ranks, which tokens travel where in a step, how even the load is, what
// a rebalanced placement would buy, and a step of N CPU ranks over a small
// Transport. It is pure Go with no cgo, so all of it is tested on the CPU
// through an in-process transport; a GPU transport (NCCL) implements the same
// interface.
package ep

import (
	"errors"
	"fmt"
	"slices"
)

// ErrBadPlacement marks a placement that cannot be used: a file that does not
// parse or a map that misses or misnames experts or ranks.
var ErrBadPlacement = errors.New("bad placement")

// badPlacement is an ErrBadPlacement whose text is only the reason, so that a
// message reads "placement p.json: expert 9 has no rank" with no jargon.
type badPlacement struct{ why string }

func (e *badPlacement) Error() string        { return e.why }
func (e *badPlacement) Is(target error) bool { return target == ErrBadPlacement }

func badf(format string, a ...any) error { return &badPlacement{fmt.Sprintf(format, a...)} }

// Placement says which ranks hold a copy (replica) of each expert. Every
// expert has at least one rank; a rank may hold no expert at all (it still
// routes its own tokens). It is immutable once made.
type Placement struct {
	ranks    int
	replicas [][]int // expert → ranks holding it, ascending, distinct
	local    [][]int // rank → experts it holds, ascending
}

// Contiguous splits experts over ranks in contiguous blocks: rank r holds
// experts [r·E/N, (r+1)·E/N) (floor division), so block sizes differ by at
// most one and, when N divides E, every rank holds E/N experts as the peer
// does. With fewer experts than ranks some ranks hold none.
func Contiguous(experts, ranks int) (*Placement, error) {
	if experts < 1 || ranks < 1 {
		return nil, badf("cannot place %d experts over %d ranks", experts, ranks)
	}
	rep := make([][]int, experts)
	for r := 0; r < ranks; r++ {
		for e := r * experts / ranks; e < (r+1)*experts/ranks; e++ {
			rep[e] = []int{r}
		}
	}
	return NewPlacement(ranks, rep)
}

// NewPlacement checks and copies replicas (expert → ranks) for a run of ranks
// ranks. The order of an expert's ranks does not matter; a rank listed twice
// for one expert, a rank out of range or an expert with no rank is refused
// with an error wrapping ErrBadPlacement.
func NewPlacement(ranks int, replicas [][]int) (*Placement, error) {
	if ranks < 1 {
		return nil, badf("a run needs at least one rank, not %d", ranks)
	}
	if len(replicas) == 0 {
		return nil, badf("no experts")
	}
	p := &Placement{ranks: ranks, replicas: make([][]int, len(replicas)), local: make([][]int, ranks)}
	for e, rs := range replicas {
		if len(rs) == 0 {
			return nil, badf("expert %d has no rank", e)
		}
		own := slices.Clone(rs)
		slices.Sort(own)
		for i, r := range own {
			if r < 0 || r >= ranks {
				return nil, badf("expert %d is on rank %d, but the run has %d ranks (0–%d)", e, r, ranks, ranks-1)
			}
			if i > 0 && own[i-1] == r {
				return nil, badf("expert %d lists rank %d twice", e, r)
			}
			p.local[r] = append(p.local[r], e)
		}
		p.replicas[e] = own
	}
	return p, nil
}

// Ranks is the number of ranks the placement is for.
func (p *Placement) Ranks() int { return p.ranks }

// Experts is the number of (logical) experts.
func (p *Placement) Experts() int { return len(p.replicas) }

// Replicas returns the ranks holding expert e, ascending. The caller must not
// modify it.
func (p *Placement) Replicas(e int) []int { return p.replicas[e] }

// Local returns the experts rank r holds, ascending. The caller must not
// modify it.
func (p *Placement) Local(r int) []int { return p.local[r] }

// Physical is the number of expert copies over all ranks: experts plus
// redundant replicas.
func (p *Placement) Physical() int {
	n := 0
	for _, rs := range p.replicas {
		n += len(rs)
	}
	return n
}

// Equal reports whether two placements put the same experts on the same ranks.
func (p *Placement) Equal(q *Placement) bool {
	if p.ranks != q.ranks || len(p.replicas) != len(q.replicas) {
		return false
	}
	for e := range p.replicas {
		if !slices.Equal(p.replicas[e], q.replicas[e]) {
			return false
		}
	}
	return true
}

// Chooser picks, for the tokens of one source rank, which replica of an
// expert serves each (token, expert) pair: the copy on the source's own rank
// when there is one (no transfer), else the replicas in turn. Sources start
// their turns at different replicas so that sources with few tokens do not
// all pick the first; when every rank routes alike, each replica then serves
// an even share of an expert's rows (own-rank traffic plus an equal share of
// everyone else's).
type Chooser struct {
	p    *Placement
	src  int
	turn []int // per expert, pairs sent off-rank so far
}

// Chooser returns a fresh replica chooser for source rank src. A step makes
// one per source, so the choice depends only on that step's routing.
func (p *Placement) Chooser(src int) *Chooser {
	return &Chooser{p: p, src: src, turn: make([]int, len(p.replicas))}
}

// Pick returns the rank that serves the next pair of the source's for expert e.
func (c *Chooser) Pick(e int) int {
	rs := c.p.replicas[e]
	if len(rs) == 1 {
		return rs[0]
	}
	below, ok := slices.BinarySearch(rs, c.src)
	if ok {
		return c.src
	}
	// Sources without a copy start their turns one replica apart: the
	// source's place among the ranks that lack one.
	r := rs[(c.turn[e]+c.src-below)%len(rs)]
	c.turn[e]++
	return r
}
