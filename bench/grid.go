package bench

import (
	"encoding/csv"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// Modern is today's MoE layers, as in the peer script's defaults.
func Modern() []Case {
	return []Case{
		{"seed-max", 65536, 4224, 16896, 8, 3},
		{"mixtral", 8192, 4096, 14336, 8, 2},
		{"qwen3-moe", 8192, 2048, 768, 128, 8},
		{"dsv3", 4096, 7168, 2048, 256, 8},
	}
}

// Report is the founding report's kind of test tuples: sequences × sequence
// length × hidden × top-k, 8 experts, ffn = 4 × hidden.
func Report() []Case {
	var cs []Case
	for _, seqs := range []int{16, 32, 64} {
		for _, l := range []int{512, 1024} {
			for _, h := range []int{512, 1024, 2048, 4224} {
				for _, k := range []int{1, 2, 4, 8} {
					cs = append(cs, Case{fmt.Sprintf("r%dx%d-h%d-k%d", seqs, l, h, k), seqs * l, h, 4 * h, 8, k})
				}
			}
		}
	}
	return cs
}

// Quick keeps a small, representative part of a grid.
func Quick(grid string, cs []Case) []Case {
	var out []Case
	for _, c := range cs {
		switch grid {
		case "report":
			if c.Tokens == 16*512 && c.Hidden == 512 && c.TopK <= 2 {
				out = append(out, c)
			}
		case "modern":
			if c.Name == "mixtral" || c.Name == "qwen3-moe" {
				out = append(out, c)
			}
		default:
			if len(out) < 2 {
				out = append(out, c)
			}
		}
	}
	return out
}

// ParseShape reads NAME:T:H:F:E:K, the peer script's --shape.
func ParseShape(s string) (Case, error) {
	f := strings.Split(s, ":")
	if len(f) != 6 {
		return Case{}, fmt.Errorf("shape %q: want NAME:TOKENS:HIDDEN:FFN:EXPERTS:TOPK", s)
	}
	c := Case{Name: f[0]}
	for i, dst := range []*int{&c.Tokens, &c.Hidden, &c.FFN, &c.Experts, &c.TopK} {
		n, err := strconv.Atoi(f[i+1])
		if err != nil || n <= 0 {
			return Case{}, fmt.Errorf("shape %q: field %d is %q, want a positive integer", s, i+2, f[i+1])
		}
		*dst = n
	}
	return c, nil
}

// LoadGrid reads a user's grid: JSON (a list of cases with the fields of
// Case) or CSV with a header naming name, tokens, hidden, ffn, experts,
// top_k (ffn may be left out: 4 × hidden).
func LoadGrid(path string) ([]Case, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("grid: %w", err)
	}
	var cs []Case
	if strings.EqualFold(filepath.Ext(path), ".json") {
		if err := json.Unmarshal(b, &cs); err != nil {
			return nil, fmt.Errorf("grid %s: %w", path, err)
		}
	} else if cs, err = readCSV(strings.NewReader(string(b))); err != nil {
		return nil, fmt.Errorf("grid %s: %w", path, err)
	}
	if len(cs) == 0 {
		return nil, fmt.Errorf("grid %s: no cases", path)
	}
	for i, c := range cs {
		if c.FFN == 0 {
			cs[i].FFN = 4 * c.Hidden
		}
		if cs[i].Name == "" {
			cs[i].Name = fmt.Sprintf("case%d", i+1)
		}
	}
	return cs, nil
}

func readCSV(r io.Reader) ([]Case, error) {
	rows, err := csv.NewReader(r).ReadAll()
	if err != nil {
		return nil, err
	}
	if len(rows) < 2 {
		return nil, fmt.Errorf("want a header and at least one row")
	}
	col := map[string]int{}
	for i, h := range rows[0] {
		col[strings.ToLower(strings.TrimSpace(h))] = i
	}
	for _, need := range []string{"tokens", "hidden", "experts", "top_k"} {
		if _, ok := col[need]; !ok {
			return nil, fmt.Errorf("header has no %q column", need)
		}
	}
	var cs []Case
	for n, row := range rows[1:] {
		var c Case
		if i, ok := col["name"]; ok {
			c.Name = row[i]
		}
		for name, dst := range map[string]*int{"tokens": &c.Tokens, "hidden": &c.Hidden, "ffn": &c.FFN,
			"experts": &c.Experts, "top_k": &c.TopK} {
			i, ok := col[name]
			if !ok {
				continue
			}
			v, err := strconv.Atoi(strings.TrimSpace(row[i]))
			if err != nil || v <= 0 {
				return nil, fmt.Errorf("row %d: %s %q is not a positive integer", n+2, name, row[i])
			}
			*dst = v
		}
		cs = append(cs, c)
	}
	return cs, nil
}
