package tui

import (
	"fmt"
	"sort"
	"strings"

	"github.com/charmbracelet/bubbles/progress"
	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

// kernelPanel is "Kernel time": each phase of the last step on device 0 in
// step order with its average, step time percentiles, TFLOP/s, the slowest
// experts' GEMM time where the backend times experts, and a chart of step
// time in the rows left over. A step over several devices adds one line of
// each device's total (the ranks panel of expert parallelism goes further).
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
	need = 1 + len(phases(s)) + len(p.stepLines(s, w)) + 1
	if len(s.last.Phases.Devices()) > 1 {
		need++
	}
	want = need + 1 + 4 // the step time chart's label and four rows
	if len(s.expertMS) > 0 {
		want++
	}
	return need, want
}

func (p *kernelPanel) stepLines(s *state, w int) []string {
	window := finiteOnly(s.stepMS.tail(200))
	first := "step " + valueStyle.Render(fmtMS(s.last.StepMS))
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
		dense = " (" + num("%.0f", 100*s.last.GEMMTFLOPS/d) + "% of dense)"
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
	var lines []string
	ph := phases(s)
	nameW := 8
	for _, x := range ph {
		nameW = max(nameW, min(12, lipgloss.Width(clean(x.Phase))))
	}
	barW := max(4, p.w-nameW-10-14-2)
	bar := progress.New(progress.WithSolidFill(barColor), progress.WithoutPercentage(), progress.WithWidth(barW))
	step := s.last.StepMS
	for _, x := range ph {
		frac := 0.0
		if step > 0 {
			frac = clamp01(x.MS / step)
		}
		lines = append(lines, fmt.Sprintf("%-*s%10s %s avg %s", nameW, truncate(clean(x.Phase), nameW), fmtMS(x.MS), bar.ViewAs(frac),
			fmtMS(s.phaseAvg(x.Phase))))
	}
	if d := p.devices(s); d != "" {
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
// several (ranks under expert parallelism), slowest marked; "" on one.
func (p *kernelPanel) devices(s *state) string {
	devs := s.last.Phases.Devices()
	if len(devs) < 2 {
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
	return joinFitting(labelStyle.Render("ranks  "), items, "  ", p.w)
}

// sameGEMMs says whether two layers do the same expert GEMM FLOPs, so that
// a dense reference timed for one applies to the other.
func sameGEMMs(a, b stream.Layer) bool {
	return a.Tokens == b.Tokens && a.TopK == b.TopK && a.Hidden == b.Hidden && a.FFN == b.FFN && a.DType == b.DType
}
