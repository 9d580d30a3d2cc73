package cuda

/*
#include "calls.h"
*/
import "C"

import (
	"errors"
	"unsafe"
)

// releaser frees CUDA and cuBLAS objects, each at most once (a freed
// handle is cleared), and keeps what fails: a teardown carries on past a
// failure so that the rest is still freed, and reports every failure at
// the end. The caller has entered the objects' device.
type releaser struct{ errs []error }

func (r *releaser) add(err error) {
	if err != nil {
		r.errs = append(r.errs, err)
	}
}

// err is every failure so far, joined (nil when none).
func (r *releaser) err() error { return errors.Join(r.errs...) }

// sync waits for the work on s, so that nothing it uses is freed under it.
func (r *releaser) sync(s cuStream, what string) {
	if s != nil {
		r.add(check("cuStreamSynchronize("+what+")", C.call_cuStreamSynchronize(s)))
	}
}

func (r *releaser) event(e *C.CUevent) {
	if *e != nil {
		r.add(check("cuEventDestroy_v2", C.call_cuEventDestroy_v2(*e)))
		*e = nil
	}
}

func (r *releaser) events(evs []C.CUevent) {
	for i := range evs {
		r.event(&evs[i])
	}
}

func (r *releaser) stream(s *cuStream) {
	if *s != nil {
		r.add(check("cuStreamDestroy_v2", C.call_cuStreamDestroy_v2(*s)))
		*s = nil
	}
}

func (r *releaser) blas(h *C.cublasHandle_t) {
	if *h != nil {
		r.add(checkBLAS("cublasDestroy_v2", C.call_cublasDestroy_v2(*h)))
		*h = nil
	}
}

// blasStream waits for a stream from openBLASStream, then destroys its
// cuBLAS handle and the stream.
func (r *releaser) blasStream(s *cuStream, h *C.cublasHandle_t, what string) {
	r.sync(*s, what)
	r.blas(h)
	r.stream(s)
}

func (r *releaser) mem(p *ptr) {
	r.add(free(*p))
	*p = 0
}

// host frees pinned host memory from cuMemAllocHost.
func (r *releaser) host(p *unsafe.Pointer) {
	if *p != nil {
		r.add(check("cuMemFreeHost", C.call_cuMemFreeHost(*p)))
		*p = nil
	}
}

// openBLASStream makes a stream that does not wait for the legacy default
// stream and a cuBLAS handle on it that uses ws, bytes long, as its
// workspace: every GEMM stream of a backend or a rank is made here. The
// workspace is set after cublasSetStream, which resets it to cuBLAS's own
// pool, so that what the handle uses is what the memory model counts. On
// failure nothing is left. The caller has entered the device.
func openBLASStream(ws ptr, bytes int) (s cuStream, h C.cublasHandle_t, err error) {
	defer func() {
		if err != nil {
			var r releaser
			r.blasStream(&s, &h, "open")
			err = errors.Join(err, r.err())
		}
	}()
	if err = check("cuStreamCreate", C.call_cuStreamCreate(&s, 1 /* non-blocking */)); err != nil {
		return nil, nil, err
	}
	if err = checkBLAS("cublasCreate_v2", C.call_cublasCreate_v2(&h)); err != nil {
		return s, nil, err
	}
	if err = checkBLAS("cublasSetStream_v2", C.call_cublasSetStream_v2(h, s)); err != nil {
		return s, h, err
	}
	return s, h, checkBLAS("cublasSetWorkspace_v2", C.moetop_set_workspace(h, ws, C.size_t(bytes)))
}
