package tui

import (
	"fmt"
	"strings"

	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

// gpuPanel is "GPU": utilisation, memory utilisation, power against its
// limit, temperature and SM clock, each with a history that grows taller
// when the band has rows to spare; the host's CPU and memory when there is
// no GPU, with the reason.
type gpuPanel struct{ w, h int }

func (p *gpuPanel) SetSize(w, h int) { p.w, p.h = w, h }

func na[T any](v *T, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

// naNum is na for a float that may not be a number.
func naNum(v *float64, format string) string {
	if v == nil {
		return "n/a"
	}
	return num(format, *v)
}

// metric is one reading with its history.
type metric struct {
	label, value string
	hist         *ring
}

// content is the panel's readings and the lines under them.
func (p *gpuPanel) content(s *state, w int) (title string, ms []metric, notes []string) {
	g := s.gpu
	if g == nil {
		return "GPU", nil, []string{labelStyle.Render("no reading yet")}
	}
	if h := g.Host; h != nil {
		ms = []metric{
			{"cpu", naNum(h.CPUUtilPct, "%.0f") + pctSuffix(h.CPUUtilPct) + fmt.Sprintf(" of %d", h.CPUs), s.util},
			{"host mem", fmtBytes(float64(hostUsed(h))) + " / " + fmtBytes(float64(h.MemTotalBytes)), s.memUtil},
		}
		// The full reason, wrapped: the header has room only for its start.
		for _, l := range wrapWords(clean(g.Reason), w) {
			notes = append(notes, labelStyle.Render(l))
		}
		return "GPU · host", ms, notes
	}
	if len(g.Devices) == 0 {
		msg := "no device"
		if g.Err != "" {
			msg = "error: " + clean(g.Err)
		}
		return "GPU", nil, []string{warnStyle.Render(msg)}
	}
	if len(g.Devices) > 1 {
		return p.several(s, g)
	}
	d := g.Devices[0]
	if d.Err != "" {
		notes = append(notes, warnStyle.Render("error: "+clean(d.Err)))
	}
	power := naNum(d.PowerW, "%.0f") + wattSuffix(d.PowerW)
	if d.PowerLimitW != nil {
		power += " / " + num("%.0f", *d.PowerLimitW) + " W"
	}
	ms = []metric{
		{"util", na(d.UtilPct, "%d%%"), s.util},
		{"mem util", na(d.MemUtilPct, "%d%%"), s.memUtil},
		{"power", power, s.power},
		{"temp", na(d.TempC, "%d °C"), s.temp},
		{"sm clock", na(d.SMClockMHz, "%d MHz"), s.smClock},
	}
	return "GPU · " + deviceName(g), ms, notes
}

// several is the panel of a run on several GPUs: a line per device with
// its readings and a history of its utilisation, the columns named in a
// first note.
func (p *gpuPanel) several(s *state, g *stream.Snapshot) (title string, ms []metric, notes []string) {
	rank := map[int]int{} // NVML index → rank, where the header says
	for _, d := range s.header.Devices {
		rank[d.NVML] = d.Rank
	}
	for i, d := range g.Devices {
		label := fmt.Sprintf("#%d", d.Index)
		if r, ok := rank[d.Index]; ok {
			label = fmt.Sprintf("r%d", r)
		}
		hist := newRing(1)
		if i < len(s.devUtil) {
			hist = s.devUtil[i]
		}
		power := "n/a"
		if d.PowerW != nil {
			power = num("%.0f", *d.PowerW) + "W"
		}
		ms = append(ms, metric{label, fmt.Sprintf("%4s %4s %5s %4s %5s", na(d.UtilPct, "%d%%"), na(d.MemUtilPct, "%d%%"),
			power, na(d.TempC, "%d°"), na(d.SMClockMHz, "%d")), hist})
		if d.Err != "" {
			notes = append(notes, warnStyle.Render(label+" error: "+clean(d.Err)))
		}
	}
	title = fmt.Sprintf("GPU · %d devices", len(g.Devices))
	name := g.Devices[0].Name
	for _, d := range g.Devices {
		if d.Name != name {
			name = ""
		}
	}
	if name != "" {
		title = fmt.Sprintf("GPU · %d × %s", len(g.Devices), clean(name))
	}
	return title, ms, notes
}

func pctSuffix(v *float64) string {
	if v == nil {
		return ""
	}
	return "%"
}

func wattSuffix(v *float64) string {
	if v == nil {
		return ""
	}
	return " W"
}

// multi says whether the panel shows a line per device.
func multi(s *state) bool { return s.gpu != nil && s.gpu.Host == nil && len(s.gpu.Devices) > 1 }

func (p *gpuPanel) Rows(s *state, w int) (need, want int) {
	_, ms, notes := p.content(s, w)
	need = 1 + len(ms) + min(1, len(notes))
	if multi(s) {
		need++ // the columns' names
	}
	return need, need - min(1, len(notes)) + len(notes)
}

func (p *gpuPanel) View(s *state) string {
	title, ms, notes := p.content(s, p.w)
	labelW := 10
	var head []string
	if multi(s) { // a line per device under the columns' names
		labelW = 0
		for _, m := range ms {
			labelW = max(labelW, min(6, lipgloss.Width(m.label))+1)
		}
		head = []string{labelStyle.Render(truncate(fmt.Sprintf("%-*s%4s %4s %5s %4s %5s  util", labelW, "", "util", "mem",
			"power", "temp", "MHz"), p.w))}
	}
	valueW := 0
	for _, m := range ms {
		valueW = max(valueW, lipgloss.Width(m.value))
	}
	valueW = min(valueW, max(0, p.w-labelW-8)) // leave a chart at least 7 wide
	chartW := p.w - labelW - valueW - 1        // one column between a value and its chart
	// Notes come first where the panel is short (an error outranks a
	// history); rows to spare make each history taller, up to four rows.
	room := p.h - 1 - len(head) - len(ms)
	notes = notes[:min(len(notes), max(0, room))]
	// A reading with no history (n/a) keeps one row; the others share
	// the rest.
	charted := 0
	for _, m := range ms {
		if len(m.hist.values()) > 0 {
			charted++
		}
	}
	per := 1
	if charted > 0 {
		per = max(1, min(4, 1+(room-len(notes))/charted))
	}
	lines := head
	for _, m := range ms {
		text := fmt.Sprintf("%-*s%-*s", labelW, truncate(m.label, labelW-1), valueW, truncate(m.value, valueW))
		rows := per
		if len(m.hist.values()) == 0 {
			rows = 1
		}
		block := strings.Split(chart(m.hist.values(), chartW, rows), "\n")
		for i := 0; i < rows; i++ {
			head := strings.Repeat(" ", labelW+valueW)
			if i == 0 {
				head = text
			}
			if chartW > 0 {
				head += " " + block[i]
			}
			lines = append(lines, head)
		}
	}
	lines = append(lines, notes...)
	return panel(title, p.w, p.h, strings.Join(lines, "\n"))
}

func deviceName(g *stream.Snapshot) string {
	if len(g.Devices) > 0 && g.Devices[0].Name != "" {
		return clean(g.Devices[0].Name)
	}
	return "GPU"
}
