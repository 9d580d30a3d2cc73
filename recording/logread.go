package recording

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/moetop/moetop/files"
	"github.com/moetop/moetop/stream"
)

// MaxLineBytes bounds one log line; a longer one means the file is not a
// moetop log (or is damaged), and reading stops with an error.
const MaxLineBytes = 16 << 20

// LogError is a log file that cannot be read at all: empty, not a moetop
// log, from a newer moetop, or with a line over MaxLineBytes.
type LogError struct {
	Path string
	Msg  string
}

func (e *LogError) Error() string { return e.Path + ": " + e.Msg }

var zstdMagic = []byte{0x28, 0xb5, 0x2f, 0xfd}

// span is where one step's lines are: its event lines, then its sample.
type span struct{ start, end int64 }

// Log is an opened log: its header and an index of where each sample is,
// built in one pass, so that any sample can be read without the others.
type Log struct {
	Header stream.Header
	Path   string
	// major is the header's schema major version: moetop/1 lines differ.
	major int
	// Warnings say what is wrong with the log as a whole (a cut-off zstd
	// stream); lines skipped are in Skips.
	Warnings []string
	// Skipped counts lines skipped while indexing, and Skips says why:
	// lines that cannot be read, and samples whose numbers cannot be real
	// (see validate).
	Skipped int
	Skips   []SkipReason

	r      io.ReaderAt
	size   int64
	closer func() error
	temp   string
	spans  []span
}

// OpenLog indexes a log file. A .zst log (recognised by its magic
// number, not its name) is decompressed once to a temporary file. What is
// not a regular file (a directory, a named pipe, a socket, a device such as
// /dev/zero) is refused with a LogError that says what it is.
func OpenLog(path string) (*Log, error) {
	f, st, err := openRegular(path)
	if err != nil {
		return nil, err
	}
	return newLog(path, f, st.Size(), f.Close)
}

// openRegular opens path if it is a regular file, without blocking
// (files.OpenRegular), and says in a LogError what it is when it is not.
func openRegular(path string) (*os.File, os.FileInfo, error) {
	f, st, err := files.OpenRegular(path)
	var nr *files.NotRegularError
	switch {
	case errors.As(err, &nr):
		return nil, nil, &LogError{path, "is " + nr.Kind + ", not a log file"}
	case errors.Is(err, os.ErrPermission):
		return nil, nil, &LogError{path, "cannot be read: permission denied"}
	case err != nil:
		return nil, nil, fmt.Errorf("open log: %w", err)
	}
	return f, st, nil
}

// ReadLog indexes a log held in memory (name is for messages).
func ReadLog(name string, b []byte) (*Log, error) {
	return newLog(name, bytes.NewReader(b), int64(len(b)), func() error { return nil })
}

func newLog(path string, r io.ReaderAt, size int64, closer func() error) (*Log, error) {
	l := &Log{Path: path, r: r, size: size, closer: closer}
	magic := make([]byte, 4)
	n, _ := r.ReadAt(magic, 0)
	if n == 0 {
		l.Close()
		return nil, &LogError{path, "the file is empty; it is not a moetop log"}
	}
	if bytes.Equal(magic[:n], zstdMagic) {
		if err := l.decompress(); err != nil {
			l.Close()
			return nil, err
		}
	}
	if err := l.index(); err != nil {
		l.Close()
		return nil, err
	}
	return l, nil
}

func (l *Log) reader() io.Reader { return io.NewSectionReader(l.r, 0, l.size) }

func (l *Log) decompress() error {
	zr, err := zstd.NewReader(l.reader(), zstd.WithDecoderMaxWindow(128<<20), zstd.WithDecoderConcurrency(1))
	if err != nil {
		return &LogError{l.Path, "bad zstd stream: " + err.Error()}
	}
	defer zr.Close()
	tmp, err := os.CreateTemp("", "moetop-log-*.jsonl")
	if err != nil {
		return fmt.Errorf("decompress log: %w", err)
	}
	l.temp = tmp.Name()
	n, err := io.Copy(tmp, zr)
	if err != nil {
		if errors.Is(err, io.ErrUnexpectedEOF) || strings.Contains(err.Error(), "unexpected EOF") {
			l.Warnings = append(l.Warnings, "the zstd stream ends early (was the recording killed?); read up to its last complete block")
		} else {
			tmp.Close()
			return &LogError{l.Path, "bad zstd stream: " + err.Error()}
		}
	}
	l.closer()
	l.r, l.size, l.closer = tmp, n, tmp.Close
	return nil
}

// lines reads r line by line, calling fn with each line (without its
// newline), its offset, and whether it ended in a newline.
func lines(r io.Reader, path string, fn func(line []byte, off int64, complete bool) error) error {
	br := bufio.NewReaderSize(r, 64<<10)
	var off int64
	var long []byte
	for {
		chunk, err := br.ReadSlice('\n')
		if errors.Is(err, bufio.ErrBufferFull) {
			long = append(long, chunk...)
			if len(long) > MaxLineBytes {
				return &LogError{path, fmt.Sprintf("a line at byte %d is longer than 16 MiB; this is not a moetop log", off)}
			}
			continue
		}
		line := chunk
		if long != nil {
			line = append(long, chunk...)
			long = nil
		}
		if len(line) > MaxLineBytes {
			return &LogError{path, fmt.Sprintf("a line at byte %d is longer than 16 MiB; this is not a moetop log", off)}
		}
		complete := len(line) > 0 && line[len(line)-1] == '\n'
		if len(line) > 0 {
			if ferr := fn(bytes.TrimRight(line, "\r\n"), off, complete); ferr != nil {
				return ferr
			}
		}
		off += int64(len(line))
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return fmt.Errorf("read log: %w", err)
		}
	}
}

var (
	samplePrefix = []byte(`{"type":"sample"`)
	eventPrefix  = []byte(`{"type":"event"`)
)

// schemaMajor is the major version of a "moetop/N[.M]" schema, or 0.
func schemaMajor(schema string) int {
	n, err := strconv.Atoi(strings.SplitN(strings.TrimPrefix(schema, "moetop/"), ".", 2)[0])
	if err != nil || !strings.HasPrefix(schema, "moetop/") {
		return 0
	}
	return n
}

// ParseHeader reads and checks a log's first line.
func ParseHeader(path string, line []byte) (stream.Header, error) {
	var h struct {
		Type string `json:"type"`
		stream.Header
	}
	if err := json.Unmarshal(line, &h); err != nil || h.Type != LineHeader || !strings.HasPrefix(h.Schema, "moetop/") {
		return stream.Header{}, &LogError{path, "the first line is not a moetop header; this is not a moetop log"}
	}
	major := schemaMajor(h.Schema)
	if major <= 0 {
		return stream.Header{}, &LogError{path, fmt.Sprintf("unknown schema %q", h.Schema)}
	}
	if major > SchemaMajor {
		return stream.Header{}, &LogError{path, fmt.Sprintf("written by a newer moetop (schema %s; this one reads %s): upgrade moetop to read it", h.Schema, Schema)}
	}
	return h.Header, nil
}

// SkipReason counts the lines of a log skipped for one reason.
type SkipReason struct {
	Reason string `json:"reason"`
	Lines  int    `json:"lines"`
	// FirstLine is the first such line's number (the header is line 1).
	FirstLine int `json:"first_line"`
}

// skip counts a skipped line.
func (l *Log) skip(reason string, line int) {
	l.Skipped++
	for i := range l.Skips {
		if l.Skips[i].Reason == reason {
			l.Skips[i].Lines++
			return
		}
	}
	l.Skips = append(l.Skips, SkipReason{reason, 1, line})
}

func (l *Log) index() error {
	header := false
	err := lines(l.reader(), l.Path, func(line []byte, _ int64, _ bool) error {
		h, err := ParseHeader(l.Path, line)
		l.Header, l.major = h, schemaMajor(h.Schema)
		header = true
		return errStop{err}
	})
	var stop errStop
	if errors.As(err, &stop) {
		err = stop.err
	}
	if err != nil {
		return err
	}
	if !header {
		if l.temp != "" { // a .zst whose stream held no complete block
			return &LogError{l.Path, "the zstd stream ends before its first complete block (was the recording killed at once?); there is nothing to read"}
		}
		return &LogError{l.Path, "the file is empty; it is not a moetop log"}
	}
	return l.walk(func(_ stream.Sample, start, end int64) error {
		l.spans = append(l.spans, span{start, end})
		return nil
	}, l.skip)
}

// errStop ends a read of lines early, carrying the caller's error.
type errStop struct{ err error }

func (e errStop) Error() string { return "stop" }

// Len is the number of samples.
func (l *Log) Len() int { return len(l.spans) }

// Sample reads sample i with its events.
func (l *Log) Sample(i int) (stream.Sample, error) {
	if i < 0 || i >= len(l.spans) {
		return stream.Sample{}, fmt.Errorf("sample %d of %d", i, len(l.spans))
	}
	sp := l.spans[i]
	buf := make([]byte, sp.end-sp.start)
	n, err := l.r.ReadAt(buf, sp.start)
	if err != nil && !(errors.Is(err, io.EOF) && n > 0) {
		return stream.Sample{}, fmt.Errorf("read sample %d: %w", i, err)
	}
	return parseGroup(buf[:n], l.major)
}

// parseGroup parses the lines walk found for one sample: event lines,
// then the sample line. It skips what walk skipped (an unreadable event
// line, a line of another type) and rejects what validate rejects.
func parseGroup(b []byte, major int) (stream.Sample, error) {
	ls := bytes.Split(bytes.TrimRight(b, "\r\n"), []byte("\n"))
	var events []stream.Event
	for _, line := range ls[:len(ls)-1] {
		var e eventLine
		if bytes.HasPrefix(line, eventPrefix) && json.Unmarshal(line, &e) == nil && validateEvent(e.Event) == nil {
			events = append(events, e.Event)
		}
	}
	s, err := decodeSample(ls[len(ls)-1], major)
	if err != nil {
		return stream.Sample{}, fmt.Errorf("corrupt sample line: %w", err)
	}
	s.Events = events
	if err := validate(s); err != nil {
		return stream.Sample{}, fmt.Errorf("sample: %w", err)
	}
	return s, nil
}

// Each reads every sample in order, once, skipping the lines the index
// skipped (Skips says why) and returning how many.
func (l *Log) Each(fn func(i int, s stream.Sample) error) (corrupt int, err error) {
	i := 0
	err = l.walk(func(s stream.Sample, _, _ int64) error {
		i++
		return fn(i-1, s)
	}, func(string, int) { corrupt++ })
	return corrupt, err
}

// Close releases the file (and the decompressed copy).
func (l *Log) Close() error {
	err := l.closer()
	if l.temp != "" {
		os.Remove(l.temp)
	}
	return err
}
