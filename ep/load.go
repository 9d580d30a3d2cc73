package ep

// Balance summarises how even a load (rows per rank) is.
type Balance struct {
	Mean, Max, Min float64
	// MeanOverMax is the balancedness vLLM and SGLang report: 1 is perfectly
	// even, 1/N is one rank doing everything.
	MeanOverMax float64
	// MaxOverMean is how many times the average the busiest rank carries:
	// the step's slowdown against a perfect spread when time follows rows.
	MaxOverMean float64
}

// Balancedness summarises load, one value per rank. A load of all zeros (or
// no ranks) counts as perfectly even: both ratios are 1.
func Balancedness[T int | int64 | float64](load []T) Balance {
	b := Balance{MeanOverMax: 1, MaxOverMean: 1}
	if len(load) == 0 {
		return b
	}
	var sum float64
	b.Min = float64(load[0])
	for _, v := range load {
		f := float64(v)
		sum += f
		b.Max = max(b.Max, f)
		b.Min = min(b.Min, f)
	}
	b.Mean = sum / float64(len(load))
	if b.Max > 0 {
		b.MeanOverMax = b.Mean / b.Max
		b.MaxOverMean = b.Max / b.Mean
	}
	return b
}

// RankLoad is the load each rank of p carries when expert e carries
// expertLoad[e] in all and its replicas share it evenly: what Chooser gives
// when every rank routes alike (own-rank copies take the owner's share, the
// others split the rest in turn).
func RankLoad(p *Placement, expertLoad []float64) []float64 {
	out := make([]float64, p.Ranks())
	for e, l := range expertLoad[:min(len(expertLoad), p.Experts())] {
		rs := p.Replicas(e)
		for _, r := range rs {
			out[r] += l / float64(len(rs))
		}
	}
	return out
}
