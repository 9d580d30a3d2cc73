package ep

import (
	"compress/gzip"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
)

// peerPlan is one case of testdata/exchange.json.gz: the plan the EP peer's
// own run_shape makes (testdata/exchange.py runs its statements).
type peerPlan struct {
	Shape                     string
	Tokens, Hidden, FFN, TopK int
	Experts                   int
	Dist                      string
	World                     int
	Counts                    []int
	Ranks                     []struct {
		Send, Recv, Local []int
		RemoteBytes       int64 `json:"remote_bytes"`
		Order             []int
	}
}

func peerPlans(t *testing.T) []peerPlan {
	t.Helper()
	// Gzipped: 100 kB of JSON, 80 cases of integers, in about a tenth.
	f, err := os.Open("testdata/exchange.json.gz")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	z, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	var ps []peerPlan
	if err := json.NewDecoder(z).Decode(&ps); err != nil {
		t.Fatal(err)
	}
	if len(ps) < 50 {
		t.Fatalf("only %d cases in testdata/exchange.json.gz", len(ps))
	}
	return ps
}

// Every rank's plan is the peer's: rows to each rank, from each rank, per
// local expert, the bytes to other ranks (bf16), and where each local
// expert's rows sit in the receive buffer.
func TestTheExchangeIsThePeersPlan(t *testing.T) {
	orders := 0
	for _, p := range peerPlans(t) {
		name := fmt.Sprintf("%s %s N=%d", p.Shape, p.Dist, p.World)
		x, err := NewExchange(p.Counts, p.Tokens, p.Hidden, p.FFN, p.TopK, p.World, kernels.BF16)
		if err != nil {
			t.Errorf("%s: %v", name, err)
			continue
		}
		if len(p.Ranks) != p.World {
			t.Fatalf("%s: %d ranks in the fixture", name, len(p.Ranks))
		}
		for r, want := range p.Ranks {
			var send, recv []int
			for d := range p.World {
				send = append(send, x.Send(d))
				recv = append(recv, x.RecvRows(r)/p.World)
			}
			if !slices.Equal(send, want.Send) || !slices.Equal(recv, want.Recv) {
				t.Errorf("%s rank %d: send %v recv %v, the peer's %v and %v", name, r, send, recv, want.Send, want.Recv)
			}
			if got := x.RecvRows(r); got != sum(want.Recv) {
				t.Errorf("%s rank %d: receives %d rows, the peer %d", name, r, got, sum(want.Recv))
			}
			if got := expertRows(x, r); !slices.Equal(got, want.Local) {
				t.Errorf("%s rank %d: rows per local expert %v, the peer's %v", name, r, got, want.Local)
			}
			if got := x.RemoteBytes(r); got != want.RemoteBytes {
				t.Errorf("%s rank %d: %d bytes to other ranks, the peer's %d", name, r, got, want.RemoteBytes)
			}
			if want.Order != nil {
				orders++
				if got := recvOrder(x, r); !slices.Equal(got, want.Order) {
					t.Errorf("%s rank %d: received rows in expert order %v, the peer's %v", name, r, got, want.Order)
				}
			}
		}
	}
	if orders == 0 {
		t.Error("no case checks the receive layout")
	}
}

// expertRows are the rows each of rank r's local experts runs, over all
// sources: every source sends each of them its count.
func expertRows(x *Exchange, r int) []int {
	L := x.Local()
	out := make([]int, L)
	for j := range out {
		out[j] = x.Counts[r*L+j] * x.Ranks
	}
	return out
}

// recvOrder lists rank r's received rows expert after expert, each expert's
// rows source after source, from ChunkOffset: the peer's order.
func recvOrder(x *Exchange, r int) []int {
	var out []int
	per := x.Send(r)
	for j := range x.Local() {
		for s := range x.Ranks {
			at := s*per + x.ChunkOffset(r, j)
			for i := range x.Counts[r*x.Local()+j] {
				out = append(out, at+i)
			}
		}
	}
	return out
}

func sum(v []int) int {
	n := 0
	for _, x := range v {
		n += x
	}
	return n
}

// The bytes to other ranks, by the formula the issue states, apart from
// the peer: (Σ send − send[rank]) · hidden · 2 for bf16, and recv rows =
// Σ over sources of the counts in the rank's block.
func TestTheExchangeBytesAndRows(t *testing.T) {
	counts := []int{50, 10, 0, 20, 5, 5, 7, 3} // 100 rows: 50 tokens, top-2
	x, err := NewExchange(counts, 50, 6, 4, 2, 4, kernels.BF16)
	if err != nil {
		t.Fatal(err)
	}
	wantSend := []int{60, 20, 10, 10}
	for r := range 4 {
		if x.Send(r) != wantSend[r] {
			t.Errorf("send to %d = %d, want %d", r, x.Send(r), wantSend[r])
		}
		if got, want := x.RemoteBytes(r), int64(100-wantSend[r])*6*2; got != want {
			t.Errorf("rank %d sends %d bytes to others, want %d", r, got, want)
		}
		if got := x.RecvRows(r); got != 4*wantSend[r] {
			t.Errorf("rank %d receives %d rows, want %d", r, got, 4*wantSend[r])
		}
	}
	if x.SendAt(2) != 80 || x.MaxRecvRows() != 240 || x.MaxRemoteBytes() != 90*6*2 {
		t.Errorf("SendAt(2) %d, MaxRecvRows %d, MaxRemoteBytes %d", x.SendAt(2), x.MaxRecvRows(), x.MaxRemoteBytes())
	}
	if x.ChunkOffset(0, 1) != 50 || x.ChunkOffset(1, 1) != 0 || x.ChunkOffset(3, 1) != 7 {
		t.Errorf("chunk offsets %d %d %d", x.ChunkOffset(0, 1), x.ChunkOffset(1, 1), x.ChunkOffset(3, 1))
	}
}

func TestNewExchangeRefusesWhatThePeerCannotRun(t *testing.T) {
	for _, c := range []struct {
		name   string
		counts []int
		tokens int
		topK   int
		ranks  int
		want   string
	}{
		{"experts that do not split over the ranks", []int{2, 2, 2}, 3, 2, 2, "do not split"},
		{"more ranks than experts", []int{4, 4}, 4, 2, 4, "do not split"},
		{"counts that are not tokens × top-k", []int{3, 2}, 3, 2, 2, "add up to 5"},
		{"an expert above the tokens", []int{5, 1}, 3, 2, 2, "expert 0 gets 5"},
		{"a negative count", []int{3, -1}, 3, 2, 2, "expert 1 gets -1"},
		{"no ranks", []int{3, 3}, 3, 2, 0, "0 ranks"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, err := NewExchange(c.counts, c.tokens, 4, 4, c.topK, c.ranks, kernels.BF16)
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Errorf("NewExchange = %v, want an error saying %q", err, c.want)
			}
		})
	}
}

// The CPU ranks carry every row to its expert's rank and back: each rank
// ends with each of its rows through its own expert, as the host computes
// it without any transport.
func TestCPURanksRunEveryRowThroughItsExpert(t *testing.T) {
	for _, c := range []struct {
		name   string
		counts []int
		ranks  int
	}{
		{"one rank keeps everything", []int{10, 6, 4, 4}, 1},
		{"two ranks, uneven", []int{12, 2, 0, 10}, 2},
		{"four ranks, one starved", []int{8, 8, 0, 0, 3, 2, 1, 2}, 4},
		{"four ranks, one expert each", []int{9, 7, 5, 3}, 4},
	} {
		t.Run(c.name, func(t *testing.T) {
			x, err := NewExchange(c.counts, 12, 16, 24, 2, c.ranks, kernels.FP32)
			if err != nil {
				t.Fatal(err)
			}
			times, back, err := runExchangeCPU(context.Background(), x, 1, 3, 10*time.Second)
			if err != nil {
				t.Fatal(err)
			}
			for r := range c.ranks {
				if len(times[r]) != 3 {
					t.Errorf("rank %d: %d timed steps, want 3", r, len(times[r]))
				}
				want := x.Expected(r)
				if e := kernels.RelErr(back[r], want); !(e < 1e-5) {
					t.Errorf("rank %d: what came back is %.3g off its rows through their experts", r, e)
				}
				for i := 0; i < x.Rows(); i++ {
					row := back[r][i*x.Hidden : (i+1)*x.Hidden]
					if slices.Equal(row, make([]float32, x.Hidden)) {
						t.Errorf("rank %d: row %d came back zero", r, i)
						break
					}
				}
			}
			s, err := x.Summarize(times)
			if err != nil {
				t.Fatal(err)
			}
			if !(s.StepMS > 0) || s.StepMS+1e-9 < s.GEMMMS || !slices.Equal(s.RecvRows, recvRowsOf(x)) {
				t.Errorf("summary %+v", s)
			}
		})
	}
}

func recvRowsOf(x *Exchange) []int {
	var out []int
	for r := range x.Ranks {
		out = append(out, x.RecvRows(r))
	}
	return out
}

// A wrong layout would show: the oracle differs from rows sent to the
// wrong expert.
func TestExpectedTellsExpertsApart(t *testing.T) {
	x, err := NewExchange([]int{4, 4}, 4, 8, 8, 2, 2, kernels.FP32)
	if err != nil {
		t.Fatal(err)
	}
	want := x.Expected(0)
	rows, _, _ := x.Inputs(0)
	_, w1, w2 := x.Inputs(1) // expert 1's weights for expert 0's rows
	h := make([]float32, 4*x.FFN)
	out := make([]float32, 4*x.Hidden)
	x.ffn(out, rows, h, w1, w2, 4)
	if e := kernels.RelErr(out, want[:4*x.Hidden]); !(e > 1e-2) {
		t.Errorf("expert 0's rows through expert 1 are only %.3g off", e)
	}
}

func TestRunExchangeCPURefusesWhatItCannotRun(t *testing.T) {
	x, _ := NewExchange([]int{2, 2}, 2, 4, 4, 2, 2, kernels.BF16)
	if _, err := RunExchangeCPU(context.Background(), x, 0, 1, time.Second); err == nil || !strings.Contains(err.Error(), "float32") {
		t.Errorf("bf16 on the CPU ranks: %v", err)
	}
	x.DType = kernels.FP32
	if _, err := RunExchangeCPU(context.Background(), x, 0, 0, time.Second); err == nil {
		t.Error("no reps ran")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := RunExchangeCPU(ctx, x, 0, 2, time.Second); !errors.Is(err, context.Canceled) {
		t.Errorf("a cancelled run: %v", err)
	}
}

// The peer's reduction: each rank's median step by its sum (not each
// phase's own median), then the slowest rank per phase; the step is the
// slowest rank's sum.
func TestSummarizeReducesAsThePeer(t *testing.T) {
	ms := func(v ...float64) XTimes {
		var t XTimes
		for i, x := range v {
			t[i] = time.Duration(x * 1e6)
		}
		return t
	}
	x, err := NewExchange([]int{30, 10, 15, 5}, 30, 100, 50, 2, 2, kernels.BF16)
	if err != nil {
		t.Fatal(err)
	}
	times := [][]XTimes{
		// Sums 10, 4, 7: the median step is the third, whose dispatch (5)
		// is no phase median (dispatch's own median is 1).
		{ms(1, 1, 1, 7), ms(1, 1, 1, 1), ms(5, 1, 0.5, 0.5)},
		// Sums 3, 9, 6, 12: the upper median of four, 9.
		{ms(1, 1, 0, 1), ms(2, 4, 2, 1), ms(2, 2, 1, 1), ms(3, 3, 3, 3)},
	}
	s, err := x.Summarize(times)
	if err != nil {
		t.Fatal(err)
	}
	near := func(a, b float64) bool { return math.Abs(a-b) < 1e-9*max(1, math.Abs(b)) }
	if !near(s.DispatchMS, 5) || !near(s.GEMMMS, 4) || !near(s.WaitMS, 2) || !near(s.CombineMS, 1) || !near(s.StepMS, 9) {
		t.Errorf("phases %+v; want dispatch 5, gemm 4, wait 2, combine 1, step 9", s)
	}
	// Rank 0 sends 40 rows to itself, 20 to rank 1: rank 1 sends 40 away.
	bytes := float64(40 * 100 * 2)
	if !near(s.DispatchGBps, bytes/5/1e6) || !near(s.CombineGBps, bytes/1/1e6) {
		t.Errorf("GB/s %v %v, want %v %v", s.DispatchGBps, s.CombineGBps, bytes/5/1e6, bytes/1e6)
	}
	if want := 4.0 * 80 * 100 * 50 / 4 / 1e9; !near(s.GEMMTFLOPS, want) {
		t.Errorf("TFLOP/s %v, want %v", s.GEMMTFLOPS, want)
	}
	if !slices.Equal(s.RecvRows, []int{80, 40}) {
		t.Errorf("recv rows %v", s.RecvRows)
	}
	if _, err := x.Summarize(times[:1]); err == nil {
		t.Error("a summary of one rank of two")
	}
	if _, err := x.Summarize([][]XTimes{times[0], nil}); !errors.Is(err, ErrNoTimes) {
		t.Errorf("a rank without times: %v", err)
	}
}

// nccl-tests' alltoall: algbw = size / time with size what each rank sends,
// busbw = algbw · (n−1)/n.
func TestAllToAllBusBandwidthIsNCCLTests(t *testing.T) {
	if got, want := AllToAllBusGBps(256<<20, 4, time.Second), float64(256<<20)*3/4/1e9; math.Abs(got-want) > 1e-12 {
		t.Errorf("256 MiB over 4 ranks in 1 s: %v GB/s, want %v", got, want)
	}
	if got := AllToAllBusGBps(1e9, 2, 10*time.Millisecond); math.Abs(got-50) > 1e-9 {
		t.Errorf("1 GB over 2 ranks in 10 ms: %v GB/s, want 50", got)
	}
	if AllToAllBusGBps(1e9, 1, time.Second) != 0 || AllToAllBusGBps(1e9, 2, 0) != 0 {
		t.Error("one rank, or no time, has no bus bandwidth")
	}
}
