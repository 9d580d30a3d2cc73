// Package cuda runs the MoE layer on an NVIDIA GPU: cuBLAS for the GEMMs
// and NVRTC-compiled kernels for the rest. The CUDA driver, cuBLAS and NVRTC
// are opened at run time with dlopen, so nothing CUDA is needed to build,
// and without a GPU every entry point returns kernels.ErrNoGPU.
package cuda

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "calls.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/moetop/moetop/kernels"
)

// Libraries says which libraries were opened, for the header.
type Libraries struct {
	Driver, Runtime, CUBLAS, NVRTC string // versions
	Paths                          []string
}

var (
	loadOnce sync.Once
	loadErr  error
	libs     Libraries
)

var libNames = []string{"libcuda.so.1", "libcudart", "libcublasLt", "libcublas", "libnvrtc"}

// Load opens the libraries once per process; dir, when not empty, is tried
// before the loader's search path (--cuda-lib-dir).
func Load(dir string) (Libraries, error) {
	loadOnce.Do(func() { loadErr = load(dir) })
	return libs, loadErr
}

func load(dir string) error {
	cdir := C.CString(dir)
	defer C.free(unsafe.Pointer(cdir))
	for which, name := range libNames {
		var opened, missing *C.char
		if msg := C.moetop_load(C.int(which), cdir, &opened, &missing); msg != nil {
			if missing != nil {
				return fmt.Errorf("%w: %s: %s %s (library too old?)", kernels.ErrNoGPU, C.GoString(opened), C.GoString(msg), C.GoString(missing))
			}
			return fmt.Errorf("%w: %s: %s (install the NVIDIA driver and CUDA 12/13 libraries, or pass --cuda-lib-dir)", kernels.ErrNoGPU, name, C.GoString(msg))
		}
		libs.Paths = append(libs.Paths, C.GoString(opened))
	}
	var v C.int
	if r := C.call_cuDriverGetVersion(&v); r == 0 {
		libs.Driver = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	if C.call_cudaRuntimeGetVersion(&v) == 0 {
		libs.Runtime = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	var major, minor C.int
	if C.call_nvrtcVersion(&major, &minor) == 0 {
		libs.NVRTC = fmt.Sprintf("%d.%d", major, minor)
	}
	if C.cublas.cublasGetProperty != nil {
		var maj, min, patch C.int
		if C.call_cublasGetProperty(0, &maj) == 0 && C.call_cublasGetProperty(1, &min) == 0 && C.call_cublasGetProperty(2, &patch) == 0 {
			libs.CUBLAS = fmt.Sprintf("%d.%d.%d", maj, min, patch)
		}
	}
	if r := C.call_cuInit(0); r != 0 {
		return fmt.Errorf("%w: cuInit: %v", kernels.ErrNoGPU, cuError(r))
	}
	return nil
}

// HasGroupedGEMM says whether cuBLAS has cublasGemmGroupedBatchedEx (12.5+).
func HasGroupedGEMM() bool { return C.cublas.cublasGemmGroupedBatchedEx != nil }

// cuResult is a CUDA driver error code.
type cuResult int

const cudaErrorOutOfMemory = 2

func cuError(r C.CUresult) error { return cuResult(r) }

func (r cuResult) Error() string {
	var name, desc *C.char
	C.call_cuGetErrorName(C.CUresult(r), &name)
	C.call_cuGetErrorString(C.CUresult(r), &desc)
	if name == nil {
		return fmt.Sprintf("CUDA error %d", int(r))
	}
	return fmt.Sprintf("%s (%s)", C.GoString(name), C.GoString(desc))
}

// Is makes an out-of-memory result match kernels.ErrOutOfMemory.
func (r cuResult) Is(target error) bool {
	return target == kernels.ErrOutOfMemory && r == cudaErrorOutOfMemory
}

// check turns a driver result into an error naming the call.
func check(call string, r C.CUresult) error {
	if r == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", call, cuError(r))
}

// cublasStatus is a cuBLAS status code.
type cublasStatus int

const cublasStatusAllocFailed = 3

func (s cublasStatus) Error() string {
	return fmt.Sprintf("%s (%d)", C.GoString(C.call_cublasGetStatusString(C.cublasStatus_t(s))), int(s))
}

func (s cublasStatus) Is(target error) bool {
	return target == kernels.ErrOutOfMemory && s == cublasStatusAllocFailed
}

func checkBLAS(call string, s C.cublasStatus_t) error {
	if s == 0 {
		return nil
	}
	return fmt.Errorf("%s: %w", call, cublasStatus(s))
}

func checkNVRTC(call string, r C.nvrtcResult) error {
	if r == 0 {
		return nil
	}
	return fmt.Errorf("%s: %s (%d)", call, C.GoString(C.call_nvrtcGetErrorString(r)), int(r))
}
