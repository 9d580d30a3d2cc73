package tui

import (
	"math"
	"strings"
	"testing"

	"github.com/charmbracelet/lipgloss"
)

func TestChartDrawsSmallChangesInLargeValues(t *testing.T) {
	for name, v := range map[string][]float64{
		"steady":          {3.43, 3.43, 3.43, 3.43},
		"tiny difference": {3.4287109375, 3.4296875, 3.4287109375, 3.4296875},
		"rising":          {1, 2, 3, 4},
		"large":           {1980, 1985, 1975, 1990},
	} {
		got := chart(v, 4, 1)
		if strings.TrimSpace(got) == "" || strings.Contains(got, " ") {
			t.Errorf("%s: %q has blank columns", name, got)
		}
	}
	if got := []rune(chart([]float64{3.4287109375, 3.4296875}, 2, 1)); got[0] == got[len(got)-1] {
		t.Errorf("a change is not drawn: %q", string(got))
	}
}

func TestChartIsAlwaysItsSize(t *testing.T) {
	inf, nan := math.Inf(1), math.NaN()
	for _, c := range []struct {
		name   string
		values []float64
		w, h   int
	}{
		{"no values", nil, 10, 3},
		{"only NaN", []float64{nan, nan}, 10, 3},
		{"Inf and -Inf", []float64{inf, -inf, 1}, 10, 3},
		{"the largest floats of both signs", []float64{math.MaxFloat64, -math.MaxFloat64}, 7, 4},
		{"the smallest float", []float64{5e-324, 0}, 3, 2},
		{"negative times", []float64{-5, -1, -3}, 20, 5},
		{"one cell", []float64{1, 2, 3}, 1, 1},
		{"more values than columns", make([]float64, 500), 9, 2},
	} {
		got := chart(c.values, c.w, c.h)
		lines := strings.Split(got, "\n")
		if len(lines) != c.h {
			t.Errorf("%s: %d lines, want %d", c.name, len(lines), c.h)
		}
		for _, l := range lines {
			if lipgloss.Width(l) != c.w {
				t.Errorf("%s: line %q is %d wide, want %d", c.name, l, lipgloss.Width(l), c.w)
			}
		}
	}
	if chart([]float64{1}, 0, 5) != "" || chart([]float64{1}, 5, 0) != "" || chart([]float64{1}, -1, -1) != "" {
		t.Error("a chart of no cells is not empty")
	}
}

func TestChartStretchesAShortHistoryOverItsWidth(t *testing.T) {
	if got := chart([]float64{1, 2, 3, 4}, 40, 1); strings.Contains(got, " ") {
		t.Errorf("four values over 40 columns leave blanks: %q", got)
	}
	// 3 rising values over 10 columns: 4, 3 and 3 columns, none blank.
	got := []rune(chart([]float64{1, 2, 3}, 10, 1))
	if string(got) != strings.Repeat(string(got[0]), 4)+strings.Repeat(string(got[4]), 3)+strings.Repeat(string(got[7]), 3) ||
		got[0] == got[4] || got[4] == got[7] || got[0] == ' ' {
		t.Errorf("3 values over 10 columns: %q", string(got))
	}
}

func TestChartLeavesMissingReadingsBlank(t *testing.T) {
	got := []rune(chart([]float64{1, math.NaN(), 3}, 3, 1))
	if got[0] == ' ' || got[1] != ' ' || got[2] == ' ' {
		t.Errorf("NaN between two readings: %q, want a gap in the middle", string(got))
	}
}

func TestChartRisesWithTheValue(t *testing.T) {
	got := strings.Split(chart([]float64{0, 10}, 2, 3), "\n")
	if []rune(got[0])[1] != '█' || []rune(got[2])[0] == ' ' || []rune(got[0])[0] != ' ' {
		t.Errorf("0 then 10 over three rows:\n%s", strings.Join(got, "\n"))
	}
}
