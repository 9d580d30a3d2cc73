package tui

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

// ranksPanel is "Ranks", shown under expert parallelism: rows each rank
// received as bars, how even they are, each rank's dispatch and combine
// time, the rate it sent at (and, where the header has the all-to-all
// ceiling, its dispatch and combine GB/s as shares of it), and how long it
// waited for the slowest (the straggler, marked ▲).
type ranksPanel struct{ w, h int }

func (p *ranksPanel) SetSize(w, h int) { p.w, p.h = w, h }

// rankRow is one rank of the newest step.
type rankRow struct {
	stream.RankStat
	dispatch, combine, wait, busy float64 // ms, NaN where the step has no such phase; busy is all but the wait
}

// phaseMS is device's time in phase, NaN when the step has no such phase
// (shown blank, not as 0).
func phaseMS(p stream.Phases, phase string, device int) float64 {
	for _, t := range p {
		if t.Phase == phase && t.Device == device {
			return t.MS
		}
	}
	return math.NaN()
}

// msOrBlank is a time, or "" for a phase the step does not have.
func msOrBlank(ms float64) string {
	if math.IsNaN(ms) {
		return ""
	}
	return fmtMS(ms)
}

// rankRows joins each rank's traffic to its phases, in rank order, and
// names the straggler: the rank busy longest, whom the others wait for
// (-1 with fewer than two ranks or no times).
func rankRows(x stream.Sample) (rows []rankRow, straggler int) {
	straggler = -1
	for _, r := range x.Ranks {
		rr := rankRow{RankStat: r, dispatch: phaseMS(x.Phases, stream.PhaseDispatch, r.Rank),
			combine: phaseMS(x.Phases, stream.PhaseCombine, r.Rank), wait: phaseMS(x.Phases, stream.PhaseWait, r.Rank)}
		for _, ph := range x.Phases {
			if ph.Device == r.Rank && ph.Phase != stream.PhaseWait && finite(ph.MS) && ph.MS > 0 {
				rr.busy += min(ph.MS, valueLimit)
			}
		}
		rows = append(rows, rr)
	}
	sort.SliceStable(rows, func(i, j int) bool { return rows[i].Rank < rows[j].Rank })
	best := 0.0
	for i, r := range rows {
		if r.busy > best {
			best, straggler = r.busy, i
		}
	}
	if len(rows) < 2 {
		straggler = -1
	}
	return rows, straggler
}

// balance is mean/max of the rows the ranks ran (1: even; the figure vLLM
// and SGLang report) and its inverse, max/mean; 0 when nothing ran.
func balance(rows []rankRow) (meanMax, maxMean float64) {
	sum, top := 0.0, 0.0
	for _, r := range rows {
		v := float64(max(0, r.RecvRows))
		sum += v
		top = max(top, v)
	}
	if top == 0 || len(rows) == 0 {
		return 0, 0
	}
	mean := sum / float64(len(rows))
	return mean / top, top / mean
}

// Columns of a rank's line, in the order they give way.
const (
	rcRows = iota
	rcDispatch
	rcWait
	rcBar
	rcRate
	rcShare
	rcCombine
	rcTokens
	rcSaved
)

// rankFigures is the width of every column of figures of a rank's line,
// but the share of the all-to-all ceiling (shareW), which only a run with
// the ceiling has.
const (
	rankFigures = 8 + 10 + 10 + 10 + 10 + 8 + 10
	shareW      = 11
)

// rankCols decides the columns at width w after a label lead cells wide;
// ceiling says whether the run has an all-to-all ceiling to share.
func rankCols(w, lead int, ceiling bool) []int {
	return fitCols(w, lead, []col{rcRows: {w: 8}, rcDispatch: {w: 10}, rcWait: {w: 10}, rcBar: {w: barMinW, flex: true},
		rcRate: {w: 10}, rcShare: {w: shareW, skip: !ceiling}, rcCombine: {w: 10}, rcTokens: {w: 8}, rcSaved: {w: 10}})
}

// ceilingOf is the header's all-to-all ceiling in GB/s, 0 without a
// usable one.
func ceilingOf(h stream.Header) float64 {
	if c := h.AllToAllGBps; c > 0 && finite(c) {
		return c
	}
	return 0
}

// ceilingShare is a rank's dispatch and combine GB/s as percentages of ceiling,
// "disp/comb%" ("" for a phase the step has not, or without a ceiling).
func ceilingShare(sent, dispatchMS, combineMS, ceiling float64) string {
	pct := func(ms float64) string {
		if !(sent > 0) || !(ms > 0) || !(ceiling > 0) {
			return "–"
		}
		v := sent / (ms * 1e6) / ceiling * 100
		if !finite(v) || v > 999 {
			return ">999"
		}
		return num("%.0f", v)
	}
	d, c := pct(dispatchMS), pct(combineMS)
	if d == "–" && c == "–" {
		return ""
	}
	return d + "/" + c + "%"
}

// summary is the line (or lines, at most n) under the ranks: balancedness
// both ways, the straggler and what sending each token once saved.
func (p *ranksPanel) summary(rows []rankRow, straggler int, w, n int) []string {
	mm, mx := balance(rows)
	items := []string{"balancedness " + valueStyle.Render(num("%.2f", mm)) + labelStyle.Render(" mean/max"),
		"max/mean " + num("%.2f", mx) + "×"}
	if straggler >= 0 {
		items = append(items, "straggler "+valueStyle.Render(fmt.Sprintf("r%d▲", rows[straggler].Rank)))
	}
	var saved, sent float64
	for _, r := range rows {
		saved += float64(max(0, r.SavedBytes))
		sent += float64(max(0, r.SentBytes))
	}
	if saved > 0 {
		items = append(items, labelStyle.Render("saved ")+fmtBytes(saved)+labelStyle.Render(" (a token once per rank)"))
	}
	return wrapItems(items, "  ", w, n)
}

// wrapItems sets items on at most n lines of w cells, whole items only
// (one wider than a line is cut).
func wrapItems(items []string, sep string, w, n int) []string {
	var out []string
	line := ""
	for _, it := range items {
		it = truncate(it, w)
		switch {
		case line == "":
			line = it
		case lipgloss.Width(line+sep+it) <= w:
			line += sep + it
		default:
			out = append(out, line)
			line = it
		}
	}
	if line != "" {
		out = append(out, line)
	}
	return out[:min(len(out), max(0, n))]
}

func (p *ranksPanel) Rows(s *state, w int) (need, want int) {
	if len(s.last.Ranks) == 0 {
		return 0, 0
	}
	n := len(s.last.Ranks)
	// The title, the columns' names, the ranks (the slowest few when
	// short) and the summary.
	need = 1 + 1 + min(n, 4) + 1
	rows, st := rankRows(s.last)
	return need, 1 + 1 + n + len(p.summary(rows, st, w, 3))
}

func (p *ranksPanel) View(s *state) string {
	rows, straggler := rankRows(s.last)
	title := fmt.Sprintf("Ranks · %d expert-parallel", len(rows))
	ceiling := ceilingOf(s.header)
	// The ceiling in the title where it fits whole: cut, it reads as noise.
	if more := " · all-to-all " + num("%.0f", ceiling) + " GB/s"; ceiling > 0 && lipgloss.Width(title+more)+4 <= p.w {
		title += more
	}
	if len(rows) == 0 {
		return panel("Ranks", p.w, p.h, labelStyle.Render("no ranks in this step"))
	}
	labelW := 0
	for _, r := range rows {
		labelW = max(labelW, len(fmt.Sprint(r.Rank))+2) // "r12▲"
	}
	labelW = max(4, min(labelW, 8)) // "rank" heads the column
	// A bar wider than sixty cells reads no better and pushes the
	// figures away from it.
	figures := rankFigures
	if ceiling > 0 {
		figures += shareW
	}
	widths := rankCols(min(p.w, labelW+figures+60), labelW, ceiling > 0)
	// Below the title and the columns' names: every rank and the summary
	// when they fit; else the busiest ranks, a line on those left out and
	// the summary's first line.
	room := p.h - 2
	n := len(rows)
	var more []string
	if n+1 > room {
		n = max(1, room-2)
		more = []string{labelStyle.Render(fmt.Sprintf("%d more ranks; the busiest shown", len(rows)-n))}
	}
	shown := p.pick(rows, n)
	summary := p.summary(rows, straggler, p.w, max(1, room-n-len(more)))
	maxRows := 1.0
	for _, r := range rows {
		maxRows = max(maxRows, float64(r.RecvRows))
	}
	head := fmt.Sprintf("%-*s", labelW, "rank")
	if bw := widths[rcBar] - 1; bw > 0 {
		name := "rows received"
		if len(name) > bw {
			name = ""
		}
		head += " " + fmt.Sprintf("%-*s", bw, name)
	}
	for _, c := range []struct {
		i    int
		name string
	}{{rcRows, "rows"}, {rcTokens, "tokens"}, {rcDispatch, "dispatch"}, {rcCombine, "combine"}, {rcRate, "GB/s"},
		{rcShare, "% of a2a"}, {rcWait, "wait"}, {rcSaved, "saved"}} {
		head += cell(c.name, widths[c.i])
	}
	lines := []string{labelStyle.Render(head)}
	for _, i := range shown {
		r := rows[i]
		label := fmt.Sprintf("r%d", r.Rank)
		if i == straggler {
			label += "▲"
		}
		var b strings.Builder
		b.WriteString(fmt.Sprintf("%-*s", labelW, truncate(label, labelW)))
		if bw := widths[rcBar] - 1; bw > 0 {
			b.WriteString(" " + fill(float64(r.RecvRows)/maxRows, bw))
		}
		b.WriteString(cell(fmtCount(r.RecvRows), widths[rcRows]))
		b.WriteString(cell(fmtCount(r.RecvTokens), widths[rcTokens]))
		b.WriteString(cell(msOrBlank(r.dispatch), widths[rcDispatch]))
		b.WriteString(cell(msOrBlank(r.combine), widths[rcCombine]))
		b.WriteString(cell(gbps(float64(r.SentBytes), r.dispatch), widths[rcRate]))
		b.WriteString(cell(ceilingShare(float64(r.SentBytes), r.dispatch, r.combine, ceiling), widths[rcShare]))
		b.WriteString(cell(msOrBlank(r.wait), widths[rcWait]))
		b.WriteString(cell(fmtBytes(float64(r.SavedBytes)), widths[rcSaved]))
		line := b.String()
		if i == straggler {
			line = valueStyle.Render(line)
		}
		lines = append(lines, line)
	}
	lines = append(lines, more...)
	lines = append(lines, summary...)
	return panel(title, p.w, p.h, strings.Join(lines, "\n"))
}

// pick is the ranks to list in n lines: all when they fit, else the n
// busiest (the straggler among them), in rank order.
func (p *ranksPanel) pick(rows []rankRow, n int) []int {
	idx := make([]int, len(rows))
	for i := range idx {
		idx[i] = i
	}
	if len(rows) <= n {
		return idx
	}
	sort.SliceStable(idx, func(a, b int) bool { return rows[idx[a]].busy > rows[idx[b]].busy })
	idx = idx[:max(1, n)]
	sort.Ints(idx)
	return idx
}

// gbps is bytes sent over ms in GB/s (1e9 B/s), a plain number for a
// column headed GB/s; "" without both.
func gbps(bytes, ms float64) string {
	if !(bytes > 0) || !(ms > 0) || !finite(bytes/ms) {
		return ""
	}
	switch v := bytes / (ms * 1e6); {
	case v >= 100:
		return num("%.0f", v)
	case v < 0.01:
		return "<0.01"
	default:
		return num("%.2f", v)
	}
}
