package tui

import (
	"bytes"
	"fmt"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/charmbracelet/x/exp/golden"
	"github.com/charmbracelet/x/exp/teatest"
	"github.com/moetop/moetop/stream"
	"github.com/muesli/termenv"
)

func init() { lipgloss.SetColorProfile(termenv.Ascii) }

// finalView runs the model in teatest until the source has ended and
// returns the last frame.
func finalView(t *testing.T, src Source, w, h int) string {
	t.Helper()
	m := New(src, &recorder{})
	tm := teatest.NewTestModel(t, m, teatest.WithInitialTermSize(w, h))
	teatest.WaitFor(t, tm.Output(), func(b []byte) bool { return bytes.Contains(b, []byte("ENDED")) },
		teatest.WithDuration(5*time.Second), teatest.WithCheckInterval(20*time.Millisecond))
	tm.Send(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("q")})
	return tm.FinalModel(t, teatest.WithFinalTimeout(5*time.Second)).View()
}

// sizes are the terminals every layout is checked at: the smallest, two
// common ones and a large one.
var sizes = [][2]int{{80, 24}, {120, 40}, {160, 48}, {200, 60}}

func TestGolden(t *testing.T) {
	type run struct {
		name  string
		src   func() Source
		sizes [][2]int
		// titles are those the smallest and the other sizes must show.
		small, large []string
	}
	four := []string{"Expert load", "Kernel time", "GPU", "Memory"}
	two := [][2]int{{80, 24}, {160, 48}}
	runs := []run{
		{"8experts", func() Source { return newFake(8, 40) }, sizes, four, four},
		{"128experts", func() Source { return newFake(128, 40) }, sizes, four, four},
		// The host panels differ from the GPU's in their first rows only.
		{"cpu", func() Source { return newFakeCPU(40) }, sizes[:2], four, four},
		// On a small terminal the ranks and the layers take the GPU's place.
		{"ep4", func() Source { return newFakeEP(40) }, two,
			[]string{"Expert load", "Kernel time", "Ranks", "Memory"}, append(four, "Ranks")},
		{"trace", func() Source { return newFakeTrace(40) }, two, append(four, "Layers × experts"), append(four, "Layers × experts")},
		{"roofline", func() Source { return newFakeRoofline(40) }, two, four, four},
	}
	for _, r := range runs {
		for _, sz := range r.sizes {
			t.Run(fmt.Sprintf("%s_%dx%d", r.name, sz[0], sz[1]), func(t *testing.T) {
				v := finalView(t, r.src(), sz[0], sz[1])
				titles := r.large
				if sz[0] == MinWidth {
					titles = r.small
				}
				checkFrame(t, v, sz[0], sz[1], titles...)
				golden.RequireEqual(t, []byte(trimLines(v)))
			})
		}
	}
}

// trimLines drops the spaces that pad each line to the terminal's width,
// which say nothing and would double the golden files.
func trimLines(v string) string {
	lines := strings.Split(v, "\n")
	for i, l := range lines {
		lines[i] = strings.TrimRight(l, " ")
	}
	return strings.Join(lines, "\n")
}

// checkFrame asserts what every frame must be: the panels named and the
// mode on screen, no line wider than the terminal, no more lines than it
// has, and no band left with rows blank across the whole screen.
func checkFrame(t *testing.T, v string, w, h int, titles ...string) {
	t.Helper()
	for _, title := range append(titles, "LIVE") {
		if !strings.Contains(v, title) {
			t.Errorf("no %q in the view", title)
		}
	}
	lines := strings.Split(v, "\n")
	if len(lines) > h {
		t.Errorf("%d lines in a %d-line terminal", len(lines), h)
	}
	for i, l := range lines {
		if lw := lipgloss.Width(l); lw > w {
			t.Errorf("line %d is %d wide in a %d-wide terminal: %q", i, lw, w, l)
		}
	}
	if blank := blankRun(lines); blank > 1 {
		t.Errorf("%d blank rows in a row: a band does not use its space", blank)
	}
}

// blankRun is the longest run of consecutive lines blank in both halves of
// the screen (a half-blank line is a panel shorter than its neighbour).
func blankRun(lines []string) int {
	best, run := 0, 0
	for _, l := range lines {
		if strings.TrimSpace(l) == "" {
			run++
			best = max(best, run)
		} else {
			run = 0
		}
	}
	return best
}

// model returns a view that has taken in every sample of a fake source.
func model(t testing.TB, experts int, ctl Controller) Model {
	m := New(newFake(experts, 40), ctl)
	m.now = func() time.Time { return t0 }
	next, _ := m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	m = next.(Model)
	deadline := time.Now().Add(5 * time.Second)
	for !m.st.ended {
		if time.Now().After(deadline) {
			t.Fatal("source never ended")
		}
		next, _ = m.Update(tickMsg(time.Now()))
		m = next.(Model)
		time.Sleep(5 * time.Millisecond)
	}
	return m
}

func press(m Model, k string) (Model, tea.Cmd) {
	var msg tea.KeyMsg
	switch k {
	case "left":
		msg = tea.KeyMsg{Type: tea.KeyLeft}
	case "right":
		msg = tea.KeyMsg{Type: tea.KeyRight}
	case "home":
		msg = tea.KeyMsg{Type: tea.KeyHome}
	case "end":
		msg = tea.KeyMsg{Type: tea.KeyEnd}
	case "enter":
		msg = tea.KeyMsg{Type: tea.KeyEnter}
	case "space":
		msg = tea.KeyMsg{Type: tea.KeySpace, Runes: []rune(" ")}
	case "ctrl+c":
		msg = tea.KeyMsg{Type: tea.KeyCtrlC}
	default:
		msg = tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune(k)}
	}
	next, cmd := m.Update(msg)
	return next.(Model), cmd
}

func TestLiveKeysBecomeActions(t *testing.T) {
	for _, c := range []struct {
		key  string
		want Action
	}{
		{"space", ActPause}, {"b", ActNextBackend}, {"d", ActNextRouting}, {"+", ActTokensUp},
		{"-", ActTokensDown}, {"[", ActSkewDown}, {"]", ActSkewUp},
	} {
		rec := &recorder{}
		m := model(t, 8, rec)
		m, _ = press(m, c.key)
		if len(rec.got) != 1 || rec.got[0].Action != c.want {
			t.Errorf("key %q: requests %+v, want action %d", c.key, rec.got, c.want)
		}
		if !strings.Contains(m.View(), fmt.Sprintf("did %d", c.want)) {
			t.Errorf("key %q: the status line does not show the controller's answer", c.key)
		}
	}
}

func TestPauseShowsPaused(t *testing.T) {
	m := model(t, 8, &recorder{})
	m, _ = press(m, "space")
	if !strings.Contains(m.View(), "PAUSED") {
		t.Error("no PAUSED after space")
	}
}

func TestRefusedChangeIsShown(t *testing.T) {
	m := model(t, 8, &recorder{refuse: true})
	m, _ = press(m, "+")
	if !strings.Contains(m.View(), "out of memory predicted") {
		t.Error("the refusal is not on screen")
	}
}

func TestHelpToggles(t *testing.T) {
	m := model(t, 8, &recorder{})
	short := m.View()
	m, _ = press(m, "?")
	if full := m.View(); full == short || !strings.Contains(full, "reset stats") {
		t.Error("? did not open the full help")
	}
	m, _ = press(m, "?")
	if m.View() != short {
		t.Error("? did not close the help")
	}
}

func TestResetClearsStatistics(t *testing.T) {
	m := model(t, 8, &recorder{})
	if m.st.phaseN == 0 {
		t.Fatal("no statistics to reset")
	}
	m, _ = press(m, "r")
	if m.st.phaseN != 0 || len(m.st.stepMS.values()) != 0 {
		t.Error("r left statistics behind")
	}
}

func TestQuitKeys(t *testing.T) {
	for _, k := range []string{"q", "ctrl+c"} {
		m := model(t, 8, &recorder{})
		if _, cmd := press(m, k); cmd == nil || cmd() != tea.Quit() {
			t.Errorf("%s does not quit", k)
		}
	}
}

func TestReplayKeys(t *testing.T) {
	rec := &recorder{}
	src := newFake(8, 5)
	src.mode = "REPLAY"
	m := New(src, rec)
	m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
	for _, k := range []string{"left", "right", "[", "]", "home", "end"} {
		m, _ = press(m, k)
	}
	m, _ = press(m, "g")
	for _, r := range "120" {
		m, _ = press(m, string(r))
	}
	press(m, "enter")
	want := []Action{ActStepBack, ActStepForward, ActSlower, ActFaster, ActHome, ActEnd, ActJump}
	if len(rec.got) != len(want) {
		t.Fatalf("requests %+v", rec.got)
	}
	for i, a := range want {
		if rec.got[i].Action != a {
			t.Errorf("request %d: action %d, want %d", i, rec.got[i].Action, a)
		}
	}
	if rec.got[6].Target != "120" {
		t.Errorf("jump target %q", rec.got[6].Target)
	}
}

func TestResizeToTinyAndBackDoesNotPanic(t *testing.T) {
	m := model(t, 128, &recorder{})
	for _, sz := range [][2]int{{40, 10}, {1, 1}, {0, 0}, {79, 23}, {80, 24}, {300, 100}, {40, 10}, {120, 40}} {
		next, _ := m.Update(tea.WindowSizeMsg{Width: sz[0], Height: sz[1]})
		m = next.(Model)
		v := m.View()
		if sz[0] > 0 && sz[0] < MinWidth && !strings.Contains(v, "needs a terminal") {
			t.Errorf("%dx%d: no request for a larger terminal", sz[0], sz[1])
		}
	}
	if !strings.Contains(m.View(), "Expert load") {
		t.Error("the layout did not come back at 120×40")
	}
}

func BenchmarkFrame160x48With256Experts(b *testing.B) {
	m := model(b, 256, &recorder{})
	next, _ := m.Update(tea.WindowSizeMsg{Width: 160, Height: 48})
	m = next.(Model)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		_ = m.View()
	}
}

func TestKeysTypedTogetherAreEachTaken(t *testing.T) {
	rec := &recorder{}
	src := newFake(8, 5)
	src.mode = "REPLAY"
	m := New(src, rec)
	// A held ']' or a quick ']]' reaches the model as one message.
	next, _ := m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("]][")})
	m = next.(Model)
	want := []Action{ActFaster, ActFaster, ActSlower}
	if len(rec.got) != len(want) {
		t.Fatalf("requests %+v, want faster, faster, slower", rec.got)
	}
	for i, a := range want {
		if rec.got[i].Action != a {
			t.Errorf("request %d: action %d, want %d", i, rec.got[i].Action, a)
		}
	}
	// 'g' then digits typed together open the prompt and fill it.
	next, _ = m.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune("g42")})
	m = next.(Model)
	if !m.jumping || m.jump.Value() != "42" {
		t.Errorf("after \"g42\": jumping %v, prompt %q", m.jumping, m.jump.Value())
	}
}

// source is a Source whose samples the test sends one at a time.
type source struct {
	ch     chan stream.Sample
	header stream.Header
}

func (s *source) Samples() <-chan stream.Sample { return s.ch }
func (s *source) Header() stream.Header         { return s.header }
func (s *source) Mode() string                  { return "LIVE" }

// feed hands the view one sample and draws a frame once it is in.
func feed(t *testing.T, m Model, src *source, x stream.Sample) Model {
	t.Helper()
	n := m.st.samples
	src.ch <- x
	deadline := time.Now().Add(5 * time.Second)
	for m.st.samples == n {
		if time.Now().After(deadline) {
			t.Fatal("the sample never reached the view")
		}
		time.Sleep(time.Millisecond)
		next, _ := m.Update(tickMsg(time.Now()))
		m = next.(Model)
	}
	return m
}

func TestApplyingClearsWhenASampleShowsTheChange(t *testing.T) {
	cfg := newFake(8, 1).header.Config
	clock := t0
	for _, c := range []struct {
		name       string
		events     []stream.Event
		later      time.Duration
		wantStatus string
	}{
		{"the change applied", []stream.Event{{Kind: stream.EventConfig, Msg: "config T=8192"}}, 0, ""},
		{"a backend switch applied", []stream.Event{{Kind: stream.EventBackend, Msg: "backend loop"}}, 0, ""},
		{"the loop could not make it", []stream.Event{{Kind: stream.EventOOM, Msg: "change refused: out of memory"}}, 0,
			"change refused: out of memory"},
		{"no word yet: still applying", nil, 10 * time.Second, "did 3"},
		{"no word for a minute: given up", nil, 2 * time.Minute, ""},
	} {
		t.Run(c.name, func(t *testing.T) {
			src := &source{ch: make(chan stream.Sample, 1), header: stream.Header{Config: cfg}}
			m := New(src, &recorder{})
			now := clock
			m.now = func() time.Time { return now }
			next, _ := m.Update(tea.WindowSizeMsg{Width: 120, Height: 40})
			m = next.(Model)
			m = feed(t, m, src, fakeSample(cfg, 0))
			m, _ = press(m, "+")
			if m.st.status != "did 3" {
				t.Fatalf("status after + is %q", m.st.status)
			}
			now = now.Add(c.later)
			x := fakeSample(cfg, 1)
			x.Events = c.events
			m = feed(t, m, src, x)
			if m.st.status != c.wantStatus {
				t.Errorf("status %q, want %q", m.st.status, c.wantStatus)
			}
		})
	}
}
