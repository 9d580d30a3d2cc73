package main

import (
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/moetop/moetop/profiler"
)

// withHostMemory makes the host report avail bytes available for a test:
// each call the next value, the last one from then on.
func withHostMemory(t *testing.T, avail ...uint64) {
	t.Helper()
	old := hostMemAvailable
	calls := 0
	hostMemAvailable = func() (uint64, error) {
		v := avail[min(calls, len(avail)-1)]
		calls++
		return v, nil
	}
	t.Cleanup(func() { hostMemAvailable = old })
}

func TestALayerTheHostCannotHoldIsRefusedAndLeavesNothing(t *testing.T) {
	// The layer: 16.7 GiB, the router's logits nearly all of it.
	layer := []string{"--backend", "cpu", "--tokens", "65536", "--experts", "65536", "--top-k", "8", "--hidden", "16"}
	cases := []struct {
		name  string
		avail []uint64 // the host's answers: at the check, then in Prepare
		want  []string
	}{
		{"the model refuses it before preparing", []uint64{16 << 30},
			[]string{"the cpu backend needs 16.7 GiB", "16.0 GiB available", "1.6 GiB is kept spare", "at most --tokens "}},
		{"not even one token fits", []uint64{200 << 20}, []string{"no --tokens fits"}},
		{"memory that went between the check and Prepare", []uint64{64 << 30, 1 << 30},
			[]string{"out of memory", "expected it to fit", "try fewer --tokens"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			withHostMemory(t, tc.avail...)
			path := filepath.Join(t.TempDir(), "run.jsonl")
			code, _, stderr := runCLI(t, append([]string{"--record", path}, layer...)...)
			if code != 2 || strings.Count(stderr, "\n") != 1 {
				t.Fatalf("exit %d, stderr %q; want 2 and one line", code, stderr)
			}
			for _, w := range tc.want {
				if !strings.Contains(stderr, w) {
					t.Errorf("stderr %q does not say %q", stderr, w)
				}
			}
			if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
				t.Errorf("a refused run left %s behind (%v)", path, err)
			}
		})
	}
}

func TestLargestTokensInTheRefusalFits(t *testing.T) {
	const avail = 16 << 30
	withHostMemory(t, avail)
	code, _, stderr := runCLI(t, "--steps", "1", "--backend", "cpu", "--tokens", "65536", "--experts", "65536",
		"--top-k", "8", "--hidden", "16")
	m := regexp.MustCompile(`at most --tokens (\d+) fits`).FindStringSubmatch(stderr)
	if code != 2 || m == nil {
		t.Fatalf("exit %d, %q", code, stderr)
	}
	n, _ := strconv.Atoi(m[1])
	cfg := profiler.Config{Tokens: n, Hidden: 16, FFN: 64, Experts: 65536, TopK: 8}
	need, _ := profiler.Peak("cpu", cfg, nil)
	cfg.Tokens = n + 64
	over, _ := profiler.Peak("cpu", cfg, nil)
	usable := uint64(avail) - hostSpare(avail)
	if n >= 65536 || need > usable || over <= usable {
		t.Errorf("--tokens %d needs %d B, 64 more tokens %d B, of %d usable: not the largest that fits", n, need, over, usable)
	}
}

func TestGPUBackendWithoutAGPUIsExit2AndLeavesNothing(t *testing.T) {
	if probeGPU().GPU {
		t.Skip("there is a GPU here: the grouped backend can run")
	}
	path := filepath.Join(t.TempDir(), "run.jsonl")
	code, _, stderr := runCLI(t, "--backend", "grouped", "--record", path, "--steps", "1")
	if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, "--backend cpu") {
		t.Errorf("exit %d, stderr %q; want 2 and one line that names --backend cpu", code, stderr)
	}
	if _, err := os.Stat(path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("left %s behind (%v)", path, err)
	}
}
