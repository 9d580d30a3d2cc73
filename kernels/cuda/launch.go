package cuda

/*
#cgo noescape moetop_launch_ex
#cgo nocallback moetop_launch_ex
#include "calls.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"math"
	"reflect"
	"sync"
	"sync/atomic"
	"unsafe"
)

// DevicePtr is a device address (CUdeviceptr).
type DevicePtr uint64

// Stream is a CUDA stream handle as an integer; 0 is the context's legacy
// default stream. An integer, not a pointer, so that it can be copied into
// C memory and across packages freely.
type Stream uintptr

// streamOf turns a stream handle of this package into a Stream.
func streamOf(s C.CUstream) Stream { return Stream(uintptr(unsafe.Pointer(s))) }

// Dim3 is a grid, block or cluster shape.
type Dim3 struct{ X, Y, Z uint32 }

// D makes a Dim3 from one to three sizes; the ones left out are 1:
// D(n) is n×1×1, D(x, y) is x×y×1.
func D(x uint32, yz ...uint32) Dim3 {
	d := Dim3{x, 1, 1}
	if len(yz) > 0 {
		d.Y = yz[0]
	}
	if len(yz) > 1 {
		d.Z = yz[1]
	}
	return d
}

func (d Dim3) empty() bool    { return d.X == 0 || d.Y == 0 || d.Z == 0 }
func (d Dim3) count() uint64  { return uint64(d.X) * uint64(d.Y) * uint64(d.Z) }
func (d Dim3) String() string { return fmt.Sprintf("%d×%d×%d", d.X, d.Y, d.Z) }
func (d Dim3) c() [3]C.uint   { return [3]C.uint{C.uint(d.X), C.uint(d.Y), C.uint(d.Z)} }

// LaunchConfig is how a kernel runs.
type LaunchConfig struct {
	// Grid is blocks per grid; a grid with a zero dimension has no work,
	// and Launch returns at once.
	Grid Dim3
	// Block is threads per block; every dimension at least 1.
	Block Dim3
	// SharedBytes is dynamic shared memory per block. Above 48 KiB the
	// kernel is first allowed that much with cuFuncSetAttribute.
	SharedBytes int
	// Cluster is blocks per thread-block cluster (sm_90+), through
	// cuLaunchKernelEx; the zero value launches without clusters. Each
	// dimension must divide the grid's.
	Cluster Dim3
	Stream  Stream
}

// defaultSharedLimit is what a kernel may take without opting in.
const defaultSharedLimit = 48 << 10

// CUfunction_attribute and CUdevice_attribute values used here.
const (
	cuFuncAttrMaxDynamicShared   = 8  // CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
	cuFuncAttrSharedSizeBytes    = 1  // CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES (static)
	cuFuncAttrNumRegs            = 4  // CU_FUNC_ATTRIBUTE_NUM_REGS
	cuFuncAttrNonPortableCluster = 14 // CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED
	cuDevAttrSharedPerBlockOptin = 97 // CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN
	cuDevAttrClusterLaunch       = 120
	cudaErrorInvalidValue        = 1
)

// Args is a kernel's parameter list, built in order with each value's C
// size and alignment: scalars, device pointers, a 128-byte CUtensorMap,
// any plain struct. The zero value is an empty list; the methods chain.
// At launch the bytes are copied into C memory, so Args holds no pointer
// the driver keeps (cgo's rule for cuLaunchKernel's parameter array).
type Args struct {
	buf   []byte
	offs  []uint32
	sizes []uint32
	// loose marks 8-byte slots that may hold a narrower parameter (the
	// layer kernels' convention); they are not checked against the
	// kernel's parameters.
	loose bool
	err   error
}

// Reset empties the list, keeping its memory for the next launch.
func (a *Args) Reset() *Args {
	a.buf, a.offs, a.sizes, a.loose, a.err = a.buf[:0], a.offs[:0], a.sizes[:0], false, nil
	return a
}

// Len is the number of parameters.
func (a *Args) Len() int { return len(a.offs) }

// Err is the first error met while building (a value that cannot be a
// kernel parameter); Launch returns it too.
func (a *Args) Err() error { return a.err }

// add appends size bytes aligned to align (a power of two up to 64) and
// returns them to be filled.
func (a *Args) add(size, align int) []byte {
	off := (len(a.buf) + align - 1) &^ (align - 1)
	for len(a.buf) < off {
		a.buf = append(a.buf, 0)
	}
	a.offs = append(a.offs, uint32(off))
	a.sizes = append(a.sizes, uint32(size))
	a.buf = append(a.buf, make([]byte, size)...)
	return a.buf[off : off+size]
}

func (a *Args) put(size int, bits uint64) *Args {
	b := a.add(size, size)
	for i := range b {
		b[i] = byte(bits >> (8 * i))
	}
	return a
}

// Ptr appends a device address (any T* parameter).
func (a *Args) Ptr(p DevicePtr) *Args { return a.put(8, uint64(p)) }

// I32 appends an int parameter.
func (a *Args) I32(v int32) *Args { return a.put(4, uint64(uint32(v))) }

// Int appends an int parameter from a Go int, refusing one out of range.
func (a *Args) Int(v int) *Args {
	if v < math.MinInt32 || v > math.MaxInt32 {
		a.fail(fmt.Errorf("argument %d: %d does not fit a 32-bit int", len(a.offs), v))
	}
	return a.I32(int32(v))
}

// U32 appends an unsigned int parameter.
func (a *Args) U32(v uint32) *Args { return a.put(4, uint64(v)) }

// I64 appends a long long parameter.
func (a *Args) I64(v int64) *Args { return a.put(8, uint64(v)) }

// U64 appends an unsigned long long (or size_t) parameter.
func (a *Args) U64(v uint64) *Args { return a.put(8, v) }

// F32 appends a float parameter.
func (a *Args) F32(v float32) *Args { return a.put(4, uint64(math.Float32bits(v))) }

// F64 appends a double parameter.
func (a *Args) F64(v float64) *Args { return a.put(8, math.Float64bits(v)) }

// U8 appends an unsigned char parameter.
func (a *Args) U8(v uint8) *Args { return a.put(1, uint64(v)) }

// U16 appends an unsigned short parameter (a bf16 or half by value too).
func (a *Args) U16(v uint16) *Args { return a.put(2, uint64(v)) }

// TensorMap appends a CUtensorMap by value: 128 bytes, 64-byte aligned, for
// a `const __grid_constant__ CUtensorMap` parameter.
func (a *Args) TensorMap(m *TensorMap) *Args {
	copy(a.add(len(m), 64), m[:])
	return a
}

// Bytes appends a parameter given as its bytes in the kernel's layout,
// with the C alignment of its type (a power of two up to 64).
func (a *Args) Bytes(b []byte, align int) *Args {
	if align < 1 || align > 64 || align&(align-1) != 0 {
		a.fail(fmt.Errorf("argument %d: alignment %d is not a power of two up to 64", len(a.offs), align))
		align = 1
	}
	copy(a.add(len(b), align), b)
	return a
}

// Value appends v by value with Go's layout of T, which is C's for
// pointer-free structs of fixed-size numbers on the 64-bit targets we
// build for (a Go struct{ I int32; J int64 } is a C struct { int i; long
// long j; }). A T that holds a Go pointer, slice, string, map or the
// like cannot be a kernel parameter and is refused.
func Value[T any](a *Args, v T) *Args {
	t := reflect.TypeFor[T]()
	if err := plainType(t); err != nil {
		a.fail(fmt.Errorf("argument %d (%v): %w", len(a.offs), t, err))
		return a
	}
	size := int(t.Size())
	if size == 0 {
		// An empty C++ struct is one byte; a Go one is none.
		a.fail(fmt.Errorf("argument %d (%v): an empty type has no C equivalent", len(a.offs), t))
		return a
	}
	copy(a.add(size, t.Align()), unsafe.Slice((*byte)(unsafe.Pointer(&v)), size))
	return a
}

// plainType accepts fixed-size numbers, bools, arrays and structs of them.
func plainType(t reflect.Type) error {
	switch t.Kind() {
	case reflect.Bool, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64, reflect.Float32, reflect.Float64:
		return nil
	case reflect.Array:
		return plainType(t.Elem())
	case reflect.Struct:
		for i := 0; i < t.NumField(); i++ {
			if err := plainType(t.Field(i).Type); err != nil {
				return err
			}
		}
		return nil
	}
	return fmt.Errorf("a %v is not a plain C value (pointers, slices, strings, int, uintptr: pass a DevicePtr or a sized integer)", t.Kind())
}

func (a *Args) fail(err error) {
	if a.err == nil {
		a.err = err
	}
}

// ErrLaunch is a launch refused before it reached the driver: a wrong
// number or size of arguments, a bad shape.
var ErrLaunch = errors.New("bad launch")

// Function is a kernel of a loaded module.
type Function struct {
	mod  *Module
	name string
	f    C.CUfunction

	// sharedOptIn is the dynamic shared memory cuFuncSetAttribute has
	// allowed so far; mu serialises raising it.
	sharedOptIn atomic.Int64
	mu          sync.Mutex

	paramsOnce sync.Once
	params     []uint32 // parameter sizes from cuFuncGetParamInfo; nil: unknown
	paramsErr  error
}

// Name is the kernel's name.
func (f *Function) Name() string { return f.name }

// Attribute reads a CUfunction_attribute (registers, static shared memory…).
func (f *Function) Attribute(attr int) (int, error) {
	var v C.int
	err := check(fmt.Sprintf("cuFuncGetAttribute(%s, %d)", f.name, attr), C.call_cuFuncGetAttribute(&v, C.int(attr), f.f))
	return int(v), err
}

// SetAttribute sets a CUfunction_attribute.
func (f *Function) SetAttribute(attr, value int) error {
	return check(fmt.Sprintf("cuFuncSetAttribute(%s, %d, %d)", f.name, attr, value), C.call_cuFuncSetAttribute(f.f, C.int(attr), C.int(value)))
}

// Launch runs the kernel. The caller has the module's context current (it
// entered the device); errors inside the kernel surface at the next
// synchronisation, launch errors here, naming the call and the kernel.
func (f *Function) Launch(cfg LaunchConfig, args *Args) error {
	if args == nil {
		args = &Args{}
	}
	if args.err != nil {
		return fmt.Errorf("launching %s: %w: %w", f.name, ErrLaunch, args.err)
	}
	if cfg.Grid.empty() {
		return nil
	}
	if err := f.mod.current(); err != nil {
		return fmt.Errorf("launching %s: %w", f.name, err)
	}
	if err := f.validate(cfg, args); err != nil {
		return fmt.Errorf("launching %s: %w", f.name, err)
	}
	if err := f.allowShared(cfg.SharedBytes); err != nil {
		return err
	}
	call := "cuLaunchKernel"
	ccfg := C.moetop_launch_cfg{grid: cfg.Grid.c(), block: cfg.Block.c(), shmem: C.uint(cfg.SharedBytes), stream: C.uintptr_t(cfg.Stream)}
	if cfg.Cluster != (Dim3{}) {
		call = "cuLaunchKernelEx"
		if err := needSymbol(C.cu.cuLaunchKernelEx != nil, call, "a CUDA 11.8 driver"); err != nil {
			return fmt.Errorf("launching %s as clusters of %v: %w", f.name, cfg.Cluster, err)
		}
		ccfg.cluster = cfg.Cluster.c()
		if cfg.Cluster.count() > 8 {
			// More than 8 blocks per cluster is "non-portable": the
			// kernel must opt in (H100 allows 16).
			if err := f.SetAttribute(cuFuncAttrNonPortableCluster, 1); err != nil {
				return err
			}
		}
	}
	var offs *C.uint32_t
	var blob unsafe.Pointer
	if len(args.offs) > 0 {
		offs = (*C.uint32_t)(unsafe.Pointer(&args.offs[0]))
		blob = unsafe.Pointer(&args.buf[0]) // every argument is at least a byte
	}
	r := C.moetop_launch_ex(f.f, &ccfg, C.int(len(args.offs)), offs, blob, C.size_t(len(args.buf)))
	if r == C.MOETOP_NO_HOST_MEMORY {
		return fmt.Errorf("%s(%s): no host memory for %d bytes of arguments", call, f.name, len(args.buf))
	}
	return check(fmt.Sprintf("%s(%s, grid %v, block %v, %d B shared)", call, f.name, cfg.Grid, cfg.Block, cfg.SharedBytes), r)
}

// validate checks the shape, and the arguments against the kernel's own
// parameter list where the driver can tell it (CUDA 12.4+): a wrong
// argument otherwise reads garbage or faults inside the kernel.
func (f *Function) validate(cfg LaunchConfig, args *Args) error {
	if cfg.Block.empty() {
		return fmt.Errorf("%w: block %v has a zero dimension", ErrLaunch, cfg.Block)
	}
	if cfg.SharedBytes < 0 {
		return fmt.Errorf("%w: %d bytes of shared memory", ErrLaunch, cfg.SharedBytes)
	}
	if c := cfg.Cluster; c != (Dim3{}) {
		if c.empty() {
			return fmt.Errorf("%w: cluster %v has a zero dimension", ErrLaunch, c)
		}
		if cfg.Grid.X%c.X != 0 || cfg.Grid.Y%c.Y != 0 || cfg.Grid.Z%c.Z != 0 {
			return fmt.Errorf("%w: cluster %v does not divide grid %v", ErrLaunch, c, cfg.Grid)
		}
	}
	if args.loose {
		return nil
	}
	sizes, err := f.paramSizes()
	if err != nil || sizes == nil {
		return err
	}
	if len(sizes) != len(args.sizes) {
		return fmt.Errorf("%w: %d arguments for %d parameters", ErrLaunch, len(args.sizes), len(sizes))
	}
	for i, want := range sizes {
		if got := args.sizes[i]; got != want {
			return fmt.Errorf("%w: argument %d is %d bytes, the parameter %d", ErrLaunch, i, got, want)
		}
	}
	return nil
}

// paramSizes asks the driver once for the kernel's parameter sizes; nil
// when this driver cannot say.
func (f *Function) paramSizes() ([]uint32, error) {
	f.paramsOnce.Do(func() {
		if C.cu.cuFuncGetParamInfo == nil {
			return
		}
		sizes := []uint32{}
		for i := 0; ; i++ {
			var off, size C.size_t
			r := C.call_cuFuncGetParamInfo(f.f, C.size_t(i), &off, &size)
			if r == cudaErrorInvalidValue {
				break // past the last parameter
			}
			if r != 0 {
				f.paramsErr = check(fmt.Sprintf("cuFuncGetParamInfo(%s, %d)", f.name, i), r)
				return
			}
			sizes = append(sizes, uint32(size))
		}
		f.params = sizes
	})
	return f.params, f.paramsErr
}

// allowShared raises the kernel's dynamic shared memory limit to n bytes
// when n is over the 48 KiB every kernel gets.
func (f *Function) allowShared(n int) error {
	if n <= defaultSharedLimit || int64(n) <= f.sharedOptIn.Load() {
		return nil
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if int64(n) <= f.sharedOptIn.Load() {
		return nil
	}
	if err := f.SetAttribute(cuFuncAttrMaxDynamicShared, n); err != nil {
		if most, ok := f.mod.dev.sharedOptInLimit(); ok {
			static, _ := f.Attribute(cuFuncAttrSharedSizeBytes)
			return fmt.Errorf("%w: %s asks for %d bytes of dynamic shared memory; with its %d static bytes the device allows %d per block", err, f.name, n, static, most)
		}
		return err
	}
	f.sharedOptIn.Store(int64(n))
	return nil
}

// sharedOptInLimit is the most shared memory a block may opt in to.
func (d *Device) sharedOptInLimit() (int, bool) {
	var v C.int
	if C.call_cuDeviceGetAttribute(&v, cuDevAttrSharedPerBlockOptin, d.dev) != 0 {
		return 0, false
	}
	return int(v), true
}

// SupportsClusters says whether the device launches thread-block clusters.
func (d *Device) SupportsClusters() bool {
	var v C.int
	return C.call_cuDeviceGetAttribute(&v, cuDevAttrClusterLaunch, d.dev) == 0 && v != 0
}

// SharedOptInLimit is the most dynamic plus static shared memory a block
// may use once it opts in (227 KiB on an H100).
func (d *Device) SharedOptInLimit() (int, error) {
	var v C.int
	err := check("cuDeviceGetAttribute(MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)", C.call_cuDeviceGetAttribute(&v, cuDevAttrSharedPerBlockOptin, d.dev))
	return int(v), err
}
