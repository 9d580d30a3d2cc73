// Hopper helpers both header-free Hopper programs use (hopper.cu and the
// launch path's testkernels.cu): NVRTC gets no toolkit headers, so every
// Hopper feature is inline PTX. The Go side puts this text before each
// program's source (hopperPTX), so it is compiled, and cached, with it.
typedef unsigned char u8;
typedef unsigned short u16;
typedef unsigned int u32;
typedef unsigned long long u64;

// A CUtensorMap as a kernel takes it: 128 opaque bytes, 64-byte aligned,
// by value as a `const __grid_constant__` parameter, so that its address
// is the parameter's own (TMA reads the descriptor from there).
struct alignas(64) TensorMap {
	u64 opaque[16];
};

// The shared-window address PTX wants for a pointer into shared memory.
__device__ __forceinline__ u32 smem_u32(const void *p) {
	u64 a;
	asm("cvta.to.shared.u64 %0, %1;" : "=l"(a) : "l"(p));
	return (u32)a;
}

__device__ __forceinline__ void mbar_init(u32 bar, u32 count) {
	asm volatile("mbarrier.init.shared::cta.b64 [%0], %1;" ::"r"(bar), "r"(count) : "memory");
}

// Arrives on the barrier and tells it bytes more are coming from the TMA
// unit: the phase completes when both the arrival and the bytes are in.
__device__ __forceinline__ void mbar_expect_tx(u32 bar, u32 bytes) {
	asm volatile("mbarrier.arrive.expect_tx.shared::cta.b64 _, [%0], %1;" ::"r"(bar), "r"(bytes) : "memory");
}

__device__ __forceinline__ void mbar_arrive(u32 bar) {
	asm volatile("mbarrier.arrive.shared::cta.b64 _, [%0];" ::"r"(bar) : "memory");
}

// The GPU's nanosecond clock.
__device__ __forceinline__ u64 global_ns() {
	u64 t;
	asm volatile("mov.u64 %0, %%globaltimer;" : "=l"(t));
	return t;
}

// Whether the phase of the given parity has completed (try_wait may sleep
// a while, as the hardware chooses, before it answers no).
__device__ __forceinline__ u32 mbar_try_wait(u32 bar, u32 parity) {
	u32 done;
	asm volatile("{\n\t.reg .pred p;\n\t"
	             "mbarrier.try_wait.parity.shared::cta.b64 p, [%1], %2;\n\t"
	             "selp.u32 %0, 1, 0, p;\n\t}"
	             : "=r"(done)
	             : "r"(bar), "r"(parity)
	             : "memory");
	return done;
}

// Waits until the phase of the given parity has completed. A fresh
// barrier is in phase 0, and parity 1 (the phase "before" it) counts as
// complete: the producer's first pass over the empty slots does not wait.
//
// A wait that never ends is a protocol bug (a miscounted expect_tx, a
// producer and consumer that disagree on the tiles); it traps once it has
// waited 10 s by the GPU's clock, so the launch fails with an error naming
// the kernel instead of hanging the process. A count of tries would not
// bound it in seconds: each try_wait may sleep for a time the hardware
// chooses.
__device__ __forceinline__ void mbar_wait(u32 bar, u32 parity) {
	u64 start = 0;
	for (u32 tries = 0; !mbar_try_wait(bar, parity); tries++) {
		// The clock is read once every 1024 tries, and first after them:
		// a wait that ends soon, the common case, never reads it.
		if ((tries & 1023) == 1023) {
			u64 now = global_ns();
			if (start == 0) {
				start = now;
			} else if ((long long)(now - start) > 10000000000ll) {
				// Signed: a clock that stepped back reads as no time, not
				// as 584 years.
				asm volatile("trap;");
			}
		}
	}
}

// mbar_wait with no bound, for a waiter whose hang on a copy that never
// lands a bounded wait elsewhere in the block turns into a trap (hopper.cu's
// consumer: its producer waits, bounded, for every slot to come back before
// it leaves). It does not bound a consumer waiting for a copy the producer
// never issued, which only a disagreement of the two on the tiles could
// cause; both loops read the same counts, k-blocks and grid.
// It spares the count's register where every register is taken: with 128
// accumulators live, that one more makes ptxas spill.
__device__ __forceinline__ void mbar_wait_unbounded(u32 bar, u32 parity) {
	while (!mbar_try_wait(bar, parity)) {
	}
}

// TMA: copies the box at (c0, c1) (innermost first; c2 the outermost of a
// 3-D map) of the tensor map's tensor into shared memory at dst,
// completing its bytes on bar.
__device__ __forceinline__ void tma_load_2d(u32 dst, const TensorMap *map, int c0, int c1, u32 bar) {
	asm volatile("cp.async.bulk.tensor.2d.shared::cluster.global.mbarrier::complete_tx::bytes"
	             " [%0], [%1, {%2, %3}], [%4];" ::"r"(dst),
	             "l"((u64)map), "r"(c0), "r"(c1), "r"(bar)
	             : "memory");
}

__device__ __forceinline__ void tma_load_3d(u32 dst, const TensorMap *map, int c0, int c1, int c2, u32 bar) {
	asm volatile("cp.async.bulk.tensor.3d.shared::cluster.global.mbarrier::complete_tx::bytes"
	             " [%0], [%1, {%2, %3, %4}], [%5];" ::"r"(dst),
	             "l"((u64)map), "r"(c0), "r"(c1), "r"(c2), "r"(bar)
	             : "memory");
}
