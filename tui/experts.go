package tui

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

// expertsPanel is "Expert load": rows per expert as bars with counts, or a
// shaded grid when the experts do not fit one per line; imbalance, the
// busiest expert's share, and a history of imbalance that takes the rows
// left over.
type expertsPanel struct{ w, h int }

func (p *expertsPanel) SetSize(w, h int) { p.w, p.h = w, h }

func (p *expertsPanel) Rows(s *state, w int) (need, want int) {
	if !s.hasLast {
		return 2, 2
	}
	n := len(s.last.Rows)
	grid := gridLines(n, w) + 2
	if expertRanks(s.header, n) != nil {
		grid++ // the line of each rank's experts
	}
	body, want := n, n
	switch {
	case n > 16: // many experts: a grid, every expert a cell
		body, want = grid, grid
	case n > 8: // a bar each where there is room, else the grid
		body = min(n, grid)
	}
	need = 1 + body + len(p.summary(s, w)) + 1
	return need, need - body + want + 3
}

// gridLines is the fewest lines of cells that show n experts at width w.
func gridLines(n, w int) int {
	usable := max(1, w-gridLabel(n))
	return (n + usable - 1) / usable
}

// gridLabel is the width of a grid line's "e96 " label.
func gridLabel(n int) int { return len(fmt.Sprint(n-1)) + 2 }

// load is the newest step's rows read safely: a log may hold negative or
// huge counts, and their sum must not overflow.
type load struct {
	rows    []int
	busiest int
	maxR    float64 // the busiest expert's rows, at least 1
	total   float64 // rows over all experts, negatives counted as 0
}

func newLoad(rows []int) load {
	l := load{rows: rows, maxR: 1}
	for e, r := range rows {
		l.total += float64(max(0, r))
		if r > rows[l.busiest] {
			l.busiest = e
		}
	}
	if len(rows) > 0 {
		l.maxR = max(1, float64(rows[l.busiest]))
	}
	return l
}

func (l load) share(e int) float64 { return float64(max(0, l.rows[e])) / max(1, l.total) }
func (l load) frac(e int) float64  { return clamp01(float64(l.rows[e]) / l.maxR) }

// summary is the imbalance line, split in two when it does not fit w.
func (p *expertsPanel) summary(s *state, w int) []string {
	l := newLoad(s.last.Rows)
	first := "imbalance " + valueStyle.Render(num("%.2f", s.last.Imbalance)+"×")
	if len(l.rows) == 0 {
		return []string{first}
	}
	second := fmt.Sprintf("busiest e%d %s", l.busiest, valueStyle.Render(fmtPct(l.share(l.busiest))))
	if t := s.last.Target; len(t) > l.busiest {
		second += labelStyle.Render(" target " + fmtPct(t[l.busiest]))
	}
	if d := s.last.Dropped; d > 0 {
		second += warnStyle.Render(fmt.Sprintf(" dropped %s (%s)", fmtCount(d), fmtPct(float64(d)/max(1, l.total))))
	}
	if one := first + "  " + second; lipgloss.Width(one) <= w {
		return []string{one}
	}
	return []string{first, second}
}

func (p *expertsPanel) View(s *state) string {
	if !s.hasLast {
		return panel("Expert load", p.w, p.h, labelStyle.Render("waiting for the first step…"))
	}
	l := newLoad(s.last.Rows)
	summary := p.summary(s, p.w)
	room := p.h - 1 - len(summary) // below the title, above the summary
	var body []string
	switch {
	case len(l.rows) == 0:
		body = []string{labelStyle.Render("no experts in this step")}
	case len(l.rows) <= room-1: // one bar per expert and a line of history
		body = p.bars(l, expertRanks(s.header, len(l.rows)))
	default:
		// The grid takes up to two thirds of the rows; the history
		// the rest.
		ranks := expertRanks(s.header, len(l.rows))
		extra := 0
		if ranks != nil {
			extra = 1
		}
		body = p.grid(l, max(gridLines(len(l.rows), p.w)+2+extra, (room-1)*2/3), ranks)
	}
	lines := append(body, summary...)
	if hist := room - len(body); hist > 0 && p.w > 10 {
		lines = append(lines, labelled(scaleLabels("history", s.imbalance.values(), hist, "×"), chart(s.imbalance.values(), p.w-8, hist), 8))
	}
	title := fmt.Sprintf("Expert load · %d experts · %s", len(l.rows), clean(s.last.Config.Routing))
	return panel(title, p.w, p.h, strings.Join(lines, "\n"))
}

// bars is a line per expert; under expert parallelism each names the
// ranks that hold the expert.
func (p *expertsPanel) bars(l load, ranks [][]int) []string {
	label := len(fmt.Sprint(len(l.rows)-1)) + 1
	rankW := 0
	for _, rs := range ranks {
		rankW = max(rankW, min(8, lipgloss.Width(rankMark(rs)))+1)
	}
	barW := max(4, p.w-label-rankW-1-8-7)
	out := make([]string, len(l.rows))
	for e, r := range l.rows {
		mark := ""
		if ranks != nil {
			mark = fmt.Sprintf(" %-*s", rankW-1, truncate(rankMark(ranks[e]), rankW-1))
		}
		out[e] = fmt.Sprintf("%-*s%s %s %7s %6s", label, fmt.Sprintf("e%d", e), labelStyle.Render(mark), fill(l.frac(e), barW),
			fmtCount(r), fmtPct(l.share(e)))
	}
	return out
}

// maxMarkedRanks bounds the ranks a run may have for the view to work out
// each expert's: past it, contiguous blocks are not worth drawing.
const maxMarkedRanks = 1 << 16

// expertRanks is the ranks holding each of n experts under expert
// parallelism: the header's placement where it covers the experts, else
// contiguous blocks (rank r holds experts r·n/N up to (r+1)·n/N, as the
// workload splits them); nil when the run is not expert parallel.
func expertRanks(h stream.Header, n int) [][]int {
	if n <= 0 {
		return nil
	}
	if len(h.Placement) == n {
		return h.Placement
	}
	if h.Ranks <= 0 || h.Ranks > maxMarkedRanks {
		return nil
	}
	out := make([][]int, n)
	for e := range out {
		// The last rank whose block starts at or before e.
		out[e] = []int{min(h.Ranks-1, ((e+1)*h.Ranks-1)/n)}
	}
	return out
}

// rankMark names an expert's ranks: "r2", or "r0,3" for replicas.
func rankMark(rs []int) string {
	if len(rs) == 0 {
		return "r?"
	}
	parts := make([]string, 0, min(len(rs), 4))
	for _, r := range rs[:min(len(rs), 4)] {
		parts = append(parts, fmt.Sprint(r))
	}
	m := "r" + strings.Join(parts, ",")
	if len(rs) > 4 {
		m += "…"
	}
	return m
}

// rankExperts is one entry per rank for the grid's line of ranks: the
// experts it holds as a range ("r1 e32–63") or, when they are not one
// range, how many.
func rankExperts(ranks [][]int) []string {
	held := map[int][]int{}
	var order []int
	for e, rs := range ranks {
		for _, r := range rs {
			if _, ok := held[r]; !ok {
				order = append(order, r)
			}
			held[r] = append(held[r], e)
		}
		if len(order) > 256 { // more than a line can show
			break
		}
	}
	sort.Ints(order)
	var out []string
	for _, r := range order {
		es := held[r]
		switch {
		case len(es) == 1:
			out = append(out, fmt.Sprintf("r%d e%d", r, es[0]))
		case es[len(es)-1]-es[0] == len(es)-1:
			out = append(out, fmt.Sprintf("r%d e%d–%d", r, es[0], es[len(es)-1]))
		default:
			out = append(out, fmt.Sprintf("r%d %d experts", r, len(es)))
		}
	}
	return out
}

// shades go from idle to as busy as the busiest expert.
var shades = []rune("·░▒▓█")

// grid draws one cell per expert in at most lines rows, shaded by its rows
// over the busiest expert's, a legend, and the busiest few by name. Lines
// start at a round expert number (e0, e32, e64 …) so a cell is easy to
// find; cells are two columns wide when that still fits.
func (p *expertsPanel) grid(l load, lines int, ranks [][]int) []string {
	n := len(l.rows)
	label := gridLabel(n)
	usable := max(1, p.w-label)
	cellRows := max(1, lines-2) // the legend and the busiest experts
	if ranks != nil {
		cellRows = max(1, cellRows-1) // and each rank's experts
	}
	per, cw := 0, 1
	for _, c := range []int{2, 1} {
		q := 1
		for q*2*c <= usable {
			q *= 2
		}
		if q*c <= usable && (n+q-1)/q <= cellRows {
			per, cw = q, c
			break
		}
	}
	if per == 0 { // no round width fits: fill the lines
		per = usable
	}
	var out []string
	shown := 0
	for start := 0; start < n && len(out) < cellRows; start += per {
		var b strings.Builder
		fmt.Fprintf(&b, "%-*s", label, fmt.Sprintf("e%d", start))
		for e := start; e < min(start+per, n); e++ {
			i := 0
			if l.rows[e] > 0 {
				i = max(1, min(len(shades)-1, int(math.Ceil(4*l.frac(e)))))
			}
			b.WriteRune(shades[i])
			if cw == 2 {
				b.WriteByte(' ')
			}
			shown = e + 1
		}
		out = append(out, b.String())
	}
	hidden := ""
	if shown < n {
		hidden = fmt.Sprintf("e%d–e%d not shown · ", shown, n-1)
	}
	forms := []string{
		hidden + fmt.Sprintf("· idle  ░ ▒ ▓ █ up to the busiest (%s rows)", fmtCount(l.rows[l.busiest])),
		hidden + "· idle  ░ ▒ ▓ █ up to the busiest",
		hidden + "· idle ░▒▓█ busiest",
	}
	legend := forms[len(forms)-1]
	for _, f := range forms {
		if lipgloss.Width(f) <= p.w {
			legend = f
			break
		}
	}
	out = append(out, labelStyle.Render(legend))
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	sort.SliceStable(idx, func(i, j int) bool { return l.rows[idx[i]] > l.rows[idx[j]] })
	var top []string
	for _, e := range idx[:min(8, n)] {
		top = append(top, fmt.Sprintf("e%d %s", e, fmtCount(l.rows[e])))
	}
	out = append(out, joinFitting("busiest  ", top, "  ", p.w))
	if ranks != nil {
		out = append(out, labelStyle.Render(joinFitting("ranks  ", rankExperts(ranks), "  ", p.w)))
	}
	return out
}

// scaleLabels names a chart of h rows and, where it has three rows or
// more, gives its scale: the highest value beside its second row and the
// lowest beside its last. A chart zooms into its range, so a tall one
// needs the numbers to be read right.
func scaleLabels(name string, values []float64, h int, unit string) []string {
	labels := []string{name}
	v := finiteOnly(values)
	if h < 3 || len(v) == 0 {
		return labels
	}
	lo, hi := v[0], v[0]
	for _, x := range v {
		lo, hi = min(lo, x), max(hi, x)
	}
	labels = append(labels, num("%.2f", hi)+unit)
	for len(labels) < h-1 {
		labels = append(labels, "")
	}
	return append(labels, num("%.2f", lo)+unit)
}

// labelled puts labels to the left of a block's lines, a column w wide: a
// chart with its name and scale.
func labelled(labels []string, block string, w int) string {
	lines := strings.Split(block, "\n")
	for i, l := range lines {
		head := ""
		if i < len(labels) {
			head = labels[i]
		}
		lines[i] = labelStyle.Render(fmt.Sprintf("%-*s", w, truncate(head, w-1))) + l
	}
	return strings.Join(lines, "\n")
}
