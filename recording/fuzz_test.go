package recording

import (
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/moetop/moetop/stream"
)

// FuzzOpenLog reads whatever bytes it is given through every reader of
// recording: the index and its samples (replay), Each, Summarize and both
// exports. None may panic, they must agree on what the log holds, and every
// sample they let through must be one a view can draw (checkSane).
func FuzzOpenLog(f *testing.F) {
	dir := f.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	writeLog(f, good, 2, 0)
	b, _ := os.ReadFile(good)
	f.Add(b)
	f.Add(b[:len(b)/2])
	f.Add([]byte{})
	f.Add([]byte("\x28\xb5\x2f\xfd garbage"))
	f.Add([]byte(strings.Replace(string(b), Schema, "moetop/9", 1)))
	zst := filepath.Join(dir, "good.jsonl.zst")
	writeLog(f, zst, 2, 0)
	z, _ := os.ReadFile(zst)
	f.Add(z)
	f.Add(z[:len(z)-7])
	if v1, err := os.ReadFile("testdata/v1/cpu-v1.jsonl"); err == nil {
		f.Add(v1[:min(len(v1), 4096)])
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		l, err := ReadLog("fuzz", data)
		if err != nil {
			return
		}
		defer l.Close()
		readAll(t, l)
	})
}

// FuzzSampleLine puts one line after a moetop/1 or moetop/2 header and a
// good sample: the line may be anything, the good sample must stay.
func FuzzSampleLine(f *testing.F) {
	line := func(s stream.Sample) []byte {
		b, _ := jsonLine(sampleLine{LineSample, &s})
		return b
	}
	f.Add(line(plainSample(1)), false)
	bad := plainSample(2)
	bad.StepMS, bad.Imbalance, bad.Rows = -1, 1e9, []int{1}
	f.Add(line(bad), false)
	f.Add([]byte(`{"type":"sample","step":3,"config":{"experts":2,"tokens":1,"top_k":1},"rows":[1,0],"phases":[{"phase":"gemm1","device":-7,"ms":1}]}`), false)
	f.Add([]byte(`{"type":"sample","step":3,"phases_ms":{"router":-1,"gemm1":2},"step_ms":1,"rows":[2,0],"imbalance":2,"config":{"experts":2,"tokens":2,"top_k":1}}`), true)
	f.Add([]byte(`{"type":"event","step":0,"kind":"oom","device":-1}`), false)
	f.Fuzz(func(t *testing.T, data []byte, v1 bool) {
		h := stream.Header{Schema: Schema}
		if v1 {
			h.Schema = "moetop/1"
		}
		head, _ := jsonLine(headerLine{LineHeader, &h})
		var log []byte
		log = append(log, head...)
		log = append(append(log, data...), '\n')
		s := plainSample(9)
		if v1 {
			s.Phases, s.Memory = nil, nil // moetop/1 spelled them differently
		}
		tail, _ := jsonLine(sampleLine{LineSample, &s})
		log = append(log, tail...)
		l, err := ReadLog("fuzz", log)
		if err != nil {
			if strings.ContainsRune(string(data), '\n') {
				return // the line may have cut the log into a longer-than-allowed one or worse
			}
			t.Fatalf("a log with a good header did not open: %v", err)
		}
		defer l.Close()
		readAll(t, l)
		if n := l.Len(); n == 0 {
			t.Fatalf("the good sample after %q was lost", data)
		} else if last, err := l.Sample(n - 1); err != nil || last.Step != 9 {
			t.Fatalf("the last sample is step %d (%v), want the good step 9", last.Step, err)
		}
	})
}

func jsonLine(v any) ([]byte, error) {
	var w strings.Builder
	lw := NewLogWriter(&w)
	if err := lw.line(v); err != nil {
		return nil, err
	}
	lw.Flush()
	return []byte(w.String()), nil
}

// readAll reads l every way recording can and checks that the ways agree
// and that what they let through is sane.
func readAll(t *testing.T, l *Log) {
	t.Helper()
	var indexed []stream.Sample
	for i := 0; i < l.Len(); i++ {
		s, err := l.Sample(i)
		if err != nil {
			t.Fatalf("indexed sample %d of %d cannot be read: %v", i, l.Len(), err)
		}
		checkSane(t, s)
		indexed = append(indexed, s)
	}
	n := 0
	corrupt, err := l.Each(func(i int, s stream.Sample) error {
		checkSane(t, s)
		if i >= len(indexed) || indexed[i].Step != s.Step || len(indexed[i].Events) != len(s.Events) {
			t.Fatalf("Each's sample %d (step %d) is not the index's", i, s.Step)
		}
		n++
		return nil
	})
	if err != nil {
		t.Fatalf("Each: %v", err)
	}
	if n != l.Len() || corrupt != l.Skipped {
		t.Fatalf("Each read %d and skipped %d; the index holds %d and skipped %d", n, corrupt, l.Len(), l.Skipped)
	}
	sum, err := Summarize(l)
	if err != nil {
		t.Fatalf("Summarize: %v", err)
	}
	for _, b := range sum.Backends {
		for _, v := range []float64{b.StepP50MS, b.StepP90MS, b.StepP99MS, b.TFLOPS, b.GEMMTFLOPS} {
			if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
				t.Fatalf("summary of backend %q: %+v", b.Backend, b)
			}
		}
	}
	sum.WriteText(io.Discard)
	if _, err := ExportCSV(l, io.Discard); err != nil {
		t.Fatalf("csv: %v", err)
	}
	if _, err := ExportPerfetto(l, io.Discard); err != nil {
		t.Fatalf("perfetto: %v", err)
	}
}

// checkSane states, apart from validate and in plain terms, what a view
// may rely on in a sample a reader lets through.
func checkSane(t *testing.T, s stream.Sample) {
	t.Helper()
	ms := func(name string, v float64) {
		if !(v >= 0 && v <= 7*24*3600*1e3) {
			t.Fatalf("step %d: %s = %v", s.Step, name, v)
		}
	}
	ms("step_ms", s.StepMS)
	ms("step_min_ms", s.StepMinMS)
	ms("step_max_ms", s.StepMaxMS)
	for _, p := range s.Phases {
		ms("phase "+p.Phase, p.MS)
		if p.Device < 0 || p.Device >= 4096 {
			t.Fatalf("step %d: phase %s on device %d", s.Step, p.Phase, p.Device)
		}
	}
	for _, v := range s.ExpertMS {
		ms("expert_ms", v)
	}
	for _, v := range []float64{s.TFLOPS, s.GEMMTFLOPS, s.Imbalance} {
		if math.IsNaN(v) || math.IsInf(v, 0) || v < 0 {
			t.Fatalf("step %d: tflops %v gemm %v imbalance %v", s.Step, s.TFLOPS, s.GEMMTFLOPS, s.Imbalance)
		}
	}
	if s.Step < 0 || s.Dropped < 0 || s.Config.Experts < 0 || s.Config.Experts > 1<<16 || s.Config.Tokens < 0 || s.Config.TopK < 0 {
		t.Fatalf("step %d: dropped %d, layer %s", s.Step, s.Dropped, s.Config)
	}
	if s.Rows != nil && len(s.Rows) < s.Config.Experts {
		t.Fatalf("step %d: %d rows for %d experts", s.Step, len(s.Rows), s.Config.Experts)
	}
	if s.Imbalance > float64(max(len(s.Rows), s.Config.Experts)) {
		t.Fatalf("step %d: imbalance %v with %d experts", s.Step, s.Imbalance, max(len(s.Rows), s.Config.Experts))
	}
	for _, r := range s.Rows {
		if r < 0 {
			t.Fatalf("step %d: rows %v", s.Step, s.Rows)
		}
	}
	for _, n := range []int{len(s.Rows), len(s.Target), len(s.Phases), len(s.ExpertMS), len(s.Memory), len(s.Events)} {
		if n > 1<<16 {
			t.Fatalf("step %d: a list of %d", s.Step, n)
		}
	}
	for _, m := range s.Memory {
		if m.Device < 0 || m.Device >= 4096 || (m.TotalBytes > 0 && m.UsedBytes > m.TotalBytes) {
			t.Fatalf("step %d: memory %+v", s.Step, m)
		}
	}
}
