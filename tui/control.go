// Package tui is moetop's terminal view over the Sample stream. It cannot
// tell a live run from a recording: both are a Source, and keys become
// Actions that the source's Controller carries out or refuses.
package tui

import "github.com/moetop/moetop/stream"

// Source feeds the view.
type Source interface {
	// Samples is closed when the source ends.
	Samples() <-chan stream.Sample
	// Header describes the run (device, versions, backend, config).
	Header() stream.Header
	// Mode is "LIVE" or "REPLAY".
	Mode() string
}

// Action is something a key asks of the source.
type Action int

const (
	ActPause Action = iota // toggle pause (live: stop stepping; replay: stop playing)
	ActNextBackend
	ActNextRouting
	ActTokensUp
	ActTokensDown
	ActSkewUp
	ActSkewDown
	// Replay only.
	ActStepBack
	ActStepForward
	ActFaster
	ActSlower
	ActHome
	ActEnd
	ActJump // with Request.Target
)

// Request is an action with its argument.
type Request struct {
	Action Action
	// Target is where ActJump goes: a step number, or a time like 1m30s.
	Target string
}

// Controller carries out actions. Do must not block on the workload: it
// queues a change and returns what the status line should say, or an error
// saying why the change is refused (for example, predicted out of memory).
type Controller interface {
	Do(r Request) (string, error)
}

// Status is what a controller reports for the header's mode and, in a
// replay, its position.
type Status struct {
	Paused   bool
	Position string // e.g. "REPLAY | 00:12.5 | step 120 / 900 | 1x | playing"
}

// StatusReporter is a Controller that also says where it is.
type StatusReporter interface {
	Status() Status
}
