package trace

import (
	"fmt"
	"io"
	"path/filepath"

	"github.com/parquet-go/parquet-go"
)

// FLAME-MoE (CMU) publishes routing traces as parquet, one file per
// (checkpoint, layer), a row per token:
//
//	indices  list<int16>   the top-k experts the token picked (k = 6 or 8)
//	scores   list<float16> their router weights (not used here)
//
// moetop takes only indices. The tokens, in file order, are cut into steps
// of Options.TokensPerStep (the last step may be shorter); each step's
// counts are how often each expert was picked. Several files are several
// layers, in the order given; they must hold the same number of tokens.

func readFLAME(in []input, opt Options) (*Trace, error) {
	per := opt.TokensPerStep
	if per == 0 {
		per = DefaultTokensPerStep
	}
	var layers [][][]float64 // [layer][step][expert], rows as long as that layer's highest id
	tokens := make([]int64, len(in))
	experts, topK := opt.Experts, 0
	for i, f := range in {
		steps, n, maxID, k, err := flameLayer(f, per, opt.Experts)
		if err != nil {
			if len(in) > 1 {
				return nil, fmt.Errorf("%s: %w", f.name, err)
			}
			return nil, err
		}
		if i > 0 && n != tokens[0] {
			return nil, invalid("%s has %d tokens, %s has %d; the layers of a trace must see the same tokens",
				f.name, n, in[0].name, tokens[0])
		}
		tokens[i] = n
		layers = append(layers, steps)
		topK = max(topK, k)
		if opt.Experts == 0 {
			experts = max(experts, maxID+1)
		}
	}
	steps := len(layers[0])
	if int64(steps)*int64(len(layers))*int64(experts) > MaxValues {
		return nil, invalid("%d steps × %d layers × %d experts is too large; use more tokens per step", steps, len(layers), experts)
	}
	c := &cube{steps: steps, layers: len(layers), experts: experts, vals: make([]float64, steps*len(layers)*experts)}
	for l, ls := range layers {
		for s, row := range ls {
			copy(c.row(s, l), row)
		}
	}
	name := filepath.Base(in[0].name)
	if len(in) > 1 {
		name = fmt.Sprintf("%s and %d more", name, len(in)-1)
	}
	t, err := c.toTrace(fmt.Sprintf("flame %s, %d tokens a step", name, per))
	if err != nil {
		return nil, err
	}
	if topK <= t.Experts {
		t.TopK = topK
	}
	return t, nil
}

// flameLayer reads one file's indices column into per-step counts. It
// returns the steps, the tokens read, the highest expert id and the most
// picks of one token.
func flameLayer(in input, per, experts int) (steps [][]float64, tokens int64, maxID, topK int, err error) {
	// parquet-go is a large parser of untrusted input; should it panic on a
	// damaged file, the user gets a message rather than a stack trace.
	defer func() {
		if r := recover(); r != nil {
			err = invalid("a damaged parquet file (%v)", r)
		}
	}()
	f, err := parquet.OpenFile(in.r, in.size, parquet.SkipBloomFilters(true), parquet.SkipPageIndex(true))
	if err != nil {
		return nil, 0, 0, 0, invalid("not a readable parquet file (%v)", err)
	}
	col := f.Root().Column("indices")
	if col == nil {
		return nil, 0, 0, 0, invalid("no indices column; a FLAME-MoE trace has indices and scores")
	}
	for !col.Leaf() {
		if len(col.Columns()) != 1 {
			return nil, 0, 0, 0, invalid("indices is not a list of expert ids")
		}
		col = col.Columns()[0]
	}
	switch col.Type().Kind() {
	case parquet.Int32, parquet.Int64:
	default:
		return nil, 0, 0, 0, invalid("indices holds %v values; want integers", col.Type())
	}
	if col.MaxRepetitionLevel() != 1 {
		return nil, 0, 0, 0, invalid("indices is not a list per token")
	}
	maxDef := col.MaxDefinitionLevel()
	leaf := col.Index()
	maxID = -1
	var row []float64 // the current step's counts
	inStep, picks := 0, 0
	var values int64
	buf := make([]parquet.Value, 1024)
	for _, rg := range f.RowGroups() {
		pages := rg.ColumnChunks()[leaf].Pages()
		for {
			p, err := pages.ReadPage()
			if err == io.EOF {
				break
			}
			if err != nil {
				pages.Close()
				return nil, 0, 0, 0, invalid("reading indices: %v", err)
			}
			vr := p.Values()
			for {
				n, err := vr.ReadValues(buf)
				for _, v := range buf[:n] {
					if v.RepetitionLevel() == 0 { // a new token
						if row != nil && inStep == per {
							steps, row, inStep = append(steps, row), nil, 0
						}
						if row == nil {
							row = make([]float64, max(experts, maxID+1))
						}
						inStep++
						tokens++
						picks = 0
					}
					if v.DefinitionLevel() != maxDef || v.IsNull() {
						continue // an empty or null list, or a null id
					}
					id := v.Int64()
					if id < 0 || id >= maxExperts || (experts > 0 && id >= int64(experts)) {
						parquet.Release(p)
						pages.Close()
						return nil, 0, 0, 0, invalid("token %d picks expert %d; want 0..%d", tokens-1, id, max(experts, maxExperts)-1)
					}
					if values++; values > MaxValues {
						parquet.Release(p)
						pages.Close()
						return nil, 0, 0, 0, invalid("more than %d expert picks; cut the file", MaxValues)
					}
					for int(id) >= len(row) {
						row = append(row, 0)
					}
					row[id]++
					maxID = max(maxID, int(id))
					picks++
					topK = max(topK, picks)
				}
				if err == io.EOF {
					break
				}
				if err != nil {
					parquet.Release(p)
					pages.Close()
					return nil, 0, 0, 0, invalid("reading indices: %v", err)
				}
			}
			parquet.Release(p)
		}
		pages.Close()
	}
	if row != nil {
		steps = append(steps, row)
	}
	if tokens == 0 {
		return nil, 0, 0, 0, invalid("no tokens")
	}
	if maxID < 0 {
		return nil, 0, 0, 0, invalid("no token picks any expert")
	}
	// Rows started before a higher id appeared are shorter; pad them all.
	width := max(experts, maxID+1)
	for i, r := range steps {
		if len(r) < width {
			steps[i] = append(r, make([]float64, width-len(r))...)
		}
	}
	return steps, tokens, maxID, topK, nil
}
