package kernels

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"sync"
)

// A backend is one file that registers itself here from init: its name,
// its memory plan, what it needs of the device and how to open it.
// Everything that lists, checks or opens backends (the flag help, auto,
// check, bench, the memory model, the live view's backend switch) asks the
// registry, so adding a backend is adding a file and no name is spelled
// twice. See "Adding a backend" in the README.

// ErrUnsupported means a backend's capability check refused this device or
// shape; the error's text says why.
var ErrUnsupported = errors.New("cannot run here")

// ErrUnknownBackend means no backend of that name is registered.
var ErrUnknownBackend = errors.New("unknown backend")

// Caps is what a capability check may ask of the machine a backend would
// run on. Plain values, filled by whoever can open the device (kernels/cuda
// through cuda.Probe), so that this package needs no cgo.
type Caps struct {
	// GPU says a CUDA device was opened; when false, NoGPU says why and
	// the device's fields are zero.
	GPU   bool
	NoGPU string
	// Device is the GPU's name; Major and Minor its compute capability.
	Device       string
	Major, Minor int
	TotalBytes   uint64
	// GroupedGEMM says cuBLAS has cublasGemmGroupedBatchedEx (12.5+).
	GroupedGEMM bool
}

// Options are what a backend's constructor may need; each reads the fields
// that concern it.
type Options struct {
	LibDir string // tried before the loader's path (--cuda-lib-dir)
	Device int    // CUDA device ordinal
	// TimeExperts records events around each expert's GEMMs so that
	// per-expert time is reported, on one step in TimeExpertsEvery
	// (default 8): the events cost as much as a small GEMM, so timing every
	// step would slow every step. bench turns it off.
	TimeExperts      bool
	TimeExpertsEvery int
	// NoGraphs issues every GEMM from the host each step, never replaying a
	// CUDA graph of a load seen before.
	NoGraphs bool
	// MemAvailable reports the host bytes available, for backends that
	// allocate host memory (nil: not checked).
	MemAvailable func() (uint64, error)
}

// Registration is what a backend tells the registry about itself.
type Registration struct {
	// Name is what --backend takes; Doc one line for the help.
	Name, Doc string
	// Order places the backend in listings and in the live view's cycle
	// (lower first; equal orders by name).
	Order int
	// NeedsGPU says the backend runs on a CUDA device. With a GPU, auto
	// calibrates the backends that need one; without, those that do not.
	NeedsGPU bool
	// Reference marks the backend the others are checked against (moetop
	// check); at most one registers it.
	Reference bool
	// Dense marks the backend that times the dense reference (one GEMM
	// pair of all rows) for the view's "% of dense", among the backends
	// that run where it does.
	Dense bool
	// Plan lists the buffers the backend allocates for a shape when the
	// experts get counts rows (nil counts: before the first step).
	Plan func(s Shape, counts []int) ([]Buffer, error)
	// Supports is the capability check: nil, or an error saying why the
	// backend cannot run on this device or shape. The registry checks
	// NeedsGPU itself; nil Supports accepts the rest.
	Supports func(c Caps, s Shape) error
	// New opens the backend.
	New func(o Options) (Backend, error)
}

// Check is r's capability check, with the GPU requirement first; an
// error matches ErrUnsupported (and ErrNoGPU when there is no GPU).
func (r Registration) Check(c Caps, s Shape) error {
	if r.NeedsGPU && !c.GPU {
		return needsGPU{r.Name, c.NoGPU}
	}
	if r.Supports == nil {
		return nil
	}
	if err := r.Supports(c, s); err != nil {
		return fmt.Errorf("%s %w: %w", r.Name, ErrUnsupported, err)
	}
	return nil
}

// needsGPU is the refusal of a GPU backend where there is no GPU.
type needsGPU struct{ name, why string }

func (e needsGPU) Error() string {
	if e.why == "" {
		return e.name + " needs a GPU"
	}
	return e.name + " needs a GPU: " + e.why
}

func (e needsGPU) Is(target error) bool { return target == ErrUnsupported || target == ErrNoGPU }

var (
	regMu    sync.RWMutex
	registry = map[string]Registration{}
)

// Register adds a backend. It panics on a registration that could never
// work (no name, no plan or constructor, a name taken, a second
// reference), as database/sql does: these are mistakes in code run from
// init, not conditions a user can meet.
func Register(r Registration) {
	regMu.Lock()
	defer regMu.Unlock()
	switch {
	case r.Name == "" || strings.ContainsAny(r.Name, ", \t\n") || r.Name == "auto":
		panic(fmt.Sprintf("kernels.Register: invalid backend name %q", r.Name))
	case r.Plan == nil || r.New == nil:
		panic(fmt.Sprintf("kernels.Register(%s): Plan and New are required", r.Name))
	}
	if _, dup := registry[r.Name]; dup {
		panic(fmt.Sprintf("kernels.Register: backend %q registered twice", r.Name))
	}
	if r.Reference {
		for _, o := range registry {
			if o.Reference {
				panic(fmt.Sprintf("kernels.Register(%s): %s is already the reference", r.Name, o.Name))
			}
		}
	}
	registry[r.Name] = r
}

// Lookup finds a registered backend.
func Lookup(name string) (Registration, bool) {
	regMu.RLock()
	defer regMu.RUnlock()
	r, ok := registry[name]
	return r, ok
}

// All lists every registered backend in Order.
func All() []Registration {
	regMu.RLock()
	out := make([]Registration, 0, len(registry))
	for _, r := range registry {
		out = append(out, r)
	}
	regMu.RUnlock()
	sort.Slice(out, func(i, j int) bool {
		if out[i].Order != out[j].Order {
			return out[i].Order < out[j].Order
		}
		return out[i].Name < out[j].Name
	})
	return out
}

func names(keep func(Registration) bool) []string {
	var out []string
	for _, r := range All() {
		if keep(r) {
			out = append(out, r.Name)
		}
	}
	return out
}

// Names lists every registered backend's name in Order.
func Names() []string { return names(func(Registration) bool { return true }) }

// GPUNames lists the backends that need a GPU, in Order.
func GPUNames() []string { return names(func(r Registration) bool { return r.NeedsGPU }) }

// HostNames lists the backends that run without a GPU, in Order.
func HostNames() []string { return names(func(r Registration) bool { return !r.NeedsGPU }) }

// Checked lists the backends moetop check compares with the reference:
// every backend but the reference itself.
func Checked() []string { return names(func(r Registration) bool { return !r.Reference }) }

// Peers lists the backends that run where name does (on a GPU, or on the
// host), name included, in Order: those the memory model predicts for and
// the live view cycles through. Nil when name is not registered.
func Peers(name string) []string {
	self, ok := Lookup(name)
	if !ok {
		return nil
	}
	return names(func(r Registration) bool { return r.NeedsGPU == self.NeedsGPU })
}

// Reference is the backend the others are checked against.
func Reference() (Registration, bool) {
	for _, r := range All() {
		if r.Reference {
			return r, true
		}
	}
	return Registration{}, false
}

// DenseBackend is the backend that times the dense reference where gpu
// says (on a GPU or on the host), if one registered for it.
func DenseBackend(gpu bool) (string, bool) {
	for _, r := range All() {
		if r.Dense && r.NeedsGPU == gpu {
			return r.Name, true
		}
	}
	return "", false
}

// Refusal is a backend a capability check turned down, and why.
type Refusal struct {
	Name string
	Err  error
}

// Candidates are the backends auto may pick for s on c: with a GPU those
// that need one, without it the others; each passes its capability check
// or is listed in refused with the reason.
func Candidates(c Caps, s Shape) (ok []string, refused []Refusal) {
	for _, r := range All() {
		if r.NeedsGPU != c.GPU {
			continue
		}
		if err := r.Check(c, s); err != nil {
			refused = append(refused, Refusal{r.Name, err})
			continue
		}
		ok = append(ok, r.Name)
	}
	return ok, refused
}

// Open opens a registered backend by name.
func Open(name string, o Options) (Backend, error) {
	r, ok := Lookup(name)
	if !ok {
		return nil, fmt.Errorf("%w %q", ErrUnknownBackend, name)
	}
	return r.New(o)
}
