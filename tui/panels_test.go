package tui

import (
	"math"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

func TestShareBetweenTwoBands(t *testing.T) {
	for _, c := range []struct {
		name                                      string
		total, topNeed, topWant, botNeed, botWant int
		top, bot                                  int
	}{
		{"wants met, the spare split two to one", 40, 10, 15, 8, 11, 25, 15},
		{"the bottom's text before the top's charts", 21, 12, 15, 9, 11, 12, 9},
		{"the top's want before the spare", 24, 10, 15, 8, 8, 16, 8},
		{"needs that do not fit share in proportion", 10, 10, 10, 10, 10, 5, 5},
		{"no rows at all", 0, 5, 5, 5, 5, 0, 0},
		{"nonsense asks still add up", 30, -3, -9, 0, 0, 20, 10},
	} {
		h := share(c.total, []band{{c.topNeed, c.topWant, 2}, {c.botNeed, c.botWant, 1}}, []int{1, 0})
		top, bot := h[0], h[1]
		if top != c.top || bot != c.bot {
			t.Errorf("%s: share = %d, %d; want %d, %d", c.name, top, bot, c.top, c.bot)
		}
		if top+bot != max(0, c.total) {
			t.Errorf("%s: %d + %d rows of %d", c.name, top, bot, c.total)
		}
	}
}

func TestCutWords(t *testing.T) {
	reason := "no GPU: no CUDA device: libcuda.so.1: library not found (install the NVIDIA driver)"
	for _, c := range []struct {
		name string
		w    int
		want string
	}{
		{"room for all", 200, reason},
		{"cut after a whole word", 40, "no GPU: no CUDA device: libcuda.so.1…"},
		{"punctuation before the cut goes", 24, "no GPU: no CUDA device…"},
		{"room for the first word only", 4, "no…"},
		{"a first word longer than the room is cut", 2, "n…"},
		{"one cell", 1, "…"},
		{"none", 0, ""},
	} {
		got := cutWords(reason, c.w)
		if got != c.want {
			t.Errorf("%s: cutWords(%d) = %q, want %q", c.name, c.w, got, c.want)
		}
		if lipgloss.Width(got) > max(0, c.w) {
			t.Errorf("%s: %q is wider than %d", c.name, got, c.w)
		}
	}
}

func TestNumbersKeepTheirWidth(t *testing.T) {
	for _, c := range []struct {
		name, got, want string
	}{
		{"NaN time", fmtMS(math.NaN()), "—"},
		{"infinite time", fmtMS(math.Inf(1)), "—"},
		{"a negative time reads as one", fmtMS(-2.5), "-2.50 ms"},
		{"a huge time", fmtMS(1e300), "1e+297 s"},
		{"huge bytes", fmtBytes(1e300), "9.09e+287 TiB"},
		{"negative bytes", fmtBytes(-2 << 30), "-2.0 GiB"},
		{"negative TFLOP/s", fmtTFLOPS(-3), "-3.0 TFLOP/s"},
		{"NaN TFLOP/s", fmtTFLOPS(math.NaN()), "— TFLOP/s"},
		{"the largest count", fmtCount(math.MaxInt), "9.22e+18"},
		{"the smallest count", fmtCount(math.MinInt), "-9.22e+18"},
		{"a share over 100%", fmtPct(1e9), "1e+11%"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.name, c.got, c.want)
		}
	}
}

// stateOf is a state that has taken in samples xs.
func stateOf(h stream.Header, xs ...stream.Sample) *state {
	s := newState()
	s.header = h
	for _, x := range xs {
		s.add(x)
	}
	return s
}

func TestHeaderCutsTheReasonAtAWord(t *testing.T) {
	src := newFakeCPU(1)
	s := stateOf(src.header, <-src.ch)
	s.mode = "LIVE"
	for _, w := range []int{80, 100, 120, 160} {
		p := &headerPanel{}
		p.SetSize(w, 2)
		line := strings.Split(p.View(s), "\n")[0]
		if lipgloss.Width(line) > w {
			t.Errorf("%d: the header is %d wide", w, lipgloss.Width(line))
		}
		shown, _, cut := strings.Cut(line, "…")
		shown = strings.TrimPrefix(shown, "moetop CPU reference — ")
		if !cut {
			if !strings.Contains(line, src.header.BackendReason) {
				t.Errorf("%d: neither the whole reason nor a cut one: %q", w, line)
			}
			continue
		}
		rest := strings.TrimPrefix(src.header.BackendReason, shown)
		if rest == src.header.BackendReason || (rest != "" && !strings.ContainsAny(rest[:1], " ,:(")) {
			t.Errorf("%d: the reason is cut mid-word: %q", w, line)
		}
	}
}

func TestSlowestExpertsDropsWholeEntries(t *testing.T) {
	cfg := newFake(8, 1).header.Config
	x := fakeSample(cfg, 0)
	x.ExpertMS = []float64{12.345, 1.5, 0.25, 3.125, 7, 1000, 0.001, 2}
	s := stateOf(stream.Header{}, x)
	entry := regexp.MustCompile(`^slowest experts( +e\d+ -?[\d.]+ (s|ms|µs))+$`)
	for w := 20; w <= 120; w++ {
		p := &kernelPanel{}
		p.SetSize(w, 30)
		for _, l := range strings.Split(p.View(s), "\n") {
			if l = strings.TrimRight(l, " "); strings.HasPrefix(l, "slowest") && !entry.MatchString(l) {
				t.Fatalf("at width %d: %q", w, l)
			}
		}
	}
}

func TestHostMemoryLeavesAGapBeforeItsChart(t *testing.T) {
	src := newFakeCPU(10)
	var xs []stream.Sample
	for x := range src.ch {
		xs = append(xs, x)
	}
	// A large host: the value is as long as it gets.
	for i := range xs {
		if xs[i].GPU != nil {
			xs[i].GPU.Host.MemTotalBytes, xs[i].GPU.Host.MemAvailableBytes = 1023<<30, 10<<30
		}
	}
	s := stateOf(src.header, xs...)
	for _, w := range []int{39, 59, 79, 99} {
		p := &gpuPanel{}
		p.SetSize(w, 8)
		for _, l := range strings.Split(p.View(s), "\n") {
			if strings.HasPrefix(l, "host mem") {
				if !strings.Contains(l, "GiB ") || strings.Contains(l, "GiB▁") || regexp.MustCompile(`GiB[▁-█]`).MatchString(l) {
					t.Errorf("width %d: %q runs into its chart", w, l)
				}
			}
		}
	}
}

func TestKernelShowsDevice0sPhasesAndEachRank(t *testing.T) {
	x := fakeSample(newFake(8, 1).header.Config, 0)
	x.Phases = stream.Phases{
		{Phase: stream.PhaseRouter, MS: 1}, {Phase: stream.PhaseDispatch, MS: 2}, {Phase: stream.PhaseGEMM1, MS: 3},
		{Phase: stream.PhaseRouter, Device: 1, MS: 1}, {Phase: stream.PhaseDispatch, Device: 1, MS: 9},
		{Phase: stream.PhaseWait, Device: 1, MS: 0.5},
	}
	s := stateOf(stream.Header{}, x)
	p := &kernelPanel{}
	p.SetSize(80, 20)
	v := p.View(s)
	var names []string
	for _, l := range strings.Split(v, "\n")[1:] {
		if f := strings.Fields(l); len(f) > 0 && !strings.HasPrefix(l, "ranks") && strings.Contains(l, "avg") {
			names = append(names, f[0])
		}
	}
	if strings.Join(names, " ") != "router dispatch gemm1" {
		t.Errorf("phases shown %v, want device 0's in their order", names)
	}
	if !regexp.MustCompile(`ranks +r0 6\.00 ms +r1 10\.50 ms▲`).MatchString(v) {
		t.Errorf("no line of each rank's total, the slowest marked:\n%s", v)
	}
	one := stateOf(stream.Header{}, fakeSample(newFake(8, 1).header.Config, 0))
	if strings.Contains(p.View(one), "ranks") {
		t.Error("a step on one device shows a ranks line")
	}
}

func TestNaNIsAMissingReadingNotAPoisonedAverage(t *testing.T) {
	cfg := newFake(8, 1).header.Config
	bad := fakeSample(cfg, 1)
	bad.Phases[2].MS, bad.StepMS = math.NaN(), math.Inf(1)
	s := stateOf(stream.Header{}, fakeSample(cfg, 0), bad, fakeSample(cfg, 2))
	if avg := s.phaseAvg(stream.PhaseGEMM1); !finite(avg) || math.Abs(avg-6.1) > 1e-9 {
		t.Errorf("gemm1 average %v, want 6.1 (the two real readings)", avg)
	}
	p := &kernelPanel{}
	p.SetSize(80, 20)
	if v := p.View(s); !strings.Contains(v, "(last 2)") {
		t.Errorf("percentiles over the finite steps only:\n%s", v)
	}
}

func TestUptimeOfATimelineGoingBackwards(t *testing.T) {
	cfg := newFake(8, 1).header.Config
	a, b := fakeSample(cfg, 0), fakeSample(cfg, 1)
	b.Time = a.Time.Add(-time.Hour)
	if got := formatUptime(stateOf(stream.Header{}, a, b).uptime()); got != "00:00:00" {
		t.Errorf("uptime %s", got)
	}
}

func TestAWindowOfShortStepsCountsEachStep(t *testing.T) {
	cfg := newFake(8, 1).header.Config
	var xs []stream.Sample
	for i := range 20 { // a sample every 10 ms, each of 10 steps of 1 ms
		x := fakeSample(cfg, i)
		x.Time = t0.Add(time.Duration(i) * 10 * time.Millisecond)
		x.Steps, x.StepMS, x.StepMinMS, x.StepMaxMS = 10, 1, 0.8, 1.4
		xs = append(xs, x)
	}
	s := stateOf(stream.Header{}, xs...)
	if got := s.stepsPerSecond(); math.Abs(got-1000) > 1 {
		t.Errorf("%.1f steps/s, want 1000 (100 samples/s of 10 steps)", got)
	}
	p := &kernelPanel{}
	p.SetSize(80, 20)
	if v := p.View(s); !strings.Contains(v, "step 1.00 ms mean of 10 (800 µs–1.40 ms)") {
		t.Errorf("the step line does not say it is a window's mean:\n%s", v)
	}
}
