package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"
	"unsafe"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
)

// Expert parallelism over GPUs through NCCL: rank r drives one device, and
// every step runs router → dispatch → local experts → combine as ep's CPU
// ranks do, so that the CPU ranks are the oracle of this code. One process
// drives all ranks (ncclCommInitAll), or each process drives its share of
// the world, one rank per GPU, over a communicator its Join makes
// (ncclCommInitRank with the unique id rank 0 handed out): the step is the
// same code either way, over the ranks this process holds.
//
// NOT YET RUN ON A GPU: written on a machine without GPUs or a loadable
// NCCL. Every entry point refuses unless UnverifiedGPUEPEnv is 1.

// UnverifiedGPUEPEnv is the variable that lets the unchecked GPU path run.
const UnverifiedGPUEPEnv = "MOETOP_UNVERIFIED_GPU_EP"

// ErrGPUEPUnverified is a GPU expert-parallel run asked for while the path
// has not been checked on GPUs and the user has not opted in.
var ErrGPUEPUnverified = errors.New("expert parallelism over GPUs is not yet checked on GPUs; set " + UnverifiedGPUEPEnv + "=1 to try it")

// ErrEPTimeout is a step whose transfers did not finish within the
// backend's Timeout: a rank hung, and every communicator was aborted.
var ErrEPTimeout = errors.New("expert-parallel step timed out")

// GPUEPAllowed says whether the user opted into the unchecked GPU path.
func GPUEPAllowed() error {
	if os.Getenv(UnverifiedGPUEPEnv) == "1" {
		return nil
	}
	return ErrGPUEPUnverified
}

// The events each rank records per step, in stream order. Permute and
// combine are each two stretches: the sender's side and the receiver's.
const (
	evStart      = iota
	evRouted     // router done
	evPacked     // sender: plan made, rows gathered per destination
	evDispatched // counts, slots and rows received
	evGrouped    // receiver: rows grouped by local expert
	evGEMM1      //
	evAct        //
	evGEMM2      //
	evSummed     // receiver: weighted sum of each token's local experts
	evWaited     // the one-element all-reduce: waiting for the slowest
	evCombined   // sums back at their source, summed over ranks
	numEPEvents
)

// EPBackend runs the layer expert-parallel over GPUs through NCCL, one rank
// per device: every rank of the run in this process (Devices alone), or
// this process's share of a world spread over processes (Rank, World and
// Join; NewEPRank makes one rank). Each rank holds Tokens of the shape it
// is prepared with: rank r's tokens are rows [r·Tokens, (r+1)·Tokens) of
// one batch, as in ep.Config. Its experts' GEMMs run as the loop backend's
// (cublasGemmEx per expert), the simplest correct choice.
type EPBackend struct {
	// Devices are the CUDA ordinals of this process's ranks, rank Rank+i
	// on Devices[i]; at least 1.
	Devices []int
	// Rank and World place this process's ranks in a run spread over
	// processes: they are ranks Rank … Rank+len(Devices)−1 of World.
	// World 0: every rank is in this process (World = len(Devices)).
	Rank, World int
	// Join makes rank r's communicator with r's device current on the
	// calling thread: ncclCommInitRank with the unique id of the run. Nil:
	// ncclCommInitAll over Devices, which needs every rank in this process.
	Join func(rank int) (*Comm, error)
	// JoinTimeout bounds Join, which returns once every rank of the world
	// has joined (0: Timeout, at least a minute).
	JoinTimeout time.Duration
	// Placement says which rank holds each expert (nil: contiguous blocks).
	Placement *ep.Placement
	// Timeout bounds each wait on NCCL transfers (0: 30s); past it, or on
	// an NCCL error, every communicator is aborted and the step fails.
	Timeout time.Duration
	// Options are those of each rank's loop backend (Device is set per
	// rank from Devices).
	Options Options

	s     kernels.Shape
	p     *ep.Placement
	world int
	// The ranks of this process and their communicators (comms[i] is
	// ranks[i]'s), and whether they died or were given up on.
	ncclRanks[*epRank]
	// stepping is held through a Step: Abort from another goroutine
	// leaves the communicators to the step's own waits while one runs,
	// since NCCL forbids calls on a communicator while it is aborted.
	stepping sync.Mutex
}

// epRank is one rank: a loop backend on its device (x, weights of every
// expert, router, stream, cuBLAS handle, layer kernels) and the buffers of
// the exchange.
type epRank struct {
	r      int // in the world
	i      int // in this process: ranks[i], comms[i] of ncclRanks
	b      *Backend
	local  []int
	holds  []bool // by expert: local or not
	events [numEPEvents]C.CUevent
	bufs   epBuffers

	// This step's plan, on the host.
	plan       *ep.SourcePlan
	sentAt     []int // first send row of each destination
	recvTok    []int // tokens received from each source
	recvAt     []int // first received row of each source
	pairs      int
	expertRows []int // rows per expert (global index), 0 where not local
}

// epBuffers are a rank's device buffers beyond its loop backend's. They
// are sized for the worst step: every rank sends every token to this one.
type epBuffers struct {
	sendCounts, recvCounts ptr // ranks × (1 + experts) int32: tokens, then pairs per expert
	sendIDs, sendW         ptr // ranks·tokens × top-k: expert (or −1), weight
	sendRowOf              ptr // tokens × ranks int32: send row of (token, destination), or −1
	sendX                  ptr // ranks·tokens × hidden
	recvIDs, recvW         ptr // ranks·tokens × top-k
	recvX                  ptr // ranks·tokens × hidden
	recvRowOf              ptr // ranks·tokens × top-k int32: pair row, or −1
	px, h, y               ptr // pairs × hidden, pairs × W1Cols, pairs × hidden
	sums                   ptr // ranks·tokens × hidden: weighted sums, sent back
	back                   ptr // ranks·tokens × hidden: sums received back
	ones                   ptr // tokens × ranks float32 1.0: the final sum's weights
	red                    ptr // 1 float32: the wait all-reduce
}

// exchangeNames name the buffers of epBuffers.all, in its order.
var exchangeNames = [...]string{"ep send counts", "ep recv counts", "ep send slots", "ep send weights", "ep send rows",
	"ep send x", "ep recv slots", "ep recv weights", "ep recv x", "ep recv rows", "ep permuted x", "ep h", "ep y",
	"ep sums", "ep sums back", "ep ones", "ep wait all-reduce"}

// exchangeSizes are the bytes of a rank's exchange buffers, in the order
// of epBuffers.all, for a rank holding local experts: sized for the worst
// step, every rank sending every token here, so that no step allocates.
func exchangeSizes(s kernels.Shape, ranks, local int) []uint64 {
	dt := uint64(s.DType.Size())
	T, K, E, H, N := uint64(s.Tokens), uint64(s.TopK), uint64(s.Experts), uint64(s.Hidden), uint64(ranks)
	// A received token has at most min(top-k, local experts) local slots.
	pairs := N * T * uint64(min(s.TopK, max(1, local)))
	return []uint64{
		4 * N * (1 + E), 4 * N * (1 + E), // counts
		4 * N * T * K, 4 * N * T * K, 4 * T * N, N * T * H * dt, // send
		4 * N * T * K, 4 * N * T * K, N * T * H * dt, 4 * N * T * K, // recv
		pairs * H * dt, pairs * uint64(s.W1Cols()) * dt, pairs * H * dt, // experts
		N * T * H * dt, N * T * H * dt, 4 * T * N, 4, // combine, wait
	}
}

func (eb *epBuffers) all() []*ptr {
	return []*ptr{&eb.sendCounts, &eb.recvCounts, &eb.sendIDs, &eb.sendW, &eb.sendRowOf, &eb.sendX, &eb.recvIDs,
		&eb.recvW, &eb.recvX, &eb.recvRowOf, &eb.px, &eb.h, &eb.y, &eb.sums, &eb.back, &eb.ones, &eb.red}
}

// The step loop checks it against the CPU reference like any GPU backend.
var _ kernels.Checkable = (*EPBackend)(nil)

// Info names the backend after the GEMMs its ranks run.
func (e *EPBackend) Info() kernels.Info {
	gpu := "GPU"
	if len(e.ranks) > 0 {
		d := e.ranks[0].b.dev
		gpu = fmt.Sprintf("%s (sm_%d%d)", d.Name, d.Major, d.Minor)
	}
	where := fmt.Sprintf("%d × %s %v", len(e.Devices), gpu, e.Devices)
	if e.World > 0 {
		where = fmt.Sprintf("rank %s of %d on %s, device %s", e.rankSpan(), e.World, gpu,
			strings.Trim(fmt.Sprint(e.Devices), "[]"))
	}
	return kernels.Info{Name: "loop", Device: where + ", expert-parallel over NCCL (unverified)"}
}

// rankSpan names this process's ranks: "1", or "2…3".
func (e *EPBackend) rankSpan() string {
	if len(e.Devices) == 1 {
		return fmt.Sprint(e.Rank)
	}
	return fmt.Sprintf("%d…%d", e.Rank, e.Rank+len(e.Devices)-1)
}

// Ranks is how many ranks (GPUs) the run has, over every process.
func (e *EPBackend) Ranks() int {
	if e.World > 0 {
		return e.World
	}
	return len(e.Devices)
}

// EPPlacement is the placement in use after Prepare (nil before).
func (e *EPBackend) EPPlacement() *ep.Placement { return e.p }

// epRankPlan is one rank of this process as the host lays it out before
// anything is opened: a rank of a process holding a share of the world is
// laid out exactly as the same rank of one process holding them all.
type epRankPlan struct {
	rank, device int
	local        []int  // the experts it holds
	holds        []bool // by expert: local or not
	// firstRow is its tokens' first row of the batch (kernels.InputRows).
	firstRow int
	// layer is the bytes of its loop backend's plan (every expert's
	// weights included); exchange, of each exchange buffer, in the order
	// of epBuffers.all.
	layer    uint64
	exchange []uint64
}

// plan checks a run before anything is loaded and lays out this process's
// ranks: the placement over the whole world, and each rank's part.
func (e *EPBackend) plan(s kernels.Shape) (*ep.Placement, int, []epRankPlan, error) {
	n, world := len(e.Devices), e.World
	if world == 0 {
		world = n
	}
	switch {
	case n < 1:
		return nil, 0, nil, errors.New("ep over GPUs: no devices")
	case s.SharedWidth() > 0:
		return nil, 0, nil, fmt.Errorf("%w: shared experts with expert parallelism over GPUs are not built yet", kernels.ErrUnsupported)
	case e.World < 0 || e.Rank < 0 || e.Rank+n > world:
		return nil, 0, nil, fmt.Errorf("ep over GPUs: ranks %d … %d of a world of %d", e.Rank, e.Rank+n-1, world)
	case n < world && e.Join == nil:
		return nil, 0, nil, fmt.Errorf("ep over GPUs: %d of %d ranks in this process need Join to make their communicators (ncclCommInitAll needs every rank here)", n, world)
	case s.Tokens < 1 || s.TopK < 1 || s.Experts < world:
		return nil, 0, nil, fmt.Errorf("ep over GPUs: %d tokens per rank, top-k %d, %d experts over %d ranks", s.Tokens, s.TopK, s.Experts, world)
	}
	seen := map[int]bool{}
	for _, d := range e.Devices {
		if seen[d] {
			return nil, 0, nil, fmt.Errorf("ep over GPUs: device %d named twice in %v (one rank per GPU)", d, e.Devices)
		}
		seen[d] = true
	}
	p := e.Placement
	if p == nil {
		var err error
		if p, err = ep.Contiguous(s.Experts, world); err != nil {
			return nil, 0, nil, err
		}
	}
	if p.Experts() != s.Experts || p.Ranks() != world {
		return nil, 0, nil, fmt.Errorf("%w: placement of %d experts over %d ranks, the run has %d over %d", ep.ErrBadPlacement,
			p.Experts(), p.Ranks(), s.Experts, world)
	}
	bufs, err := gpuBackends["loop"].reg.Plan(s, nil)
	if err != nil {
		return nil, 0, nil, err
	}
	var ranks []epRankPlan
	for i, d := range e.Devices {
		r := e.Rank + i
		rp := epRankPlan{rank: r, device: d, local: p.Local(r), holds: make([]bool, s.Experts), firstRow: r * s.Tokens,
			layer: kernels.Total(bufs)}
		for _, ex := range rp.local {
			rp.holds[ex] = true
		}
		rp.exchange = exchangeSizes(s, world, len(rp.local))
		ranks = append(ranks, rp)
	}
	return p, world, ranks, nil
}

// Prepare opens one loop backend per device of this process, gives each
// rank its slice of the batch, allocates the exchange buffers and makes
// the communicators.
func (e *EPBackend) Prepare(ctx context.Context, s kernels.Shape) (err error) {
	if err := GPUEPAllowed(); err != nil {
		return err
	}
	p, world, plans, err := e.plan(s)
	if err != nil {
		return err
	}
	// Held while preparing: an Abort meanwhile leaves the communicators
	// being made to joinComms, which gives up on them.
	e.stepping.Lock()
	defer e.stepping.Unlock()
	if e.isAbandoned() {
		return errors.New("ep over GPUs: an earlier NCCL call never returned; start the process again")
	}
	e.close()
	defer func() {
		if err != nil {
			e.close()
		}
	}()
	// NCCL_NVLS_ENABLE=0 before NCCL is opened: LoadNCCL sets it first.
	if _, err := LoadNCCL(e.Options.LibDir); err != nil {
		return err
	}
	e.s, e.p, e.world, e.name = s, p, world, "ep over GPUs"
	e.revive()
	for i, pl := range plans {
		o := e.Options
		o.Device = pl.device
		o.TimeExperts = false // no per-expert events: the rank times its own phases
		b, err := New("loop", o)
		if err != nil {
			return fmt.Errorf("rank %d (device %d): %w", pl.rank, pl.device, err)
		}
		rk := &epRank{r: pl.rank, i: i, b: b, local: pl.local, holds: pl.holds}
		e.ranks = append(e.ranks, rk)
		if err := e.fits(rk, pl); err != nil {
			return fmt.Errorf("rank %d (device %d): %w", pl.rank, pl.device, err)
		}
		if err := b.Prepare(ctx, s); err != nil {
			return fmt.Errorf("rank %d (device %d): %w", pl.rank, pl.device, err)
		}
		if err := e.setupRank(rk, pl); err != nil {
			return fmt.Errorf("rank %d (device %d): %w", pl.rank, pl.device, err)
		}
	}
	var comms []*Comm
	if e.Join != nil {
		comms, err = e.joinComms(ctx)
	} else {
		// ncclCommInitAll switches this thread's current device; every
		// later call enters its rank's device again.
		comms, err = CommInitAll(e.Devices)
	}
	if err != nil {
		return err
	}
	e.setComms(comms)
	return ctx.Err()
}

// fits refuses, before anything is allocated, a rank whose GPU has less
// free memory than its layer (the loop backend's plan, every expert's
// weights included) and its exchange buffers need.
func (e *EPBackend) fits(rk *epRank, pl epRankPlan) error {
	layer, exchange := pl.layer, uint64(0)
	for _, b := range pl.exchange {
		exchange += b
	}
	free, _, err := rk.b.dev.MemInfo()
	if err != nil {
		return err
	}
	if need := layer + exchange; need > free {
		return fmt.Errorf("%w: the rank needs %.2f GiB (layer %.2f GiB, exchange %.2f GiB), the GPU has %.2f GiB free",
			kernels.ErrOutOfMemory, gib(need), gib(layer), gib(exchange), gib(free))
	}
	return nil
}

func gib(b uint64) float64 { return float64(b) / (1 << 30) }

// setupRank uploads the rank's slice of the batch over the x its backend
// filled (that is rows 0…tokens−1, rank 0's), and allocates the exchange.
func (e *EPBackend) setupRank(rk *epRank, pl epRankPlan) error {
	s, n := e.s, e.world
	leave, err := rk.b.ctx.Enter()
	if err != nil {
		return err
	}
	defer leave()
	for i := range rk.events {
		if err := check("cuEventCreate", C.call_cuEventCreate(&rk.events[i], 0)); err != nil {
			return err
		}
	}
	if pl.firstRow > 0 {
		x := hostRows(s.DType, kernels.InputRows(s, pl.firstRow, s.Tokens))
		if err := check("cuMemcpyHtoDAsync_v2(x of rank)", C.call_cuMemcpyHtoDAsync_v2(rk.b.bufs[kernels.BufX], unsafe.Pointer(&x[0]), C.size_t(len(x)), rk.b.stream)); err != nil {
			return err
		}
	}
	eb := &rk.bufs
	for i, p := range eb.all() {
		if *p, err = alloc(exchangeNames[i], pl.exchange[i]); err != nil {
			return err
		}
	}
	// The wait all-reduce sums this one float every step: start it at 0
	// rather than from whatever the allocation held.
	if err := check("cuMemsetD32Async(wait buffer)", C.call_cuMemsetD32Async(eb.red, 0, 1, rk.b.stream)); err != nil {
		return err
	}
	T, N := s.Tokens, n
	ones := make([]float32, T*N)
	for i := range ones {
		ones[i] = 1
	}
	return check("cuMemcpyHtoDAsync_v2(ones)", C.call_cuMemcpyHtoDAsync_v2(eb.ones, unsafe.Pointer(&ones[0]), C.size_t(4*len(ones)), rk.b.stream))
}

// hostRows converts float32 rows to the dtype's bytes, as the device holds them.
func hostRows(d kernels.DType, x []float32) []byte {
	switch d {
	case kernels.BF16, kernels.FP16:
		out := make([]byte, 2*len(x))
		for i, v := range x {
			h := kernels.FloatToHalf(v)
			if d == kernels.BF16 {
				h = kernels.FloatToBF16(v)
			}
			out[2*i], out[2*i+1] = byte(h), byte(h>>8)
		}
		return out
	}
	out := make([]byte, 4*len(x))
	copy(out, unsafe.Slice((*byte)(unsafe.Pointer(&x[0])), 4*len(x)))
	return out
}

// The rank as one of ncclRanks.
func (rk *epRank) id() int                { return rk.r }
func (rk *epRank) enter() (func(), error) { return rk.b.ctx.Enter() }
func (rk *epRank) work() cuStream         { return rk.b.stream }

// nccl is the rank's stream as NCCL's calls take it.
func (rk *epRank) nccl() Stream { return streamOf(rk.b.stream) }

// mark records event i on the rank's stream.
func (rk *epRank) mark(i int) error {
	return check(fmt.Sprintf("cuEventRecord(ep event %d)", i), C.call_cuEventRecord(rk.events[i], rk.b.stream))
}

// Abort ends the communicators from any goroutine, as a failed step does:
// a step waiting on NCCL (on its streams, or in a group's ncclGroupEnd)
// returns an error wrapping cause within a millisecond or so, and so does
// every later step; a Prepare waiting for the
// other ranks to join gives up. ep.SessionBackend calls it when a peer
// process is gone. While a step runs, its own waits abort the
// communicators (no NCCL call may overlap the abort); otherwise Abort does.
func (e *EPBackend) Abort(cause error) {
	e.kill(cause)
	if e.stepping.TryLock() {
		defer e.stepping.Unlock()
		if !e.isAbandoned() {
			e.abort(cause)
		}
	}
}

func (e *EPBackend) timeout() time.Duration {
	if e.Timeout <= 0 {
		return 30 * time.Second
	}
	return e.Timeout
}

// Step runs one step on every rank of this process: the whole step when
// every rank is here, this process's ranks' share otherwise.
func (e *EPBackend) Step(ctx context.Context, in kernels.StepInput) (kernels.StepResult, error) {
	reps, err := e.step(ctx, in)
	if err != nil {
		return kernels.StepResult{}, err
	}
	return ep.ResultOf(e.s, reps), ctx.Err()
}

// StepRank runs one step of this process's one rank of a run spread over
// processes and reports it: ep.SessionBackend gathers the reports of every
// rank into the whole step.
func (e *EPBackend) StepRank(ctx context.Context, in kernels.StepInput) (ep.Report, error) {
	if len(e.Devices) != 1 {
		return ep.Report{}, fmt.Errorf("ep over GPUs: this process holds %d ranks; a process of one rank reports its step", len(e.Devices))
	}
	reps, err := e.step(ctx, in)
	if err != nil {
		return ep.Report{}, err
	}
	return reps[0], ctx.Err()
}

// step runs one step on every rank of this process and reports each, in
// the order of Devices.
func (e *EPBackend) step(ctx context.Context, in kernels.StepInput) ([]ep.Report, error) {
	e.stepping.Lock()
	defer e.stepping.Unlock()
	var res []ep.Report
	if len(e.ranks) == 0 || e.comms == nil {
		return res, kernels.ErrNotPrepared
	}
	if err := e.failed(); err != nil {
		return res, err
	}
	if in.Fixed != nil {
		return res, errors.New("ep over GPUs: a fixed routing is not supported across ranks")
	}
	s, E, K := e.s, e.s.Experts, e.s.TopK
	rowBytes := s.Hidden * s.DType.Size()
	// Every wait of the step ends with ctx, at one deadline, or on Abort.
	l := newLimit(ctx, e.timeout())
	// 1. Every rank routes its tokens and packs one row per destination.
	if err := e.eachRank("route", func(rk *epRank) error { return e.send(rk, in) }); err != nil {
		return res, err
	}
	// 2. Counts: tokens and pairs per expert, from every rank to every rank.
	stride := 4 * (1 + E)
	if err := e.group(l, "ncclSend/Recv(counts)", func(rk *epRank, c *Comm) error {
		for d := range e.world {
			if err := c.Send(DevicePtr(rk.bufs.sendCounts+ptr(d*stride)), 1+E, NCCLInt32, d, rk.nccl()); err != nil {
				return err
			}
			if err := c.Recv(DevicePtr(rk.bufs.recvCounts+ptr(d*stride)), 1+E, NCCLInt32, d, rk.nccl()); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		return res, err
	}
	if err := e.eachRank("counts", func(rk *epRank) error { return e.readCounts(rk, l) }); err != nil {
		return res, err
	}
	// 3. Dispatch: each destination's slots, weights and token rows. A
	// pair with nothing to carry is skipped on both ends, which both know
	// from the counts.
	if err := e.group(l, "ncclSend/Recv(dispatch)", func(rk *epRank, c *Comm) error {
		st := rk.nccl()
		for d := range e.world {
			if n := len(rk.plan.Tokens[d]); n > 0 {
				at := rk.sentAt[d]
				// Sent as bytes: nothing is reduced, and one type keeps
				// both ends' counts in the same unit.
				for _, x := range []struct {
					buf   ptr
					bytes int
				}{{rk.bufs.sendIDs + ptr(4*at*K), 4 * n * K}, {rk.bufs.sendW + ptr(4*at*K), 4 * n * K}, {rk.bufs.sendX + ptr(at*rowBytes), n * rowBytes}} {
					if err := c.Send(DevicePtr(x.buf), x.bytes, NCCLUint8, d, st); err != nil {
						return err
					}
				}
			}
			if n := rk.recvTok[d]; n > 0 {
				at := rk.recvAt[d]
				for _, x := range []struct {
					buf   ptr
					bytes int
				}{{rk.bufs.recvIDs + ptr(4*at*K), 4 * n * K}, {rk.bufs.recvW + ptr(4*at*K), 4 * n * K}, {rk.bufs.recvX + ptr(at*rowBytes), n * rowBytes}} {
					if err := c.Recv(DevicePtr(x.buf), x.bytes, NCCLUint8, d, st); err != nil {
						return err
					}
				}
			}
		}
		return nil
	}); err != nil {
		return res, err
	}
	// 4. Every rank runs its experts over what it received and sums each
	// token's local experts.
	if err := e.eachRank("experts", func(rk *epRank) error { return e.experts(rk, l) }); err != nil {
		return res, err
	}
	// 5. Wait: a one-element all-reduce, timed apart from the transfer back,
	// is where a rank idles for the slowest.
	if err := e.group(l, "ncclAllReduce(wait)", func(rk *epRank, c *Comm) error {
		return c.AllReduce(DevicePtr(rk.bufs.red), DevicePtr(rk.bufs.red), 1, NCCLFloat32, NCCLSum, rk.nccl())
	}); err != nil {
		return res, err
	}
	if err := e.eachRank("wait", func(rk *epRank) error { return rk.mark(evWaited) }); err != nil {
		return res, err
	}
	// 6. Combine: the sums go back to their tokens' ranks, in the order
	// they came.
	if err := e.group(l, "ncclSend/Recv(combine)", func(rk *epRank, c *Comm) error {
		st := rk.nccl()
		for d := range e.world {
			if n := rk.recvTok[d]; n > 0 {
				if err := c.Send(DevicePtr(rk.bufs.sums+ptr(rk.recvAt[d]*rowBytes)), n*rowBytes, NCCLUint8, d, st); err != nil {
					return err
				}
			}
			if n := len(rk.plan.Tokens[d]); n > 0 {
				if err := c.Recv(DevicePtr(rk.bufs.back+ptr(rk.sentAt[d]*rowBytes)), n*rowBytes, NCCLUint8, d, st); err != nil {
					return err
				}
			}
		}
		return nil
	}); err != nil {
		return res, err
	}
	reps := make([]ep.Report, len(e.ranks))
	if err := e.eachRank("combine", func(rk *epRank) (err error) {
		reps[rk.i], err = e.finish(rk, l)
		return err
	}); err != nil {
		return res, err
	}
	return reps, nil
}

// send routes the rank's tokens, plans where each goes and packs the send
// buffers: one row per (token, destination rank), as ep.PlanSource says.
func (e *EPBackend) send(rk *epRank, in kernels.StepInput) error {
	s, b := e.s, rk.b
	T, K, E, N := s.Tokens, s.TopK, s.Experts, e.world
	if err := rk.mark(evStart); err != nil {
		return err
	}
	if err := b.route(in); err != nil {
		return err
	}
	if err := rk.mark(evRouted); err != nil {
		return err
	}
	ids, w := make([]int32, T*K), make([]float32, T*K)
	if err := check("cuStreamSynchronize(route)", C.call_cuStreamSynchronize(b.stream)); err != nil {
		return err
	}
	if err := check("cuMemcpyDtoH_v2(ids)", C.call_cuMemcpyDtoH_v2(unsafe.Pointer(&ids[0]), b.bufs[kernels.BufTopKIDs], C.size_t(4*T*K))); err != nil {
		return err
	}
	if err := check("cuMemcpyDtoH_v2(weights)", C.call_cuMemcpyDtoH_v2(unsafe.Pointer(&w[0]), b.bufs[kernels.BufTopKWeights], C.size_t(4*T*K))); err != nil {
		return err
	}
	plan, err := ep.PlanSource(e.p, rk.r, ids, K)
	if err != nil {
		return err
	}
	pk := packSends(plan, w, T, E)
	rk.plan, rk.sentAt = plan, pk.at
	rowOf, counts, slots, weights := pk.rowOf, pk.counts, pk.slots, pk.weights
	for _, u := range []struct {
		what string
		dst  ptr
		src  unsafe.Pointer
		n    int
	}{
		{"cuMemcpyHtoDAsync_v2(send rows)", rk.bufs.sendRowOf, unsafe.Pointer(&rowOf[0]), 4 * len(rowOf)},
		{"cuMemcpyHtoDAsync_v2(send counts)", rk.bufs.sendCounts, unsafe.Pointer(&counts[0]), 4 * len(counts)},
		{"cuMemcpyHtoDAsync_v2(send slots)", rk.bufs.sendIDs, unsafe.Pointer(&slots[0]), 4 * len(slots)},
		{"cuMemcpyHtoDAsync_v2(send weights)", rk.bufs.sendW, unsafe.Pointer(&weights[0]), 4 * len(weights)},
	} {
		if err := check(u.what, C.call_cuMemcpyHtoDAsync_v2(u.dst, u.src, C.size_t(u.n), rk.b.stream)); err != nil {
			return err
		}
	}
	_, _, sfx := dtypes(s.DType)
	// gather with k = ranks: block t·N+d copies token t to its row for d.
	if err := b.mod.launch("gather_"+sfx, uint32(T*N), 128, b.stream, argPtr(b.bufs[kernels.BufX]), argPtr(rk.bufs.sendRowOf),
		argInt(N), argInt(s.Hidden), argPtr(rk.bufs.sendX)); err != nil {
		return err
	}
	return rk.mark(evPacked)
}

// readCounts waits for the counts and reads how many tokens each source
// sends this rank.
func (e *EPBackend) readCounts(rk *epRank, l limit) error {
	E, N := e.s.Experts, e.world
	if err := e.wait(l, "counts", rk.i); err != nil {
		return err
	}
	counts := make([]int32, N*(1+E))
	if err := check("cuMemcpyDtoH_v2(recv counts)", C.call_cuMemcpyDtoH_v2(unsafe.Pointer(&counts[0]), rk.bufs.recvCounts, C.size_t(4*len(counts)))); err != nil {
		return err
	}
	var err error
	rk.recvTok, rk.recvAt, rk.expertRows, err = readRecvCounts(counts, N, E, e.s.Tokens, rk.r, rk.holds)
	return err
}

// experts groups the received rows by local expert, runs the experts'
// GEMMs and sums each received token's local experts by their weights.
func (e *EPBackend) experts(rk *epRank, l limit) error {
	s, b := e.s, rk.b
	K := s.TopK
	if err := rk.mark(evDispatched); err != nil {
		return err
	}
	R := 0
	for _, n := range rk.recvTok {
		R += n
	}
	if err := e.wait(l, "dispatch", rk.i); err != nil {
		return err
	}
	ids := make([]int32, R*K)
	if R > 0 {
		if err := check("cuMemcpyDtoH_v2(recv slots)", C.call_cuMemcpyDtoH_v2(unsafe.Pointer(&ids[0]), rk.bufs.recvIDs, C.size_t(4*len(ids)))); err != nil {
			return err
		}
	}
	rowOf, off, pairs, err := groupReceived(ids, rk.r, rk.local, rk.holds, rk.expertRows)
	if err != nil {
		return err
	}
	rk.pairs = pairs
	if R > 0 {
		if err := check("cuMemcpyHtoDAsync_v2(recv rows)", C.call_cuMemcpyHtoDAsync_v2(rk.bufs.recvRowOf, unsafe.Pointer(&rowOf[0]), C.size_t(4*R*K), rk.b.stream)); err != nil {
			return err
		}
	}
	_, _, sfx := dtypes(s.DType)
	if rk.pairs > 0 {
		if err := b.mod.launch("gather_"+sfx, uint32(R*K), 128, b.stream, argPtr(rk.bufs.recvX), argPtr(rk.bufs.recvRowOf),
			argInt(K), argInt(s.Hidden), argPtr(rk.bufs.px)); err != nil {
			return err
		}
	}
	if err := rk.mark(evGrouped); err != nil {
		return err
	}
	dt := s.DType.Size()
	gemm := func(second bool) error {
		n, k, ldx := gemmShape(s, second)
		for _, ex := range rk.local {
			rows := rk.expertRows[ex]
			if rows == 0 {
				continue
			}
			o := off[ex]
			x, w, y := rk.bufs.px+ptr(o*ldx*dt), b.bufs[kernels.BufW1]+ptr(ex*k*n*dt), rk.bufs.h+ptr(o*n*dt)
			if second {
				x, w, y = rk.bufs.h+ptr(o*ldx*dt), b.bufs[kernels.BufW2]+ptr(ex*k*n*dt), rk.bufs.y+ptr(o*n*dt)
			}
			if err := b.gemmEx(b.handle, rows, n, k, ldx, x, w, y); err != nil {
				return fmt.Errorf("expert %d: %w", ex, err)
			}
		}
		return nil
	}
	if err := gemm(false); err != nil {
		return err
	}
	if err := rk.mark(evGEMM1); err != nil {
		return err
	}
	if rk.pairs > 0 {
		if err := b.activate(rk.bufs.h, rk.pairs, s.FFN, b.stream); err != nil {
			return err
		}
	}
	if err := rk.mark(evAct); err != nil {
		return err
	}
	if err := gemm(true); err != nil {
		return err
	}
	if err := rk.mark(evGEMM2); err != nil {
		return err
	}
	if R > 0 {
		// One block per received token: Σ over its local slots of weight ·
		// y; slots of other ranks' experts are −1 and skipped.
		if err := b.mod.launch("combine_"+sfx, uint32(R), uint32(min(256, roundUp(s.Hidden, 32))), b.stream,
			argPtr(rk.bufs.y), argPtr(rk.bufs.recvRowOf), argPtr(rk.bufs.recvW), argInt(K), argInt(s.Hidden),
			argPtr(0), argPtr(rk.bufs.sums)); err != nil {
			return err
		}
	}
	return rk.mark(evSummed)
}

// finish sums what came back for each of the rank's tokens (one row per
// rank it went to, weight 1) into the output, waits, and reports the
// rank's phases.
func (e *EPBackend) finish(rk *epRank, l limit) (ep.Report, error) {
	s, b, N := e.s, rk.b, e.world
	var rep ep.Report
	_, _, sfx := dtypes(s.DType)
	if err := b.mod.launch("combine_"+sfx, uint32(s.Tokens), uint32(min(256, roundUp(s.Hidden, 32))), b.stream,
		argPtr(rk.bufs.back), argPtr(rk.bufs.sendRowOf), argPtr(rk.bufs.ones), argInt(N), argInt(s.Hidden),
		argPtr(0), argPtr(b.bufs[kernels.BufOut])); err != nil {
		return rep, err
	}
	if err := rk.mark(evCombined); err != nil {
		return rep, err
	}
	if err := e.wait(l, "combine", rk.i); err != nil {
		return rep, err
	}
	var ms [numEPEvents - 1]time.Duration
	for i := range ms {
		var f C.float
		if err := check("cuEventElapsedTime", C.call_cuEventElapsedTime(&f, rk.events[i], rk.events[i+1])); err != nil {
			return rep, err
		}
		ms[i] = time.Duration(float64(f) * 1e6)
	}
	ph := ep.PhaseTimes{
		Router:   ms[evStart],
		Permute:  ms[evRouted] + ms[evDispatched],
		Dispatch: ms[evPacked],
		GEMM1:    ms[evGrouped],
		Act:      ms[evGEMM1],
		GEMM2:    ms[evAct],
		Wait:     ms[evSummed],
		Combine:  ms[evGEMM2] + ms[evWaited],
	}
	d := ph.Durations()
	rep.Rank = rk.r
	for _, t := range d {
		rep.PhasesNS = append(rep.PhasesNS, int64(t))
	}
	sentTok, sentPairs := 0, 0
	for dst := range N {
		if dst != rk.r {
			sentTok += len(rk.plan.Tokens[dst])
			sentPairs += rk.plan.Pairs[dst]
		}
	}
	row := int64(s.Hidden) * int64(s.DType.Size())
	rep.SentBytes, rep.SavedBytes = int64(sentTok)*row, int64(sentPairs-sentTok)*row
	for _, n := range rk.recvTok {
		rep.RecvTokens += n
	}
	rep.RecvRows = rk.pairs
	rep.ExpertRows = append([]int(nil), rk.expertRows...)
	return rep, nil
}

// Poison fills the output of every rank of this process with NaN.
func (e *EPBackend) Poison() error {
	for _, rk := range e.ranks {
		if err := rk.b.Poison(); err != nil {
			return fmt.Errorf("rank %d: %w", rk.r, err)
		}
	}
	return nil
}

// Output is the output of this process's ranks' tokens, in rank order:
// the whole batch's when every rank is here.
func (e *EPBackend) Output() ([]float32, error) {
	var out []float32
	for _, rk := range e.ranks {
		o, err := rk.b.Output()
		if err != nil {
			return nil, fmt.Errorf("rank %d: %w", rk.r, err)
		}
		out = append(out, o...)
	}
	return out, nil
}

// Routing is the router's choice for this process's ranks' tokens, in
// rank order.
func (e *EPBackend) Routing() (kernels.Assignment, error) {
	var a kernels.Assignment
	for _, rk := range e.ranks {
		r, err := rk.b.Routing()
		if err != nil {
			return a, fmt.Errorf("rank %d: %w", rk.r, err)
		}
		a.IDs, a.Weights = append(a.IDs, r.IDs...), append(a.Weights, r.Weights...)
	}
	return a, nil
}

// Logits is the router's logits of this process's ranks' tokens, in rank
// order.
func (e *EPBackend) Logits() ([]float32, error) {
	var out []float32
	for _, rk := range e.ranks {
		l, err := rk.b.Logits()
		if err != nil {
			return nil, fmt.Errorf("rank %d: %w", rk.r, err)
		}
		out = append(out, l...)
	}
	return out, nil
}

// Close ends the communicators (aborting them when a step failed or Abort
// was called: a peer may be gone) and releases every rank; a second Close
// does nothing. After an NCCL call that never returned, it leaves the
// communicators and devices as they are, to the process's exit.
func (e *EPBackend) Close() error {
	e.stepping.Lock()
	defer e.stepping.Unlock()
	return e.close()
}

func (e *EPBackend) close() error {
	release, err := e.end()
	if !release {
		e.ranks = nil
		return nil
	}
	errs := []error{err}
	for _, rk := range e.ranks {
		if rk.b.ctx != nil {
			// A context that cannot be entered is the loop backend's Close
			// to report; releasing it frees what is in it.
			if leave, err := rk.b.ctx.Enter(); err == nil {
				var r releaser
				// The exchange buffers go before the loop backend's
				// release waits for the stream: wait first.
				r.sync(rk.b.stream, "close")
				for _, p := range rk.bufs.all() {
					r.mem(p)
				}
				r.events(rk.events[:])
				leave()
				if err := r.err(); err != nil {
					errs = append(errs, fmt.Errorf("rank %d: %w", rk.r, err))
				}
			}
		}
		if err := rk.b.Close(); err != nil {
			errs = append(errs, fmt.Errorf("rank %d: %w", rk.r, err))
		}
	}
	e.ranks = nil
	return errors.Join(errs...)
}

// sends is what a rank uploads before dispatch, from its plan.
type sends struct {
	// at[d] is destination d's first row in the send buffers.
	at []int
	// rowOf[t·ranks+d] is token t's row in the send buffers for d, or −1.
	rowOf []int32
	// counts[d·(1+experts)…] is what d is told: tokens, then pairs per expert.
	counts []int32
	// slots and weights, top-k per sent row: the expert d runs for the
	// slot (−1: another rank's) and the router's weight (0 for −1).
	slots   []int32
	weights []float32
}

// packSends lays out a source's sends by destination, in plan order; w is
// the router's weights of the source's tokens, top-k per token.
func packSends(plan *ep.SourcePlan, w []float32, tokens, experts int) sends {
	N, K := len(plan.Tokens), plan.TopK
	out := sends{at: make([]int, N), rowOf: make([]int32, tokens*N), counts: make([]int32, N*(1+experts))}
	for i := range out.rowOf {
		out.rowOf[i] = -1
	}
	at := 0
	for d := range N {
		out.at[d] = at
		out.counts[d*(1+experts)] = int32(len(plan.Tokens[d]))
		for ex, c := range plan.Rows[d] {
			out.counts[d*(1+experts)+1+ex] = int32(c)
		}
		for j, t := range plan.Tokens[d] {
			out.rowOf[int(t)*N+d] = int32(at + j)
			for k := range K {
				id := plan.Slots[d][j*K+k]
				wt := float32(0)
				if id >= 0 {
					wt = w[int(t)*K+k]
				}
				out.slots, out.weights = append(out.slots, id), append(out.weights, wt)
			}
		}
		at += len(plan.Tokens[d])
	}
	return out
}

// readRecvCounts reads what every source announced to rank self: tokens
// from each (tok), where each source's rows start (at, in source order),
// and pairs per expert over all sources. Counts a source could not have
// sent, or for experts self does not hold, are refused.
func readRecvCounts(counts []int32, ranks, experts, tokens, self int, holds []bool) (tok, at, expertRows []int, err error) {
	if len(counts) != ranks*(1+experts) {
		return nil, nil, nil, fmt.Errorf("%d counts, want %d ranks × (1 + %d experts)", len(counts), ranks, experts)
	}
	tok, at, expertRows = make([]int, ranks), make([]int, ranks), make([]int, experts)
	next := 0
	for src := range ranks {
		c := counts[src*(1+experts) : (src+1)*(1+experts)]
		if c[0] < 0 || int(c[0]) > tokens {
			return nil, nil, nil, fmt.Errorf("rank %d says it sends %d tokens, of %d it holds", src, c[0], tokens)
		}
		tok[src], at[src] = int(c[0]), next
		next += int(c[0])
		for ex, n := range c[1:] {
			switch {
			case n < 0 || int(n) > int(c[0]):
				return nil, nil, nil, fmt.Errorf("rank %d says it sends %d rows of expert %d in %d tokens", src, n, ex, c[0])
			case n > 0 && !holds[ex]:
				return nil, nil, nil, fmt.Errorf("rank %d sends %d rows of expert %d, which rank %d does not hold", src, n, ex, self)
			}
			expertRows[ex] += int(n)
		}
	}
	return tok, at, expertRows, nil
}

// groupReceived gives each received (token, slot) its row among the pairs:
// each local expert's rows after the earlier local experts' (off), −1 for
// a slot another rank serves. ids are the received slots, top-k per token;
// the slots must agree with the counts announced (expertRows).
func groupReceived(ids []int32, self int, local []int, holds []bool, expertRows []int) (rowOf []int32, off []int, pairs int, err error) {
	off = make([]int, len(expertRows))
	for _, ex := range local {
		off[ex] = pairs
		pairs += expertRows[ex]
	}
	rowOf = make([]int32, max(1, len(ids)))
	cursor := make([]int, len(expertRows))
	for i, id := range ids {
		if id < 0 {
			rowOf[i] = -1
			continue
		}
		if int(id) >= len(expertRows) || !holds[id] {
			return nil, nil, 0, fmt.Errorf("received a slot for expert %d, which rank %d does not hold", id, self)
		}
		if cursor[id] >= expertRows[id] {
			return nil, nil, 0, fmt.Errorf("received more slots of expert %d than the %d announced", id, expertRows[id])
		}
		rowOf[i] = int32(off[id] + cursor[id])
		cursor[id]++
	}
	for _, ex := range local {
		if cursor[ex] != expertRows[ex] {
			return nil, nil, 0, fmt.Errorf("received %d slots of expert %d, %d were announced", cursor[ex], ex, expertRows[ex])
		}
	}
	return rowOf, off, pairs, nil
}
