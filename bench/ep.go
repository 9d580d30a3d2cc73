package bench

import (
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/profiler"
)

// EPResult is one case × distribution of `moetop bench --ep N`: the
// expert path over N ranks (ep.Exchange), with the keys of the EP peer's
// JSON (shared/peer/torch_ep_peer.py) so that scripts/compare_ep.py reads
// both alike, and moetop's usual fields after them.
type EPResult struct {
	Shape         string `json:"shape"`
	TokensPerRank int    `json:"tokens_per_rank"`
	Hidden        int    `json:"hidden"`
	FFN           int    `json:"ffn"`
	Experts       int    `json:"experts"`
	TopK          int    `json:"topk"`
	Dist          string `json:"dist"`
	World         int    `json:"world"`
	// GPU is the ranks' device, as the peer's torch.cuda.get_device_name()
	// ("" on the CPU ranks).
	GPU string `json:"gpu"`
	// Counts are the rows every rank sends to each expert (the peer's
	// count_rows, cap = tokens); RecvRows what each rank ran.
	Counts   []int `json:"counts"`
	RecvRows []int `json:"recv_rows"`
	// Each phase is the slowest rank's, of each rank's median step (by
	// the sum of its phases); StepMS the slowest rank's sum.
	DispatchMS float64 `json:"dispatch_ms"`
	GEMMMS     float64 `json:"gemm_ms"`
	WaitMS     float64 `json:"wait_ms"`
	CombineMS  float64 `json:"combine_ms"`
	StepMS     float64 `json:"step_ms"`
	// GB/s: the most bytes a rank sends to other ranks over the phase's
	// time, nccl-tests' bus bandwidth for an even all-to-all; TFLOP/s:
	// 4 · the most rows a rank ran · hidden · ffn over the gemm time.
	DispatchGBps float64 `json:"dispatch_gbps"`
	CombineGBps  float64 `json:"combine_gbps"`
	GEMMTFLOPS   float64 `json:"gemm_tflops"`

	Case    Case   `json:"case"`
	DType   string `json:"dtype"`
	Backend string `json:"backend"`
	Status  string `json:"status"`
	Reps    int    `json:"reps,omitempty"`
	// RemoteBytes is the most bytes a rank sends to other ranks (and gets
	// back in combine).
	RemoteBytes int64 `json:"remote_bytes"`
	// AllToAllGBps is the run's all-to-all ceiling (nccl-tests' bus
	// bandwidth of AllToAllBytes per rank, measured once at the start; 0:
	// not measured, as on the CPU ranks) and the Pct fields dispatch's and
	// combine's GB/s as a share of it.
	AllToAllGBps        float64 `json:"alltoall_gbps,omitempty"`
	AllToAllBytes       int64   `json:"alltoall_bytes,omitempty"`
	DispatchPctAllToAll float64 `json:"dispatch_pct_alltoall,omitempty"`
	CombinePctAllToAll  float64 `json:"combine_pct_alltoall,omitempty"`
	Error               string  `json:"error,omitempty"`
}

// EPRunner times an exchange: times[rank][rep] of reps steps after warmup.
type EPRunner func(ctx context.Context, x *ep.Exchange, warmup, reps int) ([][]ep.XTimes, error)

// EPOptions control `bench --ep`.
type EPOptions struct {
	Ranks  int
	Dists  []string
	DType  kernels.DType // bf16 on GPUs, fp32 on the CPU ranks
	Reps   int
	Warmup int
	Run    EPRunner
	// Backend names what runs the experts ("loop" on GPUs, "cpu");
	// Device the GPU.
	Backend, Device string
	// AllToAllGBps is the run's all-to-all ceiling, of AllToAllBytes per
	// rank (0: not measured).
	AllToAllGBps  float64
	AllToAllBytes int64
	Progress      func(done, total int, r EPResult)
}

// TotalEP is how many results RunEP will produce.
func TotalEP(cases []Case, o EPOptions) int { return len(cases) * len(o.Dists) }

// ErrNotPlain is a case whose experts are gated: the EP peer times plain
// gelu experts only.
var ErrNotPlain = errors.New("the EP peer times plain gelu experts")

// CheckEPCase says why c cannot run over ranks ranks, nil if it can.
func CheckEPCase(c Case, ranks int) error {
	if a, err := c.activation(); err != nil {
		return err
	} else if a != kernels.GELU {
		return fmt.Errorf("case %s: %w, not %s", c.Name, ErrNotPlain, a)
	}
	if ranks < 1 || c.Experts < ranks || c.Experts%ranks != 0 {
		return fmt.Errorf("case %s: %d experts do not split over %d ranks", c.Name, c.Experts, ranks)
	}
	return nil
}

// RunEP times every case × distribution over o.Ranks ranks. A failure of
// one case is a result, not the end of the run; only a cancelled ctx
// stops it early.
func RunEP(ctx context.Context, cases []Case, o EPOptions) ([]EPResult, error) {
	if o.Reps < 1 || o.Warmup < 0 {
		return nil, fmt.Errorf("bench: %d reps after %d warm-up steps; want reps ≥ 1, warm-up ≥ 0", o.Reps, o.Warmup)
	}
	var out []EPResult
	total := TotalEP(cases, o)
	for _, c := range cases {
		for _, dist := range o.Dists {
			if err := ctx.Err(); err != nil {
				return out, err
			}
			r := o.oneEP(ctx, c, dist)
			if ctx.Err() != nil {
				return out, ctx.Err()
			}
			out = append(out, r)
			if o.Progress != nil {
				o.Progress(len(out), total, r)
			}
		}
	}
	return out, nil
}

func (o EPOptions) oneEP(ctx context.Context, c Case, dist string) EPResult {
	r := EPResult{Shape: c.Name, TokensPerRank: c.Tokens, Hidden: c.Hidden, FFN: c.FFN, Experts: c.Experts, TopK: c.TopK,
		Dist: dist, World: o.Ranks, GPU: o.Device, Case: c, DType: o.DType.String(), Backend: o.Backend,
		AllToAllGBps: o.AllToAllGBps, AllToAllBytes: o.AllToAllBytes}
	r.Case.Act = kernels.GELU.String()
	fail := func(err error) EPResult {
		r.Status, r.Error = StatusError, err.Error()
		if errors.Is(err, kernels.ErrOutOfMemory) {
			r.Status = StatusOOM
		}
		return r
	}
	if err := CheckEPCase(c, o.Ranks); err != nil {
		return fail(err)
	}
	d, err := profiler.ParseRouting(dist, c.Experts, c.TopK)
	if err != nil {
		return fail(fmt.Errorf("case %s: %w", c.Name, err))
	}
	counts, err := profiler.CappedCounts(d, c.Tokens, c.TopK)
	if err != nil {
		return fail(fmt.Errorf("case %s %s: %w", c.Name, dist, err))
	}
	r.Counts = counts
	x, err := ep.NewExchange(counts, c.Tokens, c.Hidden, c.FFN, c.TopK, o.Ranks, o.DType)
	if err != nil {
		return fail(fmt.Errorf("case %s %s: %w", c.Name, dist, err))
	}
	for rk := range o.Ranks {
		r.RecvRows = append(r.RecvRows, x.RecvRows(rk))
	}
	r.RemoteBytes = x.MaxRemoteBytes()
	times, err := o.Run(ctx, x, o.Warmup, o.Reps)
	if err != nil {
		return fail(err)
	}
	s, err := x.Summarize(times)
	if err != nil {
		return fail(err)
	}
	r.Status, r.Reps = StatusOK, o.Reps
	r.DispatchMS, r.GEMMMS, r.WaitMS, r.CombineMS, r.StepMS = s.DispatchMS, s.GEMMMS, s.WaitMS, s.CombineMS, s.StepMS
	r.DispatchGBps, r.CombineGBps, r.GEMMTFLOPS = s.DispatchGBps, s.CombineGBps, s.GEMMTFLOPS
	if o.AllToAllGBps > 0 {
		r.DispatchPctAllToAll = 100 * r.DispatchGBps / o.AllToAllGBps
		r.CombinePctAllToAll = 100 * r.CombineGBps / o.AllToAllGBps
	}
	return r
}

// epColumns are the CSV's columns, and the table's and Markdown's (which
// join the two shares of the ceiling in one cell and leave out error).
var (
	epColumns = []string{"case", "tokens", "hidden", "ffn", "experts", "top_k", "dist", "world", "dtype", "backend",
		"status", "dispatch_ms", "gemm_ms", "wait_ms", "combine_ms", "step_ms", "dispatch_gbps", "combine_gbps",
		"dispatch_pct_alltoall", "combine_pct_alltoall", "gemm_tflops", "max_recv_rows", "remote_bytes", "alltoall_gbps", "error"}
	epTableColumns = []string{"case", "tokens", "hidden", "ffn", "experts", "top_k", "dist", "world", "status",
		"dispatch_ms", "gemm_ms", "wait_ms", "combine_ms", "step_ms", "dispatch_gbps", "combine_gbps", "of_alltoall",
		"gemm_tflops", "max_recv_rows"}
)

func epCells(r EPResult) map[string]string {
	sig := func(v float64) string {
		if v == 0 {
			return ""
		}
		return strconv.FormatFloat(v, 'g', 4, 64)
	}
	pct := func(v float64) string {
		if v == 0 {
			return ""
		}
		return strconv.FormatFloat(v, 'f', 1, 64)
	}
	share := ""
	if r.DispatchPctAllToAll > 0 || r.CombinePctAllToAll > 0 {
		share = fmt.Sprintf("%.0f%%/%.0f%%", r.DispatchPctAllToAll, r.CombinePctAllToAll)
	}
	maxRecv := ""
	if len(r.RecvRows) > 0 {
		maxRecv = strconv.Itoa(slices.Max(r.RecvRows))
	}
	return map[string]string{"case": r.Case.Name, "tokens": strconv.Itoa(r.TokensPerRank), "hidden": strconv.Itoa(r.Hidden),
		"ffn": strconv.Itoa(r.FFN), "experts": strconv.Itoa(r.Experts), "top_k": strconv.Itoa(r.TopK), "dist": r.Dist,
		"world": strconv.Itoa(r.World), "dtype": r.DType, "backend": r.Backend, "status": r.Status,
		"dispatch_ms": sig(r.DispatchMS), "gemm_ms": sig(r.GEMMMS), "wait_ms": sig(r.WaitMS), "combine_ms": sig(r.CombineMS),
		"step_ms": sig(r.StepMS), "dispatch_gbps": sig(r.DispatchGBps), "combine_gbps": sig(r.CombineGBps),
		"dispatch_pct_alltoall": pct(r.DispatchPctAllToAll), "combine_pct_alltoall": pct(r.CombinePctAllToAll),
		"of_alltoall": share, "gemm_tflops": sig(r.GEMMTFLOPS), "max_recv_rows": maxRecv,
		"remote_bytes": strconv.FormatInt(r.RemoteBytes, 10), "alltoall_gbps": sig(r.AllToAllGBps), "error": r.Error}
}

// WriteEP renders `bench --ep` results in a format.
func WriteEP(w io.Writer, format string, rs []EPResult) error {
	cols := epTableColumns
	if !slices.ContainsFunc(rs, func(r EPResult) bool { return r.AllToAllGBps > 0 }) {
		// No ceiling (the CPU ranks): a column of nothing says nothing.
		cols = slices.DeleteFunc(slices.Clone(cols), func(c string) bool { return c == "of_alltoall" })
	}
	cs := make([]map[string]string, len(rs))
	for i, r := range rs {
		cs[i] = epCells(r)
	}
	if people, err := render(w, format, rs, epColumns, cols, cs); err != nil || !people {
		return err
	}
	if format == "table" {
		for _, r := range rs {
			if r.Error != "" {
				fmt.Fprintf(w, "%s %s: %s\n", r.Case.Name, r.Dist, r.Error)
			}
		}
	}
	WriteAllToAll(w, rs)
	return nil
}

// WriteAllToAll says what all-to-all ceiling the results were put under,
// and in which convention; nothing where none was measured.
func WriteAllToAll(w io.Writer, rs []EPResult) {
	for _, r := range rs {
		if r.AllToAllGBps > 0 {
			fmt.Fprintf(w, "all-to-all ceiling %.4g GB/s over %d ranks: NCCL all-to-all of %d MiB per rank, measured at the start;"+
				" bus bandwidth as nccl-tests counts it, algbw × (n−1)/n (of_alltoall: dispatch%%/combine%% of it)\n",
				r.AllToAllGBps, r.World, r.AllToAllBytes>>20)
			return
		}
	}
}
