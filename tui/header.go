package tui

import (
	"fmt"
	"strings"
	"time"

	"github.com/charmbracelet/lipgloss"
)

// headerPanel names the device, versions, backend, layer, routing, speed,
// mode and uptime.
type headerPanel struct{ w int }

func (p *headerPanel) SetSize(w, _ int) { p.w = w }

func (p *headerPanel) View(s *state) string {
	h := s.header
	var vers []string
	if s.gpu != nil && s.gpu.Driver != "" && h.Driver == "" {
		h.Driver, h.CUDA = s.gpu.Driver, s.gpu.CUDA
	}
	for _, v := range []struct{ k, v string }{{"driver", h.Driver}, {"CUDA", h.CUDA}, {"cuBLAS", h.CUBLAS}} {
		if v.v != "" {
			vers = append(vers, v.k+" "+clean(v.v))
		}
	}
	mode := s.mode
	switch {
	case s.paused && mode == "LIVE":
		mode = "PAUSED"
	case s.paused:
		mode += " · PAUSED"
	}
	if s.ended {
		mode += " · ENDED"
	}
	right := modeStyle.Render(" "+mode+" ") + " " + formatUptime(s.uptime())
	device := clean(h.Device)
	if strings.HasPrefix(h.BackendReason, "no GPU") {
		device = "CPU reference — " + clean(h.BackendReason)
	}
	// The device (or why there is none) is cut at a word, never mid-word;
	// the versions come only when the whole device name fits beside them.
	room := max(0, p.w-lipgloss.Width(right)-1-len("moetop "))
	left := titleStyle.Render("moetop") + " " + cutWords(device, room)
	if v := "  " + strings.Join(vers, " · "); len(vers) > 0 && lipgloss.Width(device+v) <= room {
		left += labelStyle.Render(v)
	}
	line1 := fit(left, right, p.w)
	c := s.last.Config
	if !s.hasLast {
		c = h.Config
	}
	backend := s.last.Backend
	if backend == "" {
		backend = h.Backend
	}
	// The layer in the longest form that fits beside the speed: the
	// "backend" label, then dtype and activation give way before the shape.
	speed := num("%.1f", s.stepsPerSecond()) + " steps/s"
	shape := fmt.Sprintf("T=%d H=%d F=%d E=%d k=%d · %s", c.Tokens, c.Hidden, c.FFN, c.Experts, c.TopK, valueStyle.Render(clean(c.Routing)))
	kinds := clean(c.DType) + " " + clean(c.Act) + " · "
	if c.Model != "" {
		kinds = valueStyle.Render(clean(c.Model)) + " " + kinds
	}
	be := valueStyle.Render(clean(backend)) + " · "
	forms := []string{labelStyle.Render("backend") + " " + be + kinds + shape, be + kinds + shape, be + shape}
	line2 := forms[len(forms)-1]
	for _, f := range forms {
		if lipgloss.Width(f)+1+lipgloss.Width(speed) <= p.w {
			line2 = f
			break
		}
	}
	return line1 + "\n" + fit(line2, speed, p.w)
}

// fit puts right at the end of a line of width w after left, cutting left.
func fit(left, right string, w int) string {
	rw := lipgloss.Width(right)
	left = truncate(left, max(0, w-rw-1))
	gap := max(1, w-lipgloss.Width(left)-rw)
	return truncate(left+strings.Repeat(" ", gap)+right, w)
}

// formatUptime is h:mm:ss, however many hours.
func formatUptime(d time.Duration) string {
	d = max(0, d.Round(time.Second))
	return fmt.Sprintf("%02d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
}
