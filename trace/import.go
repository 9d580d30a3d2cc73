package trace

import (
	"fmt"
	"io"
	"path/filepath"
	"sort"
	"strings"
)

// Options tune the importers; the zero value takes every default.
type Options struct {
	// TokensPerStep groups a FLAME-MoE trace's tokens into steps
	// (default 4096).
	TokensPerStep int
	// Experts is the experts per layer of a FLAME-MoE trace (0: the
	// highest expert id seen + 1).
	Experts int
}

// DefaultTokensPerStep is FLAME-MoE's step size when Options leave it 0.
const DefaultTokensPerStep = 4096

// importer reads one kind of dump; files are already opened as regular
// files.
type importer struct {
	what  string // the source format, for `moetop trace import` help
	multi bool   // takes several input files
	read  func(in []input, opt Options) (*Trace, error)
}

// input is an opened input file.
type input struct {
	name string
	r    io.ReaderAt
	size int64
}

var importers = map[string]importer{
	"sglang": {what: "SGLang expert-distribution dump (.pt from torch.save: stat or per_token mode)", read: one(readSGLang)},
	"vllm":   {what: "vLLM EPLB expert_load_window (.pt from torch.save, or .json)", read: one(readVLLM)},
	"eplb":   {what: "DeepSeek EPLB weight[layers, experts] (.csv or .json)", read: one(readEPLB)},
	"flame":  {what: "FLAME-MoE routing trace (.parquet, one file per layer; give several for several layers)", multi: true, read: readFLAME},
}

func one(f func(in input) (*Trace, error)) func([]input, Options) (*Trace, error) {
	return func(in []input, _ Options) (*Trace, error) { return f(in[0]) }
}

// Importers lists the source formats Import reads, with a line about each.
func Importers() [][2]string {
	var out [][2]string
	for name, im := range importers {
		out = append(out, [2]string{name, im.what})
	}
	sort.Slice(out, func(i, j int) bool { return out[i][0] < out[j][0] })
	return out
}

// ImportFiles converts one or more dumps (several only for flame: one per
// layer, in order) to a v2 trace at out.
func ImportFiles(from string, ins []string, out string, opt Options) error {
	t, err := Load(from, ins, opt)
	if err != nil {
		return err
	}
	for _, in := range ins {
		if a, b := filepath.Clean(in), filepath.Clean(out); a == b {
			return fmt.Errorf("import %s: the output %s is also an input", from, out)
		}
	}
	return WriteFile(out, t)
}

// Load reads dumps into a trace without writing it.
func Load(from string, ins []string, opt Options) (*Trace, error) {
	im, ok := importers[from]
	if !ok {
		names := make([]string, 0, len(importers))
		for _, n := range Importers() {
			names = append(names, n[0])
		}
		return nil, fmt.Errorf("import: unknown source %q (want %s)", from, strings.Join(names, ", "))
	}
	if len(ins) == 0 || (len(ins) > 1 && !im.multi) {
		return nil, fmt.Errorf("import %s: want one input file, got %d", from, len(ins))
	}
	if opt.TokensPerStep < 0 || opt.Experts < 0 || opt.Experts > maxExperts {
		return nil, fmt.Errorf("import %s: tokens per step and experts must be ≥ 0 (experts ≤ %d)", from, maxExperts)
	}
	in := make([]input, len(ins))
	for i, name := range ins {
		f, err := OpenFile(name)
		if err != nil {
			return nil, fmt.Errorf("import %s: %w", from, err)
		}
		defer f.Close()
		st, err := f.Stat()
		if err != nil {
			return nil, fmt.Errorf("import %s: stat %s: %w", from, name, err)
		}
		in[i] = input{name: name, r: f, size: st.Size()}
	}
	t, err := im.read(in, opt)
	if err != nil {
		if len(ins) == 1 {
			return nil, fmt.Errorf("import %s %s: %w", from, ins[0], err)
		}
		return nil, fmt.Errorf("import %s: %w", from, err)
	}
	if err := t.Validate(); err != nil {
		return nil, fmt.Errorf("import %s: %w", from, err)
	}
	return t, nil
}

// cube is steps × layers × experts counts as an importer found them, before
// empty steps and layers are dropped.
type cube struct {
	steps, layers, experts int
	vals                   []float64
}

func (c *cube) row(s, l int) []float64 {
	i := (s*c.layers + l) * c.experts
	return c.vals[i : i+c.experts]
}

func zero(r []float64) bool {
	for _, x := range r {
		if x != 0 {
			return false
		}
	}
	return true
}

// toTrace keeps the layers that routed anything (a dump counts every layer
// of the model, dense ones as zeros) and the steps in which each kept layer
// routed something (a ring buffer not yet full holds zero steps). It says
// what it dropped in the trace's Source.
func (c *cube) toTrace(source string) (*Trace, error) {
	for _, v := range c.vals {
		if v < 0 || v != v || v > maxCount {
			return nil, invalid("a count of %g; counts must be finite and ≥ 0", v)
		}
	}
	var layers []int
	for l := 0; l < c.layers; l++ {
		for s := 0; s < c.steps; s++ {
			if !zero(c.row(s, l)) {
				layers = append(layers, l)
				break
			}
		}
	}
	if len(layers) == 0 {
		return nil, invalid("every count is zero: nothing was recorded")
	}
	t := New(c.experts, len(layers))
	copy(t.LayerIDs, layers)
	dropped := 0
	rows := make([][]float64, len(layers))
	for s := 0; s < c.steps; s++ {
		keep := true
		for i, l := range layers {
			rows[i] = c.row(s, l)
			keep = keep && !zero(rows[i])
		}
		if !keep {
			dropped++
			continue
		}
		if err := t.Append(rows); err != nil {
			return nil, err
		}
	}
	if t.Steps() == 0 {
		return nil, invalid("no step routed tokens through every layer")
	}
	t.Source = fmt.Sprintf("%s: %d of %d steps", source, t.Steps(), c.steps)
	if dropped > 0 {
		t.Source += fmt.Sprintf(" (%d empty dropped)", dropped)
	}
	if n := c.layers - len(layers); n > 0 {
		t.Source += fmt.Sprintf(", %d of %d layers (%d that routed nothing dropped)", len(layers), c.layers, n)
	}
	return t, nil
}

// cubeOf checks a tensor is [steps, layers, experts].
func cubeOf(shape []int, vals []float64, what string) (*cube, error) {
	if len(shape) != 3 {
		return nil, invalid("%s has %d dimensions; want 3 [steps, layers, experts]", what, len(shape))
	}
	c := &cube{steps: shape[0], layers: shape[1], experts: shape[2], vals: vals}
	if c.steps == 0 || c.layers == 0 || c.experts == 0 {
		return nil, invalid("%s is empty (shape %v)", what, shape)
	}
	if c.experts > maxExperts || c.layers > maxLayers {
		return nil, invalid("%s has shape %v; at most %d layers and %d experts", what, shape, maxLayers, maxExperts)
	}
	return c, nil
}
