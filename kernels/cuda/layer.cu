// The MoE layer's kernels other than the GEMMs. Compiled at run time by
// NVRTC for the device's architecture, so no toolkit headers: the 16-bit
// types and conversions are our own (PTX cvt, round to nearest even, the
// same rounding as kernels.FloatToBF16 / FloatToHalf on the host).
//
// The same source also compiles as host C++ (layer_host_test.go runs its
// kernels one thread at a time against the Go reference): where the device
// needs inline PTX, the host build (no __CUDA_ARCH__) calls moetop_host_*
// functions that the test defines.
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct bf16 { u16 v; };
struct __attribute__((aligned(16))) v16 { u32 a, b, c, d; };
struct f16 { u16 v; };

// The float whose bits are b.
__device__ __forceinline__ float bits_f(u32 b) {
#ifdef __CUDA_ARCH__
	float f;
	asm("mov.b32 %0, %1;" : "=f"(f) : "r"(b));
	return f;
#else
	return moetop_host_bits_f(b);
#endif
}

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) { return bits_f(((u32)x.v) << 16); }
__device__ __forceinline__ float to_f(f16 x) {
#ifdef __CUDA_ARCH__
	float f;
	asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.v));
	return f;
#else
	return moetop_host_half_f(x.v);
#endif
}
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) {
	bf16 r;
#ifdef __CUDA_ARCH__
	asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.v) : "f"(x));
#else
	r.v = moetop_host_f_bf16(x);
#endif
	return r;
}
template <> __device__ __forceinline__ f16 from_f<f16>(float x) {
	f16 r;
#ifdef __CUDA_ARCH__
	asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.v) : "f"(x));
#else
	r.v = moetop_host_f_half(x);
#endif
	return r;
}

// mix and fill match kernels.Fill bit for bit, so the CPU reference sees the
// same inputs without copying them.
__device__ __forceinline__ u64 mix(u64 z) {
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}

template <typename T>
__device__ void fill_impl(T *dst, u64 n, u64 seed, u32 tensor, float scale) {
	for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
		u64 h = mix(seed ^ mix(((u64)tensor << 40) ^ i));
		float u = (float)(h >> 40) * (1.0f / 16777216.0f);
		float v = (2.0f * u - 1.0f) * 1.7320508f * scale; // --fmad=false: no contraction, as in Go
		dst[i] = from_f<T>(v);
	}
}

// The most experts per token route handles: what the config accepts
// (profiler.MaxTopK, cuda.MaxTopK; a test holds the three equal). The host
// refuses a larger k before launching.
#define MAX_TOP_K 64
// The most expert groups the grouped router takes (kernels.MaxGroups): a
// group's score sits in a local array and the kept groups in a u64 mask.
#define MAX_GROUPS 64

// Router kinds: kernels.RouterKind's values (a test holds them equal).
#define ROUTER_SOFTMAX 0
#define ROUTER_SOFTMAX_NONORM 1
#define ROUTER_SIGMOID_GROUPED 2

// e^x for x clamped to [-80, 80] from rounded float32 operations alone
// (--fmad=false: no contraction), with kernels.exp32's constants and
// order, so that sigmoid_f equals kernels.Sigmoid32 bit for bit: the
// grouped router then chooses exactly the experts the reference does.
__device__ __forceinline__ float exp_f(float x) {
	x = fminf(fmaxf(x, -80.0f), 80.0f);
	float n = floorf(x * 0x1.715476p+00f + 0.5f);
	float r = x - n * 0x1.63p-01f;
	r = r - n * -0x1.bd0106p-13f;
	float z = r * r;
	float p = 0x1.a0d2cep-13f * r + 0x1.6e879cp-10f;
	p = p * r + 0x1.11121p-07f;
	p = p * r + 0x1.555382p-05f;
	p = p * r + 0x1.555554p-03f;
	p = p * r + 0x1p-01f;
	float y = p * z + r + 1.0f;
	return y * bits_f((u32)((int)n + 127) << 23);
}

__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + exp_f(-x)); }

// One token's routing, exactly kernels.Router.Route: top-k of the biased
// values (ties to the lower expert), weights by kind. Softmax: the values
// are logits+bias, weights their softmax over the chosen k, or with
// NONORM over all experts. Sigmoid-grouped: the values are
// sigmoid(logit)+bias over the kept groups only (the kept_groups best by
// the sum of their two best values, ties to the lower group); the weights
// are the chosen experts' unbiased sigmoids, renormalised. Then every
// weight is multiplied by scale. The candidates live in the thread's
// local memory (512 bytes at 64, cached in L1); only the first k entries
// are ever touched, so a small k costs what it did with a smaller array.
__device__ void route_token(const float *row, const float *bias, int experts, int k, int kind, int groups,
                            int kept_groups, float scale, int *ids, float *weights) {
	float bv[MAX_TOP_K];
	int bi[MAX_TOP_K];
	const int grouped = kind == ROUTER_SIGMOID_GROUPED;
	const int per = grouped ? experts / groups : experts;
	u64 kept = ~0ULL;
	if (grouped && kept_groups < groups) {
		float gs[MAX_GROUPS];
		for (int g = 0; g < groups; g++) {
			float best = bits_f(0xff800000u), second = best; // -Inf
			for (int e = g * per; e < (g + 1) * per; e++) {
				float v = sigmoid_f(row[e]);
				if (bias) v += bias[e];
				if (v > best) {
					second = best;
					best = v;
				} else if (v > second) {
					second = v;
				}
			}
			gs[g] = per > 1 ? best + second : best;
		}
		kept = 0;
		for (int n = 0; n < kept_groups; n++) {
			int pick = -1;
			for (int g = 0; g < groups; g++)
				if (!((kept >> g) & 1) && (pick < 0 || gs[g] > gs[pick])) pick = g;
			kept |= 1ULL << pick;
		}
	}
	int n = 0;
	for (int e = 0; e < experts; e++) {
		if (!((kept >> (e / per)) & 1)) continue;
		float v = grouped ? sigmoid_f(row[e]) : row[e];
		if (bias) v += bias[e];
		if (n == k && v <= bv[n - 1]) continue;
		int p = n < k ? n++ : n - 1;
		while (p > 0 && v > bv[p - 1]) {
			bv[p] = bv[p - 1];
			bi[p] = bi[p - 1];
			p--;
		}
		bv[p] = v;
		bi[p] = e;
	}
	float sum = 0.0f;
	if (grouped) {
		for (int j = 0; j < k; j++) {
			bv[j] = sigmoid_f(row[bi[j]]);
			sum += bv[j];
		}
	} else {
		// Softmax relative to the largest (kept aside: the loop overwrites
		// bv[0] first).
		float best = bv[0];
		for (int j = 0; j < k; j++) {
			bv[j] = expf(bv[j] - best);
			sum += bv[j];
		}
		if (kind == ROUTER_SOFTMAX_NONORM) {
			sum = 0.0f;
			for (int e = 0; e < experts; e++) sum += expf(row[e] + (bias ? bias[e] : 0.0f) - best);
		}
	}
	for (int j = 0; j < k; j++) {
		ids[j] = bi[j];
		float w = bv[j] / sum;
		if (scale != 1.0f) w *= scale;
		weights[j] = w;
	}
}

// One thread per token. A router the host should have refused (k over
// MAX_TOP_K, groups that do not fit) sends every slot to expert 0 with no
// weight, so that no later kernel indexes out of bounds.
extern "C" __global__ void route(const float *logits, const float *bias, int tokens, int experts, int k, int kind,
                                 int groups, int kept_groups, float scale, int *ids, float *weights) {
	int t = blockIdx.x * blockDim.x + threadIdx.x;
	if (t >= tokens) return;
	int bad = k < 1 || k > MAX_TOP_K || k > experts || kind < ROUTER_SOFTMAX || kind > ROUTER_SIGMOID_GROUPED;
	if (!bad && kind == ROUTER_SIGMOID_GROUPED)
		bad = groups < 1 || groups > MAX_GROUPS || experts % groups != 0 || kept_groups < 1 || kept_groups > groups ||
		      k > kept_groups * (experts / groups);
	if (bad) {
		for (int j = 0; j < k; j++) {
			ids[(u64)t * k + j] = 0;
			weights[(u64)t * k + j] = 0.0f;
		}
		return;
	}
	route_token(logits + (u64)t * experts, bias, experts, k, kind, groups, kept_groups, scale, ids + (u64)t * k,
	            weights + (u64)t * k);
}

extern "C" __global__ void histogram(const int *ids, int n, int *counts) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i < n) atomicAdd(&counts[ids[i]], 1);
}

// Exclusive prefix sum of the counts; experts are few, one thread will do.
extern "C" __global__ void scan(const int *counts, int experts, int *offsets) {
	if (blockIdx.x != 0 || threadIdx.x != 0) return;
	int s = 0;
	for (int e = 0; e < experts; e++) {
		offsets[e] = s;
		s += counts[e];
	}
}

// Gives every (token, slot) a row: the next free row of its expert. Dense
// layout: offsets[e] + position. Padded (cap > 0): e*cap + position, or -1
// (dropped) past the capacity. Order within an expert is not fixed; no
// result depends on it.
extern "C" __global__ void scatter(const int *ids, int n, const int *offsets, int *cursor, int cap,
                                   int *row_of) {
	int i = blockIdx.x * blockDim.x + threadIdx.x;
	if (i >= n) return;
	int e = ids[i];
	int p = atomicAdd(&cursor[e], 1);
	row_of[i] = cap > 0 ? (p < cap ? e * cap + p : -1) : offsets[e] + p;
}

// One block per (token, slot): copies the token's row of x to its row.
template <typename T>
__device__ void gather_impl(const T *x, const int *row_of, int k, int hidden, T *xp) {
	int i = blockIdx.x;
	int r = row_of[i];
	if (r < 0) return;
	const T *src = x + (u64)(i / k) * hidden;
	T *dst = xp + (u64)r * hidden;
	u64 bytes = (u64)hidden * sizeof(T);
	if (bytes % 16 == 0) {
		const v16 *s = (const v16 *)src;
		v16 *d = (v16 *)dst;
		for (int j = threadIdx.x; j < bytes / 16; j += blockDim.x) d[j] = s[j];
	} else {
		for (int j = threadIdx.x; j < hidden; j += blockDim.x) dst[j] = src[j];
	}
}

// The activation in place over rows rows of gemm1's output: GELU (erf)
// or SiLU. Gated, a row is 2f wide, the gate's f columns then the up
// projection's, and act(gate)·up is written over the gate's columns;
// gemm2 then reads the rows with a leading dimension of 2f (the host's
// kernels.ActivateRows packs them instead; the values are the same).
template <typename T>
__device__ void act_impl(T *h, u64 rows, u64 f, int silu, int gated) {
	u64 n = rows * f;
	for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
		u64 at = i;
		if (gated) {
			u64 r = i / f;
			at = i + r * f; // row r starts at r·2f: column i − r·f of it
		}
		float x = to_f(h[at]);
		float y = silu ? x / (1.0f + expf(-x)) : 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
		if (gated) y *= to_f(h[at + f]);
		h[at] = from_f<T>(y);
	}
}

// One block per token: out = Σ_j w_j · y[row_of(t, j)] (+ the shared
// experts' output, when shared is not null), accumulated in float.
template <typename T>
__device__ void combine_impl(const T *y, const int *row_of, const float *w, int k, int hidden, const T *shared, T *out) {
	int t = blockIdx.x;
	for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
		float acc = 0.0f;
		for (int j = 0; j < k; j++) {
			int r = row_of[(u64)t * k + j];
			if (r >= 0) acc += w[(u64)t * k + j] * to_f(y[(u64)r * hidden + c]);
		}
		if (shared) acc += to_f(shared[(u64)t * hidden + c]);
		out[(u64)t * hidden + c] = from_f<T>(acc);
	}
}

#define INSTANCES(T, S)                                                                               \
	extern "C" __global__ void fill_##S(T *d, u64 n, u64 seed, u32 t, float scale) {                \
		fill_impl<T>(d, n, seed, t, scale);                                                         \
	}                                                                                               \
	extern "C" __global__ void gather_##S(const T *x, const int *row_of, int k, int hidden, T *xp) { \
		gather_impl<T>(x, row_of, k, hidden, xp);                                                   \
	}                                                                                               \
	extern "C" __global__ void act_##S(T *h, u64 rows, u64 f, int silu, int gated) {                \
		act_impl<T>(h, rows, f, silu, gated);                                                       \
	}                                                                                               \
	extern "C" __global__ void combine_##S(const T *y, const int *row_of, const float *w, int k,     \
	                                       int hidden, const T *shared, T *out) {                     \
		combine_impl<T>(y, row_of, w, k, hidden, shared, out);                                      \
	}

INSTANCES(bf16, bf16)
INSTANCES(f16, fp16)
INSTANCES(float, fp32)
