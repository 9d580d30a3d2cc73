package tui

import (
	"strings"

	"github.com/charmbracelet/lipgloss"
)

// Styles, in one place. Colour only ever adds to what the text says, so the
// view reads the same with NO_COLOR or in a golden file.
var (
	titleStyle = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("12"))
	labelStyle = lipgloss.NewStyle().Foreground(lipgloss.Color("8"))
	valueStyle = lipgloss.NewStyle().Bold(true)
	warnStyle  = lipgloss.NewStyle().Bold(true).Foreground(lipgloss.Color("9"))
	okStyle    = lipgloss.NewStyle().Foreground(lipgloss.Color("10"))
	modeStyle  = lipgloss.NewStyle().Bold(true).Reverse(true)
	sparkStyle = lipgloss.NewStyle().Foreground(lipgloss.Color("6"))
	barColor   = "#5A9BD5"
)

// panel draws a titled section: a rule with the title, then the body cut
// to fit w × h (the title line included).
func panel(title string, w, h int, body string) string {
	if w <= 0 || h <= 0 {
		return ""
	}
	rule := "─ " + title + " " + strings.Repeat("─", max(0, w-lipgloss.Width(title)-3))
	lines := []string{titleStyle.Render(truncate(rule, w))}
	for _, l := range strings.Split(body, "\n") {
		if len(lines) >= h {
			break
		}
		lines = append(lines, truncate(l, w))
	}
	for len(lines) < h {
		lines = append(lines, "")
	}
	return lipgloss.NewStyle().Width(w).Render(strings.Join(lines, "\n"))
}
