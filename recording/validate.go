package recording

import (
	"fmt"
	"math"

	"github.com/moetop/moetop/stream"
)

// What a sample may hold before its numbers stop being real. moetop itself
// refuses layers beyond these (profiler's config), so only a damaged or
// hand-made log reaches them.
const (
	// maxExperts is the most experts a layer may have.
	maxExperts = 1 << 16
	// maxDevice is the highest device (rank) number.
	maxDevice = 1<<12 - 1
	// maxList bounds every list in a sample (rows, phases, readings…): a
	// line of 16 MiB could otherwise hold millions of entries for the view
	// to draw.
	maxList = 1 << 16
	// maxMS is a week: no step or phase takes longer.
	maxMS = 7 * 24 * 3600 * 1e3
	// maxRows is the most rows a step routes (tokens × top-k fits an
	// int32 index on the GPU).
	maxRows = math.MaxInt32
)

// The reasons a sample line is skipped. Each is a fixed phrase so that
// lines skipped for the same reason are counted together.
const (
	reasonTime      = "a time that is negative, not a number or over a week"
	reasonRate      = "a TFLOP/s that is negative or not a number"
	reasonImbalance = "an imbalance that is negative, not a number or above the number of experts"
	reasonFewRows   = "fewer rows than experts"
	reasonRowValue  = "a negative or impossibly large row, token or byte count"
	reasonRowSum    = "rows that do not add up to tokens × top-k"
	reasonStep      = "a negative step or step count"
	reasonDevice    = "a device number below 0 or above 4095"
	reasonList      = "a list of more than 65536 entries"
	reasonLayer     = "a layer shape out of range"
	reasonShare     = "a target share that is negative or not a number"
	reasonReading   = "a memory or device reading that cannot be real"

	reasonSampleJSON = "a sample line that is not valid JSON (or holds a number out of range)"
	reasonEventJSON  = "an event line that is not valid JSON"
	reasonCut        = "a last line cut off (was the recording killed?)"
	reasonOther      = "a line that is neither a sample nor an event"
)

// invalidError is a sample whose numbers cannot be real: reason says which
// rule it broke, detail where.
type invalidError struct{ reason, detail string }

func (e *invalidError) Error() string { return e.reason + ": " + e.detail }

func invalid(reason, format string, args ...any) error {
	return &invalidError{reason, fmt.Sprintf(format, args...)}
}

// badMS says whether v cannot be a duration in ms.
func badMS(v float64) bool { return !(v >= 0 && v <= maxMS) } // false for NaN too

// badNonNeg says whether v is negative, NaN or infinite.
func badNonNeg(v float64) bool { return !(v >= 0 && v <= math.MaxFloat64) }

// validate checks that a sample's numbers can be real. Every reader of a
// log (the index that replay uses, Each that summary and export use) skips
// a sample it rejects, so that they all agree on what a log holds, and
// whatever reaches a sink is safe to draw.
func validate(s stream.Sample) error {
	if s.Step < 0 || s.Steps < 0 {
		return invalid(reasonStep, "step %d, steps %d", s.Step, s.Steps)
	}
	for _, l := range []struct {
		name string
		n    int
	}{{"rows", len(s.Rows)}, {"target", len(s.Target)}, {"phases", len(s.Phases)}, {"expert_ms", len(s.ExpertMS)},
		{"memory", len(s.Memory)}, {"events", len(s.Events)}, {"ranks", len(s.Ranks)}} {
		if l.n > maxList {
			return invalid(reasonList, "%d %s", l.n, l.name)
		}
	}
	c := s.Config
	if c.Tokens < 0 || c.Experts < 0 || c.Experts > maxExperts || c.TopK < 0 || (c.Experts > 0 && c.TopK > c.Experts) || c.Hidden < 0 || c.FFN < 0 {
		return invalid(reasonLayer, "%s", c)
	}
	for _, v := range []struct {
		name string
		ms   float64
	}{{"step_ms", s.StepMS}, {"step_min_ms", s.StepMinMS}, {"step_max_ms", s.StepMaxMS}} {
		if badMS(v.ms) {
			return invalid(reasonTime, "%s %v", v.name, v.ms)
		}
	}
	if badNonNeg(s.TFLOPS) || badNonNeg(s.GEMMTFLOPS) {
		return invalid(reasonRate, "tflops %v, gemm_tflops %v", s.TFLOPS, s.GEMMTFLOPS)
	}
	experts := max(len(s.Rows), c.Experts)
	if badNonNeg(s.Imbalance) || s.Imbalance > float64(experts)*(1+1e-9) {
		return invalid(reasonImbalance, "imbalance %v with %d experts", s.Imbalance, experts)
	}
	if s.Dropped < 0 {
		return invalid(reasonRowValue, "dropped %d", s.Dropped)
	}
	single := true // one step on one device: the layer's own accounting holds
	for _, p := range s.Phases {
		if p.Device < 0 || p.Device > maxDevice {
			return invalid(reasonDevice, "phase %s on device %d", p.Phase, p.Device)
		}
		if badMS(p.MS) || (p.StartMS != nil && badMS(*p.StartMS)) {
			return invalid(reasonTime, "phase %s on device %d: %v ms", p.Phase, p.Device, p.MS)
		}
		if badNonNeg(p.Bytes) || badNonNeg(p.FLOPs) {
			return invalid(reasonRate, "phase %s on device %d: %v bytes, %v FLOPs", p.Phase, p.Device, p.Bytes, p.FLOPs)
		}
		single = single && p.Device == 0
	}
	for _, r := range s.Ranks {
		if r.Rank < 0 || r.Rank > maxDevice {
			return invalid(reasonDevice, "rank %d", r.Rank)
		}
		if r.RecvTokens < 0 || r.RecvRows < 0 || r.SentBytes < 0 || r.SavedBytes < 0 {
			return invalid(reasonRowValue, "rank %d: %d tokens and %d rows received, %d bytes sent, %d saved",
				r.Rank, r.RecvTokens, r.RecvRows, r.SentBytes, r.SavedBytes)
		}
	}
	single = single && len(s.Ranks) <= 1
	for e, ms := range s.ExpertMS {
		if badMS(ms) {
			return invalid(reasonTime, "expert %d: %v ms", e, ms)
		}
	}
	for e, x := range s.Target {
		if badNonNeg(x) {
			return invalid(reasonShare, "expert %d: %v", e, x)
		}
	}
	if err := validateRows(s, single); err != nil {
		return err
	}
	for _, m := range s.Memory {
		if m.Device < 0 || m.Device > maxDevice {
			return invalid(reasonDevice, "memory of device %d", m.Device)
		}
		if m.TotalBytes > 0 && (m.UsedBytes > m.TotalBytes || m.FreeBytes > m.TotalBytes) {
			return invalid(reasonReading, "device %d: %d bytes used and %d free of %d", m.Device, m.UsedBytes, m.FreeBytes, m.TotalBytes)
		}
		if len(m.Backends) > maxList {
			return invalid(reasonList, "%d backends in memory", len(m.Backends))
		}
		single = single && m.Device == 0
	}
	for _, e := range s.Events {
		if err := validateEvent(e); err != nil {
			return err
		}
	}
	return validateSnapshot(s.GPU)
}

// validateEvent checks an event. Readers skip a bad event line on its own
// (its step stays), and validate rejects a sample that carries one.
func validateEvent(e stream.Event) error {
	if e.Device < 0 || e.Device > maxDevice {
		return invalid(reasonDevice, "event on device %d", e.Device)
	}
	return nil
}

// validateRows checks the routed rows. Rows cannot be negative, a step
// routes rows to every expert of the layer, and one step on one device
// routes exactly tokens × top-k rows (before a capacity drops any); a
// sample that aggregates steps or ranks, or replays a traced layer, need
// not.
func validateRows(s stream.Sample, single bool) error {
	if s.Rows == nil {
		return nil
	}
	c := s.Config
	if len(s.Rows) < c.Experts {
		return invalid(reasonFewRows, "%d rows for %d experts", len(s.Rows), c.Experts)
	}
	var sum int64
	for e, r := range s.Rows {
		if r < 0 || r > maxRows {
			return invalid(reasonRowValue, "expert %d: %d rows", e, r)
		}
		sum += int64(r)
	}
	if single && s.Steps <= 1 && s.LayerIndex == nil && !s.Skipped && c.Tokens > 0 && c.TopK > 0 {
		if want := int64(c.Tokens) * int64(c.TopK); sum != want {
			return invalid(reasonRowSum, "%d rows, %d tokens × top-k %d = %d", sum, c.Tokens, c.TopK, want)
		}
	}
	return nil
}

// validateSnapshot checks an attached NVML or host reading.
func validateSnapshot(g *stream.Snapshot) error {
	if g == nil {
		return nil
	}
	if len(g.Devices) > maxList {
		return invalid(reasonList, "%d GPUs in a reading", len(g.Devices))
	}
	pct := func(p *uint32) bool { return p != nil && *p > 100 }
	watts := func(w *float64) bool { return w != nil && badNonNeg(*w) }
	over := func(part, total *uint64) bool { return part != nil && total != nil && *total > 0 && *part > *total }
	for _, d := range g.Devices {
		if d.Index < 0 || pct(d.UtilPct) || pct(d.MemUtilPct) || watts(d.PowerW) || watts(d.PowerLimitW) ||
			over(d.MemUsedBytes, d.MemTotalBytes) || over(d.MemFreeBytes, d.MemTotalBytes) {
			return invalid(reasonReading, "GPU %d", d.Index)
		}
		if len(d.Processes) > maxList {
			return invalid(reasonList, "%d processes on GPU %d", len(d.Processes), d.Index)
		}
	}
	if h := g.Host; h != nil {
		if h.CPUs < 0 || (h.MemTotalBytes > 0 && h.MemAvailableBytes > h.MemTotalBytes) ||
			(h.CPUUtilPct != nil && !(*h.CPUUtilPct >= 0 && *h.CPUUtilPct <= 100)) {
			return invalid(reasonReading, "host: %d CPUs, %d of %d bytes available", h.CPUs, h.MemAvailableBytes, h.MemTotalBytes)
		}
	}
	return nil
}
