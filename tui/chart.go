package tui

import (
	"math"
	"strings"
)

// levels are the eighths of a cell a column's top can fill.
var levels = []rune(" ▁▂▃▄▅▆▇█")

// valueLimit bounds what a chart scales, so that the span of two extreme
// but finite values (±1e308) cannot overflow to Inf.
const valueLimit = 1e300

// chart draws the newest values of a history as a w×h column chart,
// newest at the right: exactly h lines of exactly w cells. A history
// shorter than the width is stretched over it (column c shows value
// c·len/w), so a short replay still fills its band. NaN and ±Inf are
// missing readings and leave their columns blank; any value draws without
// panicking.
//
// Columns rise from a floor below the minimum, so a small change in a
// large steady value (a clock, a temperature) still shows: the minimum
// fills half of a one-row chart and one row of a taller one. A steady
// series draws at half height.
func chart(values []float64, w, h int) string {
	if w <= 0 || h <= 0 {
		return ""
	}
	if len(values) > w {
		values = values[len(values)-w:]
	}
	lo, hi, seen := math.Inf(1), math.Inf(-1), false
	for _, v := range values {
		if finite(v) {
			v = max(-valueLimit, min(v, valueLimit))
			lo, hi, seen = min(lo, v), max(hi, v), true
		}
	}
	// The minimum sits at minFrac of the height: floor solves
	// (lo-floor)/(hi-floor) = minFrac.
	minFrac := 1 / float64(h+1)
	floor := (lo - minFrac*hi) / (1 - minFrac)
	cols := make([]int, w) // each column's height in eighths of a cell; -1: missing
	for c := range cols {
		cols[c] = -1
		if !seen {
			continue
		}
		v := values[c*len(values)/w]
		if !finite(v) {
			continue
		}
		v = max(-valueLimit, min(v, valueLimit))
		frac := 0.5
		if hi > lo {
			frac = (v - floor) / (hi - floor)
		}
		cols[c] = max(1, min(8*h, int(math.Round(frac*float64(8*h)))))
	}
	lines := make([]string, h)
	var b strings.Builder
	for r := 0; r < h; r++ {
		b.Reset()
		base := 8 * (h - 1 - r) // eighths below this row
		for _, lv := range cols {
			b.WriteRune(levels[max(0, min(8, lv-base))])
		}
		lines[r] = sparkStyle.Render(b.String())
	}
	return strings.Join(lines, "\n")
}
