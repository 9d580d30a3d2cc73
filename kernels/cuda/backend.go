package cuda

/*
#include <stdlib.h>
#include "calls.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"
	"unsafe"

	"github.com/moetop/moetop/kernels"
)

// MaxTopK is the most experts per token the router kernel handles: layer.cu's
// MAX_TOP_K, which a test holds equal to this and to what the config
// accepts (profiler.MaxTopK).
const MaxTopK = 64

// Options configure a CUDA backend; they are the registry's, so that they
// reach a backend's constructor through kernels.Open.
type Options = kernels.Options

// runner is what differs between backends: how the expert GEMMs run. Each
// GPU backend is one file holding its runner, its memory plan and its
// registration.
type runner interface {
	// setup allocates what the runner needs beyond its plan's buffers.
	setup(b *Backend) error
	// gemm runs gemm1 (second=false) or gemm2 over the step's experts.
	gemm(b *Backend, second bool) error
	// expertTimes returns per-expert gemm1+gemm2 time, or nil.
	expertTimes(b *Backend) ([]time.Duration, error)
	// teardown releases what setup made, adding what fails to b.rel.
	teardown(b *Backend)
	// buffers lists the plan's buffers the runner reads beyond those of
	// the shared steps (sharedBuffers).
	buffers() []kernels.BufferID
}

// layout is where the permuted rows go between permute and combine. The
// dense layout packs each expert's rows after the earlier experts'; a
// runner that lays rows out otherwise (padded) implements these hooks.
type layout interface {
	// place runs once the step's counts are known, before the scatter: it
	// makes room for the rows (buffers of KindPadding, which depend on the
	// counts, are its to allocate) and returns the rows each expert may
	// hold, 0 for no limit (the dense layout).
	place(b *Backend) (capacity int, err error)
	// rows is how many rows of h the activation runs over.
	rows(b *Backend) int
	// dropped counts the rows placing threw away this step.
	dropped(b *Backend) int
	// shrink gives back what place took, after a step ran out of memory.
	shrink(b *Backend) error
}

// dense is the layout of every runner that does not bring its own.
type dense struct{}

func (dense) place(*Backend) (int, error) { return 0, nil }
func (dense) rows(b *Backend) int         { return b.s.Rows() }
func (dense) dropped(*Backend) int        { return 0 }
func (dense) shrink(*Backend) error       { return nil }

// sharedBuffers are the plan's buffers the shared steps (fill, route,
// permute, activation, combine) read: every GPU plan must hold them.
var sharedBuffers = []kernels.BufferID{kernels.BufRouterWeights, kernels.BufW1, kernels.BufW2, kernels.BufX,
	kernels.BufLogits, kernels.BufOut, kernels.BufTopKIDs, kernels.BufTopKWeights, kernels.BufRowOfSlot,
	kernels.BufIndex, kernels.BufRouterBias, kernels.BufPermutedX, kernels.BufH, kernels.BufY, kernels.BufWorkspace}

// gpuCommon is what every GPU backend holds whatever its GEMMs: the
// buffers every backend has, in the shape's dtype, the router bias, and
// with shared experts their own cuBLAS handle and workspace.
func gpuCommon(s kernels.Shape) []kernels.Buffer {
	b := append(kernels.CommonBuffers(s, uint64(s.DType.Size())),
		kernels.Buffer{ID: kernels.BufRouterBias, Name: "router bias", Kind: kernels.KindIndex, Bytes: uint64(4 * s.Experts)})
	return append(b, sharedPlan(s)...)
}

// gpuBackend is what a GPU backend's file registers: the registry's entry
// and a constructor of its runner.
type gpuBackend struct {
	reg       kernels.Registration
	newRunner func() runner
}

var gpuBackends = map[string]gpuBackend{}

// register adds a GPU backend to the registry, from its file's init. It
// fills in what every GPU backend shares: it needs a GPU, its top-k is
// bounded by the router kernel, and New opens it on the device.
func register(r kernels.Registration, newRunner func() runner) {
	r.NeedsGPU = true
	own := r.Supports
	r.Supports = func(c kernels.Caps, s kernels.Shape) error {
		if s.TopK > MaxTopK {
			return fmt.Errorf("top-k %d is over the GPU router's limit of %d", s.TopK, MaxTopK)
		}
		if s.TopK > 0 && s.Experts > 0 {
			if err := s.Router.Check(s.Experts, s.TopK); err != nil {
				return err
			}
		}
		if own != nil {
			return own(c, s)
		}
		return nil
	}
	name := r.Name
	r.New = func(o kernels.Options) (kernels.Backend, error) {
		b, err := New(name, o)
		if err != nil {
			return nil, err // not a typed nil in the interface
		}
		return b, nil
	}
	gpuBackends[name] = gpuBackend{r, newRunner}
	kernels.Register(r)
}

// deviceContext is what a Backend asks of its device's context: *Device,
// or a test's stand-in that fails.
type deviceContext interface {
	Enter() (leave func(), err error)
	Close() error
}

// Backend is the MoE layer on one GPU; the runner decides how the expert
// GEMMs are issued and, through its layout, where the rows go. Everything
// else (buffers, layer kernels, events) is shared, so the GPU backends
// differ only in their own files.
type Backend struct {
	name string
	reg  kernels.Registration
	opts Options
	dev  *Device
	ctx  deviceContext // nil once closed
	caps kernels.Caps
	mod  *module
	run  runner
	lay  layout

	s        kernels.Shape
	prepared bool
	bufs     [kernels.NumBufferIDs]ptr
	stream   C.CUstream
	handle   C.cublasHandle_t
	events   [kernels.NumPhases + 1]C.CUevent
	// shared runs the shared experts beside the routed ones (a shape
	// without them leaves it empty).
	shared sharedExperts

	// Pinned host memory, so that async copies are truly async.
	hostCounts unsafe.Pointer // experts int32
	hostBias   unsafe.Pointer // experts float32
	hostPtrs   unsafe.Pointer // 6·experts device pointers (grouped)

	graphs graphs
	// rel is set while release runs: the runner's teardown adds what it
	// cannot free to it.
	rel     *releaser
	counts  []int
	offsets []int
	steps   int
	// timing is set on the steps whose experts are timed.
	timing bool
}

// New opens the named GPU backend (kernels.GPUNames) on a GPU; without one
// it returns an error that matches kernels.ErrNoGPU, and where the
// backend's capability check refuses the device, one that matches
// kernels.ErrUnsupported.
func New(name string, opts Options) (*Backend, error) {
	g, ok := gpuBackends[name]
	if !ok {
		return nil, fmt.Errorf("%w %q: the GPU backends are %s", kernels.ErrUnknownBackend, name,
			strings.Join(kernels.GPUNames(), ", "))
	}
	d, err := OpenDevice(opts.LibDir, opts.Device)
	if err != nil {
		return nil, err
	}
	caps := d.Caps()
	if err := g.reg.Check(caps, kernels.Shape{}); err != nil {
		d.Close()
		return nil, err
	}
	r := g.newRunner()
	var lay layout = dense{}
	if l, ok := r.(layout); ok {
		lay = l
	}
	return &Backend{name: name, reg: g.reg, opts: opts, dev: d, ctx: d, caps: caps, run: r, lay: lay}, nil
}

// Info describes the backend.
func (b *Backend) Info() kernels.Info {
	_, times := b.run.(interface{ timesExperts() bool })
	return kernels.Info{Name: b.name, Device: fmt.Sprintf("%s (sm_%d%d)", b.dev.Name, b.dev.Major, b.dev.Minor),
		TimesExperts: times && b.opts.TimeExperts}
}

// Device is the GPU the backend runs on.
func (b *Backend) Device() *Device { return b.dev }

// dtypes maps a kernels.DType to cudaDataType, the cuBLAS compute type
// and the layer kernels' suffix.
func dtypes(d kernels.DType) (data, compute int, suffix string) {
	switch d {
	case kernels.BF16:
		return 14, 68, "bf16"
	case kernels.FP16:
		return 2, 68, "fp16"
	case kernels.TF32:
		return 0, 77, "fp32" // CUBLAS_COMPUTE_32F_FAST_TF32
	}
	return 0, 68, "fp32"
}

// errClosed is the error of a call on a closed backend.
var errClosed = errors.New("backend closed")

// Prepare allocates every buffer of the backend's plan (those of
// KindPadding wait for the step's counts: the layout allocates them) and
// generates inputs and weights on the device. A shape the capability check
// refuses matches kernels.ErrUnsupported. On failure everything is
// released; an allocation failure matches kernels.ErrOutOfMemory.
func (b *Backend) Prepare(ctx context.Context, s kernels.Shape) (err error) {
	if b.ctx == nil {
		return fmt.Errorf("prepare %s: %w", b.name, errClosed)
	}
	if err := b.reg.Check(b.caps, s); err != nil {
		return err
	}
	leave, err := b.ctx.Enter()
	if err != nil {
		return err
	}
	defer leave()
	if err := b.release(); err != nil {
		return fmt.Errorf("prepare %s: releasing the layer before: %w", b.name, err)
	}
	defer func() {
		if err != nil {
			err = errors.Join(err, b.release())
		}
	}()
	if b.mod, err = loadModule(b.dev); err != nil {
		return err
	}
	b.s = s
	for i := range b.events {
		if err = check("cuEventCreate", C.call_cuEventCreate(&b.events[i], 0)); err != nil {
			return err
		}
	}
	e := s.Experts
	for _, h := range []struct {
		p *unsafe.Pointer
		n int
	}{{&b.hostCounts, 4 * e}, {&b.hostBias, 4 * e}, {&b.hostPtrs, 6 * 8 * e}} {
		// A local, not the field: cgo checks the whole Go allocation behind
		// a void** argument, and Backend holds Go pointers.
		var p unsafe.Pointer
		if err = check("cuMemAllocHost_v2", C.call_cuMemAllocHost_v2(&p, C.size_t(h.n))); err != nil {
			return err
		}
		*h.p = p
	}
	plan, err := b.reg.Plan(s, nil)
	if err != nil {
		return err
	}
	if err = b.allocate(plan, func(k kernels.BufferKind) bool { return k != kernels.KindPadding }); err != nil {
		return err
	}
	if err = checkPlan(b.name, plan, b.run, s); err != nil {
		return err
	}
	if b.stream, b.handle, err = openBLASStream(b.bufs[kernels.BufWorkspace], kernels.WorkspaceBytes); err != nil {
		return err
	}
	if err = b.fill(); err != nil {
		return err
	}
	if err = ctx.Err(); err != nil {
		return err
	}
	if err = b.run.setup(b); err != nil {
		return err
	}
	if s.SharedWidth() > 0 {
		if err = b.shared.setup(b); err != nil {
			return err
		}
	}
	b.prepared = true
	return nil
}

// allocate allocates the plan's buffers of the kinds want accepts, each
// under its ID; cuBLAS's own memory is counted in plans but never ours to
// allocate.
func (b *Backend) allocate(plan []kernels.Buffer, want func(kernels.BufferKind) bool) error {
	for _, buf := range plan {
		if buf.ID == kernels.BufCuBLAS || !want(buf.Kind) {
			continue
		}
		if b.bufs[buf.ID] != 0 {
			return fmt.Errorf("%s: plan allocates %q twice", b.name, buf.Name)
		}
		p, err := alloc(buf.Name, buf.Bytes)
		if err != nil {
			return err
		}
		b.bufs[buf.ID] = p
	}
	return nil
}

// freeBuffers releases the buffers of the given IDs, going on past one
// that fails.
func (b *Backend) freeBuffers(ids ...kernels.BufferID) error {
	var r releaser
	for _, id := range ids {
		r.mem(&b.bufs[id])
	}
	return r.err()
}

// checkPlan says which buffer the shared steps, the runner or (for a
// shape with them) the shared experts read that the plan does not hold:
// a backend file's mistake, refused before any kernel could touch a null
// pointer.
func checkPlan(name string, plan []kernels.Buffer, r runner, s kernels.Shape) error {
	have := map[kernels.BufferID]bool{}
	for _, b := range plan {
		have[b.ID] = true
	}
	need := append(append([]kernels.BufferID(nil), sharedBuffers...), r.buffers()...)
	if s.SharedWidth() > 0 {
		need = append(need, sharedReads...)
	}
	for _, id := range need {
		if !have[id] {
			return fmt.Errorf("%s: its plan has no buffer %d, which the GPU steps read", name, id)
		}
	}
	return nil
}

// fill generates x and the weights on the device with the same values as
// kernels.FillSlice, and waits for them.
func (b *Backend) fill() error {
	s := b.s
	_, _, sfx := dtypes(s.DType)
	type tensor struct {
		buf    kernels.BufferID
		n      int
		tensor uint32
		scale  float32
	}
	fills := []tensor{
		{kernels.BufX, s.Tokens * s.Hidden, kernels.TensorX, kernels.ScaleX()},
		{kernels.BufRouterWeights, s.Hidden * s.Experts, kernels.TensorRouter, kernels.ScaleRouter(s.Hidden)},
		{kernels.BufW1, s.Experts * s.Hidden * s.W1Cols(), kernels.TensorW1, kernels.ScaleW1(s.Hidden)},
		{kernels.BufW2, s.Experts * s.FFN * s.Hidden, kernels.TensorW2, kernels.ScaleW2(s.FFN)},
	}
	if w := s.SharedWidth(); w > 0 {
		fills = append(fills,
			tensor{kernels.BufSharedW1, s.Hidden * s.Act.Columns(w), kernels.TensorSharedW1, kernels.ScaleW1(s.Hidden)},
			tensor{kernels.BufSharedW2, w * s.Hidden, kernels.TensorSharedW2, kernels.ScaleW2(w)})
	}
	for _, f := range fills {
		grid := min(blocks(f.n, 256), 1<<16)
		if err := b.mod.launch("fill_"+sfx, grid, 256, b.stream, argPtr(b.bufs[f.buf]), argU64(uint64(f.n)),
			argU64(s.Seed), uint64(f.tensor), argF32(f.scale)); err != nil {
			return err
		}
	}
	return check("cuStreamSynchronize(fill)", C.call_cuStreamSynchronize(b.stream))
}

// release frees everything Prepare and Step allocated, going on past what
// fails, and returns every failure. The caller has entered the device.
func (b *Backend) release() error {
	r := &releaser{}
	b.rel = r
	defer func() { b.rel = nil }()
	r.add(b.graphs.release())
	if b.run != nil {
		b.run.teardown(b)
	}
	b.shared.teardown(r)
	// The main stream's work first: the buffers and events are its.
	r.sync(b.stream, "release")
	r.blas(&b.handle)
	for id := range b.bufs {
		r.mem(&b.bufs[id])
	}
	r.events(b.events[:])
	for _, p := range []*unsafe.Pointer{&b.hostCounts, &b.hostBias, &b.hostPtrs} {
		r.host(p)
	}
	r.stream(&b.stream)
	b.prepared = false
	return r.err()
}

// Close releases the buffers and the device's context; a second Close does
// nothing. When the context cannot be entered (the driver is shutting down,
// the context is gone) nothing allocated in it can be freed one by one:
// the handles are forgotten, and releasing the primary context below,
// which always happens, frees them with it once no one else holds it.
func (b *Backend) Close() error {
	if b.ctx == nil {
		return nil
	}
	ctx := b.ctx
	var errs []error
	if leave, err := ctx.Enter(); err == nil {
		if err := b.release(); err != nil {
			errs = append(errs, fmt.Errorf("close %s: %w", b.name, err))
		}
		leave()
	} else {
		errs = append(errs, fmt.Errorf("close %s: %w", b.name, err))
		b.forget()
	}
	b.ctx = nil
	if err := ctx.Close(); err != nil {
		errs = append(errs, fmt.Errorf("close %s: %w", b.name, err))
	}
	return errors.Join(errs...)
}

// forget drops every handle into the device without calling CUDA, for a
// context that can no longer be entered.
func (b *Backend) forget() {
	*b = Backend{name: b.name, reg: b.reg, opts: b.opts, dev: b.dev, ctx: b.ctx, caps: b.caps}
}

func (b *Backend) record(p int) error {
	return check("cuEventRecord", C.call_cuEventRecord(b.events[p], b.stream))
}

// Step runs one forward pass and times each phase with CUDA events.
func (b *Backend) Step(ctx context.Context, in kernels.StepInput) (kernels.StepResult, error) {
	var res kernels.StepResult
	if !b.prepared {
		return res, kernels.ErrNotPrepared
	}
	leave, err := b.ctx.Enter()
	if err != nil {
		return res, err
	}
	defer leave()
	s := b.s
	every := max(1, b.opts.TimeExpertsEvery)
	if b.opts.TimeExpertsEvery == 0 {
		every = 8
	}
	b.timing = b.opts.TimeExperts && b.steps%every == 0
	b.steps++
	if err := b.record(0); err != nil {
		return res, err
	}
	shared := s.SharedWidth() > 0
	if shared {
		if err := b.shared.launch(b); err != nil {
			return res, err
		}
	}
	if err := b.route(in); err != nil {
		return res, err
	}
	if err := b.record(1); err != nil {
		return res, err
	}
	if err := b.permute(); err != nil {
		if errors.Is(err, kernels.ErrOutOfMemory) {
			// Memory goes back to its baseline; the run goes on, unless
			// giving it back failed too.
			if serr := b.lay.shrink(b); serr != nil {
				err = errors.Join(err, serr)
			}
		}
		return res, err
	}
	if err := b.record(2); err != nil {
		return res, err
	}
	// permute waited for the router's counts: nothing is in flight now, so
	// a cancelled run (q, Ctrl-C) stops here instead of launching the GEMMs.
	if err := ctx.Err(); err != nil {
		return res, err
	}
	_, _, sfx := dtypes(s.DType)
	hRows := b.lay.rows(b)
	steps := []func() error{
		func() error { return b.gemm(false) },
		func() error {
			if f, ok := b.run.(fusedActivation); ok && f.fusesActivation() {
				return nil // gemm1 applied it
			}
			return b.activate(b.bufs[kernels.BufH], hRows, s.FFN, b.stream)
		},
		func() error { return b.gemm(true) },
		func() error {
			// Combine adds the shared experts' output, so it waits for
			// them: any wait shows in its time.
			sharedY := ptr(0)
			if shared {
				if err := b.shared.join(b); err != nil {
					return err
				}
				sharedY = b.bufs[kernels.BufSharedY]
			}
			return b.mod.launch("combine_"+sfx, uint32(s.Tokens), uint32(min(256, roundUp(s.Hidden, 32))), b.stream,
				argPtr(b.bufs[kernels.BufY]), argPtr(b.bufs[kernels.BufRowOfSlot]), argPtr(b.bufs[kernels.BufTopKWeights]),
				argInt(s.TopK), argInt(s.Hidden), argPtr(sharedY), argPtr(b.bufs[kernels.BufOut]))
		},
	}
	for i, f := range steps {
		if err := f(); err != nil {
			return res, fmt.Errorf("%s: %w", kernels.Phase(i+2), err)
		}
		if err := b.record(i + 3); err != nil {
			return res, err
		}
	}
	if err := check("cuEventSynchronize(step)", C.call_cuEventSynchronize(b.events[kernels.NumPhases])); err != nil {
		return res, err
	}
	for p := 0; p < int(kernels.NumPhases); p++ {
		var ms C.float
		if err := check("cuEventElapsedTime", C.call_cuEventElapsedTime(&ms, b.events[p], b.events[p+1])); err != nil {
			return res, err
		}
		res.Phases[p] = time.Duration(float64(ms) * 1e6)
	}
	if shared {
		p, err := b.shared.phase(b)
		if err != nil {
			return res, err
		}
		res.Overlapped = []kernels.OverlappedPhase{p}
	}
	res.Rows = append([]int(nil), b.counts...)
	res.Dropped = b.lay.dropped(b)
	if b.timing {
		if res.ExpertGEMM, err = b.run.expertTimes(b); err != nil {
			return res, err
		}
	}
	return res, ctx.Err()
}

func roundUp(n, m int) int { return (n + m - 1) / m * m }

// activate runs the activation in place over rows rows of h on stream:
// each row f wide, or 2f when gated (gate then up), whose first f columns
// get act(gate)·up (layer.cu's act kernel).
func (b *Backend) activate(h ptr, rows, f int, stream C.CUstream) error {
	_, _, sfx := dtypes(b.s.DType)
	silu, gated := actArgs(b.s.Act)
	n := rows * f
	return b.mod.launch("act_"+sfx, min(blocks(n, 256), 1<<16), 256, stream, argPtr(h), argU64(uint64(rows)),
		argU64(uint64(f)), argInt(silu), argInt(gated))
}

// actArgs are the act kernel's silu and gated flags for act.
func actArgs(act kernels.Activation) (silu, gated int) {
	if act.SiLUBased() {
		silu = 1
	}
	if act.Gated() {
		gated = 1
	}
	return silu, gated
}

// routeArgs are the route kernel's kind, groups, kept groups and scale
// for r (layer.cu's ROUTER_* are kernels.RouterKind's values).
func routeArgs(r kernels.Router) (kind, groups, kept int, scale float32) {
	return int(r.Kind), r.GroupCount(), r.KeptGroups(), r.WeightScale()
}

// routeBlock is the router kernel's threads per block: one thread per
// token, each with MAX_TOP_K candidates in local memory (512 bytes at 64).
const routeBlock = 128

// fusedActivation is a runner whose gemm1 applies the activation in its
// epilogue: the act phase then runs nothing and times ~0.
type fusedActivation interface{ fusesActivation() bool }

// graphed is a runner whose GEMMs can be captured in a CUDA graph.
type graphed interface{ graphable() bool }

// gemm runs one expert GEMM phase, replaying a graph of it when the load
// repeats. Per-expert timing needs events between experts, so timing
// experts and graphs exclude each other.
func (b *Backend) gemm(second bool) error {
	if g, ok := b.run.(graphed); ok && g.graphable() && !b.opts.NoGraphs && !b.timing {
		return b.graphs.run(b.stream, loadKey(b.counts, second), func() error { return b.run.gemm(b, second) })
	}
	return b.run.gemm(b, second)
}

// route fills top-k ids and weights: from the router, or from a fixed
// assignment copied from the host.
func (b *Backend) route(in kernels.StepInput) error {
	s := b.s
	if in.Fixed != nil {
		if len(in.Fixed.IDs) != s.Rows() || len(in.Fixed.Weights) != s.Rows() {
			return fmt.Errorf("fixed assignment has %d ids, want tokens×top-k = %d", len(in.Fixed.IDs), s.Rows())
		}
		for _, id := range in.Fixed.IDs {
			if id < 0 || int(id) >= s.Experts {
				return fmt.Errorf("fixed assignment: expert %d out of range", id)
			}
		}
		if err := check("cuMemcpyHtoDAsync_v2(ids)", C.call_cuMemcpyHtoDAsync_v2(b.bufs[kernels.BufTopKIDs], unsafe.Pointer(&in.Fixed.IDs[0]), C.size_t(4*s.Rows()), b.stream)); err != nil {
			return err
		}
		return check("cuMemcpyHtoDAsync_v2(weights)", C.call_cuMemcpyHtoDAsync_v2(b.bufs[kernels.BufTopKWeights], unsafe.Pointer(&in.Fixed.Weights[0]), C.size_t(4*s.Rows()), b.stream))
	}
	data, _, _ := dtypes(s.DType)
	// logits[T×E] = x[T×H]·Wg[H×E], kept in float32 whatever the dtype.
	compute := 68
	if s.DType == kernels.TF32 {
		compute = 77
	}
	if err := checkBLAS("cublasGemmEx(router)", C.moetop_gemm(b.handle, C.int(s.Experts), C.int(s.Tokens), C.int(s.Hidden),
		b.bufs[kernels.BufRouterWeights], C.int(data), C.int(s.Experts), b.bufs[kernels.BufX], C.int(data), C.int(s.Hidden),
		b.bufs[kernels.BufLogits], 0, C.int(s.Experts), C.int(compute))); err != nil {
		return err
	}
	bias := ptr(0)
	if in.Bias != nil {
		if len(in.Bias) != s.Experts {
			return fmt.Errorf("router bias has %d values, want %d experts", len(in.Bias), s.Experts)
		}
		copy(unsafe.Slice((*float32)(b.hostBias), s.Experts), in.Bias)
		bias = b.bufs[kernels.BufRouterBias]
		if err := check("cuMemcpyHtoDAsync_v2(bias)", C.call_cuMemcpyHtoDAsync_v2(bias, b.hostBias, C.size_t(4*s.Experts), b.stream)); err != nil {
			return err
		}
	}
	kind, groups, kept, scale := routeArgs(s.Router)
	return b.mod.launch("route", blocks(s.Tokens, routeBlock), routeBlock, b.stream, argPtr(b.bufs[kernels.BufLogits]), argPtr(bias),
		argInt(s.Tokens), argInt(s.Experts), argInt(s.TopK), argInt(kind), argInt(groups), argInt(kept), argF32(scale),
		argPtr(b.bufs[kernels.BufTopKIDs]), argPtr(b.bufs[kernels.BufTopKWeights]))
}

// permute counts rows per expert on the device, brings only the counts
// back (the GEMM sizes are needed on the host), then scatters and gathers.
func (b *Backend) permute() error {
	s := b.s
	e, r := s.Experts, s.Rows()
	idx := b.bufs[kernels.BufIndex]
	counts, offsets, cursor := idx, idx+ptr(4*e), idx+ptr(8*e)
	if err := check("cuMemsetD32Async", C.call_cuMemsetD32Async(idx, 0, C.size_t(3*e), b.stream)); err != nil {
		return err
	}
	if err := b.mod.launch("histogram", blocks(r, 256), 256, b.stream, argPtr(b.bufs[kernels.BufTopKIDs]), argInt(r), argPtr(counts)); err != nil {
		return err
	}
	if err := b.mod.launch("scan", 1, 1, b.stream, argPtr(counts), argInt(e), argPtr(offsets)); err != nil {
		return err
	}
	if err := check("cuMemcpyDtoHAsync_v2(counts)", C.call_cuMemcpyDtoHAsync_v2(b.hostCounts, counts, C.size_t(4*e), b.stream)); err != nil {
		return err
	}
	if err := check("cuStreamSynchronize(counts)", C.call_cuStreamSynchronize(b.stream)); err != nil {
		return err
	}
	hc := unsafe.Slice((*int32)(b.hostCounts), e)
	b.counts, b.offsets = make([]int, e), make([]int, e)
	sum := 0
	for i, c := range hc {
		b.counts[i], b.offsets[i] = int(c), sum
		sum += int(c)
	}
	if sum != r {
		return fmt.Errorf("permute: counts add up to %d rows, want %d (a router bug)", sum, r)
	}
	capacity, err := b.lay.place(b)
	if err != nil {
		return err
	}
	if err := b.mod.launch("scatter", blocks(r, 256), 256, b.stream, argPtr(b.bufs[kernels.BufTopKIDs]), argInt(r),
		argPtr(offsets), argPtr(cursor), argInt(capacity), argPtr(b.bufs[kernels.BufRowOfSlot])); err != nil {
		return err
	}
	_, _, sfx := dtypes(s.DType)
	return b.mod.launch("gather_"+sfx, uint32(r), 128, b.stream, argPtr(b.bufs[kernels.BufX]), argPtr(b.bufs[kernels.BufRowOfSlot]),
		argInt(s.TopK), argInt(s.Hidden), argPtr(b.bufs[kernels.BufPermutedX]))
}

// expertOrder lists the step's experts with rows, busiest first.
func (b *Backend) expertOrder() []int { return busiestFirst(b.counts) }

// busiestFirst lists the experts with rows, busiest first, ties in expert
// order.
func busiestFirst(counts []int) []int {
	var ex []int
	for e, c := range counts {
		if c > 0 {
			ex = append(ex, e)
		}
	}
	sort.SliceStable(ex, func(i, j int) bool { return counts[ex[i]] > counts[ex[j]] })
	return ex
}

// operands gives gemm1's or gemm2's sizes and the row-major X, W, Y of
// expert e in the dense layout: Y[rows×N] = X[rows×K]·W[K×N], X's rows
// ldx elements apart. Gated, gemm1's N is 2·ffn (gate and up side by side)
// and gemm2 reads the activation's ffn columns from h's 2·ffn-wide rows.
func (b *Backend) operands(e int, second bool) (n, k, ldx int, x, w, y ptr) {
	return denseOperands(b.s, &b.bufs, b.offsets[e], e, second)
}

// gemmShape is gemm1's or gemm2's N and K and the row stride of its X,
// the same for every expert: gated, gemm1 writes gate and up (2·ffn wide)
// and gemm2 reads the activation's ffn columns from those rows.
func gemmShape(s kernels.Shape, second bool) (n, k, ldx int) {
	if second {
		return s.Hidden, s.FFN, s.W1Cols()
	}
	return s.W1Cols(), s.Hidden, s.Hidden
}

// denseOperands is operands for an expert whose rows start at row off.
func denseOperands(s kernels.Shape, bufs *[kernels.NumBufferIDs]ptr, off, e int, second bool) (n, k, ldx int, x, w, y ptr) {
	dt := s.DType.Size()
	n, k, ldx = gemmShape(s, second)
	if !second {
		return n, k, ldx, bufs[kernels.BufPermutedX] + ptr(off*ldx*dt), bufs[kernels.BufW1] + ptr(e*k*n*dt), bufs[kernels.BufH] + ptr(off*n*dt)
	}
	return n, k, ldx, bufs[kernels.BufH] + ptr(off*ldx*dt), bufs[kernels.BufW2] + ptr(e*k*n*dt), bufs[kernels.BufY] + ptr(off*n*dt)
}

// gemmEx computes row-major Y[rows×N] = X[rows×K]·W[K×N], X's rows ldx
// elements apart (≥ K). cuBLAS is column-major, where the same memory
// holds Yᵀ = Wᵀ·Xᵀ: so A=W (N×K, lda=N), B=X (K×rows, ldb=ldx), C=Y
// (ldc=N), with m=N, n=rows, k=K.
func (b *Backend) gemmEx(h C.cublasHandle_t, rows, n, k, ldx int, x, w, y ptr) error {
	data, compute, _ := dtypes(b.s.DType)
	return checkBLAS("cublasGemmEx", C.moetop_gemm(h, C.int(n), C.int(rows), C.int(k), w, C.int(data), C.int(n),
		x, C.int(data), C.int(ldx), y, C.int(data), C.int(n), C.int(compute)))
}

// enterPrepared is Enter for the calls that read a prepared layer back.
func (b *Backend) enterPrepared() (leave func(), err error) {
	if !b.prepared {
		return nil, kernels.ErrNotPrepared
	}
	return b.ctx.Enter()
}

// Poison fills the output with NaN so that a row no step writes fails.
func (b *Backend) Poison() error {
	leave, err := b.enterPrepared()
	if err != nil {
		return err
	}
	defer leave()
	n := b.s.Tokens * b.s.Hidden
	// The output, and the shared experts' output: their inputs do not
	// change between steps, so a value left from the last step would hide
	// a missing join.
	for _, id := range []kernels.BufferID{kernels.BufOut, kernels.BufSharedY} {
		buf := b.bufs[id]
		if buf == 0 { // no shared experts: no buffer
			continue
		}
		switch b.s.DType {
		case kernels.BF16:
			err = check("cuMemsetD16Async", C.call_cuMemsetD16Async(buf, 0x7fc0, C.size_t(n), b.stream))
		case kernels.FP16:
			err = check("cuMemsetD16Async", C.call_cuMemsetD16Async(buf, 0x7e00, C.size_t(n), b.stream))
		default:
			err = check("cuMemsetD32Async", C.call_cuMemsetD32Async(buf, 0x7fc00000, C.size_t(n), b.stream))
		}
		if err != nil {
			return err
		}
	}
	return check("cuStreamSynchronize(poison)", C.call_cuStreamSynchronize(b.stream))
}

// Output copies the last step's output back as float32.
func (b *Backend) Output() ([]float32, error) {
	leave, err := b.enterPrepared()
	if err != nil {
		return nil, err
	}
	defer leave()
	n := b.s.Tokens * b.s.Hidden
	out := make([]float32, n)
	if err := check("cuStreamSynchronize", C.call_cuStreamSynchronize(b.stream)); err != nil {
		return nil, err
	}
	if b.s.DType.Size() == 4 {
		return out, check("cuMemcpyDtoH_v2(out)", C.call_cuMemcpyDtoH_v2(unsafe.Pointer(&out[0]), b.bufs[kernels.BufOut], C.size_t(4*n)))
	}
	half := make([]uint16, n)
	if err := check("cuMemcpyDtoH_v2(out)", C.call_cuMemcpyDtoH_v2(unsafe.Pointer(&half[0]), b.bufs[kernels.BufOut], C.size_t(2*n))); err != nil {
		return nil, err
	}
	for i, h := range half {
		if b.s.DType == kernels.BF16 {
			out[i] = kernels.BF16ToFloat(h)
		} else {
			out[i] = kernels.HalfToFloat(h)
		}
	}
	return out, nil
}

// Routing copies the last step's top-k choice back.
func (b *Backend) Routing() (kernels.Assignment, error) {
	var a kernels.Assignment
	leave, err := b.enterPrepared()
	if err != nil {
		return a, err
	}
	defer leave()
	r := b.s.Rows()
	a.IDs, a.Weights = make([]int32, r), make([]float32, r)
	if err := check("cuStreamSynchronize", C.call_cuStreamSynchronize(b.stream)); err != nil {
		return a, err
	}
	if err := check("cuMemcpyDtoH_v2(ids)", C.call_cuMemcpyDtoH_v2(unsafe.Pointer(&a.IDs[0]), b.bufs[kernels.BufTopKIDs], C.size_t(4*r))); err != nil {
		return a, err
	}
	return a, check("cuMemcpyDtoH_v2(weights)", C.call_cuMemcpyDtoH_v2(unsafe.Pointer(&a.Weights[0]), b.bufs[kernels.BufTopKWeights], C.size_t(4*r)))
}

// Logits copies the last step's router logits back (before the bias).
func (b *Backend) Logits() ([]float32, error) {
	leave, err := b.enterPrepared()
	if err != nil {
		return nil, err
	}
	defer leave()
	n := b.s.Tokens * b.s.Experts
	l := make([]float32, n)
	return l, check("cuMemcpyDtoH_v2(logits)", C.call_cuMemcpyDtoH_v2(unsafe.Pointer(&l[0]), b.bufs[kernels.BufLogits], C.size_t(4*n)))
}
