package tui

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/charmbracelet/lipgloss"
)

// heatPanel is "Layers × experts", shown when a trace replays a model's
// layers: the newest load of every layer seen as a grid, layers as rows
// and experts as columns, the layer of the newest step marked ▶. A cell is
// shaded by its rows over the layer's mean, the share a balanced router
// would give every expert: a hot expert stands out at once, and a balanced
// layer reads as balanced rather than as noise stretched over the whole
// scale. Layers and experts that do not fit one to a row or column share
// one, which shows the busiest of them.
type heatPanel struct{ w, h int }

func (p *heatPanel) SetSize(w, h int) { p.w, p.h = w, h }

// layers are the layers seen, in order.
func (s *state) layers() []int {
	out := make([]int, 0, len(s.heat))
	for l := range s.heat {
		out = append(out, l)
	}
	sort.Ints(out)
	return out
}

func (p *heatPanel) Rows(s *state, w int) (need, want int) {
	if s.last.LayerIndex == nil || len(s.heat) == 0 {
		return 0, 0
	}
	n := len(s.heat)
	// The title, at least three rows of layers, the legend; all the
	// layers and the experts' axis when there is room.
	return 1 + min(n, 3) + 1, 1 + n + 2
}

// heatLabel is a grid row's label: its layer or range of layers.
func heatLabel(ls []int) string {
	if len(ls) == 1 {
		return fmt.Sprintf("L%d", ls[0])
	}
	return fmt.Sprintf("L%d–%d", ls[0], ls[len(ls)-1])
}

func (p *heatPanel) View(s *state) string {
	layers := s.layers()
	if len(layers) == 0 {
		return panel("Layers × experts", p.w, p.h, labelStyle.Render("no layers yet"))
	}
	experts := 0
	for _, l := range layers {
		experts = max(experts, len(s.heat[l]))
	}
	title := fmt.Sprintf("Layers × experts · %d layers · %d experts", len(layers), experts)
	cur := math.MinInt
	if s.last.LayerIndex != nil {
		cur = *s.last.LayerIndex
	}
	// Rows of the grid: one per layer when they fit, else consecutive
	// layers share a row, as evenly as they divide.
	room := max(1, p.h-2) // the title and the legend
	axis := room > len(layers)
	if axis {
		room--
	}
	nrows := min(len(layers), room)
	groups := make([][]int, nrows)
	for i := range groups {
		groups[i] = layers[i*len(layers)/nrows : (i+1)*len(layers)/nrows]
	}
	labelW := 0
	for _, g := range groups {
		labelW = max(labelW, lipgloss.Width(heatLabel(g)))
	}
	labelW = min(labelW, 12) + 3 // "▶ " before it, a space after
	// A column of each row's imbalance, where the grid keeps room.
	infoW := 0
	if p.w-labelW-7 >= 24 {
		infoW = 7
	}
	cols := max(1, p.w-labelW-infoW)
	// Experts per column, and cells per expert when they are few.
	per := max(1, (experts+cols-1)/cols)
	ncol := max(1, (experts+per-1)/per)
	cw := 1
	if per == 1 {
		cw = max(1, min(8, cols/max(1, experts)))
	}
	cells := make([][]int, nrows) // each row's shade per column: the busiest's
	hottest := 0.0                // the most rows over its layer's mean
	for i, g := range groups {
		cells[i] = make([]int, ncol)
		for _, l := range g {
			rows := s.heat[l]
			mean := newLoad(rows).total / float64(max(1, len(rows)))
			for e, r := range rows {
				c := e / per
				cells[i][c] = max(cells[i][c], heatLevel(r, mean))
				if mean > 0 {
					hottest = max(hottest, float64(r)/mean)
				}
			}
		}
	}
	var lines []string
	for i, g := range groups {
		var b strings.Builder
		mark := "  "
		isCur := false
		for _, l := range g {
			isCur = isCur || l == cur
		}
		if isCur {
			mark = "▶ "
		}
		b.WriteString(mark + fmt.Sprintf("%-*s", labelW-2, truncate(heatLabel(g), labelW-3)))
		for _, v := range cells[i] {
			b.WriteString(strings.Repeat(string(shades[v]), cw))
		}
		if infoW > 0 {
			imb := 0.0
			for _, l := range g {
				imb = max(imb, imbalanceOf(s.heat[l]))
			}
			b.WriteString(cell(num("%.2f", imb)+"×", infoW))
		}
		line := b.String()
		if isCur {
			line = valueStyle.Render(line)
		}
		lines = append(lines, line)
	}
	if axis {
		gridW := ncol * cw
		left, right := "e0", fmt.Sprintf("e%d", experts-1)
		a := strings.Repeat(" ", labelW) + left
		if gap := gridW - len(left) - len(right); gap > 0 {
			a += strings.Repeat(" ", gap) + right
		}
		if infoW > 0 {
			a += cell("imbal.", infoW)
		}
		lines = append(lines, labelStyle.Render(a))
	}
	lines = append(lines, labelStyle.Render(p.legend(hottest, per, len(layers), nrows)))
	return panel(title, p.w, p.h, strings.Join(lines, "\n"))
}

// legend says what the marks and shades mean and how cells were merged,
// as much as fits.
func (p *heatPanel) legend(hottest float64, per, layers, rows int) string {
	items := []string{"▶ now", "· idle ░ <½ ▒ <1 ▓ <2 █ ≥2× the layer's mean", "hottest " + num("%.1f", hottest) + "×"}
	var merged []string
	if per > 1 {
		merged = append(merged, fmt.Sprintf("%d experts", per))
	}
	if layers > rows {
		merged = append(merged, fmt.Sprintf("up to %d layers", (layers+rows-1)/rows))
	}
	if len(merged) > 0 {
		items = append(items, strings.Join(merged, ", ")+" a cell: the busiest")
	}
	return joinFitting("", items, "  ", p.w)
}

// heatLevel is the shade of an expert with rows rows in a layer whose
// experts have mean rows on average: none, under half the mean, under the
// mean, under twice the mean, or more.
func heatLevel(rows int, mean float64) int {
	switch r := float64(rows); {
	case rows <= 0 || !(mean > 0):
		return 0
	case r < mean/2:
		return 1
	case r < mean:
		return 2
	case r < 2*mean:
		return 3
	}
	return 4
}

// imbalanceOf is max/mean of rows, negative counts as none, without
// overflow.
func imbalanceOf(rows []int) float64 {
	l := newLoad(rows)
	if l.total <= 0 || len(rows) == 0 {
		return 0
	}
	return float64(max(0, rows[l.busiest])) * float64(len(rows)) / l.total
}
