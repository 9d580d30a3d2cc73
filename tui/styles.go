package tui

import (
	"fmt"
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

// truncate cuts a line to w cells, styles and all.
func truncate(s string, w int) string {
	if lipgloss.Width(s) <= w {
		return s
	}
	return lipgloss.NewStyle().MaxWidth(w).Render(s)
}

// Units.
func fmtMS(ms float64) string {
	switch {
	case ms != ms:
		return "—"
	case ms >= 1000:
		return fmt.Sprintf("%.2f s", ms/1000)
	case ms >= 1:
		return fmt.Sprintf("%.2f ms", ms)
	}
	return fmt.Sprintf("%.0f µs", ms*1000)
}

func fmtBytes(b float64) string {
	neg := ""
	if b < 0 {
		neg, b = "-", -b
	}
	switch {
	case b >= 1<<30:
		return fmt.Sprintf("%s%.1f GiB", neg, b/(1<<30))
	case b >= 1<<20:
		return fmt.Sprintf("%s%.1f MiB", neg, b/(1<<20))
	case b >= 1<<10:
		return fmt.Sprintf("%s%.1f KiB", neg, b/(1<<10))
	}
	return fmt.Sprintf("%s%.0f B", neg, b)
}

func fmtTFLOPS(t float64) string {
	if t < 1 {
		return fmt.Sprintf("%.1f GFLOP/s", t*1000)
	}
	return fmt.Sprintf("%.1f TFLOP/s", t)
}

func fmtCount(n int) string {
	switch {
	case n >= 10_000_000:
		return fmt.Sprintf("%dM", n/1_000_000)
	case n >= 100_000:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}
