package trace

import (
	"fmt"
	"path/filepath"
)

// SGLang's expert-distribution recorder (python/sglang/srt/eplb/
// expert_distribution.py) dumps expert_distribution_recorder_{time}.pt with
// torch.save. In "stat" mode it holds
//
//	{"rank": int, "logical_count": int32 tensor [passes, layers, experts],
//	 "average_utilization_rate_over_window": float or None}
//
// where a pass is one forward pass and layers are all the model's layers
// (dense ones count zero). With a ring buffer the passes not yet recorded
// are zeros, and once it wraps the oldest pass is not the first row.
// In "per_token" mode it holds
//
//	{"records": [{"topk_ids_of_layer": int32 [layers, tokens, topk], ...}, ...],
//	 "last_physical_to_logical_map": [layers, physical experts]}
//
// one record per forward pass, the ids being physical experts (-1 unused).

func readSGLang(in input) (*Trace, error) {
	d, err := openTorch(in.r, in.size)
	if err != nil {
		return nil, err
	}
	root, ok := d.root.(*pyDict)
	if !ok {
		return nil, invalid("the dump holds %s; an SGLang dump is a dict", describe(d.root))
	}
	if lc, ok := root.get("logical_count"); ok {
		shape, vals, err := d.tensor(lc, "logical_count")
		if err != nil {
			return nil, err
		}
		c, err := cubeOf(shape, vals, "logical_count")
		if err != nil {
			return nil, err
		}
		return c.toTrace("sglang stat dump " + filepath.Base(in.name))
	}
	if recs, ok := root.get("records"); ok {
		return sglangPerToken(d, root, recs, in.name)
	}
	return nil, invalid("neither logical_count (stat mode) nor records (per_token mode) in the dump; it has %s", dictKeys(root))
}

func sglangPerToken(d *torchDump, root *pyDict, recs any, name string) (*Trace, error) {
	list, ok := recs.(*pyList)
	if !ok || len(list.items) == 0 {
		return nil, invalid("records is %s; want a list of forward passes", describe(recs))
	}
	var p2l [][]int // physical to logical expert, per layer; nil: the same
	experts := 0
	if m, ok := root.get("last_physical_to_logical_map"); ok && m != nil {
		shape, vals, err := d.tensor(m, "last_physical_to_logical_map")
		if err != nil {
			return nil, err
		}
		if len(shape) != 2 {
			return nil, invalid("last_physical_to_logical_map has shape %v; want [layers, physical experts]", shape)
		}
		p2l = make([][]int, shape[0])
		for l := range p2l {
			p2l[l] = make([]int, shape[1])
			for p := range p2l[l] {
				v := vals[l*shape[1]+p]
				if v < 0 || v >= maxExperts {
					return nil, invalid("last_physical_to_logical_map maps to expert %g", v)
				}
				p2l[l][p] = int(v)
				experts = max(experts, int(v)+1)
			}
		}
	}
	type pass struct {
		shape []int
		ids   []float64
	}
	passes := make([]pass, 0, len(list.items))
	layers, physical := 0, 0
	for i, r := range list.items {
		rec, ok := r.(*pyDict)
		if !ok {
			return nil, invalid("record %d is %s; want a dict", i, describe(r))
		}
		v, ok := rec.get("topk_ids_of_layer")
		if !ok {
			return nil, invalid("record %d has no topk_ids_of_layer; it has %s", i, dictKeys(rec))
		}
		what := fmt.Sprintf("record %d's topk_ids_of_layer", i)
		shape, ids, err := d.tensor(v, what)
		if err != nil {
			return nil, err
		}
		if len(shape) != 3 || shape[0] == 0 || (layers != 0 && shape[0] != layers) {
			return nil, invalid("%s has shape %v; want [layers, tokens, top-k] with the same layers in every record", what, shape)
		}
		layers = shape[0]
		for _, id := range ids {
			if id >= maxExperts {
				return nil, invalid("%s names expert %g", what, id)
			}
			physical = max(physical, int(id)+1)
		}
		passes = append(passes, pass{shape, ids})
	}
	if p2l == nil {
		experts = physical
	} else if len(p2l) != layers || physical > len(p2l[0]) {
		return nil, invalid("last_physical_to_logical_map covers %d layers and %d physical experts; the records use %d and %d",
			len(p2l), len(p2l[0]), layers, physical)
	}
	if experts == 0 {
		return nil, invalid("no record routed any token")
	}
	if len(passes)*layers*experts > MaxValues {
		return nil, invalid("%d passes × %d layers × %d experts is too large", len(passes), layers, experts)
	}
	c := &cube{steps: len(passes), layers: layers, experts: experts, vals: make([]float64, len(passes)*layers*experts)}
	topK := 0 // SGLang pads every token to 8 slots; the real k is the most filled
	for s, p := range passes {
		k := p.shape[2]
		for l := 0; l < layers; l++ {
			row := c.row(s, l)
			for tok := 0; tok < p.shape[1]; tok++ {
				filled := 0
				for _, id := range p.ids[(l*p.shape[1]+tok)*k : (l*p.shape[1]+tok+1)*k] {
					if id < 0 { // -1: a slot no expert filled
						continue
					}
					e := int(id)
					if p2l != nil {
						e = p2l[l][e]
					}
					row[e]++
					filled++
				}
				topK = max(topK, filled)
			}
		}
	}
	t, err := c.toTrace("sglang per_token dump " + filepath.Base(name))
	if err != nil {
		return nil, err
	}
	if topK <= t.Experts {
		t.TopK = topK
	}
	return t, nil
}
