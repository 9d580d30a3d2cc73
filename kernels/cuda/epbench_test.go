package cuda

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
)

func TestExchangeBenchRefusesUntilTheUserOptsIn(t *testing.T) {
	t.Setenv(UnverifiedGPUEPEnv, "")
	if _, err := OpenExchangeBench([]int{0, 1}, ""); !errors.Is(err, ErrGPUEPUnverified) {
		t.Errorf("OpenExchangeBench = %v, want ErrGPUEPUnverified", err)
	}
	if _, err := MeasureAllToAll(context.Background(), []int{0, 1}, "", 3); !errors.Is(err, ErrGPUEPUnverified) {
		t.Errorf("MeasureAllToAll = %v, want ErrGPUEPUnverified", err)
	}
}

// Refused before any library is loaded, so the same here and on a GPU.
func TestExchangeBenchRefusesBadDevices(t *testing.T) {
	t.Setenv(UnverifiedGPUEPEnv, "1")
	for _, c := range []struct {
		name    string
		devices []int
	}{{"no devices", nil}, {"a device twice", []int{1, 1}}, {"a negative ordinal", []int{0, -1}}} {
		t.Run(c.name, func(t *testing.T) {
			if _, err := OpenExchangeBench(c.devices, ""); err == nil || !strings.Contains(err.Error(), "exchange over GPUs") {
				t.Errorf("OpenExchangeBench(%v) = %v", c.devices, err)
			}
		})
	}
}

func TestExchangeBenchRefusesCasesItDoesNotRun(t *testing.T) {
	x, err := ep.NewExchange([]int{4, 4, 4, 4}, 8, 16, 32, 2, 2, kernels.BF16)
	if err != nil {
		t.Fatal(err)
	}
	if err := checkExchange(x, 2, 3, 20); err != nil {
		t.Errorf("a good case: %v", err)
	}
	if err := checkExchange(x, 4, 3, 20); err == nil {
		t.Error("2 ranks' case on 4 GPUs")
	}
	if err := checkExchange(x, 2, 3, 0); err == nil {
		t.Error("no timed reps")
	}
	y := *x
	y.DType = kernels.FP32
	if err := checkExchange(&y, 2, 3, 20); err == nil || !strings.Contains(err.Error(), "bf16") {
		t.Errorf("fp32: %v", err)
	}
	closed := &ExchangeBench{}
	if _, err := closed.Run(context.Background(), x, 0, 1); err == nil {
		t.Error("a run without GPUs")
	}
}

// A rank's buffers: its rows and what comes back (Tokens·TopK rows),
// what it receives and h and y over them, and its experts' weights.
func TestExchangeDeviceBytes(t *testing.T) {
	x, err := ep.NewExchange([]int{10, 6, 3, 1}, 10, 16, 24, 2, 2, kernels.BF16)
	if err != nil {
		t.Fatal(err)
	}
	// Rank 0 holds experts 0 and 1: 16 rows from each of 2 ranks.
	rows, recv := 20, 32
	want := uint64(2 * (rows*16 + recv*16 + recv*24 + recv*16 + rows*16 + 2*16*24 + 2*24*16))
	if got := ExchangeDeviceBytes(x, 0); got != want {
		t.Errorf("rank 0 needs %d bytes, want %d", got, want)
	}
	if got, want := ExchangeDeviceBytes(x, 1), want-uint64(2*(32-8)*(16+24+16)); got != want {
		t.Errorf("rank 1 needs %d bytes, want %d (it receives 8 rows)", got, want)
	}
	if n := len(exchangeBufferBytes(x, 0)); n != len(xBufferNames) || n != len((&xBuffers{}).all()) {
		t.Errorf("%d sizes for %d names", n, len(xBufferNames))
	}
}

// Two GPUs carry every row to its expert's GPU and back: each rank ends
// with each of its rows through its expert, as the host computes it.
func TestTwoGPUExchangeMatchesTheHost(t *testing.T) {
	devs := needGPUs(t, 2)
	t.Setenv(UnverifiedGPUEPEnv, "1")
	b, err := OpenExchangeBench(devs, "")
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		if err := b.Close(); err != nil {
			t.Error(err)
		}
	}()
	b.Timeout = 30 * time.Second
	for _, c := range []struct {
		name     string
		counts   []int
		noGraphs bool
	}{
		{"even", []int{16, 16, 16, 16, 16, 16, 16, 16}, false},
		{"uneven, from a graph", []int{64, 30, 20, 10, 2, 2, 0, 0}, false},
		{"uneven, from the host", []int{64, 30, 20, 10, 2, 2, 0, 0}, true},
		{"one rank starved", []int{64, 64, 0, 0, 0, 0, 0, 0}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			x, err := ep.NewExchange(c.counts, 64, 64, 96, 2, 2, kernels.BF16)
			if err != nil {
				t.Fatal(err)
			}
			b.NoGraphs = c.noGraphs
			times, err := b.run(context.Background(), x, 2, 3, func(rk *xRank) error {
				got, err := downloadBF16(rk.dev, rk.bufs.back, x.Rows()*x.Hidden)
				if err != nil {
					return err
				}
				if e := kernels.RelErr(got, x.Expected(rk.r)); !(e <= x.DType.Tolerance()) {
					t.Errorf("rank %d: what came back is %.3g off its rows through their experts", rk.r, e)
				}
				return nil
			})
			if err != nil {
				t.Fatal(err)
			}
			s, err := x.Summarize(times)
			if err != nil {
				t.Fatal(err)
			}
			if !(s.StepMS > 0) {
				t.Errorf("summary %+v", s)
			}
			t.Logf("%+v", s)
		})
	}
	gbps, err := b.AllToAll(context.Background(), 64<<20, 3)
	if err != nil || !(gbps > 0) {
		t.Errorf("all-to-all ceiling %v GB/s, %v", gbps, err)
	}
	t.Logf("all-to-all bus bandwidth %.1f GB/s", gbps)
}

// downloadBF16 copies n bf16 values from the device as float32.
func downloadBF16(d *Device, p ptr, n int) ([]float32, error) {
	raw := make([]byte, 2*n)
	if err := d.Download(raw, DevicePtr(p)); err != nil {
		return nil, err
	}
	out := make([]float32, n)
	for i := range out {
		out[i] = kernels.BF16ToFloat(uint16(raw[2*i]) | uint16(raw[2*i+1])<<8)
	}
	return out, nil
}

// The bench's ranks share the expert-parallel backend's rules: after an
// NCCL call given up on, nothing more runs on them and Close leaves them
// (and their devices) to the process, touching no CUDA call (none could
// run here).
func TestExchangeBenchLeavesRanksGivenUpOnAlone(t *testing.T) {
	b := &ExchangeBench{}
	b.name = "exchange over GPUs"
	b.revive()
	b.ranks = []*xRank{{r: 0}, {r: 1}}
	b.setComms([]*Comm{{rank: 0, size: 2}, {rank: 1, size: 2}})
	b.giveUp(fmt.Errorf("ncclSend/Recv(dispatch): ncclGroupEnd did not return: %w", ErrEPTimeout))
	x, err := ep.NewExchange([]int{4, 4, 4, 4}, 8, 16, 32, 2, 2, kernels.BF16)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.Run(context.Background(), x, 0, 1); !errors.Is(err, ErrEPTimeout) || !strings.Contains(err.Error(), "exchange over GPUs") {
		t.Errorf("Run after the ranks were given up on: %v", err)
	}
	if _, err := b.AllToAll(context.Background(), 1<<20, 1); !errors.Is(err, ErrEPTimeout) {
		t.Errorf("AllToAll after the ranks were given up on: %v", err)
	}
	if err := b.Close(); err != nil || b.ranks != nil {
		t.Errorf("Close = %v, %d ranks kept", err, len(b.ranks))
	}
}
