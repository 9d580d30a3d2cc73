package trace

import (
	"bytes"
	"encoding/csv"
	"encoding/json"
	"errors"
	"io"
	"path/filepath"
	"strconv"
	"strings"
)

// DeepSeek's EPLB (deepseek-ai/EPLB, eplb.rebalance_experts) takes
// weight[layers, logical experts], the load of each expert of each MoE
// layer over some window. moetop reads it as one step, from
//
//   - CSV: one row per layer, one number per expert; a first row that is
//     not all numbers is a header and is skipped; or
//   - JSON: {"weight": [[...], ...]} or the bare list of lists.

// maxEPLB bounds an EPLB file: one step of at most 4096 layers of 65536
// experts is far less.
const maxEPLB = 256 << 20

func readEPLB(in input) (*Trace, error) {
	if in.size > maxEPLB {
		return nil, invalid("%d MiB is too large for an EPLB weight file", in.size>>20)
	}
	b, err := io.ReadAll(io.NewSectionReader(in.r, 0, in.size))
	if err != nil {
		return nil, err
	}
	t := bytes.TrimSpace(b)
	if len(t) == 0 {
		return nil, invalid("empty file")
	}
	var rows [][]float64
	if t[0] == '{' || t[0] == '[' {
		rows, err = eplbJSON(t)
	} else {
		rows, err = eplbCSV(b)
	}
	if err != nil {
		return nil, err
	}
	shape, vals, err := flatten2(rows, "weight")
	if err != nil {
		return nil, err
	}
	c, err := cubeOf([]int{1, shape[0], shape[1]}, vals, "weight")
	if err != nil {
		return nil, err
	}
	return c.toTrace("eplb weight " + filepath.Base(in.name))
}

func eplbJSON(b []byte) ([][]float64, error) {
	if b[0] == '[' {
		var rows [][]float64
		if err := json.Unmarshal(b, &rows); err != nil {
			return nil, jsonProblem(err)
		}
		return rows, nil
	}
	var doc struct {
		Weight [][]float64 `json:"weight"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		return nil, jsonProblem(err)
	}
	if doc.Weight == nil {
		return nil, invalid(`no "weight" list of lists in the JSON object`)
	}
	return doc.Weight, nil
}

func eplbCSV(b []byte) ([][]float64, error) {
	r := csv.NewReader(bytes.NewReader(b))
	r.FieldsPerRecord = -1 // ragged rows get our own message
	r.TrimLeadingSpace = true
	r.ReuseRecord = true
	var rows [][]float64
	for first := true; ; first = false {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			var pe *csv.ParseError
			if errors.As(err, &pe) {
				return nil, invalid("line %d: %s", pe.Line, csvProblem(pe.Err))
			}
			return nil, err
		}
		line, _ := r.FieldPos(0) // a record read without error has a field
		row := make([]float64, len(rec))
		header := false
		for i, f := range rec {
			v, err := strconv.ParseFloat(strings.TrimSpace(f), 64)
			switch {
			case errors.Is(err, strconv.ErrRange):
				return nil, invalid("line %d column %d: %s is out of range", line, i+1, f)
			case err != nil && first:
				header = true
			case err != nil:
				return nil, invalid("line %d column %d: %q is not a number", line, i+1, f)
			case v < 0:
				return nil, invalid("line %d column %d: load %s is negative", line, i+1, f)
			}
			row[i] = v
		}
		if header {
			continue
		}
		if len(rows) > 0 && len(row) != len(rows[0]) {
			return nil, invalid("line %d has %d experts, the first layer has %d", line, len(row), len(rows[0]))
		}
		rows = append(rows, row)
	}
	if len(rows) == 0 {
		return nil, invalid("no rows of numbers")
	}
	return rows, nil
}

func csvProblem(err error) string {
	switch {
	case errors.Is(err, csv.ErrBareQuote):
		return `a " inside a field that is not quoted`
	case errors.Is(err, csv.ErrQuote):
		return `a quoted field is not closed`
	}
	return "not valid CSV"
}
