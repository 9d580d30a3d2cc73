package stream

import "time"

// Event kinds.
const (
	EventOOM     = "oom"
	EventBackend = "backend"
	EventConfig  = "config"
	EventError   = "error"
)

// Event is something that happened between steps.
type Event struct {
	Time time.Time `json:"time"`
	Kind string    `json:"kind"`
	Msg  string    `json:"msg"`
	// Device is the rank the event happened on (0 on a single GPU).
	Device int `json:"device,omitempty"`
}
