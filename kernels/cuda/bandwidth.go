package cuda

/*
#include "calls.h"
*/
import "C"

import (
	_ "embed"
	"fmt"
)

//go:embed bandwidth.cu
var bandwidthSource string

var bandwidthProgram = Program{Name: "bandwidth.cu", What: "the read-bandwidth kernel", Source: bandwidthSource,
	Kernels: []string{"read_sum"}}

// ReadBandwidth measures the device's read bandwidth in GB/s (1e9 B/s):
// a read-mostly kernel over a buffer of bytes (rounded down to 16-byte
// words; larger than the L2 so that HBM, not the cache, is timed), best of
// reps runs after a warm-up. This is the memory ceiling of the roofline.
func (d *Device) ReadBandwidth(bytes int, reps int) (gbps float64, err error) {
	if bytes < 16<<20 || reps < 1 {
		return 0, fmt.Errorf("read bandwidth: want at least 16 MiB and one run, not %d bytes and %d runs", bytes, reps)
	}
	m, err := d.Load(bandwidthProgram)
	if err != nil {
		return 0, err
	}
	leave, err := d.Enter()
	if err != nil {
		return 0, err
	}
	defer leave()
	f, err := m.Function("read_sum")
	if err != nil {
		return 0, err
	}
	words := uint64(bytes / 16)
	const threads, grid = 512, 4 * 132 // a few blocks per SM of the largest Hopper
	in, err := d.Alloc(int(words * 16))
	if err != nil {
		return 0, fmt.Errorf("read bandwidth: %w", err)
	}
	defer d.Free(in)
	out, err := d.Alloc(grid * 4)
	if err != nil {
		return 0, fmt.Errorf("read bandwidth: %w", err)
	}
	defer d.Free(out)
	if err := check("cuMemsetD8Async", C.call_cuMemsetD8Async(C.CUdeviceptr(in), 1, C.size_t(words*16), nil)); err != nil {
		return 0, err
	}
	args := new(Args).Ptr(in).U64(words).Ptr(out)
	cfg := LaunchConfig{Grid: D(grid), Block: D(threads)}
	run := func() error { return f.Launch(cfg, args) }
	if err := run(); err != nil { // warm-up
		return 0, err
	}
	best := 0.0
	for range reps {
		d, err := timeLaunches(0, 1, run)
		if err != nil {
			return 0, err
		}
		if d > 0 {
			best = max(best, float64(words*16)/float64(d.Nanoseconds()))
		}
	}
	return best, nil
}
