package ep

import (
	"bytes"
	"context"
	"errors"
	"math"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
)

// tcpMesh connects n ranks over loopback, without a coordinator, and closes
// them when the test ends.
func tcpMesh(t *testing.T, n int, timeout time.Duration) []*TCP {
	t.Helper()
	lns := make([]net.Listener, n)
	addrs := make([]string, n)
	for r := range n {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		lns[r], addrs[r] = ln, ln.Addr().String()
	}
	nonce := []byte("a test's nonce..")
	conns := make([][]net.Conn, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for r := range n {
		wg.Go(func() {
			conns[r], errs[r] = connectMesh(context.Background(), r, n, nonce, lns[r], addrs, time.Now().Add(10*time.Second))
			lns[r].Close()
		})
	}
	wg.Wait()
	for r, err := range errs {
		if err != nil {
			t.Fatalf("rank %d: %v", r, err)
		}
	}
	m := make([]*TCP, n)
	for r := range n {
		m[r] = newTCP(r, conns[r], timeout)
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, x := range m {
			wg.Go(func() { x.Close() })
		}
		wg.Wait()
	})
	return m
}

// kill closes a rank's connections without a goodbye, as the kernel does
// when its process is killed.
func (t *TCP) kill() {
	for _, c := range t.conns {
		if c != nil {
			c.(*net.TCPConn).SetLinger(0)
			c.Close()
		}
	}
}

func allReduceOn(ranks []*TCP, skip int) []error {
	errs := make([]error, len(ranks))
	var wg sync.WaitGroup
	for r, x := range ranks {
		if r == skip {
			continue
		}
		wg.Go(func() { _, errs[r] = x.AllReduce(context.Background(), 1) })
	}
	wg.Wait()
	return errs
}

// A killed rank ends the others at once, through its closed connections,
// long before their timeout, with an error naming it.
func TestTCPRankThatDiesEndsTheOthersAtOnce(t *testing.T) {
	m := tcpMesh(t, 3, time.Minute)
	if errs := allReduceOn(m, -1); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	m[1].kill()
	start := time.Now()
	done := make(chan []error, 1)
	go func() { done <- allReduceOn(m, 1) }()
	select {
	case errs := <-done:
		for _, r := range []int{0, 2} {
			if err := errs[r]; !errors.Is(err, ErrPeerLost) || !strings.Contains(err.Error(), "rank 1") {
				t.Errorf("rank %d: got %v, want a lost rank 1", r, err)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ranks still waiting 10s after rank 1 died")
	}
	t.Logf("ended after %v", time.Since(start))
}

// A rank that closes cleanly says goodbye: the ranks that still need it end
// with ErrEnded, not as if it had died.
func TestTCPRankThatClosesEndsTheOthersCleanly(t *testing.T) {
	m := tcpMesh(t, 3, time.Minute)
	if errs := allReduceOn(m, -1); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	go m[0].Close() // Close waits for the others to leave
	done := make(chan []error, 1)
	go func() { done <- allReduceOn(m, 0) }()
	select {
	case errs := <-done:
		for _, r := range []int{1, 2} {
			if err := errs[r]; !errors.Is(err, ErrEnded) || !strings.Contains(err.Error(), "rank 0") {
				t.Errorf("rank %d: got %v, want rank 0's end", r, err)
			}
		}
	case <-time.After(10 * time.Second):
		t.Fatal("ranks still waiting 10s after rank 0 left")
	}
}

// The whole layer over processes (here goroutines over TCP) computes what
// the in-process group computes, to the bit: same routing, same rows, same
// output.
func TestRanksOverTCPMatchTheInProcessGroupBitForBit(t *testing.T) {
	cases := []struct {
		name     string
		shape    kernels.Shape
		ranks    int
		replicas [][]int
	}{
		{"two ranks in bf16", kernels.Shape{Tokens: 9, Hidden: 16, FFN: 12, Experts: 4, TopK: 2, DType: kernels.BF16, Seed: 3}, 2, nil},
		{"three ranks with replicas in fp32", kernels.Shape{Tokens: 10, Hidden: 5, FFN: 7, Experts: 4, TopK: 2, DType: kernels.FP32,
			Act: kernels.SiLU, Seed: 4}, 3, [][]int{{0, 1, 2}, {0, 2}, {1}, {2, 1}}},
		{"four ranks, top-3 of 8", kernels.Shape{Tokens: 6, Hidden: 16, FFN: 8, Experts: 8, TopK: 3, DType: kernels.BF16, Seed: 5}, 4, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			p := mustPlacement(t, tc.shape.Experts, tc.ranks, tc.replicas)
			bias := make([]float32, tc.shape.Experts)
			bias[1] = 1.5 // a skew, so that ranks carry different loads
			cfg := Config{Shape: tc.shape, Placement: p, Bias: bias}
			g, err := NewCPUGroup(cfg, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			m := tcpMesh(t, tc.ranks, 10*time.Second)
			ranks := make([]*Rank, tc.ranks)
			for r := range ranks {
				if ranks[r], err = NewRank(cfg, m[r]); err != nil {
					t.Fatal(err)
				}
			}
			for step := range 2 {
				want, err := g.Step(context.Background())
				if err != nil {
					t.Fatal(err)
				}
				got := make([]*RankResult, tc.ranks)
				errs := make([]error, tc.ranks)
				var wg sync.WaitGroup
				for r, rk := range ranks {
					wg.Go(func() { got[r], errs[r] = rk.Step(context.Background()) })
				}
				wg.Wait()
				if err := errors.Join(errs...); err != nil {
					t.Fatalf("step %d: %v", step, err)
				}
				for r := range got {
					if !sameBits(got[r].Output, want[r].Output) {
						t.Errorf("step %d rank %d: output differs from the in-process group's", step, r)
					}
					if !equalInts(got[r].ExpertRows, want[r].ExpertRows) || got[r].RecvTokens != want[r].RecvTokens ||
						got[r].RecvRows != want[r].RecvRows || got[r].SentTokens != want[r].SentTokens {
						t.Errorf("step %d rank %d: rows %v (%d tokens, %d rows), in process %v (%d, %d)", step, r,
							got[r].ExpertRows, got[r].RecvTokens, got[r].RecvRows, want[r].ExpertRows, want[r].RecvTokens, want[r].RecvRows)
					}
				}
			}
		})
	}
}

func sameBits(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
			return false
		}
	}
	return true
}

func equalInts(a, b []int) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestMessagesSurviveTheWireExactly(t *testing.T) {
	nan := math.Float32frombits(0x7fc00123) // a NaN with a payload
	m := msg{op: "dispatch", seq: 1<<40 + 7, counts: []int32{-1, 0, math.MaxInt32},
		rows: Rows{X: []float32{nan, float32(math.Copysign(0, -1)), float32(math.Inf(1)), 1e-45},
			IDs: []int32{3, -1}, Weights: []float32{0.25, 0}}, vec: []float32{}, val: -2.5}
	b, err := appendMsg(nil, m)
	if err != nil {
		t.Fatal(err)
	}
	got, err := decodeMsg(b)
	if err != nil {
		t.Fatal(err)
	}
	if got.op != m.op || got.seq != m.seq || got.val != m.val || !sameBits(got.rows.X, m.rows.X) ||
		!sameBits(got.rows.Weights, m.rows.Weights) || len(got.counts) != 3 || got.counts[2] != math.MaxInt32 ||
		got.rows.IDs[1] != -1 || len(got.vec) != 0 {
		t.Fatalf("decoded %+v, sent %+v", got, m)
	}
	for cut := range len(b) {
		if _, err := decodeMsg(b[:cut]); err == nil {
			t.Fatalf("a message cut to %d of %d bytes decoded", cut, len(b))
		}
	}
}

// Whatever arrives on a mesh connection, decoding returns an error or a
// message that encodes back to the same bytes; it never panics.
func FuzzDecodeMsg(f *testing.F) {
	seed, _ := appendMsg(nil, msg{op: "combine", seq: 2, vec: []float32{1, 2}})
	f.Add(seed)
	f.Add([]byte{0, 0, 0, 0, 0, 0, 0, 0, 0, 255, 255, 255, 255})
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := decodeMsg(b)
		if err != nil {
			return
		}
		again, err := appendMsg(nil, m)
		if err != nil || !bytes.Equal(again, b) {
			t.Fatalf("decoded %+v does not encode back to its bytes", m)
		}
	})
}

func TestFramesRefuseWhatIsNotMoetop(t *testing.T) {
	// An HTTP request read as a frame announces a length of 1.2 GB.
	_, _, err := readFrame(strings.NewReader("GET / HTTP/1.1\r\n\r\n"), maxControlFrame)
	if !errors.Is(err, errFrameTooLarge) {
		t.Fatalf("got %v, want a frame too large", err)
	}
}
