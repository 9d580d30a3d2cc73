package stream

// BackendMemory is what one backend would need for the current layer and
// load, and how far that is from running out.
type BackendMemory struct {
	Backend string `json:"backend"`
	// PeakBytes is everything the backend allocates for a step.
	PeakBytes uint64 `json:"peak_bytes"`
	// HeadroomBytes is what would be left at the step's peak: free memory
	// plus what the running backend would release, minus PeakBytes.
	HeadroomBytes int64 `json:"headroom_bytes"`
	// MaxTokens is the most tokens that fit at the same load shares.
	MaxTokens int  `json:"max_tokens"`
	Fits      bool `json:"fits"`
	// Refused says why the backend cannot run this layer on this device
	// (its capability check); empty when it can.
	Refused string `json:"refused,omitempty"`
}

// Memory is one device's memory at a step.
type Memory struct {
	// Device is the rank or device of the run the numbers are of.
	Device int `json:"device,omitempty"`
	// Host is set when the numbers are of host memory (the CPU backend).
	Host       bool   `json:"host,omitempty"`
	TotalBytes uint64 `json:"total_bytes"`
	FreeBytes  uint64 `json:"free_bytes"`
	UsedBytes  uint64 `json:"used_bytes"`
	// OwnBytes is what the running backend holds.
	OwnBytes      uint64          `json:"own_bytes"`
	HeadroomBytes int64           `json:"headroom_bytes"`
	Backends      []BackendMemory `json:"backends"`
}
