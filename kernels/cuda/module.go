package cuda

/*
#include <stdlib.h>
#include "calls.h"
*/
import "C"

import (
	_ "embed"
	"fmt"
	"math"
	"strings"
	"sync"
	"unsafe"
)

//go:embed layer.cu
var layerSource string

// module is layer.cu compiled for one device and loaded into its context.
type module struct {
	mod   C.CUmodule
	funcs map[string]C.CUfunction
}

var (
	modMu   sync.Mutex
	modules = map[int]*module{} // by device ordinal: compiled once per process
)

// compile turns layer.cu into a CUBIN for sm_XY with NVRTC. --fmad=false
// keeps the input generator bit-identical to kernels.Fill on the host.
func compile(major, minor int) ([]byte, error) {
	src := C.CString(layerSource)
	defer C.free(unsafe.Pointer(src))
	name := C.CString("layer.cu")
	defer C.free(unsafe.Pointer(name))
	var prog C.nvrtcProgram
	if err := checkNVRTC("nvrtcCreateProgram", C.call_nvrtcCreateProgram(&prog, src, name, 0, nil, nil)); err != nil {
		return nil, err
	}
	defer C.call_nvrtcDestroyProgram(&prog)
	opts := []string{fmt.Sprintf("--gpu-architecture=sm_%d%d", major, minor), "--fmad=false", "-default-device"}
	copts := make([]*C.char, len(opts))
	for i, o := range opts {
		copts[i] = C.CString(o)
		defer C.free(unsafe.Pointer(copts[i]))
	}
	cerr := checkNVRTC("nvrtcCompileProgram", C.call_nvrtcCompileProgram(prog, C.int(len(opts)), (**C.char)(unsafe.Pointer(&copts[0]))))
	if cerr != nil {
		var n C.size_t
		C.call_nvrtcGetProgramLogSize(prog, &n)
		log := make([]byte, int(n)+1)
		C.call_nvrtcGetProgramLog(prog, (*C.char)(unsafe.Pointer(&log[0])))
		return nil, fmt.Errorf("%w: %s", cerr, strings.TrimSpace(strings.TrimRight(string(log), "\x00")))
	}
	var n C.size_t
	if err := checkNVRTC("nvrtcGetCUBINSize", C.call_nvrtcGetCUBINSize(prog, &n)); err != nil {
		return nil, err
	}
	cubin := make([]byte, int(n))
	if err := checkNVRTC("nvrtcGetCUBIN", C.call_nvrtcGetCUBIN(prog, (*C.char)(unsafe.Pointer(&cubin[0])))); err != nil {
		return nil, err
	}
	return cubin, nil
}

// loadModule compiles and loads layer.cu for d, once per process. The
// caller has entered d.
func loadModule(d *Device) (*module, error) {
	modMu.Lock()
	defer modMu.Unlock()
	if m, ok := modules[d.Ordinal]; ok {
		return m, nil
	}
	cubin, err := compile(d.Major, d.Minor)
	if err != nil {
		return nil, fmt.Errorf("compiling layer kernels for sm_%d%d: %w", d.Major, d.Minor, err)
	}
	cc := C.CBytes(cubin)
	defer C.free(cc)
	m := &module{funcs: map[string]C.CUfunction{}}
	if err := check("cuModuleLoadData", C.call_cuModuleLoadData(&m.mod, cc)); err != nil {
		return nil, err
	}
	for _, n := range []string{"route", "histogram", "scan", "scatter"} {
		if err := m.get(n); err != nil {
			return nil, err
		}
	}
	for _, s := range []string{"bf16", "fp16", "fp32"} {
		for _, n := range []string{"fill_", "gather_", "act_", "combine_"} {
			if err := m.get(n + s); err != nil {
				return nil, err
			}
		}
	}
	modules[d.Ordinal] = m
	return m, nil
}

func (m *module) get(name string) error {
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	var f C.CUfunction
	if err := check("cuModuleGetFunction("+name+")", C.call_cuModuleGetFunction(&f, m.mod, cn)); err != nil {
		return err
	}
	m.funcs[name] = f
	return nil
}

// launch runs kernel name with a 1-D grid; args are 8-byte slots (see
// argPtr, argInt, argU64, argF32). Launch errors are checked here;
// errors inside the kernel surface at the next synchronisation.
func (m *module) launch(name string, grid, block uint32, stream C.CUstream, args ...uint64) error {
	f, ok := m.funcs[name]
	if !ok {
		return fmt.Errorf("cuLaunchKernel: no kernel %q", name)
	}
	if grid == 0 {
		return nil
	}
	var p *C.uint64_t
	if len(args) > 0 {
		p = (*C.uint64_t)(unsafe.Pointer(&args[0]))
	}
	return check("cuLaunchKernel("+name+")", C.moetop_launch(f, C.uint(grid), 1, C.uint(block), 0, stream, C.int(len(args)), p))
}

func argPtr(p ptr) uint64      { return uint64(p) }
func argInt(v int) uint64      { return uint64(uint32(int32(v))) }
func argU64(v uint64) uint64   { return v }
func argF32(v float32) uint64  { return uint64(math.Float32bits(v)) }
func blocks(n, per int) uint32 { return uint32((n + per - 1) / per) }
