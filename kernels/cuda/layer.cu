// The MoE layer's kernels other than the GEMMs. Compiled at run time by
// NVRTC for the device's architecture, so no toolkit headers: the 16-bit
// types and conversions are our own (PTX cvt, round to nearest even, the
// same rounding as kernels.FloatToBF16 / FloatToHalf on the host).
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

struct bf16 { u16 v; };
struct __attribute__((aligned(16))) v16 { u32 a, b, c, d; };
struct f16 { u16 v; };

__device__ __forceinline__ float to_f(float x) { return x; }
__device__ __forceinline__ float to_f(bf16 x) {
	float f;
	u32 bits = ((u32)x.v) << 16;
	asm("mov.b32 %0, %1;" : "=f"(f) : "r"(bits));
	return f;
}
__device__ __forceinline__ float to_f(f16 x) {
	float f;
	asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(x.v));
	return f;
}
template <typename T> __device__ __forceinline__ T from_f(float x);
template <> __device__ __forceinline__ float from_f<float>(float x) { return x; }
template <> __device__ __forceinline__ bf16 from_f<bf16>(float x) {
	bf16 r;
	asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r.v) : "f"(x));
	return r;
}
template <> __device__ __forceinline__ f16 from_f<f16>(float x) {
	f16 r;
	asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r.v) : "f"(x));
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

// One thread per token: top-k of logits+bias (ties to the lower expert),
// weights = softmax over the chosen k, k ≤ MAX_TOP_K. The candidates live
// in the thread's local memory (512 bytes at 64, cached in L1); only the
// first k entries are ever touched, so a small k costs what it did with
// a smaller array.
extern "C" __global__ void route(const float *logits, const float *bias, int tokens, int experts, int k,
                                 int *ids, float *weights) {
	int t = blockIdx.x * blockDim.x + threadIdx.x;
	if (t >= tokens) return;
	if (k > MAX_TOP_K) {
		// Unreachable from the host, which refuses such a k; should it come,
		// every slot goes to expert 0 with no weight, so that no later
		// kernel indexes out of bounds.
		for (int j = 0; j < k; j++) {
			ids[(u64)t * k + j] = 0;
			weights[(u64)t * k + j] = 0.0f;
		}
		return;
	}
	float bv[MAX_TOP_K];
	int bi[MAX_TOP_K];
	int n = 0;
	const float *row = logits + (u64)t * experts;
	for (int e = 0; e < experts; e++) {
		float v = row[e];
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
	// Softmax over the chosen k, relative to the largest (kept aside: the
	// loop overwrites bv[0] first).
	float best = bv[0], sum = 0.0f;
	for (int j = 0; j < k; j++) {
		bv[j] = expf(bv[j] - best);
		sum += bv[j];
	}
	for (int j = 0; j < k; j++) {
		ids[(u64)t * k + j] = bi[j];
		weights[(u64)t * k + j] = bv[j] / sum;
	}
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

template <typename T>
__device__ void act_impl(T *h, u64 n, int silu) {
	for (u64 i = blockIdx.x * (u64)blockDim.x + threadIdx.x; i < n; i += (u64)gridDim.x * blockDim.x) {
		float x = to_f(h[i]);
		float y = silu ? x / (1.0f + expf(-x)) : 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
		h[i] = from_f<T>(y);
	}
}

// One block per token: out = Σ_j w_j · y[row_of(t, j)], accumulated in float.
template <typename T>
__device__ void combine_impl(const T *y, const int *row_of, const float *w, int k, int hidden, T *out) {
	int t = blockIdx.x;
	for (int c = threadIdx.x; c < hidden; c += blockDim.x) {
		float acc = 0.0f;
		for (int j = 0; j < k; j++) {
			int r = row_of[(u64)t * k + j];
			if (r >= 0) acc += w[(u64)t * k + j] * to_f(y[(u64)r * hidden + c]);
		}
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
	extern "C" __global__ void act_##S(T *h, u64 n, int silu) { act_impl<T>(h, n, silu); }           \
	extern "C" __global__ void combine_##S(const T *y, const int *row_of, const float *w, int k,     \
	                                       int hidden, T *out) {                                      \
		combine_impl<T>(y, row_of, w, k, hidden, out);                                              \
	}

INSTANCES(bf16, bf16)
INSTANCES(f16, fp16)
INSTANCES(float, fp32)
