package files

import (
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

func TestOpenRegularRefusesWhatIsNotAFileWithoutBlocking(t *testing.T) {
	dir := t.TempDir()
	fifo := filepath.Join(dir, "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skipf("skipping the FIFO case: mkfifo: %v", err)
	}
	for _, c := range []struct{ path, kind string }{
		{fifo, "a named pipe (FIFO)"},
		{dir, "a directory"},
		{"/dev/zero", "a character device"},
	} {
		done := make(chan error, 1)
		go func() { _, _, err := OpenRegular(c.path); done <- err }()
		select {
		case err := <-done:
			var nr *NotRegularError
			if !errors.As(err, &nr) || nr.Kind != c.kind || !errors.Is(err, ErrNotRegular) {
				t.Errorf("%s: err %v; want it named %s", c.path, err, c.kind)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: the open blocked", c.path)
		}
	}
}

func TestOpenRegularOpensAFileAndPassesOnOthersErrors(t *testing.T) {
	p := filepath.Join(t.TempDir(), "f")
	os.WriteFile(p, []byte("x"), 0o644)
	f, st, err := OpenRegular(p)
	if err != nil || st.Size() != 1 {
		t.Fatalf("a regular file: %v, %v", st, err)
	}
	f.Close()
	if _, _, err := OpenRegular(p + ".none"); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a missing file: %v, want fs.ErrNotExist", err)
	}
}

func TestWriteAtomicWritesWholeOrNotAtAll(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out")
	if err := WriteAtomic(p, func(w io.Writer) error { _, err := io.WriteString(w, "new"); return err }); err != nil {
		t.Fatal(err)
	}
	if st, _ := os.Stat(p); st.Mode().Perm() != 0o644 {
		t.Errorf("mode %v, want 0644: other ranks and users read it", st.Mode().Perm())
	}
	failed := errors.New("half way")
	err := WriteAtomic(p, func(w io.Writer) error { io.WriteString(w, "half"); return failed })
	if b, _ := os.ReadFile(p); !errors.Is(err, failed) || string(b) != "new" {
		t.Errorf("a failed write: err %v, file %q; want the error and the old file whole", err, b)
	}
	if left, _ := filepath.Glob(filepath.Join(dir, ".out.*")); len(left) > 0 {
		t.Errorf("temporary files left: %v", left)
	}
}
