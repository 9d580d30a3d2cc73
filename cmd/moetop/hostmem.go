package main

import (
	"os"
	"runtime/debug"

	"github.com/moetop/moetop/nvml"
)

// hostMemAvailable is the host's available memory (MemAvailable), read
// where the host sampler reads it. Tests replace it.
var hostMemAvailable = func() (uint64, error) {
	_, avail, err := nvml.HostMemory()
	return avail, err
}

// hostSpare is the host memory a CPU layer must leave free beyond its
// plan: a tenth of what is available, at least 512 MiB. The plan counts
// the backend's buffers; the spare covers what it does not (the Go
// runtime, a step's short-lived slices, the page cache the system needs
// to stay responsive), so a layer accepted here does not push the host
// into swap.
func hostSpare(avail uint64) uint64 { return max(avail/10, 512<<20) }

// limitHeapToHost gives the Go collector a soft memory limit (unless
// GOMEMLIMIT sets one): by default the heap may grow to twice what is live
// before a collection, which for a layer of many gigabytes is more than
// the host holds. The limit is what was available at the start less half
// the spare, the other half left to what is not heap.
func limitHeapToHost(avail uint64) {
	if os.Getenv("GOMEMLIMIT") != "" {
		return
	}
	if limit := avail - hostSpare(avail)/2; avail > hostSpare(avail) {
		debug.SetMemoryLimit(int64(min(limit, 1<<62)))
	}
}
