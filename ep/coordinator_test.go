package ep

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// The bound within which anything that must end does: far above what any
// of these tests needs, so that a slow machine cannot make them flake.
const bound = 10 * time.Second

var testLayer = stream.Layer{Tokens: 6, Hidden: 8, FFN: 4, Experts: 4, TopK: 2, DType: "bf16", Act: "gelu",
	Routing: "uniform", Seed: 1}

func testSpec(world int) Spec {
	p, _ := Contiguous(testLayer.Experts, world)
	s := Spec{World: world, Version: "test", Backend: "cpu", Layer: testLayer}
	for e := range p.Experts() {
		s.Placement = append(s.Placement, p.Replicas(e))
	}
	return s
}

// joinAll runs Join for every config at once (rank 0's on a fresh port of
// 127.0.0.1) and returns the sessions and errors in the configs' order;
// the sessions close when the test ends.
func joinAll(t *testing.T, cfgs []JoinConfig) ([]*Session, []error) {
	t.Helper()
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	sess := make([]*Session, len(cfgs))
	errs := make([]error, len(cfgs))
	done := make(chan struct{})
	go func() {
		defer close(done)
		var wg sync.WaitGroup
		for i, c := range cfgs {
			c.Addr = ln.Addr().String()
			if c.Rank == 0 {
				c.Listener = ln
			}
			wg.Go(func() { sess[i], errs[i] = Join(context.Background(), c) })
		}
		wg.Wait()
	}()
	select {
	case <-done:
	case <-time.After(bound + 2*cfgs[0].JoinTimeout):
		t.Fatal("Join still waiting: a hang")
	}
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, s := range sess {
			if s != nil {
				wg.Go(func() { s.Close() })
			}
		}
		wg.Wait()
	})
	return sess, errs
}

func configs(world int, mesh bool, timeout time.Duration) []JoinConfig {
	cfgs := make([]JoinConfig, world)
	for r := range cfgs {
		cfgs[r] = JoinConfig{Rank: r, World: world, Spec: testSpec(world), Host: fmt.Sprintf("host%d", r), LocalRank: r,
			Timeout: timeout, JoinTimeout: bound / 2, Mesh: mesh,
			Blob: func() ([]byte, error) { return []byte("nccl unique id"), nil }}
	}
	return cfgs
}

func TestJoinHandsEveryRankTheBlobThePeersAndEveryReport(t *testing.T) {
	const world = 3
	sess, errs := joinAll(t, configs(world, false, bound))
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	for r, s := range sess {
		if s.Rank() != r || s.World() != world || string(s.Blob()) != "nccl unique id" {
			t.Errorf("rank %d: rank %d of %d, blob %q", r, s.Rank(), s.World(), s.Blob())
		}
		for p, peer := range s.Peers() {
			if peer.Rank != p || peer.LocalRank != p || peer.Host != fmt.Sprintf("host%d", p) {
				t.Errorf("rank %d sees peer %d as %+v", r, p, peer)
			}
		}
	}
	for step := range 3 {
		got := make([][]Report, world)
		var wg sync.WaitGroup
		for r, s := range sess {
			wg.Go(func() {
				rep := Report{PhasesNS: make([]int64, len(PhaseNames)), ExpertRows: []int{r, step, 0, 1}, RecvRows: 10*r + step}
				got[r], errs[r] = s.Gather(context.Background(), rep)
			})
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		for r, reps := range got {
			for p, rep := range reps {
				if rep.Rank != p || rep.Step != step || rep.RecvRows != 10*p+step || rep.ExpertRows[0] != p {
					t.Errorf("step %d: rank %d got rank %d's report as %+v", step, r, p, rep)
				}
			}
		}
	}
}

func TestJoinRefusesARankThatDoesNotRunWhatRankZeroRuns(t *testing.T) {
	cases := []struct {
		name  string
		cfgs  func() []JoinConfig
		wants string // in every rank's error
	}{
		{"another routing", func() []JoinConfig {
			c := configs(3, true, bound)
			c[2].Spec.Layer.Routing = "zipf:1.2"
			return c
		}, `layer.routing is "zipf:1.2" there, "uniform" on rank 0`},
		{"another world size", func() []JoinConfig {
			c := configs(3, true, bound)
			c[2].World, c[2].Spec = 4, testSpec(4)
			return c
		}, "world is 4 there, 3 on rank 0"},
		{"another placement", func() []JoinConfig {
			c := configs(2, false, bound)
			c[1].Spec.Placement = [][]int{{0}, {0, 1}, {1}, {1}}
			return c
		}, "placement is"},
		{"another version", func() []JoinConfig {
			c := configs(2, false, bound)
			c[1].Spec.Version = "v2"
			return c
		}, `version is "v2" there`},
		{"two processes as one rank", func() []JoinConfig {
			c := configs(3, false, bound)
			c[2].Rank = 1
			return c
		}, "two processes joined as rank 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			start := time.Now()
			_, errs := joinAll(t, tc.cfgs())
			for r, err := range errs {
				if !errors.Is(err, ErrMismatch) || !strings.Contains(err.Error(), tc.wants) {
					t.Errorf("process %d: got %v, want a mismatch saying %q", r, err, tc.wants)
				}
			}
			if d := time.Since(start); d > bound {
				t.Errorf("refusing took %v", d)
			}
		})
	}
}

func TestJoinGivesUpOnARankThatNeverComes(t *testing.T) {
	cfgs := configs(3, true, bound)[:2] // rank 2 never starts
	for i := range cfgs {
		cfgs[i].JoinTimeout = 300 * time.Millisecond
	}
	_, errs := joinAll(t, cfgs)
	for r, err := range errs {
		if err == nil || !strings.Contains(err.Error(), "ranks 2 did not join within 300ms") {
			t.Errorf("rank %d: got %v, want rank 2 named as missing", r, err)
		}
	}
}

// Launchers start ranks in any order: one that comes before the coordinator
// listens keeps trying.
func TestARankMayStartBeforeTheCoordinator(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	cfgs := configs(2, true, bound)
	for i := range cfgs {
		cfgs[i].Addr = addr
	}
	early := make(chan error, 1)
	go func() {
		s, err := Join(context.Background(), cfgs[1])
		if err == nil {
			defer s.Close()
		}
		early <- err
	}()
	time.Sleep(300 * time.Millisecond)
	s, err := Join(context.Background(), cfgs[0])
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	select {
	case err := <-early:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(bound):
		t.Fatal("the early rank never joined")
	}
}

func TestAStrayConnectionDoesNotJoin(t *testing.T) {
	ln, err := Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfgs := configs(2, false, bound)
	cfgs[0].Listener = ln
	for i := range cfgs {
		cfgs[i].Addr = ln.Addr().String()
	}
	stray, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer stray.Close()
	stray.Write([]byte("GET /metrics HTTP/1.1\r\n\r\n"))
	res := make(chan error, 2)
	for _, c := range cfgs {
		go func() {
			s, err := Join(context.Background(), c)
			if err == nil {
				defer s.Close()
			}
			res <- err
		}()
	}
	for range 2 {
		select {
		case err := <-res:
			if err != nil {
				t.Fatal(err)
			}
		case <-time.After(bound):
			t.Fatal("a stray connection held up the join")
		}
	}
}

// procs are the ranks of a multi-process run, here goroutines: each joins
// with a mesh and steps through its own ProcBackend.
func procs(t *testing.T, world int, timeout time.Duration, s kernels.Shape) []*ProcBackend {
	t.Helper()
	cfgs := configs(world, true, timeout)
	for i := range cfgs {
		cfgs[i].Spec.Layer = stream.Layer{Tokens: s.Tokens, Hidden: s.Hidden, FFN: s.FFN, Experts: s.Experts, TopK: s.TopK,
			DType: s.DType.String(), Act: s.Act.String(), Routing: "uniform", Seed: s.Seed}
		cfgs[i].Spec.Placement = nil
	}
	sess, errs := joinAll(t, cfgs)
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}
	bs := make([]*ProcBackend, world)
	for r := range bs {
		bs[r] = &ProcBackend{Session: sess[r]}
		if err := bs[r].Prepare(context.Background(), s); err != nil {
			t.Fatal(err)
		}
	}
	return bs
}

// stepAll steps the ranks in only (all when nil) at once.
func stepAll(bs []*ProcBackend, in kernels.StepInput, only ...int) ([]kernels.StepResult, []error) {
	res := make([]kernels.StepResult, len(bs))
	errs := make([]error, len(bs))
	var wg sync.WaitGroup
	for r, b := range bs {
		if only != nil && !slices.Contains(only, r) {
			continue
		}
		wg.Go(func() { res[r], errs[r] = b.Step(context.Background(), in) })
	}
	wg.Wait()
	return res, errs
}

var procShape = kernels.Shape{Tokens: 12, Hidden: 16, FFN: 8, Experts: 6, TopK: 2, DType: kernels.BF16, Seed: 9}

// The processes' whole step, the one each returns, is the single process's,
// step after step while the router's bias follows the rows as the live
// loop's steering does: every process steers alike from the gathered rows.
func TestProcessesStepLikeOneProcessOfAllRanks(t *testing.T) {
	const world = 3
	bs := procs(t, world, bound, procShape)
	one := &CPUBackend{Ranks: world, Timeout: bound}
	if err := one.Prepare(context.Background(), procShape); err != nil {
		t.Fatal(err)
	}
	biasOne := make([]float32, procShape.Experts)
	biasProc := make([][]float32, world)
	for r := range biasProc {
		biasProc[r] = make([]float32, procShape.Experts)
	}
	for step := range 4 {
		want, err := one.Step(context.Background(), kernels.StepInput{Bias: biasOne})
		if err != nil {
			t.Fatal(err)
		}
		got := make([]kernels.StepResult, world)
		errs := make([]error, world)
		var wg sync.WaitGroup
		for r, b := range bs {
			wg.Go(func() { got[r], errs[r] = b.Step(context.Background(), kernels.StepInput{Bias: biasProc[r]}) })
		}
		wg.Wait()
		if err := errors.Join(errs...); err != nil {
			t.Fatalf("step %d: %v", step, err)
		}
		for r, g := range got {
			if !slices.Equal(g.Rows, want.Rows) {
				t.Errorf("step %d: rank %d returned rows %v, one process %v", step, r, g.Rows, want.Rows)
			}
			if len(g.Devices) != world {
				t.Fatalf("step %d: rank %d returned %d devices", step, r, len(g.Devices))
			}
			for d, dev := range g.Devices {
				w := want.Devices[d]
				if dev.Device != d || dev.RecvRows != w.RecvRows || dev.RecvTokens != w.RecvTokens ||
					dev.SentBytes != w.SentBytes || dev.SavedBytes != w.SavedBytes || len(dev.Phases) != len(w.Phases) {
					t.Errorf("step %d: rank %d sees device %d as %+v, one process %+v", step, r, d, dev, w)
				}
			}
			steer(biasProc[r], g.Rows)
		}
		steer(biasOne, want.Rows)
	}
}

// steer moves a bias toward even rows, as profiler.Steering does.
func steer(bias []float32, rows []int) {
	total := 0
	for _, r := range rows {
		total += r
	}
	for e, r := range rows {
		want := float64(total)/float64(len(rows)) + 0.5
		bias[e] += float32(0.5 * math.Log(want/(float64(r)+0.5)))
	}
}

// kill closes a process's connections without a goodbye, as the kernel
// does when the process is killed.
func (s *Session) kill() {
	for _, cc := range s.conns {
		if cc != nil {
			cc.c.(*net.TCPConn).SetLinger(0)
			cc.c.Close()
		}
	}
	if s.mesh != nil {
		s.mesh.kill()
	}
}

// expectEnd steps the ranks in only and checks each fails within the bound
// with an error that is want and contains text.
func expectEnd(t *testing.T, bs []*ProcBackend, only []int, want error, text string) {
	t.Helper()
	start := time.Now()
	done := make(chan []error, 1)
	go func() {
		_, errs := stepAll(bs, kernels.StepInput{}, only...)
		done <- errs
	}()
	select {
	case errs := <-done:
		for _, r := range only {
			if err := errs[r]; !errors.Is(err, want) || !strings.Contains(err.Error(), text) {
				t.Errorf("rank %d: got %v, want %v naming %q", r, err, want, text)
			}
		}
	case <-time.After(bound):
		t.Fatalf("ranks %v still stepping after %v: a hang", only, bound)
	}
	t.Logf("ended after %v", time.Since(start))
}

func TestARankKilledMidRunEndsTheOthersAtOnce(t *testing.T) {
	bs := procs(t, 3, time.Minute, procShape) // a timeout the test would notice
	for range 2 {
		if _, errs := stepAll(bs, kernels.StepInput{}); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
	}
	bs[1].Session.kill()
	// Rank 0, the one that tells the user, names the rank that died. Rank
	// 2 ends as promptly, but may hear of it first as rank 0's abort
	// closing its connection: which loss reaches it first is a race.
	expectEnd(t, bs, []int{0, 2}, ErrPeerLost, "closed its connection")
}

func TestARankThatStopsAnsweringEndsTheOthersWithinTheTimeout(t *testing.T) {
	t.Run("before its step", func(t *testing.T) {
		bs := procs(t, 3, 500*time.Millisecond, procShape)
		if _, errs := stepAll(bs, kernels.StepInput{}); errors.Join(errs...) != nil {
			t.Fatal(errs)
		}
		// Rank 1 stops stepping but keeps its connections open.
		expectEnd(t, bs, []int{0, 2}, ErrTimeout, "rank 1")
	})
	t.Run("before its report", func(t *testing.T) {
		bs := procs(t, 3, 500*time.Millisecond, procShape)
		// Rank 1 does its share of the exchange, then never reports.
		go bs[1].rank.Step(context.Background())
		expectEnd(t, bs, []int{0, 2}, ErrTimeout, "rank 1 sent no report")
	})
}

func TestRankZeroEndingEndsTheOthersCleanly(t *testing.T) {
	bs := procs(t, 3, time.Minute, procShape)
	if _, errs := stepAll(bs, kernels.StepInput{}); errors.Join(errs...) != nil {
		t.Fatal(errs)
	}
	go bs[0].Close() // Close waits for the others to leave
	expectEnd(t, bs, []int{1, 2}, ErrEnded, "rank 0")
}

func TestProcBackendKeepsTheAgreedLayer(t *testing.T) {
	bs := procs(t, 2, bound, procShape)
	other := procShape
	other.Tokens *= 2
	if err := bs[0].Prepare(context.Background(), other); err == nil || !strings.Contains(err.Error(), "keeps its layer") {
		t.Fatalf("got %v, want a refusal to change the layer", err)
	}
	// The other rank, waiting for this one, hears why at once.
	select {
	case <-bs[1].Session.Done():
		if err := bs[1].Session.Err(); err == nil || !strings.Contains(err.Error(), "keeps its layer") {
			t.Errorf("rank 1's run ended with %v, want rank 0's reason", err)
		}
	case <-time.After(bound):
		t.Fatal("rank 1 was never told")
	}
}
