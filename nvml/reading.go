// Package nvml answers "what does each GPU look like now", over NVIDIA's NVML
// (github.com/NVIDIA/go-nvml) or, without a GPU, over the host's /proc.
package nvml

import "github.com/moetop/moetop/stream"

// The readings are the stream's own types, so that what reads them (the
// view, the log, the exporters) needs neither cgo nor go-nvml.
type (
	Snapshot = stream.Snapshot
	Reading  = stream.Reading
	Process  = stream.Process
	Host     = stream.Host
)

// Source produces snapshots. Read and Close may come from different
// goroutines: Close waits for a Read in flight, and a Read after Close asks
// the library nothing (its snapshot's Err says the source is closed). A
// Poller owns the source it polls and closes it after its last Read.
type Source interface {
	Read() Snapshot
	Close() error
}

func ptr[T any](v T) *T { return &v }
