package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// Device memory and streams for code outside the backends (hand-written
// kernels, NCCL buffers). Each call enters the device itself, so it works
// from any goroutine; inside Device.Enter it nests.

// Alloc allocates n bytes of device memory; an allocation failure matches
// kernels.ErrOutOfMemory.
func (d *Device) Alloc(n int) (DevicePtr, error) {
	if n < 0 {
		return 0, fmt.Errorf("cuMemAlloc_v2: %d bytes", n)
	}
	leave, err := d.Enter()
	if err != nil {
		return 0, err
	}
	defer leave()
	p, err := alloc("buffer", uint64(n))
	return DevicePtr(p), err
}

// Free releases memory from Alloc; 0 is a no-op.
func (d *Device) Free(p DevicePtr) error {
	leave, err := d.Enter()
	if err != nil {
		return err
	}
	defer leave()
	return free(ptr(p))
}

// Upload copies src to device address dst, synchronously.
func (d *Device) Upload(dst DevicePtr, src []byte) error {
	if len(src) == 0 {
		return nil
	}
	leave, err := d.Enter()
	if err != nil {
		return err
	}
	defer leave()
	return check(fmt.Sprintf("cuMemcpyHtoD_v2(%d bytes)", len(src)), C.call_cuMemcpyHtoD_v2(C.CUdeviceptr(dst), unsafe.Pointer(&src[0]), C.size_t(len(src))))
}

// Download copies len(dst) bytes from device address src, synchronously
// (after the work before it on the legacy stream).
func (d *Device) Download(dst []byte, src DevicePtr) error {
	if len(dst) == 0 {
		return nil
	}
	leave, err := d.Enter()
	if err != nil {
		return err
	}
	defer leave()
	return check(fmt.Sprintf("cuMemcpyDtoH_v2(%d bytes)", len(dst)), C.call_cuMemcpyDtoH_v2(unsafe.Pointer(&dst[0]), C.CUdeviceptr(src), C.size_t(len(dst))))
}

// Synchronize waits for all work of the device's context; a fault inside a
// kernel surfaces here.
func (d *Device) Synchronize() error {
	leave, err := d.Enter()
	if err != nil {
		return err
	}
	defer leave()
	return check("cuCtxSynchronize", C.call_cuCtxSynchronize())
}

// NewStream creates a stream on d that does not wait for the legacy
// default stream (CU_STREAM_NON_BLOCKING).
func (d *Device) NewStream() (Stream, error) {
	leave, err := d.Enter()
	if err != nil {
		return 0, err
	}
	defer leave()
	var s C.CUstream
	if err := check("cuStreamCreate", C.call_cuStreamCreate(&s, 1)); err != nil {
		return 0, err
	}
	return streamOf(s), nil
}

// DestroyStream destroys a stream from NewStream once its work is done.
func (d *Device) DestroyStream(s Stream) error {
	if s == 0 {
		return nil
	}
	leave, err := d.Enter()
	if err != nil {
		return err
	}
	defer leave()
	return check("cuStreamDestroy_v2", C.call_cuStreamDestroy_v2(C.moetop_stream(C.uintptr_t(s))))
}

// SyncStream waits for the work on s; a fault inside a kernel, or NCCL's
// work failing, surfaces here.
func (d *Device) SyncStream(s Stream) error {
	leave, err := d.Enter()
	if err != nil {
		return err
	}
	defer leave()
	return check("cuStreamSynchronize", C.call_cuStreamSynchronize(C.moetop_stream(C.uintptr_t(s))))
}
