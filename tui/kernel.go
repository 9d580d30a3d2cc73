package tui

import (
	"fmt"
	"sort"
	"strings"

	"github.com/charmbracelet/bubbles/progress"
	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

// kernelPanel is "Kernel time": each phase of the last step and its
// average, step time percentiles, TFLOP/s, a chart of step time and the
// slowest experts' GEMM time where the backend times experts.
type kernelPanel struct{ w, h int }

func (p *kernelPanel) SetSize(w, h int) { p.w, p.h = w, h }

func (p *kernelPanel) View(s *state) string {
	if !s.hasLast {
		return panel("Kernel time", p.w, p.h, "")
	}
	var b strings.Builder
	barW := max(4, p.w-8-10-14-2)
	bar := progress.New(progress.WithSolidFill(barColor), progress.WithoutPercentage(), progress.WithWidth(barW))
	step := s.last.StepMS
	for _, ph := range s.last.Phases {
		if ph.Device != 0 {
			continue
		}
		avg := s.phaseSum[ph.Phase] / float64(max(1, s.phaseN))
		frac := 0.0
		if step > 0 {
			frac = ph.MS / step
		}
		fmt.Fprintf(&b, "%-8s%10s %s avg %s\n", ph.Phase, fmtMS(ph.MS), bar.ViewAs(frac), fmtMS(avg))
	}
	window := s.stepMS.tail(200)
	stepLine := fmt.Sprintf("step %s  p50 %s  p99 %s %s", valueStyle.Render(fmtMS(step)),
		fmtMS(stream.Percentile(window, 0.5)), fmtMS(stream.Percentile(window, 0.99)), labelStyle.Render(fmt.Sprintf("(last %d)", len(window))))
	if lipgloss.Width(stepLine) > p.w {
		stepLine = strings.Replace(stepLine, "  p50", "\n     p50", 1)
	}
	b.WriteString(stepLine + "\n")
	gemm := fmtTFLOPS(s.last.GEMMTFLOPS)
	if d := s.header.DenseGEMMTFLOPS; d > 0 && sameGEMMs(s.header.Config, s.last.Config) {
		gemm += fmt.Sprintf(" (%.0f%% of dense)", 100*s.last.GEMMTFLOPS/d)
	}
	fmt.Fprintf(&b, "%s  expert GEMMs %s\n", valueStyle.Render(fmtTFLOPS(s.last.TFLOPS)), gemm)
	if e := s.expertMS; len(e) > 0 && p.h >= 14 {
		idx := make([]int, len(e))
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(i, j int) bool { return e[idx[i]] > e[idx[j]] })
		var top []string
		for _, x := range idx[:min(4, len(idx))] {
			top = append(top, fmt.Sprintf("e%d %s", x, fmtMS(e[x])))
		}
		b.WriteString(labelStyle.Render("slowest experts ") + strings.Join(top, "  ") + "\n")
	}
	used := strings.Count(b.String(), "\n") + 2
	if rows := p.h - used; rows > 0 {
		b.WriteString(labelStyle.Render("step time") + "\n")
		b.WriteString(spark(s.stepMS.values(), p.w, rows))
	}
	return panel("Kernel time · "+s.last.Backend, p.w, p.h, b.String())
}

// sameGEMMs says whether two layers do the same expert GEMM FLOPs, so that
// a dense reference timed for one applies to the other.
func sameGEMMs(a, b stream.Layer) bool {
	return a.Tokens == b.Tokens && a.TopK == b.TopK && a.Hidden == b.Hidden && a.FFN == b.FFN && a.DType == b.DType
}
