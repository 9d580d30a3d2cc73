package tui

import (
	"fmt"
	"sort"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

// kernelPanel is "Kernel time": each phase of the last step on device 0 in
// step order with its average, step time percentiles, TFLOP/s, the slowest
// experts' GEMM time where the backend times experts, and a chart of step
// time in the rows left over. Where a phase's bytes are counted it shows
// GB/s, and where the header has the card's ceilings, % of the phase's
// roofline with the bound it is under. Phases that overlap (a shared
// expert on its own stream) are drawn where they ran in the step, not as
// shares that add up to more than it. A step over several devices without
// the ranks panel adds one line of each device's total.
type kernelPanel struct{ w, h int }

func (p *kernelPanel) SetSize(w, h int) { p.w, p.h = w, h }

// phases are device 0's phases of the newest step, in their order.
func phases(s *state) []stream.PhaseTime {
	var out []stream.PhaseTime
	for _, ph := range s.last.Phases {
		if ph.Device == 0 {
			out = append(out, ph)
		}
	}
	return out
}

func (p *kernelPanel) Rows(s *state, w int) (need, want int) {
	if !s.hasLast {
		return 1, 1
	}
	need = 1 + len(phaseLines(s, w)) + len(p.stepLines(s, w)) + 1
	if p.devices(s, w) != "" {
		need++
	}
	want = need + 1 + 4 // the step time chart's label and four rows
	if len(s.expertMS) > 0 {
		want++
	}
	return need, want
}

// window is where a phase ran in the step, in ms from its start.
type window struct {
	start, end float64
	// overlaps names the phases in sequence that ran beside one with its
	// own start ("gemm1–gemm2"); "" for a phase in sequence.
	overlaps string
}

// timeline places each phase in the step: phases in sequence one after
// another, a phase with a start where it began. It says whether any
// overlaps, and the span the phases cover.
func timeline(ph []stream.PhaseTime) (win []window, spanMS float64, overlap bool) {
	win = make([]window, len(ph))
	at := 0.0
	for i, x := range ph {
		ms := 0.0
		if finite(x.MS) && x.MS > 0 {
			ms = min(x.MS, valueLimit)
		}
		if x.StartMS == nil {
			win[i] = window{start: at, end: at + ms}
			at += ms
		}
	}
	spanMS = at
	for i, x := range ph {
		if x.StartMS == nil {
			continue
		}
		overlap = true
		start := 0.0
		if finite(*x.StartMS) && *x.StartMS > 0 {
			start = min(*x.StartMS, valueLimit)
		}
		w := window{start: start, end: start + max(0, win[i].end-win[i].start)}
		if finite(x.MS) && x.MS > 0 {
			w.end = start + min(x.MS, valueLimit)
		}
		first, last := "", ""
		for j, y := range ph {
			if y.StartMS == nil && win[j].end > w.start && win[j].start < w.end && win[j].end > win[j].start {
				if first == "" {
					first = clean(y.Phase)
				}
				last = clean(y.Phase)
			}
		}
		w.overlaps = first
		if last != first {
			w.overlaps += "–" + last
		}
		win[i] = w
		spanMS = max(spanMS, w.end)
	}
	return win, spanMS, overlap
}

// Column widths of a phase line, each with the space before it.
const (
	timeColW  = 10
	rateColW  = 10
	roofColW  = 10
	flopsColW = 14
	avgColW   = 14
	barMinW   = 7
)

// roofText is a phase's place under its roofline: "92% mem", "100%* mem"
// where the measurement beat the ceiling (clamped: a cache served what
// the floor counts as HBM traffic).
func roofText(rf stream.Roofline) string {
	pct := num("%.0f", rf.Pct) + "%"
	if rf.Above {
		pct += "*"
	}
	bound := "comp"
	if rf.Bound == "memory" {
		bound = "mem"
	}
	return pct + " " + bound
}

// phaseLines are the phases of the newest step on device 0, one line each
// with as many of its figures as fit w, and a line for each phase that
// overlaps others when the lines have no room to say so.
func phaseLines(s *state, w int) []string {
	ph := phases(s)
	if len(ph) == 0 {
		return nil
	}
	nameW := 8
	for _, x := range ph {
		nameW = max(nameW, min(12, lipgloss.Width(clean(x.Phase))))
	}
	tflops, gbps := s.header.ComputeCeiling(), s.header.ReadGBps
	hasBytes, hasFLOPs, hasRoof := false, false, false
	for _, x := range ph {
		hasBytes = hasBytes || fmtRate(x.Bytes, x.MS) != ""
		hasFLOPs = hasFLOPs || (x.FLOPs > 0 && x.MS > 0 && finite(x.FLOPs/x.MS))
		_, ok := x.Roofline(tflops, gbps)
		hasRoof = hasRoof || ok
	}
	// Columns in the order they give way, and their place in the line.
	const (
		cTime = iota
		cRoof
		cRate
		cBar
		cAvg
		cFLOPs
	)
	cols := []col{cTime: {w: timeColW}, cRoof: {w: roofColW, skip: !hasRoof}, cRate: {w: rateColW, skip: !hasBytes},
		cBar: {w: barMinW, flex: true}, cAvg: {w: avgColW}, cFLOPs: {w: flopsColW, skip: !hasFLOPs}}
	order := []int{cTime, cRoof, cRate, cBar, cAvg, cFLOPs}
	if !hasRoof { // without ceilings, the bar and the average before the rates
		order = []int{cTime, cBar, cAvg, cRate, cFLOPs, cRoof}
	}
	prio := make([]col, len(order))
	for i, c := range order {
		prio[i] = cols[c]
	}
	got := fitCols(w, nameW, prio)
	widths := make([]int, len(cols))
	for i, c := range order {
		widths[c] = got[i]
	}
	win, spanMS, overlap := timeline(ph)
	scale := spanMS
	if st := s.last.StepMS; finite(st) && st > scale {
		scale = st
	}
	var lines, notes []string
	for i, x := range ph {
		var b strings.Builder
		b.WriteString(fmt.Sprintf("%-*s", nameW, truncate(clean(x.Phase), nameW)))
		b.WriteString(cell(fmtMS(x.MS), widths[cTime]))
		b.WriteString(cell(fmtRate(x.Bytes, x.MS), widths[cRate]))
		if widths[cRoof] > 0 {
			txt := ""
			if rf, ok := x.Roofline(tflops, gbps); ok {
				txt = roofText(rf)
			}
			b.WriteString(cell(txt, widths[cRoof]))
		}
		if widths[cFLOPs] > 0 {
			txt := ""
			if x.FLOPs > 0 && x.MS > 0 {
				txt = fmtTFLOPS(x.FLOPs / (x.MS * 1e9))
			}
			b.WriteString(cell(txt, widths[cFLOPs]))
		}
		if bw := widths[cBar] - 1; bw > 0 {
			b.WriteByte(' ')
			switch {
			case overlap && scale > 0: // where in the step it ran
				b.WriteString(span(win[i].start/scale, win[i].end/scale, bw))
			case s.last.StepMS > 0:
				b.WriteString(fill(x.MS/s.last.StepMS, bw))
			default:
				b.WriteString(fill(0, bw))
			}
		}
		ov := ""
		if x.StartMS != nil && win[i].overlaps != "" {
			ov = "‖ " + win[i].overlaps
		}
		avg := " avg " + fmtMS(s.phaseAvg(x.Phase))
		switch {
		case ov != "" && widths[cAvg] > 0 && lipgloss.Width(ov) < widths[cAvg]:
			b.WriteString(" " + ov) // in the average's place: an overlap says more
		case ov != "": // no room on the line: a line of its own
			notes = append(notes, labelStyle.Render(truncate(clean(x.Phase)+" "+ov, w)))
			if widths[cAvg] > 0 {
				b.WriteString(avg)
			}
		case widths[cAvg] > 0:
			b.WriteString(avg)
		}
		lines = append(lines, b.String())
	}
	return append(lines, notes...)
}

func (p *kernelPanel) stepLines(s *state, w int) []string {
	window := finiteOnly(s.stepMS.tail(200))
	first := "step " + valueStyle.Render(fmtMS(s.last.StepMS))
	if _, _, overlap := timeline(phases(s)); overlap {
		// Phases ran side by side: the step is the wall time, less than
		// their sum.
		first += labelStyle.Render(" wall")
	}
	if n := s.last.Steps; n > 1 { // a window of short steps: its mean, and its spread where it fits
		mean := first + labelStyle.Render(fmt.Sprintf(" mean of %d", n))
		first = mean
		if spread := mean + labelStyle.Render(fmt.Sprintf(" (%s–%s)", fmtMS(s.last.StepMinMS), fmtMS(s.last.StepMaxMS))); lipgloss.Width(spread) <= w {
			first = spread
		}
	}
	pct := fmt.Sprintf("p50 %s  p99 %s", fmtMS(stream.Percentile(window, 0.5)), fmtMS(stream.Percentile(window, 0.99)))
	of := labelStyle.Render(fmt.Sprintf(" (last %d)", len(window)))
	for _, one := range []string{first + "  " + pct + of, first + "  " + pct} {
		if lipgloss.Width(one) <= w {
			return []string{one}
		}
	}
	if lipgloss.Width(pct+of) <= w {
		return []string{first, pct + of}
	}
	return []string{first, pct}
}

// rates is the TFLOP/s line in the longest form that fits w.
func (p *kernelPanel) rates(s *state, w int) string {
	total := valueStyle.Render(fmtTFLOPS(s.last.TFLOPS))
	gemm := fmtTFLOPS(s.last.GEMMTFLOPS)
	dense := ""
	if d := s.header.DenseGEMMTFLOPS; d > 0 && sameGEMMs(s.header.Config, s.last.Config) {
		// The GEMMs of a step on several devices count every device's
		// rows: their reference is as many dense GEMMs.
		if n := len(s.last.Phases.Devices()); n > 1 {
			dense = " (" + num("%.0f", 100*s.last.GEMMTFLOPS/(float64(n)*d)) + fmt.Sprintf("%% of %d× dense)", n)
		} else {
			dense = " (" + num("%.0f", 100*s.last.GEMMTFLOPS/d) + "% of dense)"
		}
	}
	forms := []string{total + "  expert GEMMs " + gemm + dense, total + "  GEMMs " + gemm + dense, total + "  GEMMs " + gemm}
	for _, f := range forms {
		if lipgloss.Width(f) <= w {
			return f
		}
	}
	return forms[len(forms)-1]
}

func (p *kernelPanel) View(s *state) string {
	if !s.hasLast {
		return panel("Kernel time", p.w, p.h, "")
	}
	lines := phaseLines(s, p.w)
	if d := p.devices(s, p.w); d != "" {
		lines = append(lines, d)
	}
	lines = append(lines, p.stepLines(s, p.w)...)
	lines = append(lines, p.rates(s, p.w))
	room := p.h - 1 - len(lines)
	// The slowest experts come before the chart, but not at the cost of
	// its last two rows.
	if slow := p.slowest(s); slow != "" && room >= 4 {
		lines = append(lines, slow)
		room--
	}
	if room >= 2 {
		// The chart's label gives its scale, in whole pieces.
		window := finiteOnly(s.stepMS.tail(p.w))
		var scale []string
		if len(window) > 0 {
			lo, hi := window[0], window[0]
			for _, v := range window {
				lo, hi = min(lo, v), max(hi, v)
			}
			scale = []string{fmt.Sprintf("last %d", len(window)), "min " + fmtMS(lo), "max " + fmtMS(hi)}
		}
		label := joinFitting("step time  ", scale, " · ", p.w)
		lines = append(lines, labelStyle.Render(label), chart(s.stepMS.values(), p.w, room-1))
	}
	return panel("Kernel time · "+clean(s.last.Backend), p.w, p.h, strings.Join(lines, "\n"))
}

// slowest names the experts with the longest GEMM time, as many whole
// entries as fit.
func (p *kernelPanel) slowest(s *state) string {
	e := s.expertMS
	if len(e) == 0 {
		return ""
	}
	idx := make([]int, 0, len(e))
	for i, v := range e {
		if finite(v) {
			idx = append(idx, i)
		}
	}
	sort.SliceStable(idx, func(i, j int) bool { return e[idx[i]] > e[idx[j]] })
	var top []string
	for _, x := range idx[:min(8, len(idx))] {
		top = append(top, fmt.Sprintf("e%d %s", x, fmtMS(e[x])))
	}
	prefix := labelStyle.Render("slowest experts ")
	line := joinFitting(prefix, top, "  ", p.w)
	if line == prefix {
		return ""
	}
	return line
}

// devices is one line of each device's step total when a step ran on
// several, slowest marked; "" on one, and where the ranks panel shows
// each rank.
func (p *kernelPanel) devices(s *state, w int) string {
	devs := s.last.Phases.Devices()
	if len(devs) < 2 || len(s.last.Ranks) > 0 {
		return ""
	}
	slowest := devs[0]
	for _, d := range devs {
		if s.last.Phases.Total(d) > s.last.Phases.Total(slowest) {
			slowest = d
		}
	}
	var items []string
	for _, d := range devs {
		it := fmt.Sprintf("r%d %s", d, fmtMS(s.last.Phases.Total(d)))
		if d == slowest {
			it = valueStyle.Render(it + "▲")
		}
		items = append(items, it)
	}
	return joinFitting(labelStyle.Render("ranks  "), items, "  ", w)
}

// sameGEMMs says whether two layers do the same expert GEMM FLOPs, so that
// a dense reference timed for one applies to the other.
func sameGEMMs(a, b stream.Layer) bool {
	return a.Tokens == b.Tokens && a.TopK == b.TopK && a.Hidden == b.Hidden && a.FFN == b.FFN && a.DType == b.DType
}
