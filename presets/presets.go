// Package presets holds the MoE layer of published models, taken from each
// model's config.json: the shapes, the router and the weight format that
// `moetop --model NAME` starts from. It is plain data with no imports of
// moetop's, so anything can list or check it.
package presets

import (
	"errors"
	"fmt"
	"sort"
	"strings"
)

// RouterKind is how a layer turns router logits into top-k weights.
type RouterKind string

const (
	// Softmax: softmax over all experts' logits, then the top-k;
	// Router.NormTopK says whether the k weights are renormalised to sum to
	// 1 (the same as a softmax over the top-k logits alone).
	Softmax RouterKind = "softmax"
	// SigmoidGrouped is DeepSeek-V3's: sigmoid scores plus a per-expert
	// bias choose the experts, first the Router.TopKGroups best of
	// Router.Groups groups (a group scored by its two best), then the top-k
	// within them; the weights are the unbiased scores, renormalised and
	// multiplied by Router.ScalingFactor.
	SigmoidGrouped RouterKind = "sigmoid-grouped"
	// SigmoidTop1 is Llama 4's: the top-1 expert by logit, weighted by the
	// sigmoid of its logit.
	SigmoidTop1 RouterKind = "sigmoid-top1"
)

// Router describes a layer's router.
type Router struct {
	Kind     RouterKind `json:"kind"`
	NormTopK bool       `json:"norm_topk_prob"` // renormalise the top-k weights (norm_topk_prob)
	// Groups and TopKGroups are n_group and topk_group (SigmoidGrouped).
	Groups     int `json:"groups"`
	TopKGroups int `json:"topk_groups"`
	// ScalingFactor multiplies the routed experts' output
	// (routed_scaling_factor); 1 where the model has none.
	ScalingFactor float64 `json:"scaling_factor"`
	// Bias: a per-expert bias is added to the scores to choose experts
	// (DeepSeek-V3's e_score_correction_bias) or the router has a bias term
	// (gpt-oss).
	Bias bool `json:"bias"`
}

// Weight formats the models are published in.
const (
	BF16     = "bf16"
	FP32     = "fp32"
	FP8Block = "fp8-e4m3-block128" // FP8 e4m3 with a scale per 128×128 block
	MXFP4    = "mxfp4"             // 4-bit e2m1 with a shared 8-bit scale per 32 values (experts only)
)

// Preset is one model's MoE layer.
type Preset struct {
	Name  string `json:"name"`  // what --model takes
	Model string `json:"model"` // the published model it comes from
	// Hidden is the model width; FFN the intermediate width of one routed
	// expert (moe_intermediate_size, or intermediate_size where the model
	// has no separate one).
	Hidden  int `json:"hidden"`
	FFN     int `json:"ffn"`
	Experts int `json:"experts"` // routed experts
	TopK    int `json:"top_k"`   // experts per token
	// Act is the experts' activation: "swiglu" for all of these, whose
	// experts are (silu(x·Wg) ⊙ x·Wu)·Wd.
	Act string `json:"activation"`
	// SharedExperts are dense experts every token goes through, together
	// SharedFFN wide (a single SwiGLU FFN of that width).
	SharedExperts int    `json:"shared_experts"`
	SharedFFN     int    `json:"shared_ffn"`
	Router        Router `json:"router"`
	// Layers is the number of MoE layers; TotalLayers all decoder layers
	// (the others are dense).
	Layers      int `json:"layers"`
	TotalLayers int `json:"total_layers"`
	// Weights is the format the model's expert weights are published in;
	// moetop runs them in bf16 for now.
	Weights string `json:"weights"`
	// Differs says what moetop's layer does not model of this one.
	Differs string `json:"differs"`
}

// ExpertParams is the parameters of one routed expert (gate, up, down).
func (p Preset) ExpertParams() int64 { return 3 * int64(p.Hidden) * int64(p.FFN) }

// LayerParams is the parameters of one MoE layer: routed experts, shared
// experts and the router.
func (p Preset) LayerParams() int64 {
	return int64(p.Experts)*p.ExpertParams() + 3*int64(p.Hidden)*int64(p.SharedFFN) + int64(p.Hidden)*int64(p.Experts)
}

// ActiveParams is the parameters one token uses in a layer.
func (p Preset) ActiveParams() int64 {
	return int64(p.TopK)*p.ExpertParams() + 3*int64(p.Hidden)*int64(p.SharedFFN) + int64(p.Hidden)*int64(p.Experts)
}

// all is the table; each number is from the model's published config.json
// (field names in the comments).
var all = []Preset{
	{
		Name: "mixtral-8x7b", Model: "mistralai/Mixtral-8x7B-v0.1",
		// hidden_size, intermediate_size, num_local_experts, num_experts_per_tok
		Hidden: 4096, FFN: 14336, Experts: 8, TopK: 2, Act: "swiglu",
		Router: Router{Kind: Softmax, NormTopK: true, ScalingFactor: 1},
		Layers: 32, TotalLayers: 32, Weights: BF16,
	},
	{
		Name: "mixtral-8x22b", Model: "mistralai/Mixtral-8x22B-v0.1",
		Hidden: 6144, FFN: 16384, Experts: 8, TopK: 2, Act: "swiglu",
		Router: Router{Kind: Softmax, NormTopK: true, ScalingFactor: 1},
		Layers: 56, TotalLayers: 56, Weights: BF16,
	},
	{
		Name: "qwen3-30b-a3b", Model: "Qwen/Qwen3-30B-A3B",
		// moe_intermediate_size, num_experts, norm_topk_prob true,
		// decoder_sparse_step 1 and no mlp_only_layers: every layer is MoE
		Hidden: 2048, FFN: 768, Experts: 128, TopK: 8, Act: "swiglu",
		Router: Router{Kind: Softmax, NormTopK: true, ScalingFactor: 1},
		Layers: 48, TotalLayers: 48, Weights: BF16,
	},
	{
		Name: "qwen3-235b-a22b", Model: "Qwen/Qwen3-235B-A22B",
		Hidden: 4096, FFN: 1536, Experts: 128, TopK: 8, Act: "swiglu",
		Router: Router{Kind: Softmax, NormTopK: true, ScalingFactor: 1},
		Layers: 94, TotalLayers: 94, Weights: BF16,
	},
	{
		Name: "deepseek-v3", Model: "deepseek-ai/DeepSeek-V3",
		// n_routed_experts 256, n_shared_experts 1, scoring_func sigmoid,
		// topk_method noaux_tc, n_group 8, topk_group 4,
		// routed_scaling_factor 2.5, norm_topk_prob true; 61 layers of which
		// first_k_dense_replace 3 are dense; quantization_config fp8 e4m3,
		// weight_block_size [128, 128]
		Hidden: 7168, FFN: 2048, Experts: 256, TopK: 8, Act: "swiglu",
		SharedExperts: 1, SharedFFN: 2048,
		Router: Router{Kind: SigmoidGrouped, NormTopK: true, Groups: 8, TopKGroups: 4, ScalingFactor: 2.5, Bias: true},
		Layers: 58, TotalLayers: 61, Weights: FP8Block,
	},
	{
		Name: "deepseek-v2-lite", Model: "deepseek-ai/DeepSeek-V2-Lite",
		// moe_intermediate_size 1408, n_routed_experts 64, n_shared_experts 2
		// (2 × 1408 wide), num_experts_per_tok 6, scoring_func softmax,
		// topk_method greedy, norm_topk_prob false, 27 layers with
		// first_k_dense_replace 1
		Hidden: 2048, FFN: 1408, Experts: 64, TopK: 6, Act: "swiglu",
		SharedExperts: 2, SharedFFN: 2816,
		Router: Router{Kind: Softmax, NormTopK: false, ScalingFactor: 1},
		Layers: 26, TotalLayers: 27, Weights: BF16,
	},
	{
		Name: "gpt-oss-20b", Model: "openai/gpt-oss-20b",
		// hidden_size 2880, intermediate_size 2880, num_local_experts 32,
		// num_experts_per_tok 4, swiglu_limit 7.0; experts in MXFP4
		Hidden: 2880, FFN: 2880, Experts: 32, TopK: 4, Act: "swiglu",
		Router: Router{Kind: Softmax, NormTopK: true, ScalingFactor: 1, Bias: true},
		Layers: 24, TotalLayers: 24, Weights: MXFP4,
		Differs: "clamped SwiGLU (gate ≤ 7, |up| ≤ 7, gate·σ(1.702·gate)·(up+1)), biases on the experts' projections and the router",
	},
	{
		Name: "gpt-oss-120b", Model: "openai/gpt-oss-120b",
		Hidden: 2880, FFN: 2880, Experts: 128, TopK: 4, Act: "swiglu",
		Router: Router{Kind: Softmax, NormTopK: true, ScalingFactor: 1, Bias: true},
		Layers: 36, TotalLayers: 36, Weights: MXFP4,
		Differs: "clamped SwiGLU (gate ≤ 7, |up| ≤ 7, gate·σ(1.702·gate)·(up+1)), biases on the experts' projections and the router",
	},
	{
		Name: "olmoe-1b-7b", Model: "allenai/OLMoE-1B-7B-0924",
		// intermediate_size 1024, num_experts 64, num_experts_per_tok 8,
		// norm_topk_prob false, torch_dtype float32
		Hidden: 2048, FFN: 1024, Experts: 64, TopK: 8, Act: "swiglu",
		Router: Router{Kind: Softmax, NormTopK: false, ScalingFactor: 1},
		Layers: 16, TotalLayers: 16, Weights: FP32,
	},
	{
		Name: "llama4-scout", Model: "meta-llama/Llama-4-Scout-17B-16E",
		// text_config: hidden_size 5120, intermediate_size 8192 (per expert
		// and the shared expert), num_local_experts 16,
		// num_experts_per_tok 1, interleave_moe_layer_step 1
		Hidden: 5120, FFN: 8192, Experts: 16, TopK: 1, Act: "swiglu",
		SharedExperts: 1, SharedFFN: 8192,
		Router: Router{Kind: SigmoidTop1, ScalingFactor: 1},
		Layers: 48, TotalLayers: 48, Weights: BF16,
		Differs: "the router weight scales the expert's input, not its output",
	},
	{
		Name: "qwen1.5-moe-a2.7b", Model: "Qwen/Qwen1.5-MoE-A2.7B",
		// model_type qwen2_moe: moe_intermediate_size 1408, num_experts 60,
		// num_experts_per_tok 4, shared_expert_intermediate_size 5632,
		// norm_topk_prob false, 24 layers, decoder_sparse_step 1
		Hidden: 2048, FFN: 1408, Experts: 60, TopK: 4, Act: "swiglu",
		SharedExperts: 1, SharedFFN: 5632,
		Router: Router{Kind: Softmax, NormTopK: false, ScalingFactor: 1},
		Layers: 24, TotalLayers: 24, Weights: BF16,
		Differs: "the shared expert's output is scaled by sigmoid(x·w), a gate of its own",
	},
}

// ErrUnknown is returned by Lookup for a name no preset has.
var ErrUnknown = errors.New("unknown model")

// All lists the presets, sorted by name.
func All() []Preset {
	out := append([]Preset(nil), all...)
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// Names lists the presets' names, sorted.
func Names() []string {
	var n []string
	for _, p := range All() {
		n = append(n, p.Name)
	}
	return n
}

// Lookup finds a preset by name, ignoring case.
func Lookup(name string) (Preset, error) {
	for _, p := range all {
		if strings.EqualFold(p.Name, name) {
			return p, nil
		}
	}
	return Preset{}, fmt.Errorf("%w %q; want one of %s", ErrUnknown, name, strings.Join(Names(), ", "))
}

// Check says what is inconsistent in a preset, nil if nothing: positive
// shapes, top-k within the experts (and within the chosen groups), shared
// experts with a width, MoE layers within the model's, a known weight
// format and router.
func (p Preset) Check() error {
	switch {
	case p.Name == "" || p.Name != strings.ToLower(p.Name) || strings.ContainsAny(p.Name, " :/"):
		return fmt.Errorf("name %q: want lower case without spaces, colons or slashes", p.Name)
	case p.Hidden <= 0 || p.FFN <= 0 || p.Experts <= 0:
		return fmt.Errorf("%s: hidden %d, ffn %d, experts %d must be positive", p.Name, p.Hidden, p.FFN, p.Experts)
	case p.TopK < 1 || p.TopK > p.Experts:
		return fmt.Errorf("%s: top-k %d out of 1..%d", p.Name, p.TopK, p.Experts)
	case p.Act != "swiglu":
		return fmt.Errorf("%s: activation %q; these models are all swiglu", p.Name, p.Act)
	case (p.SharedExperts == 0) != (p.SharedFFN == 0) || p.SharedExperts < 0 || p.SharedFFN < 0:
		return fmt.Errorf("%s: %d shared experts %d wide: both zero or both positive", p.Name, p.SharedExperts, p.SharedFFN)
	case p.Layers < 1 || p.Layers > p.TotalLayers:
		return fmt.Errorf("%s: %d MoE layers of %d", p.Name, p.Layers, p.TotalLayers)
	case p.Router.ScalingFactor <= 0:
		return fmt.Errorf("%s: routed scaling factor %g must be positive", p.Name, p.Router.ScalingFactor)
	}
	switch p.Weights {
	case BF16, FP32, FP8Block, MXFP4:
	default:
		return fmt.Errorf("%s: unknown weight format %q", p.Name, p.Weights)
	}
	r := p.Router
	switch r.Kind {
	case Softmax:
		if r.Groups != 0 || r.TopKGroups != 0 {
			return fmt.Errorf("%s: a softmax router has no groups", p.Name)
		}
	case SigmoidGrouped:
		if r.Groups < 1 || p.Experts%r.Groups != 0 || r.TopKGroups < 1 || r.TopKGroups > r.Groups {
			return fmt.Errorf("%s: %d groups (top %d) must divide %d experts", p.Name, r.Groups, r.TopKGroups, p.Experts)
		}
		if per := p.Experts / r.Groups; p.TopK > r.TopKGroups*per || per < 2 {
			return fmt.Errorf("%s: top-%d from %d groups of %d experts is impossible", p.Name, p.TopK, r.TopKGroups, per)
		}
	case SigmoidTop1:
		if p.TopK != 1 || r.Groups != 0 || r.NormTopK {
			return fmt.Errorf("%s: a sigmoid top-1 router picks one expert, ungrouped and unnormalised", p.Name)
		}
	default:
		return fmt.Errorf("%s: unknown router %q", p.Name, r.Kind)
	}
	return nil
}
