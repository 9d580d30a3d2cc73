package cuda

/*
#include <stdlib.h>
#include "calls.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"strings"
	"unsafe"
)

// Program is CUDA C++ source that NVRTC compiles, at run time, for the
// device it is loaded on. No toolkit headers are needed when the source
// declares what it uses (extern "C" kernels, its own bf16 conversions,
// inline PTX), which is how every program here is written.
type Program struct {
	// Name is the source's file name, for NVRTC's messages.
	Name string
	// What the first-compile notice says is being compiled ("layer
	// kernels").
	What   string
	Source string
	// Options are NVRTC options of this program besides the architecture,
	// e.g. "--fmad=false" where results must match the host bit for bit.
	Options []string
	// ArchSpecific compiles for sm_XYa instead of sm_XY: the instructions
	// of one architecture that later ones lack (wgmma, setmaxnreg on
	// sm_90a). The CUBIN then runs only on that exact architecture.
	ArchSpecific bool
	// Kernels are looked up when the module loads, so that a misspelt
	// name fails there rather than at the first launch.
	Kernels []string
}

// ErrArch is a program that cannot be built for the device.
var ErrArch = errors.New("unsupported architecture")

// Arch is the --gpu-architecture value for a device of compute capability
// major.minor: a real architecture, so that NVRTC produces a CUBIN.
func (p Program) Arch(major, minor int) (string, error) {
	if major <= 0 || minor < 0 || minor > 9 {
		return "", fmt.Errorf("%w: compute capability %d.%d", ErrArch, major, minor)
	}
	arch := fmt.Sprintf("sm_%d%d", major, minor)
	if p.ArchSpecific {
		if major < 9 {
			return "", fmt.Errorf("%w: %s needs sm_90a or later; this device is %s", ErrArch, p.Name, arch)
		}
		arch += "a"
	}
	return arch, nil
}

// options is the full NVRTC option list for arch, the architecture first.
func (p Program) options(arch string) ([]string, error) {
	opts := []string{"--gpu-architecture=" + arch}
	for _, o := range p.Options {
		if strings.HasPrefix(o, "--gpu-architecture") || strings.HasPrefix(o, "-arch") {
			return nil, fmt.Errorf("%s: option %q: the architecture comes from the device (set ArchSpecific for sm_XYa)", p.Name, o)
		}
		opts = append(opts, o)
	}
	return opts, nil
}

// CompileRequest is one NVRTC compilation.
type CompileRequest struct {
	Name, Source string
	Options      []string // every option, the architecture first
}

// Compiler turns a request into a CUBIN; CompileNVRTC is the real one, and
// tests count calls through their own.
type Compiler func(CompileRequest) ([]byte, error)

// CompileNVRTC compiles with NVRTC, which needs no GPU: only libnvrtc.
func CompileNVRTC(req CompileRequest) (cubin []byte, err error) {
	cubin, _, err = CompileNVRTCLog(req)
	return cubin, err
}

// CompileNVRTCLog is CompileNVRTC that also returns NVRTC's log of a
// compile that succeeded: its warnings, and with "--ptxas-options=-v"
// ptxas's registers, spills and stack per kernel.
func CompileNVRTCLog(req CompileRequest) (cubin []byte, log string, err error) {
	if err := LoadNVRTC(""); err != nil {
		return nil, "", err
	}
	src := C.CString(req.Source)
	defer C.free(unsafe.Pointer(src))
	name := C.CString(req.Name)
	defer C.free(unsafe.Pointer(name))
	var prog C.nvrtcProgram
	if err := checkNVRTC("nvrtcCreateProgram", C.call_nvrtcCreateProgram(&prog, src, name, 0, nil, nil)); err != nil {
		return nil, "", err
	}
	defer func() {
		if derr := checkNVRTC("nvrtcDestroyProgram", C.call_nvrtcDestroyProgram(&prog)); derr != nil && err == nil {
			cubin, log, err = nil, "", derr
		}
	}()
	copts := make([]*C.char, len(req.Options)+1) // +1: never an empty array
	for i, o := range req.Options {
		copts[i] = C.CString(o)
		defer C.free(unsafe.Pointer(copts[i]))
	}
	cerr := checkNVRTC("nvrtcCompileProgram", C.call_nvrtcCompileProgram(prog, C.int(len(req.Options)), &copts[0]))
	if cerr != nil {
		log, lerr := programLog(prog)
		if lerr != nil {
			return nil, "", errors.Join(cerr, lerr)
		}
		return nil, "", fmt.Errorf("%w: %s", cerr, log)
	}
	var n C.size_t
	if err := checkNVRTC("nvrtcGetCUBINSize", C.call_nvrtcGetCUBINSize(prog, &n)); err != nil {
		return nil, "", err
	}
	if n == 0 {
		return nil, "", fmt.Errorf("nvrtcGetCUBINSize: no CUBIN (options %v name a virtual architecture?)", req.Options)
	}
	out := make([]byte, int(n))
	if err := checkNVRTC("nvrtcGetCUBIN", C.call_nvrtcGetCUBIN(prog, (*C.char)(unsafe.Pointer(&out[0])))); err != nil {
		return nil, "", err
	}
	log, err = programLog(prog)
	if err != nil {
		return nil, "", err
	}
	return out, log, nil
}

// programLog is NVRTC's log of the program's compilation, trimmed.
func programLog(prog C.nvrtcProgram) (string, error) {
	var n C.size_t
	if err := checkNVRTC("nvrtcGetProgramLogSize", C.call_nvrtcGetProgramLogSize(prog, &n)); err != nil {
		return "", err
	}
	log := make([]byte, int(n)+1)
	if err := checkNVRTC("nvrtcGetProgramLog", C.call_nvrtcGetProgramLog(prog, (*C.char)(unsafe.Pointer(&log[0])))); err != nil {
		return "", err
	}
	return strings.TrimSpace(strings.TrimRight(string(log), "\x00")), nil
}
