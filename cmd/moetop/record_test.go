package main

import (
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moetop/moetop/recording"
)

// TestMain lets a test run the real program in a child process.
func TestMain(m *testing.M) {
	if os.Getenv("MOETOP_TEST_MAIN") == "1" {
		main()
		return
	}
	os.Exit(m.Run())
}

func TestSIGINTLeavesAReplayableLog(t *testing.T) {
	for _, name := range []string{"run.jsonl", "run.jsonl.zst"} {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), name)
			cmd := exec.Command(os.Args[0], "--record", path, "--backend", "cpu", "--tokens", "64", "--hidden", "64")
			cmd.Env = append(os.Environ(), "MOETOP_TEST_MAIN=1")
			var stderr strings.Builder
			cmd.Stderr = &stderr
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Let it record for a while (a flush happens every second).
			time.Sleep(1500 * time.Millisecond)
			cmd.Process.Signal(syscall.SIGINT)
			done := make(chan error, 1)
			go func() { done <- cmd.Wait() }()
			select {
			case err := <-done:
				if err != nil {
					t.Fatalf("exit after SIGINT: %v\n%s", err, stderr.String())
				}
			case <-time.After(10 * time.Second):
				cmd.Process.Kill()
				t.Fatal("recording did not stop on SIGINT")
			}
			if !strings.Contains(stderr.String(), "recorded") {
				t.Errorf("no summary line: %s", stderr.String())
			}
			l, err := recording.OpenLog(path)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			if l.Len() < 3 || len(l.Warnings) != 0 || l.Skipped != 0 {
				t.Fatalf("%d samples, warnings %v, skipped %d", l.Len(), l.Warnings, l.Skipped)
			}
			last, err := l.Sample(l.Len() - 1)
			if err != nil || last.Step != l.Len()-1 {
				t.Fatalf("last sample: step %d, %v", last.Step, err)
			}
			sum, err := recording.Summarize(l)
			if err != nil || sum.Steps != l.Len() || sum.LinesSkipped != 0 {
				t.Fatalf("summary: %d steps, %d lines skipped, %v", sum.Steps, sum.LinesSkipped, err)
			}
			code, out, errs := runCLI(t, "summary", path)
			if code != 0 || !strings.Contains(out, "lines skipped 0") {
				t.Errorf("summary exit %d: %s %s", code, out, errs)
			}
		})
	}
}

func TestLogCommandsRejectBadFiles(t *testing.T) {
	dir := t.TempDir()
	notLog := filepath.Join(dir, "notes.txt")
	os.WriteFile(notLog, []byte("hello\n"), 0o644)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	for _, args := range [][]string{
		{"summary", notLog}, {"summary", empty}, {"summary", filepath.Join(dir, "missing")}, {"summary"},
		{"export", notLog, "--format", "csv"}, {"export", empty, "--format", "perfetto"},
		{"--replay", notLog}, {"--replay", empty}, {"export", notLog, "--format", "xml"},
		{"--record", filepath.Join(dir, "x"), "--max-size", "tiny"}, {"--max-size", "1GB"}, {"--listen", "nowhere"},
		{"--replay", dir}, {"summary", dir}, {"--record", filepath.Join(dir, "no", "such", "x.jsonl"), "--backend", "cpu"},
		{"frobnicate"},
	} {
		code, _, stderr := runCLI(t, args...)
		if code != 2 || strings.Count(stderr, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line", args, code, stderr)
		}
	}
}

func TestSummaryAndExportOfARecording(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.jsonl.zst")
	if code, _, stderr := runCLI(t, "--record", path, "--steps", "5", "--backend", "cpu", "--tokens", "32", "--hidden", "16",
		"--window", "0"); code != 0 {
		t.Fatal(stderr)
	}
	code, out, _ := runCLI(t, "summary", path, "--json")
	if code != 0 || !strings.Contains(out, `"steps": 5`) {
		t.Fatalf("summary --json: %d %s", code, out)
	}
	csv := filepath.Join(dir, "run.csv")
	if code, _, stderr := runCLI(t, "export", path, "--format", "csv", "--out", csv); code != 0 {
		t.Fatal(stderr)
	}
	b, _ := os.ReadFile(csv)
	if n := strings.Count(string(b), "\n"); n != 6 {
		t.Errorf("csv has %d lines, want header + 5", n)
	}
	if code, _, _ := runCLI(t, "export", path, "--format", "csv", "--out", csv); code != 2 {
		t.Error("export overwrote --out without --force")
	}
	code, out, _ = runCLI(t, "export", path, "--format", "perfetto")
	if code != 0 || !strings.Contains(out, `"traceEvents"`) || !strings.Contains(out, `"gemm1"`) {
		t.Errorf("perfetto: %d %.200s", code, out)
	}
}

// Steps far shorter than --window are folded into samples that say how
// many steps they stand for; the closing line and the summary count steps.
func TestShortStepsAreWindowed(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.jsonl")
	code, _, stderr := runCLI(t, "--record", path, "--steps", "200", "--backend", "cpu", "--tokens", "2",
		"--hidden", "8", "--ffn", "8", "--window", "50ms")
	if code != 0 {
		t.Fatal(stderr)
	}
	if !strings.Contains(stderr, "recorded 200 steps") {
		t.Errorf("closing line %q, want 200 steps", stderr)
	}
	b, _ := os.ReadFile(path)
	if n := strings.Count(string(b), `"type":"sample"`); n >= 200 || n == 0 {
		t.Errorf("%d samples for 200 steps of a few µs in 50 ms windows; want far fewer", n)
	}
	if !strings.Contains(string(b), `"steps":`) || !strings.Contains(string(b), `"step_max_ms":`) {
		t.Error("windowed samples must say how many steps they hold and their spread")
	}
	code, out, _ := runCLI(t, "summary", path, "--json")
	if code != 0 || !strings.Contains(out, `"steps": 200`) {
		t.Errorf("summary --json counts %s; want 200 steps", out)
	}
}

func TestRowsLineStaysShortForManyExperts(t *testing.T) {
	if got := rowsLine([]int{1, 2, 3}); got != "[1 2 3]" {
		t.Errorf("few experts: %q", got)
	}
	many := make([]int, 65536)
	if got := rowsLine(many); len(got) > 80 || !strings.Contains(got, "65520 more experts") {
		t.Errorf("65536 experts: %q", got)
	}
}

func TestListenOnAPortInUseIsRefusedUpFront(t *testing.T) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Skipf("skipping: no loopback listener: %v", err)
	}
	defer l.Close()
	code, _, stderr := runCLI(t, "--backend", "cpu", "--steps", "1", "--listen", l.Addr().String())
	if code != 2 || !strings.Contains(stderr, "choose another --listen address") {
		t.Errorf("exit %d, %q; want exit 2 naming the address", code, stderr)
	}
}
