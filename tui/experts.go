package tui

import (
	"fmt"

	"sort"
	"strings"

	"github.com/charmbracelet/lipgloss"

	"github.com/charmbracelet/bubbles/progress"
)

// expertsPanel is "Expert load": rows per expert as bars with counts, or a
// shaded grid when the experts do not fit one per line; imbalance, the
// busiest expert's share, and a short history of imbalance.
type expertsPanel struct{ w, h int }

func (p *expertsPanel) SetSize(w, h int) { p.w, p.h = w, h }

// shades go from idle to as busy as the busiest expert.
var shades = []rune(" ·░▒▓█")

func (p *expertsPanel) View(s *state) string {
	if !s.hasLast {
		return panel("Expert load", p.w, p.h, labelStyle.Render("waiting for the first step…"))
	}
	rows := s.last.Rows
	total, busiest := 0, 0
	for e, r := range rows {
		total += r
		if r > rows[busiest] {
			busiest = e
		}
	}
	maxR := max(rows[busiest], 1)
	share := func(e int) float64 { return float64(rows[e]) / float64(max(total, 1)) }
	var b strings.Builder
	summary := fmt.Sprintf("imbalance %s  busiest e%d %s", valueStyle.Render(fmt.Sprintf("%.2f×", s.last.Imbalance)),
		busiest, valueStyle.Render(fmt.Sprintf("%.1f%%", 100*share(busiest))))
	if len(s.last.Target) > busiest {
		summary += labelStyle.Render(fmt.Sprintf(" target %.1f%%", 100*s.last.Target[busiest]))
	}
	if s.last.Dropped > 0 {
		summary += warnStyle.Render(fmt.Sprintf(" dropped %d (%.1f%%)", s.last.Dropped,
			100*float64(s.last.Dropped)/float64(max(1, total))))
	}
	summaryLines := 1
	if lipgloss.Width(summary) > p.w {
		summary = strings.Replace(summary, "  busiest", "\nbusiest", 1)
		summaryLines = 2
	}
	body := p.h - 1 - 1 - summaryLines // title; summary, history
	if len(rows) <= body {
		p.bars(&b, rows, maxR, share)
	} else {
		p.grid(&b, rows, maxR, body)
	}
	b.WriteString(summary + "\n")
	b.WriteString(labelStyle.Render("history ") + spark(s.imbalance.values(), p.w-8, 1))
	return panel(fmt.Sprintf("Expert load · %d experts · %s", len(rows), s.last.Config.Routing), p.w, p.h, b.String())
}

func (p *expertsPanel) bars(b *strings.Builder, rows []int, maxR int, share func(int) float64) {
	label := len(fmt.Sprint(len(rows)-1)) + 1
	barW := max(4, p.w-label-1-8-7)
	bar := progress.New(progress.WithSolidFill(barColor), progress.WithoutPercentage(), progress.WithWidth(barW))
	for e, r := range rows {
		fmt.Fprintf(b, "%-*s %s %7s %5.1f%%\n", label, fmt.Sprintf("e%d", e),
			bar.ViewAs(float64(r)/float64(maxR)), fmtCount(r), 100*share(e))
	}
}

// grid draws one cell per expert, shaded by its rows over the busiest
// expert's, then names the busiest few.
func (p *expertsPanel) grid(b *strings.Builder, rows []int, maxR, lines int) {
	label := len(fmt.Sprint(len(rows)-1)) + 2
	per := max(1, p.w-label)
	need := (len(rows) + per - 1) / per
	if need > lines-2 && lines > 2 { // keep two lines for the legend and the top experts
		per = (len(rows) + lines - 3) / max(1, lines-2)
	}
	for start := 0; start < len(rows); start += per {
		fmt.Fprintf(b, "%-*s", label, fmt.Sprintf("e%d", start))
		for e := start; e < min(start+per, len(rows)); e++ {
			i := 0
			if rows[e] > 0 {
				i = 1 + (len(shades)-2)*rows[e]/maxR
			}
			b.WriteRune(shades[min(i, len(shades)-1)])
		}
		b.WriteString("\n")
	}
	b.WriteString(labelStyle.Render("· idle  ░ ▒ ▓ █ up to the busiest") + "\n")
	idx := make([]int, len(rows))
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return rows[idx[i]] > rows[idx[j]] })
	line := "busiest"
	for _, e := range idx[:min(4, len(idx))] {
		next := line + fmt.Sprintf("  e%d %s", e, fmtCount(rows[e]))
		if lipgloss.Width(next) > p.w {
			break
		}
		line = next
	}
	b.WriteString(line + "\n")
}
