package kernels

import (
	"fmt"
	"math"
	"strings"
)

// RouterKind is how the router turns a token's logits into its top-k
// experts and their weights.
type RouterKind int

const (
	// Softmax picks the k largest logits and weights them by a softmax
	// renormalised over the chosen k (Mixtral, Qwen3: norm_topk_prob true).
	Softmax RouterKind = iota
	// SoftmaxNoNorm picks the same experts but keeps their share of the
	// softmax over all experts, which sums to less than 1 (OLMoE,
	// Qwen2-MoE, DeepSeek-V2-Lite: norm_topk_prob false).
	SoftmaxNoNorm
	// SigmoidGrouped is DeepSeek-V3's: scores are sigmoid(logit); the bias
	// (e_score_correction_bias) is added to the scores to choose experts
	// but not to weight them. Experts fall in Groups equal groups; a group
	// scores the sum of its two best biased scores, the TopKGroups best
	// groups are kept, and the top-k of the kept experts' biased scores
	// are chosen. Their unbiased scores, renormalised, are the weights.
	SigmoidGrouped
	numRouterKinds
)

var routerNames = [numRouterKinds]string{"softmax", "softmax-nonorm", "sigmoid-grouped"}

// RouterNames lists the accepted spellings, for help and errors.
func RouterNames() []string { return append([]string(nil), routerNames[:]...) }

func (k RouterKind) String() string {
	if k < 0 || k >= numRouterKinds {
		return fmt.Sprintf("router(%d)", int(k))
	}
	return routerNames[k]
}

// Valid says k is one of the known routers.
func (k RouterKind) Valid() bool { return k >= 0 && k < numRouterKinds }

// ParseRouterKind reads a router's name; "" is the default, softmax (a
// moetop/1 log names none).
func ParseRouterKind(s string) (RouterKind, error) {
	if s == "" {
		return Softmax, nil
	}
	for i, n := range routerNames {
		if strings.EqualFold(s, n) {
			return RouterKind(i), nil
		}
	}
	return 0, fmt.Errorf("unknown router %q (want one of %s)", s, strings.Join(routerNames[:], ", "))
}

// MarshalText makes RouterKind a JSON string.
func (k RouterKind) MarshalText() ([]byte, error) {
	if !k.Valid() {
		return nil, fmt.Errorf("cannot marshal %v", k)
	}
	return []byte(k.String()), nil
}

// UnmarshalText reads a JSON string.
func (k *RouterKind) UnmarshalText(b []byte) error {
	v, err := ParseRouterKind(string(b))
	if err != nil {
		return err
	}
	*k = v
	return nil
}

// MaxGroups is the most expert groups the grouped router takes: the GPU
// router keeps a score per group in registers and the kept groups in a
// 64-bit mask (layer.cu's MAX_GROUPS; a test holds them equal).
const MaxGroups = 64

// Router is the router of a layer. Its zero value is the softmax router
// with renormalisation and no scaling, moetop's router before it had a
// choice.
type Router struct {
	Kind RouterKind
	// Groups and TopKGroups are SigmoidGrouped's n_group and topk_group;
	// 0 means one group and every group kept (no group limit).
	Groups, TopKGroups int
	// Scale multiplies every weight (routed_scaling_factor: 2.5 on
	// DeepSeek-V3); 0 means 1.
	Scale float32
}

// GroupCount is the number of expert groups (1 unless grouped).
func (r Router) GroupCount() int {
	if r.Kind != SigmoidGrouped || r.Groups < 1 {
		return 1
	}
	return r.Groups
}

// KeptGroups is how many groups a token's experts may come from.
func (r Router) KeptGroups() int {
	if r.Kind != SigmoidGrouped || r.TopKGroups < 1 {
		return r.GroupCount()
	}
	return r.TopKGroups
}

// WeightScale is the factor on every weight.
func (r Router) WeightScale() float32 {
	if r.Scale == 0 {
		return 1
	}
	return r.Scale
}

// Check says why r cannot route top-k of experts, nil when it can.
func (r Router) Check(experts, k int) error {
	switch {
	case !r.Kind.Valid():
		return fmt.Errorf("unknown router %v", r.Kind)
	case experts < 1 || k < 1 || k > experts:
		return fmt.Errorf("top-%d of %d experts; want 1 ≤ top-k ≤ experts", k, experts)
	case r.Scale < 0 || math.IsNaN(float64(r.Scale)) || math.IsInf(float64(r.Scale), 0):
		return fmt.Errorf("routed scale %g; want a positive number", r.Scale)
	case r.Kind != SigmoidGrouped && (r.Groups != 0 || r.TopKGroups != 0):
		return fmt.Errorf("the %s router has no expert groups (groups %d, top-k groups %d)", r.Kind, r.Groups, r.TopKGroups)
	case r.Groups < 0 || r.TopKGroups < 0:
		return fmt.Errorf("groups %d, top-k groups %d: want positive numbers", r.Groups, r.TopKGroups)
	}
	g, kept := r.GroupCount(), r.KeptGroups()
	switch {
	case g > MaxGroups:
		return fmt.Errorf("%d groups; at most %d", g, MaxGroups)
	case experts%g != 0:
		return fmt.Errorf("%d groups do not divide %d experts", g, experts)
	case kept > g:
		return fmt.Errorf("top-k groups %d of %d groups", kept, g)
	case k > kept*(experts/g):
		return fmt.Errorf("top-%d from %d kept groups of %d experts is impossible", k, kept, experts/g)
	}
	return nil
}

func (r Router) String() string {
	s := r.Kind.String()
	if r.Kind == SigmoidGrouped {
		s += fmt.Sprintf("(%d/%d groups)", r.KeptGroups(), r.GroupCount())
	}
	if sc := r.WeightScale(); sc != 1 {
		s += fmt.Sprintf("×%g", sc)
	}
	return s
}

// BiasScale is what a bias of 1 in logit units is worth where r adds its
// bias: 1 for the softmax routers, which add it to the logits; 1/4 for
// the sigmoid router, which adds it to sigmoid scores, whose slope at 0
// (where the router's unit-variance logits sit) is 1/4. The live loop's
// steering multiplies its bias by it, so that one controller steers every
// router.
func (r Router) BiasScale() float32 {
	if r.Kind == SigmoidGrouped {
		return 0.25
	}
	return 1
}

// Route picks, for each of t tokens, k of the e experts and their weights
// from logits (t × e, row-major) and bias (nil: none), as r says. Ties go
// to the lower expert (and group) index. The GPU's route kernel in
// kernels/cuda/layer.cu does exactly this, so that a GPU backend's choice
// can be checked against it.
func (r Router) Route(logits []float32, t, e, k int, bias []float32) Assignment {
	a := Assignment{IDs: make([]int32, t*k), Weights: make([]float32, t*k)}
	row := make([]float32, e)
	var score []float32
	if r.Kind == SigmoidGrouped {
		score = make([]float32, e)
	}
	scale := r.WeightScale()
	for tok := 0; tok < t; tok++ {
		in := logits[tok*e : (tok+1)*e]
		ids := a.IDs[tok*k : (tok+1)*k]
		w := a.Weights[tok*k : (tok+1)*k]
		if r.Kind == SigmoidGrouped {
			r.routeGrouped(in, bias, score, row, ids, w)
		} else {
			r.routeSoftmax(in, bias, row, ids, w)
		}
		if scale != 1 {
			for j := range w {
				w[j] *= scale
			}
		}
	}
	return a
}

// routeSoftmax chooses the k largest logits+bias; the weights are their
// softmax, over the chosen k (renormalised) or over all experts.
func (r Router) routeSoftmax(in, bias, row []float32, ids []int32, w []float32) {
	copy(row, in)
	if bias != nil {
		for i := range row {
			row[i] += bias[i]
		}
	}
	topK(row, ids)
	best := row[ids[0]]
	var sum float32
	for j, id := range ids {
		w[j] = float32(math.Exp(float64(row[id] - best)))
		sum += w[j]
	}
	if r.Kind == SoftmaxNoNorm {
		sum = 0
		for _, v := range row {
			sum += float32(math.Exp(float64(v - best)))
		}
	}
	for j := range w {
		w[j] /= sum
	}
}

// routeGrouped is SigmoidGrouped for one token; score and row are scratch
// of e values. An expert outside the kept groups gets -Inf, which is never
// chosen: Check holds k within the kept groups' experts.
func (r Router) routeGrouped(in, bias, score, row []float32, ids []int32, w []float32) {
	e := len(in)
	g := r.GroupCount()
	per := e / g
	for i, l := range in {
		score[i] = Sigmoid32(l)
		row[i] = score[i]
		if bias != nil {
			row[i] += bias[i]
		}
	}
	var group [MaxGroups]float32
	for gi := 0; gi < g; gi++ {
		best, second := float32(math.Inf(-1)), float32(math.Inf(-1))
		for _, v := range row[gi*per : (gi+1)*per] {
			if v > best {
				best, second = v, best
			} else if v > second {
				second = v
			}
		}
		if per > 1 {
			best += second
		}
		group[gi] = best
	}
	// The kept groups, best first, by repeated search: g ≤ 64.
	var kept uint64
	for n := 0; n < r.KeptGroups(); n++ {
		pick := -1
		for gi := 0; gi < g; gi++ {
			if kept&(1<<gi) == 0 && (pick < 0 || group[gi] > group[pick]) {
				pick = gi
			}
		}
		kept |= 1 << pick
	}
	for i := range row {
		if kept&(1<<(i/per)) == 0 {
			row[i] = float32(math.Inf(-1))
		}
	}
	topK(row, ids)
	var sum float32
	for j, id := range ids {
		w[j] = score[id]
		sum += w[j]
	}
	for j := range w {
		w[j] /= sum
	}
}

// Sigmoid32 is 1/(1+e^-x) in float32 arithmetic alone, every operation
// rounded on its own: the explicit conversions keep Go from fusing a
// multiply and an add, as --fmad=false keeps NVRTC from it. layer.cu's
// sigmoid_f has the same operations and constants, so the grouped router
// chooses the same experts on both (a last-bit difference between two
// libraries' exp would flip near-ties among 256 experts now and then).
func Sigmoid32(x float32) float32 {
	return 1 / (1 + exp32(-x))
}

// exp32's constants, as layer.cu spells them (hex, so that no decimal
// conversion can differ): log2(e), ln 2 split in a part with few bits and
// the rest (Cody and Waite), and Cephes expf's polynomial.
const (
	expLog2E = 0x1.715476p+00
	expLn2Hi = 0x1.63p-01
	expLn2Lo = -0x1.bd0106p-13
	expP0    = 0x1.a0d2cep-13
	expP1    = 0x1.6e879cp-10
	expP2    = 0x1.11121p-07
	expP3    = 0x1.555382p-05
	expP4    = 0x1.555554p-03
	expP5    = 0x1p-01
)

// exp32 is e^x for x clamped to [-80, 80], within a couple of ulps: x =
// n·ln2 + r with |r| ≤ ln2/2, e^r from Cephes expf's polynomial, times
// 2^n made from its bits (n stays in the normal range).
func exp32(x float32) float32 {
	x = min(max(x, -80), 80)
	n := float32(math.Floor(float64(float32(x*expLog2E) + 0.5)))
	r := float32(x - float32(n*expLn2Hi))
	r = float32(r - float32(n*expLn2Lo))
	z := float32(r * r)
	p := float32(float32(expP0*r) + expP1)
	p = float32(float32(p*r) + expP2)
	p = float32(float32(p*r) + expP3)
	p = float32(float32(p*r) + expP4)
	p = float32(float32(p*r) + expP5)
	y := float32(float32(float32(p*z)+r) + 1)
	return y * math.Float32frombits(uint32(int32(n)+127)<<23)
}
