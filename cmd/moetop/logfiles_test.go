package main

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// runCLIWithin runs the CLI and fails the test, instead of hanging it, when
// the command does not return.
func runCLIWithin(t *testing.T, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	type result struct {
		code     int
		out, err string
	}
	done := make(chan result, 1)
	go func() {
		c, o, e := runCLI(t, args...)
		done <- result{c, o, e}
	}()
	select {
	case r := <-done:
		return r.code, r.out, r.err
	case <-time.After(10 * time.Second):
		t.Fatalf("moetop %s still running after 10 s", strings.Join(args, " "))
		return 0, "", ""
	}
}

func TestLogCommandsRefuseWhatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"summary", fifo}, "is a named pipe (FIFO), not a log file"},
		{[]string{"export", fifo, "--format", "csv"}, "is a named pipe (FIFO), not a log file"},
		{[]string{"--replay", fifo}, "is a named pipe (FIFO), not a log file"},
		{[]string{"summary", "/dev/zero"}, "/dev/zero: is a character device, not a log file"},
		{[]string{"summary", dir}, "is a directory, not a log file"},
		{[]string{"--record", ".", "--backend", "cpu", "--steps", "1"}, ". is a directory; --record needs a file name"},
		{[]string{"--record", dir, "--force", "--backend", "cpu", "--steps", "1"}, "is a directory; --record needs a file name"},
	} {
		code, _, stderr := runCLIWithin(t, c.args...)
		if code != 2 || strings.Count(stderr, "\n") != 1 || !strings.Contains(stderr, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want 2 and one line with %q", c.args, code, stderr, c.want)
		}
	}
}

func TestRecordRefusesAnOldPartBeforeItRuns(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.jsonl")
	os.WriteFile(path+".1", []byte("old\n"), 0o644)
	code, _, stderr := runCLIWithin(t, "--record", path, "--max-size", "4KiB", "--backend", "cpu", "--steps", "3")
	if code != 2 || !strings.Contains(stderr, "run.jsonl.1: file exists") || !strings.Contains(stderr, "--force") {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	if _, err := os.Stat(path); err == nil {
		t.Error("a refused run left a log behind")
	}
}

func TestSummaryAndExportSayWhyLinesWereSkipped(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.jsonl")
	if code, _, stderr := runCLI(t, "--record", path, "--steps", "4", "--window", "0", "--backend", "cpu", "--tokens", "32", "--hidden", "16"); code != 0 {
		t.Fatal(stderr)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Step 2's time goes negative: the line the view once panicked on.
	lines := strings.SplitAfter(string(b), "\n")
	i := 0
	for i < len(lines) && !strings.Contains(lines[i], `"step":2,`) {
		i++
	}
	if i == len(lines) {
		t.Fatalf("no step 2 in the log:\n%s", b)
	}
	j := strings.Index(lines[i], `"step_ms":`) + len(`"step_ms":`)
	lines[i] = lines[i][:j] + "-" + lines[i][j:]
	os.WriteFile(path, []byte(strings.Join(lines, "")), 0o644)

	code, out, _ := runCLI(t, "summary", path)
	if code != 0 || !strings.Contains(out, "3 steps") || !strings.Contains(out, "lines skipped 1\n    1: a time that is negative") {
		t.Errorf("summary: exit %d:\n%s", code, out)
	}
	code, out, _ = runCLI(t, "summary", "--json", path)
	if code != 0 || !strings.Contains(out, `"lines_skipped": 1`) || !strings.Contains(out, `"reason": "a time that is negative`) {
		t.Errorf("summary --json: exit %d:\n%s", code, out)
	}
	code, out, stderr := runCLI(t, "export", path, "--format", "csv")
	if code != 0 || strings.Count(out, "\n") != 4 || !strings.Contains(stderr, "skipped 1 line of") ||
		!strings.Contains(stderr, "1: a time that is negative") {
		t.Errorf("export: exit %d, %d rows, stderr %q", code, strings.Count(out, "\n"), stderr)
	}
}

func TestExportNeverOverwritesItsOwnLog(t *testing.T) {
	dir := t.TempDir()
	log := filepath.Join(dir, "run.jsonl")
	if code, _, e := runCLI(t, "--record", log, "--steps", "2", "--backend", "cpu", "--tokens", "16", "--hidden", "8", "--window", "0"); code != 0 {
		t.Fatal(e)
	}
	before, _ := os.ReadFile(log)
	code, _, stderr := runCLI(t, "export", log, "--format", "csv", "--out", log, "--force")
	if after, _ := os.ReadFile(log); code != 2 || string(after) != string(before) || !strings.Contains(stderr, "is the log being exported") {
		t.Errorf("exit %d, %q; the log must be untouched and the export refused", code, stderr)
	}
	// A failed export leaves nothing behind.
	code, _, _ = runCLI(t, "export", filepath.Join(dir, "none.jsonl"), "--format", "csv", "--out", filepath.Join(dir, "x.csv"))
	if _, err := os.Stat(filepath.Join(dir, "x.csv")); code == 0 || err == nil {
		t.Errorf("exit %d; a failed export left x.csv behind (%v)", code, err)
	}
	matches, _ := filepath.Glob(filepath.Join(dir, ".x.csv.*"))
	if len(matches) > 0 {
		t.Errorf("temporary files left: %v", matches)
	}
}
