package nvml

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/dgxh100"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// h100 is go-nvml's DGX H100 mock with the readings it leaves unset filled
// in per device (device i reports i+10 % utilisation, and so on).
func h100(t testing.TB) *server.Server {
	s := dgxh100.New()
	for i, d := range s.Devices {
		md := d.(*server.Device)
		i := uint32(i)
		md.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
			return gonvml.Memory_v2{Total: 80 << 30, Used: 30 << 30, Free: 50 << 30, Reserved: 512 << 20}, gonvml.SUCCESS
		}
		md.GetUtilizationRatesFunc = func() (gonvml.Utilization, gonvml.Return) {
			return gonvml.Utilization{Gpu: 10 + i, Memory: 5 + i}, gonvml.SUCCESS
		}
		md.GetPowerUsageFunc = func() (uint32, gonvml.Return) { return 350500, gonvml.SUCCESS }
		md.GetEnforcedPowerLimitFunc = func() (uint32, gonvml.Return) { return 700000, gonvml.SUCCESS }
		md.GetTemperatureFunc = func(gonvml.TemperatureSensors) (uint32, gonvml.Return) { return 41 + i, gonvml.SUCCESS }
		md.GetClockInfoFunc = func(c gonvml.ClockType) (uint32, gonvml.Return) {
			if c == gonvml.CLOCK_SM {
				return 1980, gonvml.SUCCESS
			}
			return 2619, gonvml.SUCCESS
		}
		md.GetPcieThroughputFunc = func(c gonvml.PcieUtilCounter) (uint32, gonvml.Return) {
			if c == gonvml.PCIE_UTIL_RX_BYTES {
				return 1200, gonvml.SUCCESS
			}
			return 3400, gonvml.SUCCESS
		}
		md.GetComputeRunningProcessesFunc = func() ([]gonvml.ProcessInfo, gonvml.Return) {
			return []gonvml.ProcessInfo{{Pid: 4242, UsedGpuMemory: 2 << 30}, {Pid: 7, UsedGpuMemory: ^uint64(0)}}, gonvml.SUCCESS
		}
	}
	return s
}

func open(t testing.TB, lib Library) *GPU {
	t.Helper()
	g, err := OpenGPU(lib)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestFullReadingOfEveryDevice(t *testing.T) {
	g := open(t, h100(t))
	s := g.Read()
	if s.Source != "nvml" || s.Driver != "550.54.15" || s.CUDA != "12.4" {
		t.Errorf("snapshot %q driver %q cuda %q", s.Source, s.Driver, s.CUDA)
	}
	if len(s.Devices) != 8 {
		t.Fatalf("%d devices, want all 8", len(s.Devices))
	}
	for i, d := range s.Devices {
		if d.Err != "" {
			t.Fatalf("device %d: %s", i, d.Err)
		}
		if d.Name != "NVIDIA H100 80GB HBM3" || d.UUID == "" {
			t.Errorf("device %d: name %q uuid %q", i, d.Name, d.UUID)
		}
		checks := []struct {
			name      string
			got, want any
		}{
			{"total", *d.MemTotalBytes, uint64(80 << 30)}, {"used", *d.MemUsedBytes, uint64(30 << 30)},
			{"free", *d.MemFreeBytes, uint64(50 << 30)}, {"reserved", *d.MemReservedB, uint64(512 << 20)},
			{"util", *d.UtilPct, uint32(10 + i)}, {"mem util", *d.MemUtilPct, uint32(5 + i)},
			{"power", *d.PowerW, 350.5}, {"limit", *d.PowerLimitW, 700.0}, {"temp", *d.TempC, uint32(41 + i)},
			{"sm clock", *d.SMClockMHz, uint32(1980)}, {"mem clock", *d.MemClockMHz, uint32(2619)},
			{"rx", *d.PCIeRxKBps, uint32(1200)}, {"tx", *d.PCIeTxKBps, uint32(3400)},
			{"processes", len(d.Processes), 2}, {"pid", d.Processes[0].PID, uint32(4242)},
			{"process bytes", *d.Processes[0].UsedBytes, uint64(2 << 30)},
			{"unknown process bytes", d.Processes[1].UsedBytes == nil, true},
		}
		for _, c := range checks {
			if c.got != c.want {
				t.Errorf("device %d %s: %v, want %v", i, c.name, c.got, c.want)
			}
		}
	}
}

func TestUnsupportedFieldsAreNAAndNotZero(t *testing.T) {
	s := h100(t)
	d := s.Devices[0].(*server.Device)
	d.GetPowerUsageFunc = func() (uint32, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	d.GetPcieThroughputFunc = func(gonvml.PcieUtilCounter) (uint32, gonvml.Return) { return 0, gonvml.ERROR_NOT_SUPPORTED }
	r := open(t, s).Read().Devices[0]
	if r.Err != "" {
		t.Errorf("not supported is not an error: %s", r.Err)
	}
	if r.PowerW != nil || r.PCIeRxKBps != nil || r.PCIeTxKBps != nil {
		t.Errorf("unsupported fields read as values: power %v rx %v", r.PowerW, r.PCIeRxKBps)
	}
	if r.PowerLimitW == nil || *r.PowerLimitW != 700 {
		t.Error("supported fields lost")
	}
	b, _ := json.Marshal(r)
	if strings.Contains(string(b), `"power_w"`) {
		t.Errorf("n/a field written to JSON: %s", b)
	}
}

func TestMemoryInfoV1WhenV2SymbolIsMissing(t *testing.T) {
	s := h100(t)
	s.LookupSymbolFunc = func(string) error { return errors.New("undefined symbol") }
	for _, d := range s.Devices {
		d.(*server.Device).GetMemoryInfo_v2Func = nil // would panic if called
	}
	r := open(t, s).Read().Devices[3]
	if r.Err != "" || r.MemTotalBytes == nil || *r.MemTotalBytes != 80<<30 || r.MemReservedB != nil {
		t.Fatalf("v1 memory: err %q total %v reserved %v", r.Err, r.MemTotalBytes, r.MemReservedB)
	}
}

func TestInitFailureCallsNothingMore(t *testing.T) {
	for _, tc := range []struct {
		ret  gonvml.Return
		want string
	}{
		{gonvml.ERROR_LIBRARY_NOT_FOUND, "not found"},
		{gonvml.ERROR_DRIVER_NOT_LOADED, "no NVIDIA driver"},
		{gonvml.ERROR_LIB_RM_VERSION_MISMATCH, "mismatch"},
	} {
		s := h100(t)
		calls := 0
		s.InitFunc = func() gonvml.Return { return tc.ret }
		s.ShutdownFunc = func() gonvml.Return { calls++; return gonvml.SUCCESS }
		s.DeviceGetCountFunc = func() (int, gonvml.Return) { calls++; return 8, gonvml.SUCCESS }
		s.SystemGetDriverVersionFunc = func() (string, gonvml.Return) { calls++; return "", gonvml.SUCCESS }
		_, err := OpenGPU(s)
		var ng *NoGPUError
		if !errors.As(err, &ng) || !strings.Contains(ng.Reason, tc.want) {
			t.Errorf("Init %v: error %v, want a reason with %q", tc.ret, err, tc.want)
		}
		if calls != 0 {
			t.Errorf("Init %v: %d NVML calls after a failed Init", tc.ret, calls)
		}
	}
}

func TestNoDevicesFallsBack(t *testing.T) {
	s := h100(t)
	s.DeviceGetCountFunc = func() (int, gonvml.Return) { return 0, gonvml.SUCCESS }
	if _, err := OpenGPU(s); err == nil || !strings.Contains(err.Error(), "no device") {
		t.Fatalf("got %v", err)
	}
}

func TestGPULostMidRunIsReportedAndSamplingGoesOn(t *testing.T) {
	s := h100(t)
	var lost atomic.Bool
	d := s.Devices[2].(*server.Device)
	mem := d.GetMemoryInfo_v2Func
	d.GetMemoryInfo_v2Func = func() (gonvml.Memory_v2, gonvml.Return) {
		if lost.Load() {
			return gonvml.Memory_v2{}, gonvml.ERROR_GPU_IS_LOST
		}
		return mem()
	}
	d.GetNameFunc = func() (string, gonvml.Return) {
		if lost.Load() {
			return "", gonvml.ERROR_GPU_IS_LOST
		}
		return "NVIDIA H100 80GB HBM3", gonvml.SUCCESS
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := Poll(ctx, open(t, s), MinInterval)
	first, _ := p.Latest()
	if first.Devices[2].Err != "" {
		t.Fatalf("device 2 failed before it was lost: %s", first.Devices[2].Err)
	}
	lost.Store(true)
	deadline := time.Now().Add(5 * time.Second)
	for {
		snap, seq := p.Latest()
		if snap.Devices[2].Err != "" && seq >= 3 {
			if !strings.Contains(snap.Devices[2].Err, "GPU is lost") {
				t.Errorf("error state %q", snap.Devices[2].Err)
			}
			if snap.Devices[1].Err != "" || *snap.Devices[1].UtilPct != 11 {
				t.Errorf("other devices affected: %+v", snap.Devices[1])
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the lost GPU was never reported, or sampling stopped")
		}
		time.Sleep(10 * time.Millisecond)
	}
	_, before := p.Latest()
	time.Sleep(3 * MinInterval)
	if _, after := p.Latest(); after <= before {
		t.Fatal("sampling stopped after the GPU was lost")
	}
	cancel()
	<-p.Done()
}

func TestHostFallback(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "meminfo"), []byte("MemTotal:       24000000 kB\nMemFree:  100 kB\nMemAvailable:   12000000 kB\n"), 0o644)
	stat := filepath.Join(dir, "stat")
	os.WriteFile(stat, []byte("cpu  100 0 100 700 100 0 0 0 0 0\ncpu0 1 2 3\n"), 0o644)
	h := NewHost("NVML library not found")
	h.Root = dir
	s := h.Read()
	if s.Source != "host" || s.Reason == "" || s.Host.MemTotalBytes != 24000000<<10 || s.Host.MemAvailableBytes != 12000000<<10 {
		t.Fatalf("first reading %+v %+v", s, s.Host)
	}
	if s.Host.CPUUtilPct != nil {
		t.Error("CPU utilisation needs two readings")
	}
	// 200 more busy jiffies out of 400.
	os.WriteFile(stat, []byte("cpu  200 0 200 900 100 0 0 0 0 0\n"), 0o644)
	s = h.Read()
	if s.Host.CPUUtilPct == nil || *s.Host.CPUUtilPct != 50 {
		t.Fatalf("cpu util %v, want 50", s.Host.CPUUtilPct)
	}
	if free, total, ok := s.FreeBytes(0); !ok || free != 12000000<<10 || total != 24000000<<10 {
		t.Errorf("FreeBytes %d %d %v", free, total, ok)
	}
	h.Root = filepath.Join(dir, "missing")
	if s := h.Read(); s.Err == "" {
		t.Error("missing /proc not reported")
	}
}

func BenchmarkFullSampleOnMock(b *testing.B) {
	g := open(b, h100(b))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if s := g.Read(); len(s.Devices) != 8 {
			b.Fatal("short read")
		}
	}
}

// withBusIDs gives the mock's devices PCI bus ids, as NVML prints them.
func withBusIDs(s *server.Server) []string {
	var ids []string
	for i, d := range s.Devices {
		md := d.(*server.Device)
		id := fmt.Sprintf("00000000:%02X:00.0", 0x18+i)
		var p gonvml.PciInfo
		for j, c := range id {
			p.BusId[j] = int8(c)
		}
		md.GetPciInfoFunc = func() (gonvml.PciInfo, gonvml.Return) { return p, gonvml.SUCCESS }
		ids = append(ids, id)
	}
	return ids
}

func TestOpenSelectsTheRunsDevicesByUUIDOrBusID(t *testing.T) {
	s := h100(t)
	buses := withBusIDs(s)
	uuid2 := s.Devices[2].(*server.Device).UUID
	// CUDA prints the bus id with a short domain and lower case.
	cudaBus5 := strings.ToLower(strings.TrimPrefix(buses[5], "0000"))
	g, err := OpenGPU(s, Want{CUDA: 0, UUID: uuid2}, Want{CUDA: 1, PCIBusID: cudaBus5})
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	snap := g.Read()
	if len(snap.Devices) != 2 {
		t.Fatalf("read %d devices, want the 2 the run uses", len(snap.Devices))
	}
	if d := snap.Devices[0]; d.Index != 2 || d.UUID != uuid2 || d.PCIBusID != buses[2] {
		t.Errorf("first device: index %d uuid %s bus %s; want NVML device 2", d.Index, d.UUID, d.PCIBusID)
	}
	if d := snap.Devices[1]; d.Index != 5 || d.PCIBusID != buses[5] {
		t.Errorf("second device: index %d bus %s; want NVML device 5", d.Index, d.PCIBusID)
	}
}

func TestOpenRefusesADeviceNVMLDoesNotHave(t *testing.T) {
	_, err := OpenGPU(h100(t), Want{CUDA: 3, UUID: "GPU-00000000-0000-0000-0000-000000000000"})
	var ng *NoGPUError
	if !errors.As(err, &ng) || !strings.Contains(ng.Reason, "CUDA device 3") {
		t.Fatalf("err = %v, want a NoGPUError naming CUDA device 3", err)
	}
}

func TestSamePCIBus(t *testing.T) {
	for _, c := range []struct {
		a, b string
		want bool
	}{
		{"00000000:1B:00.0", "0000:1b:00.0", true},
		{"00000000:1B:00.0", "0000:1c:00.0", false},
		{"00000000:1B:00.0", "00000001:1B:00.0", false},
		{"garbage", "0000:1b:00.0", false},
		{"", "", false},
	} {
		if got := SamePCIBus(c.a, c.b); got != c.want {
			t.Errorf("SamePCIBus(%q, %q) = %v, want %v", c.a, c.b, got, c.want)
		}
	}
}
