package recording

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"

	"github.com/moetop/moetop/stream"
)

// Schema is the log format's name and major version (docs/log-format.md).
// A reader accepts any minor change (new fields are ignored), reads
// moetop/1 logs too, and refuses a newer major version.
const (
	Schema      = "moetop/2"
	SchemaMajor = 2
)

// Line types: the "type" field, first in every line.
const (
	LineHeader = "header"
	LineSample = "sample"
	LineEvent  = "event"
)

type headerLine struct {
	Type string `json:"type"`
	*stream.Header
}

type sampleLine struct {
	Type string `json:"type"`
	*stream.Sample
}

type eventLine struct {
	Type string `json:"type"`
	Step int    `json:"step"`
	stream.Event
}

// LogWriter writes the JSON Lines log: a header, then per step its events
// (one line each) and its sample. It buffers; Flush makes what was written
// so far a valid log.
type LogWriter struct {
	w *bufio.Writer
	n int64 // bytes written
}

// NewLogWriter writes to w.
func NewLogWriter(w io.Writer) *LogWriter {
	return &LogWriter{w: bufio.NewWriterSize(w, 64<<10)}
}

func (lw *LogWriter) line(v any) error {
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("log: encode: %w", err)
	}
	b = append(b, '\n')
	n, err := lw.w.Write(b)
	lw.n += int64(n)
	if err != nil {
		return fmt.Errorf("log: write: %w", err)
	}
	return nil
}

// WriteHeader writes the header; call it once, first.
func (lw *LogWriter) WriteHeader(h stream.Header) error {
	h.Schema = Schema
	return lw.line(headerLine{LineHeader, &h})
}

// WriteSample appends a sample's events, then the sample without them
// (the reader attaches them again).
func (lw *LogWriter) WriteSample(s *stream.Sample) error {
	for _, e := range s.Events {
		if err := lw.line(eventLine{LineEvent, s.Step, e}); err != nil {
			return err
		}
	}
	c := *s
	c.Events = nil
	return lw.line(sampleLine{LineSample, &c})
}

// Flush pushes buffered lines to the underlying writer.
func (lw *LogWriter) Flush() error {
	if err := lw.w.Flush(); err != nil {
		return fmt.Errorf("log: flush: %w", err)
	}
	return nil
}

// Bytes is how many bytes were written so far (before compression).
func (lw *LogWriter) Bytes() int64 { return lw.n }
