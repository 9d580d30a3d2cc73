// Run-time bindings to the CUDA driver, cuBLAS, NVRTC and NCCL, with no
// CUDA headers: every type is declared here as the ABI has it. This file is
// the one source of truth for the symbol tables: scripts/gencalls.py writes
// calls.h (a Go-callable wrapper per entry) and symbols.h (the names dl.c
// resolves) from it. MOETOP_OPTIONAL marks a symbol an older library may
// lack: its pointer is then NULL and the Go side says what is missing.
#ifndef MOETOP_DL_H
#define MOETOP_DL_H
#include <stddef.h>
#include <stdint.h>

typedef int CUresult;
typedef int CUdevice;
typedef void *CUcontext;
typedef unsigned long long CUdeviceptr;
typedef void *CUstream;
typedef void *CUevent;
typedef void *CUmodule;
typedef void *CUfunction;
typedef void *CUgraph;
typedef void *CUgraphExec;
typedef void *cublasHandle_t;
typedef int cublasStatus_t;
typedef void *nvrtcProgram;
typedef int nvrtcResult;
typedef uint32_t cuuint32_t;
typedef uint64_t cuuint64_t;

#define MOETOP_OPTIONAL

// CUlaunchAttribute: a 4-byte id, padding to 8, then a 64-byte union (its
// largest member holds a pointer, so it is 8-aligned): 72 bytes.
typedef struct {
	int id; // CUlaunchAttributeID
	char pad[4];
	union {
		char bytes[64];
		struct {
			unsigned x, y, z;
		} clusterDim;
		void *align; // the union's alignment as in cuda.h
	} value;
} CUlaunchAttribute;

typedef struct {
	unsigned gridDimX, gridDimY, gridDimZ;
	unsigned blockDimX, blockDimY, blockDimZ;
	unsigned sharedMemBytes;
	CUstream hStream;
	CUlaunchAttribute *attrs;
	unsigned numAttrs;
} CUlaunchConfig;

// CUtensorMap is opaque: 128 bytes, 64-byte aligned.
typedef struct {
	_Alignas(64) cuuint64_t opaque[16];
} CUtensorMap;

typedef int ncclResult_t;
typedef void *ncclComm_t;
typedef struct {
	char internal[128];
} ncclUniqueId;

// Symbol tables: filled by moetop_load; a NULL entry is a missing symbol.
typedef struct {
	CUresult (*cuInit)(unsigned);
	CUresult (*cuDriverGetVersion)(int *);
	CUresult (*cuDeviceGetCount)(int *);
	CUresult (*cuDeviceGet)(CUdevice *, int);
	CUresult (*cuDeviceGetName)(char *, int, CUdevice);
	CUresult (*cuDeviceGetAttribute)(int *, int, CUdevice);
	CUresult (*cuDeviceTotalMem_v2)(size_t *, CUdevice);
	CUresult (*cuDevicePrimaryCtxRetain)(CUcontext *, CUdevice);
	CUresult (*cuDevicePrimaryCtxRelease_v2)(CUdevice);
	CUresult (*cuCtxSetCurrent)(CUcontext);
	CUresult (*cuCtxSynchronize)(void);
	CUresult (*cuCtxGetCurrent)(CUcontext *);
	CUresult (*cuMemAlloc_v2)(CUdeviceptr *, size_t);
	CUresult (*cuMemFree_v2)(CUdeviceptr);
	CUresult (*cuMemAllocHost_v2)(void **, size_t);
	CUresult (*cuMemFreeHost)(void *);
	CUresult (*cuMemGetInfo_v2)(size_t *, size_t *);
	CUresult (*cuMemcpyHtoD_v2)(CUdeviceptr, const void *, size_t);
	CUresult (*cuMemcpyDtoH_v2)(void *, CUdeviceptr, size_t);
	CUresult (*cuMemcpyHtoDAsync_v2)(CUdeviceptr, const void *, size_t, CUstream);
	CUresult (*cuMemcpyDtoHAsync_v2)(void *, CUdeviceptr, size_t, CUstream);
	CUresult (*cuMemsetD8Async)(CUdeviceptr, unsigned char, size_t, CUstream);
	CUresult (*cuMemsetD16Async)(CUdeviceptr, unsigned short, size_t, CUstream);
	CUresult (*cuMemsetD32Async)(CUdeviceptr, unsigned int, size_t, CUstream);
	CUresult (*cuStreamCreate)(CUstream *, unsigned);
	CUresult (*cuStreamDestroy_v2)(CUstream);
	CUresult (*cuStreamSynchronize)(CUstream);
	CUresult (*cuStreamWaitEvent)(CUstream, CUevent, unsigned);
	CUresult (*cuEventCreate)(CUevent *, unsigned);
	CUresult (*cuEventDestroy_v2)(CUevent);
	CUresult (*cuEventRecord)(CUevent, CUstream);
	CUresult (*cuEventSynchronize)(CUevent);
	CUresult (*cuEventElapsedTime)(float *, CUevent, CUevent);
	CUresult (*cuModuleLoadData)(CUmodule *, const void *);
	CUresult (*cuModuleUnload)(CUmodule);
	CUresult (*cuModuleGetFunction)(CUfunction *, CUmodule, const char *);
	CUresult (*cuLaunchKernel)(CUfunction, unsigned, unsigned, unsigned, unsigned, unsigned, unsigned,
	                           unsigned, CUstream, void **, void **);
	CUresult (*cuFuncSetAttribute)(CUfunction, int, int);
	CUresult (*cuFuncGetAttribute)(int *, int, CUfunction);
	MOETOP_OPTIONAL CUresult (*cuFuncGetParamInfo)(CUfunction, size_t, size_t *, size_t *); // 12.4+
	MOETOP_OPTIONAL CUresult (*cuLaunchKernelEx)(const CUlaunchConfig *, CUfunction, void **, void **); // 11.8+
	MOETOP_OPTIONAL CUresult (*cuTensorMapEncodeTiled)(CUtensorMap *, int, cuuint32_t, void *, const cuuint64_t *,
	                                                   const cuuint64_t *, const cuuint32_t *, const cuuint32_t *,
	                                                   int, int, int, int); // 12.0+
	CUresult (*cuGetErrorName)(CUresult, const char **);
	CUresult (*cuGetErrorString)(CUresult, const char **);
	MOETOP_OPTIONAL CUresult (*cuStreamBeginCapture_v2)(CUstream, int);
	MOETOP_OPTIONAL CUresult (*cuStreamEndCapture)(CUstream, CUgraph *);
	MOETOP_OPTIONAL CUresult (*cuGraphInstantiateWithFlags)(CUgraphExec *, CUgraph, unsigned long long);
	MOETOP_OPTIONAL CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
	MOETOP_OPTIONAL CUresult (*cuGraphExecDestroy)(CUgraphExec);
	MOETOP_OPTIONAL CUresult (*cuGraphDestroy)(CUgraph);
} cu_t;

typedef struct {
	cublasStatus_t (*cublasCreate_v2)(cublasHandle_t *);
	cublasStatus_t (*cublasDestroy_v2)(cublasHandle_t);
	cublasStatus_t (*cublasGetVersion_v2)(cublasHandle_t, int *);
	cublasStatus_t (*cublasSetStream_v2)(cublasHandle_t, CUstream);
	cublasStatus_t (*cublasSetWorkspace_v2)(cublasHandle_t, void *, size_t);
	cublasStatus_t (*cublasSetMathMode)(cublasHandle_t, int);
	cublasStatus_t (*cublasGemmEx)(cublasHandle_t, int, int, int, int, int, const void *, const void *, int,
	                               int, const void *, int, int, const void *, void *, int, int, int, int);
	cublasStatus_t (*cublasGemmStridedBatchedEx)(cublasHandle_t, int, int, int, int, int, const void *,
	                                             const void *, int, int, long long, const void *, int, int,
	                                             long long, const void *, void *, int, int, long long, int,
	                                             int, int);
	MOETOP_OPTIONAL cublasStatus_t (*cublasGemmGroupedBatchedEx)(cublasHandle_t, const int *, const int *, const int *,
	                                             const int *, const int *, const void *, const void *const *,
	                                             int, const int *, const void *const *, int, const int *,
	                                             const void *, void *const *, int, const int *, int,
	                                             const int *, int);
	const char *(*cublasGetStatusString)(cublasStatus_t);
	MOETOP_OPTIONAL cublasStatus_t (*cublasGetProperty)(int, int *);
} cublas_t;

typedef struct {
	nvrtcResult (*nvrtcVersion)(int *, int *);
	nvrtcResult (*nvrtcCreateProgram)(nvrtcProgram *, const char *, const char *, int, const char *const *,
	                                  const char *const *);
	nvrtcResult (*nvrtcCompileProgram)(nvrtcProgram, int, const char *const *);
	nvrtcResult (*nvrtcGetProgramLogSize)(nvrtcProgram, size_t *);
	nvrtcResult (*nvrtcGetProgramLog)(nvrtcProgram, char *);
	nvrtcResult (*nvrtcGetCUBINSize)(nvrtcProgram, size_t *);
	nvrtcResult (*nvrtcGetCUBIN)(nvrtcProgram, char *);
	nvrtcResult (*nvrtcDestroyProgram)(nvrtcProgram *);
	const char *(*nvrtcGetErrorString)(nvrtcResult);
} nvrtc_t;

typedef struct {
	int (*cudaRuntimeGetVersion)(int *);
} cudart_t;

// NCCL, opened on its own (LoadNCCL): a machine without it still runs
// every single-GPU backend.
typedef struct {
	ncclResult_t (*ncclGetVersion)(int *);
	ncclResult_t (*ncclGetUniqueId)(ncclUniqueId *);
	ncclResult_t (*ncclCommInitRank)(ncclComm_t *, int, ncclUniqueId, int);
	ncclResult_t (*ncclCommInitAll)(ncclComm_t *, int, const int *);
	ncclResult_t (*ncclCommDestroy)(ncclComm_t);
	ncclResult_t (*ncclCommAbort)(ncclComm_t);
	ncclResult_t (*ncclCommGetAsyncError)(ncclComm_t, ncclResult_t *);
	ncclResult_t (*ncclCommCount)(ncclComm_t, int *);
	ncclResult_t (*ncclCommCuDevice)(ncclComm_t, int *);
	ncclResult_t (*ncclCommUserRank)(ncclComm_t, int *);
	ncclResult_t (*ncclGroupStart)(void);
	ncclResult_t (*ncclGroupEnd)(void);
	ncclResult_t (*ncclSend)(const void *, size_t, int, int, ncclComm_t, CUstream);
	ncclResult_t (*ncclRecv)(void *, size_t, int, int, ncclComm_t, CUstream);
	ncclResult_t (*ncclAllReduce)(const void *, void *, size_t, int, int, ncclComm_t, CUstream);
	const char *(*ncclGetErrorString)(ncclResult_t);
	MOETOP_OPTIONAL const char *(*ncclGetLastError)(ncclComm_t); // 2.13+
} nccl_t;

extern cu_t cu;
extern cublas_t cublas;
extern nvrtc_t nvrtc;
extern cudart_t cudart;
extern nccl_t nccl;

// moetop_load opens a library by trying each name in turn (dir first when
// given) and resolves the symbols of the table. It returns NULL on success,
// else a static message (the loader's own when it has one); missing names a
// symbol that was not found. Not safe to call from two threads at once.
const char *moetop_load(int which, const char *dir, const char **opened, const char **missing);

// A launch: grid, block and cluster (0 = none) sizes, dynamic shared memory
// and the stream as an integer.
typedef struct {
	unsigned grid[3], block[3], cluster[3];
	unsigned shmem;
	uintptr_t stream;
} moetop_launch_cfg;

// moetop_launch_ex copies the argument bytes (n arguments, argument i at
// offs[i] of blob, laid out with each argument's alignment from a 64-byte
// aligned base) into C memory, points the parameter array at them, and
// launches through cuLaunchKernelEx when a cluster is asked for, else
// cuLaunchKernel. MOETOP_NO_HOST_MEMORY when the copy cannot be allocated.
CUresult moetop_launch_ex(CUfunction f, const moetop_launch_cfg *cfg, int n, const uint32_t *offs, const void *blob,
                          size_t len);
#define MOETOP_NO_HOST_MEMORY (-1)

// moetop_encode_tiled encodes into a 64-byte aligned CUtensorMap of its own
// and copies the 128 bytes to out, which needs no alignment.
CUresult moetop_encode_tiled(void *out, int dtype, cuuint32_t rank, CUdeviceptr addr, const cuuint64_t *dims,
                             const cuuint64_t *strides, const cuuint32_t *box, const cuuint32_t *elem_strides,
                             int interleave, int swizzle, int l2, int oob);

// A stream handle from Go's integer form, which Go cannot convert to a
// pointer without a vet warning.
static inline CUstream moetop_stream(uintptr_t s) { return (CUstream)s; }

// NCCL calls that take device addresses and the stream as integers, which
// Go can pass without converting an integer to a pointer.
ncclResult_t moetop_nccl_send(CUdeviceptr buf, size_t count, int dtype, int peer, ncclComm_t comm, uintptr_t stream);
ncclResult_t moetop_nccl_recv(CUdeviceptr buf, size_t count, int dtype, int peer, ncclComm_t comm, uintptr_t stream);
ncclResult_t moetop_nccl_all_reduce(CUdeviceptr send, CUdeviceptr recv, size_t count, int dtype, int op,
                                    ncclComm_t comm, uintptr_t stream);

// GEMM wrappers: alpha = 1, beta = 0, no transposes; they take device
// addresses as integers and cast here, where a cast is not a Go pointer.
cublasStatus_t moetop_gemm(cublasHandle_t h, int m, int n, int k, CUdeviceptr A, int atype, int lda,
                           CUdeviceptr B, int btype, int ldb, CUdeviceptr C, int ctype, int ldc, int compute);
cublasStatus_t moetop_gemm_strided(cublasHandle_t h, int m, int n, int k, CUdeviceptr A, int lda, long long sa,
                                   CUdeviceptr B, int ldb, long long sb, CUdeviceptr C, int ldc, long long sc,
                                   int batch, int dtype, int compute);
// groups problems of sizes m[g]×n[g]×k[g], group_size[g] each; Aarr, Barr,
// Carr are device arrays of device pointers; lda = m, ldb = ldb[g] (k when
// ldb is NULL), ldc = m.
cublasStatus_t moetop_gemm_grouped(cublasHandle_t h, int groups, const int *m, const int *n, const int *k,
                                   const int *ldb, const int *group_size, CUdeviceptr Aarr, CUdeviceptr Barr,
                                   CUdeviceptr Carr, int dtype, int compute);

cublasStatus_t moetop_set_workspace(cublasHandle_t h, CUdeviceptr ws, size_t bytes);

enum { LIB_CUDA = 0, LIB_CUDART = 1, LIB_CUBLASLT = 2, LIB_CUBLAS = 3, LIB_NVRTC = 4, LIB_NCCL = 5 };
#endif
