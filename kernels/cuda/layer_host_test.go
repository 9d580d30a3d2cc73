package cuda

import (
	"bufio"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/moetop/moetop/kernels"
)

// layer.cu's kernels, compiled as host C++ and run one thread at a time,
// against the Go reference: the router (every kind), the activation
// (gated rows in place) and combine (with the shared experts' output).
// None of them uses shared memory or synchronises threads, so running a
// grid's threads one after another computes what the GPU does; the device
// build differs only in the 16-bit conversions (PTX cvt there, the same
// round-to-nearest-even here) and the libraries behind expf and erff.
// This is what can be checked without a GPU; the GPU test
// (TestBackendsMatchCPUReference) checks the whole step on the device.

// hostPrelude stands in for what NVRTC gives layer.cu: the CUDA keywords,
// the thread indices, atomicAdd, and the moetop_host_* conversions that
// replace layer.cu's inline PTX off the device (kernels.FloatToBF16 and
// FloatToHalf, ported).
const hostPrelude = `#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#define __global__
#define __device__
#define __forceinline__ inline
struct moetop_dim3 { unsigned x, y, z; };
static moetop_dim3 blockIdx, threadIdx, blockDim, gridDim;
static inline int atomicAdd(int *p, int v) { int o = *p; *p += v; return o; }
static inline float moetop_host_bits_f(uint32_t b) { float f; memcpy(&f, &b, 4); return f; }
static inline uint32_t moetop_host_f_bits(float f) { uint32_t b; memcpy(&b, &f, 4); return b; }
static inline unsigned short moetop_host_f_bf16(float f) {
	uint32_t u = moetop_host_f_bits(f);
	if ((u & 0x7fffffff) > 0x7f800000) return (unsigned short)((u >> 16) | 0x40);
	u += 0x7fff + ((u >> 16) & 1);
	return (unsigned short)(u >> 16);
}
static inline unsigned short moetop_host_f_half(float f) {
	uint32_t u = moetop_host_f_bits(f);
	uint32_t sign = (u >> 16) & 0x8000;
	int32_t exp = (int32_t)((u >> 23) & 0xff) - 127 + 15;
	uint32_t man = u & 0x7fffff;
	if ((u & 0x7fffffff) > 0x7f800000) return (unsigned short)(sign | 0x7e00);
	if ((u & 0x7fffffff) == 0x7f800000 || exp >= 31) return (unsigned short)(sign | 0x7c00);
	if (exp <= 0) {
		if (exp < -10) return (unsigned short)sign;
		man |= 0x800000;
		uint32_t shift = (uint32_t)(14 - exp);
		uint32_t half = man >> shift, rem = man & ((1u << shift) - 1), mid = 1u << (shift - 1);
		if (rem > mid || (rem == mid && (half & 1))) half++;
		return (unsigned short)(sign | half);
	}
	uint32_t half = ((uint32_t)exp << 10) | (man >> 13), rem = man & 0x1fff;
	if (rem > 0x1000 || (rem == 0x1000 && (half & 1))) half++;
	return (unsigned short)(sign | half);
}
static inline float moetop_host_half_f(unsigned short h) {
	uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
	if (exp == 0) {
		float f = (float)man / 1024.0f / 16384.0f;
		return sign ? -f : f;
	}
	if (exp == 31) return moetop_host_bits_f(sign | 0x7f800000 | man << 13);
	return moetop_host_bits_f(sign | (exp + 112) << 23 | man << 13);
}
`

// hostLaunch runs a kernel's grid one thread at a time.
const hostLaunch = `
template <typename F, typename... A> static void launch(F f, unsigned grid, unsigned block, A... a) {
	gridDim = {grid, 1, 1};
	blockDim = {block, 1, 1};
	for (unsigned b = 0; b < grid; b++)
		for (unsigned t = 0; t < block; t++) {
			blockIdx = {b, 0, 0};
			threadIdx = {t, 0, 0};
			f(a...);
		}
}
static void put(const float *v, int n) {
	for (int i = 0; i < n; i++) printf("%08x%c", moetop_host_f_bits(v[i]), i + 1 < n ? ' ' : '\n');
	if (n == 0) printf("\n");
}
static void put(const int *v, int n) {
	for (int i = 0; i < n; i++) printf("%d%c", v[i], i + 1 < n ? ' ' : '\n');
	if (n == 0) printf("\n");
}
static void put(const bf16 *v, int n) {
	for (int i = 0; i < n; i++) printf("%08x%c", (unsigned)v[i].v << 16, i + 1 < n ? ' ' : '\n');
	if (n == 0) printf("\n");
}
`

// driver writes the C++ main that runs the cases: arrays as exact hex,
// statements, and puts whose output lines come back in order.
type driver struct {
	decl, body strings.Builder
	n          int
}

func (d *driver) name() string { d.n++; return fmt.Sprintf("a%d", d.n) }

// floats declares a float array holding v exactly (%a is exact hex).
func (d *driver) floats(v []float32) string {
	n := d.name()
	fmt.Fprintf(&d.decl, "static float %s[%d] = {", n, max(1, len(v)))
	for _, x := range v {
		fmt.Fprintf(&d.decl, "%sf,", strconv.FormatFloat(float64(x), 'x', -1, 32))
	}
	d.decl.WriteString("};\n")
	return n
}

// bf16s declares a bf16 array of v, each already a bf16 value.
func (d *driver) bf16s(v []float32) string {
	n := d.name()
	fmt.Fprintf(&d.decl, "static bf16 %s[%d] = {", n, max(1, len(v)))
	for _, x := range v {
		fmt.Fprintf(&d.decl, "{0x%04x},", kernels.FloatToBF16(x))
	}
	d.decl.WriteString("};\n")
	return n
}

func (d *driver) ints(v []int32) string {
	n := d.name()
	fmt.Fprintf(&d.decl, "static int %s[%d] = {", n, max(1, len(v)))
	for _, x := range v {
		fmt.Fprintf(&d.decl, "%d,", x)
	}
	d.decl.WriteString("};\n")
	return n
}

func (d *driver) zeros(typ string, n int) string {
	name := d.name()
	fmt.Fprintf(&d.decl, "static %s %s[%d];\n", typ, name, max(1, n))
	return name
}

func (d *driver) do(format string, a ...any) { fmt.Fprintf(&d.body, "\t"+format+"\n", a...) }

// run compiles layer.cu with the driver as host C++ and returns its output
// lines. No C++ compiler skips the test, saying so.
func (d *driver) run(t *testing.T) [][]string {
	t.Helper()
	cxx := os.Getenv("CXX")
	if cxx == "" {
		cxx = "c++"
	}
	if _, err := exec.LookPath(cxx); err != nil {
		t.Skipf("no C++ compiler (%s) to build layer.cu on the host: %v", cxx, err)
	}
	dir := t.TempDir()
	src := filepath.Join(dir, "layer_host.cc")
	code := hostPrelude + layerSource + hostLaunch + d.decl.String() + "int main() {\n" + d.body.String() + "\treturn 0;\n}\n"
	if err := os.WriteFile(src, []byte(code), 0o644); err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(dir, "layer_host")
	// No contraction, as NVRTC's --fmad=false, and IEEE float throughout.
	out, err := exec.Command(cxx, "-std=c++17", "-O1", "-ffp-contract=off", "-fno-fast-math", "-o", bin, src).CombinedOutput()
	if err != nil {
		t.Fatalf("compiling layer.cu on the host: %v\n%s", err, out)
	}
	cmd := exec.Command(bin)
	stdout, err := cmd.Output()
	if err != nil {
		t.Fatalf("running layer.cu on the host: %v", err)
	}
	var lines [][]string
	sc := bufio.NewScanner(strings.NewReader(string(stdout)))
	sc.Buffer(nil, 1<<26)
	for sc.Scan() {
		lines = append(lines, strings.Fields(sc.Text()))
	}
	return lines
}

func parseFloats(t *testing.T, line []string) []float32 {
	t.Helper()
	out := make([]float32, len(line))
	for i, w := range line {
		u, err := strconv.ParseUint(w, 16, 32)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = math.Float32frombits(uint32(u))
	}
	return out
}

func parseInts(t *testing.T, line []string) []int32 {
	t.Helper()
	out := make([]int32, len(line))
	for i, w := range line {
		v, err := strconv.Atoi(w)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = int32(v)
	}
	return out
}

// The grouped router's sigmoid is the same function on both sides, bit for
// bit: layer.cu's constants and order of operations are kernels'.
func TestHostLayerSigmoidIsTheReferencesBitForBit(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	xs := make([]float32, 20000)
	for i := range xs {
		switch {
		case i < 2000:
			xs[i] = float32(i-1000) / 50
		case i < 2010:
			xs[i] = []float32{-1000, -88, -80, -79.9, 0, 1e-30, 80, 80.1, 88, 1000}[i-2000]
		default:
			xs[i] = float32(rng.NormFloat64() * 4)
		}
	}
	var d driver
	in, out := d.floats(xs), d.zeros("float", len(xs))
	d.do("for (int i = 0; i < %d; i++) %s[i] = sigmoid_f(%s[i]);", len(xs), out, in)
	d.do("put(%s, %d);", out, len(xs))
	got := parseFloats(t, d.run(t)[0])
	bad := 0
	for i, x := range xs {
		if want := kernels.Sigmoid32(x); got[i] != want {
			if bad++; bad <= 5 {
				t.Errorf("sigmoid(%g): layer.cu %g (%08x), kernels %g (%08x)", x, got[i], math.Float32bits(got[i]),
					want, math.Float32bits(want))
			}
		}
	}
}

func TestHostRouteKernelMatchesTheReferenceRouter(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	grouped := func(g, kept int, scale float32) kernels.Router {
		return kernels.Router{Kind: kernels.SigmoidGrouped, Groups: g, TopKGroups: kept, Scale: scale}
	}
	cases := []struct {
		name       string
		r          kernels.Router
		tokens, e  int
		k          int
		bias       bool
		discrete   bool // logits (and bias) from a few values: many ties
		wantFailed bool // a router the kernel must refuse
	}{
		{"softmax", kernels.Router{}, 37, 13, 3, false, false, false},
		{"softmax with a bias and ties", kernels.Router{}, 50, 8, 2, true, true, false},
		{"softmax at the largest top-k", kernels.Router{}, 5, 128, 64, true, false, false},
		{"softmax without renormalisation, scaled", kernels.Router{Kind: kernels.SoftmaxNoNorm, Scale: 2.5}, 20, 64, 8, true, false, false},
		{"deepseek-v3's grouped sigmoid", grouped(8, 4, 2.5), 40, 256, 8, true, false, false},
		{"grouped sigmoid, one expert per group", grouped(6, 3, 0), 30, 6, 2, true, false, false},
		{"grouped sigmoid over one group", grouped(1, 1, 0), 25, 7, 3, false, false, false},
		{"grouped sigmoid with ties among groups and experts", grouped(4, 2, 0), 60, 16, 4, true, true, false},
		{"grouped sigmoid at 64 groups", grouped(64, 5, 0), 9, 128, 10, true, false, false},
		{"grouped sigmoid needing every kept expert", grouped(4, 2, 0), 12, 8, 4, true, false, false},
		{"a top-k the kept groups cannot hold", grouped(4, 1, 0), 3, 8, 3, false, false, true},
	}
	var d driver
	type want struct {
		ids  []int32
		w    []float32
		fail bool
	}
	var wants []want
	for _, tc := range cases {
		logits := make([]float32, tc.tokens*tc.e)
		for i := range logits {
			if tc.discrete {
				logits[i] = float32(rng.IntN(3) - 1)
			} else {
				logits[i] = float32(rng.NormFloat64())
			}
		}
		var bias []float32
		biasArg := "(const float *)0"
		if tc.bias {
			bias = make([]float32, tc.e)
			for i := range bias {
				if tc.discrete {
					bias[i] = float32(rng.IntN(2)) / 8
				} else {
					bias[i] = float32(rng.NormFloat64() * 0.3)
				}
			}
			biasArg = d.floats(bias)
		}
		kind, groups, kept, scale := routeArgs(tc.r)
		ids, w := d.zeros("int", tc.tokens*tc.k), d.zeros("float", tc.tokens*tc.k)
		d.do("launch(route, %d, %d, (const float *)%s, %s, %d, %d, %d, %d, %d, %d, %sf, %s, %s);",
			blocks(tc.tokens, routeBlock), routeBlock, d.floats(logits), biasArg, tc.tokens, tc.e, tc.k, kind, groups, kept,
			strconv.FormatFloat(float64(scale), 'x', -1, 32), ids, w)
		d.do("put(%s, %d); put(%s, %d);", ids, tc.tokens*tc.k, w, tc.tokens*tc.k)
		if tc.wantFailed {
			wants = append(wants, want{fail: true})
			continue
		}
		if err := tc.r.Check(tc.e, tc.k); err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		a := tc.r.Route(logits, tc.tokens, tc.e, tc.k, bias)
		wants = append(wants, want{ids: a.IDs, w: a.Weights})
	}
	lines := d.run(t)
	for i, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			ids, w := parseInts(t, lines[2*i]), parseFloats(t, lines[2*i+1])
			if wants[i].fail {
				for j := range ids {
					if ids[j] != 0 || w[j] != 0 {
						t.Fatalf("slot %d: expert %d weight %g, want the refusal's expert 0 with no weight", j, ids[j], w[j])
					}
				}
				return
			}
			if !slices.Equal(ids, wants[i].ids) {
				t.Fatalf("chose %v\nreference %v", ids, wants[i].ids)
			}
			for j, x := range w {
				ref := wants[i].w[j]
				// Sigmoid weights are the same arithmetic on both sides;
				// softmax weights differ by the libraries' exp.
				tol := 2e-6 * math.Abs(float64(ref))
				if tc.r.Kind == kernels.SigmoidGrouped {
					tol = 0
				}
				if math.Abs(float64(x-ref)) > tol {
					t.Fatalf("slot %d: weight %g, reference %g", j, x, ref)
				}
			}
		})
	}
}

// The activation over gemm1's rows: gated rows are gate then up, and the
// kernel writes act(gate)·up over the gate's columns and leaves up alone;
// kernels.ActivateRows packs the same values.
func TestHostActKernelMatchesActivateRows(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	type tc struct {
		act     kernels.Activation
		bf16    bool
		rows, f int
	}
	var cases []tc
	for _, act := range []kernels.Activation{kernels.GELU, kernels.SiLU, kernels.SwiGLU, kernels.GeGLU} {
		for _, bf := range []bool{false, true} {
			cases = append(cases, tc{act, bf, 7, 13}, tc{act, bf, 3, 1})
		}
	}
	var d driver
	var inputs [][]float32
	for _, c := range cases {
		cols := c.act.Columns(c.f)
		h := make([]float32, c.rows*cols)
		for i := range h {
			h[i] = float32(rng.NormFloat64() * 2)
			if c.bf16 {
				h[i] = kernels.BF16.Round(h[i])
			}
		}
		inputs = append(inputs, h)
		silu, gated := actArgs(c.act)
		// A small grid, so that the grid-stride loop wraps.
		if c.bf16 {
			a := d.bf16s(h)
			d.do("launch(act_bf16, 2, 5, %s, (u64)%d, (u64)%d, %d, %d);", a, c.rows, c.f, silu, gated)
			d.do("put(%s, %d);", a, len(h))
		} else {
			a := d.floats(h)
			d.do("launch(act_fp32, 2, 5, %s, (u64)%d, (u64)%d, %d, %d);", a, c.rows, c.f, silu, gated)
			d.do("put(%s, %d);", a, len(h))
		}
	}
	lines := d.run(t)
	for i, c := range cases {
		dt := "fp32"
		if c.bf16 {
			dt = "bf16"
		}
		t.Run(fmt.Sprintf("%v %s %d×%d", c.act, dt, c.rows, c.f), func(t *testing.T) {
			got := parseFloats(t, lines[i])
			cols := c.act.Columns(c.f)
			in := append([]float32(nil), inputs[i]...)
			want := kernels.ActivateRows(append([]float32(nil), in...), c.rows, c.f, c.act)
			for r := 0; r < c.rows; r++ {
				for j := 0; j < cols; j++ {
					g := got[r*cols+j]
					if j >= c.f {
						if g != in[r*cols+j] {
							t.Fatalf("row %d: the up column %d changed from %g to %g", r, j, in[r*cols+j], g)
						}
						continue
					}
					ref := want[r*c.f+j]
					tol := 1e-6 * (1 + math.Abs(float64(ref)))
					if c.bf16 {
						ref = kernels.BF16.Round(ref)
						tol = math.Abs(float64(ref)) / 128 // one bf16 ulp: the libraries' erf and exp differ
					}
					if math.Abs(float64(g-ref)) > tol {
						t.Fatalf("row %d column %d: %g, reference %g", r, j, g, ref)
					}
				}
			}
		})
	}
}

// Combine sums each token's weighted rows, skips dropped rows, and adds
// the shared experts' output: exactly kernels.Combine plus the shared
// output, in the same order of float operations.
func TestHostCombineKernelAddsTheSharedExperts(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	const tokens, k, hidden, experts = 9, 3, 37, 5
	a := kernels.Assignment{IDs: make([]int32, tokens*k), Weights: make([]float32, tokens*k)}
	for i := range a.IDs {
		a.IDs[i] = int32(rng.IntN(experts))
		a.Weights[i] = rng.Float32()
	}
	p, err := kernels.Permute(a, tokens, k, experts)
	if err != nil {
		t.Fatal(err)
	}
	y := make([]float32, tokens*k*hidden)
	shared := make([]float32, tokens*hidden)
	for i := range y {
		y[i] = float32(rng.NormFloat64())
	}
	for i := range shared {
		shared[i] = float32(rng.NormFloat64())
	}
	var d driver
	rowOf := d.ints(p.RowOf)
	yArr, w, sh := d.floats(y), d.floats(a.Weights), d.floats(shared)
	without, with := d.zeros("float", tokens*hidden), d.zeros("float", tokens*hidden)
	d.do("launch(combine_fp32, %d, 32, %s, %s, %s, %d, %d, (const float *)0, %s);", tokens, yArr, rowOf, w, k, hidden, without)
	d.do("launch(combine_fp32, %d, 32, %s, %s, %s, %d, %d, (const float *)%s, %s);", tokens, yArr, rowOf, w, k, hidden, sh, with)
	d.do("put(%s, %d); put(%s, %d);", without, tokens*hidden, with, tokens*hidden)
	lines := d.run(t)
	want := make([]float32, tokens*hidden)
	kernels.Combine(want, y, a, p, tokens, k, hidden)
	if got := parseFloats(t, lines[0]); !slices.Equal(got, want) {
		t.Errorf("without shared experts: %v\nreference %v", got[:5], want[:5])
	}
	for i := range want {
		want[i] += shared[i]
	}
	if got := parseFloats(t, lines[1]); !slices.Equal(got, want) {
		t.Errorf("with shared experts: %v\nreference %v", got[:5], want[:5])
	}
}
