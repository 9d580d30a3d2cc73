package profiler

import (
	"testing"

	"github.com/moetop/moetop/kernels"
)

const mib32 = 32 << 20

// Each cuBLAS handle: kernels.HandleBytes.
const handle = 64 << 20

func TestPeakMatchesHandCount(t *testing.T) {
	// T=4 H=8 F=16 E=2 k=1 bf16, counts [3 1]. By hand:
	// weights: router 8·2·2=32, w1 2·8·16·2=512, w2 512        = 1056
	// x 4·8·2=64, logits 4·2·4=32, out 64                     =  160
	// index: 3 arrays of 4 rows × 4 B = 48, counts etc 3·2·4=24,
	//        router bias 2·4=8                                =   80
	// common                                                  = 1296
	// dense: permuted x 64, h 4·16·2=128, y 64                 =  256
	// padded (capacity 3): x 2·3·8·2=96, h 2·3·16·2=192, y 96  =  384
	small := Config{Tokens: 4, Hidden: 8, FFN: 16, Experts: 2, TopK: 1, DType: kernels.BF16, Routing: "uniform"}
	// T=3 H=5 F=7 E=3 k=2 fp32 (4 B), counts [2 2 2], capacity factor 1.5:
	// weights 5·3·4=60 + 2·3·5·7·4=840                    = 900
	// x 3·5·4=60, logits 3·3·4=36, out 60                 = 156
	// index 3·6·4=72 + 3·3·4=36 + bias 3·4=12             = 120
	// common                                              = 1176
	// dense: 6·5·4=120, 6·7·4=168, 120                    = 408
	// padded capacity ceil(1.5·6/3)=3: 3·3·5·4=180, 3·3·7·4=252, 180 = 612
	odd := Config{Tokens: 3, Hidden: 5, FFN: 7, Experts: 3, TopK: 2, DType: kernels.FP32, Routing: "uniform",
		CapacityFactor: 1.5}
	cases := []struct {
		name    string
		c       Config
		counts  []int
		backend string
		want    uint64
	}{
		{"loop", small, []int{3, 1}, "loop", 1296 + 256 + mib32 + handle},
		{"grouped adds pointer arrays", small, []int{3, 1}, "grouped", 1296 + 256 + 6*2*8 + mib32 + handle},
		{"streams has a workspace per stream", small, []int{3, 1}, "streams", 1296 + 256 + 4*mib32 + 5*handle},
		{"padded pads to the busiest expert", small, []int{3, 1}, "padded", 1296 + 384 + mib32 + handle},
		// float32: weights 2112, x+logits+out 128+32+128, dense 512, index:
		// 4 arrays (with token of row, without bias) 64 + 24 = 88
		{"cpu stores float32, no workspace", small, []int{3, 1}, "cpu", 2112 + 288 + 88 + 512},
		{"fp32 loop", odd, []int{2, 2, 2}, "loop", 1176 + 408 + mib32 + handle},
		{"capacity factor sets padding", odd, []int{2, 2, 2}, "padded", 1176 + 612 + mib32 + handle},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Peak(tc.backend, tc.c, tc.counts)
			if err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("peak %d bytes, hand count %d", got, tc.want)
			}
		})
	}
}

func TestPaddedDoesNotFitWhereOthersDo(t *testing.T) {
	// dsv3's layer with zipf:1.2 on an 80 GB card where grouped runs and
	// 1 GiB more is taken (context, other processes): the busiest expert
	// takes ~24% of 32768 rows, so padding every expert to it needs ~66 GB
	// on top of 15 GB of weights.
	c := Config{Tokens: 4096, Hidden: 7168, FFN: 2048, Experts: 256, TopK: 8, DType: kernels.BF16,
		Routing: "zipf:1.2"}
	d, _ := ParseRouting(c.Routing, c.Experts, c.TopK)
	counts, _ := FixedCounts(d, c.Tokens*c.TopK)
	const total = 80 << 30
	own, _ := Peak("grouped", c, counts)
	free := uint64(total) - own - 1<<30
	m := Model(c, counts, "grouped", kernels.GPUBackends, free, total)
	for _, b := range m.Backends {
		wantFit := b.Backend != "padded"
		if b.Fits != wantFit {
			t.Errorf("%s: fits=%v (peak %.1f GiB), want %v", b.Backend, b.Fits, float64(b.PeakBytes)/(1<<30), wantFit)
		}
		// The largest token count must fit, and one more token must not.
		at := func(tokens int) uint64 {
			cc := c
			cc.Tokens = tokens
			sc := make([]int, len(counts))
			for i, n := range counts {
				sc[i] = n * tokens / c.Tokens
			}
			p, _ := Peak(b.Backend, cc, sc)
			return p
		}
		avail := free + m.OwnBytes
		if b.MaxTokens <= 0 || at(b.MaxTokens) > avail || at(b.MaxTokens+8) <= avail {
			t.Errorf("%s: max tokens %d does not bound the memory (%d at max, %d at max+8, %d available)",
				b.Backend, b.MaxTokens, at(b.MaxTokens), at(b.MaxTokens+8), avail)
		}
		if (b.MaxTokens >= c.Tokens) != b.Fits {
			t.Errorf("%s: max tokens %d disagrees with fits=%v at %d tokens", b.Backend, b.MaxTokens, b.Fits, c.Tokens)
		}
	}
	if m.HeadroomBytes != int64(free) || m.OwnBytes != own {
		t.Errorf("running backend's headroom %d, want the free memory %d (it holds its peak already)", m.HeadroomBytes, int64(free))
	}
}

func TestHybridPlanHasTwoHandlesAndWorkspaces(t *testing.T) {
	small := Config{Tokens: 4, Hidden: 8, FFN: 16, Experts: 2, TopK: 1, DType: kernels.BF16, Routing: "uniform"}
	got, err := Peak("hybrid", small, []int{3, 1})
	// common 1296 + dense 256 + pointer arrays 6·2·8 + two workspaces and handles
	if want := uint64(1296 + 256 + 96 + 2*mib32 + 2*handle); err != nil || got != want {
		t.Errorf("hybrid peak %d (%v), hand count %d", got, err, want)
	}
}
