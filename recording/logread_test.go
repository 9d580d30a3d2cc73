package recording

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// openWithin opens path as a log, failing the test instead of hanging it
// when the open blocks.
func openWithin(t *testing.T, path string) error {
	t.Helper()
	done := make(chan error, 1)
	go func() {
		l, err := OpenLog(path)
		if err == nil {
			l.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		return err
	case <-time.After(10 * time.Second):
		t.Fatalf("OpenLog(%s) still blocked after 10 s", path)
		return nil
	}
}

func TestOpenLogRefusesWhatIsNotALogFile(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatalf("mkfifo: %v", err)
	}
	sock := filepath.Join(dir, "sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatalf("listen: %v", err)
	}
	defer ln.Close()
	link := filepath.Join(dir, "link-to-pipe")
	if err := os.Symlink(fifo, link); err != nil {
		t.Fatal(err)
	}
	cases := []struct{ name, path, want string }{
		{"a named pipe without a writer", fifo, "is a named pipe (FIFO), not a log file"},
		{"a link to a named pipe", link, "is a named pipe (FIFO), not a log file"},
		{"a socket", sock, "is a socket, not a log file"},
		{"/dev/zero", "/dev/zero", "is a character device, not a log file"},
		{"/dev/urandom", "/dev/urandom", "is a character device, not a log file"},
		{"a directory", dir, "is a directory, not a log file"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			if _, err := os.Stat(c.path); err != nil {
				t.Skipf("no %s here: %v", c.path, err)
			}
			err := openWithin(t, c.path)
			var le *LogError
			if !errors.As(err, &le) || !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), c.path+": ") {
				t.Fatalf("got %v, want a LogError %q naming the path", err, c.want)
			}
		})
	}
}

func TestOpenLogOfAFileItCannotRead(t *testing.T) {
	if os.Geteuid() == 0 {
		t.Skip("root reads any file")
	}
	path := filepath.Join(t.TempDir(), "secret.jsonl")
	writeLog(t, path, 1, 0)
	os.Chmod(path, 0)
	var le *LogError
	if err := openWithin(t, path); !errors.As(err, &le) || !strings.Contains(err.Error(), "permission denied") {
		t.Fatalf("got %v, want a LogError saying permission denied", err)
	}
}

func TestOpenLogOfAMissingFileIsNotExist(t *testing.T) {
	err := openWithin(t, filepath.Join(t.TempDir(), "missing.jsonl"))
	if !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("got %v, want os.ErrNotExist", err)
	}
}

func TestAZstdCutBeforeItsFirstBlockSaysSo(t *testing.T) {
	// A zstd frame header and nothing more: a recording killed at once.
	cut := []byte{0x28, 0xb5, 0x2f, 0xfd, 0x04, 0x58}
	path := filepath.Join(t.TempDir(), "cut.jsonl.zst")
	if err := os.WriteFile(path, cut, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err := OpenLog(path)
	var le *LogError
	if !errors.As(err, &le) || !strings.Contains(le.Msg, "before its first complete block") {
		t.Fatalf("err = %v; want a LogError saying the stream ends before its first block", err)
	}
}
