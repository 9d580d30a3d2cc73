package cuda

/*
#include "calls.h"
*/
import "C"

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"time"

	"github.com/moetop/moetop/kernels"
)

// The hopper backend: our own grouped GEMM (hopper.cu), wgmma fed by TMA,
// one persistent launch per GEMM over every expert, the activation fused
// into gemm1 (gated ones too: the epilogue multiplies act(gate) by up). It
// runs on Hopper only (sm_90a instructions), bf16 and fp16.

func init() {
	register(kernels.Registration{
		Name:     "hopper",
		Doc:      "our wgmma + TMA grouped GEMM for Hopper, activation fused, gated too (bf16, fp16)",
		Order:    60,
		Plan:     hopperPlan,
		Supports: hopperSupports,
	}, func() runner { return &hopperRunner{} })
}

//go:embed hopper.cu
var hopperSource string

// hopperPTX is the inline-PTX helpers (mbarriers, TMA, the tensor map)
// every header-free Hopper program starts with: NVRTC has no toolkit
// headers to include, so the text goes before the program's own.
//
//go:embed hopper_ptx.cuh
var hopperPTX string

// hopperProgram is the grouped GEMM and its weight generator; wgmma and
// setmaxnreg need sm_90a.
var hopperProgram = Program{
	Name:         "hopper.cu",
	What:         "the Hopper grouped GEMM",
	Source:       hopperPTX + hopperSource,
	ArchSpecific: true,
	Kernels:      hopperKernels(),
}

// UnverifiedHopperEnv must be 1 for the hopper backend to run: it has been
// compiled (NVRTC and ptxas check every instruction) but not yet run on a
// GPU against the CPU reference.
const UnverifiedHopperEnv = "MOETOP_UNVERIFIED_HOPPER"

// hopperConfig is one tile configuration of the kernel: BM rows (one or
// two wgmma m64 halves for the one consumer warpgroup) × BN columns, a
// ring of Stages k-blocks of 64.
type hopperConfig struct{ BM, BN, Stages int }

const (
	hopperBK      = 64
	hopperThreads = 256 // a producer and a consumer warpgroup
	// hopperMaxExperts bounds the schedule's shared memory (4 bytes an
	// expert, beside a ring of up to 160 KiB, under Hopper's 227 KiB).
	hopperMaxExperts = 8192
	// hopperDecodeRows is the most rows per expert, on average, at which
	// the backend runs the decode configuration (see hopperConfigFor).
	hopperDecodeRows = 64
)

// hopperDefault is what the backend runs for prefill, hopperDecode for
// decode (hopperConfigFor chooses); hopperConfigs are every configuration
// compiled, which the microbenchmark compares (bf16 only: fp16 has the
// default and decode ones, to be correct rather than fast).
var (
	hopperDefault = hopperConfig{BM: 128, BN: 128, Stages: 4}
	// hopperDecode: one m64 half, so an expert of a few rows costs a
	// 64-row tile, not a 128-row one; the ring's slots are smaller, so it
	// has more of them, to keep as many weight bytes in flight.
	hopperDecode  = hopperConfig{BM: 64, BN: 128, Stages: 6}
	hopperConfigs = []hopperConfig{hopperDefault, hopperDecode, {BM: 128, BN: 128, Stages: 5}, {BM: 128, BN: 64, Stages: 6}}
)

// hopperConfigFor is the configuration the backend runs for s: decode when
// an expert gets at most hopperDecodeRows rows on average
// (tokens·top-k ≤ 64·experts), else the default. The rule is the shape's,
// chosen once at Prepare: a step's real counts are on the device, and
// reading them back would stall the step. A load that piles rows on a few
// experts still runs right either way; under the decode configuration its
// busy experts take twice as many row tiles, each reading the expert's
// weight tile again (from L2, mostly).
func hopperConfigFor(s kernels.Shape) hopperConfig {
	if s.Rows() <= hopperDecodeRows*s.Experts {
		return hopperDecode
	}
	return hopperDefault
}

// kernel is the configuration's kernel name for d, as hopper.cu's
// GEMM_INSTANCE lines define it.
func (c hopperConfig) kernel(d kernels.DType) string {
	return fmt.Sprintf("hopper_gemm_%s_m%d_n%d_s%d", hopperSuffix(d), c.BM, c.BN, c.Stages)
}

func (c hopperConfig) String() string {
	return fmt.Sprintf("%dx%d, %d stages", c.BM, c.BN, c.Stages)
}

// shared is the dynamic shared memory a launch over experts needs, as the
// kernel lays it out: slack to align the ring to 1024 bytes, the ring, a
// full and an empty barrier per slot, the schedule's prefix sums.
func (c hopperConfig) shared(experts int) int {
	return 1024 + c.Stages*(c.BM*hopperBK*2+c.BN*hopperBK*2) + 16*c.Stages + 4*(experts+1)
}

func hopperSuffix(d kernels.DType) string {
	if d == kernels.FP16 {
		return "fp16"
	}
	return "bf16"
}

func hopperKernels() []string {
	names := []string{hopperDefault.kernel(kernels.FP16), hopperDecode.kernel(kernels.FP16)}
	for _, c := range hopperConfigs {
		names = append(names, c.kernel(kernels.BF16))
	}
	return append(names, "hopper_fill_t_bf16", "hopper_fill_t_fp16")
}

// Activation codes of hopper.cu (ACT_NONE … ACT_SWIGLU). A gated code
// less hopperActGated is its gate's nonlinearity.
const (
	hopperActNone   = 0
	hopperActGELU   = 1
	hopperActSiLU   = 2
	hopperActGeGLU  = 3
	hopperActSwiGLU = 4
	hopperActGated  = 2
)

// hopperAct is the kernel's code for the activation fused into gemm1.
func hopperAct(a kernels.Activation) (int, error) {
	switch a {
	case kernels.GELU:
		return hopperActGELU, nil
	case kernels.SiLU:
		return hopperActSiLU, nil
	case kernels.GeGLU:
		return hopperActGeGLU, nil
	case kernels.SwiGLU:
		return hopperActSwiGLU, nil
	}
	return 0, fmt.Errorf("the %v activation is not fused into the kernel", a)
}

// hopperW1Row is the row of an expert's gemm1 weights, as the kernel holds
// them (W1ᵀ, 2F × hidden, gated), that holds column f of the gate
// (half 0) or of the up projection (half 1): the two interleave in blocks
// of 8 rows, so that the accumulator fragment of a thread holds the gate
// and the up projection of the same output columns (hopper.cu's
// store_half_gated). hopperW1Col is its inverse, as fill_transposed
// computes it: the logical column, half·F + f, of gemm1's 2F.
func hopperW1Row(half, f int) int { return 16*(f/8) + 8*half + f%8 }

func hopperW1Col(n, ffn int) int { return (n/8%2)*ffn + 8*(n/16) + n%8 }

// hopperSupports refuses what the kernel cannot run, saying why. Until a
// GPU run has checked it against the CPU reference, it also refuses
// unless UnverifiedHopperEnv is 1, so that auto and check pass it over.
func hopperSupports(c kernels.Caps, s kernels.Shape) error {
	if c.Major != 9 || c.Minor != 0 {
		return fmt.Errorf("needs a Hopper GPU (sm_90) for wgmma and TMA; this device is sm_%d%d", c.Major, c.Minor)
	}
	if os.Getenv(UnverifiedHopperEnv) != "1" {
		return errors.New("not yet checked against the CPU reference on a GPU; set " + UnverifiedHopperEnv + "=1 to try it")
	}
	switch {
	case s.DType != kernels.BF16 && s.DType != kernels.FP16:
		return fmt.Errorf("%v stays on cuBLAS: the kernel multiplies bf16 and fp16 only", s.DType)
	case s.Hidden%8 != 0 || s.FFN%8 != 0:
		return fmt.Errorf("hidden %d and ffn %d must be multiples of 8: TMA reads rows in multiples of 16 bytes (and gated, gate and up interleave in blocks of 8)", s.Hidden, s.FFN)
	case s.Experts > hopperMaxExperts:
		return fmt.Errorf("%d experts: the kernel's schedule holds at most %d", s.Experts, hopperMaxExperts)
	}
	_, err := hopperAct(s.Act)
	return err
}

// hopperPlan: the dense rows and the handle of the router's GEMM. The
// weights keep their size: Prepare rewrites w1 and w2 in place in the
// kernel's layout (each expert's N × K, transposed; gated, w1's gate and
// up rows interleaved), and no buffer is padded: a tile that straddles an
// expert's end computes the next expert's rows and masks their stores
// (the waste is time, not memory), and TMA reads zeros past the weights'
// edges. h keeps gemm1's width (2·ffn gated) though the fused epilogue
// writes only its first ffn columns: that is where the other backends'
// act kernel leaves the activation, and where gemm2 reads it.
func hopperPlan(s kernels.Shape, _ []int) ([]kernels.Buffer, error) {
	b := append(gpuCommon(s), kernels.DenseRows(s, uint64(s.DType.Size()))...)
	return append(b, kernels.Workspaces(1), kernels.Handles(1)), nil
}

// hopperGEMM is one prepared launch of the grouped GEMM:
// out[rows × n] = act(a[rows × k] · w[e]ᵀ) per expert e over its rows
// (gated: out[rows × n/2] = act(gate)·up), a and out row-major with the
// experts' rows one after the other, w the experts' n × k matrices one
// after the other, counts and offsets per expert on the device (int32).
// Its arguments are built once, so a step only launches.
type hopperGEMM struct {
	fn   *Function
	cfg  LaunchConfig
	args Args
}

// hopperOperands are the device buffers and sizes of one grouped GEMM.
type hopperOperands struct {
	DType           kernels.DType
	A, W, Out       DevicePtr
	Counts, Offsets DevicePtr
	Rows, Experts   int // rows of a and out, all experts together
	N, K            int // of the GEMM: gated, N is 2·ffn, w's rows interleaved (hopperW1Row)
	Act             int // hopperAct*
	// LdA and LdOut are the elements from one row of a, and of out, to the
	// next; 0 means packed: K, and the output's width (N, or N/2 gated).
	LdA, LdOut int
}

// width is the output's columns: N, or N/2 for a gated activation.
func (o hopperOperands) width() int {
	if o.Act >= hopperActGeGLU {
		return o.N / 2
	}
	return o.N
}

// strides are LdA and LdOut with 0 read as packed.
func (o hopperOperands) strides() (lda, ldo int) {
	lda, ldo = o.LdA, o.LdOut
	if lda == 0 {
		lda = o.K
	}
	if ldo == 0 {
		ldo = o.width()
	}
	return lda, ldo
}

// check refuses operands the kernel would get wrong: the sizes TMA and the
// paired stores need, a gated N that splits a gate/up pair of blocks.
func (o hopperOperands) check() error {
	lda, ldo := o.strides()
	switch {
	case o.Rows < 1 || o.Experts < 1 || o.N < 1 || o.K < 1 || o.N%8 != 0 || o.K%8 != 0:
		return fmt.Errorf("hopper GEMM: %d rows, %d experts, n %d, k %d: want at least one of each, n and k multiples of 8",
			o.Rows, o.Experts, o.N, o.K)
	case o.Act < hopperActNone || o.Act > hopperActSwiGLU:
		return fmt.Errorf("hopper GEMM: activation code %d", o.Act)
	case o.Act >= hopperActGeGLU && o.N%16 != 0:
		return fmt.Errorf("hopper GEMM: gated n %d: want 2·ffn, ffn a multiple of 8", o.N)
	case lda < o.K || lda%8 != 0 || ldo < o.width() || ldo%8 != 0:
		return fmt.Errorf("hopper GEMM: row strides %d (a, k %d) and %d (out, %d wide): want at least the width, multiples of 8",
			lda, o.K, ldo, o.width())
	}
	return nil
}

// newHopperGEMM encodes the two tensor maps and the arguments for a launch
// of configuration c over grid blocks (one per SM) on stream.
func newHopperGEMM(m *Module, c hopperConfig, o hopperOperands, grid int, stream Stream) (*hopperGEMM, error) {
	if err := o.check(); err != nil {
		return nil, err
	}
	lda, ldo := o.strides()
	fn, err := m.Function(c.kernel(o.DType))
	if err != nil {
		return nil, err
	}
	dt := TensorBFloat16
	if o.DType == kernels.FP16 {
		dt = TensorFloat16
	}
	// The activations: rows × k, rows lda apart, a box of BM rows × 64
	// columns (128 bytes, the swizzle's width). Rows past the end, and
	// columns past k (gemm2 reading h's first ffn of 2·ffn), arrive as
	// zeros.
	a, err := EncodeTiled(TiledTensor{DataType: dt, Address: o.A, Dims: []uint64{uint64(o.K), uint64(o.Rows)},
		Strides: []uint64{uint64(2 * lda)}, Box: []uint32{hopperBK, uint32(c.BM)}, Swizzle: Swizzle128B,
		L2Promotion: L2Promotion256B})
	if err != nil {
		return nil, fmt.Errorf("hopper GEMM activations: %w", err)
	}
	// The weights as experts × n × k, so that a tile past n reads zeros,
	// not the next expert's first rows.
	w, err := EncodeTiled(TiledTensor{DataType: dt, Address: o.W,
		Dims:    []uint64{uint64(o.K), uint64(o.N), uint64(o.Experts)},
		Strides: []uint64{uint64(2 * o.K), uint64(2 * o.K * o.N)}, Box: []uint32{hopperBK, uint32(c.BN), 1},
		Swizzle: Swizzle128B, L2Promotion: L2Promotion256B})
	if err != nil {
		return nil, fmt.Errorf("hopper GEMM weights: %w", err)
	}
	g := &hopperGEMM{fn: fn, cfg: LaunchConfig{Grid: D(uint32(grid)), Block: D(hopperThreads),
		SharedBytes: c.shared(o.Experts), Stream: stream}}
	g.args.TensorMap(&a).TensorMap(&w).Ptr(o.Out).Ptr(o.Counts).Ptr(o.Offsets).Int(o.Experts).Int(o.N).Int(o.K).
		Int(ldo).Int(o.Act)
	return g, g.args.Err()
}

func (g *hopperGEMM) launch() error { return g.fn.Launch(g.cfg, &g.args) }

// Multiprocessors is the device's SM count: the persistent kernels' grid.
func (d *Device) Multiprocessors() (int, error) {
	var v C.int
	// CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT = 16.
	err := check("cuDeviceGetAttribute(MULTIPROCESSOR_COUNT)", C.call_cuDeviceGetAttribute(&v, 16, d.dev))
	return int(v), err
}

// hopperRunner is the backend's runner: both GEMMs prepared once per shape.
type hopperRunner struct {
	gemms [2]*hopperGEMM
}

// setup loads the kernels, rewrites the weights in the kernel's layout
// and prepares both launches. The counts and offsets the kernel reads are
// those the permute step leaves in the index buffer each step.
func (h *hopperRunner) setup(b *Backend) error {
	s := b.s
	act, err := hopperAct(s.Act)
	if err != nil {
		return err
	}
	m, err := b.dev.Load(hopperProgram)
	if err != nil {
		return err
	}
	if err := h.fillWeights(b, m); err != nil {
		return err
	}
	sms, err := b.dev.Multiprocessors()
	if err != nil {
		return err
	}
	idx := DevicePtr(b.bufs[kernels.BufIndex])
	counts, offsets := idx, idx+DevicePtr(4*s.Experts)
	buf := func(id kernels.BufferID) DevicePtr { return DevicePtr(b.bufs[id]) }
	cfg := hopperConfigFor(s)
	for i, o := range hopperStepOperands(s, act) {
		o.A, o.W, o.Out = buf(o.bufs[0]), buf(o.bufs[1]), buf(o.bufs[2])
		o.DType, o.Counts, o.Offsets, o.Rows, o.Experts = s.DType, counts, offsets, s.Rows(), s.Experts
		if h.gemms[i], err = newHopperGEMM(m, cfg, o.hopperOperands, sms, streamOf(b.stream)); err != nil {
			return fmt.Errorf("gemm%d: %w", i+1, err)
		}
	}
	return nil
}

// hopperStep is one of a step's GEMMs: its sizes and strides, and the
// plan's buffers of its a, w and out.
type hopperStep struct {
	hopperOperands
	bufs [3]kernels.BufferID
}

// hopperStepOperands are the step's two GEMMs for s, act its hopperAct
// code. h's rows are gemm1's width apart (2·ffn gated, as the plan sizes
// it): gemm1 writes its output, the activation's ffn columns, at the start
// of each, where the other backends' act kernel leaves them, and gemm2
// reads them from there.
func hopperStepOperands(s kernels.Shape, act int) [2]hopperStep {
	c1 := s.W1Cols()
	return [2]hopperStep{
		{hopperOperands{N: c1, K: s.Hidden, Act: act, LdOut: c1}, [3]kernels.BufferID{kernels.BufPermutedX, kernels.BufW1, kernels.BufH}},
		{hopperOperands{N: s.Hidden, K: s.FFN, Act: hopperActNone, LdA: c1}, [3]kernels.BufferID{kernels.BufH, kernels.BufW2, kernels.BufY}},
	}
}

// fillWeights writes w1 and w2 again, each expert's matrix transposed
// (N × K) with the same values kernels.Fill gives the CPU reference (and
// Backend.fill the other backends); gated, w1's gate and up rows are
// interleaved (hopperW1Row).
func (h *hopperRunner) fillWeights(b *Backend, m *Module) error {
	s := b.s
	f, err := m.Function("hopper_fill_t_" + hopperSuffix(s.DType))
	if err != nil {
		return err
	}
	n := s.Experts * s.Hidden * s.W1Cols()
	cfg := LaunchConfig{Grid: D(min(blocks(n, 256), 1<<16)), Block: D(256), Stream: streamOf(b.stream)}
	gated := uint32(0)
	if s.Act.Gated() {
		gated = 1
	}
	for _, w := range []struct {
		buf    kernels.BufferID
		k, n   int
		tensor uint32
		scale  float32
		gated  uint32
	}{
		{kernels.BufW1, s.Hidden, s.W1Cols(), kernels.TensorW1, kernels.ScaleW1(s.Hidden), gated},
		{kernels.BufW2, s.FFN, s.Hidden, kernels.TensorW2, kernels.ScaleW2(s.FFN), 0},
	} {
		args := new(Args).Ptr(DevicePtr(b.bufs[w.buf])).U64(uint64(s.Experts)).U64(uint64(w.k)).U64(uint64(w.n)).
			U64(s.Seed).U32(w.tensor).F32(w.scale).U32(w.gated)
		if err := f.Launch(cfg, args); err != nil {
			return err
		}
	}
	return check("cuStreamSynchronize(hopper weights)", C.call_cuStreamSynchronize(b.stream))
}

func (h *hopperRunner) gemm(b *Backend, second bool) error {
	g := h.gemms[0]
	if second {
		g = h.gemms[1]
	}
	return g.launch()
}

// fusesActivation: gemm1's epilogue applies the activation, so the step
// launches no activation kernel.
func (h *hopperRunner) fusesActivation() bool { return true }

func (h *hopperRunner) buffers() []kernels.BufferID                   { return nil }
func (h *hopperRunner) expertTimes(*Backend) ([]time.Duration, error) { return nil, nil }

// teardown forgets the launches; the module lives as long as the device.
func (h *hopperRunner) teardown(*Backend) { h.gemms = [2]*hopperGEMM{} }

// timeLaunches runs launch reps times on stream between two events and
// returns the mean time of one run: the microbenchmark's clock (test files
// cannot call C). The caller has entered the device.
func timeLaunches(stream Stream, reps int, launch func() error) (_ time.Duration, err error) {
	if reps < 1 {
		return 0, fmt.Errorf("timing %d runs", reps)
	}
	s := C.moetop_stream(C.uintptr_t(stream))
	var start, stop C.CUevent
	defer func() {
		var r releaser
		r.events([]C.CUevent{start, stop})
		err = errors.Join(err, r.err())
	}()
	if err := check("cuEventCreate", C.call_cuEventCreate(&start, 0)); err != nil {
		return 0, err
	}
	if err := check("cuEventCreate", C.call_cuEventCreate(&stop, 0)); err != nil {
		return 0, err
	}
	if err := check("cuEventRecord", C.call_cuEventRecord(start, s)); err != nil {
		return 0, err
	}
	for range reps {
		if err := launch(); err != nil {
			return 0, err
		}
	}
	if err := check("cuEventRecord", C.call_cuEventRecord(stop, s)); err != nil {
		return 0, err
	}
	if err := check("cuEventSynchronize", C.call_cuEventSynchronize(stop)); err != nil {
		return 0, err
	}
	var ms C.float
	if err := check("cuEventElapsedTime", C.call_cuEventElapsedTime(&ms, start, stop)); err != nil {
		return 0, err
	}
	return time.Duration(float64(ms) * 1e6 / float64(reps)), nil
}
