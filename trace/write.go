package trace

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"strconv"

	"github.com/moetop/moetop/files"
)

// Write writes t in the v2 format: a header line, then one line of counts
// per step.
func Write(w io.Writer, t *Trace) error {
	if err := t.Validate(); err != nil {
		return err
	}
	format := Format
	h, err := json.Marshal(header{Format: &format, Version: Version, Experts: t.Experts,
		Layers: t.LayerIDs, TopK: t.TopK, Source: t.Source})
	if err != nil {
		return fmt.Errorf("trace header: %w", err)
	}
	bw := bufio.NewWriter(w)
	bw.Write(h)
	bw.WriteByte('\n')
	var b []byte
	for s := range t.Steps() {
		b = append(b[:0], `{"counts":[`...)
		for l := range t.Layers() {
			if l > 0 {
				b = append(b, ',')
			}
			b = append(b, '[')
			for e, c := range t.At(s, l) {
				if e > 0 {
					b = append(b, ',')
				}
				b = strconv.AppendFloat(b, c, 'g', -1, 64)
			}
			b = append(b, ']')
		}
		b = append(b, "]}\n"...)
		if _, err := bw.Write(b); err != nil {
			return fmt.Errorf("write trace: %w", err)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write trace: %w", err)
	}
	return nil
}

// WriteFile writes t to path through a temporary file beside it, so that a
// failed write never leaves half a trace under the final name.
func WriteFile(path string, t *Trace) error {
	return files.WriteAtomic(path, func(w io.Writer) error { return Write(w, t) })
}
