package profiler

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"time"
)

// Schema is the log format's name and major version (docs/log-format.md).
// A reader accepts any minor change (new fields are ignored) and refuses a
// newer major version.
const (
	Schema      = "moetop/1"
	SchemaMajor = 1
)

// Header is the first line of a log.
type Header struct {
	Schema  string `json:"schema"`
	Version string `json:"moetop_version"`
	Host    string `json:"host"`
	Device  string `json:"device"`
	Driver  string `json:"driver,omitempty"`
	CUDA    string `json:"cuda,omitempty"`
	CUBLAS  string `json:"cublas,omitempty"`
	Backend string `json:"backend"`
	// BackendReason says why this backend runs (auto's calibration, or
	// why there is no GPU).
	BackendReason string    `json:"backend_reason,omitempty"`
	Config        Config    `json:"config"`
	Start         time.Time `json:"start"`
	// DenseGEMMTFLOPS is a dense GEMM pair of the layer's FLOPs, timed at
	// start on the GPU (0: not measured).
	DenseGEMMTFLOPS float64 `json:"dense_gemm_tflops,omitempty"`
	// Part numbers the files of a rotated recording (0: the first).
	Part int `json:"part,omitempty"`
}

// Line types: the "type" field, first in every line.
const (
	LineHeader = "header"
	LineSample = "sample"
	LineEvent  = "event"
)

type headerLine struct {
	Type string `json:"type"`
	*Header
}

type sampleLine struct {
	Type string `json:"type"`
	*Sample
}

type eventLine struct {
	Type string `json:"type"`
	Step int    `json:"step"`
	Event
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
func (lw *LogWriter) WriteHeader(h Header) error {
	h.Schema = Schema
	return lw.line(headerLine{LineHeader, &h})
}

// WriteSample appends a sample's events, then the sample without them
// (the reader attaches them again).
func (lw *LogWriter) WriteSample(s *Sample) error {
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
