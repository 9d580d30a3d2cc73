package recording

import (
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/moetop/moetop/stream"
)

func TestRecorderChecksEveryPartAtStart(t *testing.T) {
	type file struct {
		name string
		dir  bool
	}
	cases := []struct {
		name     string
		existing []file
		maxBytes int64
		force    bool
		wantErr  string   // "" means it records
		left     []string // what must remain besides the new log
	}{
		{"a part in the way of a rotating run is named", []file{{name: "run.jsonl.1"}}, 4096, false, "run.jsonl.1: file exists", nil},
		{"a later part in the way is named too", []file{{name: "run.jsonl.7"}, {name: "run.jsonl.12"}}, 4096, false, "run.jsonl.7: file exists", nil},
		{"the log itself in the way", []file{{name: "run.jsonl"}, {name: "run.jsonl.1"}}, 4096, false, "run.jsonl: file exists", nil},
		{"a part is no matter to a run that does not rotate", []file{{name: "run.jsonl.1"}}, 0, false, "", []string{"run.jsonl.1"}},
		{"force removes the old parts", []file{{name: "run.jsonl"}, {name: "run.jsonl.1"}, {name: "run.jsonl.2"}, {name: "run.jsonl.10"}}, 4096, true, "", nil},
		{"force removes old parts even without rotation", []file{{name: "run.jsonl.3"}}, 0, true, "", nil},
		{"force leaves files that are not parts", []file{{name: "run.jsonl.1"}, {name: "run.jsonl.01"}, {name: "run.jsonl.-1"}, {name: "run.jsonl.1x"},
			{name: "run.jsonl.bak"}, {name: "xrun.jsonl.1"}}, 4096, true, "", []string{"run.jsonl.01", "run.jsonl.-1", "run.jsonl.1x", "run.jsonl.bak", "xrun.jsonl.1"}},
		{"force does not remove a directory named like a part", []file{{name: "run.jsonl.2", dir: true}}, 4096, true, "run.jsonl.2 a directory", []string{"run.jsonl.2"}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			for _, f := range c.existing {
				p := filepath.Join(dir, f.name)
				if f.dir {
					os.Mkdir(p, 0o755)
				} else {
					os.WriteFile(p, []byte("old\n"), 0o644)
				}
			}
			path := filepath.Join(dir, "run.jsonl")
			r, err := CreateRecorder(path, c.maxBytes, c.force, stream.Header{})
			if c.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), c.wantErr) {
					t.Fatalf("got %v, want an error with %q", err, c.wantErr)
				}
				if strings.Contains(c.wantErr, "file exists") && !errors.Is(err, ErrExists) {
					t.Errorf("%v is not ErrExists", err)
				}
				for _, f := range c.existing {
					if _, err := os.Lstat(filepath.Join(dir, f.name)); err != nil {
						t.Errorf("%s is gone after a refusal", f.name)
					}
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			r.Close()
			entries, _ := os.ReadDir(dir)
			var got []string
			for _, e := range entries {
				if e.Name() != "run.jsonl" {
					got = append(got, e.Name())
				}
			}
			want := map[string]bool{}
			for _, n := range c.left {
				want[n] = true
			}
			if len(got) != len(want) {
				t.Fatalf("left %v, want %v", got, c.left)
			}
			for _, n := range got {
				if !want[n] {
					t.Fatalf("left %v, want %v", got, c.left)
				}
			}
		})
	}
}

// The run of issue 14 stopped at step 98 of 120 when it reached an old
// FILE.1; now it cannot start, and with force it records every step.
func TestForcedRotationRecordsEveryStep(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "run.jsonl")
	for _, n := range []string{"run.jsonl.1", "run.jsonl.2", "run.jsonl.9"} {
		os.WriteFile(filepath.Join(dir, n), []byte("stale\n"), 0o644)
	}
	if _, err := CreateRecorder(path, 8<<10, false, stream.Header{}); !errors.Is(err, ErrExists) {
		t.Fatalf("without force: %v, want ErrExists", err)
	}
	r, err := CreateRecorder(path, 8<<10, true, stream.Header{})
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i < 120; i++ {
		s := richSample(i)
		if err := r.Write(&s); err != nil {
			t.Fatalf("step %d: %v", i, err)
		}
	}
	if err := r.Close(); err != nil {
		t.Fatal(err)
	}
	total := 0
	for part := 0; part < r.Parts(); part++ {
		l, err := OpenLog(PartPath(path, part))
		if err != nil {
			t.Fatal(err)
		}
		total += l.Len()
		l.Close()
	}
	if total != 120 {
		t.Errorf("%d steps in %d parts, want 120", total, r.Parts())
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != r.Parts() {
		var names []string
		for _, e := range entries {
			names = append(names, e.Name())
		}
		t.Errorf("files %v beside a recording of %d parts: a stale part stays", names, r.Parts())
	}
}

func TestRecordPathIsADirectory(t *testing.T) {
	dir := t.TempDir()
	for _, force := range []bool{false, true} {
		for _, p := range []string{dir, dir + "/", filepath.Join(dir, "new") + "/"} {
			err := CheckRecordPath(p, 0, force)
			if !errors.Is(err, ErrIsDir) || !strings.Contains(err.Error(), "is a directory; --record needs a file name") {
				t.Errorf("CheckRecordPath(%q, force %v) = %v, want ErrIsDir", p, force, err)
			}
			if _, err := CreateRecorder(p, 0, force, stream.Header{}); !errors.Is(err, ErrIsDir) {
				t.Errorf("CreateRecorder(%q, force %v) = %v, want ErrIsDir", p, force, err)
			}
		}
	}
}

func TestRecordingToAPipeNothingReads(t *testing.T) {
	fifo := filepath.Join(t.TempDir(), "pipe")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		r, err := CreateRecorder(fifo, 0, true, stream.Header{})
		if err == nil {
			r.Close()
		}
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "named pipe that nothing reads") {
			t.Fatalf("got %v, want a refusal that says nothing reads the pipe", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("CreateRecorder on a FIFO without a reader still blocked after 10 s")
	}
}

// failAfter is a disk that fills up after n bytes.
type failAfter struct{ n int }

func (f *failAfter) Write(b []byte) (int, error) {
	if len(b) > f.n {
		w := f.n
		f.n = 0
		return w, &os.PathError{Op: "write", Path: "run.jsonl", Err: syscall.ENOSPC}
	}
	f.n -= len(b)
	return len(b), nil
}

func TestWriteErrorSaysWhatTheLogHolds(t *testing.T) {
	r := &Recorder{Path: "run.jsonl", lw: NewLogWriter(&failAfter{n: 100 << 10}), lastStep: -1, flushed: -1}
	var err error
	flushedAt := -1
	for i := 0; err == nil && i < 10000; i++ {
		s := richSample(i)
		if err = r.Write(&s); err == nil && i%10 == 0 {
			if err = r.Flush(); err == nil {
				flushedAt = i
			}
		}
	}
	want := "writing run.jsonl: no space left on device; the log holds every step up to "
	if err == nil || !strings.HasPrefix(err.Error(), want) || !strings.HasSuffix(err.Error(), " "+strconv.Itoa(flushedAt)) {
		t.Fatalf("got %v, want %q%d", err, want, flushedAt)
	}
	if !errors.Is(err, syscall.ENOSPC) {
		t.Errorf("%v does not wrap ENOSPC", err)
	}
}

func TestWriteErrorOnDevFull(t *testing.T) {
	if _, err := os.Stat("/dev/full"); err != nil {
		t.Skip("no /dev/full here")
	}
	r, err := CreateRecorder("/dev/full", 0, true, stream.Header{})
	if err != nil {
		t.Fatal(err)
	}
	s := richSample(1)
	if err := r.Write(&s); err != nil {
		t.Fatal(err) // buffered
	}
	err = r.Flush()
	if err == nil || err.Error() != "writing /dev/full: no space left on device; the log holds no step yet" {
		t.Fatalf("flush: %v", err)
	}
	if cerr := r.Close(); cerr == nil {
		t.Error("Close after a full disk succeeded")
	}
}
