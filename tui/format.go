package tui

import (
	"fmt"
	"math"
	"strings"
	"unicode"

	"github.com/charmbracelet/lipgloss"
)

// Every number a panel shows goes through these: a log may hold any value
// (negative, NaN, 1e308), and a value that cannot be real is shown as "—"
// or in short scientific form rather than as a 300-digit field that pushes
// the layout apart.

// finite says whether x is a number a chart or an average can use.
func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// finiteOnly drops NaN and ±Inf (missing readings) from v.
func finiteOnly(v []float64) []float64 {
	out := make([]float64, 0, len(v))
	for _, x := range v {
		if finite(x) {
			out = append(out, x)
		}
	}
	return out
}

// clamp01 is x within 0..1, with NaN as 0: a bar's fill.
func clamp01(x float64) float64 {
	if !(x > 0) {
		return 0
	}
	return min(x, 1)
}

// num formats x with format while it is of a sane size, and with three
// significant digits beyond.
func num(format string, x float64) string {
	if !finite(x) {
		return "—"
	}
	if math.Abs(x) >= 1e6 {
		return fmt.Sprintf("%.3g", x)
	}
	return fmt.Sprintf(format, x)
}

func fmtMS(ms float64) string {
	switch a := math.Abs(ms); {
	case !finite(ms):
		return "—"
	case a >= 1000:
		return num("%.2f", ms/1000) + " s"
	case a >= 1:
		return fmt.Sprintf("%.2f ms", ms)
	}
	return fmt.Sprintf("%.0f µs", ms*1000)
}

func fmtBytes(b float64) string {
	if !finite(b) {
		return "—"
	}
	neg := ""
	if b < 0 {
		neg, b = "-", -b
	}
	for _, u := range []struct {
		name string
		size float64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}} {
		if b >= u.size {
			return neg + num("%.1f", b/u.size) + " " + u.name
		}
	}
	return fmt.Sprintf("%s%.0f B", neg, b)
}

func fmtTFLOPS(t float64) string {
	if math.Abs(t) < 1 {
		return num("%.1f", t*1000) + " GFLOP/s"
	}
	return num("%.1f", t) + " TFLOP/s"
}

func fmtPct(frac float64) string { return num("%.1f", 100*frac) + "%" }

func fmtCount(n int) string {
	switch a := math.Abs(float64(n)); {
	case a >= 1e9:
		return fmt.Sprintf("%.3g", float64(n))
	case a >= 10_000_000:
		return fmt.Sprintf("%dM", n/1_000_000)
	case a >= 100_000:
		return fmt.Sprintf("%dk", n/1000)
	}
	return fmt.Sprint(n)
}

// clean makes a string from a sample safe to place in a line: control
// characters (a newline in a phase name would add a row) become spaces.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if unicode.IsControl(r) || r == unicode.ReplacementChar {
			return ' '
		}
		return r
	}, s)
}

// truncate cuts a line to w cells, styles and all.
func truncate(s string, w int) string {
	if w <= 0 {
		return ""
	}
	if lipgloss.Width(s) <= w {
		return s
	}
	return lipgloss.NewStyle().MaxWidth(w).Render(s)
}

// cutWords shortens plain text to w cells at a word boundary, ending in
// "…", so that a reason is never cut mid-word.
func cutWords(s string, w int) string {
	if lipgloss.Width(s) <= w {
		return s
	}
	if w <= 1 {
		return truncate("…", w)
	}
	words := strings.Fields(s)
	out := ""
	for _, word := range words {
		next := word
		if out != "" {
			next = out + " " + word
		}
		if lipgloss.Width(next)+1 > w {
			break
		}
		out = next
	}
	if out == "" { // one word longer than the line: cut it after all
		return truncate(s, w-1) + "…"
	}
	return strings.TrimRight(out, " ,;:—-(") + "…"
}

// wrapWords breaks plain text into lines of at most w cells at word
// boundaries; a word longer than a line is cut.
func wrapWords(s string, w int) []string {
	if w <= 0 {
		return nil
	}
	var lines []string
	line := ""
	for _, word := range strings.Fields(s) {
		switch {
		case line == "":
			line = word
		case lipgloss.Width(line)+1+lipgloss.Width(word) <= w:
			line += " " + word
		default:
			lines = append(lines, truncate(line, w))
			line = word
		}
	}
	if line != "" {
		lines = append(lines, truncate(line, w))
	}
	return lines
}

// joinFitting joins items with sep after prefix while the line stays
// within w cells, dropping whole items that do not fit rather than cutting
// one mid-number.
func joinFitting(prefix string, items []string, sep string, w int) string {
	line := prefix
	for i, it := range items {
		next := line + it
		if i > 0 {
			next = line + sep + it
		}
		if lipgloss.Width(next) > w {
			break
		}
		line = next
	}
	return line
}
