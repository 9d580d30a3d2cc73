package trace

import (
	"encoding/json"
	"io"
	"path/filepath"
)

// vLLM's EPLB keeps, per rank, expert_load_window [window, MoE layers,
// physical experts]: the rows each physical expert received in each of the
// last window steps, a ring written at expert_load_window_step; and
// physical_to_logical_map [MoE layers, physical experts]. vLLM writes
// neither to disk, so moetop reads the form you get by saving them:
//
//	torch.save({"expert_load_window": state.expert_load_window.cpu(),
//	            "physical_to_logical_map": state.physical_to_logical_map.cpu()}, "load.pt")
//
// (a bare tensor saved alone also reads), or the same as JSON:
//
//	{"expert_load_window": [[[...]]], "physical_to_logical_map": [[...]]}
//
// Without the map, physical experts are taken as logical ones. With it,
// the replicas of a logical expert are summed, and the logical experts are
// 0..the highest id the map names.

func readVLLM(in input) (*Trace, error) {
	var load, p2l []float64
	var shape, mshape []int
	head := make([]byte, 2)
	in.r.ReadAt(head, 0)
	if string(head) == "PK" {
		d, err := openTorch(in.r, in.size)
		if err != nil {
			return nil, err
		}
		lw := d.root
		if dict, ok := d.root.(*pyDict); ok {
			v, ok := dict.get("expert_load_window")
			if !ok {
				return nil, invalid("no expert_load_window in the dump; it has %s", dictKeys(dict))
			}
			lw = v
			if m, ok := dict.get("physical_to_logical_map"); ok && m != nil {
				if mshape, p2l, err = d.tensor(m, "physical_to_logical_map"); err != nil {
					return nil, err
				}
			}
		}
		if shape, load, err = d.tensor(lw, "expert_load_window"); err != nil {
			return nil, err
		}
	} else {
		var doc struct {
			Load [][][]float64 `json:"expert_load_window"`
			Map  [][]float64   `json:"physical_to_logical_map"`
		}
		if in.size > MaxValues*8 {
			return nil, invalid("%d MiB is too large for a JSON load window", in.size>>20)
		}
		b, err := io.ReadAll(io.NewSectionReader(in.r, 0, in.size))
		if err != nil {
			return nil, err
		}
		if err := json.Unmarshal(b, &doc); err != nil {
			return nil, jsonProblem(err)
		}
		if shape, load, err = flatten3(doc.Load, "expert_load_window"); err != nil {
			return nil, err
		}
		if doc.Map != nil {
			if mshape, p2l, err = flatten2(doc.Map, "physical_to_logical_map"); err != nil {
				return nil, err
			}
		}
	}
	c, err := cubeOf(shape, load, "expert_load_window")
	if err != nil {
		return nil, err
	}
	if p2l != nil {
		if c, err = toLogical(c, mshape, p2l); err != nil {
			return nil, err
		}
	}
	return c.toTrace("vllm expert_load_window " + filepath.Base(in.name))
}

// toLogical sums physical experts into the logical experts they replicate.
func toLogical(c *cube, mshape []int, m []float64) (*cube, error) {
	if len(mshape) != 2 || mshape[0] != c.layers || mshape[1] != c.experts {
		return nil, invalid("physical_to_logical_map has shape %v; want [%d layers, %d physical experts]", mshape, c.layers, c.experts)
	}
	logical := 0
	for _, v := range m {
		if v < -1 || v >= maxExperts || v != float64(int(v)) {
			return nil, invalid("physical_to_logical_map names expert %g", v)
		}
		logical = max(logical, int(v)+1)
	}
	if logical == 0 {
		return nil, invalid("physical_to_logical_map maps no physical expert")
	}
	out := &cube{steps: c.steps, layers: c.layers, experts: logical, vals: make([]float64, c.steps*c.layers*logical)}
	for s := 0; s < c.steps; s++ {
		for l := 0; l < c.layers; l++ {
			dst, src := out.row(s, l), c.row(s, l)
			for p, x := range src {
				if e := int(m[l*c.experts+p]); e >= 0 { // -1: an unused slot
					dst[e] += x
				}
			}
		}
	}
	return out, nil
}

func flatten3(a [][][]float64, what string) ([]int, []float64, error) {
	if len(a) == 0 || len(a[0]) == 0 {
		return nil, nil, invalid("%s is missing or empty", what)
	}
	shape := []int{len(a), len(a[0]), len(a[0][0])}
	if shape[0]*shape[1]*shape[2] > MaxValues {
		return nil, nil, invalid("%s is too large", what)
	}
	var vals []float64
	for s, layers := range a {
		if len(layers) != shape[1] {
			return nil, nil, invalid("%s step %d has %d layers, step 0 has %d", what, s, len(layers), shape[1])
		}
		for l, row := range layers {
			if len(row) != shape[2] {
				return nil, nil, invalid("%s step %d layer %d has %d experts, the first row has %d", what, s, l, len(row), shape[2])
			}
			vals = append(vals, row...)
		}
	}
	return shape, vals, nil
}

func flatten2(a [][]float64, what string) ([]int, []float64, error) {
	if len(a) == 0 {
		return nil, nil, invalid("%s is empty", what)
	}
	shape := []int{len(a), len(a[0])}
	var vals []float64
	for l, row := range a {
		if len(row) != shape[1] {
			return nil, nil, invalid("%s row %d has %d values, row 0 has %d", what, l, len(row), shape[1])
		}
		vals = append(vals, row...)
	}
	return shape, vals, nil
}
