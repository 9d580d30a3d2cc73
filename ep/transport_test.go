package ep

import (
	"context"
	"errors"
	"slices"
	"sync"
	"testing"
	"time"
)

// onAll runs fn on every rank at once and returns their errors in rank order.
func onAll(ranks []Transport, fn func(f Transport) error) []error {
	errs := make([]error, len(ranks))
	var wg sync.WaitGroup
	for i, f := range ranks {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = fn(f)
		}()
	}
	wg.Wait()
	return errs
}

// transports are the communicators every transport test runs on: the
// in-process fake and the TCP mesh over loopback.
var transports = []struct {
	name string
	make func(t *testing.T, n int, timeout time.Duration) []Transport
}{
	{"in process", func(_ *testing.T, n int, timeout time.Duration) []Transport { return Transports(NewFake(n, timeout)) }},
	{"over TCP", func(t *testing.T, n int, timeout time.Duration) []Transport {
		m := tcpMesh(t, n, timeout)
		tr := make([]Transport, n)
		for i, x := range m {
			tr[i] = x
		}
		return tr
	}},
}

func TestTransportsDeliverEveryExchange(t *testing.T) {
	for _, tt := range transports {
		t.Run(tt.name, func(t *testing.T) { deliversEveryExchange(t, tt.make(t, 3, 10*time.Second)) })
	}
}

func deliversEveryExchange(t *testing.T, ranks []Transport) {
	n := len(ranks)
	ctx := context.Background()
	errs := onAll(ranks, func(f Transport) error {
		r := f.Rank()
		// Rank r sends rank d vectors of d+1 values, all tagged 10r+d.
		counts := make([][]int32, n)
		rows := make([]Rows, n)
		vecs := make([][]float32, n)
		for d := range n {
			tag := int32(10*r + d)
			counts[d] = slices.Repeat([]int32{tag}, d+1)
			rows[d] = Rows{X: slices.Repeat([]float32{float32(tag)}, 2*(d+1)), IDs: counts[d],
				Weights: slices.Repeat([]float32{-float32(tag)}, d+1)}
			vecs[d] = slices.Repeat([]float32{float32(tag)}, d+1)
		}
		gotCounts := make([][]int32, n)
		gotRows := make([]Rows, n)
		gotVecs := make([][]float32, n)
		for s := range n {
			gotCounts[s] = make([]int32, r+1)
			gotRows[s] = Rows{X: make([]float32, 2*(r+1)), IDs: make([]int32, r+1), Weights: make([]float32, r+1)}
			gotVecs[s] = make([]float32, r+1)
		}
		if err := f.ExchangeCounts(ctx, counts, gotCounts); err != nil {
			return err
		}
		if err := f.Dispatch(ctx, rows, gotRows); err != nil {
			return err
		}
		if err := f.Combine(ctx, vecs, gotVecs); err != nil {
			return err
		}
		sum, err := f.AllReduce(ctx, float64(r+1))
		if err != nil {
			return err
		}
		if sum != 6 {
			t.Errorf("rank %d: all-reduce of 1+2+3 gave %g", r, sum)
		}
		for s := range n {
			tag := int32(10*s + r)
			if slices.ContainsFunc(gotCounts[s], func(v int32) bool { return v != tag }) ||
				slices.ContainsFunc(gotRows[s].X, func(v float32) bool { return v != float32(tag) }) ||
				slices.ContainsFunc(gotRows[s].Weights, func(v float32) bool { return v != -float32(tag) }) ||
				slices.ContainsFunc(gotVecs[s], func(v float32) bool { return v != float32(tag) }) {
				t.Errorf("rank %d got from rank %d: %v %v %v, want all %d", r, s, gotCounts[s], gotRows[s], gotVecs[s], tag)
			}
		}
		return nil
	})
	for r, err := range errs {
		if err != nil {
			t.Errorf("rank %d: %v", r, err)
		}
	}
}

func TestFakeSendsCopies(t *testing.T) {
	ranks := NewFake(1, time.Second)
	send := [][]float32{{1, 2}}
	recv := [][]float32{make([]float32, 2)}
	if err := ranks[0].Combine(context.Background(), send, recv); err != nil {
		t.Fatal(err)
	}
	send[0][0] = 9
	if recv[0][0] != 1 {
		t.Fatal("the receiver's buffer changed with the sender's")
	}
}

// Failures must end every rank within the bound: never a hang.
func TestTransportsEndEveryRankOnFailure(t *testing.T) {
	cases := []struct {
		name string
		// call is what rank r does; want what every rank's error wraps.
		call func(ctx context.Context, f Transport) error
		want error
		// must fail; the others may finish a collective whose own messages
		// all arrived, but their next call fails.
		must []int
	}{
		{"a rank that never arrives", func(ctx context.Context, f Transport) error {
			if f.Rank() == 2 {
				return nil
			}
			_, err := f.AllReduce(ctx, 1)
			return err
		}, ErrTimeout, []int{0, 1}},
		{"ranks calling different collectives", func(ctx context.Context, f Transport) error {
			if f.Rank() == 1 {
				return f.Combine(ctx, make([][]float32, 3), make([][]float32, 3))
			}
			_, err := f.AllReduce(ctx, 1)
			return err
		}, ErrMismatch, []int{0, 1, 2}},
		{"a buffer of a size its receiver did not expect", func(ctx context.Context, f Transport) error {
			send := [][]float32{{1}, {1}, {1}}
			recv := [][]float32{{0}, {0}, {0}}
			if f.Rank() == 0 {
				send[2] = []float32{1, 2}
			}
			return f.Combine(ctx, send, recv)
		}, ErrMismatch, []int{2}},
		{"a rank that aborts", func(ctx context.Context, f Transport) error {
			if f.Rank() == 0 {
				f.Abort(errors.New("rank 0 ran out of memory"))
			}
			_, err := f.AllReduce(ctx, 1)
			return err
		}, ErrAborted, []int{0, 1, 2}},
	}
	for _, tt := range transports {
		for _, tc := range cases {
			t.Run(tt.name+": "+tc.name, func(t *testing.T) {
				ranks := tt.make(t, 3, 300*time.Millisecond)
				endsEveryRank(t, ranks, tc.call, tc.want, tc.must)
			})
		}
	}
}

func endsEveryRank(t *testing.T, ranks []Transport, call func(context.Context, Transport) error, want error, must []int) {
	t.Helper()
	done := make(chan []error, 1)
	go func() {
		done <- onAll(ranks, func(f Transport) error { return call(context.Background(), f) })
	}()
	select {
	case errs := <-done:
		for _, r := range must {
			if err := errs[r]; !errors.Is(err, want) && !errors.Is(err, ErrAborted) {
				t.Errorf("rank %d: got %v, want %v", r, err, want)
			}
		}
	case <-time.After(20 * time.Second):
		t.Fatal("ranks still waiting after 20s")
	}
	// The communicator stays broken: a later call fails at once.
	if _, err := ranks[0].AllReduce(context.Background(), 1); !errors.Is(err, ErrAborted) {
		t.Errorf("a call after the failure: got %v, want ErrAborted", err)
	}
}

func TestTransportsHonourTheContext(t *testing.T) {
	for _, tt := range transports {
		t.Run(tt.name, func(t *testing.T) { honoursTheContext(t, tt.make(t, 2, time.Minute)) })
	}
}

func honoursTheContext(t *testing.T, ranks []Transport) {
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := ranks[0].AllReduce(ctx, 1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("got %v, want the context's deadline", err)
	}
	if time.Since(start) > 10*time.Second {
		t.Fatal("the call outlived its context by far")
	}
}
