package recording

import (
	"encoding/json"
	"errors"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/stream"
)

// plainSample is one step of a layer on one device, as the profiler writes
// it: the rules that hold only there (rows add up to tokens × top-k) apply.
func plainSample(i int) stream.Sample {
	return stream.Sample{Time: t0.Add(time.Duration(i) * time.Millisecond), Step: i, Backend: "loop",
		Config: stream.Layer{Tokens: 16, Hidden: 8, FFN: 32, Experts: 4, TopK: 2, DType: "bf16", Act: "gelu", Routing: "uniform"},
		Rows:   []int{8, 8, 10, 6}, Target: []float64{.25, .25, .25, .25},
		Phases: stream.Phases{{Phase: "router", MS: 0.1}, {Phase: "gemm1", MS: 1}, {Phase: "gemm2", MS: 1}},
		StepMS: 2.1, TFLOPS: 3, GEMMTFLOPS: 4, Imbalance: 1.25,
		Memory: []stream.Memory{{TotalBytes: 100, FreeBytes: 60, UsedBytes: 40, HeadroomBytes: -5}}}
}

func TestValidate(t *testing.T) {
	nan, inf := math.NaN(), math.Inf(1)
	neg := -1.0
	cases := []struct {
		name   string
		change func(*stream.Sample)
		reason string // "" means valid
	}{
		{"a plain step is valid", func(*stream.Sample) {}, ""},
		{"a step that did not run is valid", func(s *stream.Sample) { *s = stream.Sample{Step: 3, Config: s.Config, Skipped: true} }, ""},
		{"a negative headroom is real", func(s *stream.Sample) { s.Memory[0].HeadroomBytes = -1 << 40 }, ""},
		{"more rows than experts are allowed (replicas)", func(s *stream.Sample) { s.Rows = append(s.Rows, 0) }, ""},
		{"an imbalance of exactly the experts is real", func(s *stream.Sample) { s.Rows, s.Imbalance = []int{32, 0, 0, 0}, 4 }, ""},
		{"a window of steps need not add up", func(s *stream.Sample) { s.Steps, s.Rows = 4, []int{32, 32, 40, 24} }, ""},
		{"ranks' rows need not add up to one rank's tokens", func(s *stream.Sample) {
			s.Phases = append(s.Phases, stream.PhaseTime{Phase: "dispatch", Device: 1, MS: 0.5})
			s.Rows = []int{16, 16, 20, 12}
		}, ""},
		{"expert-parallel rows add up over every rank", func(s *stream.Sample) {
			s.Ranks = []stream.RankStat{{Rank: 0, RecvRows: 40}, {Rank: 1, RecvRows: 24}}
			s.Rows = []int{16, 16, 20, 12}
		}, ""},
		{"a rank of -1", func(s *stream.Sample) { s.Ranks = []stream.RankStat{{Rank: -1}} }, reasonDevice},
		{"a rank that sent negative bytes", func(s *stream.Sample) { s.Ranks = []stream.RankStat{{SentBytes: -8}} }, reasonRowValue},
		{"a negative step time", func(s *stream.Sample) { s.StepMS = -3 }, reasonTime},
		{"a NaN step time", func(s *stream.Sample) { s.StepMS = nan }, reasonTime},
		{"an infinite step time", func(s *stream.Sample) { s.StepMS = inf }, reasonTime},
		{"a step time over a week", func(s *stream.Sample) { s.StepMS = 1e12 }, reasonTime},
		{"a negative slowest step of a window", func(s *stream.Sample) { s.StepMaxMS = -1 }, reasonTime},
		{"a negative phase", func(s *stream.Sample) { s.Phases[1].MS = -0.5 }, reasonTime},
		{"a phase starting before the step", func(s *stream.Sample) { s.Phases[1].StartMS = &neg }, reasonTime},
		{"a negative expert time", func(s *stream.Sample) { s.ExpertMS = []float64{1, -1, 1, 1} }, reasonTime},
		{"negative TFLOP/s", func(s *stream.Sample) { s.TFLOPS = -700 }, reasonRate},
		{"NaN GEMM TFLOP/s", func(s *stream.Sample) { s.GEMMTFLOPS = nan }, reasonRate},
		{"negative phase FLOPs", func(s *stream.Sample) { s.Phases[0].FLOPs = -1 }, reasonRate},
		{"an imbalance above the experts", func(s *stream.Sample) { s.Imbalance = 1e9 }, reasonImbalance},
		{"a negative imbalance", func(s *stream.Sample) { s.Imbalance = -2 }, reasonImbalance},
		{"fewer rows than experts", func(s *stream.Sample) { s.Rows = []int{16, 16} }, reasonFewRows},
		{"a negative row count", func(s *stream.Sample) { s.Rows = []int{-8, 24, 10, 6} }, reasonRowValue},
		{"more rows than an int32 index", func(s *stream.Sample) { s.Rows[0] = math.MaxInt32 + 1 }, reasonRowValue},
		{"negative dropped rows", func(s *stream.Sample) { s.Dropped = -1 }, reasonRowValue},
		{"rows that do not add up", func(s *stream.Sample) { s.Rows = []int{8, 8, 10, 7} }, reasonRowSum},
		{"a negative step", func(s *stream.Sample) { s.Step = -1 }, reasonStep},
		{"a negative step count", func(s *stream.Sample) { s.Steps = -2 }, reasonStep},
		{"a phase on device -1", func(s *stream.Sample) { s.Phases[0].Device = -1 }, reasonDevice},
		{"a phase on device 1e9", func(s *stream.Sample) { s.Phases[0].Device = 1e9 }, reasonDevice},
		{"memory of device -3", func(s *stream.Sample) { s.Memory[0].Device = -3 }, reasonDevice},
		{"an event on device -1", func(s *stream.Sample) { s.Events = []stream.Event{{Kind: "oom", Device: -1}} }, reasonDevice},
		{"a million rows", func(s *stream.Sample) { s.Rows = make([]int, 1<<20) }, reasonList},
		{"a million phases", func(s *stream.Sample) { s.Phases = make(stream.Phases, maxList+1) }, reasonList},
		{"a negative share", func(s *stream.Sample) { s.Target[2] = -0.25 }, reasonShare},
		{"negative tokens", func(s *stream.Sample) { s.Config.Tokens = -16 }, reasonLayer},
		{"top-k above the experts", func(s *stream.Sample) { s.Config.TopK = 5 }, reasonLayer},
		{"more used than total memory", func(s *stream.Sample) { s.Memory[0].UsedBytes = 101 }, reasonReading},
		{"a GPU at 400% utilisation", func(s *stream.Sample) {
			u := uint32(400)
			s.GPU = &stream.Snapshot{Devices: []stream.Reading{{UtilPct: &u}}}
		}, reasonReading},
		{"a GPU drawing negative watts", func(s *stream.Sample) {
			s.GPU = &stream.Snapshot{Devices: []stream.Reading{{PowerW: &neg}}}
		}, reasonReading},
		{"a host with NaN CPU", func(s *stream.Sample) { s.GPU = &stream.Snapshot{Host: &stream.Host{CPUUtilPct: &nan}} }, reasonReading},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			s := plainSample(1)
			c.change(&s)
			err := validate(s)
			var ie *invalidError
			switch {
			case c.reason == "" && err != nil:
				t.Fatalf("rejected: %v", err)
			case c.reason != "" && (!errors.As(err, &ie) || ie.reason != c.reason):
				t.Fatalf("got %v, want %q", err, c.reason)
			}
		})
	}
}

// mixedLog is a moetop/2 log of good samples with bad lines among them,
// and what a reader must make of it.
func mixedLog(t *testing.T) (body string, good []int, skips []SkipReason) {
	t.Helper()
	enc := func(v any) string {
		b, err := json.Marshal(v)
		if err != nil {
			t.Fatal(err)
		}
		return string(b) + "\n"
	}
	var b strings.Builder
	b.WriteString(enc(headerLine{LineHeader, &stream.Header{Schema: Schema, Config: plainSample(0).Config}}))
	for i := 0; i < 40; i++ {
		s := plainSample(i)
		if i%10 == 3 {
			b.WriteString(enc(eventLine{LineEvent, i, stream.Event{Kind: stream.EventOOM, Msg: "oom"}}))
		}
		switch i {
		case 5:
			s.StepMS = -1
		case 6, 16:
			s.Rows = []int{1, 2}
		case 13: // its event goes with it
			s.Imbalance = 99
		case 20:
			b.WriteString("garbage\n")
		case 21:
			b.WriteString(`{"type":"event","step":` + "\n")
		case 25: // skipped alone: step 25 stays
			b.WriteString(`{"type":"event","step":25,"kind":"oom","device":-1}` + "\n")
		}
		if i == 30 {
			b.WriteString(`{"type":"sample","step":30,"step_ms":1e400}` + "\n")
			continue
		}
		b.WriteString(enc(sampleLine{LineSample, &s}))
		if i != 5 && i != 6 && i != 13 && i != 16 {
			good = append(good, i)
		}
	}
	// Line numbers: the header is 1; events precede steps 3, 13, 23, 33.
	skips = []SkipReason{{reasonTime, 1, 8}, {reasonFewRows, 2, 9}, {reasonImbalance, 1, 17},
		{reasonOther, 1, 24}, {reasonEventJSON, 1, 26}, {reasonDevice, 1, 32}, {reasonSampleJSON, 1, 38}}
	body = b.String()
	return body + `{"type":"sample","step":40,"ste`, good, append(skips, SkipReason{reasonCut, 1, 49})
}

func TestReadersSkipTheSameLinesForTheSameReasons(t *testing.T) {
	body, good, skips := mixedLog(t)
	for _, parallel := range []bool{false, true} {
		name := map[bool]string{false: "in order", true: "in parallel"}[parallel]
		t.Run(name, func(t *testing.T) {
			if parallel {
				old := parallelBytes
				parallelBytes = 0
				t.Cleanup(func() { parallelBytes = old })
			}
			path := filepath.Join(t.TempDir(), "run.jsonl")
			if err := os.WriteFile(path, []byte(body), 0o644); err != nil {
				t.Fatal(err)
			}
			l, err := OpenLog(path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if !reflect.DeepEqual(l.Skips, skips) {
				t.Errorf("index skipped\n %+v\nwant\n %+v", l.Skips, skips)
			}
			var indexed []int
			for i := 0; i < l.Len(); i++ {
				s, err := l.Sample(i)
				if err != nil {
					t.Fatalf("sample %d: %v", i, err)
				}
				indexed = append(indexed, s.Step)
				if (s.Step%10 == 3) != (len(s.Events) == 1) {
					t.Errorf("step %d has events %v", s.Step, s.Events)
				}
			}
			var each []int
			corrupt, err := l.Each(func(_ int, s stream.Sample) error { each = append(each, s.Step); return nil })
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(indexed, good) || !reflect.DeepEqual(each, good) {
				t.Errorf("index read steps %v\nEach read %v\nwant %v", indexed, each, good)
			}
			if corrupt != l.Skipped || corrupt != 9 {
				t.Errorf("Each skipped %d, the index %d; want 9", corrupt, l.Skipped)
			}
			sum, err := Summarize(l)
			if err != nil {
				t.Fatal(err)
			}
			if sum.Steps != len(good) || sum.LinesSkipped != 9 || len(sum.OOMEvents) != 3 {
				t.Errorf("summary: %d steps, %d lines skipped, %d OOMs", sum.Steps, sum.LinesSkipped, len(sum.OOMEvents))
			}
			var text strings.Builder
			sum.WriteText(&text)
			for _, want := range []string{"lines skipped 9\n", "2: " + reasonFewRows + " (first at line 9)", "1: " + reasonCut + " (line 49)"} {
				if !strings.Contains(text.String(), want) {
					t.Errorf("summary text lacks %q:\n%s", want, text.String())
				}
			}
			js, _ := json.Marshal(sum)
			if !strings.Contains(string(js), `"skip_reasons":[{"reason":"`+reasonTime+`","lines":1,"first_line":8}`) {
				t.Errorf("summary JSON lacks the reasons: %s", js)
			}
		})
	}
}

// An Each that stops early, in the middle of a parallel read, returns its
// error and leaves nothing running.
func TestEachStopsWhenAsked(t *testing.T) {
	old := parallelBytes
	parallelBytes = 0
	t.Cleanup(func() { parallelBytes = old })
	l := openTestLog(t, 2000)
	stop := errors.New("enough")
	n := 0
	_, err := l.Each(func(i int, _ stream.Sample) error {
		if n++; i == 700 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 701 {
		t.Fatalf("got %v after %d samples, want the callback's error after 701", err, n)
	}
}
