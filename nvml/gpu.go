package nvml

import (
	"errors"
	"fmt"
	"sync"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
)

// Library is the part of NVML this package asks questions of: what
// go-nvml's library and its mocks (pkg/nvml/mock/dgxh100) both provide.
type Library interface {
	Init() gonvml.Return
	Shutdown() gonvml.Return
	LookupSymbol(string) error
	SystemGetDriverVersion() (string, gonvml.Return)
	SystemGetCudaDriverVersion() (int, gonvml.Return)
	DeviceGetCount() (int, gonvml.Return)
	DeviceGetHandleByIndex(int) (gonvml.Device, gonvml.Return)
}

// ErrClosed is what a Read after Close reports (in Snapshot.Err): the
// source is closed and asked nothing.
var ErrClosed = errors.New("sampler closed")

// GPU reads the devices of a run (or every device) through NVML. Read and
// Close may be called from different goroutines.
type GPU struct {
	// mu makes Read and Close exclude each other. go-nvml's Shutdown
	// dlcloses libnvidia-ml.so, so a device call that races it or follows
	// it jumps into unmapped code: SIGSEGV during cgo execution, which no
	// recover catches (issue 14). closed keeps every Read after Close out
	// of NVML.
	mu     sync.Mutex
	closed bool

	lib     Library
	devices []gonvml.Device
	// index is each device's NVML index; bus its PCI bus id, read once.
	index  []int
	bus    []string
	driver string
	cuda   string
	// memV2 is set when nvmlDeviceGetMemoryInfo_v2 exists: it also reports
	// the driver's reserved memory.
	memV2 bool
	now   func() time.Time
}

// reason phrases an NVML failure without asking NVML: after a failed
// Init, even nvmlErrorString may be an unresolved symbol.
func reason(r gonvml.Return) string {
	switch r {
	case gonvml.ERROR_LIBRARY_NOT_FOUND:
		return "NVML library (libnvidia-ml.so.1) not found"
	case gonvml.ERROR_DRIVER_NOT_LOADED:
		return "no NVIDIA driver loaded"
	case gonvml.ERROR_LIB_RM_VERSION_MISMATCH:
		return "driver/library version mismatch"
	case gonvml.ERROR_NO_PERMISSION:
		return "no permission to use NVML"
	case gonvml.ERROR_GPU_IS_LOST:
		return "GPU is lost"
	case gonvml.ERROR_NOT_SUPPORTED:
		return "not supported"
	case gonvml.ERROR_FUNCTION_NOT_FOUND:
		return "NVML function not found (old driver)"
	case gonvml.ERROR_UNINITIALIZED:
		return "NVML not initialised"
	}
	return fmt.Sprintf("NVML error %d", int(r))
}

// NoGPUError says why NVML cannot be used.
type NoGPUError struct{ Reason string }

func (e *NoGPUError) Error() string { return "no GPU: " + e.Reason }

// OpenGPU initialises lib and finds the wanted devices (every device when
// none is named). When Init fails it calls nothing more in lib (not even
// Shutdown) and returns a *NoGPUError.
func OpenGPU(lib Library, wants ...Want) (g *GPU, err error) {
	defer func() {
		// A library that is not there can panic inside go-nvml on first use.
		if r := recover(); r != nil {
			g, err = nil, &NoGPUError{Reason: fmt.Sprint("NVML: ", r)}
		}
	}()
	if r := lib.Init(); r != gonvml.SUCCESS {
		return nil, &NoGPUError{Reason: reason(r)}
	}
	n, r := lib.DeviceGetCount()
	if r != gonvml.SUCCESS {
		lib.Shutdown()
		return nil, &NoGPUError{Reason: "counting devices: " + reason(r)}
	}
	if n == 0 {
		lib.Shutdown()
		return nil, &NoGPUError{Reason: "NVML found no device"}
	}
	idx, err := selectDevices(lib, n, wants)
	if err != nil {
		lib.Shutdown()
		return nil, &NoGPUError{Reason: err.Error()}
	}
	g = &GPU{lib: lib, now: time.Now, memV2: lib.LookupSymbol("nvmlDeviceGetMemoryInfo_v2") == nil}
	for _, i := range idx {
		d, r := lib.DeviceGetHandleByIndex(i)
		bus := ""
		if r != gonvml.SUCCESS {
			d = nil // read as an error state on every sample
		} else {
			bus = pciBusID(d)
		}
		g.devices, g.index, g.bus = append(g.devices, d), append(g.index, i), append(g.bus, bus)
	}
	if v, r := lib.SystemGetDriverVersion(); r == gonvml.SUCCESS {
		g.driver = v
	}
	if v, r := lib.SystemGetCudaDriverVersion(); r == gonvml.SUCCESS {
		g.cuda = fmt.Sprintf("%d.%d", v/1000, v%1000/10)
	}
	return g, nil
}

// Close shuts NVML down once, after any Read in flight has returned; a
// second Close does nothing.
func (g *GPU) Close() error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return nil
	}
	g.closed = true
	if r := g.lib.Shutdown(); r != gonvml.SUCCESS {
		return fmt.Errorf("nvmlShutdown: %s", reason(r))
	}
	return nil
}

// Read takes one reading of every device. After Close it asks NVML
// nothing and returns a snapshot whose Err is ErrClosed's text.
func (g *GPU) Read() Snapshot {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := Snapshot{Time: g.now(), Source: "nvml", Driver: g.driver, CUDA: g.cuda}
	if g.closed {
		s.Err = ErrClosed.Error()
		return s
	}
	for i, d := range g.devices {
		rd := g.readDevice(g.index[i], d)
		rd.PCIBusID = g.bus[i]
		s.Devices = append(s.Devices, rd)
	}
	return s
}

// field records v when r is SUCCESS; NOT_SUPPORTED leaves it nil ("n/a");
// any other failure is the device's error state.
func field[T any](rd *Reading, name string, v T, r gonvml.Return) *T {
	switch r {
	case gonvml.SUCCESS:
		return &v
	case gonvml.ERROR_NOT_SUPPORTED, gonvml.ERROR_NO_PERMISSION:
		return nil
	}
	if rd.Err == "" {
		rd.Err = name + ": " + reason(r)
	}
	return nil
}

func (g *GPU) readDevice(i int, d gonvml.Device) (rd Reading) {
	rd.Index = i
	if d == nil {
		rd.Err = "no handle for device"
		return rd
	}
	defer func() {
		if r := recover(); r != nil {
			rd.Err = fmt.Sprint("NVML: ", r)
		}
	}()
	if v, r := d.GetName(); r == gonvml.SUCCESS {
		rd.Name = v
	}
	if v, r := d.GetUUID(); r == gonvml.SUCCESS {
		rd.UUID = v
	}
	if g.memV2 {
		m, r := d.GetMemoryInfo_v2()
		if r == gonvml.SUCCESS {
			rd.MemTotalBytes, rd.MemUsedBytes, rd.MemFreeBytes, rd.MemReservedB = &m.Total, &m.Used, &m.Free, &m.Reserved
		} else {
			field(&rd, "memory", 0, r)
		}
	} else {
		m, r := d.GetMemoryInfo()
		if r == gonvml.SUCCESS {
			rd.MemTotalBytes, rd.MemUsedBytes, rd.MemFreeBytes = &m.Total, &m.Used, &m.Free
		} else {
			field(&rd, "memory", 0, r)
		}
	}
	if rd.Err != "" && rd.MemTotalBytes == nil && rd.Name == "" {
		return rd // a lost GPU answers nothing; don't ask ten more times
	}
	u, r := d.GetUtilizationRates()
	if p := field(&rd, "utilization", u, r); p != nil {
		rd.UtilPct, rd.MemUtilPct = &p.Gpu, &p.Memory
	}
	mw, r := d.GetPowerUsage()
	if v := field(&rd, "power", mw, r); v != nil {
		rd.PowerW = ptr(float64(*v) / 1000)
	}
	mw, r = d.GetEnforcedPowerLimit()
	if v := field(&rd, "power limit", mw, r); v != nil {
		rd.PowerLimitW = ptr(float64(*v) / 1000)
	}
	v, r := d.GetTemperature(gonvml.TEMPERATURE_GPU)
	rd.TempC = field(&rd, "temperature", v, r)
	v, r = d.GetClockInfo(gonvml.CLOCK_SM)
	rd.SMClockMHz = field(&rd, "SM clock", v, r)
	v, r = d.GetClockInfo(gonvml.CLOCK_MEM)
	rd.MemClockMHz = field(&rd, "memory clock", v, r)
	v, r = d.GetPcieThroughput(gonvml.PCIE_UTIL_RX_BYTES)
	rd.PCIeRxKBps = field(&rd, "PCIe rx", v, r)
	v, r = d.GetPcieThroughput(gonvml.PCIE_UTIL_TX_BYTES)
	rd.PCIeTxKBps = field(&rd, "PCIe tx", v, r)
	procs, r := d.GetComputeRunningProcesses()
	if ps := field(&rd, "processes", procs, r); ps != nil {
		for _, p := range *ps {
			pr := Process{PID: p.Pid}
			// NVML reports "not available" as all ones (e.g. without permission).
			if p.UsedGpuMemory != ^uint64(0) {
				pr.UsedBytes = ptr(p.UsedGpuMemory)
			}
			rd.Processes = append(rd.Processes, pr)
		}
	}
	return rd
}
