package trace

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"reflect"
	"strconv"
	"strings"
)

// MaxLine bounds one line of a trace file, so that a file that is not a
// trace cannot make us read gigabytes into memory.
const MaxLine = 16 << 20

// Limits on a header's shape, far above any model's.
const (
	maxExperts = 1 << 16
	maxLayers  = 1 << 12
)

// ReadFile reads a trace in the v1 or v2 format (docs/trace-format.md).
func ReadFile(path string) (*Trace, error) {
	f, err := OpenFile(path)
	if err != nil {
		return nil, fmt.Errorf("trace %w", err)
	}
	defer f.Close()
	return Read(f, path)
}

// header is a v2 trace's first line.
type header struct {
	Format  *string `json:"format"`
	Version int     `json:"version"`
	Experts int     `json:"experts"`
	Layers  []int   `json:"layers"`
	TopK    int     `json:"top_k"`
	Source  string  `json:"source"`
}

// stepLine is every other line: v1 has counts [experts]; v2 has counts
// [layers][experts] or topk_ids [layers][tokens][k].
type stepLine struct {
	Counts  json.RawMessage `json:"counts"`
	TopKIDs json.RawMessage `json:"topk_ids"`
}

// Read reads a v1 or v2 trace from r; name says which file in messages.
// Every error is one line naming the file and the line.
func Read(r io.Reader, name string) (*Trace, error) {
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), MaxLine)
	var t *Trace
	v1 := false
	n := 0
	for sc.Scan() {
		n++
		line := bytes.TrimSpace(sc.Bytes())
		if len(line) == 0 {
			continue
		}
		fail := func(err error) error { return fmt.Errorf("trace %s line %d: %w", name, n, err) }
		if t == nil {
			var h header
			if err := json.Unmarshal(line, &h); err != nil {
				return nil, fail(jsonProblem(err))
			}
			if h.Format != nil {
				var err error
				if t, err = newFromHeader(h); err != nil {
					return nil, fail(err)
				}
				continue
			}
			v1 = true
		}
		var sl stepLine
		if err := json.Unmarshal(line, &sl); err != nil {
			return nil, fail(jsonProblem(err))
		}
		if v1 {
			if sl.Counts == nil {
				return nil, fail(invalid(`neither a trace header {"format":"moetop-trace",...} nor a step {"counts":[...]}`))
			}
			row, err := numbers(sl.Counts, "counts")
			if err != nil {
				return nil, fail(err)
			}
			if t == nil {
				if len(row) == 0 || len(row) > maxExperts {
					return nil, fail(invalid("%d counts; want one per expert, 1..%d", len(row), maxExperts))
				}
				t = New(len(row), 1)
			} else if len(row) != t.Experts {
				return nil, fail(invalid("%d counts, earlier lines have %d", len(row), t.Experts))
			}
			if err := t.Append([][]float64{row}); err != nil {
				return nil, fail(err)
			}
			continue
		}
		rows, err := t.decodeStep(sl)
		if err != nil {
			return nil, fail(err)
		}
		if err := t.Append(rows); err != nil {
			return nil, fail(err)
		}
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("trace %s line %d: %w", name, n+1, invalid("longer than %d MiB; is this a trace?", MaxLine>>20))
		}
		return nil, fmt.Errorf("trace %s line %d: %w", name, n+1, err)
	}
	switch {
	case n == 0:
		return nil, fmt.Errorf("trace %s: %w", name, invalid("empty file"))
	case t == nil:
		return nil, fmt.Errorf("trace %s: %w", name, invalid("only blank lines"))
	case t.Steps() == 0:
		return nil, fmt.Errorf("trace %s: %w", name, invalid("a header but no steps"))
	}
	return t, nil
}

func newFromHeader(h header) (*Trace, error) {
	if *h.Format != Format {
		return nil, invalid("format %q is not %q", *h.Format, Format)
	}
	switch {
	case h.Version > Version:
		return nil, invalid("trace version %d is newer than this moetop reads (1 and 2); upgrade moetop", h.Version)
	case h.Version != Version:
		return nil, invalid("a header must say \"version\": 2, got %d", h.Version)
	case h.Experts <= 0 || h.Experts > maxExperts:
		return nil, invalid("experts %d; want 1..%d", h.Experts, maxExperts)
	case len(h.Layers) == 0 || len(h.Layers) > maxLayers:
		return nil, invalid("layers lists %d layer numbers; want 1..%d", len(h.Layers), maxLayers)
	case len(h.Layers)*h.Experts > MaxValues:
		return nil, invalid("%d layers × %d experts is too large", len(h.Layers), h.Experts)
	}
	t := &Trace{Experts: h.Experts, LayerIDs: h.Layers, TopK: h.TopK, Source: h.Source}
	for i, id := range t.LayerIDs {
		if id < 0 {
			return nil, invalid("layer number %d is negative", id)
		}
		for _, prev := range t.LayerIDs[:i] {
			if prev == id {
				return nil, invalid("layer %d is listed twice", id)
			}
		}
	}
	if t.TopK < 0 || t.TopK > t.Experts {
		return nil, invalid("top_k %d; want 0 (unknown) or 1..%d", t.TopK, t.Experts)
	}
	return t, nil
}

// decodeStep turns a v2 step line into one row of counts per layer.
func (t *Trace) decodeStep(sl stepLine) ([][]float64, error) {
	switch {
	case sl.Counts != nil && sl.TopKIDs != nil:
		return nil, invalid("a step has counts or topk_ids, not both")
	case sl.Counts != nil:
		var raw []json.RawMessage
		if err := json.Unmarshal(sl.Counts, &raw); err != nil {
			return nil, invalid("counts must be a list with one list of numbers per layer")
		}
		if len(raw) != t.Layers() {
			return nil, invalid("counts has %d layers, the header lists %d", len(raw), t.Layers())
		}
		rows := make([][]float64, len(raw))
		for l, r := range raw {
			row, err := numbers(r, fmt.Sprintf("layer %d", t.LayerIDs[l]))
			if err != nil {
				return nil, err
			}
			if len(row) != t.Experts {
				return nil, invalid("layer %d has %d counts, the header says %d experts", t.LayerIDs[l], len(row), t.Experts)
			}
			rows[l] = row
		}
		return rows, nil
	case sl.TopKIDs != nil:
		var ids [][][]json.Number
		if err := json.Unmarshal(sl.TopKIDs, &ids); err != nil {
			return nil, invalid("topk_ids must be a list per layer of a list per token of expert numbers")
		}
		if len(ids) != t.Layers() {
			return nil, invalid("topk_ids has %d layers, the header lists %d", len(ids), t.Layers())
		}
		rows := make([][]float64, len(ids))
		for l, tokens := range ids {
			rows[l] = make([]float64, t.Experts)
			for tok, picks := range tokens {
				for _, p := range picks {
					e, err := strconv.Atoi(p.String())
					// -1 marks an unused slot (SGLang pads with it).
					if err == nil && e == -1 {
						continue
					}
					if err != nil || e < 0 || e >= t.Experts {
						return nil, invalid("layer %d token %d: expert %q; want a whole number in 0..%d (or -1 for none)",
							t.LayerIDs[l], tok, p.String(), t.Experts-1)
					}
					rows[l][e]++
				}
			}
		}
		return rows, nil
	}
	return nil, invalid(`a step needs "counts" or "topk_ids"`)
}

// numbers reads a JSON list of non-negative numbers; what names it in
// messages.
func numbers(raw json.RawMessage, what string) ([]float64, error) {
	var ns []json.Number
	if err := json.Unmarshal(raw, &ns); err != nil {
		return nil, invalid("%s must be a list of numbers", what)
	}
	row := make([]float64, len(ns))
	for i, s := range ns {
		c, err := strconv.ParseFloat(s.String(), 64)
		switch {
		case errors.Is(err, strconv.ErrRange):
			return nil, invalid("%s: count %s is out of range", what, s)
		case err != nil:
			return nil, invalid("%s: %q is not a number", what, s.String())
		case c < 0:
			return nil, invalid("%s: count %s is negative", what, s)
		case c > maxCount:
			return nil, invalid("%s: count %s is too large", what, s)
		}
		row[i] = c
	}
	return row, nil
}

// jsonProblem says in a user's words what is wrong with a line that
// encoding/json refused.
func jsonProblem(err error) error {
	var se *json.SyntaxError
	var te *json.UnmarshalTypeError
	switch {
	case errors.As(err, &se):
		return invalid("not valid JSON (at byte %d of the line)", se.Offset)
	case errors.As(err, &te):
		field := te.Field
		if field == "" {
			return invalid("a line must be a JSON object, not %s", article(te.Value))
		}
		if strings.HasPrefix(te.Value, "number ") {
			return invalid("%s: %s is not %s", field, strings.TrimPrefix(te.Value, "number "), want(te.Type))
		}
		return invalid("%s must be %s, not %s", field, want(te.Type), article(te.Value))
	}
	return invalid("not valid JSON")
}

func want(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int64, reflect.Int32:
		return "a whole number in range"
	case reflect.Float64, reflect.Float32:
		return "a number in range"
	case reflect.String:
		return "a string"
	case reflect.Slice:
		return "a list"
	case reflect.Struct:
		return "an object"
	case reflect.Pointer:
		return want(t.Elem())
	}
	return "a " + t.Kind().String()
}

func article(v string) string {
	switch v {
	case "array":
		return "a list"
	case "object":
		return "an object"
	case "":
		return "that"
	}
	return "a " + v
}
