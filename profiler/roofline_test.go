package profiler

import (
	"testing"

	"github.com/moetop/moetop/kernels"
	"github.com/moetop/moetop/stream"
)

// peer is shared/peer/torch_moe_peer.py's accounting of the expert GEMMs:
// flops = 2·rows·H·(F1+F); bytes = es·(nz·H·(F1+F) + rows·(2H + 2F1)).
func peer(d LayerDims, rows []int) (bytes, flops float64) {
	f1 := d.FFN
	if d.Gated {
		f1 = 2 * d.FFN
	}
	r, nz := 0, 0
	for _, n := range rows {
		r += n
		if n > 0 {
			nz++
		}
	}
	es, h := float64(d.ElemBytes), float64(d.Hidden)
	return es * (float64(nz)*h*float64(f1+d.FFN) + float64(r)*(2*h+2*float64(f1))),
		2 * float64(r) * h * float64(f1+d.FFN)
}

func TestPhaseWorkMatchesThePeersAccounting(t *testing.T) {
	uneven := func(e, total int) []int {
		rows := make([]int, e)
		for i := range rows {
			rows[i] = total / (i + 2)
		}
		rows[e-1] = 0 // an idle expert reads no weights
		return rows
	}
	for _, c := range []struct {
		name string
		d    LayerDims
		rows []int
	}{
		{"mixtral-like prefill", LayerDims{4096, 4096, 14336, 8, 2, 2, false, 0}, uneven(8, 8192)},
		{"qwen3-like decode, gated", LayerDims{128, 2048, 768, 128, 8, 2, true, 0}, uneven(128, 1024)},
		{"dsv3-like decode, gated and shared", LayerDims{128, 7168, 2048, 256, 8, 1, true, 2048}, uneven(256, 1024)},
		{"fp32 prefill, plain", LayerDims{512, 256, 1024, 8, 2, 4, false, 0}, uneven(8, 1024)},
	} {
		t.Run(c.name, func(t *testing.T) {
			w := PhaseWork(c.d, c.rows)
			wantB, wantF := peer(c.d, c.rows)
			g1, act, g2 := w[stream.PhaseGEMM1], w[stream.PhaseAct], w[stream.PhaseGEMM2]
			if got := g1.FLOPs + g2.FLOPs; got != wantF {
				t.Errorf("expert GEMM FLOPs %g, the peer counts %g", got, wantF)
			}
			// Plain experts: gemm1+gemm2 is the peer's figure. Gated: the peer
			// fuses the activation, so ours adds its output written and read.
			got := g1.Bytes + g2.Bytes
			if c.d.Gated {
				r := 0
				for _, n := range c.rows {
					r += n
				}
				got += act.Bytes - 2*float64(r*c.d.FFN*c.d.ElemBytes)
			}
			if got != wantB {
				t.Errorf("expert GEMM bytes %g, the peer counts %g", got, wantB)
			}
			sh, ok := w[stream.PhaseShared]
			if (c.d.SharedFFN > 0) != ok {
				t.Fatalf("shared phase present %v with %d shared ffn", ok, c.d.SharedFFN)
			}
			if ok {
				// A shared expert is a dense expert of every token: the peer's
				// formula with all tokens on one expert.
				d := c.d
				d.FFN, d.TopK, d.Experts = d.SharedFFN, 1, 1
				b, f := peer(d, []int{d.Tokens})
				if sh.Bytes != b || sh.FLOPs != f {
					t.Errorf("shared %g B %g FLOP, want %g and %g", sh.Bytes, sh.FLOPs, b, f)
				}
			}
		})
	}
}

func TestEachRankCarriesItsOwnWork(t *testing.T) {
	sh := kernels.Shape{Tokens: 4, Hidden: 8, FFN: 16, Experts: 4, TopK: 2, DType: kernels.BF16}
	var s stream.Sample
	FillStep(&s, sh, kernels.StepResult{Rows: []int{3, 2, 2, 1}, Devices: []kernels.DeviceStep{
		{Device: 0, Rows: []int{3, 2, 0, 0}, SentBytes: 64, Phases: []kernels.NamedPhase{{Name: "gemm1", Time: 1e6}, {Name: "dispatch", Time: 1e6}}},
		{Device: 1, Rows: []int{0, 0, 2, 1}, SentBytes: 32, Phases: []kernels.NamedPhase{{Name: "gemm1", Time: 1e6}, {Name: "dispatch", Time: 1e6}}},
	}})
	want0 := PhaseWork(dimsOf(sh), []int{3, 2, 0, 0})[stream.PhaseGEMM1]
	for _, p := range s.Phases {
		switch {
		case p.Device == 0 && p.Phase == "gemm1" && (p.FLOPs != want0.FLOPs || p.Bytes != want0.Bytes):
			t.Errorf("rank 0 gemm1 %+v, want %+v (its own rows only)", p, want0)
		case p.Device == 1 && p.Phase == "dispatch" && p.Bytes != 32:
			t.Errorf("rank 1 dispatch moved %g bytes, want the 32 it sent", p.Bytes)
		}
	}
}
