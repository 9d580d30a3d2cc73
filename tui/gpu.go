package tui

import (
	"fmt"
	"strings"

	"github.com/moetop/moetop/stream"
)

// gpuPanel is "GPU": utilisation, memory utilisation, power against its
// limit, temperature and SM clock, each with a short history; the host's
// CPU and memory when there is no GPU.
type gpuPanel struct{ w, h int }

func (p *gpuPanel) SetSize(w, h int) { p.w, p.h = w, h }

func na[T any](v *T, format string) string {
	if v == nil {
		return "n/a"
	}
	return fmt.Sprintf(format, *v)
}

func (p *gpuPanel) View(s *state) string {
	g := s.gpu
	if g == nil {
		return panel("GPU", p.w, p.h, labelStyle.Render("no reading yet"))
	}
	var b strings.Builder
	line := func(label, value string, hist *ring) {
		sw := p.w - 10 - 18
		fmt.Fprintf(&b, "%-10s%-18s%s\n", label, value, spark(hist.values(), sw, 1))
	}
	if g.Host != nil {
		h := g.Host
		line("cpu", na(h.CPUUtilPct, "%.0f%%")+fmt.Sprintf(" of %d", h.CPUs), s.util)
		line("host mem", fmtBytes(float64(h.MemTotalBytes-h.MemAvailableBytes))+" / "+fmtBytes(float64(h.MemTotalBytes)), s.memUtil)
		if g.Reason != "" {
			b.WriteString(labelStyle.Render(g.Reason) + "\n")
		}
		return panel("GPU · host", p.w, p.h, b.String())
	}
	if len(g.Devices) == 0 {
		return panel("GPU", p.w, p.h, labelStyle.Render("no device"))
	}
	d := g.Devices[0]
	if d.Err != "" {
		b.WriteString(warnStyle.Render("error: "+d.Err) + "\n")
	}
	line("util", na(d.UtilPct, "%d%%"), s.util)
	line("mem util", na(d.MemUtilPct, "%d%%"), s.memUtil)
	power := na(d.PowerW, "%.0f W")
	if d.PowerLimitW != nil {
		power += fmt.Sprintf(" / %.0f W", *d.PowerLimitW)
	}
	line("power", power, s.power)
	line("temp", na(d.TempC, "%d °C"), s.temp)
	line("sm clock", na(d.SMClockMHz, "%d MHz"), s.smClock)
	if len(g.Devices) > 1 {
		b.WriteString(labelStyle.Render(fmt.Sprintf("device 0 of %d", len(g.Devices))) + "\n")
	}
	return panel("GPU · "+deviceName(g), p.w, p.h, b.String())
}

func deviceName(g *stream.Snapshot) string {
	if len(g.Devices) > 0 && g.Devices[0].Name != "" {
		return g.Devices[0].Name
	}
	return "GPU"
}
