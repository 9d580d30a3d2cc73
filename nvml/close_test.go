package nvml

import (
	"context"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	gonvml "github.com/NVIDIA/go-nvml/pkg/nvml"
	"github.com/NVIDIA/go-nvml/pkg/nvml/mock/server"
)

// watchedNVML is the mock NVML with a witness on Shutdown: it counts the
// device calls that start after nvmlShutdown and the Shutdowns that arrive
// while a device call is in flight. Either is what crashed a run on an H200
// (issue 14): go-nvml's Shutdown dlcloses libnvidia-ml.so, so a device call
// that races or follows it jumps into unmapped code and the process dies
// with SIGSEGV during cgo execution, past any recover.
type watchedNVML struct {
	*server.Server
	shut      atomic.Bool
	shutdowns atomic.Int32
	inflight  atomic.Int32
	after     atomic.Int32 // device calls after Shutdown
	during    atomic.Int32 // Shutdowns with a device call in flight
	calls     atomic.Int32
	// hold, when set, runs inside every device call (it may block).
	hold atomic.Pointer[func()]
}

func watched(t testing.TB) *watchedNVML { return &watchedNVML{Server: h100(t)} }

func (w *watchedNVML) Shutdown() gonvml.Return {
	if w.inflight.Load() > 0 {
		w.during.Add(1)
	}
	w.shut.Store(true)
	w.shutdowns.Add(1)
	return w.Server.Shutdown()
}

func (w *watchedNVML) DeviceGetHandleByIndex(i int) (gonvml.Device, gonvml.Return) {
	d, r := w.Server.DeviceGetHandleByIndex(i)
	if r != gonvml.SUCCESS {
		return d, r
	}
	return watchedDevice{Device: d, w: w}, r
}

// enter marks a device call; the returned func marks its end.
func (w *watchedNVML) enter() func() {
	w.inflight.Add(1)
	w.calls.Add(1)
	if w.shut.Load() {
		w.after.Add(1)
	}
	if h := w.hold.Load(); h != nil {
		(*h)()
	}
	return func() { w.inflight.Add(-1) }
}

// watchedDevice passes every call that readDevice and Open make through
// the witness.
type watchedDevice struct {
	gonvml.Device
	w *watchedNVML
}

func (d watchedDevice) GetName() (string, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetName()
}
func (d watchedDevice) GetUUID() (string, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetUUID()
}
func (d watchedDevice) GetPciInfo() (gonvml.PciInfo, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetPciInfo()
}
func (d watchedDevice) GetMemoryInfo() (gonvml.Memory, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetMemoryInfo()
}
func (d watchedDevice) GetMemoryInfo_v2() (gonvml.Memory_v2, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetMemoryInfo_v2()
}
func (d watchedDevice) GetUtilizationRates() (gonvml.Utilization, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetUtilizationRates()
}
func (d watchedDevice) GetPowerUsage() (uint32, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetPowerUsage()
}
func (d watchedDevice) GetEnforcedPowerLimit() (uint32, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetEnforcedPowerLimit()
}
func (d watchedDevice) GetTemperature(s gonvml.TemperatureSensors) (uint32, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetTemperature(s)
}
func (d watchedDevice) GetClockInfo(c gonvml.ClockType) (uint32, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetClockInfo(c)
}
func (d watchedDevice) GetPcieThroughput(c gonvml.PcieUtilCounter) (uint32, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetPcieThroughput(c)
}
func (d watchedDevice) GetComputeRunningProcesses() ([]gonvml.ProcessInfo, gonvml.Return) {
	defer d.w.enter()()
	return d.Device.GetComputeRunningProcesses()
}

// holdNext makes the next device call signal entered and wait for release
// (or a second, so that a wrong fix deadlocks into a failure, not a hang).
func (w *watchedNVML) holdNext() (entered <-chan struct{}, release func()) {
	in, out := make(chan struct{}), make(chan struct{})
	var once sync.Once
	h := func() {
		once.Do(func() {
			close(in)
			select {
			case <-out:
			case <-time.After(time.Second):
			}
		})
	}
	w.hold.Store(&h)
	var rel sync.Once
	return in, func() { rel.Do(func() { close(out) }) }
}

func (w *watchedNVML) check(t *testing.T) {
	t.Helper()
	if n := w.after.Load(); n > 0 {
		t.Errorf("%d NVML device calls after nvmlShutdown", n)
	}
	if n := w.during.Load(); n > 0 {
		t.Errorf("nvmlShutdown ran %d times while a device call was in flight", n)
	}
}

func TestCloseWaitsForTheReadInFlightAndNoReadFollowsIt(t *testing.T) {
	w := watched(t)
	g := open(t, w)
	entered, release := w.holdNext()
	defer release()
	read := make(chan Snapshot)
	go func() { read <- g.Read() }()
	<-entered // the Read is inside NVML now
	closed := make(chan error, 1)
	go func() { closed <- g.Close() }()
	var err error
	select {
	case err = <-closed:
		t.Error("Close returned while a Read was inside NVML")
	case <-time.After(100 * time.Millisecond):
		release()
		err = <-closed
	}
	release()
	if s := <-read; len(s.Devices) != 8 || s.Devices[7].Err != "" {
		t.Errorf("the Read in flight did not finish whole: %d devices", len(s.Devices))
	}
	if err != nil {
		t.Fatalf("Close: %v", err)
	}
	before := w.calls.Load()
	s := g.Read()
	if w.calls.Load() != before {
		t.Error("a Read after Close called NVML")
	}
	if !strings.Contains(s.Err, "closed") || len(s.Devices) != 0 {
		t.Errorf("a Read after Close: err %q, %d devices; want a closed error and no devices", s.Err, len(s.Devices))
	}
	if err := g.Close(); err != nil {
		t.Errorf("a second Close: %v", err)
	}
	if n := w.shutdowns.Load(); n != 1 {
		t.Errorf("nvmlShutdown called %d times, want once", n)
	}
	w.check(t)
}

func TestThePollerClosesItsSourceAfterItsLastRead(t *testing.T) {
	w := watched(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	p := Poll(ctx, open(t, w), MinInterval)
	entered, release := w.holdNext()
	defer release()
	<-entered // a tick's Read is inside NVML
	cancel()  // the run ends (--duration, q, SIGTERM) mid-read
	time.Sleep(50 * time.Millisecond)
	if w.shut.Load() {
		t.Error("NVML was shut down while the poller was still reading")
	}
	release()
	select {
	case <-p.Done():
	case <-time.After(5 * time.Second):
		t.Fatal("the poller did not end after its context")
	}
	if n := w.shutdowns.Load(); n != 1 {
		t.Errorf("nvmlShutdown called %d times by the time Done closed, want once", n)
	}
	if err := p.Close(); err != nil {
		t.Errorf("Close after the context ended: %v", err)
	}
	w.check(t)
}

func TestPollerCloseStopsPollingAndShutsNVMLDownOnce(t *testing.T) {
	w := watched(t)
	p := Poll(context.Background(), open(t, w), MinInterval)
	for _, seq := p.Latest(); seq < 3; _, seq = p.Latest() {
		time.Sleep(10 * time.Millisecond)
	}
	done := make(chan error)
	go func() { done <- p.Close() }()
	go func() { done <- p.Close() }() // two owners closing at once is harmless
	for i := 0; i < 2; i++ {
		if err := <-done; err != nil {
			t.Errorf("Close: %v", err)
		}
	}
	_, seq := p.Latest()
	time.Sleep(3 * MinInterval)
	if _, after := p.Latest(); after != seq {
		t.Errorf("%d readings after Close", after-seq)
	}
	if n := w.shutdowns.Load(); n != 1 {
		t.Errorf("nvmlShutdown called %d times, want once", n)
	}
	w.check(t)
}

// A run that ends in every phase of a read: many short polls, each
// cancelled at a random point, must never call NVML after shutting it
// down. (Run with -race to check the locking too.)
func TestManyShortPollsNeverCallNVMLAfterShutdown(t *testing.T) {
	for i := 0; i < 50; i++ {
		w := watched(t)
		ctx, cancel := context.WithCancel(context.Background())
		p := Poll(ctx, open(t, w), MinInterval)
		time.Sleep(time.Duration(i%7) * 10 * time.Millisecond)
		cancel()
		<-p.Done()
		if !w.shut.Load() {
			t.Fatalf("poll %d: NVML not shut down when the poller ended", i)
		}
		w.check(t)
	}
}

// What crashed the run in issue 14, step by step: moetop's startSampler
// closed the source from its own goroutine when the run's context ended,
// while the poller's goroutine could be inside a Read. A source closed by
// someone other than its reader must still wait for that Read.
func TestClosingFromAnotherGoroutineWhileThePollerReads(t *testing.T) {
	w := watched(t)
	ctx, cancel := context.WithCancel(context.Background())
	src := open(t, w)
	p := Poll(ctx, src, MinInterval)
	closed := make(chan struct{})
	go func() { <-ctx.Done(); src.Close(); close(closed) }() // the old call site
	entered, release := w.holdNext()
	defer release()
	<-entered
	cancel()
	<-closed
	release()
	<-p.Done()
	w.check(t)
}
