package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/bubbles/progress"
	"github.com/charmbracelet/lipgloss"
)

// memoryPanel is "Memory": used/free/total as a gauge, the workload's own
// bytes, the predicted peak, headroom and largest token count per backend,
// and OOM events. It turns red when headroom falls under 10% of the total
// or a backend is predicted to run out.
type memoryPanel struct{ w, h int }

func (p *memoryPanel) SetSize(w, h int) { p.w, p.h = w, h }

func (p *memoryPanel) View(s *state) string {
	m := s.mem
	title := "Memory"
	if m == nil {
		return panel(title, p.w, p.h, labelStyle.Render("no reading yet"))
	}
	if m.Host {
		title += " · host"
	}
	var b strings.Builder
	gauge := progress.New(progress.WithSolidFill(barColor), progress.WithoutPercentage(), progress.WithWidth(max(4, p.w-27)))
	frac := 0.0
	if m.TotalBytes > 0 {
		frac = float64(m.UsedBytes) / float64(m.TotalBytes)
	}
	fmt.Fprintf(&b, "used %s %s / %s\n", gauge.ViewAs(frac), fmtBytes(float64(m.UsedBytes)), fmtBytes(float64(m.TotalBytes)))
	low := m.TotalBytes > 0 && float64(m.HeadroomBytes) < 0.1*float64(m.TotalBytes)
	head := fmtBytes(float64(m.HeadroomBytes))
	if low {
		head = warnStyle.Render(head + " LOW")
	} else {
		head = okStyle.Render(head)
	}
	free := fmt.Sprintf("free %s  workload %s", fmtBytes(float64(m.FreeBytes)), fmtBytes(float64(m.OwnBytes)))
	headroom := "headroom " + head
	// One row per backend the memory model predicts for, whatever their
	// names: the column is as wide as the longest.
	nameW := 8
	for _, bm := range m.Backends {
		nameW = max(nameW, lipgloss.Width(bm.Backend))
	}
	header := labelStyle.Render(fmt.Sprintf("%-*s %9s %9s %6s", nameW, "backend", "peak", "headroom", "max T"))
	var rows []string
	for _, bm := range m.Backends {
		mark := okStyle.Render("fits")
		switch {
		case bm.Refused != "":
			mark = labelStyle.Render("can't run") // its capability check said why; the log keeps it
		case !bm.Fits:
			mark = warnStyle.Render("OOM")
		}
		l := fmt.Sprintf("%-*s %9s %9s %6s %s", nameW, bm.Backend, fmtBytes(float64(bm.PeakBytes)),
			fmtBytes(float64(bm.HeadroomBytes)), fmtCount(bm.MaxTokens), mark)
		if bm.Backend == s.last.Backend {
			l = valueStyle.Render(l)
		}
		rows = append(rows, l)
	}
	var ooms []string
	for _, e := range s.events {
		if e.Kind == "oom" {
			ooms = append(ooms, e.Time.Format("15:04:05")+" "+e.Msg)
		}
	}
	// The backends' rows come first; when the panel is short, the workload
	// line, the table's header and the OOM events' details give way, in
	// that order (their count stays).
	room := p.h - 2 // title and the gauge
	summary := []string{free + "  " + headroom}
	if lipgloss.Width(summary[0]) > p.w {
		summary = []string{free, headroom}
		if room < 2+1+len(rows) {
			summary = []string{"free " + fmtBytes(float64(m.FreeBytes)) + "  " + headroom}
		}
	}
	lines := append([]string(nil), summary...)
	oomLine := 0
	if len(ooms) > 0 {
		oomLine = 1 // the count of OOM events outranks the table's header
	}
	if room >= len(summary)+1+len(rows)+oomLine {
		lines = append(lines, header)
	}
	lines = append(lines, rows...)
	if len(ooms) > 0 {
		lines = append(lines, warnStyle.Render(fmt.Sprintf("OOM events: %d", len(ooms))))
		lines = append(lines, ooms[max(0, len(ooms)-max(0, room-len(lines))):]...)
	}
	b.WriteString(strings.Join(lines, "\n"))
	return panel(title, p.w, p.h, b.String())
}
