package cuda

import (
	"encoding/json"
	"errors"
	"os"
	"runtime"
	"strings"
	"syscall"
	"testing"

	"github.com/moetop/moetop/kernels"
)

// withGroupHooks replaces ncclGroupStart/End for one test.
func withGroupHooks(t *testing.T, start, end func() error) {
	t.Helper()
	s, e := groupStart, groupEnd
	groupStart, groupEnd = start, end
	t.Cleanup(func() { groupStart, groupEnd = s, e })
}

// threadProbe parks the calling goroutine n times on a channel that a new
// goroutine fills, and reports the thread ids the caller ran on and
// whether any other goroutine ran on the caller's starting thread. A
// goroutine that holds its thread keeps it, and no other goroutine runs on
// it while it is parked; one that does not hold it lends the thread to the
// goroutine it just woke (Go runs that one next on the same thread).
func threadProbe(n int) (threads map[int]bool, shared bool) {
	start := syscall.Gettid()
	threads = map[int]bool{start: true}
	for i := 0; i < n; i++ {
		ch := make(chan int)
		go func() { ch <- syscall.Gettid() }()
		if <-ch == start {
			shared = true
		}
		runtime.Gosched()
		threads[syscall.Gettid()] = true
	}
	return threads, shared
}

// TestGroupHoldsItsOSThreadFromStartToEnd: NCCL's open group is per OS
// thread, so ncclGroupStart, every call inside and ncclGroupEnd must run on
// one thread that no other goroutine uses meanwhile.
func TestGroupHoldsItsOSThreadFromStartToEnd(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	var startTID, endTID int
	withGroupHooks(t,
		func() error { startTID = syscall.Gettid(); return nil },
		func() error { endTID = syscall.Gettid(); return nil })
	var threads map[int]bool
	var shared bool
	if err := Group(func() error { threads, shared = threadProbe(200); return nil }); err != nil {
		t.Fatal(err)
	}
	if len(threads) != 1 || !threads[startTID] {
		t.Errorf("inside the group the goroutine ran on threads %v; ncclGroupStart ran on %d", threads, startTID)
	}
	if endTID != startTID {
		t.Errorf("ncclGroupStart ran on thread %d, ncclGroupEnd on %d", startTID, endTID)
	}
	if shared {
		t.Error("another goroutine ran on the group's thread while the group was open")
	}
}

// TestTheThreadProbeSeesAnUnheldThread shows the probe above can fail: the
// same goroutine, not holding its thread, lends it out.
func TestTheThreadProbeSeesAnUnheldThread(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	done := make(chan bool)
	go func() { // a fresh goroutine: the test's own may hold its thread
		_, shared := threadProbe(200)
		done <- shared
	}()
	if !<-done {
		t.Skip("this scheduler never lent the thread out: the probe proves nothing here")
	}
}

func TestGroupAlwaysClosesWhatItOpened(t *testing.T) {
	boom := errors.New("boom")
	for _, c := range []struct {
		name            string
		startErr, fnErr error
		endErr          error
		wantFn, wantEnd bool
		wantIs          []error
		wantPanic       bool
		fnPanics        bool
	}{
		{name: "a clean group runs fn and closes", wantFn: true, wantEnd: true},
		{name: "a failed start runs nothing more", startErr: NCCLInvalidUsage, wantIs: []error{NCCLInvalidUsage}},
		{name: "a failing fn still closes the group, its error first", fnErr: boom, wantFn: true, wantEnd: true, wantIs: []error{boom}},
		{name: "a failed end is reported", endErr: NCCLRemoteError, wantFn: true, wantEnd: true, wantIs: []error{NCCLRemoteError}},
		{name: "both errors are kept", fnErr: boom, endErr: NCCLRemoteError, wantFn: true, wantEnd: true, wantIs: []error{boom, NCCLRemoteError}},
		{name: "a panicking fn still closes the group", fnPanics: true, wantFn: true, wantEnd: true, wantPanic: true},
	} {
		t.Run(c.name, func(t *testing.T) {
			var ranFn, ranEnd bool
			withGroupHooks(t, func() error { return c.startErr }, func() error { ranEnd = true; return c.endErr })
			var err error
			panicked := func() (p bool) {
				defer func() { p = recover() != nil }()
				err = Group(func() error {
					ranFn = true
					if c.fnPanics {
						panic("fn")
					}
					return c.fnErr
				})
				return false
			}()
			if ranFn != c.wantFn || ranEnd != c.wantEnd || panicked != c.wantPanic {
				t.Errorf("fn ran %v, end ran %v, panicked %v; want %v, %v, %v", ranFn, ranEnd, panicked, c.wantFn, c.wantEnd, c.wantPanic)
			}
			for _, w := range c.wantIs {
				if !errors.Is(err, w) {
					t.Errorf("error %v does not match %v", err, w)
				}
			}
			if c.wantIs == nil && err != nil && !c.wantPanic {
				t.Errorf("error %v", err)
			}
		})
	}
}

func TestUniqueIDsTravelAsBytesAndText(t *testing.T) {
	var id UniqueID
	for i := range id {
		id[i] = byte(i * 7)
	}
	b, _ := id.MarshalBinary()
	var back UniqueID
	if err := back.UnmarshalBinary(b); err != nil || back != id {
		t.Fatalf("binary round trip: %v", err)
	}
	j, err := json.Marshal(struct{ ID UniqueID }{id})
	if err != nil {
		t.Fatal(err)
	}
	var msg struct{ ID UniqueID }
	if err := json.Unmarshal(j, &msg); err != nil || msg.ID != id {
		t.Fatalf("JSON round trip: %v (%s)", err, j)
	}
	for _, c := range []struct {
		name string
		err  error
	}{
		{"127 bytes are refused", back.UnmarshalBinary(make([]byte, 127))},
		{"129 bytes are refused", back.UnmarshalBinary(make([]byte, 129))},
		{"no bytes are refused", back.UnmarshalBinary(nil)},
		{"text that is not hex is refused", back.UnmarshalText([]byte(strings.Repeat("zz", 128)))},
		{"short hex is refused", back.UnmarshalText([]byte("abcd"))},
	} {
		if !errors.Is(c.err, ErrBadUniqueID) {
			t.Errorf("%s: got %v, want ErrBadUniqueID", c.name, c.err)
		}
	}
}

func TestNCCLVersionCodesOfBothEras(t *testing.T) {
	for code, want := range map[int]string{22203: "2.22.3", 21903: "2.19.3", 2804: "2.8.4", 2708: "2.7.8"} {
		if got := parseNCCLVersion(code).String(); got != want {
			t.Errorf("code %d: %s, want %s", code, got, want)
		}
	}
}

func TestNCCLConstantsAreNCCLsValues(t *testing.T) {
	// nccl.h's numbers, which the library reads as ints.
	for _, c := range []struct{ got, want int32 }{
		{int32(NCCLBfloat16), 9}, {int32(NCCLFloat32), 7}, {int32(NCCLInt32), 2}, {int32(NCCLAvg), 4},
		{int32(NCCLSum), 0}, {int32(NCCLRemoteError), 6}, {int32(NCCLInProgress), 7},
	} {
		if c.got != c.want {
			t.Errorf("constant %d, want %d", c.got, c.want)
		}
	}
	if NCCLBfloat16.Bytes() != 2 || NCCLFloat32.Bytes() != 4 || NCCLUint64.Bytes() != 8 {
		t.Error("element sizes")
	}
}

func TestNVLSIsTurnedOffUnlessTheUserChose(t *testing.T) {
	for _, c := range []struct {
		name    string
		preset  *string
		want    string
		wantSet bool
	}{
		{"unset becomes 0", nil, "0", true},
		{"empty becomes 0", ptrTo(""), "0", true},
		{"the user's 1 stays", ptrTo("1"), "1", false},
		{"the user's 0 stays", ptrTo("0"), "0", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(NVLSEnv, "") // restored after the test
			if c.preset == nil {
				os.Unsetenv(NVLSEnv)
			} else {
				os.Setenv(NVLSEnv, *c.preset)
			}
			set, err := KeepNVLSOff()
			if err != nil {
				t.Fatal(err)
			}
			if got := os.Getenv(NVLSEnv); got != c.want || set != c.wantSet {
				t.Errorf("%s=%q (set %v), want %q (set %v)", NVLSEnv, got, set, c.want, c.wantSet)
			}
		})
	}
}

func ptrTo(s string) *string { return &s }

// Without NCCL every entry point says so with ErrNoNCCL, and loading it is
// apart from loading CUDA: the error is not kernels.ErrNoGPU.
func TestMissingNCCLIsItsOwnClearError(t *testing.T) {
	t.Setenv(NVLSEnv, "")
	os.Unsetenv(NVLSEnv)
	_, err := LoadNCCL(t.TempDir())
	if err == nil {
		t.Skip("NCCL is installed here")
	}
	t.Log(err)
	if !errors.Is(err, ErrNoNCCL) || errors.Is(err, kernels.ErrNoGPU) || !strings.Contains(err.Error(), "libnccl.so.2") {
		t.Errorf("got %v, want ErrNoNCCL naming libnccl.so.2 and not ErrNoGPU", err)
	}
	if os.Getenv(NVLSEnv) != "0" {
		t.Errorf("%s was not set before loading", NVLSEnv)
	}
	if _, err := NewUniqueID(); !errors.Is(err, ErrNoNCCL) {
		t.Errorf("NewUniqueID: %v", err)
	}
	if _, err := CommInitRank(2, UniqueID{}, 0); !errors.Is(err, ErrNoNCCL) {
		t.Errorf("CommInitRank: %v", err)
	}
	if _, err := CommInitAll([]int{0, 1}); !errors.Is(err, ErrNoNCCL) {
		t.Errorf("CommInitAll: %v", err)
	}
	ran := false
	if err := Group(func() error { ran = true; return nil }); !errors.Is(err, ErrNoNCCL) || ran {
		t.Errorf("Group: %v (fn ran %v)", err, ran)
	}
}

func TestACommunicatorIsDeadAfterAbort(t *testing.T) {
	var c *Comm
	for name, err := range map[string]error{
		"send":        c.Send(0, 1, NCCLFloat32, 1, 0),
		"recv":        c.Recv(0, 1, NCCLFloat32, 1, 0),
		"all-reduce":  c.AllReduce(0, 0, 1, NCCLFloat32, NCCLSum, 0),
		"async error": c.AsyncError(),
	} {
		if !errors.Is(err, errCommDone) {
			t.Errorf("%s on a nil communicator: %v", name, err)
		}
	}
	if c.Abort() != nil || c.Destroy() != nil {
		t.Error("Abort or Destroy of nothing failed")
	}
}

// No code of ours may create NVLink multicast objects: the bindings, the
// only way to call the driver, have no cuMulticast symbol.
func TestNothingCanCallCuMulticast(t *testing.T) {
	for _, f := range []string{"dl.h", "dl.c", "calls.h", "symbols.h"} {
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), "cuMulticast") {
			t.Errorf("%s binds a cuMulticast function", f)
		}
	}
}

// A GPU machine with NCCL: one process, every visible GPU (at least two)
// in one communicator; each rank sends a word to the next and receives
// from the previous, all in one group.
func TestNCCLRingOnEveryGPU(t *testing.T) {
	// Devices close in cleanups, after the buffers' (registered later)
	// are freed in their still-live contexts.
	first := openGPU(t)
	t.Cleanup(func() { first.Close() })
	if _, err := LoadNCCL(""); err != nil {
		t.Skipf("no NCCL: %v", err)
	}
	var devs []*Device
	var ordinals []int
	for i := 0; i < 8; i++ {
		d, err := OpenDevice("", i)
		if err != nil {
			break
		}
		t.Cleanup(func() { d.Close() })
		devs, ordinals = append(devs, d), append(ordinals, i)
	}
	n := len(devs)
	if n < 2 {
		t.Skipf("no second CUDA device: %d found", n)
	}
	comms, err := CommInitAll(ordinals)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range comms {
			if err := c.Destroy(); err != nil {
				t.Error(err)
			}
		}
	}()
	send, recv, streams := make([]DevicePtr, n), make([]DevicePtr, n), make([]Stream, n)
	for i, d := range devs {
		send[i], recv[i] = buffer(t, d, 4, le32(uint32(100+i))), buffer(t, d, 4, nil)
		if streams[i], err = d.NewStream(); err != nil {
			t.Fatal(err)
		}
		defer d.DestroyStream(streams[i])
	}
	err = Group(func() error {
		for i, c := range comms {
			if err := c.Send(send[i], 1, NCCLUint32, (i+1)%n, streams[i]); err != nil {
				return err
			}
			if err := c.Recv(recv[i], 1, NCCLUint32, (i+n-1)%n, streams[i]); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, d := range devs {
		if err := d.SyncStream(streams[i]); err != nil {
			t.Fatalf("rank %d: %v", i, err)
		}
		if got := u32s(download(t, d, recv[i], 4))[0]; got != uint32(100+(i+n-1)%n) {
			t.Errorf("rank %d received %d, want %d", i, got, 100+(i+n-1)%n)
		}
		if err := comms[i].AsyncError(); err != nil {
			t.Errorf("rank %d: %v", i, err)
		}
	}
}

func le32(v uint32) []byte { return []byte{byte(v), byte(v >> 8), byte(v >> 16), byte(v >> 24)} }
