package tui

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"

	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

// drain is every sample of a fake source.
func drain(src *fakeSource) []stream.Sample {
	var xs []stream.Sample
	for x := range src.ch {
		xs = append(xs, x)
	}
	return xs
}

// lines are a drawing's lines, trailing spaces cut.
func lines(v string) []string {
	out := strings.Split(v, "\n")
	for i := range out {
		out[i] = strings.TrimRight(out[i], " ")
	}
	return out
}

func TestKernelShowsTheRooflineNeverAbove100(t *testing.T) {
	src := newFakeRoofline(3)
	s := stateOf(src.header, drain(src)...)
	p := &kernelPanel{}
	for _, w := range []int{39, 59, 79} {
		p.SetSize(w, 20)
		v := p.View(s)
		for _, want := range []*regexp.Regexp{
			regexp.MustCompile(`gemm1 +1\.\d\d ms +7\d\d GB/s +8\d% comp`), // compute-bound under 700 TFLOP/s
			regexp.MustCompile(`router +50 µs +671 GB/s +22% mem`),         // memory-bound under 3000 GB/s
			regexp.MustCompile(`act +100 µs +4\.7 TB/s 100%\* mem`),        // beat the floor: clamped and marked
		} {
			if !want.MatchString(v) {
				t.Errorf("width %d: no %s in\n%s", w, want, v)
			}
		}
		for _, m := range regexp.MustCompile(`(\d+)%`).FindAllStringSubmatch(v, -1) {
			n := 0
			if fmt.Sscan(m[1], &n); n > 100 {
				t.Errorf("width %d: %s%% of a roofline", w, m[1])
			}
		}
		if lw := maxWidth(v); lw > w {
			t.Errorf("width %d: a line %d wide", w, lw)
		}
	}
	// Without ceilings (the CPU) the rates stay and the % goes.
	s.header.DenseGEMMTFLOPS, s.header.ReadGBps = 0, 0
	p.SetSize(79, 20)
	if v := p.View(s); strings.Contains(v, "% mem") || strings.Contains(v, "comp") || !strings.Contains(v, "GB/s") {
		t.Errorf("without ceilings:\n%s", v)
	}
}

func maxWidth(v string) int {
	w := 0
	for _, l := range strings.Split(v, "\n") {
		w = max(w, lipgloss.Width(l))
	}
	return w
}

func TestOverlappingPhasesShowWhereTheyRan(t *testing.T) {
	src := newFakeRoofline(1)
	s := stateOf(src.header, drain(src)...)
	p := &kernelPanel{}
	p.SetSize(79, 20)
	v := p.View(s)
	if !strings.Contains(v, "‖ gemm1–gemm2") || !strings.Contains(v, "wall") {
		t.Fatalf("the shared expert's overlap is not said:\n%s", v)
	}
	// Each bar is where its phase ran: gemm1's starts after router and
	// permute, the shared expert's part of the way into gemm1, gemm2's
	// after act.
	start := map[string]int{}
	for _, l := range lines(v) {
		f := strings.Fields(l)
		if len(f) == 0 {
			continue
		}
		bar := regexp.MustCompile(`[░█]+`).FindString(l)
		if bar == "" {
			continue
		}
		start[f[0]] = strings.IndexRune(bar, '█') / len("█")
	}
	if !(start["gemm1"] < start["shared"] && start["shared"] < start["gemm2"] && start["gemm1"] >= 0) {
		t.Errorf("bars start at %v: want gemm1 before shared before gemm2\n%s", start, v)
	}
	// At 39 columns there is no room for bars: a line says it instead.
	p.SetSize(39, 20)
	if v := p.View(s); !strings.Contains(v, "shared ‖ gemm1–gemm2") {
		t.Errorf("no note of the overlap at 39 columns:\n%s", v)
	}
	if got := len(phaseLines(stateOf(stream.Header{}, fakeSample(newFake(8, 1).header.Config, 0)), 39)); got != 6 {
		t.Errorf("a step in sequence has %d phase lines, want its 6", got)
	}
}

func TestTimelineOfDamagedStarts(t *testing.T) {
	nan, neg, huge := math.NaN(), -3.0, 1e308
	ph := []stream.PhaseTime{{Phase: "a", MS: 1}, {Phase: "b", MS: 2}, {Phase: "x", MS: 1, StartMS: &nan},
		{Phase: "y", MS: math.Inf(1), StartMS: &neg}, {Phase: "z", MS: 1, StartMS: &huge}}
	win, spanMS, overlap := timeline(ph)
	if !overlap || !finite(spanMS) {
		t.Fatalf("overlap %v span %v", overlap, spanMS)
	}
	if win[2].start != 0 || win[2].overlaps != "a" {
		t.Errorf("a NaN start is the step's start: %+v", win[2])
	}
	if win[3].start != 0 || win[3].end != 0 {
		t.Errorf("an infinite time takes no room: %+v", win[3])
	}
	if win[4].overlaps != "" {
		t.Errorf("a phase after all others overlaps none: %+v", win[4])
	}
}
