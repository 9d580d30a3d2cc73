package tui

import (
	"github.com/NimbleMarkets/ntcharts/sparkline"
)

// spark draws the newest w values of a history as a w×h sparkline.
func spark(values []float64, w, h int) string {
	if w <= 0 || h <= 0 || len(values) == 0 {
		return ""
	}
	if len(values) > w {
		values = values[len(values)-w:]
	}
	// Bars from a floor below the minimum, so that a small change in a
	// large steady value (a clock, a temperature) still shows; a steady
	// series draws at full height.
	lo, hi := values[0], values[0]
	for _, v := range values {
		lo, hi = min(lo, v), max(hi, v)
	}
	floor := lo - (hi - lo)
	if hi == lo {
		floor = lo - max(1e-9, abs(lo))
	}
	// Scaled to 0..100 against a fixed maximum: the sparkline's own
	// automatic maximum starts above tiny values and would draw them blank.
	shifted := make([]float64, len(values))
	for i, v := range values {
		shifted[i] = 100 * (v - floor) / (hi - floor)
	}
	sl := sparkline.New(w, h, sparkline.WithStyle(sparkStyle), sparkline.WithMaxValue(100), sparkline.WithNoAutoMaxValue())
	sl.PushAll(shifted)
	sl.Draw()
	return sl.View()
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
