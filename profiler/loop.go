package profiler

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// Sampler is what the loop asks of the GPU sampler: its newest reading and
// a sequence number that changes with each new one.
type Sampler interface {
	Latest() (stream.Snapshot, uint64)
}

// Change is a request to the running loop, applied between steps.
type Change struct {
	Config  *Config
	Backend kernels.Backend // replaces the current backend, which is closed
	Pause   *bool           // stop or resume stepping
}

// Loop runs steps continuously and emits one stream.Sample per step.
type Loop struct {
	Backend kernels.Backend
	Config  Config
	// Changes carries reconfigurations from the UI; may be nil.
	Changes <-chan Change
	// Now is the clock; tests replace it.
	Now func() time.Time
	// Sampler, when set, gives GPU (or host) readings and the free memory
	// the memory model works from.
	Sampler Sampler
	// Device is the index of the GPU the backend runs on.
	Device int
	// Caps is that device's, for the memory model's capability checks
	// (zero: unknown, nothing refused).
	Caps kernels.Caps
	// HeldRanks is how many expert-parallel ranks this process holds (0
	// or 1: one): the memory model counts all of their tokens, as the
	// step's rows do.
	HeldRanks int
	// MinSampleMS folds steps shorter than this into one sample with
	// their mean and spread (0: a sample per step); see window.
	MinSampleMS float64

	dist  Distribution
	steer *Steering
	// layerSteer keeps one controller per model layer when a trace steps
	// through layers: each layer's load differs, and one bias chasing
	// them all in turn would never settle.
	layerSteer map[int]*Steering
	step       int
	pending    []stream.Event
	seq        uint64
	paused     bool

	prepared bool // by Prepare, before Run
}

// Prepare prepares the backend for Config ahead of Run, so that a caller
// can refuse a run that cannot start (out of memory, no device) before it
// creates anything, such as a log. Run prepares when this was not called.
func (l *Loop) Prepare(ctx context.Context) error {
	if err := l.prepare(ctx, l.Config); err != nil {
		return err
	}
	l.prepared = true
	return nil
}

// Run prepares the backend (unless Prepare did) and steps until ctx is
// cancelled or maxSteps steps ran (0: no limit). Samples go to out, which
// Run closes, and the backend is closed at the end. A step that fails with
// ErrOutOfMemory becomes an OOM event and the loop goes on; other errors
// end the run. A cancelled ctx is the end of the run, not an error, even
// in the middle of preparing or of a step.
func (l *Loop) Run(ctx context.Context, out chan<- stream.Sample, maxSteps int) error {
	defer close(out)
	// Not defer l.Backend.Close(): a change may replace the backend.
	defer func() { l.Backend.Close() }()
	if !l.prepared {
		if err := l.prepare(ctx, l.Config); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
	}
	w := &window{min: l.MinSampleMS}
	send := func(ss []stream.Sample) bool {
		for _, s := range ss {
			select {
			case out <- s:
			case <-ctx.Done():
				return false
			}
		}
		return true
	}
	// A run that ends by its step count sends its last window.
	defer func() { send(w.flush()) }()
	for maxSteps <= 0 || l.step < maxSteps {
		if l.paused {
			// Paused: nothing runs until a change or the end.
			select {
			case <-ctx.Done():
				return nil
			case ch := <-l.Changes:
				l.apply(ctx, ch)
			}
			continue
		}
		select {
		case <-ctx.Done():
			return nil
		case ch := <-l.Changes:
			send(w.flush()) // a change ends the window before it
			l.apply(ctx, ch)
			continue
		default:
		}
		s, err := l.Step(ctx)
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return err
		}
		if !send(w.add(s)) {
			return nil
		}
	}
	return nil
}

func (l *Loop) prepare(ctx context.Context, c Config) error {
	if err := c.Validate(); err != nil {
		return err
	}
	d, err := ParseRouting(c.Routing, c.Experts, c.TopK)
	if err != nil {
		return err
	}
	if err := l.Backend.Prepare(ctx, c.Shape()); err != nil {
		return fmt.Errorf("prepare %s for %s: %w", l.Backend.Info().Name, c, err)
	}
	l.Config, l.dist = c, d
	l.steer = NewSteering(Shares(d.Weights(l.step), c.TopK))
	l.steer.Unit = c.Shape().Router.BiasScale()
	l.layerSteer = nil
	return nil
}

func (l *Loop) now() time.Time {
	if l.Now == nil {
		return time.Now()
	}
	return l.Now()
}

func (l *Loop) event(kind, format string, a ...any) {
	l.pending = append(l.pending, stream.Event{Time: l.now(), Kind: kind, Msg: fmt.Sprintf(format, a...)})
}

// apply switches config or backend; when the new one cannot be prepared the
// old one is restored and the failure is an event, so the run goes on.
func (l *Loop) apply(ctx context.Context, ch Change) {
	if ch.Pause != nil {
		l.paused = *ch.Pause
		if ch.Config == nil && ch.Backend == nil {
			return
		}
	}
	old, oldB := l.Config, l.Backend
	if ch.Backend != nil {
		l.Backend = ch.Backend
	}
	next := l.Config
	if ch.Config != nil {
		next = *ch.Config
	}
	if err := l.prepare(ctx, next); err != nil {
		kind := stream.EventError
		if errors.Is(err, kernels.ErrOutOfMemory) {
			kind = stream.EventOOM
		}
		l.event(kind, "change refused: %v", err)
		if ch.Backend != nil {
			ch.Backend.Close()
			l.Backend = oldB
		}
		if err := l.prepare(ctx, old); err != nil {
			l.event(stream.EventError, "restoring %s: %v", old, err)
		}
		return
	}
	if ch.Backend != nil {
		oldB.Close()
		l.event(stream.EventBackend, "backend %s", l.Backend.Info().Name)
	}
	if ch.Config != nil {
		l.event(stream.EventConfig, "config %s routing %s", l.Config, l.Config.Routing)
	}
}

// Step runs one step and builds its Sample.
func (l *Loop) Step(ctx context.Context) (stream.Sample, error) {
	shares := Shares(l.dist.Weights(l.step), l.Config.TopK)
	s := stream.Sample{Time: l.now(), Step: l.step, Backend: l.Backend.Info().Name, Config: l.Config.Layer(), Target: shares}
	steer := l.steer
	if ld, ok := l.dist.(Layered); ok {
		layer := ld.Layer(l.step)
		s.LayerIndex = &layer
		if l.layerSteer == nil {
			l.layerSteer = map[int]*Steering{}
		}
		if steer = l.layerSteer[layer]; steer == nil {
			steer = NewSteering(shares)
			l.layerSteer[layer] = steer
		}
	}
	l.step++
	res, err := l.Backend.Step(ctx, kernels.StepInput{Bias: steer.Bias()})
	if errors.Is(err, kernels.ErrOutOfMemory) {
		l.event(stream.EventOOM, "step %d: %v", s.Step, err)
		s.Skipped = true
		err = nil
	} else if err == nil {
		FillStep(&s, l.Config.Shape(), res)
		steer.Update(shares, res.Rows)
	}
	l.attachReadings(&s)
	s.Events, l.pending = l.pending, nil
	return s, err
}

// attachReadings adds the newest sampler reading, if new, and the memory
// model at the free memory it reports.
func (l *Loop) attachReadings(s *stream.Sample) {
	if l.Sampler == nil {
		return
	}
	snap, seq := l.Sampler.Latest()
	if seq != l.seq {
		l.seq = seq
		s.GPU = &snap
	}
	free, total, ok := snap.FreeBytes(l.Device)
	if !ok || s.Rows == nil {
		return
	}
	// A GPU backend's headroom is the GPU's: when the sampler fell back to
	// the host (no NVML, or it does not list the device), there is none.
	if r, known := kernels.Lookup(l.Backend.Info().Name); known && r.NeedsGPU && snap.Host != nil {
		return
	}
	c := l.Config
	if l.HeldRanks > 1 {
		c.Tokens *= l.HeldRanks
	}
	m := Model(c, s.Rows, l.Backend.Info().Name, l.Caps, free, total)
	m.Host = snap.Host != nil
	s.Memory = []stream.Memory{m}
}

// FillStep derives a Sample's timing fields from a backend's result.
// Overlapped phases (the shared experts on their own stream) keep their
// start; the step's time is its wall time, which the sequential phases
// add up to, not the sum of every phase.
func FillStep(s *stream.Sample, sh kernels.Shape, res kernels.StepResult) {
	s.Rows = res.Rows
	s.Phases = PhasesOf(res.Phases, 0)
	s.StepMS = s.Phases.Total(0)
	if res.Devices != nil {
		fillDevices(s, sh, res.Devices)
	}
	for _, o := range res.Overlapped {
		start, ms := float64(o.Start)/1e6, float64(o.Time)/1e6
		s.Phases = append(s.Phases, stream.PhaseTime{Phase: overlappedName(o.Name), MS: ms, StartMS: &start})
		s.StepMS = max(s.StepMS, start+ms)
	}
	if res.Devices == nil {
		work := PhaseWork(dimsOf(sh), res.Rows)
		for i := range s.Phases {
			w := work[s.Phases[i].Phase]
			s.Phases[i].Bytes, s.Phases[i].FLOPs = w.Bytes, w.FLOPs
		}
	}
	s.Dropped = res.Dropped
	s.Imbalance = stream.Imbalance(res.Rows)
	// FLOPs from the rows that ran: under expert parallelism the layer's
	// tokens are every rank's, and each rank routes and runs the shared
	// experts over its own.
	rows := 0
	for _, r := range res.Rows {
		rows += r
	}
	gemm := sh.ExpertFLOPs(rows)
	devices := float64(max(1, len(res.Devices)))
	other := (sh.RouterFLOPs() + sh.SharedFLOPs()) * devices
	if s.StepMS > 0 {
		s.TFLOPS = (gemm + other) / (s.StepMS * 1e9)
	}
	if g := gemmMS(s.Phases); g > 0 {
		s.GEMMTFLOPS = gemm / (g * 1e9)
	}
	if res.ExpertGEMM != nil {
		s.ExpertMS = make([]float64, len(res.ExpertGEMM))
		for i, d := range res.ExpertGEMM {
			s.ExpertMS[i] = float64(d) / 1e6
		}
	}
}

// dimsOf is what the roofline needs of a shape.
func dimsOf(sh kernels.Shape) LayerDims {
	return LayerDims{Tokens: sh.Tokens, Hidden: sh.Hidden, FFN: sh.FFN, Experts: sh.Experts, TopK: sh.TopK,
		ElemBytes: sh.DType.Size(), Gated: sh.Act.Gated(), SharedFFN: sh.SharedWidth()}
}

// overlappedName is the stream's name for a backend's overlapped phase.
func overlappedName(name string) string {
	if name == kernels.PhaseShared {
		return stream.PhaseShared
	}
	return name
}

// fillDevices takes each device's phases and traffic; the step's wall
// time is its slowest device's. Each device's work is its own: its tokens
// through the router, the rows it ran through its experts, and in
// dispatch and combine the bytes it sent to the others.
func fillDevices(s *stream.Sample, sh kernels.Shape, devs []kernels.DeviceStep) {
	s.Phases, s.StepMS, s.Ranks = nil, 0, nil
	for _, d := range devs {
		work := map[string]Work{}
		if d.Rows != nil {
			work = PhaseWork(dimsOf(sh), d.Rows)
		}
		work[stream.PhaseDispatch] = Work{Bytes: float64(d.SentBytes)}
		work[stream.PhaseCombine] = Work{Bytes: float64(d.SentBytes)}
		total := 0.0
		for _, p := range d.Phases {
			ms := float64(p.Time) / 1e6
			w := work[p.Name]
			s.Phases = append(s.Phases, stream.PhaseTime{Phase: p.Name, Device: d.Device, MS: ms, Bytes: w.Bytes, FLOPs: w.FLOPs})
			total += ms
		}
		s.StepMS = max(s.StepMS, total)
		s.Ranks = append(s.Ranks, stream.RankStat{Rank: d.Device, RecvTokens: d.RecvTokens, RecvRows: d.RecvRows,
			SentBytes: d.SentBytes, SavedBytes: d.SavedBytes})
	}
}

// gemmMS is the expert GEMMs' time: gemm1+gemm2 of the slowest device.
func gemmMS(p stream.Phases) float64 {
	g := 0.0
	for _, d := range p.Devices() {
		g = max(g, p.MS(stream.PhaseGEMM1, d)+p.MS(stream.PhaseGEMM2, d))
	}
	return g
}
