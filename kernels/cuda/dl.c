#include "dl.h"
#include <dlfcn.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

cu_t cu;
cublas_t cublas;
nvrtc_t nvrtc;
cudart_t cudart;
nccl_t nccl;

#include "symbols.h"

// The layouts dl.h declares by hand, as cuda.h and nccl.h have them.
_Static_assert(sizeof(CUlaunchAttribute) == 72, "CUlaunchAttribute is 72 bytes");
_Static_assert(offsetof(CUlaunchAttribute, value) == 8, "CUlaunchAttribute.value at 8");
_Static_assert(sizeof(CUlaunchConfig) == 56, "CUlaunchConfig is 56 bytes");
_Static_assert(offsetof(CUlaunchConfig, hStream) == 32, "CUlaunchConfig.hStream at 32");
_Static_assert(sizeof(CUtensorMap) == 128 && _Alignof(CUtensorMap) == 64, "CUtensorMap is 128 bytes, 64-aligned");
_Static_assert(sizeof(ncclUniqueId) == 128, "ncclUniqueId is 128 bytes");

static const char *sonames[][4] = {
	{"libcuda.so.1", "libcuda.so", NULL},
	{"libcudart.so.13", "libcudart.so.12", "libcudart.so", NULL},
	{"libcublasLt.so.13", "libcublasLt.so.12", "libcublasLt.so", NULL},
	{"libcublas.so.13", "libcublas.so.12", "libcublas.so", NULL},
	{"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so", NULL},
	{"libnccl.so.2", "libnccl.so", NULL},
};

static char opened_path[4096];
static char load_error[4096];

const char *moetop_load(int which, const char *dir, const char **opened, const char **missing) {
	void *h = NULL;
	load_error[0] = 0;
	for (int i = 0; sonames[which][i] && !h; i++) {
		if (dir && *dir) {
			snprintf(opened_path, sizeof opened_path, "%s/%s", dir, sonames[which][i]);
			h = dlopen(opened_path, RTLD_NOW | RTLD_GLOBAL);
			// A library that is there but cannot load (an unresolved
			// symbol, a newer glibc) says more than "not found": keep
			// the loader's first message.
			if (!h && !load_error[0]) {
				const char *e = dlerror();
				if (e && !strstr(e, "No such file")) snprintf(load_error, sizeof load_error, "%s", e);
			}
		}
		if (!h) {
			snprintf(opened_path, sizeof opened_path, "%s", sonames[which][i]);
			h = dlopen(opened_path, RTLD_NOW | RTLD_GLOBAL);
			if (!h && !load_error[0]) {
				const char *e = dlerror();
				if (e && !strstr(e, "No such file")) snprintf(load_error, sizeof load_error, "%s", e);
			}
		}
	}
	if (!h) {
		return load_error[0] ? load_error : "library not found";
	}
	*opened = opened_path;
	void **table = NULL;
	const char **names = NULL;
	size_t n = 0;
	switch (which) {
	case LIB_CUDA: table = (void **)&cu; names = cu_names; n = sizeof cu_names / sizeof *cu_names; break;
	case LIB_CUDART: table = (void **)&cudart; names = cudart_names; n = sizeof cudart_names / sizeof *cudart_names; break;
	case LIB_CUBLASLT: return NULL; // loaded only so that libcublas finds it
	case LIB_CUBLAS: table = (void **)&cublas; names = cublas_names; n = sizeof cublas_names / sizeof *cublas_names; break;
	case LIB_NVRTC: table = (void **)&nvrtc; names = nvrtc_names; n = sizeof nvrtc_names / sizeof *nvrtc_names; break;
	case LIB_NCCL: table = (void **)&nccl; names = nccl_names; n = sizeof nccl_names / sizeof *nccl_names; break;
	default: return "unknown library";
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

CUresult moetop_launch_ex(CUfunction f, const moetop_launch_cfg *cfg, int n, const uint32_t *offs, const void *blob,
                          size_t len) {
	// The arguments of a typical kernel fit on the stack; the copy is
	// 64-byte aligned because a CUtensorMap argument must be.
	_Alignas(64) unsigned char local_blob[4096];
	void *local_params[64];
	unsigned char *data = local_blob;
	void **params = local_params;
	if (len > sizeof local_blob) {
		data = aligned_alloc(64, (len + 63) / 64 * 64);
	}
	if (n > (int)(sizeof local_params / sizeof *local_params)) {
		params = malloc(n * sizeof *params);
	}
	CUresult r = MOETOP_NO_HOST_MEMORY;
	if (data && params) {
		if (len) memcpy(data, blob, len);
		for (int i = 0; i < n; i++) params[i] = data + offs[i];
		CUstream s = (CUstream)cfg->stream;
		if (cfg->cluster[0]) {
			CUlaunchAttribute attr;
			memset(&attr, 0, sizeof attr);
			attr.id = 4; // CU_LAUNCH_ATTRIBUTE_CLUSTER_DIMENSION
			attr.value.clusterDim.x = cfg->cluster[0];
			attr.value.clusterDim.y = cfg->cluster[1];
			attr.value.clusterDim.z = cfg->cluster[2];
			CUlaunchConfig c = {
			    cfg->grid[0], cfg->grid[1], cfg->grid[2], cfg->block[0], cfg->block[1], cfg->block[2],
			    cfg->shmem,   s,            &attr,        1,
			};
			r = cu.cuLaunchKernelEx(&c, f, n ? params : NULL, NULL);
		} else {
			r = cu.cuLaunchKernel(f, cfg->grid[0], cfg->grid[1], cfg->grid[2], cfg->block[0], cfg->block[1],
			                      cfg->block[2], cfg->shmem, s, n ? params : NULL, NULL);
		}
	}
	if (data != local_blob) free(data);
	if (params != local_params) free(params);
	return r;
}

CUresult moetop_encode_tiled(void *out, int dtype, cuuint32_t rank, CUdeviceptr addr, const cuuint64_t *dims,
                             const cuuint64_t *strides, const cuuint32_t *box, const cuuint32_t *elem_strides,
                             int interleave, int swizzle, int l2, int oob) {
	CUtensorMap m;
	memset(&m, 0, sizeof m);
	CUresult r = cu.cuTensorMapEncodeTiled(&m, dtype, rank, (void *)addr, dims, strides, box, elem_strides,
	                                       interleave, swizzle, l2, oob);
	if (r == 0) memcpy(out, &m, sizeof m);
	return r;
}

ncclResult_t moetop_nccl_send(CUdeviceptr buf, size_t count, int dtype, int peer, ncclComm_t comm, uintptr_t stream) {
	return nccl.ncclSend((const void *)buf, count, dtype, peer, comm, (CUstream)stream);
}

ncclResult_t moetop_nccl_recv(CUdeviceptr buf, size_t count, int dtype, int peer, ncclComm_t comm, uintptr_t stream) {
	return nccl.ncclRecv((void *)buf, count, dtype, peer, comm, (CUstream)stream);
}

ncclResult_t moetop_nccl_all_reduce(CUdeviceptr send, CUdeviceptr recv, size_t count, int dtype, int op,
                                    ncclComm_t comm, uintptr_t stream) {
	return nccl.ncclAllReduce((const void *)send, (void *)recv, count, dtype, op, comm, (CUstream)stream);
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
                                   const int *ldb, const int *group_size, CUdeviceptr Aarr, CUdeviceptr Barr,
                                   CUdeviceptr Carr, int dtype, int compute) {
	if (!cublas.cublasGemmGroupedBatchedEx) return 15; // CUBLAS_STATUS_NOT_SUPPORTED
	int *ops = calloc(groups, sizeof(int));
	float *alpha = malloc(groups * sizeof(float)), *beta = calloc(groups, sizeof(float));
	if (!ops || !alpha || !beta) {
		free(ops); free(alpha); free(beta);
		return 3; // CUBLAS_STATUS_ALLOC_FAILED
	}
	for (int g = 0; g < groups; g++) alpha[g] = 1.0f;
	cublasStatus_t st = cublas.cublasGemmGroupedBatchedEx(
	    h, ops, ops, m, n, k, alpha, (const void *const *)Aarr, dtype, m, (const void *const *)Barr, dtype, ldb ? ldb : k,
	    beta, (void *const *)Carr, dtype, m, groups, group_size, compute);
	free(ops); free(alpha); free(beta);
	return st;
}

cublasStatus_t moetop_set_workspace(cublasHandle_t h, CUdeviceptr ws, size_t bytes) {
	return cublas.cublasSetWorkspace_v2(h, (void *)ws, bytes);
}
