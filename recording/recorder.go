package recording

import (
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"syscall"

	"github.com/klauspost/compress/zstd"
	"github.com/moetop/moetop/stream"
)

// ErrExists means a log file is there already and overwriting was not
// asked for.
var ErrExists = errors.New("file exists")

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
	// Written counts samples.
	Written int
}

// CreateRecorder opens the first part and writes the header.
func CreateRecorder(path string, maxBytes int64, force bool, h stream.Header) (*Recorder, error) {
	r := &Recorder{Path: path, MaxBytes: maxBytes, Force: force, header: h}
	if err := r.open(); err != nil {
		return nil, err
	}
	return r, nil
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
	f, err := os.OpenFile(path, flags, 0o644)
	if errors.Is(err, os.ErrExist) {
		return fmt.Errorf("%s: %w", path, ErrExists)
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

// wrap names the file and says plainly when the disk is full.
func (r *Recorder) wrap(err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, syscall.ENOSPC) {
		return fmt.Errorf("record: %s: the disk is full; the log up to the last flush is readable", PartPath(r.Path, r.part))
	}
	return fmt.Errorf("record: %s: %w", PartPath(r.Path, r.part), err)
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
