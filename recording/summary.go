package recording

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/moetop/moetop/stream"
)

// BackendSummary is one backend's share of a run.
type BackendSummary struct {
	Backend    string  `json:"backend"`
	Steps      int     `json:"steps"`
	StepP50MS  float64 `json:"step_p50_ms"`
	StepP90MS  float64 `json:"step_p90_ms"`
	StepP99MS  float64 `json:"step_p99_ms"`
	TFLOPS     float64 `json:"tflops_median"`
	GEMMTFLOPS float64 `json:"gemm_tflops_median"`
}

// Summary is what `moetop summary` reports of a log.
type Summary struct {
	File     string           `json:"file"`
	Header   stream.Header    `json:"header"`
	Duration time.Duration    `json:"duration_ns"`
	Steps    int              `json:"steps"`
	Skipped  int              `json:"steps_skipped"` // OOM or error steps
	Backends []BackendSummary `json:"backends"`
	// MeanShare is each expert's mean share of routed rows (for the
	// layer's first expert count, if it changed).
	MeanShare []float64 `json:"mean_share"`
	// DropRate is rows dropped by a capacity factor over rows routed.
	DropRate           float64        `json:"drop_rate"`
	WorstImbalance     float64        `json:"worst_imbalance"`
	WorstImbalanceStep int            `json:"worst_imbalance_step"`
	LowestHeadroom     *int64         `json:"lowest_headroom_bytes,omitempty"`
	LowestHeadroomStep int            `json:"lowest_headroom_step,omitempty"`
	OOMEvents          []stream.Event `json:"oom_events"`
	LinesSkipped       int            `json:"lines_skipped"`
	Warnings           []string       `json:"warnings,omitempty"`
}

// Summarize reads every sample of l once.
func Summarize(l *Log) (Summary, error) {
	sum := Summary{File: l.Path, Header: l.Header, Warnings: l.Warnings, OOMEvents: []stream.Event{}}
	steps := map[string][]float64{}
	stepsOf := map[string]int{} // a window of short steps counts each
	tflops := map[string][]float64{}
	gemm := map[string][]float64{}
	var order []string
	var first, last time.Time
	var shares []float64
	sharesN := 0
	dropped, routed := 0, 0
	corrupt, err := l.Each(func(_ int, s stream.Sample) error {
		if first.IsZero() {
			first = s.Time
		}
		last = s.Time
		for _, e := range s.Events {
			if e.Kind == stream.EventOOM {
				sum.OOMEvents = append(sum.OOMEvents, e)
			}
		}
		for _, m := range s.Memory {
			if sum.LowestHeadroom == nil || m.HeadroomBytes < *sum.LowestHeadroom {
				h := m.HeadroomBytes
				sum.LowestHeadroom, sum.LowestHeadroomStep = &h, s.Step
			}
		}
		if s.Skipped || s.Rows == nil {
			sum.Skipped++
			return nil
		}
		sum.Steps += max(1, s.Steps) // a window stands for several steps
		dropped += s.Dropped
		routed += s.Config.Tokens * s.Config.TopK * max(1, s.Steps)
		stepsOf[s.Backend] += max(1, s.Steps)
		if _, ok := steps[s.Backend]; !ok {
			order = append(order, s.Backend)
		}
		steps[s.Backend] = append(steps[s.Backend], s.StepMS)
		tflops[s.Backend] = append(tflops[s.Backend], s.TFLOPS)
		gemm[s.Backend] = append(gemm[s.Backend], s.GEMMTFLOPS)
		if s.Imbalance > sum.WorstImbalance {
			sum.WorstImbalance, sum.WorstImbalanceStep = s.Imbalance, s.Step
		}
		if shares == nil {
			shares = make([]float64, len(s.Rows))
		}
		if len(s.Rows) == len(shares) {
			total := 0
			for _, r := range s.Rows {
				total += r
			}
			for e, r := range s.Rows {
				shares[e] += float64(r) / float64(max(total, 1))
			}
			sharesN++
		}
		return nil
	})
	if err != nil {
		return sum, err
	}
	sum.LinesSkipped = corrupt
	sum.Duration = last.Sub(first)
	if routed > 0 {
		sum.DropRate = float64(dropped) / float64(routed)
	}
	for _, b := range order {
		sum.Backends = append(sum.Backends, BackendSummary{Backend: b, Steps: stepsOf[b],
			StepP50MS: stream.Percentile(steps[b], 0.5), StepP90MS: stream.Percentile(steps[b], 0.9), StepP99MS: stream.Percentile(steps[b], 0.99),
			TFLOPS: stream.Percentile(tflops[b], 0.5), GEMMTFLOPS: stream.Percentile(gemm[b], 0.5)})
	}
	for e := range shares {
		shares[e] /= float64(max(sharesN, 1))
	}
	sum.MeanShare = shares
	return sum, nil
}

// WriteText prints the summary for a person.
func (s Summary) WriteText(w io.Writer) {
	h := s.Header
	fmt.Fprintf(w, "%s\n", s.File)
	fmt.Fprintf(w, "  recorded   %s on %s by moetop %s\n", h.Start.Format(time.RFC3339), h.Host, h.Version)
	fmt.Fprintf(w, "  device     %s\n", h.Device)
	fmt.Fprintf(w, "  layer      %s routing %s\n", h.Config, h.Config.Routing)
	fmt.Fprintf(w, "  duration   %s, %d steps (%d skipped)\n", s.Duration.Round(time.Millisecond), s.Steps, s.Skipped)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  backend\tsteps\tstep p50\tp90\tp99\tTFLOP/s\texpert GEMM TFLOP/s")
	for _, b := range s.Backends {
		fmt.Fprintf(tw, "  %s\t%d\t%.3f ms\t%.3f ms\t%.3f ms\t%.3f\t%.3f\n", b.Backend, b.Steps, b.StepP50MS, b.StepP90MS,
			b.StepP99MS, b.TFLOPS, b.GEMMTFLOPS)
	}
	tw.Flush()
	var sh []string
	for e, x := range s.MeanShare {
		sh = append(sh, fmt.Sprintf("e%d %.1f%%", e, 100*x))
	}
	if len(sh) > 16 {
		sh = append(sh[:16], fmt.Sprintf("… (%d experts)", len(s.MeanShare)))
	}
	fmt.Fprintf(w, "  mean share %s\n", strings.Join(sh, "  "))
	fmt.Fprintf(w, "  worst imbalance %.2f× at step %d\n", s.WorstImbalance, s.WorstImbalanceStep)
	if s.DropRate > 0 {
		fmt.Fprintf(w, "  dropped rows %.2f%% (capacity factor %g)\n", 100*s.DropRate, s.Header.Config.CapacityFactor)
	}
	if s.LowestHeadroom != nil {
		fmt.Fprintf(w, "  lowest headroom %.2f GiB at step %d\n", float64(*s.LowestHeadroom)/(1<<30), s.LowestHeadroomStep)
	}
	fmt.Fprintf(w, "  OOM events %d\n", len(s.OOMEvents))
	for _, e := range s.OOMEvents {
		fmt.Fprintf(w, "    %s %s\n", e.Time.Format("15:04:05.000"), e.Msg)
	}
	fmt.Fprintf(w, "  lines skipped %d\n", s.LinesSkipped)
	for _, wn := range s.Warnings {
		fmt.Fprintf(w, "  warning: %s\n", wn)
	}
}
