package tui

import "github.com/charmbracelet/bubbles/key"

// keyMap is every key the view answers; help shows those of the mode.
type keyMap struct {
	Help, Quit, Pause, Backend, Routing, TokensUp, TokensDown, SkewDown, SkewUp, Reset key.Binding
	Back, Forward, Slower, Faster, Jump, Home, End                                     key.Binding
	replay                                                                             bool
}

func newKeys(replay bool) keyMap {
	k := keyMap{
		Help:       key.NewBinding(key.WithKeys("?"), key.WithHelp("?", "help")),
		Quit:       key.NewBinding(key.WithKeys("q", "ctrl+c"), key.WithHelp("q", "quit")),
		Pause:      key.NewBinding(key.WithKeys(" "), key.WithHelp("space", "pause")),
		Backend:    key.NewBinding(key.WithKeys("b"), key.WithHelp("b", "next backend")),
		Routing:    key.NewBinding(key.WithKeys("d"), key.WithHelp("d", "next routing")),
		TokensUp:   key.NewBinding(key.WithKeys("+", "="), key.WithHelp("+", "tokens ×2")),
		TokensDown: key.NewBinding(key.WithKeys("-"), key.WithHelp("-", "tokens ÷2")),
		SkewDown:   key.NewBinding(key.WithKeys("["), key.WithHelp("[", "skew down")),
		SkewUp:     key.NewBinding(key.WithKeys("]"), key.WithHelp("]", "skew up")),
		Reset:      key.NewBinding(key.WithKeys("r"), key.WithHelp("r", "reset stats")),
		Back:       key.NewBinding(key.WithKeys("left"), key.WithHelp("←", "back one")),
		Forward:    key.NewBinding(key.WithKeys("right"), key.WithHelp("→", "forward one")),
		Slower:     key.NewBinding(key.WithKeys("["), key.WithHelp("[", "slower")),
		Faster:     key.NewBinding(key.WithKeys("]"), key.WithHelp("]", "faster")),
		Jump:       key.NewBinding(key.WithKeys("g"), key.WithHelp("g", "go to step/time")),
		Home:       key.NewBinding(key.WithKeys("home"), key.WithHelp("home", "start")),
		End:        key.NewBinding(key.WithKeys("end"), key.WithHelp("end", "end")),
		replay:     replay,
	}
	if replay {
		k.Pause.SetHelp("space", "play/pause")
	}
	return k
}

// ShortHelp is the one-line footer.
func (k keyMap) ShortHelp() []key.Binding {
	if k.replay {
		return []key.Binding{k.Help, k.Quit, k.Pause, k.Back, k.Forward, k.Slower, k.Faster, k.Jump}
	}
	return []key.Binding{k.Help, k.Quit, k.Pause, k.Backend, k.Routing, k.TokensUp, k.TokensDown, k.SkewDown, k.SkewUp}
}

// FullHelp is the '?' view.
func (k keyMap) FullHelp() [][]key.Binding {
	if k.replay {
		return [][]key.Binding{{k.Pause, k.Back, k.Forward}, {k.Slower, k.Faster, k.Jump}, {k.Home, k.End, k.Reset}, {k.Help, k.Quit}}
	}
	return [][]key.Binding{{k.Pause, k.Backend, k.Routing}, {k.TokensUp, k.TokensDown, k.Reset}, {k.SkewDown, k.SkewUp}, {k.Help, k.Quit}}
}
