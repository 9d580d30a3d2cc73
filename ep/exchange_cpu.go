package ep

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/moetop/moetop/kernels"
)

// Inputs are rank r's rows to send (Rows × Hidden) and its local experts'
// weights, w1 (Local × Hidden × FFN) and w2 (Local × FFN × Hidden), filled
// as the GPU ranks fill theirs (kernels.FillSlice, seed r+1, the layer's
// scales) and rounded to DType, so that the host can say what any rank
// should compute.
func (x *Exchange) Inputs(r int) (rows, w1, w2 []float32) {
	seed := uint64(r + 1)
	L, H, F := x.Local(), x.Hidden, x.FFN
	rows = make([]float32, x.Rows()*H)
	w1 = make([]float32, L*H*F)
	w2 = make([]float32, L*F*H)
	kernels.FillSlice(rows, seed, kernels.TensorX, kernels.ScaleX(), x.DType)
	kernels.FillSlice(w1, seed, kernels.TensorW1, kernels.ScaleW1(H), x.DType)
	kernels.FillSlice(w2, seed, kernels.TensorW2, kernels.ScaleW2(F), x.DType)
	return rows, w1, w2
}

// ffn runs n rows of in (n × Hidden) through an expert, gelu(in·w1)·w2,
// into out (n × Hidden), with h (n × FFN) as scratch, rounding h to DType
// where a GPU stores it.
func (x *Exchange) ffn(out, in, h, w1, w2 []float32, n int) {
	H, F := x.Hidden, x.FFN
	kernels.MatMul(h, in, n, H, w1, F)
	x.DType.RoundSlice(h[:n*F])
	kernels.Activate(h[:n*F], kernels.GELU)
	x.DType.RoundSlice(h[:n*F])
	kernels.MatMul(out, h, n, F, w2, H)
	x.DType.RoundSlice(out[:n*H])
}

// Expected is what rank r should hold after combine: each of its rows
// through its expert's FFN with the owner's weights, computed on the host
// expert by expert in send order, apart from any transport: the oracle of
// a run's dispatch and combine.
func (x *Exchange) Expected(r int) []float32 {
	H, F, L := x.Hidden, x.FFN, x.Local()
	rows, _, _ := x.Inputs(r)
	out := make([]float32, len(rows))
	at := 0
	for e, c := range x.Counts {
		if c > 0 {
			_, w1, w2 := x.Inputs(x.Owner(e))
			j := e % L
			h := make([]float32, c*F)
			x.ffn(out[at*H:], rows[at*H:], h, w1[j*H*F:(j+1)*H*F], w2[j*F*H:(j+1)*F*H], c)
		}
		at += c
	}
	return out
}

// cpuXRank is one CPU rank's buffers: rows to send, received rows laid
// out [source 0 | source 1 | …] each expert after expert, h and y in the
// same layout, and what came back in send order.
type cpuXRank struct {
	r              int
	x              *Exchange
	tr             Transport
	rows, w1, w2   []float32
	rx, h, y, back []float32
}

func newCPUXRank(x *Exchange, r int, tr Transport) *cpuXRank {
	rows, w1, w2 := x.Inputs(r)
	R := x.RecvRows(r)
	return &cpuXRank{r: r, x: x, tr: tr, rows: rows, w1: w1, w2: w2, rx: make([]float32, R*x.Hidden),
		h: make([]float32, R*x.FFN), y: make([]float32, R*x.Hidden), back: make([]float32, len(rows))}
}

// step runs and times one step.
func (rk *cpuXRank) step(ctx context.Context) (XTimes, error) {
	var t XTimes
	x, H, N := rk.x, rk.x.Hidden, rk.x.Ranks
	per := x.Send(rk.r) // rows from each source
	t0 := time.Now()
	send, recv := make([]Rows, N), make([]Rows, N)
	for d := range N {
		at := x.SendAt(d)
		send[d] = Rows{X: rk.rows[at*H : (at+x.Send(d))*H]}
		recv[d] = Rows{X: rk.rx[d*per*H : (d+1)*per*H]}
	}
	if err := rk.tr.Dispatch(ctx, send, recv); err != nil {
		return t, err
	}
	t1 := time.Now()
	if err := rk.experts(ctx, per); err != nil {
		return t, err
	}
	t2 := time.Now()
	if _, err := rk.tr.AllReduce(ctx, 1); err != nil {
		return t, err
	}
	t3 := time.Now()
	out, in := make([][]float32, N), make([][]float32, N)
	for d := range N {
		at := x.SendAt(d)
		out[d] = rk.y[d*per*H : (d+1)*per*H]
		in[d] = rk.back[at*H : (at+x.Send(d))*H]
	}
	if err := rk.tr.Combine(ctx, out, in); err != nil {
		return t, err
	}
	t4 := time.Now()
	t[XDispatch], t[XGEMM], t[XWait], t[XCombine] = t1.Sub(t0), t2.Sub(t1), t3.Sub(t2), t4.Sub(t3)
	return t, nil
}

// experts runs each local expert over its rows from every source, where
// they arrived: source s's rows of local expert j start at s·per +
// ChunkOffset(j), as the GPU ranks' strided GEMMs read them.
func (rk *cpuXRank) experts(ctx context.Context, per int) error {
	x, H, F := rk.x, rk.x.Hidden, rk.x.FFN
	for j := range x.Local() {
		c := x.Counts[rk.r*x.Local()+j]
		if c == 0 {
			continue
		}
		off := x.ChunkOffset(rk.r, j)
		w1, w2 := rk.w1[j*H*F:(j+1)*H*F], rk.w2[j*F*H:(j+1)*F*H]
		for s := range x.Ranks {
			if err := ctx.Err(); err != nil {
				return err
			}
			at := s*per + off
			x.ffn(rk.y[at*H:], rk.rx[at*H:], rk.h[at*F:], w1, w2, c)
		}
	}
	return nil
}

// RunExchangeCPU times x on x.Ranks ranks in this process, each on its own
// goroutine, over the in-process transport (Fake, which copies every
// buffer as a message), the experts through the CPU reference's GEMM
// (kernels.MatMul): the peer's scope on the CPU, for machines without
// GPUs and for tests. It returns times[rank][rep] of the reps steps after
// warmup; each transport call waits at most timeout for the other ranks.
func RunExchangeCPU(ctx context.Context, x *Exchange, warmup, reps int, timeout time.Duration) ([][]XTimes, error) {
	times, _, err := runExchangeCPU(ctx, x, warmup, reps, timeout)
	return times, err
}

// runExchangeCPU is RunExchangeCPU that also returns what each rank got
// back in its last step.
func runExchangeCPU(ctx context.Context, x *Exchange, warmup, reps int, timeout time.Duration) ([][]XTimes, [][]float32, error) {
	if reps < 1 || warmup < 0 {
		return nil, nil, fmt.Errorf("exchange: %d reps after %d warm-up steps; want reps ≥ 1, warm-up ≥ 0", reps, warmup)
	}
	if x.DType != kernels.FP32 {
		return nil, nil, fmt.Errorf("exchange: the CPU ranks send float32, not %s", x.DType)
	}
	trs := NewFake(x.Ranks, timeout)
	times := make([][]XTimes, x.Ranks)
	back := make([][]float32, x.Ranks)
	errs := make([]error, x.Ranks)
	var wg sync.WaitGroup
	for r := range x.Ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rk := newCPUXRank(x, r, trs[r])
			for i := range warmup + reps {
				t, err := rk.step(ctx)
				if err == nil {
					// Untimed, as the peer's barrier between repetitions:
					// every rank starts the next step together.
					_, err = rk.tr.AllReduce(ctx, 0)
				}
				if err != nil {
					errs[r] = fmt.Errorf("rank %d: %w", r, err)
					// The others would wait for this rank until their timeout.
					rk.tr.Abort(errs[r])
					return
				}
				if i >= warmup {
					times[r] = append(times[r], t)
				}
			}
			back[r] = rk.back
		}()
	}
	wg.Wait()
	if err := firstCause(errs); err != nil {
		return nil, nil, err
	}
	return times, back, nil
}

// firstCause is the error of the rank that failed first: the others end
// with ErrAborted, wrapping it.
func firstCause(errs []error) error {
	for _, err := range errs {
		if err != nil && !errors.Is(err, ErrAborted) {
			return err
		}
	}
	return errors.Join(errs...)
}
