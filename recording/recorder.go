package recording

import (
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"github.com/moetop/moetop/files"
	"github.com/moetop/moetop/stream"
)

// ErrExists means a log file, or a part of a rotated one, is there
// already and overwriting was not asked for.
var ErrExists = errors.New("file exists")

// ErrIsDir means the path given for a log is a directory.
var ErrIsDir = errors.New("is a directory")

// Recorder writes a log to disk: zstd-compressed when the name ends in
// .zst, and rotated to FILE.1, FILE.2 … once a part reaches MaxBytes (each
// part starts with the header, so each is a log on its own).
type Recorder struct {
	Path     string
	MaxBytes int64 // 0: no rotation
	Force    bool  // overwrite existing files

	header stream.Header
	part   int
	file   *os.File
	zw     *zstd.Encoder
	lw     *LogWriter
	total  int64
	// lastStep is the step of the last sample written, flushed that of
	// the last one a flush made readable (-1: none), for error messages.
	lastStep, flushed int
	// Written counts samples.
	Written int
}

// CreateRecorder checks the path (CheckRecordPath), removes the parts of an
// earlier recording when force is set, opens the first part and writes
// the header.
func CreateRecorder(path string, maxBytes int64, force bool, h stream.Header) (*Recorder, error) {
	if err := CheckRecordPath(path, maxBytes, force); err != nil {
		return nil, err
	}
	if force {
		if err := removeParts(path); err != nil {
			return nil, err
		}
	}
	r := &Recorder{Path: path, MaxBytes: maxBytes, Force: force, header: h, lastStep: -1, flushed: -1}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
}

// CheckRecordPath says, before a run starts, whether a recording can go to
// path: not a directory; without force, no file there and, when it will
// rotate (maxBytes > 0), no FILE.N part of an earlier recording that the
// run would reach only later; with force, every old part it would remove
// is a regular file. It changes nothing. Errors wrap ErrIsDir or ErrExists
// and name the file.
func CheckRecordPath(path string, maxBytes int64, force bool) error {
	if path == "" {
		return nil
	}
	if st, err := os.Stat(path); (err == nil && st.IsDir()) || strings.HasSuffix(path, string(filepath.Separator)) {
		return fmt.Errorf("%s %w; --record needs a file name, such as %s", path, ErrIsDir, filepath.Join(path, "run.jsonl"))
	}
	parts := oldParts(path)
	if force {
		for _, p := range parts {
			if st, err := os.Lstat(p); err == nil && !st.Mode().IsRegular() {
				return fmt.Errorf("%s %s; it is not a part of an earlier recording that --force may remove: move it, or choose another --record file",
					p, files.Kind(st.Mode()))
			}
		}
		return nil
	}
	if _, err := os.Lstat(path); err == nil {
		return fmt.Errorf("%s: %w", path, ErrExists)
	}
	if maxBytes > 0 && len(parts) > 0 {
		return fmt.Errorf("%s: %w (a part of an earlier recording, which rotation would overwrite)", parts[0], ErrExists)
	}
	return nil
}

// oldParts lists the FILE.N (N ≥ 1) beside path, in order of N.
func oldParts(path string) []string {
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		return nil // the folder is missing or unreadable: creating the log says so
	}
	base := filepath.Base(path) + "."
	var ns []int
	for _, e := range entries {
		suffix, ok := strings.CutPrefix(e.Name(), base)
		if !ok {
			continue
		}
		// Only the names PartPath makes: 1, 2 …, no sign or leading zero.
		if n, err := strconv.Atoi(suffix); err == nil && n >= 1 && strconv.Itoa(n) == suffix {
			ns = append(ns, n)
		}
	}
	slices.Sort(ns)
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = PartPath(path, n)
	}
	return parts
}

// removeParts removes the parts of an earlier recording at path, so that
// none stays beside the new log as if it went on from it. It removes only
// regular files named as PartPath names them.
func removeParts(path string) error {
	for _, p := range oldParts(path) {
		st, err := os.Lstat(p)
		if err != nil || !st.Mode().IsRegular() {
			continue // gone meanwhile, or not ours (CheckRecordPath refused it)
		}
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			return fmt.Errorf("remove %s, a part of an earlier recording: %w", p, err)
		}
	}
	return nil
}

// PartPath is the file of part n: the path itself, then path.1, path.2 …
func PartPath(path string, n int) string {
	if n == 0 {
		return path
	}
	return fmt.Sprintf("%s.%d", path, n)
}

func (r *Recorder) open() error {
	path := PartPath(r.Path, r.part)
	flags := os.O_WRONLY | os.O_CREATE | os.O_EXCL
	if r.Force {
		flags = os.O_WRONLY | os.O_CREATE | os.O_TRUNC
	}
	// O_NONBLOCK: a named pipe with no reader fails at once (ENXIO)
	// instead of holding the open, deaf to signals; it changes nothing for
	// a regular file, and Go waits on a pipe's writes itself.
	f, err := os.OpenFile(path, flags|syscall.O_NONBLOCK, 0o644)
	switch {
	case errors.Is(err, os.ErrExist):
		return fmt.Errorf("%s: %w", path, ErrExists)
	case errors.Is(err, syscall.EISDIR):
		return fmt.Errorf("%s %w; --record needs a file name", path, ErrIsDir)
	case errors.Is(err, syscall.ENXIO):
		return fmt.Errorf("%s is a named pipe that nothing reads; start its reader first", path)
	}
	if err != nil {
		return fmt.Errorf("record: %w", err)
	}
	r.file = f
	var w io.Writer = f
	if strings.HasSuffix(r.Path, ".zst") {
		if r.zw, err = zstd.NewWriter(f, zstd.WithEncoderLevel(zstd.SpeedFastest)); err != nil {
			f.Close()
			return fmt.Errorf("record: zstd: %w", err)
		}
		w = r.zw
	}
	r.lw = NewLogWriter(w)
	h := r.header
	h.Part = r.part
	return r.wrap(r.lw.WriteHeader(h))
}

// wrap says in a person's words what failed and what the log still holds:
// "writing run.jsonl: no space left on device; the log holds every step up
// to 1234". The cause stays in the chain (errors.Is(err, syscall.ENOSPC)).
func (r *Recorder) wrap(err error) error {
	if err == nil {
		return nil
	}
	cause := err
	for u := errors.Unwrap(cause); u != nil; u = errors.Unwrap(cause) {
		cause = u // the OS's words, not the layers' that passed them on
	}
	held := "no step yet"
	if r.flushed >= 0 {
		held = fmt.Sprintf("every step up to %d", r.flushed)
	}
	return fmt.Errorf("writing %s: %w; the log holds %s", PartPath(r.Path, r.part), cause, held)
}

// Write appends a sample, rotating first when the part is full.
func (r *Recorder) Write(s *stream.Sample) error {
	if r.MaxBytes > 0 && r.lw.Bytes() >= r.MaxBytes {
		if err := r.closePart(); err != nil {
			return err
		}
		r.part++
		if err := r.open(); err != nil {
			return err
		}
	}
	if err := r.lw.WriteSample(s); err != nil {
		return r.wrap(err)
	}
	r.Written++
	r.lastStep = s.Step
	return nil
}

// Flush makes everything written so far readable: buffered lines reach
// the file, and a zstd block is closed.
func (r *Recorder) Flush() error {
	if err := r.lw.Flush(); err != nil {
		return r.wrap(err)
	}
	if r.zw != nil {
		if err := r.zw.Flush(); err != nil {
			return r.wrap(err)
		}
	}
	r.flushed = r.lastStep
	return nil
}

// Bytes is what was written in all parts, before compression.
func (r *Recorder) Bytes() int64 { return r.total + r.lw.Bytes() }

// Parts is how many files the recording has so far.
func (r *Recorder) Parts() int { return r.part + 1 }

func (r *Recorder) closePart() error {
	err := r.Flush()
	if r.zw != nil {
		if cerr := r.zw.Close(); err == nil && cerr != nil {
			err = r.wrap(cerr)
		}
	}
	if serr := r.file.Sync(); err == nil && serr != nil && !errors.Is(serr, syscall.EINVAL) {
		err = r.wrap(serr)
	}
	if cerr := r.file.Close(); err == nil && cerr != nil {
		err = r.wrap(cerr)
	}
	r.total += r.lw.Bytes()
	return err
}

// Close flushes, ends the zstd frame and closes the file.
func (r *Recorder) Close() error { return r.closePart() }
