package presets

import (
	"errors"
	"strings"
	"testing"
)

func TestEveryPresetIsConsistent(t *testing.T) {
	seen := map[string]bool{}
	for _, p := range All() {
		if err := p.Check(); err != nil {
			t.Error(err)
		}
		if seen[p.Name] {
			t.Errorf("%s is listed twice", p.Name)
		}
		seen[p.Name] = true
		if (p.Weights == MXFP4 || p.Router.Kind == SigmoidTop1 || p.Name == "qwen1.5-moe-a2.7b") && p.Differs == "" {
			t.Errorf("%s does something moetop does not model and should say so", p.Name)
		}
	}
	for _, name := range []string{"mixtral-8x7b", "mixtral-8x22b", "qwen3-30b-a3b", "qwen3-235b-a22b", "deepseek-v3",
		"deepseek-v2-lite", "gpt-oss-20b", "gpt-oss-120b", "olmoe-1b-7b", "llama4-scout"} {
		if !seen[name] {
			t.Errorf("%s is missing", name)
		}
	}
}

// The numbers of each model's config.json, a few per preset.
func TestPresetsCarryTheirModelsPublishedNumbers(t *testing.T) {
	for _, tc := range []struct {
		name                       string
		hidden, ffn, experts, topK int
		shared, sharedFFN, layers  int
		router                     RouterKind
		norm                       bool
		weights                    string
	}{
		{"mixtral-8x7b", 4096, 14336, 8, 2, 0, 0, 32, Softmax, true, BF16},
		{"mixtral-8x22b", 6144, 16384, 8, 2, 0, 0, 56, Softmax, true, BF16},
		{"qwen3-30b-a3b", 2048, 768, 128, 8, 0, 0, 48, Softmax, true, BF16},
		{"qwen3-235b-a22b", 4096, 1536, 128, 8, 0, 0, 94, Softmax, true, BF16},
		{"deepseek-v3", 7168, 2048, 256, 8, 1, 2048, 58, SigmoidGrouped, true, FP8Block},
		{"deepseek-v2-lite", 2048, 1408, 64, 6, 2, 2816, 26, Softmax, false, BF16},
		{"gpt-oss-20b", 2880, 2880, 32, 4, 0, 0, 24, Softmax, true, MXFP4},
		{"gpt-oss-120b", 2880, 2880, 128, 4, 0, 0, 36, Softmax, true, MXFP4},
		{"olmoe-1b-7b", 2048, 1024, 64, 8, 0, 0, 16, Softmax, false, FP32},
		{"llama4-scout", 5120, 8192, 16, 1, 1, 8192, 48, SigmoidTop1, false, BF16},
		{"qwen1.5-moe-a2.7b", 2048, 1408, 60, 4, 1, 5632, 24, Softmax, false, BF16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, err := Lookup(tc.name)
			if err != nil {
				t.Fatal(err)
			}
			got := []int{p.Hidden, p.FFN, p.Experts, p.TopK, p.SharedExperts, p.SharedFFN, p.Layers}
			want := []int{tc.hidden, tc.ffn, tc.experts, tc.topK, tc.shared, tc.sharedFFN, tc.layers}
			for i := range got {
				if got[i] != want[i] {
					t.Errorf("hidden, ffn, experts, top-k, shared, shared ffn, layers = %v, want %v", got, want)
					break
				}
			}
			if p.Router.Kind != tc.router || p.Router.NormTopK != tc.norm || p.Weights != tc.weights {
				t.Errorf("router %s norm %v weights %s, want %s %v %s", p.Router.Kind, p.Router.NormTopK, p.Weights, tc.router, tc.norm, tc.weights)
			}
		})
	}
	dsv3, _ := Lookup("deepseek-v3")
	if r := dsv3.Router; r.Groups != 8 || r.TopKGroups != 4 || r.ScalingFactor != 2.5 || !r.Bias {
		t.Errorf("deepseek-v3 router %+v, want 8 groups, top 4, scaling 2.5, bias", r)
	}
}

func TestParameterCountsMatchTheModelsSizes(t *testing.T) {
	// Sums over the MoE layers land near the published totals' expert
	// parts: Mixtral-8x7B ≈ 45.1 B expert parameters of 46.7 B; DeepSeek-V3
	// ≈ 657 B of 671 B; Qwen3-30B-A3B ≈ 29 B of 30.5 B (1.8 B of its 3.3 B
	// active: the rest is attention and embeddings).
	for _, tc := range []struct {
		name     string
		lo, hi   float64 // billions, over all MoE layers
		activeLo float64 // billions per token, over all MoE layers
	}{
		{"mixtral-8x7b", 44, 46, 11},
		{"deepseek-v3", 650, 665, 16},
		{"qwen3-30b-a3b", 28, 30, 1.7},
	} {
		p, _ := Lookup(tc.name)
		total := float64(p.LayerParams()) * float64(p.Layers) / 1e9
		active := float64(p.ActiveParams()) * float64(p.Layers) / 1e9
		if total < tc.lo || total > tc.hi || active < tc.activeLo {
			t.Errorf("%s: %.1f B in its MoE layers (want %g–%g), %.1f B active", tc.name, total, tc.lo, tc.hi, active)
		}
	}
}

func TestLookupNamesTheChoicesForAnUnknownModel(t *testing.T) {
	if p, err := Lookup("DeepSeek-V3"); err != nil || p.Name != "deepseek-v3" {
		t.Errorf("lookup ignoring case: %v", err)
	}
	_, err := Lookup("gpt-5")
	if !errors.Is(err, ErrUnknown) || !strings.Contains(err.Error(), "mixtral-8x7b") {
		t.Errorf("got %v; want ErrUnknown listing the presets", err)
	}
}

func TestCheckCatchesInconsistentPresets(t *testing.T) {
	base, _ := Lookup("deepseek-v3")
	for _, tc := range []struct {
		name   string
		change func(*Preset)
		want   string
	}{
		{"top-k above the experts", func(p *Preset) { p.TopK = 300 }, "top-k 300"},
		{"groups that do not divide the experts", func(p *Preset) { p.Router.Groups = 7 }, "must divide"},
		{"shared experts without a width", func(p *Preset) { p.SharedFFN = 0 }, "shared experts"},
		{"more MoE layers than layers", func(p *Preset) { p.Layers = 62 }, "62 MoE layers of 61"},
		{"an unknown weight format", func(p *Preset) { p.Weights = "int3" }, "weight format"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := base
			tc.change(&p)
			if err := p.Check(); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v, want %q", err, tc.want)
			}
		})
	}
}
