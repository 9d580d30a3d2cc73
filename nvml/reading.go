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

// Source produces snapshots. Implementations are safe to call from one
// goroutine at a time (the Poller's).
type Source interface {
	Read() Snapshot
	Close() error
}

func ptr[T any](v T) *T { return &v }
