package profiler

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"
	"sync"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// Live steers a running Loop from a UI. Each change is validated and
// checked against the memory model first: one predicted to run out of
// memory is refused with the numbers, not attempted. Accepted changes are
// queued for the loop, which applies them between steps, so no call here
// waits on a step.
type Live struct {
	mu       sync.Mutex
	changes  chan Change
	cfg      Config
	backend  string
	backends []string
	open     func(string) (kernels.Backend, error)
	mem      *stream.Memory
	counts   []int
	paused   bool
}

// NewLive returns the controller and the channel to give Loop.Changes.
func NewLive(cfg Config, backend string, backends []string, open func(string) (kernels.Backend, error)) (*Live, <-chan Change) {
	ch := make(chan Change, 4)
	return &Live{changes: ch, cfg: cfg, backend: backend, backends: backends, open: open}, ch
}

// Observe records what the newest sample says about memory and load.
func (l *Live) Observe(s stream.Sample) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if m := s.Mem(0); m != nil {
		l.mem = m
	}
	if s.Rows != nil {
		l.counts = s.Rows
	}
}

// Paused says whether the loop was asked to pause.
func (l *Live) Paused() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.paused
}

func (l *Live) send(c Change) error {
	select {
	case l.changes <- c:
		return nil
	default:
		return errors.New("busy applying the last change; try again in a moment")
	}
}

// TogglePause pauses or resumes stepping.
func (l *Live) TogglePause() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	p := !l.paused
	if err := l.send(Change{Pause: &p}); err != nil {
		return "", err
	}
	l.paused = p
	if p {
		return "paused", nil
	}
	return "running", nil
}

// NextBackend switches to the next backend in the list.
func (l *Live) NextBackend() (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.backends) < 2 {
		return "", fmt.Errorf("no other backend here (%s only)", l.backend)
	}
	next := l.backends[0]
	for i, b := range l.backends {
		if b == l.backend {
			next = l.backends[(i+1)%len(l.backends)]
		}
	}
	if err := l.fits(next, l.cfg); err != nil {
		return "", err
	}
	b, err := l.open(next)
	if err != nil {
		return "", fmt.Errorf("backend %s: %w", next, err)
	}
	if err := l.send(Change{Backend: b}); err != nil {
		b.Close()
		return "", err
	}
	l.backend = next
	return "switching to " + next, nil
}

// NextRouting moves to the next of RoutingNames.
func (l *Live) NextRouting() (string, error) {
	l.mu.Lock()
	cur := l.cfg.Routing
	l.mu.Unlock()
	next := RoutingNames[0]
	for i, r := range RoutingNames {
		if r == cur {
			next = RoutingNames[(i+1)%len(RoutingNames)]
		}
	}
	return l.change(func(c *Config) { c.Routing = next })
}

// ScaleTokens multiplies the token count by num/den.
func (l *Live) ScaleTokens(num, den int) (string, error) {
	return l.change(func(c *Config) { c.Tokens = max(1, c.Tokens*num/den) })
}

// Skew makes the load more (up) or less uneven.
func (l *Live) Skew(up bool) (string, error) {
	l.mu.Lock()
	next, err := SkewRouting(l.cfg.Routing, up)
	l.mu.Unlock()
	if err != nil {
		return "", err
	}
	return l.change(func(c *Config) { c.Routing = next })
}

func (l *Live) change(edit func(*Config)) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	next := l.cfg
	edit(&next)
	if err := next.Validate(); err != nil {
		return "", err
	}
	if err := l.fits(l.backend, next); err != nil {
		return "", err
	}
	if err := l.send(Change{Config: &next}); err != nil {
		return "", err
	}
	l.cfg = next
	return fmt.Sprintf("applying T=%d routing %s", next.Tokens, next.Routing), nil
}

// fits refuses a backend and config whose predicted peak exceeds what is
// free plus what the running backend would release. The load shares are
// the newest step's; the target's when none ran yet.
func (l *Live) fits(backend string, c Config) error {
	if l.mem == nil {
		return nil // nothing known yet: let the loop try, it turns an OOM into an event
	}
	counts := l.counts
	if d, err := ParseRouting(c.Routing, c.Experts, c.TopK); err == nil && (counts == nil || c.Routing != l.cfg.Routing) {
		counts, _ = countsFor(d, c)
	}
	need, err := Peak(backend, c, scaleCounts(counts, c.Tokens*c.TopK))
	if err != nil {
		return err
	}
	avail := l.mem.FreeBytes + l.mem.OwnBytes
	if need > avail {
		return fmt.Errorf("refused: %s at T=%d needs %.1f GiB, %.1f GiB available (out of memory predicted)",
			backend, c.Tokens, float64(need)/(1<<30), float64(avail)/(1<<30))
	}
	return nil
}

// SkewRouting turns a distribution's skew up or down: zipf's exponent by
// 0.2, a hot expert's share by 0.1; uniform becomes zipf:0.2 going up.
func SkewRouting(spec string, up bool) (string, error) {
	name, arg, _ := strings.Cut(spec, ":")
	step := func(v, by, lo, hi float64) float64 {
		if !up {
			by = -by
		}
		return math.Round(math.Max(lo, math.Min(hi, v+by))*100) / 100
	}
	switch name {
	case "uniform":
		if !up {
			return "", errors.New("uniform is as even as routing gets")
		}
		return "zipf:0.2", nil
	case "zipf":
		s, err := strconv.ParseFloat(arg, 64)
		if err != nil {
			return "", err
		}
		n := step(s, 0.2, 0, 10)
		if n == 0 {
			return "uniform", nil
		}
		return "zipf:" + strconv.FormatFloat(n, 'f', -1, 64), nil
	case "hot", "drift":
		parts := strings.Split(arg, ":")
		i := 1
		if name == "drift" {
			i = 0
			if arg == "" {
				parts = []string{"0.5"}
			}
		}
		if i >= len(parts) {
			return "", fmt.Errorf("cannot skew %q", spec)
		}
		p, err := strconv.ParseFloat(parts[i], 64)
		if err != nil {
			return "", err
		}
		parts[i] = strconv.FormatFloat(step(p, 0.1, 0.1, 1), 'f', -1, 64)
		return name + ":" + strings.Join(parts, ":"), nil
	}
	return "", fmt.Errorf("%s has no skew to change; press d for a distribution that has", spec)
}
