#include "dl.h"
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cu_t cu;
cublas_t cublas;
nvrtc_t nvrtc;
cudart_t cudart;

// Symbol names in table order; a leading '?' marks a symbol that may be
// missing (the caller checks the pointer before use).
static const char *cu_names[] = {
	"cuInit", "cuDriverGetVersion", "cuDeviceGetCount", "cuDeviceGet", "cuDeviceGetName",
	"cuDeviceGetAttribute", "cuDeviceTotalMem_v2", "cuDevicePrimaryCtxRetain", "cuDevicePrimaryCtxRelease_v2",
	"cuCtxSetCurrent", "cuCtxSynchronize", "cuMemAlloc_v2", "cuMemFree_v2", "cuMemAllocHost_v2",
	"cuMemFreeHost", "cuMemGetInfo_v2", "cuMemcpyHtoD_v2", "cuMemcpyDtoH_v2", "cuMemcpyHtoDAsync_v2",
	"cuMemcpyDtoHAsync_v2", "cuMemsetD8Async", "cuMemsetD16Async", "cuMemsetD32Async", "cuStreamCreate",
	"cuStreamDestroy_v2", "cuStreamSynchronize", "cuStreamWaitEvent", "cuEventCreate", "cuEventDestroy_v2",
	"cuEventRecord", "cuEventSynchronize", "cuEventElapsedTime", "cuModuleLoadData", "cuModuleUnload",
	"cuModuleGetFunction", "cuLaunchKernel", "cuGetErrorName", "cuGetErrorString",
	"?cuStreamBeginCapture_v2", "?cuStreamEndCapture", "?cuGraphInstantiateWithFlags", "?cuGraphLaunch",
	"?cuGraphExecDestroy", "?cuGraphDestroy",
};
static const char *cublas_names[] = {
	"cublasCreate_v2", "cublasDestroy_v2", "cublasGetVersion_v2", "cublasSetStream_v2",
	"cublasSetWorkspace_v2", "cublasSetMathMode", "cublasGemmEx", "cublasGemmStridedBatchedEx",
	"?cublasGemmGroupedBatchedEx", "cublasGetStatusString", "?cublasGetProperty",
};
static const char *nvrtc_names[] = {
	"nvrtcVersion", "nvrtcCreateProgram", "nvrtcCompileProgram", "nvrtcGetProgramLogSize",
	"nvrtcGetProgramLog", "nvrtcGetCUBINSize", "nvrtcGetCUBIN", "nvrtcDestroyProgram", "nvrtcGetErrorString",
};
static const char *cudart_names[] = {"cudaRuntimeGetVersion"};

static const char *sonames[][4] = {
	{"libcuda.so.1", "libcuda.so", NULL},
	{"libcudart.so.13", "libcudart.so.12", "libcudart.so", NULL},
	{"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so", NULL},
	{"libcublas.so.13", "libcublas.so.12", "libcublas.so", NULL},
	{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", NULL},
};

static char opened_path[4096];

const char *moetop_load(int which, const char *dir, const char **opened, const char **missing) {
	void *h = NULL;
	for (int i = 0; sonames[which][i] && !h; i++) {
		if (dir && *dir) {
			snprintf(opened_path, sizeof opened_path, "%s/%s", dir, sonames[which][i]);
			h = dlopen(opened_path, RTLD_NOW | RTLD_GLOBAL);
		}
		if (!h) {
			snprintf(opened_path, sizeof opened_path, "%s", sonames[which][i]);
			h = dlopen(opened_path, RTLD_NOW | RTLD_GLOBAL);
		}
	}
	if (!h) {
		return "library not found";
	}
	*opened = opened_path;
	void **table = NULL;
	const char **names = NULL;
	size_t n = 0;
	switch (which) {
	case LIB_CUDA: table = (void **)&cu; names = cu_names; n = sizeof cu_names / sizeof *cu_names; break;
	case LIB_CUDART: table = (void **)&cudart; names = cudart_names; n = 1; break;
	case LIB_CUBLASLT: return NULL; // loaded only so that libcublas finds it
	case LIB_CUBLAS: table = (void **)&cublas; names = cublas_names; n = sizeof cublas_names / sizeof *cublas_names; break;
	case LIB_NVRTC: table = (void **)&nvrtc; names = nvrtc_names; n = sizeof nvrtc_names / sizeof *nvrtc_names; break;
	}
	for (size_t i = 0; i < n; i++) {
		int optional = names[i][0] == '?';
		const char *name = names[i] + optional;
		void *p = dlsym(h, name);
		// CUDA 12.8+ versions cuEventElapsedTime; take the newest.
		if (which == LIB_CUDA && strcmp(name, "cuEventElapsedTime") == 0) {
			void *v2 = dlsym(h, "cuEventElapsedTime_v2");
			if (v2) p = v2;
		}
		if (!p && !optional) {
			*missing = name;
			return "symbol not found";
		}
		table[i] = p;
	}
	return NULL;
}

CUresult moetop_launch(CUfunction f, unsigned gx, unsigned gy, unsigned bx, unsigned shmem, CUstream s,
                       int n, const uint64_t *args) {
	uint64_t slots[32];
	void *params[32];
	if (n > 32) return 1; // CUDA_ERROR_INVALID_VALUE
	for (int i = 0; i < n; i++) {
		slots[i] = args[i];
		params[i] = &slots[i];
	}
	return cu.cuLaunchKernel(f, gx, gy, 1, bx, 1, 1, shmem, s, params, NULL);
}

cublasStatus_t moetop_gemm(cublasHandle_t h, int m, int n, int k, CUdeviceptr A, int atype, int lda,
                           CUdeviceptr B, int btype, int ldb, CUdeviceptr C, int ctype, int ldc, int compute) {
	const float alpha = 1.0f, beta = 0.0f;
	return cublas.cublasGemmEx(h, 0, 0, m, n, k, &alpha, (const void *)A, atype, lda, (const void *)B, btype, ldb,
	                           &beta, (void *)C, ctype, ldc, compute, -1 /* CUBLAS_GEMM_DEFAULT */);
}

cublasStatus_t moetop_gemm_strided(cublasHandle_t h, int m, int n, int k, CUdeviceptr A, int lda, long long sa,
                                   CUdeviceptr B, int ldb, long long sb, CUdeviceptr C, int ldc, long long sc,
                                   int batch, int dtype, int compute) {
	const float alpha = 1.0f, beta = 0.0f;
	return cublas.cublasGemmStridedBatchedEx(h, 0, 0, m, n, k, &alpha, (const void *)A, dtype, lda, sa,
	                                         (const void *)B, dtype, ldb, sb, &beta, (void *)C, dtype, ldc, sc,
	                                         batch, compute, -1);
}

cublasStatus_t moetop_gemm_grouped(cublasHandle_t h, int groups, const int *m, const int *n, const int *k,
                                   const int *group_size, CUdeviceptr Aarr, CUdeviceptr Barr, CUdeviceptr Carr,
                                   int dtype, int compute) {
	if (!cublas.cublasGemmGroupedBatchedEx) return 15; // CUBLAS_STATUS_NOT_SUPPORTED
	int *ops = calloc(groups, sizeof(int));
	float *alpha = malloc(groups * sizeof(float)), *beta = calloc(groups, sizeof(float));
	if (!ops || !alpha || !beta) {
		free(ops); free(alpha); free(beta);
		return 3; // CUBLAS_STATUS_ALLOC_FAILED
	}
	for (int g = 0; g < groups; g++) alpha[g] = 1.0f;
	cublasStatus_t st = cublas.cublasGemmGroupedBatchedEx(
	    h, ops, ops, m, n, k, alpha, (const void *const *)Aarr, dtype, m, (const void *const *)Barr, dtype, k,
	    beta, (void *const *)Carr, dtype, m, groups, group_size, compute);
	free(ops); free(alpha); free(beta);
	return st;
}

cublasStatus_t moetop_set_workspace(cublasHandle_t h, CUdeviceptr ws, size_t bytes) {
	return cublas.cublasSetWorkspace_v2(h, (void *)ws, bytes);
}
