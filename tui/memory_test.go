package tui

import (
	"strings"
	"testing"

	"github.com/moetop/moetop/stream"
)

// The panel shows whatever the memory model reports, one row per backend:
// whether each fits, runs out, or cannot run here at all.
func TestMemoryPanelShowsEachBackendsVerdict(t *testing.T) {
	st := newState()
	st.mem = &stream.Memory{TotalBytes: 80 << 30, FreeBytes: 40 << 30, HeadroomBytes: 40 << 30, Backends: []stream.BackendMemory{
		{Backend: "a-long-backend-name", PeakBytes: 3 << 30, HeadroomBytes: 37 << 30, MaxTokens: 9000, Fits: true},
		{Backend: "b", PeakBytes: 50 << 30, HeadroomBytes: -(10 << 30), MaxTokens: 100},
		{Backend: "c", PeakBytes: 1 << 30, HeadroomBytes: 39 << 30, Fits: true, Refused: "c cannot run here: needs sm_90"},
	}}
	p := &memoryPanel{}
	p.SetSize(70, 12)
	v := p.View(st)
	for _, want := range []string{"a-long-backend-name", "fits", "OOM", "can't run"} {
		if !strings.Contains(v, want) {
			t.Errorf("no %q in the panel:\n%s", want, v)
		}
	}
	// The names' column is as wide as the longest, so the numbers line up.
	var at []int
	for _, l := range strings.Split(v, "\n") {
		if i := strings.Index(l, "GiB"); i >= 0 && (strings.Contains(l, "fits") || strings.Contains(l, "OOM") || strings.Contains(l, "can't")) {
			at = append(at, i)
		}
	}
	if len(at) != 3 || at[0] != at[1] || at[1] != at[2] {
		t.Errorf("peaks end at columns %v, want three equal:\n%s", at, v)
	}
}
