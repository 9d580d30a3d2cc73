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
			vers = append(vers, v.k+" "+v.v)
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
	device := h.Device
	if strings.HasPrefix(h.BackendReason, "no GPU") {
		device = "CPU reference — " + h.BackendReason
	}
	left := titleStyle.Render("moetop") + " " + device
	if len(vers) > 0 {
		left += labelStyle.Render("  " + strings.Join(vers, " · "))
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
	line2 := fmt.Sprintf("%s %s · %s %s · T=%d H=%d F=%d E=%d k=%d · %s", labelStyle.Render("backend"),
		valueStyle.Render(backend), c.DType, c.Act, c.Tokens, c.Hidden, c.FFN, c.Experts, c.TopK, valueStyle.Render(c.Routing))
	line2 = fit(line2, fmt.Sprintf("%.1f steps/s", s.stepsPerSecond()), p.w)
	return line1 + "\n" + line2
}

// fit puts right at the end of a line of width w after left, cutting left.
func fit(left, right string, w int) string {
	rw := lipgloss.Width(right)
	left = truncate(left, max(0, w-rw-1))
	gap := max(1, w-lipgloss.Width(left)-rw)
	return left + strings.Repeat(" ", gap) + right
}

func formatUptime(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%02d:%02d:%02d", int(d.Hours()), int(d.Minutes())%60, int(d.Seconds())%60)
}
