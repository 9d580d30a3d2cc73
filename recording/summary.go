package recording

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moetop/moetop/stream"
)

// BackendSummary is one backend's share of a run.
type BackendSummary struct {
	Backend    string  `json:"backend"`
	Steps      int     `json:"steps"`
	StepP50MS  float64 `json:"step_p50_ms"`
	StepP90MS  float64 `json:"step_p90_ms"`
	StepP99MS  float64 `json:"step_p99_ms"`
	TFLOPS     float64 `json:"tflops_median"`
	GEMMTFLOPS float64 `json:"gemm_tflops_median"`
	// Phases are the backend's phases on each device, where the log
	// counts their bytes or FLOPs (moetop/2; none in a moetop/1 log).
	Phases []PhaseSummary `json:"phases,omitempty"`
}

// PhaseSummary is one phase on one device under one backend: medians over
// the samples that ran it.
type PhaseSummary struct {
	Phase    string  `json:"phase"`
	Device   int     `json:"device"`
	MedianMS float64 `json:"median_ms"`
	// GBps and TFLOPS are the medians of each sample's bytes and FLOPs
	// over its time (absent where the log counts none).
	GBps   float64 `json:"gbps_median,omitempty"`
	TFLOPS float64 `json:"tflops_median,omitempty"`
	// PctRoofline is the median of each sample's % of its roofline under
	// the header's ceilings, never above 100; Bound is the ceiling
	// ("compute" or "memory") that set most samples' floor; Above says
	// most samples beat their floor, and PctRoofline is then 100. Absent
	// where the log has no ceilings.
	PctRoofline float64 `json:"pct_roofline_median,omitempty"`
	Bound       string  `json:"bound,omitempty"`
	Above       bool    `json:"above_roofline,omitempty"`
}

// Summary is what `moetop summary` reports of a log.
type Summary struct {
	File     string           `json:"file"`
	Header   stream.Header    `json:"header"`
	Duration time.Duration    `json:"duration_ns"`
	Steps    int              `json:"steps"`
	Skipped  int              `json:"steps_skipped"` // OOM or error steps
	Backends []BackendSummary `json:"backends"`
	// MeanShare is each expert's mean share of routed rows (for the
	// layer's first expert count, if it changed).
	MeanShare []float64 `json:"mean_share"`
	// DropRate is rows dropped by a capacity factor over rows routed.
	DropRate           float64        `json:"drop_rate"`
	WorstImbalance     float64        `json:"worst_imbalance"`
	WorstImbalanceStep int            `json:"worst_imbalance_step"`
	LowestHeadroom     *int64         `json:"lowest_headroom_bytes,omitempty"`
	LowestHeadroomStep int            `json:"lowest_headroom_step,omitempty"`
	OOMEvents          []stream.Event `json:"oom_events"`
	// OOMEventsNotListed counts OOM events past the first 100.
	OOMEventsNotListed int `json:"oom_events_not_listed,omitempty"`
	// LinesSkipped counts lines that could not be read or hold a sample
	// whose numbers cannot be real; SkipReasons says why.
	LinesSkipped int          `json:"lines_skipped"`
	SkipReasons  []SkipReason `json:"skip_reasons,omitempty"`
	Warnings     []string     `json:"warnings,omitempty"`
}

// maxOOMListed bounds the OOM events a summary lists; the rest are
// counted.
const maxOOMListed = 100

// maxPhases bounds the (backend, phase, device) a summary keeps medians
// of: a log's phase names are data, and a corrupt one must not make the
// summary grow without end. Eight ranks of nine phases under a few
// backends are far below it.
const maxPhases = 512

// Summarize reads every sample of l once, in memory that does not grow
// with the number of samples.
func Summarize(l *Log) (Summary, error) {
	sum := newSummarizer(l)
	corrupt, err := l.Each(func(_ int, s stream.Sample) error {
		sum.add(s)
		return nil
	})
	if err != nil {
		return sum.Summary, err
	}
	sum.LinesSkipped = corrupt
	sum.SkipReasons = l.Skips
	return sum.done(), nil
}

// summarizer accumulates a Summary sample by sample: percentiles through
// stream.Quantiles, shares as running sums, so a log of millions of
// samples takes no more memory than one of a thousand.
type summarizer struct {
	Summary
	order                    []string
	steps, tflops, gemm      map[string]*stream.Quantiles
	stepsOf                  map[string]int // a window of short steps counts each
	first, last              time.Time
	shares                   []float64
	sharesN, dropped, routed int
	phases                   map[backendPhase]*phaseAcc
	phaseOrder               []backendPhase
	phasesDropped            int
}

type backendPhase struct {
	backend, phase string
	device         int
}

// phaseAcc accumulates one backendPhase's samples.
type phaseAcc struct {
	ms, gbps, tflops, pct stream.Quantiles
	roofs, memory, above  int // samples under a roofline, memory-bound, faster than the floor
}

func newSummarizer(l *Log) *summarizer {
	return &summarizer{Summary: Summary{File: l.Path, Header: l.Header, Warnings: l.Warnings, OOMEvents: []stream.Event{}},
		steps: map[string]*stream.Quantiles{}, tflops: map[string]*stream.Quantiles{}, gemm: map[string]*stream.Quantiles{},
		stepsOf: map[string]int{}, phases: map[backendPhase]*phaseAcc{}}
}

func (sum *summarizer) add(s stream.Sample) {
	if sum.first.IsZero() {
		sum.first = s.Time
	}
	sum.last = s.Time
	for _, e := range s.Events {
		if e.Kind != stream.EventOOM {
			continue
		}
		if len(sum.OOMEvents) < maxOOMListed {
			sum.OOMEvents = append(sum.OOMEvents, e)
		} else {
			sum.OOMEventsNotListed++
		}
	}
	for _, m := range s.Memory {
		if sum.LowestHeadroom == nil || m.HeadroomBytes < *sum.LowestHeadroom {
			h := m.HeadroomBytes
			sum.LowestHeadroom, sum.LowestHeadroomStep = &h, s.Step
		}
	}
	if s.Skipped || s.Rows == nil {
		sum.Skipped++
		return
	}
	// A window of short steps stands for several: its dropped rows are
	// theirs, and so are the rows routed.
	n := s.StepCount()
	sum.Steps += n
	sum.stepsOf[s.Backend] += n
	sum.dropped += s.Dropped
	sum.routed += s.Config.Tokens * s.Config.TopK * n
	if _, ok := sum.steps[s.Backend]; !ok {
		sum.order = append(sum.order, s.Backend)
		sum.steps[s.Backend], sum.tflops[s.Backend], sum.gemm[s.Backend] = &stream.Quantiles{}, &stream.Quantiles{}, &stream.Quantiles{}
	}
	sum.steps[s.Backend].Add(s.StepMS)
	sum.tflops[s.Backend].Add(s.TFLOPS)
	sum.gemm[s.Backend].Add(s.GEMMTFLOPS)
	sum.addPhases(s)
	if s.Imbalance > sum.WorstImbalance {
		sum.WorstImbalance, sum.WorstImbalanceStep = s.Imbalance, s.Step
	}
	if sum.shares == nil {
		sum.shares = make([]float64, len(s.Rows))
	}
	if len(s.Rows) == len(sum.shares) {
		total := 0
		for _, r := range s.Rows {
			total += r
		}
		for e, r := range s.Rows {
			sum.shares[e] += float64(r) / float64(max(total, 1))
		}
		sum.sharesN++
	}
}

// addPhases counts each phase of s toward its median; a window of short
// steps counts once, at its mean, as it does for the step time.
func (sum *summarizer) addPhases(s stream.Sample) {
	tflops, gbps := sum.Header.ComputeCeiling(), sum.Header.ReadGBps
	for _, p := range s.Phases {
		k := backendPhase{s.Backend, p.Phase, p.Device}
		a := sum.phases[k]
		if a == nil {
			if len(sum.phases) >= maxPhases {
				sum.phasesDropped++
				continue
			}
			a = &phaseAcc{}
			sum.phases[k] = a
			sum.phaseOrder = append(sum.phaseOrder, k)
		}
		a.ms.Add(p.MS)
		if p.MS <= 0 {
			continue
		}
		if p.Bytes > 0 {
			a.gbps.Add(p.Bytes / (p.MS * 1e6))
		}
		if p.FLOPs > 0 {
			a.tflops.Add(p.FLOPs / (p.MS * 1e9))
		}
		if rf, ok := p.Roofline(tflops, gbps); ok {
			a.pct.Add(rf.Pct)
			a.roofs++
			if rf.Bound == "memory" {
				a.memory++
			}
			if rf.Above {
				a.above++
			}
		}
	}
}

// phaseSummaries are backend's phases, device 0's first and each device's
// in the order the log first had them; nil where the log counts no
// phase's bytes or FLOPs (a moetop/1 log, whose summary stays as it was).
func (sum *summarizer) phaseSummaries(backend string) []PhaseSummary {
	var keys []backendPhase
	counted := false
	for _, k := range sum.phaseOrder {
		if k.backend == backend {
			keys = append(keys, k)
			a := sum.phases[k]
			counted = counted || a.gbps.Count() > 0 || a.tflops.Count() > 0
		}
	}
	if !counted {
		return nil
	}
	slices.SortStableFunc(keys, func(a, b backendPhase) int { return cmp.Compare(a.device, b.device) })
	out := make([]PhaseSummary, 0, len(keys))
	for _, k := range keys {
		a := sum.phases[k]
		ps := PhaseSummary{Phase: k.phase, Device: k.device, MedianMS: a.ms.Quantile(0.5)}
		if a.gbps.Count() > 0 {
			ps.GBps = a.gbps.Quantile(0.5)
		}
		if a.tflops.Count() > 0 {
			ps.TFLOPS = a.tflops.Quantile(0.5)
		}
		if a.roofs > 0 {
			ps.PctRoofline, ps.Bound = min(100, a.pct.Quantile(0.5)), "compute"
			if 2*a.memory > a.roofs {
				ps.Bound = "memory"
			}
			// More than half at the clamp puts the median there too; the
			// sketch's 1% must not show it as 99.
			if 2*a.above > a.roofs {
				ps.PctRoofline, ps.Above = 100, true
			}
		}
		out = append(out, ps)
	}
	return out
}

func (sum *summarizer) done() Summary {
	out := sum.Summary
	out.Duration = sum.last.Sub(sum.first)
	if sum.routed > 0 {
		out.DropRate = float64(sum.dropped) / float64(sum.routed)
	}
	for _, b := range sum.order {
		st := sum.steps[b]
		out.Backends = append(out.Backends, BackendSummary{Backend: b, Steps: sum.stepsOf[b],
			StepP50MS: st.Quantile(0.5), StepP90MS: st.Quantile(0.9), StepP99MS: st.Quantile(0.99),
			TFLOPS: sum.tflops[b].Quantile(0.5), GEMMTFLOPS: sum.gemm[b].Quantile(0.5), Phases: sum.phaseSummaries(b)})
	}
	if sum.phasesDropped > 0 {
		out.Warnings = append(slices.Clip(out.Warnings), fmt.Sprintf(
			"%d phase timings past the first %d phases and devices are not in the phase medians", sum.phasesDropped, maxPhases))
	}
	shares := append([]float64(nil), sum.shares...)
	for e := range shares {
		shares[e] /= float64(max(sum.sharesN, 1))
	}
	if sum.shares == nil {
		shares = nil
	}
	out.MeanShare = shares
	return out
}

// WriteText prints the summary for a person.
func (s Summary) WriteText(w io.Writer) {
	h := s.Header
	fmt.Fprintf(w, "%s\n", s.File)
	fmt.Fprintf(w, "  recorded   %s on %s by moetop %s\n", h.Start.Format(time.RFC3339), h.Host, h.Version)
	fmt.Fprintf(w, "  device     %s\n", h.Device)
	if h.ComputeCeiling() > 0 || h.ReadGBps > 0 || h.AllToAllGBps > 0 {
		fmt.Fprintf(w, "  ceilings   %s\n", ceilingsText(h))
	}
	fmt.Fprintf(w, "  layer      %s routing %s\n", h.Config, h.Config.Routing)
	fmt.Fprintf(w, "  duration   %s, %d steps (%d skipped)\n", s.Duration.Round(time.Millisecond), s.Steps, s.Skipped)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  backend\tsteps\tstep p50\tp90\tp99\tTFLOP/s\texpert GEMM TFLOP/s")
	for _, b := range s.Backends {
		fmt.Fprintf(tw, "  %s\t%d\t%.3f ms\t%.3f ms\t%.3f ms\t%.3f\t%.3f\n", b.Backend, b.Steps, b.StepP50MS, b.StepP90MS,
			b.StepP99MS, b.TFLOPS, b.GEMMTFLOPS)
	}
	tw.Flush()
	for _, b := range s.Backends {
		writePhases(w, b)
	}
	var sh []string
	for e, x := range s.MeanShare {
		sh = append(sh, fmt.Sprintf("e%d %.1f%%", e, 100*x))
	}
	if len(sh) > 16 {
		sh = append(sh[:16], fmt.Sprintf("… (%d experts)", len(s.MeanShare)))
	}
	fmt.Fprintf(w, "  mean share %s\n", strings.Join(sh, "  "))
	fmt.Fprintf(w, "  worst imbalance %.2f× at step %d\n", s.WorstImbalance, s.WorstImbalanceStep)
	if s.DropRate > 0 {
		fmt.Fprintf(w, "  dropped rows %.2f%% (capacity factor %g)\n", 100*s.DropRate, s.Header.Config.CapacityFactor)
	}
	if s.LowestHeadroom != nil {
		fmt.Fprintf(w, "  lowest headroom %.2f GiB at step %d\n", float64(*s.LowestHeadroom)/(1<<30), s.LowestHeadroomStep)
	}
	fmt.Fprintf(w, "  OOM events %d\n", len(s.OOMEvents)+s.OOMEventsNotListed)
	for _, e := range s.OOMEvents {
		fmt.Fprintf(w, "    %s %s\n", e.Time.Format("15:04:05.000"), e.Msg)
	}
	if s.OOMEventsNotListed > 0 {
		fmt.Fprintf(w, "    … and %d more\n", s.OOMEventsNotListed)
	}
	fmt.Fprintf(w, "  lines skipped %d\n", s.LinesSkipped)
	for _, r := range DescribeSkips(s.SkipReasons) {
		fmt.Fprintf(w, "    %s\n", r)
	}
	for _, wn := range s.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", wn)
	}
}

// ceilingsText names the roofline's ceilings a header holds.
func ceilingsText(h stream.Header) string {
	var c []string
	if h.PeakTFLOPS > 0 {
		c = append(c, fmt.Sprintf("peak GEMM %.4g TFLOP/s", h.PeakTFLOPS))
	}
	if h.DenseGEMMTFLOPS > 0 {
		c = append(c, fmt.Sprintf("dense GEMM %.4g TFLOP/s", h.DenseGEMMTFLOPS))
	}
	if h.ReadGBps > 0 {
		c = append(c, fmt.Sprintf("read %.4g GB/s", h.ReadGBps))
	}
	if h.AllToAllGBps > 0 {
		c = append(c, fmt.Sprintf("all-to-all %.4g GB/s bus (%d MiB per rank)", h.AllToAllGBps, h.AllToAllBytes>>20))
	}
	return strings.Join(c, ", ") + " (measured at start)"
}

// writePhases prints a backend's phase medians: a device column where the
// run had several, GB/s and TFLOP/s where counted, the roofline where the
// log has ceilings.
func writePhases(w io.Writer, b BackendSummary) {
	if len(b.Phases) == 0 {
		return
	}
	devices, roof, above := false, false, false
	for _, p := range b.Phases {
		devices = devices || p.Device != 0
		roof = roof || p.Bound != ""
		above = above || p.Above
	}
	fmt.Fprintf(w, "  phases of %s, medians per step\n", b.Backend)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := []string{"phase"}
	if devices {
		head = append(head, "device")
	}
	head = append(head, "ms", "GB/s", "TFLOP/s")
	if roof {
		head = append(head, "roofline")
	}
	// Right-aligned numbers; the names padded to one width so that they
	// line up on the left.
	nameW := len("phase")
	for _, p := range b.Phases {
		nameW = max(nameW, len(p.Phase))
	}
	pad := func(name string) string { return fmt.Sprintf("%-*s", nameW, name) }
	head[0] = pad(head[0])
	fmt.Fprintln(tw, "  "+strings.Join(head, "\t")+"\t")
	for _, p := range b.Phases {
		cells := []string{pad(p.Phase)}
		if devices {
			cells = append(cells, fmt.Sprint(p.Device))
		}
		cells = append(cells, strconv.FormatFloat(p.MedianMS, 'g', 4, 64), sig4(p.GBps), sig4(p.TFLOPS))
		if roof {
			cells = append(cells, roofText(p))
		}
		fmt.Fprintln(tw, "  "+strings.Join(cells, "\t")+"\t")
	}
	tw.Flush()
	if above {
		fmt.Fprintln(w, "    *: faster than the floor the ceilings set (a cache served what the floor counts as memory traffic)")
	}
}

// sig4 is v to four significant digits, or nothing for 0 (not counted).
func sig4(v float64) string {
	if v == 0 {
		return ""
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// roofText is a phase's place under its roofline as the live view writes
// it: "92% mem", "100%* comp" where most steps beat the floor.
func roofText(p PhaseSummary) string {
	if p.Bound == "" {
		return ""
	}
	pct := fmt.Sprintf("%.0f%%", p.PctRoofline)
	if p.Above {
		pct += "*"
	}
	if p.Bound == "memory" {
		return pct + " mem"
	}
	return pct + " comp"
}

// DescribeSkips says, a line per reason, why lines of a log were skipped:
// "2 with a time that is negative, not a number or over a week (first at
// line 57)".
func DescribeSkips(skips []SkipReason) []string {
	var out []string
	for _, r := range skips {
		where := fmt.Sprintf("line %d", r.FirstLine)
		if r.Lines > 1 {
			where = "first at " + where
		}
		out = append(out, fmt.Sprintf("%d: %s (%s)", r.Lines, r.Reason, where))
	}
	return out
}
