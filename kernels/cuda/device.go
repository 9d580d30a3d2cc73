package cuda

/*
#include <stdlib.h>
#include "calls.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"

	"github.com/moetop/moetop/kernels"
)

// Device is one GPU's primary context.
type Device struct {
	Ordinal      int
	Name         string
	Major, Minor int // compute capability
	TotalBytes   uint64
	ctx          C.CUcontext
	dev          C.CUdevice
	modules      moduleSet // loaded in ctx; Close unloads them
}

// OpenDevice loads the libraries and retains the primary context of the
// device with the given ordinal.
func OpenDevice(libDir string, ordinal int) (*Device, error) {
	if _, err := Load(libDir); err != nil {
		return nil, err
	}
	var n C.int
	if err := check("cuDeviceGetCount", C.call_cuDeviceGetCount(&n)); err != nil {
		return nil, fmt.Errorf("%w: %v", kernels.ErrNoGPU, err)
	}
	if int(n) == 0 {
		return nil, fmt.Errorf("%w: the driver found no device", kernels.ErrNoGPU)
	}
	if ordinal < 0 || ordinal >= int(n) {
		return nil, fmt.Errorf("%w: device %d does not exist (%d found)", kernels.ErrNoGPU, ordinal, int(n))
	}
	d := &Device{Ordinal: ordinal}
	if err := check("cuDeviceGet", C.call_cuDeviceGet(&d.dev, C.int(ordinal))); err != nil {
		return nil, err
	}
	name := make([]byte, 256)
	if err := check("cuDeviceGetName", C.call_cuDeviceGetName((*C.char)(unsafe.Pointer(&name[0])), 256, d.dev)); err != nil {
		return nil, err
	}
	d.Name = C.GoString((*C.char)(unsafe.Pointer(&name[0])))
	var v C.int
	// CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR = 75, _MINOR = 76.
	if err := check("cuDeviceGetAttribute(major)", C.call_cuDeviceGetAttribute(&v, 75, d.dev)); err != nil {
		return nil, err
	}
	d.Major = int(v)
	if err := check("cuDeviceGetAttribute(minor)", C.call_cuDeviceGetAttribute(&v, 76, d.dev)); err != nil {
		return nil, err
	}
	d.Minor = int(v)
	var total C.size_t
	if err := check("cuDeviceTotalMem_v2", C.call_cuDeviceTotalMem_v2(&total, d.dev)); err != nil {
		return nil, err
	}
	d.TotalBytes = uint64(total)
	if err := check("cuDevicePrimaryCtxRetain", C.call_cuDevicePrimaryCtxRetain(&d.ctx, d.dev)); err != nil {
		return nil, err
	}
	return d, nil
}

// Caps is what the registry's capability checks may ask of d.
func (d *Device) Caps() kernels.Caps {
	return kernels.Caps{GPU: true, Device: d.Name, Major: d.Major, Minor: d.Minor, TotalBytes: d.TotalBytes,
		GroupedGEMM: HasGroupedGEMM()}
}

// Probe opens the device only to read its capabilities; without a usable
// GPU the answer says why, on one line.
func Probe(libDir string, ordinal int) kernels.Caps {
	d, err := OpenDevice(libDir, ordinal)
	if err != nil {
		return kernels.Caps{NoGPU: strings.Join(strings.Fields(err.Error()), " ")}
	}
	defer d.Close()
	return d.Caps()
}

// Enter pins the calling goroutine to its OS thread and makes the device's
// context current there: the CUDA context is per thread, and Go moves
// goroutines between threads. Call the returned function when done.
func (d *Device) Enter() (leave func(), err error) {
	runtime.LockOSThread()
	if err := check("cuCtxSetCurrent", C.call_cuCtxSetCurrent(d.ctx)); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	return runtime.UnlockOSThread, nil
}

// MemInfo is cuMemGetInfo: free and total bytes of the device.
func (d *Device) MemInfo() (free, total uint64, err error) {
	leave, err := d.Enter()
	if err != nil {
		return 0, 0, err
	}
	defer leave()
	var f, t C.size_t
	err = check("cuMemGetInfo_v2", C.call_cuMemGetInfo_v2(&f, &t))
	return uint64(f), uint64(t), err
}

// Close unloads the device's modules and releases the primary context.
func (d *Device) Close() error {
	err := d.unloadModules()
	return errors.Join(err, check("cuDevicePrimaryCtxRelease_v2", C.call_cuDevicePrimaryCtxRelease_v2(d.dev)))
}

// ptr is a device address.
type ptr = C.CUdeviceptr

// alloc allocates n bytes (at least 1, so that every buffer has an
// address); CUDA_ERROR_OUT_OF_MEMORY matches kernels.ErrOutOfMemory.
func alloc(what string, n uint64) (ptr, error) {
	var p ptr
	if n == 0 {
		n = 1
	}
	if err := check(fmt.Sprintf("cuMemAlloc_v2(%s, %d bytes)", what, n), C.call_cuMemAlloc_v2(&p, C.size_t(n))); err != nil {
		return 0, err
	}
	return p, nil
}

func free(p ptr) error {
	if p == 0 {
		return nil
	}
	return check("cuMemFree_v2", C.call_cuMemFree_v2(p))
}
