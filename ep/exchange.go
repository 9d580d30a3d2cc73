package ep

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/moetop/moetop/kernels"
)

// The exchange benchmark: the expert path of an expert-parallel layer over
// N ranks, with the scope, load and reductions of the PyTorch peer
// (shared/peer/torch_ep_peer.py), so that `moetop bench --ep N` and the
// peer can be compared case by case.
//
// Every rank holds Tokens tokens and sends its Tokens·TopK routed rows (no
// token sent once per rank: the peer does not deduplicate) by the same
// fixed counts, the peer's count_rows with cap = Tokens; experts sit in
// contiguous blocks of Experts/N. So rank r sends Send(d) rows to rank d,
// every rank alike, and receives Send(r) rows from every rank. The
// phases, each timed on every rank:
//
//	dispatch  the rows to the experts' owners (an all-to-all)
//	gemm      the local experts' x·w1, gelu, ·w2 over the received rows
//	wait      a one-element all-reduce: the time a rank idles for the slowest
//	combine   the results back to the rows' ranks (an all-to-all)
//
// No router and no permutation: the rows to send are laid out by
// destination, expert after expert, as the fixed counts say.

// Exchange phases, in step order.
const (
	XDispatch = iota
	XGEMM
	XWait
	XCombine
	NumXPhases
)

// XPhaseNames name the exchange's phases, in step order: the peer's
// dispatch_ms, gemm_ms, wait_ms and combine_ms.
var XPhaseNames = [NumXPhases]string{"dispatch", "gemm", "wait", "combine"}

// XTimes is one rank's phases of one step, indexed by XDispatch….
type XTimes [NumXPhases]time.Duration

// Total is the step: the four phases together.
func (t XTimes) Total() time.Duration {
	var s time.Duration
	for _, d := range t {
		s += d
	}
	return s
}

// Exchange is one case of the exchange benchmark over Ranks ranks.
type Exchange struct {
	Ranks  int
	Tokens int // per rank
	Hidden int
	FFN    int
	TopK   int
	// DType is what the rows and weights are held in: the peer's bf16 on
	// GPUs; the CPU ranks compute and send float32.
	DType kernels.DType
	// Counts are the rows every rank sends to each expert (len = experts),
	// the same on every rank; they sum to Tokens·TopK.
	Counts []int
}

// NewExchange checks a case and its counts: experts must split evenly over
// the ranks (as the peer requires), and the counts must be the rows of
// tokens·topK, no expert above tokens (a router picks an expert at most
// once per token).
func NewExchange(counts []int, tokens, hidden, ffn, topK, ranks int, dt kernels.DType) (*Exchange, error) {
	E := len(counts)
	switch {
	case ranks < 1:
		return nil, fmt.Errorf("exchange: %d ranks; want at least 1", ranks)
	case tokens < 1 || hidden < 1 || ffn < 1 || topK < 1:
		return nil, fmt.Errorf("exchange: tokens %d, hidden %d, ffn %d, top-k %d; want each at least 1", tokens, hidden, ffn, topK)
	case E < ranks || E%ranks != 0:
		return nil, fmt.Errorf("exchange: %d experts do not split over %d ranks", E, ranks)
	}
	sum := 0
	for e, c := range counts {
		if c < 0 || c > tokens {
			return nil, fmt.Errorf("exchange: expert %d gets %d rows; want 0 … %d (the tokens)", e, c, tokens)
		}
		sum += c
	}
	if sum != tokens*topK {
		return nil, fmt.Errorf("exchange: the counts add up to %d rows; want tokens × top-k = %d", sum, tokens*topK)
	}
	return &Exchange{Ranks: ranks, Tokens: tokens, Hidden: hidden, FFN: ffn, TopK: topK, DType: dt,
		Counts: slices.Clone(counts)}, nil
}

// Experts is the number of experts; Local how many each rank holds.
func (x *Exchange) Experts() int { return len(x.Counts) }
func (x *Exchange) Local() int   { return len(x.Counts) / x.Ranks }

// Rows is what each rank sends in dispatch, itself included: Tokens·TopK.
func (x *Exchange) Rows() int { return x.Tokens * x.TopK }

// Send is the rows each rank sends to rank d: its counts for d's experts.
func (x *Exchange) Send(d int) int {
	L, n := x.Local(), 0
	for _, c := range x.Counts[d*L : (d+1)*L] {
		n += c
	}
	return n
}

// SendAt is the first of a rank's rows that go to rank d: the rows to send
// are laid out by destination, then expert.
func (x *Exchange) SendAt(d int) int {
	n := 0
	for j := range d {
		n += x.Send(j)
	}
	return n
}

// RecvRows is what rank r receives: Send(r) rows from each rank.
func (x *Exchange) RecvRows(r int) int { return x.Ranks * x.Send(r) }

// ChunkOffset is where rank r's local expert j (0 ≤ j < Local) starts
// within each source's chunk of rows: rank r receives [source 0: its
// experts in order | source 1: … ], each chunk Send(r) rows long.
func (x *Exchange) ChunkOffset(r, j int) int {
	L, n := x.Local(), 0
	for _, c := range x.Counts[r*L : r*L+j] {
		n += c
	}
	return n
}

// RowBytes is one row's bytes in DType.
func (x *Exchange) RowBytes() int64 { return int64(x.Hidden) * int64(x.DType.Size()) }

// RemoteBytes is what rank r sends to other ranks in dispatch, and gets
// back from them in combine: the peer's remote_bytes.
func (x *Exchange) RemoteBytes(r int) int64 { return int64(x.Rows()-x.Send(r)) * x.RowBytes() }

// MaxRemoteBytes is the most any rank sends to the others: what the
// peer's GB/s divide by the phase's time.
func (x *Exchange) MaxRemoteBytes() int64 {
	var m int64
	for r := range x.Ranks {
		m = max(m, x.RemoteBytes(r))
	}
	return m
}

// MaxRecvRows is the most rows any rank runs through its experts.
func (x *Exchange) MaxRecvRows() int {
	m := 0
	for r := range x.Ranks {
		m = max(m, x.RecvRows(r))
	}
	return m
}

// Owner is the rank that holds expert e.
func (x *Exchange) Owner(e int) int { return e / x.Local() }

// XSummary is the peer's reduction of a case's timings: each rank's
// median step (by the sum of its phases, as the peer's timed() sorts its
// repetitions), then the slowest rank per phase.
type XSummary struct {
	// Phases in milliseconds, each the max over ranks of that rank's
	// median step's phase; StepMS the max over ranks of that step's sum.
	DispatchMS, GEMMMS, WaitMS, CombineMS, StepMS float64
	// GB/s: MaxRemoteBytes over the dispatch and combine times (1e9 B/s),
	// nccl-tests' bus bandwidth for an even all-to-all.
	DispatchGBps, CombineGBps float64
	// GEMMTFLOPS: 4·MaxRecvRows·hidden·ffn over the gemm time, in TFLOP/s.
	GEMMTFLOPS float64
	// RecvRows is what each rank ran, in rank order.
	RecvRows []int
}

// ErrNoTimes is a summary asked of no repetitions.
var ErrNoTimes = errors.New("exchange: no timed repetitions")

// Summarize reduces times[rank][rep] as the peer does.
func (x *Exchange) Summarize(times [][]XTimes) (XSummary, error) {
	var s XSummary
	if len(times) != x.Ranks {
		return s, fmt.Errorf("exchange: times of %d ranks; want %d", len(times), x.Ranks)
	}
	ms := func(d time.Duration) float64 { return float64(d) / 1e6 }
	for r, reps := range times {
		if len(reps) == 0 {
			return s, fmt.Errorf("rank %d: %w", r, ErrNoTimes)
		}
		m := medianStep(reps)
		s.DispatchMS = max(s.DispatchMS, ms(m[XDispatch]))
		s.GEMMMS = max(s.GEMMMS, ms(m[XGEMM]))
		s.WaitMS = max(s.WaitMS, ms(m[XWait]))
		s.CombineMS = max(s.CombineMS, ms(m[XCombine]))
		s.StepMS = max(s.StepMS, ms(m.Total()))
		s.RecvRows = append(s.RecvRows, x.RecvRows(r))
	}
	b := float64(x.MaxRemoteBytes())
	s.DispatchGBps, s.CombineGBps = rate(b, s.DispatchMS), rate(b, s.CombineMS)
	s.GEMMTFLOPS = rate(4*float64(x.MaxRecvRows())*float64(x.Hidden)*float64(x.FFN), s.GEMMMS) / 1e3
	return s, nil
}

// rate is v per ms in units of 1e6 per ms (bytes → GB/s); 0 without a time.
func rate(v, ms float64) float64 {
	if !(ms > 0) || math.IsInf(ms, 0) {
		return 0
	}
	return v / ms / 1e6
}

// medianStep is the repetition whose total is the median, the upper one of
// an even count: the peer sorts by sum and takes out[len // 2].
func medianStep(reps []XTimes) XTimes {
	s := slices.Clone(reps)
	slices.SortStableFunc(s, func(a, b XTimes) int {
		switch ta, tb := a.Total(), b.Total(); {
		case ta < tb:
			return -1
		case ta > tb:
			return 1
		}
		return 0
	})
	return s[len(s)/2]
}

// AllToAllBusGBps is nccl-tests' bus bandwidth of an all-to-all in which
// every one of ranks ranks sends bytesPerRank (1/ranks of it to each rank,
// itself included) in d: algbw = bytesPerRank / d, and busbw = algbw ·
// (n−1)/n, the bytes that cross between ranks. 0 for one rank, whose
// all-to-all crosses nothing.
func AllToAllBusGBps(bytesPerRank int64, ranks int, d time.Duration) float64 {
	if ranks < 2 || d <= 0 || bytesPerRank <= 0 {
		return 0
	}
	alg := float64(bytesPerRank) / d.Seconds() / 1e9
	return alg * float64(ranks-1) / float64(ranks)
}
