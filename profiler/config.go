// Package profiler holds the layer configuration, routing, the step loop, the
// calibration and the memory model: the sources of the sample stream.
package profiler

import (
	"fmt"
	"math"
	"math/bits"
	"strings"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// Config is one MoE layer and how it is routed.
type Config struct {
	Tokens  int                `json:"tokens"`
	Hidden  int                `json:"hidden"`
	FFN     int                `json:"ffn"`
	Experts int                `json:"experts"`
	TopK    int                `json:"top_k"`
	DType   kernels.DType      `json:"dtype"`
	Act     kernels.Activation `json:"activation"`
	Routing string             `json:"routing"`
	Seed    uint64             `json:"seed"`
	// CapacityFactor > 0 makes the backends that pad drop rows over
	// ceil(CapacityFactor·rows/experts) per expert.
	CapacityFactor float64 `json:"capacity_factor,omitempty"`
	// SharedExperts dense experts, each SharedFFN wide (0: FFN), run over
	// every token beside the routed ones (kernels.Shape.SharedWidth).
	SharedExperts int `json:"shared_experts,omitempty"`
	SharedFFN     int `json:"shared_ffn,omitempty"`
	// Router is how tokens choose experts. Groups and TopKGroups are the
	// grouped sigmoid router's n_group and topk_group (0: one group, all
	// kept); RoutedScale multiplies the weights of any router (0: 1).
	Router      kernels.RouterKind `json:"router"`
	Groups      int                `json:"router_groups,omitempty"`
	TopKGroups  int                `json:"router_topk_groups,omitempty"`
	RoutedScale float64            `json:"routed_scale,omitempty"`
	// Model is the --model preset the layer started from ("" for none).
	Model string `json:"model,omitempty"`
}

// Limits on sizes: beyond them byte counts or int32 row indices overflow.
const (
	MaxTopK    = 64
	maxIndex   = math.MaxInt32
	maxExperts = 1 << 16
)

// DefaultGPUConfig is a Mixtral-sized layer at a modest token count.
func DefaultGPUConfig() Config {
	return Config{Tokens: 4096, Hidden: 4096, FFN: 14336, Experts: 8, TopK: 2,
		DType: kernels.BF16, Act: kernels.GELU, Routing: "zipf:1.2", Seed: 1}
}

// DefaultCPUConfig steps several times a second on two cores.
func DefaultCPUConfig() Config {
	return Config{Tokens: 256, Hidden: 256, FFN: 1024, Experts: 8, TopK: 2,
		DType: kernels.BF16, Act: kernels.GELU, Routing: "zipf:1.2", Seed: 1}
}

// FieldError names the field that is wrong and what it may be.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return fmt.Sprintf("invalid %s: %s", e.Field, e.Msg) }

func fieldErr(field, format string, a ...any) error {
	return &FieldError{Field: field, Msg: fmt.Sprintf(format, a...)}
}

// Validate reports the first impossible setting, naming the field and the
// allowed range.
func (c Config) Validate() error {
	for _, f := range []struct {
		name string
		v    int
		max  int
	}{{"tokens", c.Tokens, maxIndex}, {"hidden", c.Hidden, maxIndex}, {"ffn", c.FFN, maxIndex},
		{"experts", c.Experts, maxExperts}} {
		if f.v <= 0 || f.v > f.max {
			return fieldErr(f.name, "%d is out of range; want 1..%d", f.v, f.max)
		}
	}
	if c.TopK <= 0 || c.TopK > c.Experts || c.TopK > MaxTopK {
		return fieldErr("top-k", "%d is out of range; want 1..%d (at most the number of experts, %d)",
			c.TopK, min(c.Experts, MaxTopK), c.Experts)
	}
	if c.DType < kernels.BF16 || c.DType > kernels.TF32 {
		return fieldErr("dtype", "%v is unknown; want bf16, fp16, fp32 or tf32", c.DType)
	}
	if !c.Act.Valid() {
		return fieldErr("activation", "unknown; want one of %s", strings.Join(kernels.ActivationNames(), ", "))
	}
	if c.Act.Gated() && c.FFN > maxIndex/2 {
		return fieldErr("ffn", "%d: a gated gemm1 is twice as wide; want at most %d", c.FFN, maxIndex/2)
	}
	if err := c.validateShared(); err != nil {
		return err
	}
	if err := c.validateRouter(); err != nil {
		return err
	}
	if c.CapacityFactor < 0 || math.IsNaN(c.CapacityFactor) || math.IsInf(c.CapacityFactor, 0) {
		return fieldErr("capacity-factor", "%g; want 0 (dropless) or a positive number", c.CapacityFactor)
	}
	rows, ok := mul(c.Tokens, c.TopK)
	if !ok || rows > maxIndex {
		return fieldErr("tokens", "tokens × top-k = %d×%d overflows a 32-bit row index; want at most %d rows",
			c.Tokens, c.TopK, maxIndex)
	}
	// Every tensor's element count must fit an int and its bytes a uint64
	// (gated tensors are twice as wide: counted as if every one were).
	type dims struct {
		name string
		dims []int
	}
	tensors := []dims{
		{"ffn", []int{c.Experts, c.Hidden, c.FFN, 2}}, // expert weights
		{"ffn", []int{rows, c.FFN, 2}},                // intermediate h
		{"hidden", []int{rows, c.Hidden}},             // permuted x
		{"experts", []int{c.Tokens, c.Experts}},       // logits
	}
	if w := c.Shape().SharedWidth(); w > 0 {
		tensors = append(tensors, dims{"shared-ffn", []int{c.Hidden, w, 2}}, dims{"shared-ffn", []int{c.Tokens, w, 2}})
	}
	for _, f := range tensors {
		n := 1
		for _, d := range f.dims {
			var ok bool
			if n, ok = mul(n, d); !ok {
				break
			}
		}
		if _, ok := mul(n, 8); !ok || n <= 0 {
			return fieldErr(f.name, "a tensor of %v elements overflows a 64-bit byte count", f.dims)
		}
	}
	if _, err := ParseRouting(c.Routing, c.Experts, c.TopK); err != nil {
		return fieldErr("routing", "%v", err)
	}
	return nil
}

// maxShared is the most shared experts a layer may have: real models have
// one or two.
const maxShared = 64

// validateShared checks the shared experts: a count, and a width only with
// a count (a width alone would be ignored). The width all together is
// cuBLAS's n, a 32-bit int, twice over when gated.
func (c Config) validateShared() error {
	switch {
	case c.SharedExperts < 0 || c.SharedExperts > maxShared:
		return fieldErr("shared-experts", "%d is out of range; want 0..%d", c.SharedExperts, maxShared)
	case c.SharedFFN < 0:
		return fieldErr("shared-ffn", "%d is negative; want a width, or 0 for the routed experts' ffn", c.SharedFFN)
	case c.SharedFFN > 0 && c.SharedExperts == 0:
		return fieldErr("shared-ffn", "%d without shared experts; set --shared-experts too", c.SharedFFN)
	}
	f := c.SharedFFN
	if f == 0 {
		f = c.FFN
	}
	if w, ok := mul(c.SharedExperts, f); !ok || w > maxIndex/2 {
		return fieldErr("shared-ffn", "%d shared experts × %d is too wide; want at most %d all together",
			c.SharedExperts, f, maxIndex/2)
	}
	return nil
}

// validateRouter checks the router against the experts and top-k.
func (c Config) validateRouter() error {
	if !c.Router.Valid() {
		return fieldErr("router", "unknown; want one of %s", strings.Join(kernels.RouterNames(), ", "))
	}
	if c.RoutedScale < 0 || math.IsNaN(c.RoutedScale) || math.IsInf(c.RoutedScale, 0) || c.RoutedScale > math.MaxFloat32 {
		return fieldErr("routed-scale", "%g; want a positive number (1: none)", c.RoutedScale)
	}
	if c.Router != kernels.SigmoidGrouped {
		if c.Groups != 0 || c.TopKGroups != 0 {
			return fieldErr("groups", "expert groups (%d, top %d) need the %s router", c.Groups, c.TopKGroups, kernels.SigmoidGrouped)
		}
		return nil
	}
	g := max(1, c.Groups)
	switch {
	case c.Groups < 0 || c.Groups > kernels.MaxGroups:
		return fieldErr("groups", "%d is out of range; want 1..%d", c.Groups, kernels.MaxGroups)
	case c.Experts%g != 0:
		return fieldErr("groups", "%d does not divide the %d experts", g, c.Experts)
	case c.TopKGroups < 0 || c.TopKGroups > g:
		return fieldErr("topk-groups", "%d is out of range; want 1..%d (at most the groups)", c.TopKGroups, g)
	}
	kept := g
	if c.TopKGroups > 0 {
		kept = c.TopKGroups
	}
	if most := kept * (c.Experts / g); c.TopK > most {
		return fieldErr("top-k", "%d experts from %d kept groups of %d is impossible; want at most %d",
			c.TopK, kept, c.Experts/g, most)
	}
	return nil
}

// mul multiplies non-negative ints, reporting overflow.
func mul(a, b int) (int, bool) {
	hi, lo := bits.Mul64(uint64(a), uint64(b))
	if hi != 0 || lo > math.MaxInt64 {
		return 0, false
	}
	return int(lo), true
}

// Layer is the config as the stream carries it.
func (c Config) Layer() stream.Layer {
	return stream.Layer{Tokens: c.Tokens, Hidden: c.Hidden, FFN: c.FFN, Experts: c.Experts, TopK: c.TopK,
		DType: c.DType.String(), Act: c.Act.String(), Routing: c.Routing, Seed: c.Seed, CapacityFactor: c.CapacityFactor,
		SharedExperts: c.SharedExperts, SharedFFN: c.SharedFFN, Router: c.Router.String(),
		RouterGroups: c.Groups, RouterTopKGroups: c.TopKGroups, RoutedScale: c.RoutedScale, Model: c.Model}
}

// ConfigOf reads a config back from the stream's form (a log's header).
// A moetop/1 log names no router: its layers ran the softmax router.
func ConfigOf(l stream.Layer) (Config, error) {
	c := Config{Tokens: l.Tokens, Hidden: l.Hidden, FFN: l.FFN, Experts: l.Experts, TopK: l.TopK,
		Routing: l.Routing, Seed: l.Seed, CapacityFactor: l.CapacityFactor,
		SharedExperts: l.SharedExperts, SharedFFN: l.SharedFFN,
		Groups: l.RouterGroups, TopKGroups: l.RouterTopKGroups, RoutedScale: l.RoutedScale, Model: l.Model}
	if err := c.DType.UnmarshalText([]byte(l.DType)); err != nil {
		return c, fieldErr("dtype", "%v", err)
	}
	if err := c.Act.UnmarshalText([]byte(l.Act)); err != nil {
		return c, fieldErr("activation", "%v", err)
	}
	if err := c.Router.UnmarshalText([]byte(l.Router)); err != nil {
		return c, fieldErr("router", "%v", err)
	}
	return c, c.Validate()
}

// Shape is what a backend needs of the config.
func (c Config) Shape() kernels.Shape {
	return kernels.Shape{Tokens: c.Tokens, Hidden: c.Hidden, FFN: c.FFN, Experts: c.Experts,
		TopK: c.TopK, DType: c.DType, Act: c.Act, Seed: c.Seed, CapacityFactor: c.CapacityFactor,
		SharedExperts: c.SharedExperts, SharedFFN: c.SharedFFN,
		Router: kernels.Router{Kind: c.Router, Groups: c.Groups, TopKGroups: c.TopKGroups, Scale: float32(c.RoutedScale)}}
}

// String is the shape as a person reads it; the shared experts and the
// router only where they are not the default (none, softmax).
func (c Config) String() string {
	s := fmt.Sprintf("T=%d H=%d F=%d E=%d k=%d %s %s", c.Tokens, c.Hidden, c.FFN, c.Experts, c.TopK, c.DType, c.Act)
	if w := c.Shape().SharedWidth(); w > 0 {
		s += fmt.Sprintf(" shared %d×%d", c.SharedExperts, w/c.SharedExperts)
	}
	if r := c.Shape().Router; r.Kind != kernels.Softmax || r.WeightScale() != 1 {
		s += " " + r.String()
	}
	return s
}
