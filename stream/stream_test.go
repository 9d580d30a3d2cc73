package stream

import (
	"errors"
	"testing"
	"time"
)

func TestPhasesByNameAndDevice(t *testing.T) {
	p := Phases{{Phase: PhaseRouter, MS: 1}, {Phase: PhaseGEMM1, MS: 2}, {Phase: PhaseRouter, Device: 1, MS: 3},
		{Phase: PhaseDispatch, Device: 1, MS: 4}}
	for _, c := range []struct {
		name   string
		phase  string
		device int
		want   float64
	}{
		{"a phase on device 0", PhaseRouter, 0, 1},
		{"the same phase on device 1", PhaseRouter, 1, 3},
		{"a phase only one device has", PhaseDispatch, 0, 0},
		{"an absent phase is 0", PhaseCombine, 0, 0},
	} {
		if got := p.MS(c.phase, c.device); got != c.want {
			t.Errorf("%s: MS(%s, %d) = %v, want %v", c.name, c.phase, c.device, got, c.want)
		}
	}
	if got := p.Names(); len(got) != 3 || got[0] != PhaseRouter || got[2] != PhaseDispatch {
		t.Errorf("Names = %v, want router, gemm1, dispatch", got)
	}
	if got := p.Devices(); len(got) != 2 || got[1] != 1 {
		t.Errorf("Devices = %v, want [0 1]", got)
	}
	if got := p.Total(1); got != 7 {
		t.Errorf("Total(1) = %v, want 7", got)
	}
}

func TestImbalance(t *testing.T) {
	for _, c := range []struct {
		name string
		rows []int
		want float64
	}{
		{"no experts is 0", nil, 0},
		{"nothing routed is 0", []int{0, 0}, 0},
		{"even rows are 1", []int{3, 3, 3}, 1},
		{"one busy expert of four", []int{4, 0, 0, 0}, 4},
	} {
		if got := Imbalance(c.rows); got != c.want {
			t.Errorf("%s: Imbalance(%v) = %v, want %v", c.name, c.rows, got, c.want)
		}
	}
}

func TestMemOfDevice(t *testing.T) {
	s := Sample{Memory: []Memory{{Device: 0, FreeBytes: 1}, {Device: 1, FreeBytes: 2}}}
	if m := s.Mem(1); m == nil || m.FreeBytes != 2 {
		t.Fatalf("Mem(1) = %+v, want device 1's entry", m)
	}
	if m := s.Mem(2); m != nil {
		t.Fatalf("Mem(2) = %+v, want nil", m)
	}
}

func TestFreeBytes(t *testing.T) {
	free, total := uint64(5), uint64(9)
	gpu := &Snapshot{Devices: []Reading{{MemFreeBytes: &free, MemTotalBytes: &total}}}
	if f, tt, ok := gpu.FreeBytes(0); !ok || f != 5 || tt != 9 {
		t.Errorf("device 0: %d %d %v", f, tt, ok)
	}
	if _, _, ok := gpu.FreeBytes(1); ok {
		t.Error("a device the snapshot lacks must be unknown")
	}
	if _, _, ok := gpu.FreeBytes(-1); ok {
		t.Error("a negative index must be unknown")
	}
	host := &Snapshot{Host: &Host{MemAvailableBytes: 3, MemTotalBytes: 4}}
	if f, _, ok := host.FreeBytes(7); !ok || f != 3 {
		t.Error("a host snapshot answers for any index")
	}
	var none *Snapshot
	if _, _, ok := none.FreeBytes(0); ok {
		t.Error("a nil snapshot must be unknown")
	}
}

func TestFanOutDeliversToEverySinkInOrder(t *testing.T) {
	in := make(chan Sample, 3)
	for i := range 3 {
		in <- Sample{Step: i}
	}
	close(in)
	var a, b []int
	err := FanOut(in,
		SinkFunc(func(s Sample) error { a = append(a, s.Step); return nil }),
		SinkFunc(func(s Sample) error { b = append(b, s.Step); return nil }))
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != 3 || len(b) != 3 || a[2] != 2 || b[0] != 0 {
		t.Fatalf("sinks saw %v and %v, want 0 1 2 each", a, b)
	}
}

func TestFanOutStopsAtAFailingSink(t *testing.T) {
	in := make(chan Sample, 2)
	in <- Sample{Step: 0}
	in <- Sample{Step: 1}
	full := errors.New("disk full")
	var later []int
	err := FanOut(in,
		SinkFunc(func(Sample) error { return full }),
		SinkFunc(func(s Sample) error { later = append(later, s.Step); return nil }))
	if !errors.Is(err, full) {
		t.Fatalf("err = %v, want the sink's", err)
	}
	if len(later) != 0 {
		t.Fatalf("a sink after the failing one saw %v", later)
	}
}

func TestFanOutEndsWhenTheSourceCloses(t *testing.T) {
	in := make(chan Sample)
	done := make(chan error)
	go func() { done <- FanOut(in) }()
	close(in)
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("FanOut did not end when its source closed")
	}
}
