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
		{"unknown router", func(c *Config) { c.Router = kernels.RouterKind(5) }, "router"},
		{"groups on the softmax router", func(c *Config) { c.Groups = 2 }, "groups"},
		{"groups that do not divide the experts", func(c *Config) { c.Router = kernels.SigmoidGrouped; c.Groups = 3 }, "groups"},
		{"more groups than the GPU router holds", func(c *Config) {
			c.Router, c.Experts, c.Groups = kernels.SigmoidGrouped, 256, 128
		}, "groups"},
		{"more kept groups than groups", func(c *Config) {
			c.Router, c.Groups, c.TopKGroups = kernels.SigmoidGrouped, 4, 5
		}, "topk-groups"},
		{"top-k beyond the kept groups", func(c *Config) {
			c.Router, c.Groups, c.TopKGroups, c.TopK = kernels.SigmoidGrouped, 4, 1, 3
		}, "top-k"},
		{"negative routed scale", func(c *Config) { c.RoutedScale = -2 }, "routed-scale"},
		{"infinite routed scale", func(c *Config) { c.RoutedScale = math.Inf(1) }, "routed-scale"},
		{"negative shared experts", func(c *Config) { c.SharedExperts = -1 }, "shared-experts"},
		{"a shared width without shared experts", func(c *Config) { c.SharedFFN = 512 }, "shared-ffn"},
		{"shared experts too wide for cuBLAS", func(c *Config) { c.SharedExperts, c.SharedFFN = 2, 1<<30 }, "shared-ffn"},
		{"a gated ffn too wide for cuBLAS", func(c *Config) { c.Act, c.FFN = kernels.SwiGLU, 1<<30+1 }, "ffn"},
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

func TestConfigsWithEveryLayerFormAreValid(t *testing.T) {
	for _, c := range []Config{
		{Tokens: 64, Hidden: 32, FFN: 16, Experts: 256, TopK: 8, DType: kernels.BF16, Act: kernels.SwiGLU, Routing: "uniform",
			SharedExperts: 1, SharedFFN: 16, Router: kernels.SigmoidGrouped, Groups: 8, TopKGroups: 4, RoutedScale: 2.5},
		{Tokens: 64, Hidden: 32, FFN: 16, Experts: 64, TopK: 6, DType: kernels.BF16, Act: kernels.GeGLU, Routing: "uniform",
			SharedExperts: 2, Router: kernels.SoftmaxNoNorm},
		{Tokens: 64, Hidden: 32, FFN: 16, Experts: 8, TopK: 8, DType: kernels.FP32, Act: kernels.SiLU, Routing: "uniform",
			Router: kernels.SigmoidGrouped, Groups: 4, TopKGroups: 4},
	} {
		if err := c.Validate(); err != nil {
			t.Errorf("%s: %v", c, err)
		}
	}
}

// A config goes into a log's header and comes back the same; a moetop/1
// header, which names no router, reads as the softmax router.
func TestLayerRoundTripsEveryField(t *testing.T) {
	c := Config{Tokens: 64, Hidden: 32, FFN: 16, Experts: 16, TopK: 4, DType: kernels.BF16, Act: kernels.SwiGLU,
		Routing: "zipf:1.2", Seed: 3, SharedExperts: 2, SharedFFN: 8, Router: kernels.SigmoidGrouped, Groups: 4,
		TopKGroups: 2, RoutedScale: 2.5}
	l := c.Layer()
	if l.Router != "sigmoid-grouped" || l.SharedExperts != 2 || l.SharedFFN != 8 || l.RouterGroups != 4 ||
		l.RouterTopKGroups != 2 || l.RoutedScale != 2.5 || l.Act != "swiglu" {
		t.Errorf("layer %+v does not carry the config's router and shared experts", l)
	}
	back, err := ConfigOf(l)
	if err != nil || back != c {
		t.Errorf("read back %+v, %v; want %+v", back, err, c)
	}
	v1 := DefaultCPUConfig().Layer()
	v1.Router = ""
	if back, err := ConfigOf(v1); err != nil || back.Router != kernels.Softmax {
		t.Errorf("a header without a router read as %v, %v", back.Router, err)
	}
	v1.Router = "top1"
	if _, err := ConfigOf(v1); err == nil {
		t.Error("an unknown router in a header was accepted")
	}
}

func TestConfigStringNamesOnlyWhatIsNotTheDefault(t *testing.T) {
	c := DefaultCPUConfig()
	if s := c.String(); strings.Contains(s, "shared") || strings.Contains(s, "softmax") {
		t.Errorf("default config %q names the defaults", s)
	}
	c.Act, c.SharedExperts, c.Router, c.Groups, c.TopKGroups, c.RoutedScale = kernels.SwiGLU, 1, kernels.SigmoidGrouped, 4, 2, 2.5
	want := "T=256 H=256 F=1024 E=8 k=2 bf16 swiglu shared 1×1024 sigmoid-grouped(2/4 groups)×2.5"
	if s := c.String(); s != want {
		t.Errorf("got %q, want %q", s, want)
	}
}
