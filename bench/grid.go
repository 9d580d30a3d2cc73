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

	"github.com/moetop/moetop/presets"
)

// Modern is today's MoE layers: the peer script's default shapes (plain
// experts, prefill-sized), then each preset's layer at decode sizes.
func Modern() []Case {
	return append([]Case{
		{Name: "seed-max", Tokens: 65536, Hidden: 4224, FFN: 16896, Experts: 8, TopK: 3},
		{Name: "mixtral", Tokens: 8192, Hidden: 4096, FFN: 14336, Experts: 8, TopK: 2},
		{Name: "qwen3-moe", Tokens: 8192, Hidden: 2048, FFN: 768, Experts: 128, TopK: 8},
		{Name: "dsv3", Tokens: 4096, Hidden: 7168, FFN: 2048, Experts: 256, TopK: 8},
	}, Decode()...)
}

// DecodeTokens are the decode steps the modern grid runs each preset at:
// one sequence, a small batch, and the 128 tokens at which the issue's
// Hugging Face comparison is taken. At these sizes a layer reads its
// active experts' weights and does little else: bound by memory.
var DecodeTokens = []int{1, 32, 128}

// Decode is each preset's routed experts (hidden, ffn, experts, top-k and
// activation; no shared experts, which the peer has no form of) at each
// of DecodeTokens, named MODEL@TOKENS.
func Decode() []Case {
	var cs []Case
	for _, p := range presets.All() {
		for _, t := range DecodeTokens {
			cs = append(cs, Case{Name: fmt.Sprintf("%s@%d", p.Name, t), Tokens: t, Hidden: p.Hidden, FFN: p.FFN,
				Experts: p.Experts, TopK: p.TopK, Act: p.Act})
		}
	}
	return cs
}

// Report is the founding report's kind of test tuples: sequences × sequence
// length × hidden × top-k, 8 experts, ffn = 4 × hidden.
func Report() []Case {
	var cs []Case
	for _, seqs := range []int{16, 32, 64} {
		for _, l := range []int{512, 1024} {
			for _, h := range []int{512, 1024, 2048, 4224} {
				for _, k := range []int{1, 2, 4, 8} {
					cs = append(cs, Case{Name: fmt.Sprintf("r%dx%d-h%d-k%d", seqs, l, h, k), Tokens: seqs * l, Hidden: h,
						FFN: 4 * h, Experts: 8, TopK: k})
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
			// Two prefill shapes and one decode step of a gated layer.
			if c.Name == "mixtral" || c.Name == "qwen3-moe" || c.Name == "qwen3-30b-a3b@128" {
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
// top_k and act (ffn may be left out: 4 × hidden; act too: the run's).
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
		if _, err := cs[i].activation(); err != nil {
			return nil, fmt.Errorf("grid %s: %w", path, err)
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
		if i, ok := col["act"]; ok {
			c.Act = strings.TrimSpace(row[i])
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
