package cuda

/*
#include <stdlib.h>
#include "calls.h"
*/
import "C"

import (
	_ "embed"
	"errors"
	"fmt"
	"math"
	"sync"
	"sync/atomic"
	"unsafe"
)

//go:embed layer.cu
var layerSource string

// layerProgram is the MoE layer's kernels other than the GEMMs.
// --fmad=false and IEEE division (--prec-div=true, NVRTC's default, said
// aloud) keep the input generator and the grouped router's sigmoid
// bit-identical to kernels.Fill and kernels.Sigmoid32 on the host;
// -default-device for helpers without __device__; C++17 for the sigmoid's
// hex float constants.
var layerProgram = Program{
	Name:    "layer.cu",
	What:    "layer kernels",
	Source:  layerSource,
	Options: []string{"--fmad=false", "--prec-div=true", "-std=c++17", "-default-device"},
	Kernels: layerKernels(),
}

func layerKernels() []string {
	names := []string{"route", "histogram", "scan", "scatter"}
	for _, s := range []string{"bf16", "fp16", "fp32"} {
		for _, n := range []string{"fill_", "gather_", "act_", "combine_"} {
			names = append(names, n+s)
		}
	}
	return names
}

// Module is a compiled Program loaded into one device's context. It lives
// as long as the Device it was loaded through: Device.Close unloads it.
type Module struct {
	dev    *Device
	ctx    C.CUcontext
	mod    C.CUmodule
	name   string
	closed atomic.Bool

	mu    sync.Mutex
	funcs map[string]*Function
}

// moduleSet is a Device's loaded modules, by program key.
type moduleSet struct {
	mu     sync.Mutex
	byKey  map[string]*Module
	closed bool
}

// ErrModuleClosed is a module used after its device was closed.
var ErrModuleClosed = errors.New("module unloaded: its device was closed")

// Load compiles p for the device (or finds its CUBIN in the default
// builder's cache) and loads it into the device's context, once per
// Device: loading the same program again returns the same Module.
func (d *Device) Load(p Program) (*Module, error) { return d.LoadWith(DefaultBuilder(), p) }

// LoadWith is Load with a builder of the caller's (another cache
// directory, a counting compiler in tests).
func (d *Device) LoadWith(b *Builder, p Program) (*Module, error) {
	arch, err := p.Arch(d.Major, d.Minor)
	if err != nil {
		return nil, err
	}
	opts, err := p.options(arch)
	if err != nil {
		return nil, err
	}
	key := CacheKey("", arch, opts, p.Name, p.Source)
	s := &d.modules
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return nil, fmt.Errorf("loading %s: %w", p.Name, ErrModuleClosed)
	}
	if m, ok := s.byKey[key]; ok {
		return m, nil
	}
	cubin, err := b.CUBIN(p, d.Major, d.Minor)
	if err != nil {
		return nil, err
	}
	leave, err := d.Enter()
	if err != nil {
		return nil, err
	}
	defer leave()
	m := &Module{dev: d, ctx: d.ctx, name: p.Name, funcs: map[string]*Function{}}
	cc := C.CBytes(cubin)
	defer C.free(cc)
	if err := check("cuModuleLoadData("+p.Name+")", C.call_cuModuleLoadData(&m.mod, cc)); err != nil {
		return nil, err
	}
	for _, k := range p.Kernels {
		if _, err := m.Function(k); err != nil {
			return nil, errors.Join(err, m.unload())
		}
	}
	if s.byKey == nil {
		s.byKey = map[string]*Module{}
	}
	s.byKey[key] = m
	return m, nil
}

// unloadModules unloads every module of d, in d's context, and refuses
// loads after it: the handles die with the context.
func (d *Device) unloadModules() error {
	s := &d.modules
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closed = true
	if len(s.byKey) == 0 {
		return nil
	}
	leave, err := d.Enter()
	if err != nil {
		return fmt.Errorf("unloading modules: %w", err)
	}
	defer leave()
	// Kernels still running use the code about to be unloaded.
	errs := []error{check("cuCtxSynchronize", C.call_cuCtxSynchronize())}
	for _, m := range s.byKey {
		errs = append(errs, m.unload())
	}
	s.byKey = nil
	return errors.Join(errs...)
}

func (m *Module) unload() error {
	if m.closed.Swap(true) {
		return nil
	}
	return check("cuModuleUnload("+m.name+")", C.call_cuModuleUnload(m.mod))
}

// Function looks a kernel up by its (extern "C") name.
func (m *Module) Function(name string) (*Function, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if f, ok := m.funcs[name]; ok {
		return f, nil
	}
	if m.closed.Load() {
		return nil, fmt.Errorf("%s: %w", name, ErrModuleClosed)
	}
	cn := C.CString(name)
	defer C.free(unsafe.Pointer(cn))
	f := &Function{mod: m, name: name}
	if err := check(fmt.Sprintf("cuModuleGetFunction(%s, %s)", m.name, name), C.call_cuModuleGetFunction(&f.f, m.mod, cn)); err != nil {
		return nil, err
	}
	m.funcs[name] = f
	return f, nil
}

// current checks that the module can run here: not unloaded, and its
// context current on this thread (a function of another context fails with
// an unhelpful CUDA_ERROR_INVALID_HANDLE, or worse).
func (m *Module) current() error {
	if m.closed.Load() {
		return ErrModuleClosed
	}
	var ctx C.CUcontext
	if err := check("cuCtxGetCurrent", C.call_cuCtxGetCurrent(&ctx)); err != nil {
		return err
	}
	if ctx != m.ctx {
		return fmt.Errorf("%w: the module's context is not current on this thread (call Device.Enter)", ErrLaunch)
	}
	return nil
}

// module is the name the backends know the layer module by.
type module = Module

// loadModule loads layer.cu for d. The caller has entered d.
func loadModule(d *Device) (*module, error) { return d.Load(layerProgram) }

// launch runs kernel name with a 1-D grid; args are 8-byte slots (see
// argPtr, argInt, argU64, argF32) that may hold a narrower parameter in
// their low bytes. The layer kernels' path, over Function.Launch.
func (m *Module) launch(name string, grid, block uint32, stream C.CUstream, args ...uint64) error {
	if grid == 0 {
		return nil
	}
	f, err := m.Function(name)
	if err != nil {
		return fmt.Errorf("cuLaunchKernel: no kernel %q: %w", name, err)
	}
	a := Args{loose: true}
	for _, v := range args {
		a.U64(v)
	}
	return f.Launch(LaunchConfig{Grid: D(grid), Block: D(block), Stream: streamOf(stream)}, &a)
}

func argPtr(p ptr) uint64      { return uint64(p) }
func argInt(v int) uint64      { return uint64(uint32(int32(v))) }
func argU64(v uint64) uint64   { return v }
func argF32(v float32) uint64  { return uint64(math.Float32bits(v)) }
func blocks(n, per int) uint32 { return uint32((n + per - 1) / per) }
