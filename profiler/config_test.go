package profiler

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels"
)

func TestValidateRejectsImpossibleConfigs(t *testing.T) {
	ok := DefaultCPUConfig()
	cases := []struct {
		name  string
		edit  func(*Config)
		field string
	}{
		{"zero tokens", func(c *Config) { c.Tokens = 0 }, "tokens"},
		{"negative tokens", func(c *Config) { c.Tokens = -5 }, "tokens"},
		{"zero hidden", func(c *Config) { c.Hidden = 0 }, "hidden"},
		{"negative ffn", func(c *Config) { c.FFN = -1 }, "ffn"},
		{"no experts", func(c *Config) { c.Experts = 0 }, "experts"},
		{"top-k above experts", func(c *Config) { c.TopK = 9 }, "top-k"},
		{"top-k zero", func(c *Config) { c.TopK = 0 }, "top-k"},
		{"unknown dtype", func(c *Config) { c.DType = kernels.DType(9) }, "dtype"},
		{"unknown activation", func(c *Config) { c.Act = kernels.Activation(7) }, "activation"},
		{"unknown routing", func(c *Config) { c.Routing = "pareto" }, "routing"},
		{"zipf without exponent", func(c *Config) { c.Routing = "zipf:" }, "routing"},
		{"hot expert out of range", func(c *Config) { c.Routing = "hot:8:0.5" }, "routing"},
		{"hot share above one", func(c *Config) { c.Routing = "hot:1:1.5" }, "routing"},
		{"trace file missing", func(c *Config) { c.Routing = "trace:/nonexistent/trace.jsonl" }, "routing"},
		{"negative capacity factor", func(c *Config) { c.CapacityFactor = -1 }, "capacity-factor"},
		{"rows overflow int32", func(c *Config) { c.Tokens = 1 << 30; c.TopK = 8; c.Experts = 8 }, "tokens"},
		{"weight bytes overflow", func(c *Config) {
			c.Experts = 60000
			c.Hidden = 1 << 30
			c.FFN = 1 << 30
		}, "ffn"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := ok
			tc.edit(&c)
			err := c.Validate()
			var fe *FieldError
			if !errors.As(err, &fe) {
				t.Fatalf("Validate() = %v, want a FieldError", err)
			}
			if fe.Field != tc.field {
				t.Errorf("field %q, want %q (%v)", fe.Field, tc.field, err)
			}
			if strings.Contains(err.Error(), "\n") {
				t.Errorf("error spans lines: %q", err)
			}
		})
	}
	if err := ok.Validate(); err != nil {
		t.Fatalf("default config invalid: %v", err)
	}
	if err := DefaultGPUConfig().Validate(); err != nil {
		t.Fatalf("default GPU config invalid: %v", err)
	}
}

func TestMulDetectsOverflow(t *testing.T) {
	if _, ok := mul(math.MaxInt64/2+1, 2); ok {
		t.Fatal("overflow not detected")
	}
	if v, ok := mul(3, 5); !ok || v != 15 {
		t.Fatalf("mul(3,5) = %d, %v", v, ok)
	}
}
