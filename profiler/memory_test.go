package profiler

import (
	"errors"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels"
)

// The GPU backends' plans are tested in kernels/cuda, beside them (this
// package builds without cgo). Here two test backends stand for them: the
// model must predict for every backend registered where the running one
// runs, from the registry alone.
func init() {
	// test-dense holds the common buffers and dense rows; test-padded pads
	// every expert to the busiest, so it grows faster with skew.
	kernels.Register(kernels.Registration{Name: "test-dense", Doc: "dense", Order: 1, NeedsGPU: true,
		Plan: func(s kernels.Shape, _ []int) ([]kernels.Buffer, error) {
			return append(kernels.CommonBuffers(s, 2), kernels.DenseRows(s, 2)...), nil
		},
		New: func(kernels.Options) (kernels.Backend, error) { return kernels.NewCPU(), nil }})
	kernels.Register(kernels.Registration{Name: "test-padded", Doc: "padded", Order: 2, NeedsGPU: true,
		Supports: func(c kernels.Caps, _ kernels.Shape) error {
			if c.Major < 9 {
				return errors.New("needs compute capability 9.0")
			}
			return nil
		},
		Plan: func(s kernels.Shape, counts []int) ([]kernels.Buffer, error) {
			busiest := 0
			for _, c := range counts {
				busiest = max(busiest, c)
			}
			pad := s
			pad.Tokens, pad.TopK = busiest*s.Experts, 1
			return append(kernels.CommonBuffers(s, 2), kernels.DenseRows(pad, 2)...), nil
		},
		New: func(kernels.Options) (kernels.Backend, error) { return kernels.NewCPU(), nil }})
	// A second backend on the host, beside cpu.
	kernels.Register(kernels.Registration{Name: "test-host", Doc: "host", Order: 200,
		Plan: func(s kernels.Shape, _ []int) ([]kernels.Buffer, error) { return kernels.CommonBuffers(s, 4), nil },
		New:  func(kernels.Options) (kernels.Backend, error) { return kernels.NewCPU(), nil }})
}

func TestPeakIsThePlansTotal(t *testing.T) {
	c := Config{Tokens: 4, Hidden: 8, FFN: 16, Experts: 2, TopK: 1, DType: kernels.BF16, Routing: "uniform"}
	plan, _ := kernels.Plan("test-padded", c.Shape(), []int{3, 1})
	got, err := Peak("test-padded", c, []int{3, 1})
	if err != nil || got != kernels.Total(plan) || got == 0 {
		t.Errorf("peak %d (%v), plan total %d", got, err, kernels.Total(plan))
	}
	if _, err := Peak("nonesuch", c, nil); err == nil {
		t.Error("a peak for an unregistered backend")
	}
}

func TestModelPredictsForEveryPeerOfTheRunningBackend(t *testing.T) {
	// A skewed load: padding every expert to the busiest needs far more.
	// The load is the capped one a router can give (bench's, the
	// calibration's): the busiest expert holds at most one row per token.
	c := Config{Tokens: 4096, Hidden: 1024, FFN: 4096, Experts: 64, TopK: 4, DType: kernels.BF16, Routing: "zipf:1.2"}
	d, _ := ParseRouting(c.Routing, c.Experts, c.TopK)
	counts, err := CappedCounts(d, c.Tokens, c.TopK)
	if err != nil {
		t.Fatal(err)
	}
	own, _ := Peak("test-dense", c, counts)
	padded, _ := Peak("test-padded", c, counts)
	free := padded - own - 1 // the padded peak misses by a byte
	const total = 80 << 30
	m := Model(c, counts, "test-dense", kernels.Caps{GPU: true, Major: 9}, free, total)
	if len(m.Backends) != 2 || m.Backends[0].Backend != "test-dense" || m.Backends[1].Backend != "test-padded" {
		t.Fatalf("model for %+v, want test-dense and test-padded in order (the GPU peers, not the host's)", m.Backends)
	}
	if !m.Backends[0].Fits || m.Backends[1].Fits {
		t.Errorf("fits: dense %v, padded %v; want true, false", m.Backends[0].Fits, m.Backends[1].Fits)
	}
	avail := free + own
	for _, b := range m.Backends {
		// The largest token count must fit, and a few more tokens must not.
		at := func(tokens int) uint64 {
			cc := c
			cc.Tokens = tokens
			p, _ := Peak(b.Backend, cc, scaleCounts(counts, tokens*c.TopK))
			return p
		}
		if b.MaxTokens <= 0 || at(b.MaxTokens) > avail || at(b.MaxTokens+8) <= avail {
			t.Errorf("%s: max tokens %d does not bound the memory (%d at max, %d at max+8, %d available)",
				b.Backend, b.MaxTokens, at(b.MaxTokens), at(b.MaxTokens+8), avail)
		}
		if (b.MaxTokens >= c.Tokens) != b.Fits {
			t.Errorf("%s: max tokens %d disagrees with fits=%v at %d tokens", b.Backend, b.MaxTokens, b.Fits, c.Tokens)
		}
	}
	if m.OwnBytes != own || m.HeadroomBytes != int64(free) {
		t.Errorf("own %d, headroom %d; want %d and the free memory %d (it holds its peak already)", m.OwnBytes, m.HeadroomBytes, own, free)
	}
	if m := Model(c, counts, "nonesuch", kernels.Caps{}, free, total); len(m.Backends) != 0 || m.OwnBytes != 0 {
		t.Errorf("an unregistered running backend: %+v", m)
	}
}

func TestModelSaysWhichBackendsCannotRunHere(t *testing.T) {
	c := Config{Tokens: 64, Hidden: 32, FFN: 64, Experts: 4, TopK: 2, DType: kernels.BF16, Routing: "uniform"}
	counts := []int{32, 32, 32, 32}
	for _, tc := range []struct {
		name    string
		caps    kernels.Caps
		refused string // test-padded's; test-dense is never refused
	}{
		{"an older GPU refuses what needs a newer one", kernels.Caps{GPU: true, Major: 8}, "needs compute capability 9.0"},
		{"a newer GPU refuses nothing", kernels.Caps{GPU: true, Major: 9}, ""},
		{"unknown caps refuse nothing", kernels.Caps{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			m := Model(c, counts, "test-dense", tc.caps, 1<<30, 2<<30)
			if len(m.Backends) != 2 || m.Backends[0].Refused != "" {
				t.Fatalf("backends %+v", m.Backends)
			}
			got := m.Backends[1].Refused
			if (tc.refused == "") != (got == "") || !strings.Contains(got, tc.refused) {
				t.Errorf("test-padded refused %q, want %q", got, tc.refused)
			}
		})
	}
}
