package recording

import (
	"bufio"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/moetop/moetop/stream"
)

// phaseKey is one column of the phase axis: a phase on a device.
type phaseKey struct {
	phase  string
	device int
}

// phaseColumns lists the (phase, device) pairs of a log in order of first
// appearance, the layer's own phases first, so that a single-GPU log has
// moetop/1's six columns in their order.
func phaseColumns(l *Log) ([]phaseKey, error) {
	var keys []phaseKey
	seen := map[phaseKey]bool{}
	for _, p := range stream.LayerPhases {
		k := phaseKey{p, 0}
		keys, seen[k] = append(keys, k), true
	}
	_, err := l.Each(func(_ int, s stream.Sample) error {
		for _, p := range s.Phases {
			k := phaseKey{p.Phase, p.Device}
			if !seen[k] {
				keys, seen[k] = append(keys, k), true
			}
		}
		return nil
	})
	return keys, err
}

func (k phaseKey) column() string {
	if k.device == 0 {
		return k.phase + "_ms"
	}
	return fmt.Sprintf("%s_ms_dev%d", k.phase, k.device)
}

// ExportCSV writes one row per sample: a column per phase and device.
func ExportCSV(l *Log, w io.Writer) (int, error) {
	keys, err := phaseColumns(l)
	if err != nil {
		return 0, err
	}
	cw := csv.NewWriter(w)
	head := []string{"step", "time", "backend", "dtype", "tokens", "hidden", "ffn", "experts", "top_k", "routing",
		"skipped", "step_ms"}
	for _, k := range keys {
		head = append(head, k.column())
	}
	head = append(head, "tflops", "gemm_tflops", "imbalance", "dropped", "rows", "headroom_bytes", "gpu_util_pct", "power_w", "events")
	cw.Write(head)
	f := func(v float64) string { return strconv.FormatFloat(v, 'g', -1, 64) }
	corrupt, err := l.Each(func(_ int, s stream.Sample) error {
		rows := make([]string, len(s.Rows))
		for i, r := range s.Rows {
			rows[i] = strconv.Itoa(r)
		}
		headroom, util, power := "", "", ""
		if m := s.Mem(0); m != nil {
			headroom = strconv.FormatInt(m.HeadroomBytes, 10)
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
		row := []string{strconv.Itoa(s.Step), s.Time.Format("2006-01-02T15:04:05.000000Z07:00"), s.Backend,
			c.DType, strconv.Itoa(c.Tokens), strconv.Itoa(c.Hidden), strconv.Itoa(c.FFN), strconv.Itoa(c.Experts),
			strconv.Itoa(c.TopK), c.Routing, strconv.FormatBool(s.Skipped), f(s.StepMS)}
		for _, k := range keys {
			row = append(row, f(s.Phases.MS(k.phase, k.device)))
		}
		return cw.Write(append(row, f(s.TFLOPS), f(s.GEMMTFLOPS), f(s.Imbalance),
			strconv.Itoa(s.Dropped), strings.Join(rows, ";"), headroom, util, power, strings.Join(ev, "; ")))
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

// ExportPerfetto writes a Chrome/Perfetto JSON trace: a process per device
// (rank) with one track per phase and a slice per step, counters for
// TFLOP/s and imbalance, and instant events for OOMs and changes.
func ExportPerfetto(l *Log, w io.Writer) (int, error) {
	keys, err := phaseColumns(l)
	if err != nil {
		return 0, err
	}
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
	// Each device is a process (pid device+1); its tracks are "step" (tid
	// 1) and its phases in column order (tid 2…).
	tid := map[phaseKey]int{}
	var devices []int
	for _, k := range keys {
		if _, ok := tid[phaseKey{"", k.device}]; !ok {
			tid[phaseKey{"", k.device}] = 1
			devices = append(devices, k.device)
		}
	}
	for _, d := range devices {
		name := "moetop " + l.Header.Device
		if d > 0 || len(devices) > 1 {
			name = fmt.Sprintf("moetop rank %d", d)
		}
		pid := d + 1
		emit(traceEvent{Name: "process_name", Ph: "M", PID: pid, Args: map[string]any{"name": name}})
		names := []string{"step"}
		for _, k := range keys {
			if k.device == d {
				tid[k] = len(names) + 1
				names = append(names, k.phase)
			}
		}
		for i, n := range names {
			emit(traceEvent{Name: "thread_name", Ph: "M", PID: pid, TID: i + 1, Args: map[string]any{"name": n}})
			emit(traceEvent{Name: "thread_sort_index", Ph: "M", PID: pid, TID: i + 1, Args: map[string]any{"sort_index": i}})
		}
	}
	var t0 float64
	first := true
	corrupt, err := l.Each(func(_ int, s stream.Sample) error {
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
		// Phases run in sequence on their device unless they say when they
		// started (a shared expert overlapping the routed ones).
		at := map[int]float64{}
		for _, p := range s.Phases {
			start, ok := at[p.Device]
			if !ok {
				start = ts
			}
			if p.StartMS != nil {
				start = ts + *p.StartMS*1e3
			} else {
				at[p.Device] = start + p.MS*1e3
			}
			if err := emit(traceEvent{Name: p.Phase, Ph: "X", TS: start, Dur: p.MS * 1e3, PID: p.Device + 1,
				TID: tid[phaseKey{p.Phase, p.Device}]}); err != nil {
				return err
			}
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
