package profiler

import "fmt"

// Fit is the memory model's verdict on starting a layer: what the backend's
// plan needs at the routing's target load, what may be used where it runs,
// and the most tokens that would fit at the same load shares.
type Fit struct {
	Backend   string
	Config    Config
	Need      uint64
	Avail     uint64
	MaxTokens int
}

// Fits says whether the plan fits what is available.
func (f Fit) Fits() bool { return f.Need <= f.Avail }

// PlanFit checks backend's plan for c against avail bytes: the memory free
// where the backend runs (a GPU, or the host for the CPU backend), less any
// spare the caller keeps. It runs nothing and allocates nothing, so a layer
// that cannot fit is refused before anything is prepared or created.
func PlanFit(backend string, c Config, avail uint64) (Fit, error) {
	d, err := ParseRouting(c.Routing, c.Experts, c.TopK)
	if err != nil {
		return Fit{}, err
	}
	counts, err := countsFor(d, c)
	if err != nil {
		return Fit{}, fmt.Errorf("memory model: %w", err)
	}
	need, err := Peak(backend, c, counts)
	if err != nil {
		return Fit{}, fmt.Errorf("memory model: %w", err)
	}
	return Fit{Backend: backend, Config: c, Need: need, Avail: avail,
		MaxTokens: MaxTokens(backend, c, counts, avail)}, nil
}
