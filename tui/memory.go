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
	line := fmt.Sprintf("free %s  workload %s  headroom %s", fmtBytes(float64(m.FreeBytes)), fmtBytes(float64(m.OwnBytes)), head)
	if lipgloss.Width(line) > p.w {
		line = strings.Replace(line, "  headroom", "\nheadroom", 1)
	}
	b.WriteString(line + "\n")
	fmt.Fprintf(&b, "%s\n", labelStyle.Render(fmt.Sprintf("%-8s %9s %9s %6s", "backend", "peak", "headroom", "max T")))
	for _, bm := range m.Backends {
		mark := okStyle.Render("fits")
		if !bm.Fits {
			mark = warnStyle.Render("OOM")
		}
		l := fmt.Sprintf("%-8s %9s %9s %6s %s", bm.Backend, fmtBytes(float64(bm.PeakBytes)),
			fmtBytes(float64(bm.HeadroomBytes)), fmtCount(bm.MaxTokens), mark)
		if bm.Backend == s.last.Backend {
			l = valueStyle.Render(l)
		}
		b.WriteString(l + "\n")
	}
	var ooms []string
	for _, e := range s.events {
		if e.Kind == "oom" {
			ooms = append(ooms, e.Time.Format("15:04:05")+" "+e.Msg)
		}
	}
	if len(ooms) > 0 {
		b.WriteString(warnStyle.Render(fmt.Sprintf("OOM events: %d", len(ooms))) + "\n")
		for _, o := range ooms[max(0, len(ooms)-2):] {
			b.WriteString(o + "\n")
		}
	}
	return panel(title, p.w, p.h, b.String())
}
