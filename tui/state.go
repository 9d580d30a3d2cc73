package tui

import (
	"math"
	"sort"
	"time"

	"github.com/moetop/moetop/stream"
)

// historyLen is how many points the sparklines keep.
const historyLen = 240

// The heatmap keeps the newest rows of at most maxHeatLayers model layers
// of at most maxHeatExperts experts each, whatever a trace or a damaged log
// holds (the largest models have about a hundred layers of a few hundred
// experts); maxDevices bounds the GPUs whose histories are kept.
const (
	maxHeatLayers  = 256
	maxHeatExperts = 4096
	maxDevices     = 64
)

// ring is a fixed-size history of readings.
type ring struct {
	v    []float64
	next int
	full bool
}

func newRing(n int) *ring { return &ring{v: make([]float64, n)} }

func (r *ring) push(x float64) {
	r.v[r.next] = x
	r.next = (r.next + 1) % len(r.v)
	r.full = r.full || r.next == 0
}

// values returns the history oldest first.
func (r *ring) values() []float64 {
	if !r.full {
		return append([]float64(nil), r.v[:r.next]...)
	}
	return append(append([]float64(nil), r.v[r.next:]...), r.v[:r.next]...)
}

// tail returns the last n values, oldest first.
func (r *ring) tail(n int) []float64 {
	v := r.values()
	if len(v) > n {
		v = v[len(v)-n:]
	}
	return v
}

// state is what every panel reads: one place for the window size and the
// statistics, rather than threading them through each call (as gh-dash's
// context does).
type state struct {
	width, height int
	header        stream.Header
	mode          string
	paused        bool
	position      string
	status        string
	statusErr     bool
	ended         bool

	// Newest readings. last has rows; gpu and mem are the newest non-nil.
	last    stream.Sample
	hasLast bool
	gpu     *stream.Snapshot
	mem     *stream.Memory
	mems    []stream.Memory // every device's, newest
	first   time.Time
	samples int

	imbalance, stepMS, tflops *ring
	util, memUtil, power      *ring
	temp, smClock             *ring
	memUsed                   *ring              // device 0's used bytes, from Sample.Memory
	devUtil                   []*ring            // each GPU's utilisation, by its place in the reading
	phaseSum                  map[string]float64 // device 0's, by phase
	phaseCount                map[string]int     // finite times summed per phase
	phaseN                    int
	stepTimes                 []time.Time // for steps per second
	stepCounts                []int       // the steps each of stepTimes' samples stands for
	expertMS                  []float64   // newest per-expert GEMM times (not every step has them)
	events                    []stream.Event

	// heat is the newest rows per expert of each model layer a layered
	// trace replayed; heatAt when each was last seen, counted in layered
	// steps (heatSeq), so that the layer seen longest ago gives way when
	// there are too many.
	heat    map[int][]int
	heatAt  map[int]int
	heatSeq int
}

func newState() *state {
	s := &state{}
	s.reset()
	return s
}

// reset clears the statistics ('r'), keeping the newest readings.
func (s *state) reset() {
	for _, r := range []**ring{&s.imbalance, &s.stepMS, &s.tflops, &s.util, &s.memUtil, &s.power, &s.temp, &s.smClock, &s.memUsed} {
		*r = newRing(historyLen)
	}
	s.phaseSum, s.phaseCount, s.phaseN = map[string]float64{}, map[string]int{}, 0
	s.devUtil = nil
	s.stepTimes, s.stepCounts = nil, nil
	s.samples = 0
	s.first = time.Time{}
}

// add folds one sample into the state.
func (s *state) add(x stream.Sample) {
	if x.Reset {
		s.reset()
		s.events = nil
		s.heat, s.heatAt = nil, nil // the layers' loads were of another time
	}
	if s.first.IsZero() {
		s.first = x.Time
	}
	s.samples++
	s.events = append(s.events, x.Events...)
	if len(s.events) > 50 {
		s.events = s.events[len(s.events)-50:]
	}
	if x.GPU != nil {
		s.gpu = x.GPU
		s.addGPU(x.GPU)
	}
	if m := x.Mem(0); m != nil {
		s.mem = m
		s.memUsed.push(float64(m.UsedBytes))
	}
	if len(x.Memory) > 0 {
		s.mems = x.Memory
	}
	if x.Skipped || x.Rows == nil {
		s.last.Events = x.Events
		return
	}
	s.last, s.hasLast = x, true
	if x.LayerIndex != nil {
		s.addLayer(*x.LayerIndex, x.Rows)
	}
	if x.ExpertMS != nil {
		s.expertMS = x.ExpertMS
	}
	s.imbalance.push(x.Imbalance)
	s.stepMS.push(x.StepMS)
	s.tflops.push(x.TFLOPS)
	for _, p := range x.Phases {
		// A time that cannot be real (NaN, Inf) is missing, not a reason
		// for every later average to read NaN.
		if p.Device == 0 && finite(p.MS) {
			s.phaseSum[p.Phase] += p.MS
			s.phaseCount[p.Phase]++
		}
	}
	s.phaseN++
	s.stepTimes = append(s.stepTimes, x.Time)
	s.stepCounts = append(s.stepCounts, x.StepCount()) // a window of short steps is one sample of many
	if len(s.stepTimes) > 4096 {
		s.stepTimes = s.stepTimes[len(s.stepTimes)-2048:]
		s.stepCounts = s.stepCounts[len(s.stepCounts)-2048:]
	}
}

// addLayer keeps rows as layer's newest load. A layer of another number of
// experts than those kept starts the map afresh (a new trace or shape).
func (s *state) addLayer(layer int, rows []int) {
	rows = rows[:min(len(rows), maxHeatExperts)]
	for _, old := range s.heat {
		if len(old) != len(rows) {
			s.heat, s.heatAt = nil, nil
		}
		break
	}
	if s.heat == nil {
		s.heat, s.heatAt = map[int][]int{}, map[int]int{}
	}
	if _, ok := s.heat[layer]; !ok && len(s.heat) >= maxHeatLayers {
		oldest, at := 0, math.MaxInt
		for l, n := range s.heatAt {
			if n < at || (n == at && l < oldest) {
				oldest, at = l, n
			}
		}
		delete(s.heat, oldest)
		delete(s.heatAt, oldest)
	}
	s.heat[layer] = append(s.heat[layer][:0], rows...)
	s.heatSeq++
	s.heatAt[layer] = s.heatSeq
}

func (s *state) addGPU(g *stream.Snapshot) {
	if g.Host != nil {
		if g.Host.CPUUtilPct != nil {
			s.util.push(*g.Host.CPUUtilPct)
		}
		if g.Host.MemTotalBytes > 0 {
			s.memUtil.push(100 * float64(hostUsed(g.Host)) / float64(g.Host.MemTotalBytes))
		}
		return
	}
	if len(g.Devices) == 0 {
		return
	}
	// Every GPU's utilisation, for the panel's line per device.
	for len(s.devUtil) < min(len(g.Devices), maxDevices) {
		s.devUtil = append(s.devUtil, newRing(historyLen))
	}
	for i, d := range g.Devices[:min(len(g.Devices), len(s.devUtil))] {
		if d.UtilPct != nil {
			s.devUtil[i].push(float64(*d.UtilPct))
		}
	}
	d := g.Devices[0] // the backend runs on the first device it sees
	push := func(r *ring, p *uint32) {
		if p != nil {
			r.push(float64(*p))
		}
	}
	push(s.util, d.UtilPct)
	push(s.memUtil, d.MemUtilPct)
	push(s.temp, d.TempC)
	push(s.smClock, d.SMClockMHz)
	if d.PowerW != nil {
		s.power.push(*d.PowerW)
	}
}

// hostUsed is the host memory in use; 0 when a reading says more is
// available than there is (the difference would wrap around).
func hostUsed(h *stream.Host) uint64 {
	if h.MemAvailableBytes > h.MemTotalBytes {
		return 0
	}
	return h.MemTotalBytes - h.MemAvailableBytes
}

// phaseAvg is device 0's mean time in phase since the last reset.
func (s *state) phaseAvg(phase string) float64 {
	if n := s.phaseCount[phase]; n > 0 {
		return s.phaseSum[phase] / float64(n)
	}
	return math.NaN()
}

// stepsPerSecond counts steps in the last second of sample time; a
// sample that folds a window of short steps counts each of them.
func (s *state) stepsPerSecond() float64 {
	n := len(s.stepTimes)
	if n < 2 {
		return 0
	}
	last := s.stepTimes[n-1]
	// Times out of order (a damaged log) make the search meaningless but
	// must not take it out of range.
	i := min(n-1, sort.Search(n, func(i int) bool { return !s.stepTimes[i].Before(last.Add(-time.Second)) }))
	span := last.Sub(s.stepTimes[i]).Seconds()
	if span <= 0 {
		span = last.Sub(s.stepTimes[0]).Seconds()
		i = 0
	}
	if span <= 0 {
		return 0
	}
	// The steps after the span's first sample ran within it.
	steps := 0
	for _, c := range s.stepCounts[i+1:] {
		steps += c
	}
	return float64(steps) / span
}

// uptime is sample time since the first sample (so a replay shows the
// recording's own clock).
func (s *state) uptime() time.Duration {
	if !s.hasLast || s.first.IsZero() {
		return 0
	}
	if st := s.header.Start; !st.IsZero() && !s.last.Time.Before(st) {
		return s.last.Time.Sub(st) // the run's own clock, also after a replay's jump
	}
	return max(0, s.last.Time.Sub(s.first))
}
