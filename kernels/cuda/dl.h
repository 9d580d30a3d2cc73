// Run-time bindings to the CUDA driver, cuBLAS and NVRTC, with no CUDA
// headers: every type is declared here as the ABI has it.
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
	CUresult (*cuGetErrorName)(CUresult, const char **);
	CUresult (*cuGetErrorString)(CUresult, const char **);
	CUresult (*cuStreamBeginCapture_v2)(CUstream, int);
	CUresult (*cuStreamEndCapture)(CUstream, CUgraph *);
	CUresult (*cuGraphInstantiateWithFlags)(CUgraphExec *, CUgraph, unsigned long long);
	CUresult (*cuGraphLaunch)(CUgraphExec, CUstream);
	CUresult (*cuGraphExecDestroy)(CUgraphExec);
	CUresult (*cuGraphDestroy)(CUgraph);
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
	cublasStatus_t (*cublasGemmGroupedBatchedEx)(cublasHandle_t, const int *, const int *, const int *,
	                                             const int *, const int *, const void *, const void *const *,
	                                             int, const int *, const void *const *, int, const int *,
	                                             const void *, void *const *, int, const int *, int,
	                                             const int *, int);
	const char *(*cublasGetStatusString)(cublasStatus_t);
	cublasStatus_t (*cublasGetProperty)(int, int *);
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

extern cu_t cu;
extern cublas_t cublas;
extern nvrtc_t nvrtc;
extern cudart_t cudart;

// moetop_load opens a library by trying each name in turn (dir first when
// given) and resolves the symbols of the table. It returns NULL on success,
// else a static message; missing names a symbol that was not found.
const char *moetop_load(int which, const char *dir, const char **opened, const char **missing);

// moetop_launch copies n 8-byte argument slots into C memory and launches.
CUresult moetop_launch(CUfunction f, unsigned gx, unsigned gy, unsigned bx, unsigned shmem, CUstream s,
                       int n, const uint64_t *args);

// GEMM wrappers: alpha = 1, beta = 0, no transposes; they take device
// addresses as integers and cast here, where a cast is not a Go pointer.
cublasStatus_t moetop_gemm(cublasHandle_t h, int m, int n, int k, CUdeviceptr A, int atype, int lda,
                           CUdeviceptr B, int btype, int ldb, CUdeviceptr C, int ctype, int ldc, int compute);
cublasStatus_t moetop_gemm_strided(cublasHandle_t h, int m, int n, int k, CUdeviceptr A, int lda, long long sa,
                                   CUdeviceptr B, int ldb, long long sb, CUdeviceptr C, int ldc, long long sc,
                                   int batch, int dtype, int compute);
// groups problems of sizes m[g]×n[g]×k[g], group_size[g] each; Aarr, Barr,
// Carr are device arrays of device pointers; lda = m, ldb = k, ldc = m.
cublasStatus_t moetop_gemm_grouped(cublasHandle_t h, int groups, const int *m, const int *n, const int *k,
                                   const int *group_size, CUdeviceptr Aarr, CUdeviceptr Barr, CUdeviceptr Carr,
                                   int dtype, int compute);

cublasStatus_t moetop_set_workspace(cublasHandle_t h, CUdeviceptr ws, size_t bytes);

enum { LIB_CUDA = 0, LIB_CUDART = 1, LIB_CUBLASLT = 2, LIB_CUBLAS = 3, LIB_NVRTC = 4 };
#endif
