package ep

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/moetop/moetop/kernels"
)

// Config is the layer that N ranks run together.
type Config struct {
	// Shape is the layer; Tokens is the number of tokens each rank holds.
	// Rank r holds tokens [r·Tokens, (r+1)·Tokens) of one batch of
	// N·Tokens, so that N ranks together compute exactly what one device
	// computes over that batch (the data-parallel attention before an EP
	// layer hands every rank its own slice of the batch).
	Shape     kernels.Shape
	Placement *Placement
	// Bias is added to the router logits, one value per expert (nil: none).
	Bias []float32
}

// PhaseTimes is one rank's wall-clock time per phase of a step.
type PhaseTimes struct {
	// Router: logits and top-k of the rank's own tokens.
	Router time.Duration
	// Permute: planning the sends, gathering rows per destination, and on
	// arrival grouping the received rows by local expert.
	Permute time.Duration
	// Dispatch: the exchange of counts and of the rows themselves.
	Dispatch time.Duration
	GEMM1    time.Duration
	Act      time.Duration
	GEMM2    time.Duration
	// Shared: the shared experts over the rank's own tokens (zero
	// without them), whose output the rank adds to its tokens' combined
	// rows.
	Shared time.Duration
	// Combine: the weighted sum of each received token's local experts, the
	// transfer back, and the sum over ranks on the token's own rank.
	Combine time.Duration
	// Wait: the one-element all-reduce before the transfer back, the time
	// this rank idles for the slowest, kept apart from transfer (as the
	// peer, shared/peer/torch_ep_peer.py, times it).
	Wait time.Duration
}

// PhaseNames are the phases in step order, as Durations lists them.
var PhaseNames = [...]string{"router", "permute", "dispatch", "gemm1", "act", "gemm2", kernels.PhaseShared, "wait", "combine"}

// Durations returns the phase times in the order of PhaseNames.
func (p PhaseTimes) Durations() [len(PhaseNames)]time.Duration {
	return [...]time.Duration{p.Router, p.Permute, p.Dispatch, p.GEMM1, p.Act, p.GEMM2, p.Shared, p.Wait, p.Combine}
}

// Total is the sum of the phase times.
func (p PhaseTimes) Total() time.Duration {
	var t time.Duration
	for _, d := range p.Durations() {
		t += d
	}
	return t
}

// RankResult is what one rank reports of a step.
type RankResult struct {
	Rank   int
	Phases PhaseTimes
	// Output is the layer's output for the rank's own tokens, tokens × hidden.
	Output []float32
	// Routing is the router's choice for the rank's own tokens.
	Routing kernels.Assignment
	// Sent is where the rank sent its tokens.
	Sent *SourcePlan
	// ExpertRows[e] is the rows the rank ran through expert e (0 for the
	// experts it does not hold).
	ExpertRows []int
	// RecvTokens is the token rows the rank received (its own included);
	// RecvRows the (token, expert) pairs it ran: its GEMM load.
	RecvTokens, RecvRows int
	// SentTokens is the token rows sent to other ranks; SentPairs what
	// would have been sent without deduplication.
	SentTokens, SentPairs int
}

// SentBytes is what the rank sent to other ranks in dispatch (and gets back
// in combine) for elements of elemBytes, and what deduplication saved.
func (r *RankResult) SentBytes(hidden, elemBytes int) (sent, saved int64) {
	row := int64(hidden) * int64(elemBytes)
	return int64(r.SentTokens) * row, int64(r.SentPairs-r.SentTokens) * row
}

// Rank is one CPU rank: its tokens, the router, and its local experts'
// weights, filled exactly as kernels.CPU fills them.
type Rank struct {
	cfg     Config
	tr      Transport
	rank    int
	x, wg   []float32
	local   []int       // experts held, ascending
	localOf map[int]int // expert → index in local
	w1, w2  [][]float32 // per local expert
	// sw1, sw2 are the shared experts' weights (nil: none); every rank
	// holds them and runs them on its own tokens.
	sw1, sw2 []float32
}

// NewRank prepares rank tr.Rank() of cfg.
func NewRank(cfg Config, tr Transport) (*Rank, error) {
	s, p := cfg.Shape, cfg.Placement
	switch {
	case p == nil:
		return nil, errors.New("ep: no placement")
	case s.Tokens < 1 || s.Hidden < 1 || s.FFN < 1 || s.Experts < 1:
		return nil, fmt.Errorf("ep: tokens %d, hidden %d, ffn %d, experts %d must all be at least 1",
			s.Tokens, s.Hidden, s.FFN, s.Experts)
	case s.TopK < 1 || s.TopK > s.Experts:
		return nil, fmt.Errorf("ep: top-k %d of %d experts", s.TopK, s.Experts)
	case p.Experts() != s.Experts:
		return nil, fmt.Errorf("ep: placement covers %d experts, the layer has %d", p.Experts(), s.Experts)
	case p.Ranks() != tr.Size():
		return nil, fmt.Errorf("ep: placement is for %d ranks, the run has %d", p.Ranks(), tr.Size())
	case cfg.Bias != nil && len(cfg.Bias) != s.Experts:
		return nil, fmt.Errorf("ep: router bias has %d values, want %d experts", len(cfg.Bias), s.Experts)
	}
	if err := s.Router.Check(s.Experts, s.TopK); err != nil {
		return nil, fmt.Errorf("ep: %w", err)
	}
	r := tr.Rank()
	rk := &Rank{cfg: cfg, tr: tr, rank: r, local: p.Local(r), localOf: map[int]int{},
		x: kernels.InputRows(s, r*s.Tokens, s.Tokens), wg: kernels.RouterWeights(s)}
	for i, e := range rk.local {
		rk.localOf[e] = i
		w1, w2 := kernels.ExpertWeights(s, e)
		rk.w1 = append(rk.w1, w1)
		rk.w2 = append(rk.w2, w2)
	}
	rk.sw1, rk.sw2 = kernels.SharedWeights(s)
	return rk, nil
}

// rowRef says where a received row came from: source rank, token index in
// that source's buffer, and the slot's router weight.
type rowRef struct {
	src, i int
	w      float32
}

// Step runs one step of the layer on this rank; every rank of the transport
// must call it. A failure aborts the transport so that the other ranks end
// too instead of waiting.
func (rk *Rank) Step(ctx context.Context) (res *RankResult, err error) {
	defer func() {
		if err != nil {
			rk.tr.Abort(fmt.Errorf("rank %d: %w", rk.rank, err))
		}
	}()
	s, p := rk.cfg.Shape, rk.cfg.Placement
	T, h, f, k, n := s.Tokens, s.Hidden, s.FFN, s.TopK, p.Ranks()
	res = &RankResult{Rank: rk.rank, ExpertRows: make([]int, s.Experts)}
	ph := &res.Phases
	mark := time.Now()
	lap := func(d *time.Duration) {
		now := time.Now()
		*d += now.Sub(mark)
		mark = now
	}

	a, err := kernels.RouteRows(s, rk.x, rk.wg, T, rk.cfg.Bias)
	if err != nil {
		return nil, err
	}
	res.Routing = a
	lap(&ph.Router)

	sp, err := PlanSource(p, rk.rank, a.IDs, k)
	if err != nil {
		return nil, err
	}
	res.Sent = sp
	send := make([]Rows, n)
	sendCounts := make([][]int32, n)
	for d := range n {
		toks := sp.Tokens[d]
		r := Rows{X: make([]float32, len(toks)*h), IDs: sp.Slots[d], Weights: make([]float32, len(toks)*k)}
		for i, tok := range toks {
			copy(r.X[i*h:(i+1)*h], rk.x[int(tok)*h:])
			for j := range k {
				if r.IDs[i*k+j] >= 0 {
					r.Weights[i*k+j] = a.Weights[int(tok)*k+j]
				}
			}
		}
		send[d] = r
		// Counts for d: its tokens, then rows per expert d holds.
		c := make([]int32, 1+len(p.Local(d)))
		c[0] = int32(len(toks))
		for i, e := range p.Local(d) {
			c[1+i] = int32(sp.Rows[d][e])
		}
		sendCounts[d] = c
		if d != rk.rank {
			res.SentTokens += len(toks)
			res.SentPairs += sp.Pairs[d]
		}
	}
	lap(&ph.Permute)

	recvCounts := make([][]int32, n)
	for src := range recvCounts {
		recvCounts[src] = make([]int32, 1+len(rk.local))
	}
	if err := rk.tr.ExchangeCounts(ctx, sendCounts, recvCounts); err != nil {
		return nil, err
	}
	recv := make([]Rows, n)
	for src, c := range recvCounts {
		m := int(c[0])
		if m < 0 || m > T {
			return nil, fmt.Errorf("rank %d announces %d tokens, more than the %d it holds: %w", src, m, T, ErrMismatch)
		}
		recv[src] = Rows{X: make([]float32, m*h), IDs: make([]int32, m*k), Weights: make([]float32, m*k)}
		res.RecvTokens += m
	}
	if err := rk.tr.Dispatch(ctx, send, recv); err != nil {
		return nil, err
	}
	lap(&ph.Dispatch)

	// Group the received rows by local expert: expert order, then source,
	// token and slot, so that the order does not depend on timing.
	L := len(rk.local)
	counts := make([]int, L)
	for _, c := range recvCounts {
		for i := range L {
			counts[i] += int(c[1+i])
		}
	}
	offs := make([]int, L+1)
	for i, c := range counts {
		offs[i+1] = offs[i] + c
	}
	rows := offs[L]
	xp := make([]float32, rows*h)
	refs := make([]rowRef, rows)
	next := append([]int(nil), offs[:L]...)
	for src, r := range recv {
		for i := range len(r.IDs) / k {
			for j := range k {
				id := r.IDs[i*k+j]
				if id < 0 {
					continue
				}
				li, ok := rk.localOf[int(id)]
				if !ok || next[li] == offs[li+1] {
					return nil, fmt.Errorf("rank %d sent a row of expert %d that its counts did not announce to rank %d: %w",
						src, id, rk.rank, ErrMismatch)
				}
				pos := next[li]
				next[li]++
				copy(xp[pos*h:(pos+1)*h], r.X[i*h:(i+1)*h])
				refs[pos] = rowRef{src: src, i: i, w: r.Weights[i*k+j]}
			}
		}
	}
	for li := range L {
		if next[li] != offs[li+1] {
			return nil, fmt.Errorf("rank %d: expert %d received %d rows, counts announced %d: %w",
				rk.rank, rk.local[li], next[li]-offs[li], counts[li], ErrMismatch)
		}
		res.ExpertRows[rk.local[li]] = counts[li]
	}
	res.RecvRows = rows
	lap(&ph.Permute)

	c1 := s.W1Cols()
	hid := make([]float32, rows*c1)
	for li := range L {
		o, m := offs[li], counts[li]
		kernels.MatMul(hid[o*c1:], xp[o*h:], m, h, rk.w1[li], c1)
	}
	s.DType.RoundSlice(hid)
	lap(&ph.GEMM1)
	// Gated, the activation packs its rows × f output at the start of hid.
	hid = kernels.ActivateRows(hid, rows, f, s.Act)
	s.DType.RoundSlice(hid)
	lap(&ph.Act)
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	y := make([]float32, rows*h)
	for li := range L {
		o, m := offs[li], counts[li]
		kernels.MatMul(y[o*h:], hid[o*f:], m, f, rk.w2[li], h)
	}
	s.DType.RoundSlice(y)
	lap(&ph.GEMM2)

	var shared []float32
	if rk.sw1 != nil {
		shared = make([]float32, T*h)
		kernels.SharedForward(s, rk.x, T, rk.sw1, rk.sw2, make([]float32, T*s.Act.Columns(s.SharedWidth())), shared)
		lap(&ph.Shared)
	}

	// One weighted sum per received token: what goes back is one row per
	// (token, rank), stored in the layer's dtype as a GPU would send it.
	back := make([][]float32, n)
	for src, r := range recv {
		back[src] = make([]float32, len(r.X))
	}
	for pos, ref := range refs {
		dst := back[ref.src][ref.i*h : (ref.i+1)*h]
		for c, v := range y[pos*h : (pos+1)*h] {
			dst[c] += ref.w * v
		}
	}
	for _, b := range back {
		s.DType.RoundSlice(b)
	}
	lap(&ph.Combine)

	if sum, err := rk.tr.AllReduce(ctx, 1); err != nil {
		return nil, err
	} else if sum != float64(n) {
		return nil, fmt.Errorf("wait: all-reduce of one per rank gave %g over %d ranks: %w", sum, n, ErrMismatch)
	}
	lap(&ph.Wait)

	got := make([][]float32, n)
	for d := range got {
		got[d] = make([]float32, len(sp.Tokens[d])*h)
	}
	if err := rk.tr.Combine(ctx, back, got); err != nil {
		return nil, err
	}
	out := make([]float32, T*h)
	for d, toks := range sp.Tokens {
		for i, tok := range toks {
			o := out[int(tok)*h : (int(tok)+1)*h]
			for c, v := range got[d][i*h : (i+1)*h] {
				o[c] += v
			}
		}
	}
	for i, v := range shared {
		out[i] += v
	}
	s.DType.RoundSlice(out)
	res.Output = out
	lap(&ph.Combine)
	return res, nil
}

// Group is N CPU ranks over one in-process transport: the whole EP layer in
// one process, for tests and for a CPU run of --ep N.
type Group struct {
	ranks []*Rank
}

// NewCPUGroup prepares cfg.Placement.Ranks() CPU ranks over a Fake transport
// whose calls wait at most timeout for a peer.
func NewCPUGroup(cfg Config, timeout time.Duration) (*Group, error) {
	if cfg.Placement == nil {
		return nil, errors.New("ep: no placement")
	}
	g := &Group{}
	for _, tr := range NewFake(cfg.Placement.Ranks(), timeout) {
		rk, err := NewRank(cfg, tr)
		if err != nil {
			return nil, err
		}
		g.ranks = append(g.ranks, rk)
	}
	return g, nil
}

// Step runs one step on every rank at once, each on its own goroutine, and
// returns their results in rank order. When ranks fail, the error is the
// cause, not the aborts it set off in the others.
func (g *Group) Step(ctx context.Context) ([]*RankResult, error) {
	res := make([]*RankResult, len(g.ranks))
	errs := make([]error, len(g.ranks))
	var wg sync.WaitGroup
	for i, rk := range g.ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res[i], errs[i] = rk.Step(ctx)
		}()
	}
	wg.Wait()
	// A failing rank aborts the others, whose errors then wrap ErrAborted
	// and the cause; report the cause itself when a rank returned it.
	var first error
	for _, err := range errs {
		if err != nil && !errors.Is(err, ErrAborted) {
			return nil, err
		}
		if first == nil {
			first = err
		}
	}
	if first != nil {
		return nil, first
	}
	return res, nil
}

// SetBias sets the router bias every rank adds to its logits from the next
// step on (nil: none); the live loop moves it each step to steer the load.
func (g *Group) SetBias(b []float32) {
	for _, rk := range g.ranks {
		rk.cfg.Bias = b
	}
}
