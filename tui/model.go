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
	// ranks and heat show when the newest step has ranks or a layer.
	ranks, heat component
	statusUntil time.Time
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
		memory: &memoryPanel{}, ranks: &ranksPanel{}, heat: &heatPanel{}, now: time.Now}
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
	if m.help.ShowAll {
		if l := legend(m.st, w); len(l) > 0 {
			footer = labelStyle.Render(strings.Join(l, "\n")) + "\n" + footer
		}
	}
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
	out := lipgloss.JoinVertical(lipgloss.Left, m.header.View(m.st), m.grid(w, h-2-fh), footer)
	return lipgloss.NewStyle().MaxWidth(w).MaxHeight(h).Render(out)
}

// row is a band of the grid: two panels side by side, or one (right nil)
// across the width.
type row struct{ left, right component }

// rows lays the panels out in bands for a grid w wide and gridH tall:
// expert load and kernel time on top, GPU and memory at the bottom, and,
// between them, the ranks of an expert-parallel step and the layers of a
// traced model (side by side when both show). When the bands' essentials
// do not all fit, the GPU's place goes to the first of them: on a small
// terminal the ranks or the layers say more about the step than the
// card's readings do.
func (m Model) rows(w, gridH int) []row {
	top, bot := row{m.experts, m.kernel}, row{m.gpu, m.memory}
	var extra []component
	for _, c := range []component{m.ranks, m.heat} {
		if need, _ := c.Rows(m.st, w); need > 0 {
			extra = append(extra, c)
		}
	}
	switch len(extra) {
	case 0:
		return []row{top, bot}
	case 1:
		all := []row{top, {left: extra[0]}, bot}
		if m.needs(all, w) <= gridH {
			return all
		}
	default:
		all := []row{top, {extra[0], extra[1]}, bot}
		if m.needs(all, w) <= gridH {
			return all
		}
	}
	return []row{top, {extra[0], m.memory}}
}

// halves are the widths of a band's two panels, with a column between.
func halves(w int) (lw, rw int) {
	lw = (w - 1) / 2
	return lw, w - 1 - lw
}

// rowRows is what a band needs and wants: the most of its panels'.
func (m Model) rowRows(r row, w int) (need, want int) {
	if r.right == nil {
		return r.left.Rows(m.st, w)
	}
	lw, rw := halves(w)
	ln, lwant := r.left.Rows(m.st, lw)
	rn, rwant := r.right.Rows(m.st, rw)
	return max(ln, rn), max(lwant, rwant)
}

// needs is the rows the bands need together.
func (m Model) needs(rows []row, w int) int {
	n := 0
	for _, r := range rows {
		need, _ := m.rowRows(r, w)
		n += max(1, need)
	}
	return n
}

// grid lays out and draws the panels' bands in w × gridH cells. Rows
// beyond the needs go to a middle band's wants first (every layer or rank
// it lists), then to the bottom's (text before charts), then to the
// top's; what is left two to the top for each one to the bottom, where
// the panels stretch their charts.
func (m Model) grid(w, gridH int) string {
	rows := m.rows(w, gridH)
	bands := make([]band, len(rows))
	for i, r := range rows {
		need, want := m.rowRows(r, w)
		bands[i] = band{need: need, want: want}
	}
	last := len(rows) - 1
	bands[0].spare, bands[last].spare = 2, 1
	var order []int
	for i := 1; i < last; i++ {
		order = append(order, i)
	}
	order = append(order, last, 0)
	heights := share(gridH, bands, order)
	var drawn []string
	lw, rw := halves(w)
	for i, r := range rows {
		if r.right == nil {
			r.left.SetSize(w, heights[i])
			drawn = append(drawn, r.left.View(m.st))
			continue
		}
		r.left.SetSize(lw, heights[i])
		r.right.SetSize(rw, heights[i])
		drawn = append(drawn, lipgloss.JoinHorizontal(lipgloss.Top, r.left.View(m.st), " ", r.right.View(m.st)))
	}
	return lipgloss.JoinVertical(lipgloss.Left, drawn...)
}

// Tick is a frame of the view's clock, for callers that drive Update
// themselves (benchmarks).
func Tick() tea.Msg { return tickMsg(time.Now()) }

// HasData says whether the view has drawn a sample yet.
func HasData(m tea.Model) bool {
	mm, ok := m.(Model)
	return ok && mm.st.hasLast
}
