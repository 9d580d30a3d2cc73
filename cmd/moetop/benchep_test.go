package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/moetop/moetop/bench"
	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels/cuda"
	"github.com/moetop/moetop/stream"
)

// bench --ep on the CPU ranks: a result per case and distribution, with
// the peer's figures, written whole to --out.
func TestBenchEPOnTheCPURanks(t *testing.T) {
	t.Setenv(cuda.UnverifiedGPUEPEnv, "")
	out := filepath.Join(t.TempDir(), "ep.json")
	code, _, stderr := runCLI(t, "bench", "--ep", "4", "--shape", "small:64:32:64:16:2", "--dist", "uniform,hot:0:0.5",
		"--reps", "3", "--warmup", "1", "--format", "json", "--out", out, "--backends", "cpu")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	b, err := os.ReadFile(out)
	if err != nil {
		t.Fatal(err)
	}
	var rs []bench.EPResult
	if err := json.Unmarshal(b, &rs); err != nil {
		t.Fatalf("not JSON: %v", err)
	}
	if len(rs) != 2 {
		t.Fatalf("%d results, want 2", len(rs))
	}
	for _, r := range rs {
		if r.Status != bench.StatusOK || r.World != 4 || len(r.RecvRows) != 4 || !(r.StepMS > 0) || r.Backend != "cpu" {
			t.Errorf("%+v", r)
		}
	}
	// hot:0:0.5 sends half of every rank's rows to expert 0, on rank 0.
	if h := rs[1].RecvRows; slices.Max(h) != h[0] || h[0] < 4*64 {
		t.Errorf("hot:0:0.5 recv rows %v", h)
	}
	if strings.Contains(stderr, "all-to-all") {
		t.Errorf("a ceiling on the CPU ranks: %s", stderr)
	}
}

func TestBenchEPRejectsBadInput(t *testing.T) {
	t.Setenv(cuda.UnverifiedGPUEPEnv, "")
	shape := []string{"--shape", "s:64:32:64:16:2"}
	for _, args := range [][]string{
		{"--ep", "-1", "--backends", "cpu", shape[0], shape[1]},
		{"--ep-timeout", "10s", "--backends", "cpu", shape[0], shape[1]},
		{"--ep", "2", "--ep-timeout", "0s", "--backends", "cpu", shape[0], shape[1]},
		{"--ep", "2", "--backends", "cpu"},                                                     // the CPU ranks need a shape
		{"--ep", "3", "--backends", "cpu", shape[0], shape[1]},                                 // 16 experts over 3
		{"--ep", "2", "--backends", "cpu", "--act", "swiglu", shape[0], shape[1]},              // the peer is gelu
		{"--ep", "2", "--backends", "grouped", shape[0], shape[1]},                             // not the ranks' GEMMs
		{"--ep", "2", "--backends", "loop", shape[0], shape[1]},                                // GPUs without opting in
		{"--ep", "2", "--backends", "cpu", "--dtypes", "fp16", shape[0], shape[1]},             // the CPU ranks are fp32
		{"--ep", "2", "--backends", "cpu", "--dist", "hot:0:1", shape[0], shape[1]},            // no router gives that
		{"--ep", "2", "--backends", "cpu", "--shape", "big:8192:4096:14336:8:2"},               // hours on the CPU
		{"--ep", "2", "--backends", "cpu", "--dist", "drift", shape[0], shape[1]},              // not a fixed load
		{"--ep", "2", "--backends", "cpu", "--run-predicted-oom", shape[0], shape[1]},          // no memory model here
		{"--ep", "2", "--backends", "cpu", "--format", "xml", shape[0], shape[1]},              // no such format
		{"--ep", "2", "--backends", "cpu", "--out", "/nonexistent/x.json", shape[0], shape[1]}, // no such folder
		{"--ep", "2", "--backends", "cpu", "--no-graphs", shape[0], shape[1]},                  // no graphs on the CPU
		{"--ep", "2", "--backends", "cpu", "--device", "1", shape[0], shape[1]},                // the ranks pick their GPUs
		{"--ep", "2", "--device", "0", shape[0], shape[1]},                                     // on GPUs as well
	} {
		code, _, stderr := runCLI(t, append([]string{"bench"}, args...)...)
		if code != 2 || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, %q", args, code, stderr)
		}
	}
}

func TestBenchHelpStatesTheBusBandwidthConvention(t *testing.T) {
	code, stdout, _ := runCLI(t, "bench", "--help")
	if code != 0 {
		t.Fatalf("exit %d", code)
	}
	for _, want := range []string{"--ep", "algbw × (n−1)/n", "nccl-tests", "256 MiB per rank", "MOETOP_UNVERIFIED_GPU_EP=1"} {
		if !strings.Contains(stdout, want) {
			t.Errorf("bench --help does not say %q", want)
		}
	}
}

// Only GPU ranks have an all-to-all ceiling; one that cannot be measured
// is said, and the run goes on without it.
func TestAllToAllCeilingIsForGPURanks(t *testing.T) {
	t.Setenv(cuda.UnverifiedGPUEPEnv, "")
	var h stream.Header
	var e strings.Builder
	allToAllCeiling(context.Background(), &h, &ep.CPUBackend{Ranks: 4}, &e)
	allToAllCeiling(context.Background(), &h, &cuda.EPBackend{Devices: []int{0}}, &e)
	if e.Len() != 0 || h.AllToAllGBps != 0 {
		t.Errorf("CPU ranks or one GPU: %q, %v GB/s", e.String(), h.AllToAllGBps)
	}
	allToAllCeiling(context.Background(), &h, &cuda.EPBackend{Devices: []int{0, 1}}, &e)
	if !strings.Contains(e.String(), "no all-to-all ceiling") || strings.Count(e.String(), "\n") != 1 || h.AllToAllGBps != 0 {
		t.Errorf("two GPUs without opting in: %q, %v GB/s", e.String(), h.AllToAllGBps)
	}
}
