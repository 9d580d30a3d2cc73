package cuda

import (
	"context"
	"strings"
	"testing"

	"github.com/moetop/moetop/ep"
	"github.com/moetop/moetop/kernels"
)

// The index arrays the GPU ranks upload (packSends, readRecvCounts,
// groupReceived) drive the layer kernels' gather and combine. Here the
// kernels are played on the host, exactly as layer.cu defines them, over
// those arrays and the transfers the NCCL groups make: the result must be
// the CPU reference over the whole batch. This checks every index without
// a GPU; what it cannot check is NCCL and the kernels themselves.
func TestTheGPURanksIndexArraysComputeTheReferenceLayer(t *testing.T) {
	base := kernels.Shape{Tokens: 13, Hidden: 6, FFN: 5, Experts: 8, TopK: 2, DType: kernels.FP32, Seed: 5}
	cases := []struct {
		name     string
		ranks    int
		topK     int
		act      kernels.Activation
		replicas [][]int
		starve   []int
	}{
		{"two ranks, top-2", 2, 2, kernels.GELU, nil, nil},
		{"four ranks, top-4: tokens reach several ranks once each", 4, 4, kernels.GELU, nil, nil},
		{"gated activation over three ranks", 3, 3, kernels.SwiGLU, nil, nil},
		{"replicas are served on the source's own rank or round-robin", 2, 2, kernels.GELU,
			[][]int{{0, 1}, {0}, {0}, {0}, {1}, {1}, {1}, {1, 0}}, nil},
		{"a rank whose experts are starved receives nothing", 2, 2, kernels.GELU, nil, []int{4, 5, 6, 7}},
		{"top-k of every expert", 2, 8, kernels.GELU, nil, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := base
			s.TopK, s.Act = tc.topK, tc.act
			N, T, K, E, H := tc.ranks, s.Tokens, s.TopK, s.Experts, s.Hidden
			var p *ep.Placement
			var err error
			if tc.replicas != nil {
				p, err = ep.NewPlacement(N, tc.replicas)
			} else {
				p, err = ep.Contiguous(E, N)
			}
			if err != nil {
				t.Fatal(err)
			}
			bias := make([]float32, E)
			for _, e := range tc.starve {
				bias[e] = -1e4
			}
			whole := s
			whole.Tokens = N * T
			ctx := context.Background()
			cpu := kernels.NewCPU()
			if err := cpu.Prepare(ctx, whole); err != nil {
				t.Fatal(err)
			}
			if _, err := cpu.Step(ctx, kernels.StepInput{Bias: bias}); err != nil {
				t.Fatal(err)
			}
			want, _ := cpu.Output()
			route, _ := cpu.Routing()

			// Senders: plan, pack, gather (k = ranks).
			packs := make([]sends, N)
			sendX := make([][]float32, N)
			for r := range N {
				ids, w := route.IDs[r*T*K:(r+1)*T*K], route.Weights[r*T*K:(r+1)*T*K]
				plan, err := ep.PlanSource(p, r, ids, K)
				if err != nil {
					t.Fatal(err)
				}
				packs[r] = packSends(plan, w, T, E)
				x := kernels.InputRows(s, r*T, T)
				sendX[r] = make([]float32, N*T*H)
				gatherHost(x, packs[r].rowOf, N, H, sendX[r])
			}
			// Receivers: counts, then each source's block of slots,
			// weights and rows, in source order.
			sums := make([][]float32, N)
			recvAt := make([][]int, N)
			recvTok := make([][]int, N)
			for r := range N {
				var counts []int32
				for src := range N {
					counts = append(counts, packs[src].counts[r*(1+E):(r+1)*(1+E)]...)
				}
				holds := make([]bool, E)
				for _, e := range p.Local(r) {
					holds[e] = true
				}
				tok, at, expertRows, err := readRecvCounts(counts, N, E, T, r, holds)
				if err != nil {
					t.Fatal(err)
				}
				recvAt[r], recvTok[r] = at, tok
				var ids []int32
				var w, x []float32
				for src := range N {
					a, n := packs[src].at[r], tok[src]
					ids = append(ids, packs[src].slots[a*K:(a+n)*K]...)
					w = append(w, packs[src].weights[a*K:(a+n)*K]...)
					x = append(x, sendX[src][a*H:(a+n)*H]...)
				}
				R := len(ids) / K
				rowOf, off, pairs, err := groupReceived(ids, r, p.Local(r), holds, expertRows)
				if err != nil {
					t.Fatal(err)
				}
				px := make([]float32, pairs*H)
				gatherHost(x, rowOf[:R*K], K, H, px)
				c1, f := s.W1Cols(), s.FFN
				hid := make([]float32, pairs*c1)
				for _, e := range p.Local(r) {
					w1, _ := kernels.ExpertWeights(s, e)
					kernels.MatMul(hid[off[e]*c1:], px[off[e]*H:], expertRows[e], H, w1, c1)
				}
				hid = kernels.ActivateRows(hid, pairs, f, s.Act)
				y := make([]float32, pairs*H)
				for _, e := range p.Local(r) {
					_, w2 := kernels.ExpertWeights(s, e)
					kernels.MatMul(y[off[e]*H:], hid[off[e]*f:], expertRows[e], f, w2, H)
				}
				sums[r] = make([]float32, R*H)
				combineHost(y, rowOf[:R*K], w, K, H, sums[r])
			}
			// Combine: each receiver's sums go back to their source, in the
			// order they came, and the source sums them (weights 1).
			var got []float32
			for src := range N {
				back := make([]float32, N*T*H)
				for r := range N {
					a, n := recvAt[r][src], recvTok[r][src]
					copy(back[packs[src].at[r]*H:], sums[r][a*H:(a+n)*H])
				}
				ones := make([]float32, T*N)
				for i := range ones {
					ones[i] = 1
				}
				out := make([]float32, T*H)
				combineHost(back, packs[src].rowOf, ones, N, H, out)
				got = append(got, out...)
			}
			if e := kernels.RelErr(got, want); !(e <= 1e-5) {
				t.Errorf("rel err %.3g against the CPU reference", e)
			}
		})
	}
}

// gatherHost is layer.cu's gather: slot i copies row i/k of x to row
// rowOf[i] of xp.
func gatherHost(x []float32, rowOf []int32, k, hidden int, xp []float32) {
	for i, r := range rowOf {
		if r >= 0 {
			copy(xp[int(r)*hidden:(int(r)+1)*hidden], x[(i/k)*hidden:(i/k+1)*hidden])
		}
	}
}

// combineHost is layer.cu's combine without shared experts: out[t] = Σ_j
// w[t·k+j]·y[rowOf[t·k+j]] over the rows that are not −1.
func combineHost(y []float32, rowOf []int32, w []float32, k, hidden int, out []float32) {
	for t := range len(out) / hidden {
		for c := range hidden {
			acc := float32(0)
			for j := range k {
				if r := rowOf[t*k+j]; r >= 0 {
					acc += w[t*k+j] * y[int(r)*hidden+c]
				}
			}
			out[t*hidden+c] = acc
		}
	}
}

func TestReceivedCountsAndSlotsThatCannotBeAreRefused(t *testing.T) {
	holds := []bool{true, true, false, false} // rank 0 of 2 holds experts 0 and 1
	local := []int{0, 1}
	cases := []struct {
		name   string
		counts []int32 // 2 sources × (tokens, 4 experts)
		ids    []int32 // top-2 slots of the received tokens
		want   string
	}{
		{"more tokens than a rank holds", []int32{9, 0, 0, 0, 0, 0, 0, 0, 0, 0}, nil, "sends 9 tokens"},
		{"rows of an expert held elsewhere", []int32{1, 0, 0, 1, 0, 0, 0, 0, 0, 0}, nil, "does not hold"},
		{"more rows than tokens", []int32{1, 3, 0, 0, 0, 0, 0, 0, 0, 0}, nil, "rows of expert 0 in 1 tokens"},
		{"a slot of an expert held elsewhere", []int32{1, 1, 0, 0, 0, 0, 0, 0, 0, 0}, []int32{0, 3}, "expert 3"},
		{"more slots than announced", []int32{1, 1, 0, 0, 0, 0, 0, 0, 0, 0}, []int32{0, 0}, "more slots of expert 0"},
		{"fewer slots than announced", []int32{1, 1, 1, 0, 0, 0, 0, 0, 0, 0}, []int32{0, -1}, "received 0 slots of expert 1"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, _, rows, err := readRecvCounts(tc.counts, 2, 4, 4, 0, holds)
			if err == nil {
				_, _, _, err = groupReceived(tc.ids, 0, local, holds, rows)
			}
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error saying %q", err, tc.want)
			}
		})
	}
}

func TestExchangeBuffersAreSizedForTheWorstStep(t *testing.T) {
	var eb epBuffers
	s := kernels.Shape{Tokens: 4, Hidden: 8, FFN: 8, Experts: 4, TopK: 2, DType: kernels.FP32}
	if n, m := len(exchangeSizes(s, 2, 2)), len(eb.all()); n != m || n != len(exchangeNames) {
		t.Fatalf("%d sizes, %d buffers, %d names", n, m, len(exchangeNames))
	}
	cases := []struct {
		name  string
		shape kernels.Shape
		ranks int
		local int
		want  uint64
	}{
		// counts 80, send 416, recv 448, pairs 2·4·2 = 16 rows: 1536,
		// combine and wait 548.
		{"two ranks of two experts in fp32", s, 2, 2, 3028},
		// One local expert: 8 pair rows, experts' buffers halve (768).
		{"a rank of one expert runs at most one row per token", s, 2, 1, 2260},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			var got uint64
			for _, b := range exchangeSizes(tc.shape, tc.ranks, tc.local) {
				got += b
			}
			if got != tc.want {
				t.Errorf("the exchange buffers hold %d bytes, want %d", got, tc.want)
			}
		})
	}
}
