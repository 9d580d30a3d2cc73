// Kernels that prove the launch path on a GPU (launch_gpu_test.go checks
// each against the host). Header-free like layer.cu: NVRTC compiles them
// with no toolkit headers, for sm_90a, and every Hopper feature is inline
// PTX. They are the smallest working example of each feature for whoever
// writes the next kernel.

#define TILE_ROWS 32
#define TILE_COLS 64

// (a) Each block copies two TILE_ROWS×TILE_COLS bf16 tiles of a rows×cols
// row-major matrix, side by side along the columns, global → shared with
// TMA through one mbarrier (phase 0, then phase 1), and writes the
// in-bounds part back to out with plain stores. The parts of a tile past
// the matrix must arrive as zeros; any that does not is counted in
// *oob_nonzero.
extern "C" __global__ void __launch_bounds__(128) tma_tile(const __grid_constant__ TensorMap map, u16 *out,
                                                           int rows, int cols, u32 *oob_nonzero) {
	__shared__ alignas(128) u16 tile[TILE_ROWS * TILE_COLS];
	__shared__ alignas(8) u64 bar_storage;
	const u32 bar = smem_u32(&bar_storage);
	if (threadIdx.x == 0) {
		mbar_init(bar, 1);
		// Make the initialised barrier visible to the TMA unit (the async
		// proxy) before it completes bytes on it.
		asm volatile("fence.mbarrier_init.release.cluster;" ::: "memory");
		asm volatile("fence.proxy.async.shared::cta;" ::: "memory");
	}
	__syncthreads();
	u32 parity = 0;
	for (int i = 0; i < 2; i++) {
		const int c0 = (blockIdx.x * 2 + i) * TILE_COLS, r0 = blockIdx.y * TILE_ROWS;
		if (threadIdx.x == 0) {
			mbar_expect_tx(bar, (u32)sizeof(tile));
			tma_load_2d(smem_u32(tile), &map, c0, r0, bar);
		}
		mbar_wait(bar, parity);
		parity ^= 1;
		for (int j = threadIdx.x; j < TILE_ROWS * TILE_COLS; j += blockDim.x) {
			const int r = r0 + j / TILE_COLS, c = c0 + j % TILE_COLS;
			const u16 v = tile[j];
			if (r < rows && c < cols) {
				out[(u64)r * cols + c] = v;
			} else if (v != 0) {
				atomicAdd(oob_nonzero, 1u);
			}
		}
		// Every thread has read the tile before the next copy lands on it.
		__syncthreads();
	}
}

// (b) More than 48 KiB of dynamic shared memory on a 3-D grid of 3-D
// blocks: each block fills words of shared memory from in, mixed with its
// linear index, then writes them out reversed, so that every word of the
// allocation is written and read by different threads. where[2·block] gets
// the block's coordinates, where[2·block+1] counts its threads.
extern "C" __global__ void big_smem(const u32 *in, u32 *out, u32 *where, int words) {
	extern __shared__ u32 dyn[];
	const u32 block = blockIdx.x + gridDim.x * (blockIdx.y + gridDim.y * blockIdx.z);
	const u32 t = threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z);
	const u32 nt = blockDim.x * blockDim.y * blockDim.z;
	for (u32 i = t; i < (u32)words; i += nt) dyn[i] = in[i] ^ (block * 2654435761u);
	__syncthreads();
	for (u32 i = t; i < (u32)words; i += nt) out[(u64)block * words + i] = dyn[words - 1 - i];
	if (t == 0) where[2 * block] = blockIdx.x | blockIdx.y << 10 | blockIdx.z << 20;
	atomicAdd(&where[2 * block + 1], 1u);
}

#define PAIR_THREADS 256

// (c) Runs as clusters of two blocks: each block puts its slice of in in
// shared memory, and after a cluster barrier reads its partner's through
// distributed shared memory (mapa + ld.shared::cluster) into out.
// rank_of[block] = the block's rank in its cluster | cluster size << 8.
extern "C" __global__ void __launch_bounds__(PAIR_THREADS) cluster_pair(const u32 *in, u32 *out, u32 *rank_of) {
	__shared__ u32 buf[PAIR_THREADS];
	const u32 t = threadIdx.x;
	buf[t] = in[blockIdx.x * PAIR_THREADS + t];
	u32 rank, size;
	asm volatile("mov.u32 %0, %%cluster_ctarank;" : "=r"(rank));
	asm volatile("mov.u32 %0, %%cluster_nctarank;" : "=r"(size));
	// Every block of the cluster has written buf (and is running) before
	// any block reads a partner's.
	asm volatile("barrier.cluster.arrive.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
	u32 remote, v;
	asm volatile("mapa.shared::cluster.u32 %0, %1, %2;" : "=r"(remote) : "r"(smem_u32(&buf[t])), "r"(rank ^ 1));
	asm volatile("ld.shared::cluster.u32 %0, [%1];" : "=r"(v) : "r"(remote) : "memory");
	out[blockIdx.x * PAIR_THREADS + t] = v;
	if (t == 0) rank_of[blockIdx.x] = rank | size << 8;
	// A block's shared memory must outlive its partner's reads of it.
	asm volatile("barrier.cluster.arrive.aligned;\n\tbarrier.cluster.wait.aligned;" ::: "memory");
}

// (e) Parameters of every size and alignment, echoed as 64-bit words, so
// that the host can check the layout Args built.
struct Three {
	u8 b[3];
};
struct Mixed {
	int i;
	long long j;
	float f;
};
extern "C" __global__ void echo_params(u8 a, short b, Three c, double d, Mixed m, float e, u16 h, u64 *out) {
	u64 dbits;
	u32 mf, eb;
	asm("mov.b64 %0, %1;" : "=l"(dbits) : "d"(d));
	asm("mov.b32 %0, %1;" : "=r"(mf) : "f"(m.f));
	asm("mov.b32 %0, %1;" : "=r"(eb) : "f"(e));
	out[0] = a;
	out[1] = (u64)(long long)b;
	out[2] = (u64)c.b[0] | (u64)c.b[1] << 8 | (u64)c.b[2] << 16;
	out[3] = dbits;
	out[4] = (u64)(long long)m.i;
	out[5] = (u64)m.j;
	out[6] = mf;
	out[7] = eb;
	out[8] = h;
}
