package tui

import (
	"math"
	"strings"

	"github.com/charmbracelet/lipgloss"
)

// col is a column of a table that gives way when the panel is narrow. Its
// width counts the space before it. A flexible column (a bar) asks for
// its least width and takes whatever the others leave.
type col struct {
	w    int
	flex bool
	// skip leaves the column out whatever the width (no row has a value).
	skip bool
}

// fitCols decides which columns a line of w cells shows, after a leading
// part lead cells wide: cols come in priority order, and each comes in if
// it fits beside those already in, so a column that does not fit leaves
// room for a smaller one after it. It returns each column's width in the
// same order, 0 for one left out; a flexible column gets what is left.
func fitCols(w, lead int, cols []col) []int {
	out := make([]int, len(cols))
	used := lead
	flex := -1
	for i, c := range cols {
		if c.skip || c.w <= 0 || used+c.w > w {
			continue
		}
		out[i] = c.w
		used += c.w
		if c.flex && flex < 0 {
			flex = i
		}
	}
	if flex >= 0 {
		out[flex] += max(0, w-used)
	}
	return out
}

// cell right-aligns s in a column of width w (its leading space included);
// "" for a column left out.
func cell(s string, w int) string {
	if w <= 0 {
		return ""
	}
	s = truncate(s, w-1)
	return strings.Repeat(" ", w-lipgloss.Width(s)) + s
}

// Styles of a drawn bar: the progress bubble's, so that bars drawn here
// and there look alike.
var (
	barFull  = lipgloss.NewStyle().Foreground(lipgloss.Color(barColor))
	barEmpty = lipgloss.NewStyle().Foreground(lipgloss.Color("#606060"))
)

// span draws a bar of w cells filled from a to b, fractions of its width:
// a phase's place in the step when phases overlap. A NaN or a fraction
// out of 0..1 is taken as the nearest end; a span that rounds to nothing
// is empty.
func span(a, b float64, w int) string {
	if w <= 0 {
		return ""
	}
	from := int(math.Round(clamp01(a) * float64(w)))
	to := max(from, int(math.Round(clamp01(b)*float64(w))))
	return barEmpty.Render(strings.Repeat("░", from)) + barFull.Render(strings.Repeat("█", to-from)) +
		barEmpty.Render(strings.Repeat("░", w-to))
}

// fill is a bar of w cells filled frac of the way from the left.
func fill(frac float64, w int) string { return span(0, frac, w) }

// fmtRate is bytes over ms as a rate in powers of 1000 (GB/s = 1e9 B/s,
// the unit the card's read bandwidth is measured in); "" without both.
func fmtRate(bytes, ms float64) string {
	if !(bytes > 0) || !(ms > 0) || !finite(bytes) || !finite(ms) {
		return ""
	}
	bps := bytes / (ms / 1000)
	for _, u := range []struct {
		name string
		size float64
	}{{"TB/s", 1e12}, {"GB/s", 1e9}, {"MB/s", 1e6}, {"kB/s", 1e3}} {
		if bps >= u.size {
			v := bps / u.size
			if v >= 100 {
				return num("%.0f", v) + " " + u.name
			}
			return num("%.1f", v) + " " + u.name
		}
	}
	return num("%.0f", bps) + " B/s"
}
