package recording

import (
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/stream"
)

func openTestLog(t *testing.T, n int) *Log {
	t.Helper()
	path := filepath.Join(t.TempDir(), "run.jsonl")
	writeLog(t, path, n, 0)
	l, err := OpenLog(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}

func next(t *testing.T, r *Replay) stream.Sample {
	t.Helper()
	select {
	case s := <-r.Samples():
		return s
	case <-time.After(5 * time.Second):
		t.Fatal("no sample")
	}
	return stream.Sample{}
}

// drainWindow reads a seek's window and returns its last sample.
func drainWindow(t *testing.T, r *Replay) stream.Sample {
	t.Helper()
	s := next(t, r)
	for !s.Reset {
		s = next(t, r)
	}
	for {
		select {
		case x := <-r.Samples():
			if x.Reset {
				t.Fatal("two resets")
			}
			s = x
		case <-time.After(200 * time.Millisecond):
			return s
		}
	}
}

func TestReplayPlaysInOrderAtRecordedPace(t *testing.T) {
	l := openTestLog(t, 30) // samples 1 ms apart
	r := NewReplay(l)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)
	start := time.Now()
	for i := 0; i < 30; i++ {
		if s := next(t, r); s.Step != i {
			t.Fatalf("got step %d, want %d", s.Step, i)
		}
	}
	if el := time.Since(start); el < 25*time.Millisecond {
		t.Errorf("29 ms of recording played in %s", el)
	}
	if p := r.Position(); !strings.Contains(p, "step 29 / 29") || !strings.Contains(p, "1×") {
		t.Errorf("position %q", p)
	}
}

func TestReplaySeeks(t *testing.T) {
	l := openTestLog(t, 300)
	r := NewReplay(l)
	r.TogglePlay() // paused from the start
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	if _, err := r.Jump("250"); err != nil {
		t.Fatal(err)
	}
	if s := drainWindow(t, r); s.Step != 250 {
		t.Fatalf("jump to step 250 ended at %d", s.Step)
	}
	r.Step(-1)
	if s := drainWindow(t, r); s.Step != 249 {
		t.Fatalf("back one ended at %d", s.Step)
	}
	r.Step(1)
	if s := drainWindow(t, r); s.Step != 250 {
		t.Fatalf("forward one ended at %d", s.Step)
	}
	r.Home()
	if s := drainWindow(t, r); s.Step != 0 {
		t.Fatalf("home ended at %d", s.Step)
	}
	r.End()
	if s := drainWindow(t, r); s.Step != 299 {
		t.Fatalf("end ended at %d", s.Step)
	}
	if _, err := r.Jump("120ms"); err != nil {
		t.Fatal(err)
	}
	if s := drainWindow(t, r); s.Step != 120 {
		t.Fatalf("jump to 120ms ended at step %d", s.Step)
	}
	for _, bad := range []string{"soon", "-5s", "9999"} {
		if _, err := r.Jump(bad); err == nil {
			t.Errorf("jump %q accepted", bad)
		}
	}
	if got := r.Speed(true); got != "speed 2× (paused: space plays)" {
		t.Errorf("faster: %q", got)
	}
	for i := 0; i < 10; i++ {
		r.Speed(false)
	}
	if !strings.Contains(r.Position(), "0.25×") || !r.Paused() {
		t.Errorf("position %q", r.Position())
	}
}

func TestSummary(t *testing.T) {
	l := openTestLog(t, 21)
	s, err := Summarize(l)
	if err != nil {
		t.Fatal(err)
	}
	// richSample: every 7th step (6, 13, 20) is skipped; every 3rd has an OOM.
	if s.Steps != 18*3 || s.Skipped != 3 || len(s.OOMEvents) != 7 || s.LinesSkipped != 0 { // each sample a window of 3 steps
		t.Fatalf("steps %d skipped %d ooms %d lines %d", s.Steps, s.Skipped, len(s.OOMEvents), s.LinesSkipped)
	}
	if len(s.Backends) != 1 || s.Backends[0].Backend != "padded" || s.Backends[0].StepP50MS != 3.475 {
		t.Errorf("backends %+v", s.Backends)
	}
	// richSample drops i%3 rows of 128 in each step that ran.
	wantDropped := 0
	for i := 0; i < 21; i++ {
		if i%7 != 6 {
			wantDropped += i % 3
		}
	}
	if want := float64(wantDropped) / float64(18*3*128); s.DropRate != want {
		t.Errorf("drop rate %g, want %g", s.DropRate, want)
	}
	if s.Duration != 20*time.Millisecond || s.WorstImbalance != 1.75 || *s.LowestHeadroom != 10<<30 {
		t.Errorf("duration %s imbalance %g headroom %d", s.Duration, s.WorstImbalance, *s.LowestHeadroom)
	}
	total := 0.0
	for _, x := range s.MeanShare {
		total += x
	}
	if len(s.MeanShare) != 4 || total < 0.999 || total > 1.001 {
		t.Errorf("mean share %v", s.MeanShare)
	}
	var b strings.Builder
	s.WriteText(&b)
	for _, want := range []string{"54 steps (3 skipped)", "OOM events 7", "worst imbalance 1.75×", "lines skipped 0"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("summary text lacks %q:\n%s", want, b.String())
		}
	}
}

func TestExports(t *testing.T) {
	l := openTestLog(t, 10)
	var csv, trace strings.Builder
	if _, err := ExportCSV(l, &csv); err != nil {
		t.Fatal(err)
	}
	rows := strings.Split(strings.TrimSpace(csv.String()), "\n")
	if len(rows) != 11 || !strings.HasPrefix(rows[0], "step,time,backend") || !strings.Contains(rows[1], "10;50;30;38") {
		t.Errorf("csv:\n%s", csv.String())
	}
	if _, err := ExportPerfetto(l, &trace); err != nil {
		t.Fatal(err)
	}
	var v struct {
		TraceEvents []traceEvent `json:"traceEvents"`
	}
	if err := jsonUnmarshal(trace.String(), &v); err != nil {
		t.Fatalf("trace is not JSON: %v", err)
	}
	slices := map[string]int{}
	for _, e := range v.TraceEvents {
		if e.Ph == "X" {
			slices[e.Name]++
		}
	}
	// 10 samples, one skipped (step 6): 9 slices on each phase track.
	for _, p := range []string{"router", "permute", "gemm1", "act", "gemm2", "combine"} {
		if slices[p] != 9 {
			t.Errorf("%d %s slices, want 9", slices[p], p)
		}
	}
}

func jsonUnmarshal(s string, v any) error { return json.Unmarshal([]byte(s), v) }

func TestReplayClockFormatsHours(t *testing.T) {
	for _, c := range []struct {
		name string
		d    time.Duration
		want string
	}{
		{"the start", 0, "00:00.0"},
		{"a minute and a half", 90*time.Second + 500*time.Millisecond, "01:30.5"},
		{"just under an hour keeps tenths", 59*time.Minute + 59*time.Second + 900*time.Millisecond, "59:59.9"},
		{"an hour is h:mm:ss", time.Hour, "1:00:00"},
		{"eleven hours", 11*time.Hour + 6*time.Minute + 40*time.Second, "11:06:40"},
		{"a hundred hours", 100 * time.Hour, "100:00:00"},
		{"a clock going backwards reads the start", -5 * time.Second, "00:00.0"},
	} {
		if got := fmtOffset(c.d); got != c.want {
			t.Errorf("%s: fmtOffset(%s) = %q, want %q", c.name, c.d, got, c.want)
		}
	}
}

func TestReplayJumpPastTheEndSaysSo(t *testing.T) {
	l := openTestLog(t, 300) // 299 ms long: the clock reads 00:00.2 at its end (tenths, truncated)
	r := NewReplay(l)
	r.TogglePlay()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go r.Run(ctx)

	msg, err := r.Jump("99m")
	if err != nil {
		t.Fatalf("99m: %v", err)
	}
	if !strings.Contains(msg, "past the end") || !strings.Contains(msg, "00:00.2") || !strings.Contains(msg, "went to the end") {
		t.Errorf("99m in a 299 ms log says %q, want that it went to the end and where the log ends", msg)
	}
	if s := drainWindow(t, r); s.Step != 299 {
		t.Errorf("99m ended at step %d, want the last (299)", s.Step)
	}
	if msg, err := r.Jump("120ms"); err != nil || strings.Contains(msg, "past the end") {
		t.Errorf("120ms: %q, %v", msg, err)
	}
	drainWindow(t, r)
	if _, err := r.Jump("9999"); err == nil || !strings.Contains(err.Error(), "ends at step 299") {
		t.Errorf("step 9999: %v, want a refusal that names the last step", err)
	}
}

func TestReplaySpeedChangesWhilePaused(t *testing.T) {
	l := openTestLog(t, 30)
	r := NewReplay(l)
	r.TogglePlay()
	msg := r.Speed(true)
	if !strings.Contains(msg, "2×") || !strings.Contains(msg, "paused") {
		t.Errorf("faster while paused says %q, want the new speed and that the replay is paused", msg)
	}
	if p := r.Position(); !strings.Contains(p, "| 2× |") || !strings.Contains(p, "paused") {
		t.Errorf("position %q", p)
	}
	r.TogglePlay()
	if msg := r.Speed(false); msg != "speed 1×" {
		t.Errorf("slower while playing says %q", msg)
	}
}
