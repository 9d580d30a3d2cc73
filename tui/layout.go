package tui

// band is a row of panels: the rows it needs to show its essentials, the
// rows it wants to show everything, and its weight in rows left over.
type band struct{ need, want, spare int }

// share gives total rows to bands, top to bottom: first each band's need
// (in proportion to them when they do not all fit), then wants in the
// order wantOrder names the bands, then what is left by the bands' spare
// weights, the remainder to the first band. The heights add up to total.
//
// The view asks for its wants text first and charts last: a middle band's
// list of ranks or layers, then the bottom's memory table and OOM details,
// then the top's; the rest goes two to the top (expert load, kernel time)
// for each one to the bottom, where the panels stretch their charts.
func share(total int, bands []band, wantOrder []int) []int {
	total = max(0, total)
	h := make([]int, len(bands))
	if len(bands) == 0 {
		return h
	}
	need := 0
	for i := range bands {
		bands[i].need = max(1, bands[i].need)
		bands[i].want = max(bands[i].need, bands[i].want)
		need += bands[i].need
	}
	if need >= total {
		given := 0
		for i, b := range bands[1:] {
			h[i+1] = total * b.need / need
			given += h[i+1]
		}
		h[0] = total - given
		return h
	}
	spare := total - need
	for i, b := range bands {
		h[i] = b.need
	}
	for _, i := range wantOrder {
		if i < 0 || i >= len(bands) {
			continue
		}
		g := min(spare, bands[i].want-h[i])
		h[i] += g
		spare -= g
	}
	weights := 0
	for _, b := range bands {
		weights += max(0, b.spare)
	}
	given := 0
	if weights > 0 {
		for i, b := range bands[1:] {
			g := spare * max(0, b.spare) / weights
			h[i+1] += g
			given += g
		}
	}
	h[0] += spare - given
	return h
}
