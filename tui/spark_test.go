package tui

import (
	"strings"
	"testing"
)

func TestSparkDrawsSmallChangesInLargeValues(t *testing.T) {
	for name, v := range map[string][]float64{
		"steady":          {3.43, 3.43, 3.43, 3.43},
		"tiny difference": {3.4287109375, 3.4296875, 3.4287109375, 3.4296875},
		"rising":          {1, 2, 3, 4},
		"large":           {1980, 1985, 1975, 1990},
	} {
		got := spark(v, 4, 1)
		if strings.TrimSpace(got) == "" || strings.Contains(got, " ") {
			t.Errorf("%s: %q has blank columns", name, got)
		}
	}
	if got := spark([]float64{3.4287109375, 3.4296875}, 2, 1); got[0] == got[len(got)-1] {
		t.Errorf("a change is not drawn: %q", got)
	}
}
