package cuda

import (
	"context"
	"errors"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
)

func TestGPUExpertParallelismRefusesUntilTheUserOptsIn(t *testing.T) {
	cases := []struct {
		name, value string
		allowed     bool
	}{
		{"unset refuses", "", false},
		{"zero refuses", "0", false},
		{"anything but 1 refuses", "yes", false},
		{"1 lets it run", "1", true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv(UnverifiedGPUEPEnv, tc.value)
			err := GPUEPAllowed()
			if tc.allowed != (err == nil) {
				t.Fatalf("GPUEPAllowed() = %v with %s=%q", err, UnverifiedGPUEPEnv, tc.value)
			}
			if tc.allowed {
				return
			}
			if !errors.Is(err, ErrGPUEPUnverified) {
				t.Errorf("error %v does not match ErrGPUEPUnverified", err)
			}
			// Prepare is an entry point too: it refuses before it loads
			// anything, so the refusal is the same on a machine with GPUs.
			b := &EPBackend{Devices: []int{0, 1}}
			s := kernels.Shape{Tokens: 4, Hidden: 8, FFN: 8, Experts: 4, TopK: 2}
			if err := b.Prepare(context.Background(), s); !errors.Is(err, ErrGPUEPUnverified) {
				t.Errorf("Prepare = %v, want ErrGPUEPUnverified", err)
			}
		})
	}
}

func TestGPUExpertParallelismRefusesBadRunsBeforeLoadingAnything(t *testing.T) {
	t.Setenv(UnverifiedGPUEPEnv, "1")
	s := kernels.Shape{Tokens: 4, Hidden: 8, FFN: 8, Experts: 4, TopK: 2}
	cases := []struct {
		name    string
		devices []int
		shape   kernels.Shape
		want    string
	}{
		{"no devices is refused", nil, s, "no devices"},
		{"a device named twice is refused", []int{0, 0}, s, "named twice"},
		{"more ranks than experts is refused", []int{0, 1, 2, 3, 4}, s, "4 experts over 5 ranks"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			b := &EPBackend{Devices: tc.devices}
			err := b.Prepare(context.Background(), tc.shape)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Prepare = %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestHostRowsAreTheDevicesBytes(t *testing.T) {
	x := []float32{1, -2.5, 0}
	cases := []struct {
		name string
		d    kernels.DType
		want []byte
	}{
		{"fp32 keeps the float's little-endian bytes", kernels.FP32, []byte{0, 0, 0x80, 0x3f, 0, 0, 0x20, 0xc0, 0, 0, 0, 0}},
		{"bf16 keeps the top half", kernels.BF16, []byte{0x80, 0x3f, 0x20, 0xc0, 0, 0}},
		{"fp16 is IEEE half", kernels.FP16, []byte{0x00, 0x3c, 0x00, 0xc1, 0, 0}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			if got := hostRows(tc.d, x); !slices.Equal(got, tc.want) {
				t.Errorf("hostRows = % x, want % x", got, tc.want)
			}
		})
	}
}

// needGPUs skips unless this machine has n CUDA devices and NCCL.
func needGPUs(t *testing.T, n int) []int {
	t.Helper()
	ids, err := DeviceIDs("")
	if err != nil {
		t.Skipf("skipping: %v", err) // it says "no CUDA device: why"
	}
	if len(ids) < n {
		t.Skipf("no CUDA device: %d found, the test needs %d", len(ids), n)
	}
	if _, err := LoadNCCL(""); err != nil {
		t.Skipf("no CUDA device: NCCL cannot be loaded: %v", err)
	}
	devs := make([]int, n)
	for i := range devs {
		devs[i] = ids[i].Ordinal
	}
	return devs
}

// Two ranks on two GPUs compute what the CPU reference computes over the
// whole batch, through the GPUs' own routing (as kernels.Check compares),
// with every row of the output poisoned first.
func TestTwoGPURanksMatchTheCPUReference(t *testing.T) {
	devs := needGPUs(t, 2)
	t.Setenv(UnverifiedGPUEPEnv, "1")
	base := kernels.Shape{Tokens: 37, Hidden: 64, FFN: 96, Experts: 8, TopK: 2, Seed: 11}
	gated := base
	gated.Act, gated.TopK = kernels.SwiGLU, 3
	cases := []struct {
		name     string
		shape    kernels.Shape
		replicas [][]int // nil: contiguous
		starve   []int
	}{
		{"contiguous experts, top-2", base, nil, nil},
		{"every top-k slot on one rank is sent once", func() kernels.Shape { s := base; s.TopK = 4; return s }(), nil, nil},
		{"replicated experts go to a replica", base, [][]int{{0, 1}, {0}, {0}, {0}, {1}, {1}, {1}, {1, 0}}, nil},
		{"a rank whose experts are starved receives nothing", base, nil, []int{4, 5, 6, 7}},
		{"gated activation", gated, nil, nil},
	}
	for _, d := range []kernels.DType{kernels.FP32, kernels.BF16} {
		for _, tc := range cases {
			t.Run(tc.name+" in "+d.String(), func(t *testing.T) {
				s := tc.shape
				s.DType = d
				var p *ep.Placement
				if tc.replicas != nil {
					var err error
					if p, err = ep.NewPlacement(2, tc.replicas); err != nil {
						t.Fatal(err)
					}
				}
				bias := make([]float32, s.Experts)
				for _, e := range tc.starve {
					bias[e] = -1e4
				}
				b := &EPBackend{Devices: devs, Placement: p, Timeout: 20 * time.Second}
				defer func() {
					if err := b.Close(); err != nil {
						t.Error(err)
					}
				}()
				ctx := context.Background()
				if err := b.Prepare(ctx, s); err != nil {
					t.Fatal(err)
				}
				if err := b.Poison(); err != nil {
					t.Fatal(err)
				}
				res, err := b.Step(ctx, kernels.StepInput{Bias: bias})
				if err != nil {
					t.Fatal(err)
				}
				got, err := b.Output()
				if err != nil {
					t.Fatal(err)
				}
				route, err := b.Routing()
				if err != nil {
					t.Fatal(err)
				}
				whole := s
				whole.Tokens = 2 * s.Tokens
				cpu := kernels.NewCPU()
				if err := cpu.Prepare(ctx, whole); err != nil {
					t.Fatal(err)
				}
				if _, err := cpu.Step(ctx, kernels.StepInput{Fixed: &route}); err != nil {
					t.Fatal(err)
				}
				want, _ := cpu.Output()
				if len(got) != len(want) {
					t.Fatalf("output has %d values, want %d", len(got), len(want))
				}
				if e := kernels.RelErr(got, want); !(e <= d.Tolerance()) { // NaN fails too
					t.Errorf("rel err %.3g, tolerance %.0e", e, d.Tolerance())
				}
				// Rows per expert add up to the routing, and only the
				// experts' holders ran them.
				counts := make([]int, s.Experts)
				for _, id := range route.IDs {
					counts[id]++
				}
				if !slices.Equal(res.Rows, counts) {
					t.Errorf("step reported rows %v, routing has %v", res.Rows, counts)
				}
				if len(res.Devices) != 2 {
					t.Fatalf("%d devices in the result, want 2", len(res.Devices))
				}
				for _, e := range tc.starve {
					if counts[e] != 0 {
						t.Errorf("starved expert %d got %d rows", e, counts[e])
					}
				}
				for _, dv := range res.Devices {
					var total time.Duration
					for _, ph := range dv.Phases {
						if ph.Time < 0 {
							t.Errorf("rank %d phase %s: %v", dv.Device, ph.Name, ph.Time)
						}
						total += ph.Time
					}
					if total <= 0 {
						t.Errorf("rank %d timed nothing", dv.Device)
					}
				}
				// A second step over the same buffers gives the same output.
				if err := b.Poison(); err != nil {
					t.Fatal(err)
				}
				if _, err := b.Step(ctx, kernels.StepInput{Bias: bias}); err != nil {
					t.Fatal(err)
				}
				again, _ := b.Output()
				if e := kernels.RelErr(again, got); !(e <= d.Tolerance()) {
					t.Errorf("second step differs from the first: rel err %.3g", e)
				}
			})
		}
	}
}
