package cuda

/*
#include "calls.h"
*/
import "C"

import (
	_ "embed"
	"fmt"

	"github.com/moetop/moetop/kernels"
)

// Our own grouped GEMM (hopper.cu), wgmma fed by TMA, one persistent
// launch per GEMM over every expert, the activation fused into its
// epilogue. It runs on Hopper only (sm_90a instructions), bf16 and fp16.

//go:embed hopper.cu
var hopperSource string

// hopperProgram is the grouped GEMM and its weight generator; wgmma and
// setmaxnreg need sm_90a.
var hopperProgram = Program{
	Name:         "hopper.cu",
	What:         "the Hopper grouped GEMM",
	Source:       hopperSource,
	ArchSpecific: true,
	Kernels:      hopperKernels(),
}

// hopperConfig is one tile configuration of the kernel: 128 rows (two
// wgmma m64 halves for the one consumer warpgroup) × BN columns, a ring of
// Stages k-blocks of 64.
type hopperConfig struct{ BN, Stages int }

const (
	hopperBM, hopperBK = 128, 64
	hopperThreads      = 256 // a producer and a consumer warpgroup
)

// hopperDefault is what the backend runs; hopperConfigs are every
// configuration compiled, which the microbenchmark compares (bf16 only:
// fp16 has the default, to be correct rather than fast).
var (
	hopperDefault = hopperConfig{BN: 128, Stages: 4}
	hopperConfigs = []hopperConfig{hopperDefault, {BN: 128, Stages: 5}, {BN: 64, Stages: 6}}
)

// kernel is the configuration's kernel name for d, as hopper.cu's
// GEMM_INSTANCE lines define it.
func (c hopperConfig) kernel(d kernels.DType) string {
	return fmt.Sprintf("hopper_gemm_%s_n%d_s%d", hopperSuffix(d), c.BN, c.Stages)
}

func (c hopperConfig) String() string {
	return fmt.Sprintf("%dx%d, %d stages", hopperBM, c.BN, c.Stages)
}

// shared is the dynamic shared memory a launch over experts needs, as the
// kernel lays it out: slack to align the ring to 1024 bytes, the ring, a
// full and an empty barrier per slot, the schedule's prefix sums.
func (c hopperConfig) shared(experts int) int {
	return 1024 + c.Stages*(hopperBM*hopperBK*2+c.BN*hopperBK*2) + 16*c.Stages + 4*(experts+1)
}

func hopperSuffix(d kernels.DType) string {
	if d == kernels.FP16 {
		return "fp16"
	}
	return "bf16"
}

func hopperKernels() []string {
	names := []string{hopperDefault.kernel(kernels.FP16)}
	for _, c := range hopperConfigs {
		names = append(names, c.kernel(kernels.BF16))
	}
	return append(names, "hopper_fill_t_bf16", "hopper_fill_t_fp16")
}

// Activation codes of hopper.cu (ACT_NONE, ACT_GELU, ACT_SILU).
const (
	hopperActNone = 0
	hopperActGELU = 1
	hopperActSiLU = 2
)

// hopperAct is the kernel's code for the activation fused into gemm1.
func hopperAct(a kernels.Activation) (int, error) {
	switch a {
	case kernels.GELU:
		return hopperActGELU, nil
	case kernels.SiLU:
		return hopperActSiLU, nil
	}
	return 0, fmt.Errorf("the %v activation is not fused into the kernel yet", a)
}

// hopperGEMM is one prepared launch of the grouped GEMM:
// out[rows × n] = act(a[rows × k] · w[e]ᵀ) per expert e over its rows,
// a and out row-major with the experts' rows one after the other, w the
// experts' n × k matrices one after the other, counts and offsets per
// expert on the device (int32). Its arguments are built once, so a step
// only launches.
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
	N, K            int
	Act             int // hopperAct*
}

// newHopperGEMM encodes the two tensor maps and the arguments for a launch
// of configuration c over grid blocks (one per SM) on stream.
func newHopperGEMM(m *Module, c hopperConfig, o hopperOperands, grid int, stream Stream) (*hopperGEMM, error) {
	if o.Rows < 1 || o.Experts < 1 || o.N < 1 || o.K < 1 || o.N%8 != 0 || o.K%8 != 0 {
		return nil, fmt.Errorf("hopper GEMM: %d rows, %d experts, n %d, k %d: want at least one of each, n and k multiples of 8",
			o.Rows, o.Experts, o.N, o.K)
	}
	fn, err := m.Function(c.kernel(o.DType))
	if err != nil {
		return nil, err
	}
	dt := TensorBFloat16
	if o.DType == kernels.FP16 {
		dt = TensorFloat16
	}
	// The activations: rows × k, a box of 128 rows × 64 columns (128
	// bytes, the swizzle's width). Rows past the end arrive as zeros.
	a, err := EncodeTiled(TiledTensor{DataType: dt, Address: o.A, Dims: []uint64{uint64(o.K), uint64(o.Rows)},
		Strides: []uint64{uint64(2 * o.K)}, Box: []uint32{hopperBK, hopperBM}, Swizzle: Swizzle128B,
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
	g.args.TensorMap(&a).TensorMap(&w).Ptr(o.Out).Ptr(o.Counts).Ptr(o.Offsets).Int(o.Experts).Int(o.N).Int(o.K).Int(o.Act)
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
