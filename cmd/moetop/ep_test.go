package main

import (
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/recording"
	"github.com/moetop/moetop/stream"
)

var epLayer = []string{"--backend", "cpu", "--experts", "16", "--top-k", "2", "--tokens", "64", "--hidden", "32",
	"--ffn", "64", "--routing", "hot:0:0.45"}

func TestExpertParallelRunRecordsEachRank(t *testing.T) {
	log := filepath.Join(t.TempDir(), "ep.jsonl")
	// --window 0: a sample per step, however short (a fast step would fold).
	code, _, stderr := runCLI(t, append([]string{"--ep", "2", "--steps", "4", "--window", "0", "--record", log}, epLayer...)...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	l, err := recording.OpenLog(log)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	if l.Header.Ranks != 2 {
		t.Errorf("header ranks %d, want 2", l.Header.Ranks)
	}
	n := 0
	if _, err := l.Each(func(_ int, s stream.Sample) error {
		n++
		if got := s.Phases.Devices(); len(got) != 2 {
			t.Errorf("step %d: phases on devices %v, want 0 and 1", s.Step, got)
		}
		for _, d := range []int{0, 1} {
			for _, p := range []string{stream.PhaseDispatch, stream.PhaseWait, stream.PhaseCombine, stream.PhaseGEMM1} {
				if !hasPhase(s.Phases, p, d) {
					t.Errorf("step %d: no %s phase on rank %d", s.Step, p, d)
				}
			}
		}
		if len(s.Ranks) != 2 {
			t.Fatalf("step %d: %d rank stats, want 2", s.Step, len(s.Ranks))
		}
		rows, sum := 0, 0
		for _, r := range s.Ranks {
			rows += r.RecvRows
		}
		for _, r := range s.Rows {
			sum += r
		}
		if rows != 2*64*2 || sum != rows {
			t.Errorf("step %d: ranks ran %d rows, experts got %d; want both 2 ranks × 64 tokens × top-2 = 256", s.Step, rows, sum)
		}
		if s.StepMS < s.Phases.Total(0) || s.StepMS < s.Phases.Total(1) {
			t.Errorf("step %d: step %.3f ms shorter than a rank's phases", s.Step, s.StepMS)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != 4 {
		t.Fatalf("%d samples, want 4", n)
	}
}

func hasPhase(p stream.Phases, name string, device int) bool {
	for _, x := range p {
		if x.Phase == name && x.Device == device {
			return true
		}
	}
	return false
}

var measured = regexp.MustCompile(`balancedness \(mean/max\) ([0-9.]+) measured`)

func balancedness(t *testing.T, stderr string) float64 {
	t.Helper()
	m := measured.FindStringSubmatch(stderr)
	if m == nil {
		t.Fatalf("no measured balancedness in %q", stderr)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// The what-if is measured, not only predicted: a placement written from a
// skewed run, run again, balances the ranks better.
func TestPlacementWhatIfIsMeasured(t *testing.T) {
	dir := t.TempDir()
	before, after, place := filepath.Join(dir, "a.jsonl"), filepath.Join(dir, "b.jsonl"), filepath.Join(dir, "p.json")
	if code, _, e := runCLI(t, append([]string{"--ep", "4", "--steps", "10", "--record", before}, epLayer...)...); code != 0 {
		t.Fatalf("first run: exit %d: %s", code, e)
	}
	code, _, e := runCLI(t, "placement", before, "--redundant", "4", "--out", place)
	if code != 0 {
		t.Fatalf("placement: exit %d: %s", code, e)
	}
	was := balancedness(t, e)
	if code, _, e := runCLI(t, append([]string{"--ep", "4", "--placement", place, "--steps", "10", "--record", after}, epLayer...)...); code != 0 {
		t.Fatalf("rebalanced run: exit %d: %s", code, e)
	}
	_, _, e = runCLI(t, "placement", after, "--redundant", "4")
	if now := balancedness(t, e); now <= was+0.1 {
		t.Errorf("balancedness %.3f before rebalancing, %.3f after; want a clear gain with a hot expert", was, now)
	}
}

func TestExpertParallelBadInput(t *testing.T) {
	dir := t.TempDir()
	plain := filepath.Join(dir, "plain.jsonl")
	if code, _, e := runCLI(t, append([]string{"--steps", "2", "--record", plain}, epLayer...)...); code != 0 {
		t.Fatalf("exit %d: %s", code, e)
	}
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"negative ranks", []string{"--ep", "-1", "--backend", "cpu"}, "--ep"},
		{"more ranks than experts", []string{"--ep", "9", "--backend", "cpu", "--experts", "8"}, "at most one rank per expert"},
		{"placement without ranks", []string{"--placement", "p.json", "--backend", "cpu"}, "--placement needs --ep"},
		{"a GPU backend", []string{"--ep", "2", "--backend", "loop"}, "--backend cpu"},
		{"a GPU backend without opting in", []string{"--ep", "2", "--backend", "loop"}, "set MOETOP_UNVERIFIED_GPU_EP=1 to try it"},
		{"GPUs named without opting in", []string{"--gpus", "0,1"}, "set MOETOP_UNVERIFIED_GPU_EP=1 to try it"},
		{"GPUs that disagree with --ep", []string{"--ep", "3", "--gpus", "0,1"}, "--ep 3 with --gpus 0,1"},
		{"a GPU named twice", []string{"--gpus", "0,0"}, "named twice"},
		{"a GPU that is not a number", []string{"--gpus", "0,x"}, "invalid --gpus"},
		{"GPUs with the CPU backend", []string{"--gpus", "0,1", "--backend", "cpu"}, "--gpus needs a GPU backend"},
		{"a missing placement", []string{"--ep", "2", "--backend", "cpu", "--placement", filepath.Join(dir, "none.json")}, "none.json"},
		{"zero timeout", []string{"--ep", "2", "--backend", "cpu", "--ep-timeout", "0s"}, "--ep-timeout"},
		{"placement of a log without ranks", []string{"placement", plain}, "--ranks"},
		{"negative redundancy", []string{"placement", plain, "--ranks", "2", "--redundant", "-1"}, "--redundant"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Setenv(cuda.UnverifiedGPUEPEnv, "")
			code, _, stderr := runCLI(t, c.args...)
			if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line naming %q", code, stderr, c.want)
			}
		})
	}
}

// Opted into GPU expert parallelism, a run the machine cannot hold still
// ends with one line and exit 2: 64 ranks want 64 GPUs (or, here, any).
func TestExpertParallelOverGPUsOptedInBadInput(t *testing.T) {
	t.Setenv(cuda.UnverifiedGPUEPEnv, "1")
	for _, c := range []struct {
		name string
		args []string
		want string
	}{
		{"more ranks than GPUs", []string{"--ep", "64", "--experts", "64", "--backend", "loop"}, "GPUs"},
		{"a GPU backend other than loop", []string{"--ep", "2", "--backend", "grouped"}, "use --backend loop"},
		// Each process checks its own GPU and NCCL before it joins: here
		// there is none, and the rank says so rather than waiting for
		// the coordinator.
		{"one process per GPU without a GPU", []string{"--ep", "2", "--backend", "loop", "--rank", "1", "--world", "2", "--coordinator", "127.0.0.1:1"}, "no CUDA device"},
		{"one process per GPU as rank 0 without a GPU", []string{"--backend", "loop", "--rank", "0", "--world", "2", "--coordinator", "127.0.0.1:0"}, "rank 0: no CUDA device"},
	} {
		t.Run(c.name, func(t *testing.T) {
			clearLauncher(t)
			if ids, err := cuda.DeviceIDs(""); err == nil && len(ids) > 0 && strings.Contains(c.want, "no CUDA device") {
				t.Skip("this machine has a GPU")
			}
			code, _, stderr := runCLI(t, c.args...)
			if code != 2 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") > 0 {
				t.Errorf("exit %d, stderr %q; want exit 2 and one line naming %q", code, stderr, c.want)
			}
		})
	}
}

// All --ep N ranks in one process hold N ranks' tokens: the memory check
// counts them all, and names the largest --tokens per rank.
func TestExpertParallelLayerTheHostCannotHoldIsRefused(t *testing.T) {
	code, _, stderr := runCLI(t, "--ep", "4", "--backend", "cpu", "--tokens", "2000000", "--hidden", "1024", "--steps", "1")
	if code != 2 || !strings.Contains(stderr, "4 expert-parallel ranks of --tokens 2000000") || !strings.Contains(stderr, "at most --tokens") {
		t.Errorf("exit %d, %q; want exit 2 naming the ranks and the largest --tokens per rank", code, stderr)
	}
}
