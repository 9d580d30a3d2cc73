package kernels

import (
	"errors"
	"reflect"
	"slices"
	"strings"
	"testing"
)

// Test backends, registered once for this test binary: two that need a
// GPU (one needing a newer device) and one more on the host beside cpu.
func init() {
	plan := func(s Shape, _ []int) ([]Buffer, error) { return CommonBuffers(s, 2), nil }
	open := func(Options) (Backend, error) { return NewCPU(), nil }
	Register(Registration{Name: "test-gpu-b", Doc: "b", Order: 2, NeedsGPU: true, Dense: true, Plan: plan, New: open})
	Register(Registration{Name: "test-gpu-a", Doc: "a", Order: 1, NeedsGPU: true, Plan: plan, New: open,
		Supports: func(c Caps, _ Shape) error {
			if c.Major < 9 {
				return errors.New("needs compute capability 9.0")
			}
			return nil
		}})
	Register(Registration{Name: "test-host", Doc: "h", Order: 200, Plan: plan, New: open})
}

func TestRegistryListsInOrder(t *testing.T) {
	if got, want := GPUNames(), []string{"test-gpu-a", "test-gpu-b"}; !reflect.DeepEqual(got, want) {
		t.Errorf("GPUNames %v, want %v", got, want)
	}
	if got, want := HostNames(), []string{"cpu", "test-host"}; !reflect.DeepEqual(got, want) {
		t.Errorf("HostNames %v, want %v", got, want)
	}
	if got := Names(); len(got) != 4 || got[0] != "test-gpu-a" || got[3] != "test-host" {
		t.Errorf("Names %v, want every backend in order", got)
	}
	if got := Checked(); slices.Contains(got, "cpu") || len(got) != 3 {
		t.Errorf("Checked %v: want every backend but the reference", got)
	}
	if got, want := Peers("test-host"), []string{"cpu", "test-host"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Peers(test-host) %v, want %v", got, want)
	}
	if got := Peers("nonesuch"); got != nil {
		t.Errorf("Peers of an unknown backend: %v", got)
	}
	if r, ok := Reference(); !ok || r.Name != "cpu" {
		t.Errorf("reference %q, want cpu", r.Name)
	}
	if d, ok := DenseBackend(true); !ok || d != "test-gpu-b" {
		t.Errorf("GPU dense backend %q, want test-gpu-b", d)
	}
	if d, ok := DenseBackend(false); ok {
		t.Errorf("host dense backend %q, want none", d)
	}
}

func TestCapabilityChecksSayWhy(t *testing.T) {
	a, _ := Lookup("test-gpu-a")
	for _, c := range []struct {
		name   string
		caps   Caps
		is     []error
		reason string // in the message; "" for no error
	}{
		{"no GPU says the probe's reason", Caps{NoGPU: "libcuda.so.1: not found"}, []error{ErrNoGPU, ErrUnsupported}, "libcuda.so.1: not found"},
		{"an old device is refused with the backend's reason", Caps{GPU: true, Major: 8}, []error{ErrUnsupported}, "needs compute capability 9.0"},
		{"a new device passes", Caps{GPU: true, Major: 9}, nil, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := a.Check(c.caps, Shape{})
			if c.reason == "" {
				if err != nil {
					t.Fatalf("refused: %v", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), c.reason) || !strings.HasPrefix(err.Error(), "test-gpu-a") {
				t.Errorf("error %v: want the backend's name and %q", err, c.reason)
			}
			for _, target := range c.is {
				if !errors.Is(err, target) {
					t.Errorf("error %v does not match %v", err, target)
				}
			}
		})
	}
}

func TestCandidatesFollowTheMachine(t *testing.T) {
	ok, refused := Candidates(Caps{GPU: true, Major: 8}, Shape{})
	if !reflect.DeepEqual(ok, []string{"test-gpu-b"}) || len(refused) != 1 || refused[0].Name != "test-gpu-a" {
		t.Errorf("on an sm_80 GPU: candidates %v, refused %v", ok, refused)
	}
	ok, refused = Candidates(Caps{NoGPU: "none"}, Shape{})
	if !reflect.DeepEqual(ok, []string{"cpu", "test-host"}) || len(refused) != 0 {
		t.Errorf("without a GPU: candidates %v, refused %v; want the host backends", ok, refused)
	}
}

func TestRegisterRefusesWhatCouldNeverWork(t *testing.T) {
	plan := func(Shape, []int) ([]Buffer, error) { return nil, nil }
	open := func(Options) (Backend, error) { return nil, nil }
	for _, c := range []struct {
		name string
		r    Registration
	}{
		{"a name taken", Registration{Name: "cpu", Plan: plan, New: open}},
		{"no name", Registration{Plan: plan, New: open}},
		{"a name with a comma", Registration{Name: "a,b", Plan: plan, New: open}},
		{"auto, which the CLI owns", Registration{Name: "auto", Plan: plan, New: open}},
		{"no plan", Registration{Name: "x1", New: open}},
		{"no constructor", Registration{Name: "x2", Plan: plan}},
		{"a second reference", Registration{Name: "x3", Reference: true, Plan: plan, New: open}},
	} {
		t.Run(c.name, func(t *testing.T) {
			defer func() {
				if recover() == nil {
					t.Error("registered")
				}
			}()
			Register(c.r)
		})
	}
}

func TestOpenAndPlanOfAnUnknownBackend(t *testing.T) {
	if _, err := Open("nonesuch", Options{}); !errors.Is(err, ErrUnknownBackend) {
		t.Errorf("Open: %v", err)
	}
	if _, err := Plan("nonesuch", Shape{}, nil); !errors.Is(err, ErrUnknownBackend) {
		t.Errorf("Plan: %v", err)
	}
}

func TestCPUPlanMatchesHandCount(t *testing.T) {
	// T=4 H=8 F=16 E=2 k=1, any dtype: the CPU stores float32. Weights
	// 8·2·4 + 2·(2·8·16·4) = 2112; x, logits, out 128+32+128 = 288; index:
	// 4 arrays of 4 rows (with token of row, without bias) 64 + 3·2·4 = 88;
	// dense rows 128 + 256 + 128 = 512; no workspace.
	s := Shape{Tokens: 4, Hidden: 8, FFN: 16, Experts: 2, TopK: 1, DType: BF16}
	plan, err := Plan("cpu", s, []int{3, 1})
	if err != nil {
		t.Fatal(err)
	}
	if got, want := Total(plan), uint64(2112+288+88+512); got != want || CPUBytes(s) != want {
		t.Errorf("cpu plan %d bytes (CPUBytes %d), hand count %d", got, CPUBytes(s), want)
	}
}
