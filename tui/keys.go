package tui

import (
	"fmt"

	"github.com/charmbracelet/bubbles/key"
)

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

// legend explains, under the full help, the marks and figures that the
// panels on screen use, as plain lines of at most w cells.
func legend(s *state, w int) []string {
	var items []string
	if !s.hasLast {
		return nil
	}
	ph := phases(s)
	roof, overlap := false, false
	for _, x := range ph {
		_, ok := x.Roofline(s.header.ComputeCeiling(), s.header.ReadGBps)
		roof = roof || ok
		overlap = overlap || x.StartMS != nil
	}
	if roof {
		items = append(items,
			"roofline: a phase's least time at the card's ceilings, max(FLOPs ÷ dense FLOP/s, bytes ÷ read GB/s), over its time; mem or comp names the ceiling that sets it",
			"100%*: faster than the roofline allows (a cache served what the floor counts as memory traffic), shown as 100%")
	}
	if overlap {
		items = append(items, "‖: the phase ran beside those named; with overlapping phases each bar is where the phase ran in the step, and the step is wall time")
	}
	if len(s.last.Ranks) > 0 {
		items = append(items,
			"ranks GB/s: bytes a rank sent to other ranks ÷ its dispatch time; for an even all-to-all this is nccl-tests' bus bandwidth, algbw × (n−1)/n",
			"balancedness: mean ÷ max of the rows the ranks ran (1: even); ▲ straggler: the rank busy longest, whom the others wait for")
		if c := ceilingOf(s.header); c > 0 {
			items = append(items, fmt.Sprintf("%% of a2a: a rank's dispatch/combine GB/s as shares of the all-to-all ceiling, %s GB/s: an NCCL all-to-all of %d MiB per rank timed at start, in the same bus-bandwidth convention",
				num("%.0f", c), s.header.AllToAllBytes>>20))
		}
	}
	if s.last.LayerIndex != nil && len(s.heat) > 0 {
		items = append(items, "layers × experts: each layer's newest load, an expert shaded by its rows over the layer's mean (the balanced share); a cell over several experts or layers shows the busiest")
	}
	var out []string
	for _, it := range items {
		out = append(out, wrapWords(it, w)...)
	}
	return out
}
