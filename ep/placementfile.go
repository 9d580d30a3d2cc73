package ep

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/moetop/moetop/files"
)

// A placement file is one JSON object mapping expert numbers (as strings, the
// only keys JSON has) to the list of ranks holding that expert:
//
//	{
//	  "0": [0],
//	  "1": [0, 2],
//	  "2": [1]
//	}
//
// Every expert of the layer appears exactly once with at least one rank.

// maxPlacementBytes bounds what the reader takes in: 256 experts replicated on
// 8 ranks is a few KB, so anything near this is not a placement.
const maxPlacementBytes = 4 << 20

// ReadPlacement reads a placement file for a layer of experts experts run over
// ranks ranks. Errors are one line naming the file and wrap ErrBadPlacement.
// A FIFO, device or directory is refused without blocking.
func ReadPlacement(path string, experts, ranks int) (*Placement, error) {
	fail := func(format string, a ...any) error {
		return fmt.Errorf("placement %s: %w", path, badf(format, a...))
	}
	f, _, err := files.OpenRegular(path)
	if errors.Is(err, files.ErrNotRegular) {
		return nil, fail("not a regular file (want a JSON file of expert → ranks)")
	}
	if err != nil {
		return nil, fmt.Errorf("placement: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxPlacementBytes+1))
	if err != nil {
		return nil, fmt.Errorf("placement: read %s: %w", path, err)
	}
	if len(data) > maxPlacementBytes {
		return nil, fail("larger than %d MiB, not a placement", maxPlacementBytes>>20)
	}
	p, err := ParsePlacement(data, experts, ranks)
	if err != nil {
		return nil, fmt.Errorf("placement %s: %w", path, err)
	}
	return p, nil
}

// ParsePlacement reads a placement file's contents (see ReadPlacement).
func ParsePlacement(data []byte, experts, ranks int) (*Placement, error) {
	bad := badf
	if experts < 1 || ranks < 1 {
		return nil, bad("cannot place %d experts over %d ranks", experts, ranks)
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	if tok, err := dec.Token(); err != nil || tok != json.Delim('{') {
		return nil, bad("not a JSON object of expert → ranks (like {\"0\": [0], \"1\": [1]})")
	}
	rep := make([][]int, experts)
	seen := make([]bool, experts)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, bad("not valid JSON: %s", jsonWhy(err))
		}
		key, ok := tok.(string)
		if !ok {
			return nil, bad("not valid JSON: an object key must be a string")
		}
		e, err := strconv.Atoi(key)
		if err != nil {
			return nil, bad("%q is not an expert number", key)
		}
		if e < 0 || e >= experts {
			return nil, bad("expert %d is not in the layer (it has %d experts, 0–%d)", e, experts, experts-1)
		}
		if seen[e] {
			return nil, bad("expert %d appears twice", e)
		}
		seen[e] = true
		var rs []int
		if err := dec.Decode(&rs); err != nil {
			var se *json.SyntaxError
			if errors.As(err, &se) || errors.Is(err, io.ErrUnexpectedEOF) {
				return nil, bad("not valid JSON: %s", jsonWhy(err))
			}
			return nil, bad("expert %d: want a list of rank numbers like [0, 2]", e)
		}
		if len(rs) == 0 {
			return nil, bad("expert %d has no rank", e)
		}
		rep[e] = rs
	}
	if _, err := dec.Token(); err != nil {
		return nil, bad("not valid JSON: %s", jsonWhy(err))
	}
	if _, err := dec.Token(); err != io.EOF {
		return nil, bad("text after the JSON object")
	}
	for e, ok := range seen {
		if !ok {
			return nil, bad("expert %d has no rank (every expert 0–%d needs one)", e, experts-1)
		}
	}
	p, err := NewPlacement(ranks, rep)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// jsonWhy is the decoder's reason without its "json: " prefix, with the byte
// offset when the decoder knows it.
func jsonWhy(err error) string {
	var se *json.SyntaxError
	if errors.As(err, &se) {
		return fmt.Sprintf("%s at byte %d", strings.TrimPrefix(se.Error(), "json: "), se.Offset)
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
		return "it ends early"
	}
	return strings.TrimPrefix(err.Error(), "json: ")
}

// WritePlacement writes p as a placement file, experts in numeric order, one
// per line so that a diff of two placements reads expert by expert.
func WritePlacement(w io.Writer, p *Placement) error {
	bw := bufio.NewWriter(w)
	bw.WriteString("{\n")
	for e, rs := range p.replicas {
		fmt.Fprintf(bw, "  %q: [", strconv.Itoa(e))
		for i, r := range rs {
			if i > 0 {
				bw.WriteString(", ")
			}
			bw.WriteString(strconv.Itoa(r))
		}
		bw.WriteString("]")
		if e < len(p.replicas)-1 {
			bw.WriteString(",")
		}
		bw.WriteString("\n")
	}
	bw.WriteString("}\n")
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("write placement: %w", err)
	}
	return nil
}

// WritePlacementFile writes p to path through a temporary file in the same
// folder and a rename, so that a reader never sees half a placement.
func WritePlacementFile(path string, p *Placement) error {
	if err := files.WriteAtomic(path, func(w io.Writer) error { return WritePlacement(w, p) }); err != nil {
		return fmt.Errorf("write placement: %w", err)
	}
	return nil
}
