// Package profiler holds the layer configuration, routing, the step loop, the
// calibration and the memory model: the sources of the sample stream.
package profiler

import (
	"fmt"
	"math"
	"math/bits"

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
	if c.Act != kernels.GELU && c.Act != kernels.SiLU {
		return fieldErr("activation", "unknown; want gelu or silu")
	}
	if c.CapacityFactor < 0 || math.IsNaN(c.CapacityFactor) || math.IsInf(c.CapacityFactor, 0) {
		return fieldErr("capacity-factor", "%g; want 0 (dropless) or a positive number", c.CapacityFactor)
	}
	rows, ok := mul(c.Tokens, c.TopK)
	if !ok || rows > maxIndex {
		return fieldErr("tokens", "tokens × top-k = %d×%d overflows a 32-bit row index; want at most %d rows",
			c.Tokens, c.TopK, maxIndex)
	}
	// Every tensor's element count must fit an int and its bytes a uint64.
	for _, f := range []struct {
		name string
		dims []int
	}{
		{"ffn", []int{c.Experts, c.Hidden, c.FFN}}, // expert weights
		{"ffn", []int{rows, c.FFN}},                // intermediate h
		{"hidden", []int{rows, c.Hidden}},          // permuted x
		{"experts", []int{c.Tokens, c.Experts}},    // logits
	} {
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
		DType: c.DType.String(), Act: c.Act.String(), Routing: c.Routing, Seed: c.Seed, CapacityFactor: c.CapacityFactor}
}

// ConfigOf reads a config back from the stream's form (a log's header).
func ConfigOf(l stream.Layer) (Config, error) {
	c := Config{Tokens: l.Tokens, Hidden: l.Hidden, FFN: l.FFN, Experts: l.Experts, TopK: l.TopK,
		Routing: l.Routing, Seed: l.Seed, CapacityFactor: l.CapacityFactor}
	if err := c.DType.UnmarshalText([]byte(l.DType)); err != nil {
		return c, fieldErr("dtype", "%v", err)
	}
	if err := c.Act.UnmarshalText([]byte(l.Act)); err != nil {
		return c, fieldErr("activation", "%v", err)
	}
	return c, c.Validate()
}

// Shape is what a backend needs of the config.
func (c Config) Shape() kernels.Shape {
	return kernels.Shape{Tokens: c.Tokens, Hidden: c.Hidden, FFN: c.FFN, Experts: c.Experts,
		TopK: c.TopK, DType: c.DType, Act: c.Act, Seed: c.Seed, CapacityFactor: c.CapacityFactor}
}

// String is the shape as a person reads it.
func (c Config) String() string {
	return fmt.Sprintf("T=%d H=%d F=%d E=%d k=%d %s %s", c.Tokens, c.Hidden, c.FFN, c.Experts, c.TopK, c.DType, c.Act)
}
