package tui

import (
	"encoding/binary"
	"encoding/json"
	"math"
	"strings"
	"testing"
	"time"

	tea "github.com/charmbracelet/bubbletea"
	"github.com/charmbracelet/lipgloss"
	"github.com/moetop/moetop/stream"
)

// bytesReader hands out fuzz bytes as the values of a sample; past the end
// it gives zeros, so every input builds a sample.
type bytesReader struct{ b []byte }

func (r *bytesReader) byte() byte {
	if len(r.b) == 0 {
		return 0
	}
	x := r.b[0]
	r.b = r.b[1:]
	return x
}

func (r *bytesReader) u64() uint64 {
	var buf [8]byte
	n := copy(buf[:], r.b)
	r.b = r.b[n:]
	return binary.LittleEndian.Uint64(buf[:])
}

// specials are the values a damaged log or a bug upstream produces.
var specials = []float64{math.NaN(), math.Inf(1), math.Inf(-1), -1, 0, 1e300, -1e300, math.MaxFloat64,
	-math.MaxFloat64, 5e-324, 1e-300, -0.5}

// float is a special value or any float64 at all, NaN payloads included.
func (r *bytesReader) float() float64 {
	if k := r.byte(); k < 128 {
		return specials[int(k)%len(specials)]
	}
	return math.Float64frombits(r.u64())
}

func (r *bytesReader) int() int {
	switch k := r.byte(); {
	case k < 64:
		return int(k) - 8 // small, some negative
	case k < 128:
		return []int{math.MaxInt, math.MinInt, math.MaxInt32, -1 << 40}[k%4]
	}
	return int(r.u64())
}

func (r *bytesReader) str() string {
	n := int(r.byte()) % 24
	n = min(n, len(r.b))
	s := string(r.b[:n])
	r.b = r.b[n:]
	return s
}

func (r *bytesReader) count(limit int) int { return int(r.byte()) % limit }

func (r *bytesReader) u64p() *uint64 {
	if r.byte()%4 == 0 {
		return nil
	}
	v := r.u64()
	return &v
}

func (r *bytesReader) u32p() *uint32 {
	if r.byte()%4 == 0 {
		return nil
	}
	v := uint32(r.u64())
	return &v
}

func (r *bytesReader) f64p() *float64 {
	if r.byte()%4 == 0 {
		return nil
	}
	v := r.float()
	return &v
}

// sample builds a sample from the bytes: any lengths (rows fewer than the
// experts, none at all), any numbers, any strings.
func (r *bytesReader) sample() stream.Sample {
	s := stream.Sample{
		Time: time.Unix(0, int64(r.u64())), Step: r.int(), Backend: r.str(),
		Config: stream.Layer{Tokens: r.int(), Hidden: r.int(), FFN: r.int(), Experts: r.int(), TopK: r.int(),
			DType: r.str(), Act: r.str(), Routing: r.str()},
		StepMS: r.float(), TFLOPS: r.float(), GEMMTFLOPS: r.float(), Imbalance: r.float(), Dropped: r.int(),
		Skipped: r.byte()%8 == 0, Reset: r.byte()%8 == 0,
	}
	if r.byte()%8 != 0 {
		s.Rows = []int{}
		for range r.count(300) {
			s.Rows = append(s.Rows, r.int())
		}
	}
	for range r.count(40) {
		s.Target = append(s.Target, r.float())
	}
	for range r.count(300) {
		s.ExpertMS = append(s.ExpertMS, r.float())
	}
	names := append(append([]string(nil), stream.LayerPhases...), stream.PhaseDispatch, stream.PhaseWait, "")
	for range r.count(20) {
		name := names[r.count(len(names))]
		if name == "" {
			name = r.str()
		}
		ph := stream.PhaseTime{Phase: name, Device: r.count(5) - 1, MS: r.float()}
		if r.byte()%2 == 0 { // counted work, and at times a start of its own (an overlapping phase)
			ph.Bytes, ph.FLOPs = r.float(), r.float()
			if r.byte()%3 == 0 {
				ph.StartMS = r.f64p()
			}
		}
		s.Phases = append(s.Phases, ph)
	}
	if r.byte()%3 == 0 {
		l := r.int()
		s.LayerIndex = &l
	}
	for range r.count(10) {
		s.Ranks = append(s.Ranks, stream.RankStat{Rank: r.count(6) - 1, RecvTokens: r.int(), RecvRows: r.int(),
			SentBytes: int64(r.int()), SavedBytes: int64(r.int())})
	}
	for range r.count(4) {
		m := stream.Memory{Device: r.count(4) - 1, Host: r.byte()%2 == 0, TotalBytes: r.u64(), FreeBytes: r.u64(),
			UsedBytes: r.u64(), OwnBytes: r.u64(), HeadroomBytes: int64(r.u64())}
		for range r.count(8) {
			m.Backends = append(m.Backends, stream.BackendMemory{Backend: r.str(), PeakBytes: r.u64(),
				HeadroomBytes: int64(r.u64()), MaxTokens: r.int(), Fits: r.byte()%2 == 0, Refused: r.str()})
		}
		s.Memory = append(s.Memory, m)
	}
	switch r.byte() % 3 {
	case 1:
		s.GPU = &stream.Snapshot{Source: "host", Reason: r.str(), Host: &stream.Host{MemTotalBytes: r.u64(),
			MemAvailableBytes: r.u64(), CPUUtilPct: r.f64p(), CPUs: r.int()}}
	case 2:
		g := &stream.Snapshot{Source: "nvml", Driver: r.str(), Err: r.str()}
		for range r.count(4) {
			g.Devices = append(g.Devices, stream.Reading{Name: r.str(), MemTotalBytes: r.u64p(), MemUsedBytes: r.u64p(),
				MemFreeBytes: r.u64p(), UtilPct: r.u32p(), MemUtilPct: r.u32p(), PowerW: r.f64p(), PowerLimitW: r.f64p(),
				TempC: r.u32p(), SMClockMHz: r.u32p(), Err: r.str()})
		}
		s.GPU = g
	}
	kinds := []string{stream.EventOOM, stream.EventBackend, stream.EventConfig, stream.EventError, ""}
	for range r.count(4) {
		s.Events = append(s.Events, stream.Event{Time: time.Unix(int64(r.int()), 0), Kind: kinds[r.count(len(kinds))], Msg: r.str()})
	}
	return s
}

// header builds a run's header from the bytes: any ceilings, any number
// of ranks, a placement that may not match the experts or name ranks that
// do not exist, devices in any order.
func (r *bytesReader) header() stream.Header {
	h := newFake(8, 1).header
	h.DenseGEMMTFLOPS, h.ReadGBps, h.Ranks = r.float(), r.float(), r.int()
	// The all-to-all ceiling from the read ceiling's bytes, so that the
	// corpus reads as before: any value, NaN and ±Inf included.
	h.AllToAllGBps, h.AllToAllBytes = h.ReadGBps/8, int64(h.Ranks)<<20
	if r.byte()%2 == 0 {
		h.Placement = [][]int{}
		for range r.count(20) {
			var rs []int
			for range r.count(4) {
				rs = append(rs, r.int())
			}
			h.Placement = append(h.Placement, rs)
		}
	}
	for range r.count(5) {
		h.Devices = append(h.Devices, stream.DeviceID{Rank: r.int(), NVML: r.count(6) - 1})
	}
	return h
}

// fuzzSamples reads data as one JSON sample line when it is one (what a
// log holds; JSON has no NaN, but any other number), and otherwise builds
// a sample from its bytes (NaN and Inf included).
func fuzzSamples(data []byte) []stream.Sample {
	var s stream.Sample
	if err := json.Unmarshal(data, &s); err == nil {
		return []stream.Sample{s}
	}
	r := &bytesReader{b: data}
	out := []stream.Sample{r.sample()}
	for len(r.b) > 0 && len(out) < 4 {
		out = append(out, r.sample())
	}
	return out
}

// FuzzView feeds any sample through the state to every panel's View and
// the whole screen: no value may panic, and every frame keeps its size.
func FuzzView(f *testing.F) {
	good, _ := json.Marshal(fakeSample(newFake(8, 1).header.Config, 3))
	f.Add(good)
	f.Add([]byte(`{"step":1,"rows":[5,-3],"step_ms":-4,"imbalance":1e308,"tflops":-2,"phases":[{"phase":"gemm1","device":0,"ms":-1}]}`))
	f.Add([]byte(`{"rows":[],"config":{"experts":128},"expert_ms":[1e308,-1e308],"memory":[{"total_bytes":1,"used_bytes":18446744073709551615}]}`))
	f.Add([]byte(`{"step":2,"layer":7,"rows":[9,0,3,4],"phases":[{"phase":"gemm1","device":0,"ms":1,"bytes":3e9,"flops":1e12},` +
		`{"phase":"shared","device":0,"ms":2,"start_ms":-5,"flops":1e300},{"phase":"wait","device":1,"ms":1e308}],` +
		`"ranks":[{"rank":1,"recv_rows":-4,"sent_bytes":9e18},{"rank":0,"recv_rows":7}]}`))
	f.Add([]byte{0, 0, 0, 0})
	f.Add([]byte(strings.Repeat("\x00\x01\x7f\xff\x80", 60)))
	f.Fuzz(checkView)
}

// checkView is FuzzView's body: the samples data makes, between ordinary
// ones, through the state to the screen at two sizes and to each panel at
// sizes down to nothing.
func checkView(t *testing.T, data []byte) {
	cfg := newFake(8, 1).header.Config
	hdr := newFake(8, 1).header
	hdr.BackendReason = "no GPU: no CUDA device: libcuda.so.1: library not found"
	samples := fuzzSamples(data)
	src := &source{ch: make(chan stream.Sample), header: hdr}
	close(src.ch)
	m := New(src, nil)
	// Between ordinary steps, so histories mix sane and insane values.
	m.st.add(fakeSample(cfg, 0))
	for _, s := range samples {
		m.st.add(s)
	}
	m.st.add(fakeSample(cfg, 1))
	for _, s := range samples {
		m.st.add(s)
	}
	// Under the run's own header, and under one made of the bytes (any
	// ceilings, ranks and placement) with the help and its legend open on
	// the large screen.
	for i, h := range []stream.Header{hdr, (&bytesReader{b: data}).header()} {
		m.st.header = h
		for _, sz := range [][2]int{{80, 24}, {160, 48}} {
			m.help.ShowAll = i == 1 && sz[0] > MinWidth
			next, _ := m.Update(tea.WindowSizeMsg{Width: sz[0], Height: sz[1]})
			m = next.(Model)
			frameFits(t, m.View(), sz[0], sz[1])
		}
		for _, p := range []component{m.experts, m.kernel, m.gpu, m.memory, m.ranks, m.heat} {
			for _, sz := range [][2]int{{0, 0}, {1, 1}, {2, 3}, {39, 12}, {80, 24}} {
				p.Rows(m.st, sz[0])
				p.SetSize(sz[0], sz[1])
				frameFits(t, p.View(m.st), sz[0], sz[1])
			}
		}
	}
	m.header.SetSize(1, 2)
	m.header.View(m.st)
}

// frameFits checks a drawing keeps within w×h cells.
func frameFits(t *testing.T, v string, w, h int) {
	t.Helper()
	if v == "" {
		return
	}
	lines := strings.Split(v, "\n")
	if len(lines) > max(h, 1) {
		t.Fatalf("%d lines drawn in %d rows:\n%s", len(lines), h, v)
	}
	for _, l := range lines {
		if lw := lipgloss.Width(l); lw > max(w, 1) && h > 0 {
			t.Fatalf("a line %d wide drawn in %d columns: %q", lw, w, l)
		}
	}
}
