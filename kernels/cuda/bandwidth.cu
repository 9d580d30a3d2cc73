// A read-mostly kernel: the card's read bandwidth as a GEMM streams
// weights. A copy writes as much as it reads and understates what a
// kernel that only reads can take; this one reads n 16-byte words and
// writes one word per block, so the writes are noise.
//
// Header-free for NVRTC: extern "C" names, no includes.

extern "C" __global__ void read_sum(const uint4 *__restrict__ in, unsigned long long n,
                                    unsigned int *__restrict__ out) {
    unsigned int acc = 0;
    unsigned long long stride = (unsigned long long)gridDim.x * blockDim.x;
    for (unsigned long long i = (unsigned long long)blockIdx.x * blockDim.x + threadIdx.x; i < n; i += stride) {
        uint4 v = __ldg(in + i);
        acc ^= v.x ^ v.y ^ v.z ^ v.w;
    }
    // One store per block, kept only so the loads cannot be dropped.
    __shared__ unsigned int red[32];
    for (int o = 16; o > 0; o >>= 1) acc ^= __shfl_xor_sync(0xffffffffu, acc, o);
    if ((threadIdx.x & 31) == 0) red[threadIdx.x >> 5] = acc;
    __syncthreads();
    if (threadIdx.x == 0) {
        unsigned int a = 0;
        for (int w = 0; w < (int)(blockDim.x >> 5); w++) a ^= red[w];
        out[blockIdx.x] = a;
    }
}
