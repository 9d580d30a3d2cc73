package ep

import (
	"fmt"
	"time"
)

// SourcePlan is what one rank sends in a step. Each of its tokens travels once
// to every rank that serves at least one of the token's top-k experts, however
// many of them live there (as DeepEP does): the receiving rank runs all of
// those experts on the one row and sends back one weighted sum.
type SourcePlan struct {
	Src  int
	TopK int
	// Tokens[d] lists the source's tokens that rank d receives, ascending.
	Tokens [][]int32
	// Slots[d] holds, for each token of Tokens[d], its top-k slots in order:
	// the expert rank d runs for that slot, or -1 where another rank serves
	// it. len(Slots[d]) = len(Tokens[d])·TopK.
	Slots [][]int32
	// Rows[d][e] counts the (token, expert) pairs of this source that rank
	// d's copy of expert e runs.
	Rows [][]int
	// Pairs[d] counts the (token, expert) pairs rank d serves for this
	// source: the rows a transfer without deduplication would carry.
	Pairs []int
}

// PlanSource plans the sends of rank src whose router chose ids: token t's
// slot j is expert ids[t·k+j]. Replicas are picked by p.Chooser(src).
func PlanSource(p *Placement, src int, ids []int32, k int) (*SourcePlan, error) {
	n, E := p.Ranks(), p.Experts()
	if src < 0 || src >= n {
		return nil, fmt.Errorf("plan: rank %d of %d", src, n)
	}
	if k < 1 || len(ids)%k != 0 {
		return nil, fmt.Errorf("plan: rank %d has %d expert ids, not a whole number of tokens of top-k %d", src, len(ids), k)
	}
	sp := &SourcePlan{Src: src, TopK: k, Tokens: make([][]int32, n), Slots: make([][]int32, n),
		Rows: make([][]int, n), Pairs: make([]int, n)}
	for d := range sp.Rows {
		sp.Rows[d] = make([]int, E)
	}
	// Two passes: pick every pair's rank and count each destination's
	// tokens, then fill buffers of exactly that size.
	pick := p.Chooser(src)
	dest := make([]int32, len(ids))
	ntok := make([]int, n)
	last := make([]int, n) // last token counted for each destination, +1 (0: none yet)
	for i, id := range ids {
		e, t := int(id), i/k
		if e < 0 || e >= E {
			return nil, fmt.Errorf("plan: rank %d token %d chose expert %d of %d", src, t, e, E)
		}
		d := pick.Pick(e)
		dest[i] = int32(d)
		if last[d] != t+1 {
			last[d] = t + 1
			ntok[d]++
		}
		sp.Rows[d][e]++
		sp.Pairs[d]++
	}
	for d, m := range ntok {
		sp.Tokens[d] = make([]int32, 0, m)
		sp.Slots[d] = make([]int32, m*k)
		for i := range sp.Slots[d] {
			sp.Slots[d][i] = -1
		}
	}
	clear(last)
	for i, d := range dest {
		t, j := i/k, i%k
		if last[d] != t+1 {
			last[d] = t + 1
			sp.Tokens[d] = append(sp.Tokens[d], int32(t))
		}
		sp.Slots[d][(len(sp.Tokens[d])-1)*k+j] = ids[i]
	}
	return sp, nil
}

// StepPlan is a whole step's traffic: every source's plan and what each rank
// receives and runs.
type StepPlan struct {
	Ranks, Experts, TopK int
	Sources              []*SourcePlan
	// ExpertRows[r][e] is the rows rank r's copy of expert e runs.
	ExpertRows [][]int
	// RecvRows[r] is the (token, expert) pairs rank r runs: its GEMM load
	// (the peer's recv_rows, which does not deduplicate).
	RecvRows []int
	// RecvTokens[r] is the token rows rank r receives, its own included.
	RecvTokens []int
	// SentTokens[r] is the token rows rank r sends to other ranks; SentPairs[r]
	// is what it would send without deduplication.
	SentTokens, SentPairs []int
}

// PlanStep plans a step from every rank's router choice: ids[r] holds rank
// r's tokens' top-k experts, k per token.
func PlanStep(p *Placement, ids [][]int32, k int) (*StepPlan, error) {
	n, E := p.Ranks(), p.Experts()
	if len(ids) != n {
		return nil, fmt.Errorf("plan: routing for %d ranks, placement has %d", len(ids), n)
	}
	s := &StepPlan{Ranks: n, Experts: E, TopK: k, Sources: make([]*SourcePlan, n),
		ExpertRows: make([][]int, n), RecvRows: make([]int, n), RecvTokens: make([]int, n),
		SentTokens: make([]int, n), SentPairs: make([]int, n)}
	for r := range s.ExpertRows {
		s.ExpertRows[r] = make([]int, E)
	}
	for src := range ids {
		sp, err := PlanSource(p, src, ids[src], k)
		if err != nil {
			return nil, err
		}
		s.Sources[src] = sp
		for d := 0; d < n; d++ {
			for e, c := range sp.Rows[d] {
				s.ExpertRows[d][e] += c
			}
			s.RecvRows[d] += sp.Pairs[d]
			s.RecvTokens[d] += len(sp.Tokens[d])
			if d != src {
				s.SentTokens[src] += len(sp.Tokens[d])
				s.SentPairs[src] += sp.Pairs[d]
			}
		}
	}
	return s, nil
}

// Traffic is a step's bytes over the wire, per rank. Combine sends back as
// many bytes as dispatch sends out (one row per token per serving rank), so
// each figure holds for either phase.
type Traffic struct {
	// SentBytes[r] is what rank r sends to other ranks in dispatch.
	SentBytes []int64
	// SavedBytes[r] is what sending each token once per rank saves rank r
	// against sending one row per (token, expert) pair.
	SavedBytes []int64
	// MaxSentBytes is the busiest sender's SentBytes: what a phase's bus
	// bandwidth divides by its time (see BusGBps).
	MaxSentBytes int64
}

// Traffic counts the step's bytes for rows of hidden elements of elemBytes
// each (the dtype's size). Only rows of activations count, as in the peer and
// nccl-tests; the few bytes of routing metadata that travel with them do not.
func (s *StepPlan) Traffic(hidden, elemBytes int) Traffic {
	row := int64(hidden) * int64(elemBytes)
	t := Traffic{SentBytes: make([]int64, s.Ranks), SavedBytes: make([]int64, s.Ranks)}
	for r := range s.Ranks {
		t.SentBytes[r] = int64(s.SentTokens[r]) * row
		t.SavedBytes[r] = int64(s.SentPairs[r]-s.SentTokens[r]) * row
		t.MaxSentBytes = max(t.MaxSentBytes, t.SentBytes[r])
	}
	return t
}

// BusGBps is bytes sent to other ranks over the phase's time, in GB/s (1e9).
// For an all-to-all this is nccl-tests' bus bandwidth: algbw·(n−1)/n, where
// algbw counts every byte including the 1/n a rank keeps. The peer
// (torch_ep_peer.py) divides the busiest rank's remote bytes by the phase's
// slowest time, and so should callers comparing with it.
func BusGBps(bytes int64, d time.Duration) float64 {
	if d <= 0 {
		return 0
	}
	return float64(bytes) / d.Seconds() / 1e9
}
