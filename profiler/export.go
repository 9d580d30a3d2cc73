package profiler

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"
)

// ExportCSV writes one row per sample.
func ExportCSV(l *Log, w io.Writer) (int, error) {
	cw := csv.NewWriter(w)
	head := []string{"step", "time", "backend", "dtype", "tokens", "hidden", "ffn", "experts", "top_k", "routing",
		"skipped", "step_ms", "router_ms", "permute_ms", "gemm1_ms", "act_ms", "gemm2_ms", "combine_ms", "tflops",
		"gemm_tflops", "imbalance", "dropped", "rows", "headroom_bytes", "gpu_util_pct", "power_w", "events"}
	cw.Write(head)
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	corrupt, err := l.Each(func(_ int, s Sample) error {
		rows := make([]string, len(s.Rows))
		for i, r := range s.Rows {
			rows[i] = strconv.Itoa(r)
		}
		headroom, util, power := "", "", ""
		if s.Memory != nil {
			headroom = strconv.FormatInt(s.Memory.HeadroomBytes, 10)
		}
		if s.GPU != nil && len(s.GPU.Devices) > 0 {
			d := s.GPU.Devices[0]
			if d.UtilPct != nil {
				util = strconv.Itoa(int(*d.UtilPct))
			}
			if d.PowerW != nil {
				power = f(*d.PowerW)
			}
		}
		var ev []string
		for _, e := range s.Events {
			ev = append(ev, e.Kind+": "+e.Msg)
		}
		c := s.Config
		p := s.Phases
		return cw.Write([]string{strconv.Itoa(s.Step), s.Time.Format("2006-01-02T15:04:05.000000Z07:00"), s.Backend,
			c.DType.String(), strconv.Itoa(c.Tokens), strconv.Itoa(c.Hidden), strconv.Itoa(c.FFN), strconv.Itoa(c.Experts),
			strconv.Itoa(c.TopK), c.Routing, strconv.FormatBool(s.Skipped), f(s.StepMS), f(p.Router), f(p.Permute),
			f(p.GEMM1), f(p.Act), f(p.GEMM2), f(p.Combine), f(s.TFLOPS), f(s.GEMMTFLOPS), f(s.Imbalance),
			strconv.Itoa(s.Dropped), strings.Join(rows, ";"), headroom, util, power, strings.Join(ev, "; ")})
	})
	cw.Flush()
	if err == nil {
		err = cw.Error()
	}
	return corrupt, err
}

// traceEvent is the Chrome trace event format that Perfetto opens.
type traceEvent struct {
	Name string         `json:"name"`
	Ph   string         `json:"ph"`
	TS   float64        `json:"ts"` // µs
	Dur  float64        `json:"dur,omitempty"`
	PID  int            `json:"pid"`
	TID  int            `json:"tid"`
	S    string         `json:"s,omitempty"`
	Args map[string]any `json:"args,omitempty"`
}

// ExportPerfetto writes a Chrome/Perfetto JSON trace: one track per phase
// with a slice per step, counters for TFLOP/s and imbalance, and instant
// events for OOMs and changes.
func ExportPerfetto(l *Log, w io.Writer) (int, error) {
	bw := bufio.NewWriter(w)
	enc := json.NewEncoder(bw)
	fmt.Fprint(bw, `{"displayTimeUnit":"ms","traceEvents":[`)
	n := 0
	emit := func(e traceEvent) error {
		if n > 0 {
			bw.WriteByte(',')
		}
		n++
		return enc.Encode(e)
	}
	emit(traceEvent{Name: "process_name", Ph: "M", PID: 1, Args: map[string]any{"name": "moetop " + l.Header.Device}})
	names := append([]string{"step"}, "router", "permute", "gemm1", "act", "gemm2", "combine")
	for i, name := range names {
		emit(traceEvent{Name: "thread_name", Ph: "M", PID: 1, TID: i + 1, Args: map[string]any{"name": name}})
		emit(traceEvent{Name: "thread_sort_index", Ph: "M", PID: 1, TID: i + 1, Args: map[string]any{"sort_index": i}})
	}
	var t0 float64
	first := true
	corrupt, err := l.Each(func(_ int, s Sample) error {
		ts := float64(s.Time.UnixNano()) / 1e3
		if first {
			t0, first = ts, false
		}
		ts -= t0
		for _, e := range s.Events {
			if err := emit(traceEvent{Name: e.Kind + ": " + e.Msg, Ph: "i", TS: ts, PID: 1, TID: 1, S: "p"}); err != nil {
				return err
			}
		}
		if s.Skipped {
			return nil
		}
		args := map[string]any{"step": s.Step, "backend": s.Backend, "tokens": s.Config.Tokens, "rows": s.Rows}
		if err := emit(traceEvent{Name: fmt.Sprintf("step %d", s.Step), Ph: "X", TS: ts, Dur: s.StepMS * 1e3, PID: 1, TID: 1, Args: args}); err != nil {
			return err
		}
		at := ts
		for i, d := range s.Phases.Slice() {
			if err := emit(traceEvent{Name: names[i+1], Ph: "X", TS: at, Dur: d * 1e3, PID: 1, TID: i + 2}); err != nil {
				return err
			}
			at += d * 1e3
		}
		emit(traceEvent{Name: "TFLOP/s", Ph: "C", TS: ts, PID: 1, Args: map[string]any{"tflops": s.TFLOPS}})
		return emit(traceEvent{Name: "imbalance", Ph: "C", TS: ts, PID: 1, Args: map[string]any{"max/mean": s.Imbalance}})
	})
	fmt.Fprint(bw, "]}\n")
	if ferr := bw.Flush(); err == nil {
		err = ferr
	}
	return corrupt, err
}
