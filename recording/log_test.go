package recording

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/stream"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

// richSample fills every field, so a round trip that drops one fails.
func richSample(i int) stream.Sample {
	u := func(v uint32) *uint32 { return &v }
	b := func(v uint64) *uint64 { return &v }
	f := func(v float64) *float64 { return &v }
	c := stream.Layer{Tokens: 64, Hidden: 32, FFN: 128, Experts: 4, TopK: 2, DType: "fp16", Act: "silu",
		Routing: "hot:1:0.4", Seed: 9, CapacityFactor: 1.25, SharedExperts: 1, SharedFFN: 96, Router: "sigmoid", Model: "m"}
	layer := i % 5
	start := 0.25
	s := stream.Sample{Time: t0.Add(time.Duration(i) * time.Millisecond), Step: i, Backend: "padded", Config: c,
		Rows: []int{10, 50 + i%39, 30, 38 - i%39}, Target: []float64{0.2, 0.4, 0.2, 0.2},
		LayerIndex: &layer,
		Phases: stream.Phases{{Phase: "router", MS: 0.1, FLOPs: 1e6}, {Phase: "permute", MS: 0.2}, {Phase: "gemm1", MS: 1.5 + float64(i), Bytes: 3e6},
			{Phase: "act", MS: 0.3}, {Phase: "gemm2", MS: 1.25}, {Phase: "combine", MS: 0.125},
			{Phase: "shared", MS: 0.5, StartMS: &start}, {Phase: "dispatch", Device: 1, MS: 0.75}},
		Steps: 3, StepMinMS: 3, StepMaxMS: 4, StepMS: 3.475, ExpertMS: []float64{0.5, 1, 0.75, 0.5},
		TFLOPS: 12.5, GEMMTFLOPS: 20.25, Imbalance: 1.75, Dropped: i % 3, Skipped: i%7 == 6,
		Memory: []stream.Memory{{TotalBytes: 80 << 30, FreeBytes: 10 << 30, UsedBytes: 70 << 30, OwnBytes: 1 << 30, HeadroomBytes: 10 << 30,
			Backends: []stream.BackendMemory{{Backend: "padded", PeakBytes: 1 << 30, HeadroomBytes: 10 << 30, MaxTokens: 1234, Fits: true}, {Backend: "x", Refused: "needs sm_90"}}},
			{Device: 1, FreeBytes: 5, HeadroomBytes: 20 << 30}},
	}
	if i%2 == 0 {
		s.GPU = &stream.Snapshot{Time: s.Time, Source: "nvml", Driver: "580.1", CUDA: "13.0", Devices: []stream.Reading{{
			Index: 0, Name: "H100", UUID: "GPU-1", PCIBusID: "00000000:1B:00.0", MemTotalBytes: b(80 << 30), MemUsedBytes: b(1), MemFreeBytes: b(2),
			MemReservedB: b(3), UtilPct: u(99), MemUtilPct: u(40), PowerW: f(512.5), PowerLimitW: f(700), TempC: u(61),
			SMClockMHz: u(1980), MemClockMHz: u(2619), PCIeRxKBps: u(5), PCIeTxKBps: u(6),
			Processes: []stream.Process{{PID: 42, UsedBytes: b(7)}, {PID: 43}}, Err: "x"}}}
	}
	if i%3 == 0 {
		s.Events = []stream.Event{{Time: s.Time, Kind: stream.EventOOM, Msg: "step: out of memory"}, {Time: s.Time, Kind: stream.EventConfig, Msg: "c", Device: 1}}
	}
	return s
}

func writeLog(t testing.TB, path string, n int, maxBytes int64) stream.Header {
	t.Helper()
	h := stream.Header{Version: "test", Host: "h", Device: "H100", Driver: "580", CUDA: "13.0", CUBLAS: "13.1.0",
		Backend: "padded", BackendReason: "asked", Config: richSample(0).Config, Start: t0,
		Devices:         []stream.DeviceID{{Rank: 0, CUDA: 1, NVML: 0, UUID: "GPU-1", PCIBusID: "00000000:1B:00.0", Name: "H100"}},
		DenseGEMMTFLOPS: 700, ReadGBps: 3000, AllToAllGBps: 370.5, AllToAllBytes: 256 << 20}
	r, err := CreateRecorder(path, maxBytes, false, h)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < n; i++ {
		s := richSample(i)
		if err := r.Write(&s); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	h.Schema = Schema
	return h
}

func TestRoundTripEveryField(t *testing.T) {
	for _, name := range []string{"run.jsonl", "run.jsonl.zst"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), name)
			h := writeLog(t, path, 25, 0)
			if name == "run.jsonl.zst" {
				b, _ := os.ReadFile(path)
				if string(b[:4]) != string(zstdMagic) {
					t.Fatal("a .zst log is not zstd")
				}
			}
			l, err := OpenLog(path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if !reflect.DeepEqual(l.Header, h) {
				t.Errorf("header\n got %+v\nwant %+v", l.Header, h)
			}
			if l.Len() != 25 || l.Skipped != 0 || len(l.Warnings) != 0 {
				t.Fatalf("len %d skipped %d warnings %v", l.Len(), l.Skipped, l.Warnings)
			}
			for i := 0; i < 25; i++ {
				got, err := l.Sample(i)
				if err != nil {
					t.Fatal(err)
				}
				if want := richSample(i); !reflect.DeepEqual(got, want) {
					t.Fatalf("sample %d\n got %+v\nwant %+v", i, got, want)
				}
			}
			n := 0
			corrupt, err := l.Each(func(i int, s stream.Sample) error {
				if !reflect.DeepEqual(s, richSample(i)) {
					return fmt.Errorf("Each: sample %d differs", i)
				}
				n++
				return nil
			})
			if err != nil || corrupt != 0 || n != 25 {
				t.Fatalf("Each: %d samples, %d corrupt, %v", n, corrupt, err)
			}
		})
	}
}

func TestRotationStartsEachPartWithTheHeader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.jsonl")
	writeLog(t, path, 40, 8<<10)
	total := 0
	for part := 0; ; part++ {
		l, err := OpenLog(PartPath(path, part))
		if errors.Is(err, os.ErrNotExist) {
			if part < 2 {
				t.Fatalf("only %d parts", part)
			}
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if l.Header.Part != part {
			t.Errorf("part %d says it is part %d", part, l.Header.Part)
		}
		total += l.Len()
		l.Close()
	}
	if total != 40 {
		t.Errorf("%d samples over all parts, want 40", total)
	}
}

func TestRecorderRefusesToOverwrite(t *testing.T) {
	path := filepath.Join(t.TempDir(), "run.jsonl")
	writeLog(t, path, 1, 0)
	if _, err := CreateRecorder(path, 0, false, stream.Header{}); !errors.Is(err, ErrExists) {
		t.Fatalf("got %v, want ErrExists", err)
	}
	r, err := CreateRecorder(path, 0, true, stream.Header{})
	if err != nil {
		t.Fatalf("with force: %v", err)
	}
	r.Close()
}

func TestBadLogs(t *testing.T) {
	dir := t.TempDir()
	good := filepath.Join(dir, "good.jsonl")
	writeLog(t, good, 5, 0)
	body, _ := os.ReadFile(good)
	lines := strings.SplitAfter(string(body), "\n")
	cases := []struct {
		name, content string
		fatal         string // a LogError containing this; "" means it opens
		samples       int
		corrupt       int
	}{
		{"empty", "", "empty", 0, 0},
		{"not a log", "hello world\n", "not a moetop log", 0, 0},
		{"binary", "\x00\x01\x02\xff\xfe", "not a moetop log", 0, 0},
		{"newer schema", strings.Replace(lines[0], "moetop/2", "moetop/3", 1), "newer moetop", 0, 0},
		{"line over 16 MiB", lines[0] + strings.Repeat("x", MaxLineBytes+10) + "\n", "longer than 16 MiB", 0, 0},
		{"truncated last line", strings.Join(lines[:len(lines)-2], "") + lines[len(lines)-2][:40], "", 4, 1},
		{"corrupt line in the middle", lines[0] + lines[1] + `{"type":"sample","step":` + "\n" + strings.Join(lines[2:], ""), "", 5, 1},
		{"junk line in the middle", lines[0] + "garbage\n" + strings.Join(lines[1:], ""), "", 5, 1},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_"))
			os.WriteFile(path, []byte(c.content), 0o644)
			l, err := OpenLog(path)
			if c.fatal != "" {
				var le *LogError
				if !errors.As(err, &le) || !strings.Contains(err.Error(), c.fatal) {
					t.Fatalf("got %v, want a LogError with %q", err, c.fatal)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			n := 0
			corrupt, err := l.Each(func(int, stream.Sample) error { n++; return nil })
			if err != nil || n != c.samples || corrupt != c.corrupt {
				t.Errorf("%d samples, %d corrupt, err %v; want %d and %d", n, corrupt, err, c.samples, c.corrupt)
			}
		})
	}
}

func BenchmarkWriteSamples(b *testing.B) {
	r, err := CreateRecorder(filepath.Join(b.TempDir(), "run.jsonl"), 0, false, stream.Header{})
	if err != nil {
		b.Fatal(err)
	}
	s := richSample(1)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if err := r.Write(&s); err != nil {
			b.Fatal(err)
		}
	}
	r.Close()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "samples/s")
}
