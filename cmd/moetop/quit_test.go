package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/moetop/moetop/recording"
)

// SIGTERM in the middle of a long CPU step ends the program within
// seconds, not after the step (tens of seconds here: 550 GFLOP), with a
// valid log and exit code 0. The log is created once the layer is
// prepared, so its appearance says the run is stepping.
func TestSIGTERMDuringALongStepEndsTheRunWithinSeconds(t *testing.T) {
	if testing.Short() {
		t.Skip("skipping: prepares an 800 MiB layer in a child process")
	}
	path := filepath.Join(t.TempDir(), "run.jsonl")
	cmd := exec.Command(os.Args[0], "--record", path, "--backend", "cpu", "--dtype", "fp32",
		"--tokens", "8192", "--hidden", "2048", "--ffn", "8192", "--experts", "2", "--top-k", "1")
	cmd.Env = append(os.Environ(), "MOETOP_TEST_MAIN=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	defer cmd.Process.Kill()
	deadline := time.Now().Add(2 * time.Minute)
	for {
		if _, err := os.Stat(path); err == nil {
			break
		}
		select {
		case err := <-done:
			t.Fatalf("exited before recording: %v\n%s", err, stderr.String())
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("no log after 2 minutes of preparing\n%s", stderr.String())
		}
	}
	time.Sleep(time.Second) // into the first step's GEMMs
	start := time.Now()
	cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("exit after SIGTERM: %v\n%s", err, stderr.String())
		}
		t.Logf("ended %s after SIGTERM", time.Since(start).Round(time.Millisecond))
	case <-time.After(10 * time.Second):
		t.Fatalf("still running 10 s after SIGTERM\n%s", stderr.String())
	}
	if !strings.Contains(stderr.String(), "recorded no steps") {
		t.Errorf("closing line: %q", stderr.String())
	}
	l, err := recording.OpenLog(path)
	if err != nil {
		t.Fatalf("log: %v", err)
	}
	defer l.Close()
	if l.Header.Config.Tokens != 8192 || l.Len() != 0 || len(l.Warnings) != 0 {
		t.Errorf("log: header %+v, %d samples, warnings %v; want the header alone", l.Header.Config, l.Len(), l.Warnings)
	}
}

func TestSignalsStopTheRunThenTheProcess(t *testing.T) {
	cases := []struct {
		name    string
		signals []os.Signal
		wait    time.Duration // between them
		code    int           // exit; -1: none
		says    bool          // the "send again" line
	}{
		{"one signal cancels, leaves the exit to the run, and after a grace says how to quit now",
			[]os.Signal{os.Interrupt}, 0, -1, true},
		{"a second Ctrl-C quits at once with 130", []os.Signal{os.Interrupt, os.Interrupt}, 0, 130, false},
		{"a second SIGTERM quits at once with 143", []os.Signal{syscall.SIGTERM, syscall.SIGTERM}, 0, 143, false},
		{"a slow stop says how to quit now", []os.Signal{os.Interrupt, os.Interrupt}, 100 * time.Millisecond, 130, true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sigs := make(chan os.Signal, 2)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			exited := make(chan int, 1)
			var stderr lockedBuffer // onSignals may still write while the test reads
			done := make(chan struct{})
			go func() {
				defer close(done)
				onSignals(sigs, cancel, 20*time.Millisecond, &stderr, func(c int) { exited <- c })
			}()
			for i, s := range tc.signals {
				if i > 0 {
					time.Sleep(tc.wait)
				}
				sigs <- s
				if i == 0 {
					select {
					case <-ctx.Done():
					case <-time.After(5 * time.Second):
						t.Fatal("the first signal did not cancel the run")
					}
				}
			}
			select {
			case c := <-exited:
				if c != tc.code {
					t.Errorf("exit %d, want %d", c, tc.code)
				}
				<-done
			case <-time.After(200 * time.Millisecond):
				if tc.code != -1 {
					t.Errorf("no exit, want %d", tc.code)
				}
			}
			if said := strings.Contains(stderr.String(), "again"); said != tc.says {
				t.Errorf("stderr %q; want the send-again line: %v", stderr.String(), tc.says)
			}
		})
	}
}

// lockedBuffer is a bytes.Buffer that one goroutine writes while another
// reads.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}
