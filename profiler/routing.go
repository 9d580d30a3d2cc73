package profiler

import (
	"errors"
	"fmt"
	"math"
	"strconv"
	"strings"

	"github.com/moetop/moetop/trace"
)

// SeedUneven is the founding report's per-expert load, repeated for more
// experts.
var SeedUneven = []float64{130759, 78925, 35368, 90425, 1433, 120455, 64589, 2134}

// RoutingNames lists the distributions `d` cycles through in the TUI.
var RoutingNames = []string{"uniform", "zipf:1.2", "seed-uneven", "hot:0:0.4", "drift"}

// Distribution is a target share of routed rows per expert, which may move
// from step to step.
type Distribution interface {
	// Name is the spelling ParseRouting accepts.
	Name() string
	// Weights are the unnormalised target load of each expert at a step.
	Weights(step int) []float64
}

// ParseRouting reads uniform, zipf:S, seed-uneven, hot:E:P, drift[:P[:STEPS]],
// trace:FILE or trace@LAYERS:FILE (LAYERS "all" or a layer number, see
// TraceRouting) for a layer of the given experts and top-k.
func ParseRouting(spec string, experts, topK int) (Distribution, error) {
	name, arg, _ := strings.Cut(spec, ":")
	switch name {
	case "uniform":
		if arg != "" {
			return nil, fmt.Errorf("uniform takes no argument, got %q", spec)
		}
		return fixedDist{spec, ones(experts)}, nil
	case "seed-uneven":
		if arg != "" {
			return nil, fmt.Errorf("seed-uneven takes no argument, got %q", spec)
		}
		w := make([]float64, experts)
		for i := range w {
			w[i] = SeedUneven[i%len(SeedUneven)]
		}
		return fixedDist{spec, w}, nil
	case "zipf":
		s, err := strconv.ParseFloat(arg, 64)
		if err != nil || s < 0 || s > 10 || math.IsNaN(s) {
			return nil, fmt.Errorf("zipf:S needs an exponent S in 0..10, got %q", spec)
		}
		w := make([]float64, experts)
		for i := range w {
			w[i] = 1 / math.Pow(float64(i+1), s)
		}
		return fixedDist{spec, w}, nil
	case "hot":
		es, ps, ok := strings.Cut(arg, ":")
		e, err1 := strconv.Atoi(es)
		p, err2 := strconv.ParseFloat(ps, 64)
		if !ok || err1 != nil || err2 != nil || e < 0 || e >= experts || !(p > 0 && p <= 1) {
			return nil, fmt.Errorf("hot:E:P needs an expert E in 0..%d and a share P in (0,1], got %q", experts-1, spec)
		}
		return fixedDist{spec, hotWeights(experts, e, p)}, nil
	case "drift":
		d := driftDist{spec: spec, experts: experts, share: 0.5, period: 100}
		if arg != "" {
			ps, steps, _ := strings.Cut(arg, ":")
			p, err := strconv.ParseFloat(ps, 64)
			if err != nil || !(p > 0 && p <= 1) {
				return nil, fmt.Errorf("drift:P[:STEPS] needs a share P in (0,1], got %q", spec)
			}
			d.share = p
			if steps != "" {
				n, err := strconv.Atoi(steps)
				if err != nil || n <= 0 {
					return nil, fmt.Errorf("drift:P:STEPS needs a positive step count, got %q", spec)
				}
				d.period = n
			}
		}
		return d, nil
	case "trace":
		if arg == "" {
			return nil, errors.New("trace:FILE needs a file name")
		}
		return LoadTrace(arg, "", experts)
	}
	if layers, ok := strings.CutPrefix(name, "trace@"); ok {
		if arg == "" {
			return nil, fmt.Errorf("%s:FILE needs a file name", name)
		}
		return LoadTrace(arg, layers, experts)
	}
	return nil, fmt.Errorf("unknown routing %q (want uniform, zipf:S, seed-uneven, hot:E:P, drift[:P[:STEPS]], trace:FILE or trace@LAYERS:FILE)", spec)
}

type fixedDist struct {
	spec string
	w    []float64
}

func (d fixedDist) Name() string          { return d.spec }
func (d fixedDist) Weights(int) []float64 { return d.w }

// driftDist makes one expert hot and moves it to the next every period steps.
type driftDist struct {
	spec    string
	experts int
	share   float64
	period  int
}

func (d driftDist) Name() string { return d.spec }
func (d driftDist) Weights(step int) []float64 {
	return hotWeights(d.experts, (step/d.period)%d.experts, d.share)
}

func ones(n int) []float64 {
	w := make([]float64, n)
	for i := range w {
		w[i] = 1
	}
	return w
}

// hotWeights gives expert hot the share p and the rest equal shares of 1−p.
func hotWeights(experts, hot int, p float64) []float64 {
	w := make([]float64, experts)
	if experts == 1 {
		w[0] = 1
		return w
	}
	for i := range w {
		w[i] = (1 - p) / float64(experts-1)
	}
	w[hot] = p
	return w
}

// Shares normalises weights to sum to 1 and caps each at 1/topK, the most
// one expert can take when each token picks topK distinct experts, giving
// the excess to the others in proportion to their weight.
func Shares(w []float64, topK int) []float64 {
	s := make([]float64, len(w))
	sum := 0.0
	for _, x := range w {
		sum += x
	}
	if sum <= 0 {
		for i := range s {
			s[i] = 1 / float64(len(s))
		}
		return s
	}
	for i, x := range w {
		s[i] = x / sum
	}
	limit := 1 / float64(topK)
	capped := make([]bool, len(s))
	for iter := 0; iter < len(s); iter++ {
		excess, free := 0.0, 0.0
		for i, x := range s {
			if !capped[i] && x > limit {
				excess += x - limit
				s[i] = limit
				capped[i] = true
			}
		}
		if excess == 0 {
			break
		}
		for i, x := range s {
			if !capped[i] {
				free += x
			}
		}
		if free == 0 {
			break
		}
		for i := range s {
			if !capped[i] {
				s[i] += excess * s[i] / free
			}
		}
	}
	return s
}

// ErrCountsCannotFit is returned when no split of the rows keeps every
// expert at or below the cap: more rows than experts × tokens, or a load
// whose excess has no expert of nonzero weight to go to.
var ErrCountsCannotFit = errors.New("fixed counts cannot fit")

// FixedCounts splits rows over experts exactly as count_rows in
// shared/peer/torch_moe_peer.py does without a cap: uniform gives the
// remainder to the first experts; weighted distributions take
// floor(w·rows/Σw) and give the remainder to expert 0. An expert may get
// more rows than there are tokens, which no router can produce; use
// CappedCounts for a layer's load.
func FixedCounts(d Distribution, rows int) ([]int, error) {
	return countRows(d, rows, -1)
}

// CappedCounts is the load bench times, the peer's
// count_rows(dist, tokens×topK, experts, cap=tokens): FixedCounts' split,
// then no expert above tokens rows, since a router picks an expert at most
// once per token. The excess is spread over the experts below the cap in
// proportion to their weights, the remainder to the first with room, until
// none is over. The float operations follow the peer's in the same order so
// that the two agree to the row.
func CappedCounts(d Distribution, tokens, topK int) ([]int, error) {
	if tokens < 1 || topK < 1 {
		return nil, fmt.Errorf("fixed counts: tokens (%d) and top-k (%d) must be at least 1", tokens, topK)
	}
	return countRows(d, tokens*topK, tokens)
}

// countRows is the peer's count_rows; cap < 0 means none.
func countRows(d Distribution, rows, cap int) ([]int, error) {
	if _, ok := d.(fixedDist); !ok {
		return nil, fmt.Errorf("fixed counts need a fixed distribution, not %q", d.Name())
	}
	w := d.Weights(0)
	experts := len(w)
	if experts == 0 || rows < 0 {
		return nil, fmt.Errorf("fixed counts: %d rows over %d experts", rows, experts)
	}
	c := make([]int, experts)
	if d.Name() == "uniform" {
		// The peer spreads a uniform load's excess by weight 1 each.
		w = ones(experts)
		for i := range c {
			c[i] = rows / experts
		}
		for i := 0; i < rows%experts; i++ {
			c[i]++
		}
	} else {
		tot := 0.0
		for _, x := range w {
			tot += x
		}
		if !(tot > 0) || math.IsInf(tot, 0) {
			return nil, fmt.Errorf("fixed counts: %s has weights summing to %g", d.Name(), tot)
		}
		sum := 0
		for i, x := range w {
			c[i] = int(x * float64(rows) / tot)
			sum += c[i]
		}
		c[0] += rows - sum
	}
	if cap < 0 {
		return c, nil
	}
	if cap*experts < rows {
		return nil, fmt.Errorf("%w: %d rows over %d experts of at most %d rows each", ErrCountsCannotFit, rows, experts, cap)
	}
	// Each pass caps every expert over and fills others; one that goes over
	// reaches the cap next pass and stays there, so experts+1 passes suffice.
	for pass := 0; maxOf(c) > cap; pass++ {
		if pass > experts {
			return nil, fmt.Errorf("%w: %s over %d rows did not settle", ErrCountsCannotFit, d.Name(), rows)
		}
		excess := 0
		for i, x := range c {
			if x > cap {
				excess += x - cap
				c[i] = cap
			}
		}
		var free []int
		ws := 0.0
		for e, x := range c {
			if x < cap {
				free = append(free, e)
				ws += w[e]
			}
		}
		if !(ws > 0) {
			// The peer divides by zero here.
			return nil, fmt.Errorf("%w: %s leaves %d rows over the cap of %d and no other expert has weight",
				ErrCountsCannotFit, d.Name(), excess, cap)
		}
		left := excess
		for _, e := range free {
			add := int(w[e] * float64(excess) / ws)
			c[e] += add
			left -= add
		}
		for _, e := range free {
			if left == 0 {
				break
			}
			if room := cap - c[e]; room > 0 {
				t := min(room, left)
				c[e] += t
				left -= t
			}
		}
		c[0] += left // only when every free expert filled up; the next pass caps it
	}
	for e, x := range c {
		if x < 0 {
			return nil, fmt.Errorf("fixed counts: %s gives expert %d %d rows", d.Name(), e, x)
		}
	}
	return c, nil
}

func maxOf(c []int) int {
	m := c[0]
	for _, x := range c[1:] {
		m = max(m, x)
	}
	return m
}

// traceDist replays per-step expert counts recorded from a real model,
// one layer or every layer in turn (trace.Replay).
type traceDist struct {
	spec   string
	replay *trace.Replay
}

func (d traceDist) Name() string { return d.spec }

// Weights are the trace's own counts; callers only read them.
func (d traceDist) Weights(step int) []float64 {
	c, _ := d.replay.At(step)
	return c
}

func (d traceDist) Layer(step int) int {
	_, l := d.replay.At(step)
	return l
}

func (d traceDist) Replay() *trace.Replay { return d.replay }

// Layered is a distribution replayed from a trace file: it says which of
// the model's layers a step replays, and its Replay gives the whole model's
// load at any step (for a layers × experts view).
type Layered interface {
	Distribution
	Layer(step int) int
	Replay() *trace.Replay
}

// TraceRouting spells the routing that replays a trace file: layers is ""
// (a one-layer trace's layer, or all layers of a larger one), "all", or a
// layer number of the model. ParseRouting reads it back.
func TraceRouting(file, layers string) string {
	if layers == "" {
		return "trace:" + file
	}
	return "trace@" + layers + ":" + file
}

// LoadTrace reads a v1 or v2 trace (docs/trace-format.md) for a layer of
// the given experts, replaying the layers that layers selects ("", "all"
// or a layer number).
func LoadTrace(path, layers string, experts int) (Distribution, error) {
	sel, err := trace.ParseSelection(layers)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	t, err := trace.ReadFile(path)
	if err != nil {
		return nil, err
	}
	if t.Experts != experts {
		return nil, fmt.Errorf("trace %s has %d experts, the layer has %d", path, t.Experts, experts)
	}
	r, err := t.Replay(sel)
	if err != nil {
		return nil, fmt.Errorf("trace %s: %w", path, err)
	}
	return traceDist{spec: TraceRouting(path, layers), replay: r}, nil
}
