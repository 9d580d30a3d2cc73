// Package cuda runs the MoE layer on an NVIDIA GPU: cuBLAS for the GEMMs
// and NVRTC-compiled kernels for the rest. The CUDA driver, cuBLAS and NVRTC
// are opened at run time with dlopen, so nothing CUDA is needed to build,
// and without a GPU every entry point returns kernels.ErrNoGPU.
//
// Hand-written kernels go through one path: a Program (CUDA C++ source and
// its own NVRTC options) is built by a Builder, which caches CUBINs on disk,
// and loaded with Device.Load into a Module that lives until Device.Close;
// Function.Launch takes any parameters (Args: scalars, pointers, structs,
// a TensorMap from EncodeTiled), 3-D shapes, dynamic shared memory and
// clusters. testkernels.cu has a working example of each Hopper feature.
// NCCL, for expert parallelism, is opened apart with LoadNCCL.
package cuda

/*
#cgo LDFLAGS: -ldl
#include <stdlib.h>
#include "calls.h"
*/
import "C"

import (
	"errors"
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

var libNames = [...]string{"libcuda.so.1", "libcudart", "libcublasLt", "libcublas", "libnvrtc", "libnccl.so.2"}

// The C loader keeps the path it opened and its message in static buffers,
// so one library is opened at a time.
var dlMu sync.Mutex

// libLoad is one library opened once per process: the first caller's dir
// counts, later callers get the same result.
type libLoad struct {
	once sync.Once
	path string
	err  error
}

var opened [len(libNames)]libLoad

// openLib opens library which (a LIB_* of dl.h) once and resolves its
// symbols; the error names the library and, from the loader, why.
func openLib(which int, dir string) (string, error) {
	l := &opened[which]
	l.once.Do(func() {
		dlMu.Lock()
		defer dlMu.Unlock()
		cdir := C.CString(dir)
		defer C.free(unsafe.Pointer(cdir))
		var path, missing *C.char
		if msg := C.moetop_load(C.int(which), cdir, &path, &missing); msg != nil {
			if missing != nil {
				l.err = fmt.Errorf("%s: %s %s (library too old?)", C.GoString(path), C.GoString(msg), C.GoString(missing))
			} else {
				l.err = fmt.Errorf("%s: %s", libNames[which], C.GoString(msg))
			}
			return
		}
		l.path = C.GoString(path)
	})
	return l.path, l.err
}

// Load opens the libraries once per process; dir, when not empty, is tried
// before the loader's search path (--cuda-lib-dir).
func Load(dir string) (Libraries, error) {
	loadOnce.Do(func() { loadErr = load(dir) })
	return libs, loadErr
}

func load(dir string) error {
	for which := C.LIB_CUDA; which <= C.LIB_NVRTC; which++ {
		path, err := openLib(int(which), dir)
		if err != nil {
			return fmt.Errorf("%w: %v (install the NVIDIA driver and CUDA 12/13 libraries, or pass --cuda-lib-dir)", kernels.ErrNoGPU, err)
		}
		libs.Paths = append(libs.Paths, path)
	}
	var v C.int
	if r := C.call_cuDriverGetVersion(&v); r == 0 {
		libs.Driver = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	if C.call_cudaRuntimeGetVersion(&v) == 0 {
		libs.Runtime = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	libs.NVRTC, _ = NVRTCVersion()
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

// LoadNVRTC opens NVRTC alone, which compiles without a GPU or a driver;
// Load opens it with the rest. Without it the error matches
// kernels.ErrNoGPU.
func LoadNVRTC(dir string) error {
	if _, err := openLib(C.LIB_NVRTC, dir); err != nil {
		return fmt.Errorf("%w: %v", kernels.ErrNoGPU, err)
	}
	return nil
}

// NVRTCVersion is NVRTC's "major.minor", opening it if need be.
func NVRTCVersion() (string, error) {
	if err := LoadNVRTC(""); err != nil {
		return "", err
	}
	var major, minor C.int
	if err := checkNVRTC("nvrtcVersion", C.call_nvrtcVersion(&major, &minor)); err != nil {
		return "", err
	}
	return fmt.Sprintf("%d.%d", major, minor), nil
}

// HasGroupedGEMM says whether cuBLAS has cublasGemmGroupedBatchedEx (12.5+).
func HasGroupedGEMM() bool { return C.cublas.cublasGemmGroupedBatchedEx != nil }

// cuResult is a CUDA driver error code.
type cuResult int

// needSymbol reports an optional symbol the loaded library lacks.
func needSymbol(ok bool, name, since string) error {
	if ok {
		return nil
	}
	return fmt.Errorf("%s: %w (needs %s or newer)", name, ErrMissingSymbol, since)
}

// ErrMissingSymbol is an optional function the loaded library does not
// have (an older driver or library than the feature needs).
var ErrMissingSymbol = errors.New("not in this library")

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
