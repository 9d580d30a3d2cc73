package tui

import (
	"fmt"
	"math"
	"regexp"
	"strings"
	"testing"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/moetop/moetop/stream"
)

func TestShare(t *testing.T) {
	for _, c := range []struct {
		name  string
		total int
		bands []band
		order []int
		want  []int
	}{
		{"the middle's want first, then the bottom's and the top's, the spare two to one", 40,
			[]band{{10, 15, 2}, {5, 9, 0}, {5, 7, 1}}, []int{1, 2, 0}, []int{21, 9, 10}},
		{"a middle that wants more than there is takes the rest", 24,
			[]band{{10, 15, 2}, {5, 40, 0}, {5, 7, 1}}, []int{1, 2, 0}, []int{10, 9, 5}},
		{"needs that do not fit share in proportion, the remainder to the top", 10,
			[]band{{10, 10, 2}, {5, 5, 0}, {5, 5, 1}}, []int{1, 2, 0}, []int{6, 2, 2}},
		{"no bands", 5, nil, nil, []int{}},
	} {
		got := share(c.total, c.bands, c.order)
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: share = %v, want %v", c.name, got, c.want)
		}
	}
}

func TestRanksPanel(t *testing.T) {
	src := newFakeEP(1)
	s := stateOf(src.header, drain(src)...)
	rows, straggler := rankRows(s.last)
	if len(rows) != 4 || straggler != 0 {
		t.Fatalf("%d ranks, straggler %d; want 4 and r0 (it holds the hot expert)", len(rows), straggler)
	}
	mm, mx := balance(rows)
	mean := float64(rows[0].RecvRows+rows[1].RecvRows+rows[2].RecvRows+rows[3].RecvRows) / 4
	if math.Abs(mm-mean/float64(rows[0].RecvRows)) > 1e-9 || math.Abs(mx*mm-1) > 1e-9 {
		t.Errorf("balancedness %v and %v, want mean/max %v and its inverse", mm, mx, mean/float64(rows[0].RecvRows))
	}
	p := &ranksPanel{}
	p.SetSize(120, 10)
	v := p.View(s)
	// GB/s is bytes sent to other ranks over the dispatch time; beside
	// it, dispatch's and combine's GB/s as shares of the header's
	// all-to-all ceiling.
	want := float64(rows[1].SentBytes) / (rows[1].dispatch * 1e6)
	ceiling := src.header.AllToAllGBps
	shares := fmt.Sprintf("%.0f/%.0f%%", 100*want/ceiling, 100*float64(rows[1].SentBytes)/(rows[1].combine*1e6)/ceiling)
	if !regexp.MustCompile(fmt.Sprintf(`(?m)^r1 .* %.0f +%s +%s`, want, regexp.QuoteMeta(shares), regexp.QuoteMeta(fmtMS(rows[1].wait)))).MatchString(v) {
		t.Errorf("r1's line lacks %.0f GB/s, %s of the ceiling and its wait %s:\n%s", want, shares, fmtMS(rows[1].wait), v)
	}
	if !strings.Contains(v, "% of a2a") || !strings.Contains(v, "all-to-all 370 GB/s") {
		t.Errorf("no ceiling in the title or the columns' names:\n%s", v)
	}
	// Without a ceiling (CPU ranks, logs before it), no column for it.
	bare := *s
	bare.header.AllToAllGBps = 0
	if nv := p.View(&bare); strings.Contains(nv, "a2a") || strings.Contains(nv, "all-to-all") || strings.Contains(nv, "%") {
		t.Errorf("a ceiling that was not measured:\n%s", nv)
	}
	if !regexp.MustCompile(`(?m)^r0▲ `).MatchString(v) || strings.Count(v, "▲") != 2 {
		t.Errorf("the straggler is not marked once in its line and once in the summary:\n%s", v)
	}
	if !strings.Contains(v, "balancedness "+num("%.2f", mm)) {
		t.Errorf("no balancedness:\n%s", v)
	}
	// Many ranks in few rows: the busiest, and how many are left out.
	x := s.last
	x.Ranks, x.Phases = nil, nil
	for r := range 16 {
		x.Ranks = append(x.Ranks, stream.RankStat{Rank: r, RecvRows: 100 + r})
		x.Phases = append(x.Phases, stream.PhaseTime{Phase: stream.PhaseGEMM1, Device: r, MS: float64(r % 5)})
	}
	s = stateOf(src.header, x)
	p.SetSize(80, 8)
	v = p.View(s)
	if !strings.Contains(v, "12 more ranks") || !regexp.MustCompile(`(?m)^r4▲`).MatchString(v) {
		t.Errorf("16 ranks in 8 rows:\n%s", v)
	}
	if n := len(lines(v)); n != 8 {
		t.Errorf("%d lines in 8 rows", n)
	}
	if strings.Contains(v, "µs") {
		t.Errorf("phases the step does not have are shown as times:\n%s", v)
	}
}

func TestExpertsNameTheirRanks(t *testing.T) {
	for _, c := range []struct {
		name string
		h    stream.Header
		n    int
		want []string // marks of experts 0, 1, … n-1
	}{
		{"contiguous blocks", stream.Header{Ranks: 4}, 8, []string{"r0", "r0", "r1", "r1", "r2", "r2", "r3", "r3"}},
		{"blocks that do not divide", stream.Header{Ranks: 3}, 5, []string{"r0", "r1", "r1", "r2", "r2"}},
		{"more ranks than experts", stream.Header{Ranks: 4}, 2, []string{"r1", "r3"}},
		{"the header's placement, replicas too", stream.Header{Ranks: 2, Placement: [][]int{{1}, {0, 1}}}, 2, []string{"r1", "r0,1"}},
		{"a placement of other experts is not used", stream.Header{Ranks: 2, Placement: [][]int{{1}}}, 2, []string{"r0", "r1"}},
		{"not expert parallel", stream.Header{}, 4, nil},
	} {
		ranks := expertRanks(c.h, c.n)
		var got []string
		for _, rs := range ranks {
			got = append(got, rankMark(rs))
		}
		if fmt.Sprint(got) != fmt.Sprint(c.want) {
			t.Errorf("%s: %v, want %v", c.name, got, c.want)
		}
	}
	src := newFakeEP(1)
	s := stateOf(src.header, drain(src)...)
	p := &expertsPanel{}
	p.SetSize(80, 30) // a bar each
	if v := p.View(s); !regexp.MustCompile(`(?m)^e5 +r1 `).MatchString(v) {
		t.Errorf("no rank beside each expert's bar:\n%s", v)
	}
	p.SetSize(39, 12) // the grid
	if v := p.View(s); !strings.Contains(v, "ranks  r0 e0–3  r1 e4–7") {
		t.Errorf("no line of each rank's experts under the grid:\n%s", v)
	}
}

func TestHeatmap(t *testing.T) {
	src := newFakeTrace(30)
	s := stateOf(src.header, drain(src)...)
	if len(s.heat) != 24 || *s.last.LayerIndex != 5 {
		t.Fatalf("%d layers kept, now at %d; want 24 and layer 5", len(s.heat), *s.last.LayerIndex)
	}
	p := &heatPanel{}
	for _, sz := range [][2]int{{80, 30}, {80, 7}, {40, 5}, {160, 12}} {
		p.SetSize(sz[0], sz[1])
		v := p.View(s)
		ls := lines(v)
		if len(ls) != sz[1] || maxWidth(v) > sz[0] {
			t.Errorf("%v: %d lines, %d wide", sz, len(ls), maxWidth(v))
		}
		marked := 0
		for _, l := range ls {
			if strings.HasPrefix(l, "▶ L") {
				marked++
				if m := regexp.MustCompile(`^▶ L(\d+)(?:–(\d+))?`).FindStringSubmatch(l); m != nil {
					lo, hi := 0, 0
					fmt.Sscan(m[1], &lo)
					hi = lo
					if m[2] != "" {
						fmt.Sscan(m[2], &hi)
					}
					if 5 < lo || 5 > hi {
						t.Errorf("%v: the mark is on %q, not layer 5", sz, l)
					}
				}
			}
		}
		if marked != 1 {
			t.Errorf("%v: %d rows marked current:\n%s", sz, marked, v)
		}
	}
	// One row per layer when there is room, each of 64 experts a cell.
	p.SetSize(80, 30)
	if v := p.View(s); !strings.Contains(v, "  L23 ") || strings.Contains(v, "L0–") {
		t.Errorf("24 layers in 30 rows are not one a row:\n%s", v)
	}
}

func TestHeatmapMemoryIsBounded(t *testing.T) {
	s := newState()
	for i := range maxHeatLayers + 50 {
		l := i
		s.add(stream.Sample{Rows: []int{1, 2, 3}, LayerIndex: &l})
	}
	if len(s.heat) != maxHeatLayers || len(s.heatAt) != maxHeatLayers {
		t.Fatalf("%d layers kept, want at most %d", len(s.heat), maxHeatLayers)
	}
	if _, ok := s.heat[0]; ok {
		t.Error("the layer seen longest ago was kept")
	}
	if _, ok := s.heat[maxHeatLayers+49]; !ok {
		t.Error("the newest layer was dropped")
	}
	l := 7
	s.add(stream.Sample{Rows: make([]int, maxHeatExperts+10), LayerIndex: &l})
	if len(s.heat) != 1 || len(s.heat[7]) != maxHeatExperts {
		t.Errorf("a layer of other experts: %d layers, %d experts kept", len(s.heat), len(s.heat[7]))
	}
	s.add(stream.Sample{Rows: []int{1}, LayerIndex: &l, Reset: true})
	s.add(stream.Sample{Rows: []int{1}})
	if len(s.heat) != 1 {
		t.Errorf("after a jump: %d layers", len(s.heat))
	}
}

func TestSeveralGPUsAndTheirMemory(t *testing.T) {
	src := newFakeEP(10)
	s := stateOf(src.header, drain(src)...)
	g := &gpuPanel{}
	g.SetSize(39, 10)
	v := g.View(s)
	for r := range 4 {
		if !regexp.MustCompile(fmt.Sprintf(`(?m)^r%d +\d+%% +\d+%% +\d+W`, r)).MatchString(v) {
			t.Errorf("no line of r%d's readings:\n%s", r, v)
		}
	}
	if !strings.Contains(v, "4 × NVIDIA H100") {
		t.Errorf("the title does not say how many GPUs:\n%s", v)
	}
	m := &memoryPanel{}
	m.SetSize(39, 10)
	v = m.View(s)
	if !regexp.MustCompile(`(?m)^r0 .*75\.0 GiB / 80\.0 GiB +3\.0 GiB LOW`).MatchString(v) ||
		!regexp.MustCompile(`(?m)^r3 .*80\.0 GiB +5\d\.\d GiB`).MatchString(v) {
		t.Errorf("no line per device with its headroom:\n%s", v)
	}
}

func TestTheRanksTakeTheGPUsPlaceOnASmallTerminal(t *testing.T) {
	for _, c := range []struct {
		w, h        int
		gpu, middle bool
	}{{80, 24, false, false}, {160, 48, true, true}} {
		src := newFakeEP(5)
		m := New(&source{ch: make(chan stream.Sample), header: src.header}, nil)
		for _, x := range drain(src) {
			m.st.add(x)
		}
		next, _ := m.Update(tea.WindowSizeMsg{Width: c.w, Height: c.h})
		m = next.(Model)
		rows := m.rows(c.w, c.h-3)
		hasGPU := false
		for _, r := range rows {
			hasGPU = hasGPU || r.left == m.gpu
		}
		if hasGPU != c.gpu || (len(rows) == 3) != c.middle {
			t.Errorf("%dx%d: %d bands, GPU shown %v", c.w, c.h, len(rows), hasGPU)
		}
		if v := m.View(); !strings.Contains(v, "Ranks") {
			t.Errorf("%dx%d: no ranks panel", c.w, c.h)
		}
	}
}

func TestTheHelpExplainsTheFigures(t *testing.T) {
	src := newFakeEP(3)
	m := New(&source{ch: make(chan stream.Sample), header: src.header}, nil)
	for _, x := range drain(src) {
		m.st.add(x)
	}
	next, _ := m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	m = next.(Model)
	if v := m.View(); strings.Contains(v, "nccl-tests") {
		t.Error("the legend shows with the help shut")
	}
	m, _ = press(m, "?")
	v := m.View()
	for _, want := range []string{"nccl-tests' bus bandwidth, algbw × (n−1)/n", "balancedness: mean ÷ max", "straggler"} {
		if !strings.Contains(strings.Join(strings.Fields(v), " "), want) {
			t.Errorf("the full help does not say %q:\n%s", want, v)
		}
	}
	eps := stateOf(src.header, drain(newFakeEP(1))...)
	if got := strings.Join(legend(eps, 400), " "); !strings.Contains(got, "% of a2a") ||
		!strings.Contains(got, "all-to-all ceiling, 370 GB/s: an NCCL all-to-all of 256 MiB per rank") {
		t.Errorf("the ranks' legend does not explain the ceiling: %q", got)
	}
	src2 := newFakeRoofline(2)
	s := stateOf(src2.header, drain(src2)...)
	got := strings.Join(legend(s, 200), " ")
	if !strings.Contains(got, "100%*: faster than the roofline") || !strings.Contains(got, "‖") {
		t.Errorf("the roofline legend: %q", got)
	}
}
