// Our own grouped GEMM for Hopper (sm_90a): wgmma fed by TMA through an
// mbarrier ring, one persistent block per SM. Compiled by NVRTC with no
// toolkit headers (like layer.cu and testkernels.cu): every Hopper feature
// is inline PTX, and the 16-bit conversions are our own.
//
// What it computes, for every expert e with rows[e] > 0:
//   out[off[e] + r][n] = act( Σ_k a[off[e] + r][k] · w[e][n][k] )
// for r < rows[e], n < N. a is the permuted activations (every expert's
// rows after the earlier experts', as the permute step lays them out; its
// rows may be further apart than K, which the tensor map says), w the
// expert's weights stored transposed (N × K, K contiguous: both wgmma
// operands are then K-major, the layout TMA's 128-byte swizzle and wgmma's
// descriptors are simplest in), out row-major, its rows ldo apart.
//
// Gated (SwiGLU, GeGLU), N is 2F and w's rows interleave the gate's and
// the up projection's in blocks of 8: rows 16i..16i+7 are the gate's
// columns 8i..8i+7 and rows 16i+8..16i+15 the up projection's same
// columns (fill_transposed writes them so; hopper.go's hopperW1Row is the
// map). A thread's accumulator fragment holds, for each 8 columns j, the
// same two columns of block j (see store_half), so blocks 2i and 2i+1 give
// it gate and up of the same output columns, and the epilogue writes
//   out[off[e] + r][f] = act(gate) · up
// for f < F = N/2: BN/2 output columns per tile, nothing leaving the
// registers but the product. The other backends' act kernel leaves the
// product in the first F columns of gemm1's 2F-wide rows; so does this, by
// ldo = 2F, and gemm2 reads it from there in every backend.
//
// The design, and why:
// - Tiles are BM×BN of one expert. A tile near an expert's end reads rows
//   of the next expert (or zeros past the tensor, from TMA's out-of-bounds
//   fill) and computes them, and its stores are masked: no padding of the
//   activations, at the price of up to BM−1 wasted rows per expert.
// - Weights are one 3-D tensor map [E][N][K], so a tile past N reads
//   zeros, never the next expert's weights; K past the end reads zeros in
//   both operands, so a K that is not a multiple of BK adds nothing.
// - The tile list comes from the per-expert counts on the device (a prefix
//   sum per block in shared memory): no host synchronisation, and one
//   launch serves any load.
// - Within an expert, tiles go in bands of GROUP_M row tiles, row tile
//   fastest: the blocks running at the same time share the expert's weight
//   tiles and a few activation tiles in L2.
// - Warpgroup 0 produces (one thread issues TMA copies into a STAGES-deep
//   ring, waiting on each slot's "empty" barrier), warpgroup 1 consumes
//   (waits on "full", runs wgmma m64nBNk16 once per m64 half of the BM
//   rows per k16 step, releases the slot once the wgmma reading it
//   completed), then applies the activation to the fp32 accumulators and
//   stores. setmaxnreg moves registers from the producer to the consumer.
// - BM is 128 (two m64 halves) for prefill, or 64 (one) for decode, where
//   an expert holds a few rows: a 128-row tile would then multiply, and
//   read, mostly rows of the next expert. Either way each weight tile is
//   read once per row tile, so at a few rows per expert the kernel streams
//   every active expert's weights once, which is all decode can hope for.

// k-block depth (64 bf16 = 128 bytes: one swizzle row), row tiles per L2
// band, threads per block. The row tile BM is a template parameter.
#define BK 64
#define GROUP_M 8
#define THREADS 256

// Activation codes (the host's hopperAct maps kernels.Activation to them).
// The gated forms apply GELU or SiLU to the gate (their code minus
// ACT_GATED) and multiply by up.
#define ACT_NONE 0
#define ACT_GELU 1
#define ACT_SILU 2
#define ACT_GEGLU 3
#define ACT_SWIGLU 4
#define ACT_GATED 2

// ---- wgmma -----------------------------------------------------------------

// Shared-memory matrix descriptor of a K-major tile written by TMA with the
// 128-byte swizzle: rows of 128 bytes (64 elements), 8-row groups 1024
// bytes apart (stride byte offset), leading byte offset unused for this
// layout (1 by convention), swizzle mode 1 = 128B in bits 62-63. The tile
// must start 1024-byte aligned (base offset 0). A k16 step inside the
// 128-byte row is the start address plus 32 bytes: the swizzle is applied
// on the address bits, so the same descriptor walks it.
__device__ __forceinline__ u64 desc_k_major_sw128(u32 addr) {
	u64 d = (u64)((addr & 0x3FFFF) >> 4);
	d |= (u64)1 << 16;             // leading byte offset 16 B (>> 4)
	d |= (u64)(1024 >> 4) << 32;   // stride byte offset 1024 B (>> 4)
	d |= (u64)1 << 62;             // 128-byte swizzle
	return d;
}

__device__ __forceinline__ void wgmma_fence() { asm volatile("wgmma.fence.sync.aligned;" ::: "memory"); }
__device__ __forceinline__ void wgmma_commit() { asm volatile("wgmma.commit_group.sync.aligned;" ::: "memory"); }
template <int N> __device__ __forceinline__ void wgmma_wait() {
	asm volatile("wgmma.wait_group.sync.aligned %0;" ::"n"(N) : "memory");
}

// Keeps the compiler from moving reads or writes of an accumulator across
// the wgmma wait: it cannot see that the asm above writes them late.
template <int R> __device__ __forceinline__ void fence_acc(float (&d)[R]) {
#pragma unroll
	for (int i = 0; i < R; i++) asm volatile("" : "+f"(d[i])::"memory");
}

struct BF16 {};
struct FP16 {};

// D[64×N] += A[64×16]·B[16×N], A and B K-major in shared memory (no
// transpose), fp32 accumulators: N/2 per thread of the warpgroup.
template <class T, int N> struct Mma;

#define ACC8(i)                                                                                           \
	"+f"(d[i + 0]), "+f"(d[i + 1]), "+f"(d[i + 2]), "+f"(d[i + 3]), "+f"(d[i + 4]), "+f"(d[i + 5]),   \
	    "+f"(d[i + 6]), "+f"(d[i + 7])

#define DEFINE_MMA(TYPE, PTX_TYPE)                                                                        \
	template <> struct Mma<TYPE, 128> {                                                               \
		static __device__ __forceinline__ void run(float (&d)[64], u64 a, u64 b) {                \
			asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %66, 0;\n\t"                   \
			             "wgmma.mma_async.sync.aligned.m64n128k16.f32." PTX_TYPE "." PTX_TYPE \
			             " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14,"  \
			             " %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27,"   \
			             " %28, %29, %30, %31, %32, %33, %34, %35, %36, %37, %38, %39, %40,"   \
			             " %41, %42, %43, %44, %45, %46, %47, %48, %49, %50, %51, %52, %53,"   \
			             " %54, %55, %56, %57, %58, %59, %60, %61, %62, %63},"                 \
			             " %64, %65, p, 1, 1, 0, 0;\n\t}"                                      \
			             : ACC8(0), ACC8(8), ACC8(16), ACC8(24), ACC8(32), ACC8(40), ACC8(48), \
			               ACC8(56)                                                             \
			             : "l"(a), "l"(b), "r"(1));                                            \
		}                                                                                         \
	};                                                                                                \
	template <> struct Mma<TYPE, 64> {                                                                \
		static __device__ __forceinline__ void run(float (&d)[32], u64 a, u64 b) {                \
			asm volatile("{\n\t.reg .pred p;\n\tsetp.ne.b32 p, %34, 0;\n\t"                   \
			             "wgmma.mma_async.sync.aligned.m64n64k16.f32." PTX_TYPE "." PTX_TYPE  \
			             " {%0, %1, %2, %3, %4, %5, %6, %7, %8, %9, %10, %11, %12, %13, %14,"  \
			             " %15, %16, %17, %18, %19, %20, %21, %22, %23, %24, %25, %26, %27,"   \
			             " %28, %29, %30, %31},"                                               \
			             " %32, %33, p, 1, 1, 0, 0;\n\t}"                                      \
			             : ACC8(0), ACC8(8), ACC8(16), ACC8(24)                                \
			             : "l"(a), "l"(b), "r"(1));                                            \
		}                                                                                         \
	};

DEFINE_MMA(BF16, "bf16")
DEFINE_MMA(FP16, "f16")

// Two fp32 values to a packed pair, lo at the lower address; round to
// nearest even like kernels.FloatToBF16 / FloatToHalf. cvt puts its first
// source in the upper half.
__device__ __forceinline__ u32 pack2(BF16, float lo, float hi) {
	u32 r;
	asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
	return r;
}
__device__ __forceinline__ u32 pack2(FP16, float lo, float hi) {
	u32 r;
	asm("cvt.rn.f16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
	return r;
}
__device__ __forceinline__ u16 pack1(BF16, float x) {
	u16 r;
	asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(r) : "f"(x));
	return r;
}
__device__ __forceinline__ u16 pack1(FP16, float x) {
	u16 r;
	asm("cvt.rn.f16.f32 %0, %1;" : "=h"(r) : "f"(x));
	return r;
}

// The activations of layer.cu's act kernel and kernels.Activate: exact
// (erf) GELU and SiLU, here on the fp32 accumulator before it is rounded.
__device__ __forceinline__ float activate(float x, int act) {
	if (act == ACT_GELU) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
	if (act == ACT_SILU) return x / (1.0f + expf(-x));
	return x;
}

// ---- the tile schedule -------------------------------------------------------

struct Tile {
	int e, m, n; // expert, row tile within the expert, column tile
};

// Tile t of the block-shared schedule: cum[e] is the number of tiles of
// the experts before e (cum[experts] is every tile), nN column tiles each.
// Cheap enough (a binary search in shared memory) to call twice a tile:
// the consumer keeps no tile in registers over its k-loop.
__device__ __forceinline__ Tile tile_at(int t, const int *cum, int experts, int nN) {
	// The last expert whose first tile is at or before t: experts with no
	// tiles share their cum with the next one and are passed over.
	int lo = 0, hi = experts - 1;
	while (lo < hi) {
		const int mid = (lo + hi + 1) >> 1;
		if (cum[mid] <= t) lo = mid;
		else hi = mid - 1;
	}
	const int local = t - cum[lo];
	const int mt = (cum[lo + 1] - cum[lo]) / nN; // row tiles of this expert
	const int band = local / (GROUP_M * nN);
	const int first = band * GROUP_M;
	const int rows = min(mt - first, GROUP_M); // row tiles in this band
	const int r = local - band * GROUP_M * nN;
	Tile out;
	out.e = lo;
	out.m = first + r % rows;
	out.n = r / rows;
	return out;
}

// Epilogue of one 64-row half: activation, round, masked stores of the
// rows below the expert's count and the columns below N, rows ldo apart.
// Thread (warp, lane) holds, for each 8 columns j, rows warp·16 + lane/4
// (+8) and columns 8j + 2·(lane%4) (+1): d[4j], d[4j+1] on the first row,
// d[4j+2], d[4j+3] on the second. The array is indexed with constants only
// (every loop unrolled), so it stays in registers.
template <class T, int BN>
__device__ __forceinline__ void store_half(const float (&d)[BN / 2], u16 *dst, int rows, int N, int ldo, int row0,
                                           int col0, int warp, int lane, int act) {
	const int col_base = col0 + 2 * (lane % 4);
#pragma unroll
	for (int j = 0; j < BN / 8; j++) {
		const int col = col_base + 8 * j;
#pragma unroll
		for (int h8 = 0; h8 < 2; h8++) {
			const int row = row0 + warp * 16 + lane / 4 + 8 * h8;
			if (row < rows && col < N) {
				const float v0 = activate(d[4 * j + 2 * h8], act);
				const float v1 = activate(d[4 * j + 2 * h8 + 1], act);
				// N and ldo are multiples of 8, so col+1 < N too and the
				// pair is 4-byte aligned.
				*(u32 *)(dst + (u64)row * ldo + col) = pack2(T(), v0, v1);
			}
		}
	}
}

// The gated epilogue of one 64-row half: the tile's BN GEMM columns are
// BN/16 pairs of 8-column blocks, gate then up of the same 8 output
// columns (the weights' interleave), so d[4·2i + x] is the gate and
// d[4·(2i+1) + x] the up projection of output column
// ocol0 + 8i + 2·(lane%4) (+1), ocol0 = col0/2. The product is rounded
// once, from the fp32 accumulators (the unfused backends and the CPU
// reference round gate and up to 16 bits first: the two differ by about
// a rounding); F (the output width) and ldo are multiples of 8.
template <class T, int BN>
__device__ __forceinline__ void store_half_gated(const float (&d)[BN / 2], u16 *dst, int rows, int F, int ldo,
                                                 int row0, int ocol0, int warp, int lane, int act) {
	const int col_base = ocol0 + 2 * (lane % 4);
#pragma unroll
	for (int i = 0; i < BN / 16; i++) {
		const int col = col_base + 8 * i;
#pragma unroll
		for (int h8 = 0; h8 < 2; h8++) {
			const int row = row0 + warp * 16 + lane / 4 + 8 * h8;
			if (row < rows && col < F) {
				const int g = 8 * i + 2 * h8, u = g + 4; // d[4·2i + 2h8], d[4·(2i+1) + 2h8]
				const float v0 = activate(d[g], act) * d[u];
				const float v1 = activate(d[g + 1], act) * d[u + 1];
				*(u32 *)(dst + (u64)row * ldo + col) = pack2(T(), v0, v1);
			}
		}
	}
}

template <class T, int BM, int BN, int STAGES>
__device__ __forceinline__ void grouped_gemm(const TensorMap *map_a, const TensorMap *map_b, u16 *out,
                                             const int *counts, const int *offsets, int experts, int N, int K,
                                             int ldo, int act) {
	static_assert(BM == 64 || BM == 128, "BM is one or two m64 halves");
	static_assert(BN == 64 || BN == 128, "BN is 64 or 128 (one consumer warpgroup, wgmma m64nBNk16)");
	constexpr int HALVES = BM / 64;
	constexpr u32 A_BYTES = BM * BK * 2, B_BYTES = BN * BK * 2;
	extern __shared__ __align__(1024) unsigned char smem[];
	const u32 raw = smem_u32(smem);
	const u32 base = (raw + 1023u) & ~1023u;
	const u32 sa = base, sb = base + STAGES * A_BYTES;
	const u32 bars = sb + STAGES * B_BYTES; // full[s] at bars + 8s, empty[s] at bars + 8(STAGES + s)
	int *cum = (int *)(smem + (bars + 16 * STAGES - raw));
	// The dynamic shared memory this needs: 1024 bytes of slack to align
	// the ring, the ring, a full and an empty barrier per slot, and the
	// schedule (hopper.go's hopperConfig.shared computes the same). Too little is
	// a launch bug that would corrupt memory: stop the kernel instead.
	{
		u32 have;
		asm("mov.u32 %0, %%dynamic_smem_size;" : "=r"(have));
		if (bars + 16 * STAGES + 4 * (experts + 1) - raw > have) asm volatile("trap;");
	}
	const int nN = (N + BN - 1) / BN; // gated: N is 2F, a multiple of 16, so no tile splits a gate/up pair
	const int nK = (K + BK - 1) / BK;

	// Warp 0: tiles per expert and their running sum, 32 experts at a time.
	if (threadIdx.x < 32) {
		const int lane = threadIdx.x;
		int carry = 0;
		for (int e0 = 0; e0 < experts; e0 += 32) {
			const int e = e0 + lane;
			int t = e < experts ? (counts[e] + BM - 1) / BM * nN : 0;
#pragma unroll
			for (int d = 1; d < 32; d <<= 1) {
				const int y = __shfl_up_sync(0xffffffffu, t, d);
				if (lane >= d) t += y;
			}
			if (e < experts) cum[e + 1] = carry + t;
			carry += __shfl_sync(0xffffffffu, t, 31);
		}
		if (lane == 0) cum[0] = 0;
	} else if (threadIdx.x == 32) {
		for (int s = 0; s < STAGES; s++) {
			mbar_init(bars + 8 * s, 1);                // the producer's expect_tx
			mbar_init(bars + 8 * (STAGES + s), 4);     // one arrival per consumer warp
		}
		// Make the initialised barriers visible to the TMA unit.
		asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
	}
	__syncthreads();

	if (threadIdx.x < 128) {
		// Producer warpgroup: one thread issues every copy; the rest leave.
		asm volatile("setmaxnreg.dec.sync.aligned.u32 40;");
		if (threadIdx.x != 0) return;
		int s = 0;
		u32 phase = 0;
		// The tile count (cum[experts]) is read from shared memory each
		// tile, not held over the loop: held, it was live into both
		// warpgroups' code, and ptxas, at the 168 registers the
		// consumer's accumulators nearly fill, spilled it.
		for (int t = blockIdx.x; t < cum[experts]; t += gridDim.x) {
			const Tile tile = tile_at(t, cum, experts, nN);
			const int row0 = offsets[tile.e] + tile.m * BM;
			const int col0 = tile.n * BN;
			for (int kb = 0; kb < nK; kb++) {
				const u32 full = bars + 8 * s, empty = bars + 8 * (STAGES + s);
				mbar_wait(empty, phase ^ 1);
				mbar_expect_tx(full, A_BYTES + B_BYTES);
				tma_load_2d(sa + s * A_BYTES, map_a, kb * BK, row0, full);
				tma_load_3d(sb + s * B_BYTES, map_b, kb * BK, col0, tile.e, full);
				if (++s == STAGES) {
					s = 0;
					phase ^= 1;
				}
			}
		}
		// Wait, bounded, for the consumer to give every slot back (the
		// ring's next STAGES waits for "empty"): a consumer stuck on a
		// "full" whose copy never completes (a miscounted expect_tx, a
		// failed TMA) then traps here, since its own waits, unbounded to
		// spare a register, never would. A consumer waiting for a copy
		// the producer never issued is not caught: only a disagreement
		// on the tiles could cause one, and both sides read the same.
		for (int i = 0; i < STAGES; i++) {
			mbar_wait(bars + 8 * (STAGES + s), phase ^ 1);
			if (++s == STAGES) {
				s = 0;
				phase ^= 1;
			}
		}
		return;
	}

	// Consumer warpgroup: BM rows as m64 halves, BN/2 fp32 each.
	asm volatile("setmaxnreg.inc.sync.aligned.u32 232;");
	const int tid = threadIdx.x - 128, warp = tid / 32, lane = tid % 32;
	float acc[HALVES][BN / 2];
	int s = 0;
	u32 phase = 0;
	// The tile count is read from shared memory each tile, as in the
	// producer.
	for (int t = blockIdx.x; t < cum[experts]; t += gridDim.x) {
#pragma unroll
		for (int h = 0; h < HALVES; h++)
#pragma unroll
			for (int i = 0; i < BN / 2; i++) acc[h][i] = 0.0f;
		for (int kb = 0; kb < nK; kb++) {
			mbar_wait_unbounded(bars + 8 * s, phase);
			wgmma_fence();
			const u32 a = sa + s * A_BYTES, b = sb + s * B_BYTES;
#pragma unroll
			for (int kk = 0; kk < BK / 16; kk++) {
				const u64 db = desc_k_major_sw128(b + kk * 32);
#pragma unroll
				for (int h = 0; h < HALVES; h++) Mma<T, BN>::run(acc[h], desc_k_major_sw128(a + h * 64 * 128 + kk * 32), db);
			}
			wgmma_commit();
			// Keep this k-block's wgmma in flight; the previous one is done
			// reading its slot (the one before s in the ring), which goes
			// back to the producer.
			wgmma_wait<1>();
#pragma unroll
			for (int h = 0; h < HALVES; h++) fence_acc(acc[h]);
			if (kb > 0 && lane == 0) mbar_arrive(bars + 8 * (STAGES + (s == 0 ? STAGES - 1 : s - 1)));
			if (++s == STAGES) {
				s = 0;
				phase ^= 1;
			}
		}
		wgmma_wait<0>();
#pragma unroll
		for (int h = 0; h < HALVES; h++) fence_acc(acc[h]);
		// The last k-block's slot is the one before s now.
		if (nK > 0 && lane == 0) mbar_arrive(bars + 8 * (STAGES + (s == 0 ? STAGES - 1 : s - 1)));

		const Tile tile = tile_at(t, cum, experts, nN);
		const int rows = counts[tile.e];
		u16 *dst = out + (u64)offsets[tile.e] * ldo;
		if (act >= ACT_GEGLU) {
#pragma unroll
			for (int h = 0; h < HALVES; h++)
				store_half_gated<T, BN>(acc[h], dst, rows, N / 2, ldo, tile.m * BM + 64 * h, tile.n * (BN / 2), warp,
				                        lane, act - ACT_GATED);
		} else {
#pragma unroll
			for (int h = 0; h < HALVES; h++)
				store_half<T, BN>(acc[h], dst, rows, N, ldo, tile.m * BM + 64 * h, tile.n * BN, warp, lane, act);
		}
	}
}

// __launch_bounds__ names 384 threads though a block has 256: the register
// count at entry is then capped at 168 (65536 / 384, rounded down to 8), so
// that setmaxnreg.inc to 232 is a real increase, taken from what the
// producer's setmaxnreg.dec to 40 gave back (the regime of CUTLASS's and
// DeepGEMM's warp-specialised kernels), and a second consumer warpgroup
// can be added without changing the budget: 128·40 + 256·232 ≤ 65536.
#define BOUND_THREADS 384

#define GEMM_INSTANCE(NAME, T, BM, BN, STAGES)                                                           \
	extern "C" __global__ void __launch_bounds__(BOUND_THREADS, 1)                                 \
	    NAME(const __grid_constant__ TensorMap map_a, const __grid_constant__ TensorMap map_b, u16 *out, \
	         const int *counts, const int *offsets, int experts, int N, int K, int ldo, int act) {     \
		grouped_gemm<T, BM, BN, STAGES>(&map_a, &map_b, out, counts, offsets, experts, N, K, ldo, act); \
	}

// The default (prefill) and decode configurations, and the others the
// microbenchmark compares. hopper.go's hopperConfigs lists the same names.
GEMM_INSTANCE(hopper_gemm_bf16_m128_n128_s4, BF16, 128, 128, 4)
GEMM_INSTANCE(hopper_gemm_fp16_m128_n128_s4, FP16, 128, 128, 4)
GEMM_INSTANCE(hopper_gemm_bf16_m64_n128_s6, BF16, 64, 128, 6)
GEMM_INSTANCE(hopper_gemm_fp16_m64_n128_s6, FP16, 64, 128, 6)
GEMM_INSTANCE(hopper_gemm_bf16_m128_n128_s5, BF16, 128, 128, 5)
GEMM_INSTANCE(hopper_gemm_bf16_m128_n64_s6, BF16, 128, 64, 6)

// ---- weights in the kernel's layout --------------------------------------------

// mix and the generator match kernels.Fill (and layer.cu's fill) bit for
// bit; the arithmetic is explicit .rn PTX so that no contraction into an
// FMA can change a value whatever NVRTC's --fmad.
__device__ __forceinline__ u64 mix(u64 z) {
	z += 0x9e3779b97f4a7c15ULL;
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
	z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
	return z ^ (z >> 31);
}
__device__ __forceinline__ float fmul_rn(float a, float b) {
	float r;
	asm("mul.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
	return r;
}
__device__ __forceinline__ float fsub_rn(float a, float b) {
	float r;
	asm("sub.rn.f32 %0, %1, %2;" : "=f"(r) : "f"(a), "f"(b));
	return r;
}

// Fills dst with the weights tensor `tensor` of every expert, transposed:
// the logical w[e][k][c] (element e·K·N + k·N + c of kernels.Fill's
// tensor, as the CPU reference holds it) goes to dst[e][n][k], with n = c,
// or, when gated (N = 2F, columns c < F the gate's and the rest the up
// projection's), the gate's and up's rows interleaved in blocks of 8 for
// the gated epilogue: n = 16·(f/8) + 8·half + f%8 for c = half·F + f.
// The values are the same as every other backend's; only their places
// differ.
template <class T>
__device__ void fill_transposed(u16 *dst, u64 experts, u64 K, u64 N, u64 seed, u32 tensor, float scale, u32 gated) {
	const u64 per = K * N, n_all = experts * per, F = N / 2;
	for (u64 j = blockIdx.x * (u64)blockDim.x + threadIdx.x; j < n_all; j += (u64)gridDim.x * blockDim.x) {
		const u64 e = j / per, r = j - e * per;
		const u64 n = r / K, k = r - n * K;
		// The logical column of row n (hopper.go's hopperW1Col).
		const u64 c = gated ? ((n >> 3) & 1) * F + (n >> 4) * 8 + (n & 7) : n;
		const u64 i = e * per + k * N + c;
		const u64 h = mix(seed ^ mix(((u64)tensor << 40) ^ i));
		const float u = (float)(h >> 40) * (1.0f / 16777216.0f);
		dst[j] = pack1(T(), fmul_rn(fmul_rn(fsub_rn(fmul_rn(2.0f, u), 1.0f), 1.7320508f), scale));
	}
}

extern "C" __global__ void hopper_fill_t_bf16(u16 *dst, u64 experts, u64 K, u64 N, u64 seed, u32 tensor,
                                              float scale, u32 gated) {
	fill_transposed<BF16>(dst, experts, K, N, seed, tensor, scale, gated);
}
extern "C" __global__ void hopper_fill_t_fp16(u16 *dst, u64 experts, u64 K, u64 N, u64 seed, u32 tensor,
                                              float scale, u32 gated) {
	fill_transposed<FP16>(dst, experts, K, N, seed, tensor, scale, gated);
}
