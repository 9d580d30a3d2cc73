package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
)

// The exchange benchmark over the GPUs of this process (`moetop bench
// --ep N`): ep.Exchange's scope, that of the EP peer
// (shared/peer/torch_ep_peer.py), timed with CUDA events on every rank.
// Rank r drives device r of the list, all ranks in one NCCL clique
// (ncclCommInitAll), every rank's sends and receives in one group call.
// Also the all-to-all ceiling a GPU expert-parallel run is measured
// against.
//
// NOT YET RUN ON A GPU: written on a machine without GPUs or a loadable
// NCCL. OpenExchangeBench refuses unless UnverifiedGPUEPEnv is 1.

// AllToAllCeilingBytes is what each rank sends in the all-to-all that sets
// the ceiling: 256 MiB, large enough that NCCL runs at its bus bandwidth
// rather than its latency.
const AllToAllCeilingBytes = 256 << 20

// ExchangeBench holds the GPUs, their streams, cuBLAS handles and NCCL
// clique between cases; each case allocates its own buffers.
type ExchangeBench struct {
	// Timeout bounds each wait for a step's work (0: 60s); past it, or
	// on an NCCL error, every communicator is aborted and the bench ends.
	Timeout time.Duration
	// NoGraphs issues each rank's expert GEMMs from the host every step
	// instead of replaying them as a CUDA graph.
	NoGraphs bool

	devices []int
	// The ranks, rank r on devices[r] with communicator comms[r], and
	// whether they died or were given up on.
	ncclRanks[*xRank]
}

// xRank is one rank: its device, stream, cuBLAS handle and workspace, the
// layer kernels (fill, activation), events, and one case's buffers.
type xRank struct {
	r      int
	dev    *Device
	mod    *module
	stream C.CUstream
	handle C.cublasHandle_t
	ws     ptr // cuBLAS workspace
	red    ptr // the wait all-reduce's one float
	events [ep.NumXPhases + 1]C.CUevent
	graphs graphs
	bufs   xBuffers
}

// xBuffers are one case's buffers on a rank, bf16: the rows it sends
// (laid out by destination, then expert), what it receives ([source 0 |
// source 1 | …], each expert after expert), h and y in the received
// layout, what comes back in combine (in send order), and its local
// experts' weights.
type xBuffers struct{ x, rx, h, y, back, w1, w2 ptr }

func (b *xBuffers) all() []*ptr { return []*ptr{&b.x, &b.rx, &b.h, &b.y, &b.back, &b.w1, &b.w2} }

var xBufferNames = [...]string{"rows to send", "received rows", "h", "y", "rows back", "w1", "w2"}

// exchangeBufferBytes are rank r's buffers for x, in xBuffers.all's order.
func exchangeBufferBytes(x *ep.Exchange, r int) []uint64 {
	e := uint64(x.DType.Size())
	H, F, L := uint64(x.Hidden), uint64(x.FFN), uint64(x.Local())
	rows, R := uint64(x.Rows()), uint64(x.RecvRows(r))
	return []uint64{rows * H * e, R * H * e, R * F * e, R * H * e, rows * H * e, L * H * F * e, L * F * H * e}
}

// ExchangeDeviceBytes is the device memory rank r of x needs for a case,
// beyond what OpenExchangeBench holds (a cuBLAS workspace and a float).
func ExchangeDeviceBytes(x *ep.Exchange, r int) uint64 {
	var n uint64
	for _, b := range exchangeBufferBytes(x, r) {
		n += b
	}
	return n
}

// checkExchange refuses, before any GPU work, a case the GPU ranks do not
// run.
func checkExchange(x *ep.Exchange, ranks, warmup, reps int) error {
	switch {
	case x.Ranks != ranks:
		return fmt.Errorf("exchange over %d ranks on %d GPUs", x.Ranks, ranks)
	case x.DType != kernels.BF16:
		return fmt.Errorf("exchange in %s: the GPU ranks run bf16, as the peer does", x.DType)
	case reps < 1 || warmup < 0:
		return fmt.Errorf("exchange: %d reps after %d warm-up steps; want reps ≥ 1, warm-up ≥ 0", reps, warmup)
	}
	return nil
}

// checkDevices refuses an empty list or a GPU named twice.
func checkDevices(devices []int) error {
	if len(devices) == 0 {
		return errors.New("exchange over GPUs: no devices")
	}
	seen := map[int]bool{}
	for _, d := range devices {
		if d < 0 || seen[d] {
			return fmt.Errorf("exchange over GPUs: devices %v: one rank per GPU, each a CUDA ordinal once", devices)
		}
		seen[d] = true
	}
	return nil
}

// OpenExchangeBench opens one rank per device, rank r on devices[r], and
// their NCCL clique. It refuses unless the user opted into the GPU path
// not yet checked on GPUs (GPUEPAllowed).
func OpenExchangeBench(devices []int, libDir string) (_ *ExchangeBench, err error) {
	if err := GPUEPAllowed(); err != nil {
		return nil, err
	}
	if err := checkDevices(devices); err != nil {
		return nil, err
	}
	// NCCL_NVLS_ENABLE=0 before NCCL is opened: LoadNCCL sets it first.
	if _, err := LoadNCCL(libDir); err != nil {
		return nil, err
	}
	b := &ExchangeBench{devices: slices.Clone(devices)}
	b.name = "exchange over GPUs"
	b.revive()
	defer func() {
		if err != nil {
			err = errors.Join(err, b.Close())
		}
	}()
	for r, d := range devices {
		rk, err := openXRank(r, d, libDir)
		if err != nil {
			return nil, fmt.Errorf("rank %d (device %d): %w", r, d, err)
		}
		b.ranks = append(b.ranks, rk)
	}
	// ncclCommInitAll switches this thread's current device; every later
	// call enters its rank's device again.
	comms, err := CommInitAll(devices)
	if err != nil {
		return nil, err
	}
	b.setComms(comms)
	return b, nil
}

// The rank as one of ncclRanks.
func (rk *xRank) id() int                { return rk.r }
func (rk *xRank) enter() (func(), error) { return rk.dev.Enter() }
func (rk *xRank) work() cuStream         { return rk.stream }

func openXRank(r, d int, libDir string) (rk *xRank, err error) {
	dev, err := OpenDevice(libDir, d)
	if err != nil {
		return nil, err
	}
	rk = &xRank{r: r, dev: dev}
	defer func() {
		if err != nil {
			err = errors.Join(err, rk.close())
		}
	}()
	leave, err := dev.Enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	if rk.mod, err = loadModule(dev); err != nil {
		return nil, err
	}
	if rk.ws, err = alloc("cuBLAS workspace", kernels.WorkspaceBytes); err != nil {
		return nil, err
	}
	if rk.stream, rk.handle, err = openBLASStream(rk.ws, kernels.WorkspaceBytes); err != nil {
		return nil, err
	}
	for i := range rk.events {
		if err := check("cuEventCreate", C.call_cuEventCreate(&rk.events[i], 0)); err != nil {
			return nil, err
		}
	}
	if rk.red, err = alloc("wait all-reduce", 4); err != nil {
		return nil, err
	}
	if err := check("cuMemsetD32Async(wait buffer)", C.call_cuMemsetD32Async(rk.red, 0, 1, rk.stream)); err != nil {
		return nil, err
	}
	return rk, check("cuStreamSynchronize(open)", C.call_cuStreamSynchronize(rk.stream))
}

// freeCase releases a case's buffers and the graphs that point into them,
// once the stream's work on them is done. The caller has entered the
// device.
func (rk *xRank) freeCase() error {
	var r releaser
	r.sync(rk.stream, "free")
	r.add(rk.graphs.release())
	for _, p := range rk.bufs.all() {
		r.mem(p)
	}
	return r.err()
}

// close releases everything the rank holds, and its device.
func (rk *xRank) close() error {
	var errs []error
	if leave, err := rk.dev.Enter(); err == nil {
		errs = append(errs, rk.freeCase())
		var r releaser
		r.events(rk.events[:])
		r.blasStream(&rk.stream, &rk.handle, "close")
		r.mem(&rk.ws)
		r.mem(&rk.red)
		leave()
		errs = append(errs, r.err())
	} else {
		errs = append(errs, err)
	}
	errs = append(errs, rk.dev.Close())
	return errors.Join(errs...)
}

// Close ends the communicators (aborting them after a failure: a rank may
// be stuck) and releases every rank; a second Close does nothing. After
// an NCCL call that never returned, it leaves the communicators and
// devices as they are, to the process's exit.
func (b *ExchangeBench) Close() error {
	release, err := b.end()
	errs := []error{err}
	if release {
		for _, rk := range b.ranks {
			if err := rk.close(); err != nil {
				errs = append(errs, fmt.Errorf("rank %d: %w", rk.r, err))
			}
		}
	}
	b.ranks = nil
	return errors.Join(errs...)
}

// DeviceName is rank 0's GPU, as the peer's gpu field names it.
func (b *ExchangeBench) DeviceName() string {
	if len(b.ranks) == 0 {
		return ""
	}
	return b.ranks[0].dev.Name
}

// Ranks is how many GPUs the bench drives.
func (b *ExchangeBench) Ranks() int { return len(b.devices) }

func (b *ExchangeBench) timeout() time.Duration {
	if b.Timeout <= 0 {
		return time.Minute
	}
	return b.Timeout
}

func (b *ExchangeBench) usable() error {
	if err := b.failed(); err != nil {
		return err
	}
	if b.comms == nil {
		return errors.New("exchange over GPUs: closed")
	}
	return nil
}

// mark records event i on every rank's stream, from this goroutine: a
// goroutine per rank would cost more host time than the record itself.
func (b *ExchangeBench) mark(i int) error {
	for _, rk := range b.ranks {
		leave, err := rk.dev.Enter()
		if err != nil {
			return err
		}
		err = check(fmt.Sprintf("cuEventRecord(rank %d, event %d)", rk.r, i), C.call_cuEventRecord(rk.events[i], rk.stream))
		leave()
		if err != nil {
			return err
		}
	}
	return nil
}

// Run times x on the GPUs: warmup untimed steps, then reps timed ones,
// every rank's streams synchronized between steps (the peer's barrier).
// It returns times[rank][rep]. A case the GPUs have no room for fails
// before allocating, with an error matching kernels.ErrOutOfMemory.
func (b *ExchangeBench) Run(ctx context.Context, x *ep.Exchange, warmup, reps int) ([][]ep.XTimes, error) {
	return b.run(ctx, x, warmup, reps, nil)
}

// run is Run with a look at every rank's buffers after the last step.
func (b *ExchangeBench) run(ctx context.Context, x *ep.Exchange, warmup, reps int, inspect func(rk *xRank) error) (times [][]ep.XTimes, err error) {
	if err := b.usable(); err != nil {
		return nil, err
	}
	if err := checkExchange(x, len(b.ranks), warmup, reps); err != nil {
		return nil, err
	}
	if err := b.eachRank("memory", func(rk *xRank) error {
		free, _, err := rk.dev.MemInfo()
		if err != nil {
			return err
		}
		if need := ExchangeDeviceBytes(x, rk.r); need > free {
			return fmt.Errorf("%w: the case needs %.2f GiB on the rank, the GPU has %.2f GiB free",
				kernels.ErrOutOfMemory, gib(need), gib(free))
		}
		return nil
	}); err != nil {
		return nil, err
	}
	defer func() {
		if b.isAbandoned() {
			return // an NCCL call given up on may still use them
		}
		if ferr := b.eachRank("free", func(rk *xRank) error { return rk.freeCase() }); ferr != nil {
			err = errors.Join(err, ferr)
		}
	}()
	if err := b.eachRank("setup", func(rk *xRank) error { return rk.setup(x) }); err != nil {
		return nil, err
	}
	times = make([][]ep.XTimes, len(b.ranks))
	for i := range warmup + reps {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		// The step's exchanges and its wait end with ctx, at one
		// deadline, or when a rank's work fails.
		l := newLimit(ctx, b.timeout())
		if err := b.step(l, x); err != nil {
			return nil, err
		}
		if err := b.wait(l, "step"); err != nil {
			return nil, err
		}
		if i < warmup {
			continue
		}
		if err := b.eachRank("times", func(rk *xRank) error {
			t, err := rk.elapsed(int(ep.NumXPhases))
			if err != nil {
				return err
			}
			var xt ep.XTimes
			copy(xt[:], t)
			times[rk.r] = append(times[rk.r], xt)
			return nil
		}); err != nil {
			return nil, err
		}
	}
	if inspect != nil {
		if err := b.eachRank("inspect", inspect); err != nil {
			return nil, err
		}
	}
	return times, nil
}

// setup allocates the case's buffers and fills the rows and weights as
// ep.Exchange.Inputs does on the host. The caller has entered the device.
func (rk *xRank) setup(x *ep.Exchange) error {
	sizes := exchangeBufferBytes(x, rk.r)
	for i, p := range rk.bufs.all() {
		var err error
		if *p, err = alloc(xBufferNames[i], sizes[i]); err != nil {
			return err
		}
	}
	seed := uint64(rk.r + 1)
	H, F, L := x.Hidden, x.FFN, x.Local()
	for _, f := range []struct {
		buf    ptr
		n      int
		tensor uint32
		scale  float32
	}{
		{rk.bufs.x, x.Rows() * H, kernels.TensorX, kernels.ScaleX()},
		{rk.bufs.w1, L * H * F, kernels.TensorW1, kernels.ScaleW1(H)},
		{rk.bufs.w2, L * F * H, kernels.TensorW2, kernels.ScaleW2(F)},
	} {
		if err := rk.mod.launch("fill_bf16", min(blocks(f.n, 256), 1<<16), 256, rk.stream, argPtr(f.buf), argU64(uint64(f.n)),
			argU64(seed), uint64(f.tensor), argF32(f.scale)); err != nil {
			return err
		}
	}
	return check("cuStreamSynchronize(setup)", C.call_cuStreamSynchronize(rk.stream))
}

// elapsed reads the times between the rank's first n+1 events.
func (rk *xRank) elapsed(n int) ([]time.Duration, error) {
	out := make([]time.Duration, n)
	for i := range out {
		var f C.float
		if err := check("cuEventElapsedTime", C.call_cuEventElapsedTime(&f, rk.events[i], rk.events[i+1])); err != nil {
			return nil, err
		}
		out[i] = time.Duration(float64(f) * 1e6)
	}
	return out, nil
}

// step enqueues one step on every rank, each phase between two events:
// dispatch, gemm, wait, combine.
func (b *ExchangeBench) step(l limit, x *ep.Exchange) error {
	N, H, rb := len(b.ranks), x.Hidden, x.RowBytes()
	at := func(base ptr, row int) DevicePtr { return DevicePtr(base + ptr(int64(row)*rb)) }
	if err := b.mark(0); err != nil {
		return err
	}
	// Dispatch: Send(d) rows to each rank d, Send(r) rows from each.
	// A pair with nothing to carry is skipped on both ends, which both
	// know from the counts.
	if err := b.group(l, "ncclSend/Recv(dispatch)", func(rk *xRank, c *Comm) error {
		per, st := x.Send(rk.r), streamOf(rk.stream)
		for d := range N {
			if n := x.Send(d); n > 0 {
				if err := c.Send(at(rk.bufs.x, x.SendAt(d)), n*H, NCCLBfloat16, d, st); err != nil {
					return err
				}
			}
			if per > 0 {
				if err := c.Recv(at(rk.bufs.rx, d*per), per*H, NCCLBfloat16, d, st); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		return err
	}
	if err := b.mark(1); err != nil {
		return err
	}
	if err := b.eachRank("experts", func(rk *xRank) error { return rk.experts(x, b.NoGraphs) }); err != nil {
		return err
	}
	if err := b.mark(2); err != nil {
		return err
	}
	// Wait: a one-element all-reduce, where a rank idles for the slowest.
	if err := b.group(l, "ncclAllReduce(wait)", func(rk *xRank, c *Comm) error {
		return c.AllReduce(DevicePtr(rk.red), DevicePtr(rk.red), 1, NCCLFloat32, NCCLSum, streamOf(rk.stream))
	}); err != nil {
		return err
	}
	if err := b.mark(3); err != nil {
		return err
	}
	// Combine: each source's rows back, in the order they came.
	if err := b.group(l, "ncclSend/Recv(combine)", func(rk *xRank, c *Comm) error {
		per, st := x.Send(rk.r), streamOf(rk.stream)
		for d := range N {
			if per > 0 {
				if err := c.Send(at(rk.bufs.y, d*per), per*H, NCCLBfloat16, d, st); err != nil {
					return err
				}
			}
			if n := x.Send(d); n > 0 {
				if err := c.Recv(at(rk.bufs.back, x.SendAt(d)), n*H, NCCLBfloat16, d, st); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		return err
	}
	return b.mark(4)
}

// experts runs the rank's local experts over the rows where they arrived:
// source s's rows of local expert j start at row s·per + ChunkOffset(j),
// so one strided-batched GEMM per expert and GEMM covers every source
// (batch stride per rows, the weights' stride 0), with no permutation;
// the activation runs over all received rows at once. Replayed as a CUDA
// graph from the second step on unless noGraphs: with 64 experts a rank
// issues 129 calls a step, and the host would set the pace. The caller has
// entered the device.
func (rk *xRank) experts(x *ep.Exchange, noGraphs bool) error {
	if x.RecvRows(rk.r) == 0 {
		return nil // nothing came: no work, and no empty graph
	}
	issue := func() error {
		N, H, F, L, per := x.Ranks, x.Hidden, x.FFN, x.Local(), x.Send(rk.r)
		e := x.DType.Size()
		data, compute, sfx := dtypes(x.DType)
		gemm := func(second bool) error {
			for j := range L {
				c := x.Counts[rk.r*L+j]
				if c == 0 {
					continue
				}
				off := x.ChunkOffset(rk.r, j)
				// Row-major Y[c×n] = X[c×k]·W[k×n] as column-major Yᵀ = Wᵀ·Xᵀ
				// (see gemmEx), once per source.
				n, k := F, H
				w, xin, y := rk.bufs.w1+ptr(j*H*F*e), rk.bufs.rx+ptr(off*H*e), rk.bufs.h+ptr(off*F*e)
				if second {
					n, k = H, F
					w, xin, y = rk.bufs.w2+ptr(j*F*H*e), rk.bufs.h+ptr(off*F*e), rk.bufs.y+ptr(off*H*e)
				}
				if err := checkBLAS(fmt.Sprintf("cublasGemmStridedBatchedEx(expert %d)", rk.r*L+j), C.moetop_gemm_strided(rk.handle,
					C.int(n), C.int(c), C.int(k), w, C.int(n), 0, xin, C.int(k), C.longlong(per*k), y, C.int(n), C.longlong(per*n),
					C.int(N), C.int(data), C.int(compute))); err != nil {
					return err
				}
			}
			return nil
		}
		if err := gemm(false); err != nil {
			return err
		}
		if R := x.RecvRows(rk.r); R > 0 {
			silu, gated := actArgs(kernels.GELU)
			if err := rk.mod.launch("act_"+sfx, min(blocks(R*F, 256), 1<<16), 256, rk.stream, argPtr(rk.bufs.h),
				argU64(uint64(R)), argU64(uint64(F)), argInt(silu), argInt(gated)); err != nil {
				return err
			}
		}
		return gemm(true)
	}
	if noGraphs {
		return issue()
	}
	// The buffers stay put for the case, and freeCase drops the graph.
	return rk.graphs.run(rk.stream, "exchange", issue)
}

// AllToAll measures the ranks' all-to-all ceiling: every rank sends
// bytesPerRank, 1/N of it to each rank (itself included) in one group of
// ncclSend/Recv, as nccl-tests' alltoall_perf does; after two warm-up
// runs, the best of reps, each timed from the first rank's start to the
// last rank's end. The result is nccl-tests' bus bandwidth in GB/s (1e9
// B/s), algbw · (N−1)/N (ep.AllToAllBusGBps): the bytes that cross
// between ranks over the time, the figure a step's dispatch and combine
// GB/s are comparable with.
func (b *ExchangeBench) AllToAll(ctx context.Context, bytesPerRank, reps int) (_ float64, err error) {
	if err := b.usable(); err != nil {
		return 0, err
	}
	N := len(b.ranks)
	chunk := bytesPerRank / (2 * N) // bf16 elements to each rank
	switch {
	case N < 2:
		return 0, errors.New("all-to-all: one rank sends nothing to others")
	case chunk < 1 || reps < 1:
		return 0, fmt.Errorf("all-to-all: want at least %d bytes per rank and one run, not %d bytes and %d runs", 2*N, bytesPerRank, reps)
	}
	send, recv := make([]ptr, N), make([]ptr, N)
	defer func() {
		if b.isAbandoned() {
			return // an NCCL call given up on may still use them
		}
		if ferr := b.eachRank("all-to-all free", func(rk *xRank) error {
			var r releaser
			r.sync(rk.stream, "all-to-all free")
			r.mem(&send[rk.r])
			r.mem(&recv[rk.r])
			return r.err()
		}); ferr != nil {
			err = errors.Join(err, ferr)
		}
	}()
	if err := b.eachRank("all-to-all buffers", func(rk *xRank) (err error) {
		n := uint64(2 * chunk * N)
		if send[rk.r], err = alloc("all-to-all send", n); err != nil {
			return err
		}
		if recv[rk.r], err = alloc("all-to-all receive", n); err != nil {
			return err
		}
		return check("cuMemsetD8Async", C.call_cuMemsetD8Async(send[rk.r], 1, C.size_t(n), rk.stream))
	}); err != nil {
		return 0, err
	}
	best := time.Duration(0)
	for i := range reps + 2 {
		if err := ctx.Err(); err != nil {
			return 0, err
		}
		if err := b.mark(0); err != nil {
			return 0, err
		}
		l := newLimit(ctx, b.timeout())
		if err := b.group(l, "ncclSend/Recv(all-to-all)", func(rk *xRank, c *Comm) error {
			st := streamOf(rk.stream)
			for p := range N {
				off := ptr(2 * chunk * p)
				if err := c.Send(DevicePtr(send[rk.r]+off), chunk, NCCLBfloat16, p, st); err != nil {
					return err
				}
				if err := c.Recv(DevicePtr(recv[rk.r]+off), chunk, NCCLBfloat16, p, st); err != nil {
					return err
				}
			}
			return nil
		}); err != nil {
			return 0, err
		}
		if err := b.mark(1); err != nil {
			return 0, err
		}
		if err := b.wait(l, "all-to-all"); err != nil {
			return 0, err
		}
		if i < 2 {
			continue
		}
		d, err := b.span()
		if err != nil {
			return 0, err
		}
		if best == 0 || (d > 0 && d < best) {
			best = d
		}
	}
	return ep.AllToAllBusGBps(int64(2*chunk*N), N, best), nil
}

// span is the slowest rank's time from its event 0 to its event 1. Events
// of different devices cannot be compared with each other; every rank's
// own span starts before the group call that starts them all and ends
// once its last receive is in, so the slowest rank's is the all-to-all's.
func (b *ExchangeBench) span() (time.Duration, error) {
	spans := make([]time.Duration, len(b.ranks))
	err := b.eachRank("all-to-all time", func(rk *xRank) error {
		t, err := rk.elapsed(1)
		if err == nil {
			spans[rk.r] = t[0]
		}
		return err
	})
	return slices.Max(spans), err
}

// MeasureAllToAll opens the GPUs of devices, measures their all-to-all
// ceiling (AllToAll, AllToAllCeilingBytes per rank, best of reps) and
// closes them: for a GPU expert-parallel run, once before it starts. It
// refuses unless the user opted into the GPU path (GPUEPAllowed).
func MeasureAllToAll(ctx context.Context, devices []int, libDir string, reps int) (float64, error) {
	b, err := OpenExchangeBench(devices, libDir)
	if err != nil {
		return 0, err
	}
	gbps, err := b.AllToAll(ctx, AllToAllCeilingBytes, reps)
	return gbps, errors.Join(err, b.Close())
}
