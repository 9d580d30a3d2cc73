//go:build unix

package ep

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

func TestReadPlacementRefusesWhatIsNotAFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Skipf("no FIFOs here: %v", err)
	}
	cases := []struct {
		name, path string
	}{
		{"a FIFO nobody writes to", fifo},
		{"a directory", dir},
		{"a device", os.DevNull},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			done := make(chan error, 1)
			go func() { _, err := ReadPlacement(tc.path, 4, 2); done <- err }()
			select {
			case err := <-done:
				if !errors.Is(err, ErrBadPlacement) || !strings.Contains(err.Error(), "not a regular file") {
					t.Fatalf("got %v, want a refusal", err)
				}
				if strings.Contains(err.Error(), "\n") {
					t.Errorf("error spans lines: %q", err)
				}
			case <-time.After(10 * time.Second):
				t.Fatal("reading blocked")
			}
		})
	}
	if _, err := ReadPlacement(filepath.Join(dir, "missing.json"), 4, 2); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("missing file: got %v", err)
	}
}
