package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

// memoryPanel is "Memory": used/free/total as a gauge, the workload's own
// bytes, the predicted peak, headroom and largest token count per backend,
// and OOM events; a history of memory used in the rows left over. It turns
// red when headroom falls under 10% of the total or a backend is predicted
// to run out.
type memoryPanel struct{ w, h int }

func (p *memoryPanel) SetSize(w, h int) { p.w, p.h = w, h }

// memLines is what the panel shows under its gauge, in the order it gives
// way when short: the backends' rows and the OOM count stay; the workload
// line, the table's header and the OOM events' details go first.
type memLines struct {
	summary, short []string // the free/headroom lines, and their one-line short form
	// devs is a line per device where the run has several, in place of
	// the gauge and the summary; devHead names their columns.
	devs     []string
	devHead  string
	header   string
	rows     []string
	oomCount string
	ooms     []string
}

func (p *memoryPanel) lines(s *state, w int) memLines {
	m := s.mem
	var out memLines
	low := m.TotalBytes > 0 && float64(m.HeadroomBytes) < 0.1*float64(m.TotalBytes)
	head := fmtBytes(float64(m.HeadroomBytes))
	if low {
		head = warnStyle.Render(head + " LOW")
	} else {
		head = okStyle.Render(head)
	}
	free := fmt.Sprintf("free %s  workload %s", fmtBytes(float64(m.FreeBytes)), fmtBytes(float64(m.OwnBytes)))
	headroom := "headroom " + head
	out.summary = []string{free + "  " + headroom}
	if lipgloss.Width(out.summary[0]) > w {
		out.summary = []string{free, headroom}
	}
	out.short = []string{"free " + fmtBytes(float64(m.FreeBytes)) + "  " + headroom}
	if len(s.mems) > 1 {
		out.devHead, out.devs = deviceLines(s.mems, w)
	}
	// One row per backend the memory model predicts for, whatever their
	// names: the column is as wide as the longest (up to a bound, for a
	// damaged log's).
	nameW := 8
	for _, bm := range m.Backends {
		nameW = max(nameW, min(24, lipgloss.Width(clean(bm.Backend))))
	}
	out.header = labelStyle.Render(fmt.Sprintf("%-*s %9s %9s %6s", nameW, "backend", "peak", "headroom", "max T"))
	for _, bm := range m.Backends {
		out.rows = append(out.rows, backendRow(bm, s.last.Backend, nameW))
	}
	for _, e := range s.events {
		if e.Kind == stream.EventOOM {
			out.ooms = append(out.ooms, e.Time.Format("15:04:05")+" "+clean(e.Msg))
		}
	}
	if len(out.ooms) > 0 {
		out.oomCount = warnStyle.Render(fmt.Sprintf("OOM events: %d", len(out.ooms)))
	}
	return out
}

// deviceLines are a line per device of the run: its used memory as a
// gauge, used of total, and headroom (LOW under 10% of the total), the
// gauge giving way first; head names the columns.
func deviceLines(mems []stream.Memory, w int) (head string, lines []string) {
	labelW := 0
	for _, m := range mems {
		labelW = max(labelW, min(6, len(fmt.Sprint(m.Device))+1)+1)
	}
	const (
		cUsed = iota
		cHead
		cGauge
	)
	widths := fitCols(w, labelW, []col{cUsed: {w: 20}, cHead: {w: 14}, cGauge: {w: 6, flex: true}})
	head = fmt.Sprintf("%-*s", labelW, "")
	if g := widths[cGauge]; g > 0 {
		head += fmt.Sprintf(" %-*s", g-1, "used")
	}
	head = labelStyle.Render(head + cell("of total", widths[cUsed]) + cell("headroom", widths[cHead]))
	for _, m := range mems {
		var b strings.Builder
		b.WriteString(fmt.Sprintf("%-*s", labelW, truncate(fmt.Sprintf("r%d", m.Device), labelW-1)))
		if g := widths[cGauge]; g > 0 {
			frac := 0.0
			if m.TotalBytes > 0 {
				frac = float64(m.UsedBytes) / float64(m.TotalBytes)
			}
			b.WriteString(" " + fill(frac, g-1))
		}
		b.WriteString(cell(fmtBytes(float64(m.UsedBytes))+" / "+fmtBytes(float64(m.TotalBytes)), widths[cUsed]))
		if hw := widths[cHead]; hw > 0 {
			hr := fmtBytes(float64(m.HeadroomBytes))
			if m.TotalBytes > 0 && float64(m.HeadroomBytes) < 0.1*float64(m.TotalBytes) {
				b.WriteString(warnStyle.Render(cell(hr+" LOW", hw)))
			} else {
				b.WriteString(cell(hr, hw))
			}
		}
		lines = append(lines, b.String())
	}
	return head, lines
}

func backendRow(bm stream.BackendMemory, running string, nameW int) string {
	mark := okStyle.Render("fits")
	switch {
	case bm.Refused != "":
		mark = labelStyle.Render("can't run") // its capability check said why; the log keeps it
	case !bm.Fits:
		mark = warnStyle.Render("OOM")
	}
	l := fmt.Sprintf("%-*s %9s %9s %6s %s", nameW, truncate(clean(bm.Backend), nameW), fmtBytes(float64(bm.PeakBytes)),
		fmtBytes(float64(bm.HeadroomBytes)), fmtCount(bm.MaxTokens), mark)
	if bm.Backend == running {
		l = valueStyle.Render(l)
	}
	return l
}

func (p *memoryPanel) Rows(s *state, w int) (need, want int) {
	if s.mem == nil {
		return 2, 2
	}
	l := p.lines(s, w)
	fixed := len(l.rows)
	if l.oomCount != "" {
		fixed++
	}
	if len(l.devs) > 0 { // the title, a line per device, their columns' names and the table's
		return 1 + len(l.devs) + fixed, 1 + 1 + len(l.devs) + 1 + fixed + min(5, len(l.ooms))
	}
	need = 2 + 1 + fixed // title, gauge, the short summary
	want = 2 + len(l.summary) + 1 + fixed + min(5, len(l.ooms))
	return need, want
}

func (p *memoryPanel) View(s *state) string {
	m := s.mem
	title := "Memory"
	if m == nil {
		return panel(title, p.w, p.h, labelStyle.Render("no reading yet"))
	}
	if m.Host {
		title += " · host"
	}
	if w := s.header.Weights; w != "" {
		// A preset published in another format runs here in the layer's dtype.
		title += " · weights " + clean(s.header.Config.DType) + ", published " + clean(w)
	}
	l := p.lines(s, p.w)
	fixed := len(l.rows)
	if l.oomCount != "" {
		fixed++
	}
	var lines []string
	if len(l.devs) > 0 {
		// The backends' table and the history are the first device's.
		title += fmt.Sprintf(" · %d devices · table and chart of r0", len(l.devs))
		room := p.h - 1 - len(l.devs) - fixed
		if room >= 1 {
			lines = append(lines, l.devHead)
		}
		lines = append(lines, l.devs...)
		if room >= 2 {
			lines = append(lines, l.header)
		}
	} else {
		frac := 0.0
		if m.TotalBytes > 0 {
			frac = clamp01(float64(m.UsedBytes) / float64(m.TotalBytes))
		}
		lines = []string{fmt.Sprintf("used %s %s / %s", fill(frac, max(4, p.w-27)), fmtBytes(float64(m.UsedBytes)), fmtBytes(float64(m.TotalBytes)))}
		room := p.h - 2 // title and the gauge
		summary := l.summary
		if room < len(summary)+fixed {
			summary = l.short
		}
		lines = append(lines, summary...)
		if room >= len(summary)+1+fixed {
			lines = append(lines, l.header)
		}
	}
	lines = append(lines, l.rows...)
	if l.oomCount != "" {
		lines = append(lines, l.oomCount)
		details := min(len(l.ooms), 5, max(0, p.h-1-len(lines)))
		lines = append(lines, l.ooms[len(l.ooms)-details:]...)
	}
	// Rows to spare show how memory in use moved.
	if spare := p.h - 1 - len(lines); spare >= 3 {
		label := "used"
		if len(l.devs) > 0 {
			label = "r0 used"
		}
		lines = append(lines, labelStyle.Render(label), chart(s.memUsed.values(), p.w, spare-1))
	}
	return panel(title, p.w, p.h, strings.Join(lines, "\n"))
}
