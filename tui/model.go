package tui

import (
	"fmt"
	"strings"
	"sync"
	"time"

	"github.com/charmbracelet/bubbles/help"
	"github.com/charmbracelet/bubbles/key"
	"github.com/charmbracelet/bubbles/textinput"
	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

// Minimum terminal size the layout is drawn for.
const (
	MinWidth  = 80
	MinHeight = 24
	// frameInterval caps drawing at 20 frames a second, however fast
	// samples come.
	frameInterval = 50 * time.Millisecond
	// statusFor is how long a message stays on the status line.
	statusFor = 5 * time.Second
	// applyingFor is how long "applying …" waits for a sample that shows
	// the change: a CPU step in flight can take half a minute.
	applyingFor = time.Minute
)

// inbox collects samples from the source on its own goroutine, so the
// source never waits on the view and the view draws on its own clock.
type inbox struct {
	mu      sync.Mutex
	samples []stream.Sample
	closed  bool
}

func (b *inbox) pump(ch <-chan stream.Sample) {
	for s := range ch {
		b.mu.Lock()
		b.samples = append(b.samples, s)
		// A view that fell behind needs only the newest few thousand.
		if len(b.samples) > 8192 {
			b.samples = append([]stream.Sample(nil), b.samples[len(b.samples)-4096:]...)
		}
		b.mu.Unlock()
	}
	b.mu.Lock()
	b.closed = true
	b.mu.Unlock()
}

func (b *inbox) drain() ([]stream.Sample, bool) {
	b.mu.Lock()
	defer b.mu.Unlock()
	s := b.samples
	b.samples = nil
	return s, b.closed
}

type tickMsg time.Time

// component is a panel: it is told its size, draws the state in exactly
// that many cells, and says how many rows it needs at a width to show its
// essentials and wants to show everything with its charts at a nominal
// height (a panel stretches its charts over any rows beyond).
type component interface {
	SetSize(w, h int)
	View(s *state) string
	Rows(s *state, w int) (need, want int)
}

// Model is the root: it lays panels out and routes keys; panels draw.
type Model struct {
	st      *state
	ctl     Controller
	in      *inbox
	keys    keyMap
	help    help.Model
	jump    textinput.Model
	jumping bool

	header                       *headerPanel
	experts, kernel, gpu, memory component
	statusUntil                  time.Time
	// applying counts accepted changes no sample has shown yet; while
	// there are any, the status says "applying …".
	applying int
	now      func() time.Time
}

// New builds the view over src; ctl carries out keys (nil: view only).
func New(src Source, ctl Controller) Model {
	st := newState()
	st.header, st.mode = src.Header(), src.Mode()
	m := Model{st: st, ctl: ctl, in: &inbox{}, keys: newKeys(src.Mode() == "REPLAY"), help: help.New(),
		header: &headerPanel{}, experts: &expertsPanel{}, kernel: &kernelPanel{}, gpu: &gpuPanel{},
		memory: &memoryPanel{}, now: time.Now}
	m.jump = textinput.New()
	m.jump.Placeholder = "step number or time (1m30s)"
	m.jump.Prompt = "go to: "
	go m.in.pump(src.Samples())
	return m
}

func tick() tea.Cmd { return tea.Tick(frameInterval, func(t time.Time) tea.Msg { return tickMsg(t) }) }

// Init starts the frame clock.
func (m Model) Init() tea.Cmd { return tick() }

// Update handles keys, window sizes and frames.
func (m Model) Update(msg tea.Msg) (tea.Model, tea.Cmd) {
	switch msg := msg.(type) {
	case tea.WindowSizeMsg:
		m.st.width, m.st.height = msg.Width, msg.Height
		m.help.Width = msg.Width
		return m, nil
	case tickMsg:
		m.pull()
		return m, tick()
	case tea.KeyMsg:
		// Keys typed faster than the terminal is read (a held ']', a
		// quick ']]') arrive as one message of several runes, which
		// matches no binding: take them one at a time.
		if msg.Type == tea.KeyRunes && len(msg.Runes) > 1 && !msg.Paste {
			var next tea.Model = m
			var cmds []tea.Cmd
			for _, r := range msg.Runes {
				var cmd tea.Cmd
				next, cmd = next.Update(tea.KeyMsg{Type: tea.KeyRunes, Runes: []rune{r}, Alt: msg.Alt})
				cmds = append(cmds, cmd)
			}
			return next, tea.Batch(cmds...)
		}
		if m.jumping {
			return m.updateJump(msg)
		}
		return m.key(msg)
	}
	return m, nil
}

// pull folds the samples that arrived since the last frame into the state.
func (m *Model) pull() {
	samples, closed := m.in.drain()
	for _, s := range samples {
		m.st.add(s)
		m.settle(s.Events)
	}
	m.st.ended = closed
	if r, ok := m.ctl.(StatusReporter); ok {
		st := r.Status()
		m.st.paused, m.st.position = st.Paused, st.Position
	}
	if !m.statusUntil.IsZero() && m.now().After(m.statusUntil) {
		m.st.status, m.statusUntil, m.applying = "", time.Time{}, 0
	}
}

// settle reads a sample's events for the outcome of changes in flight: the
// loop reports a change it made (config, backend) or could not make (an
// error or an out-of-memory event) with the first sample after it. An
// error is shown whether or not a change was asked for: nothing else in
// the view shows one.
func (m *Model) settle(events []stream.Event) {
	for _, e := range events {
		switch e.Kind {
		case stream.EventConfig, stream.EventBackend:
			if m.applying > 0 {
				m.applying--
				if m.applying == 0 { // the change is on screen now: "applying" would mislead
					m.st.status, m.statusUntil = "", time.Time{}
				}
			}
		case stream.EventError:
			m.applying = max(0, m.applying-1)
			m.setStatus(clean(e.Msg), true)
		case stream.EventOOM:
			if m.applying > 0 {
				m.applying--
				m.setStatus(clean(e.Msg), true)
			}
		}
	}
}

// changes are the actions the workload applies between steps.
var changes = map[Action]bool{ActNextBackend: true, ActNextRouting: true, ActTokensUp: true, ActTokensDown: true,
	ActSkewUp: true, ActSkewDown: true}

func (m Model) key(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	k := m.keys
	replay := k.replay
	act := func(a Action) (tea.Model, tea.Cmd) {
		m.do(Request{Action: a})
		return m, nil
	}
	switch {
	case key.Matches(msg, k.Quit):
		return m, tea.Quit
	case key.Matches(msg, k.Help):
		m.help.ShowAll = !m.help.ShowAll
		return m, nil
	case key.Matches(msg, k.Reset):
		m.st.reset()
		m.setStatus("statistics reset", false)
		return m, nil
	case key.Matches(msg, k.Pause):
		if m.ctl == nil {
			m.st.paused = !m.st.paused
			return m, nil
		}
		return act(ActPause)
	}
	if replay {
		switch {
		case key.Matches(msg, k.Back):
			return act(ActStepBack)
		case key.Matches(msg, k.Forward):
			return act(ActStepForward)
		case key.Matches(msg, k.Slower):
			return act(ActSlower)
		case key.Matches(msg, k.Faster):
			return act(ActFaster)
		case key.Matches(msg, k.Home):
			return act(ActHome)
		case key.Matches(msg, k.End):
			return act(ActEnd)
		case key.Matches(msg, k.Jump):
			m.jumping = true
			m.jump.SetValue("")
			return m, m.jump.Focus()
		}
		return m, nil
	}
	switch {
	case key.Matches(msg, k.Backend):
		return act(ActNextBackend)
	case key.Matches(msg, k.Routing):
		return act(ActNextRouting)
	case key.Matches(msg, k.TokensUp):
		return act(ActTokensUp)
	case key.Matches(msg, k.TokensDown):
		return act(ActTokensDown)
	case key.Matches(msg, k.SkewUp):
		return act(ActSkewUp)
	case key.Matches(msg, k.SkewDown):
		return act(ActSkewDown)
	}
	return m, nil
}

func (m Model) updateJump(msg tea.KeyMsg) (tea.Model, tea.Cmd) {
	switch msg.Type {
	case tea.KeyEnter:
		m.jumping = false
		m.jump.Blur()
		m.do(Request{Action: ActJump, Target: strings.TrimSpace(m.jump.Value())})
		return m, nil
	case tea.KeyEsc:
		m.jumping = false
		m.jump.Blur()
		return m, nil
	}
	var cmd tea.Cmd
	m.jump, cmd = m.jump.Update(msg)
	return m, cmd
}

func (m *Model) do(r Request) {
	if m.ctl == nil {
		m.setStatus("this view takes no commands", true)
		return
	}
	msg, err := m.ctl.Do(r)
	if err != nil {
		m.setStatus(err.Error(), true)
		return
	}
	if r.Action == ActPause {
		if rep, ok := m.ctl.(StatusReporter); ok {
			m.st.paused = rep.Status().Paused
		}
	}
	m.setStatus(msg, false)
	if changes[r.Action] {
		m.applying++
		m.statusUntil = m.now().Add(applyingFor)
	}
}

func (m *Model) setStatus(s string, isErr bool) {
	m.st.status, m.st.statusErr = s, isErr
	m.statusUntil = m.now().Add(statusFor)
}

// View lays out the header, the four panels in a 2×2 grid, a status line
// and the help footer.
func (m Model) View() string {
	w, h := m.st.width, m.st.height
	if w == 0 || h == 0 {
		return "starting…"
	}
	if w < MinWidth || h < MinHeight {
		return lipgloss.Place(w, h, lipgloss.Center, lipgloss.Center,
			fmt.Sprintf("moetop needs a terminal of at least %d×%d;\nthis one is %d×%d.", MinWidth, MinHeight, w, h),
			lipgloss.WithWhitespaceChars(" "))
	}
	m.header.SetSize(w, 2)
	// A status message or the jump prompt takes the footer's line; '?'
	// still opens the full help.
	footer := m.help.View(m.keys)
	status := m.st.position
	if m.st.status != "" {
		st := m.st.status
		if m.st.statusErr {
			st = warnStyle.Render(st)
		}
		if status != "" {
			status += "  "
		}
		status += st
	}
	if m.jumping {
		status = m.jump.View()
	}
	if status != "" {
		if m.help.ShowAll {
			footer = truncate(status, w) + "\n" + footer
		} else {
			footer = truncate(status, w)
		}
	}
	fh := lipgloss.Height(footer)
	gridH := h - 2 - fh
	lw := (w - 1) / 2
	rw := w - 1 - lw
	en, ew := m.experts.Rows(m.st, lw)
	kn, kw := m.kernel.Rows(m.st, rw)
	gn, gw := m.gpu.Rows(m.st, lw)
	mn, mw := m.memory.Rows(m.st, rw)
	topH, botH := split(gridH, max(en, kn), max(ew, kw), max(gn, mn), max(gw, mw))
	m.experts.SetSize(lw, topH)
	m.kernel.SetSize(rw, topH)
	m.gpu.SetSize(lw, botH)
	m.memory.SetSize(rw, botH)
	top := lipgloss.JoinHorizontal(lipgloss.Top, m.experts.View(m.st), " ", m.kernel.View(m.st))
	bottom := lipgloss.JoinHorizontal(lipgloss.Top, m.gpu.View(m.st), " ", m.memory.View(m.st))
	out := lipgloss.JoinVertical(lipgloss.Left, m.header.View(m.st), top, bottom, footer)
	return lipgloss.NewStyle().MaxWidth(w).MaxHeight(h).Render(out)
}

// Tick is a frame of the view's clock, for callers that drive Update
// themselves (benchmarks).
func Tick() tea.Msg { return tickMsg(time.Now()) }

// HasData says whether the view has drawn a sample yet.
func HasData(m tea.Model) bool {
	mm, ok := m.(Model)
	return ok && mm.st.hasLast
}
