// Code generated from dl.h; DO NOT EDIT. Go cannot call C function
// pointers, so each table entry gets a static wrapper that cgo can call.
#ifndef MOETOP_CALLS_H
#define MOETOP_CALLS_H
#include "dl.h"

static inline CUresult call_cuInit(unsigned a0) { return cu.cuInit(a0); }
static inline CUresult call_cuDriverGetVersion(int * a0) { return cu.cuDriverGetVersion(a0); }
static inline CUresult call_cuDeviceGetCount(int * a0) { return cu.cuDeviceGetCount(a0); }
static inline CUresult call_cuDeviceGet(CUdevice * a0, int a1) { return cu.cuDeviceGet(a0, a1); }
static inline CUresult call_cuDeviceGetName(char * a0, int a1, CUdevice a2) { return cu.cuDeviceGetName(a0, a1, a2); }
static inline CUresult call_cuDeviceGetAttribute(int * a0, int a1, CUdevice a2) { return cu.cuDeviceGetAttribute(a0, a1, a2); }
static inline CUresult call_cuDeviceTotalMem_v2(size_t * a0, CUdevice a1) { return cu.cuDeviceTotalMem_v2(a0, a1); }
static inline CUresult call_cuDevicePrimaryCtxRetain(CUcontext * a0, CUdevice a1) { return cu.cuDevicePrimaryCtxRetain(a0, a1); }
static inline CUresult call_cuDevicePrimaryCtxRelease_v2(CUdevice a0) { return cu.cuDevicePrimaryCtxRelease_v2(a0); }
static inline CUresult call_cuCtxSetCurrent(CUcontext a0) { return cu.cuCtxSetCurrent(a0); }
static inline CUresult call_cuCtxSynchronize(void) { return cu.cuCtxSynchronize(); }
static inline CUresult call_cuMemAlloc_v2(CUdeviceptr * a0, size_t a1) { return cu.cuMemAlloc_v2(a0, a1); }
static inline CUresult call_cuMemFree_v2(CUdeviceptr a0) { return cu.cuMemFree_v2(a0); }
static inline CUresult call_cuMemAllocHost_v2(void ** a0, size_t a1) { return cu.cuMemAllocHost_v2(a0, a1); }
static inline CUresult call_cuMemFreeHost(void * a0) { return cu.cuMemFreeHost(a0); }
static inline CUresult call_cuMemGetInfo_v2(size_t * a0, size_t * a1) { return cu.cuMemGetInfo_v2(a0, a1); }
static inline CUresult call_cuMemcpyHtoD_v2(CUdeviceptr a0, const void * a1, size_t a2) { return cu.cuMemcpyHtoD_v2(a0, a1, a2); }
static inline CUresult call_cuMemcpyDtoH_v2(void * a0, CUdeviceptr a1, size_t a2) { return cu.cuMemcpyDtoH_v2(a0, a1, a2); }
static inline CUresult call_cuMemcpyHtoDAsync_v2(CUdeviceptr a0, const void * a1, size_t a2, CUstream a3) { return cu.cuMemcpyHtoDAsync_v2(a0, a1, a2, a3); }
static inline CUresult call_cuMemcpyDtoHAsync_v2(void * a0, CUdeviceptr a1, size_t a2, CUstream a3) { return cu.cuMemcpyDtoHAsync_v2(a0, a1, a2, a3); }
static inline CUresult call_cuMemsetD8Async(CUdeviceptr a0, unsigned char a1, size_t a2, CUstream a3) { return cu.cuMemsetD8Async(a0, a1, a2, a3); }
static inline CUresult call_cuMemsetD16Async(CUdeviceptr a0, unsigned short a1, size_t a2, CUstream a3) { return cu.cuMemsetD16Async(a0, a1, a2, a3); }
static inline CUresult call_cuMemsetD32Async(CUdeviceptr a0, unsigned int a1, size_t a2, CUstream a3) { return cu.cuMemsetD32Async(a0, a1, a2, a3); }
static inline CUresult call_cuStreamCreate(CUstream * a0, unsigned a1) { return cu.cuStreamCreate(a0, a1); }
static inline CUresult call_cuStreamDestroy_v2(CUstream a0) { return cu.cuStreamDestroy_v2(a0); }
static inline CUresult call_cuStreamSynchronize(CUstream a0) { return cu.cuStreamSynchronize(a0); }
static inline CUresult call_cuStreamWaitEvent(CUstream a0, CUevent a1, unsigned a2) { return cu.cuStreamWaitEvent(a0, a1, a2); }
static inline CUresult call_cuEventCreate(CUevent * a0, unsigned a1) { return cu.cuEventCreate(a0, a1); }
static inline CUresult call_cuEventDestroy_v2(CUevent a0) { return cu.cuEventDestroy_v2(a0); }
static inline CUresult call_cuEventRecord(CUevent a0, CUstream a1) { return cu.cuEventRecord(a0, a1); }
static inline CUresult call_cuEventSynchronize(CUevent a0) { return cu.cuEventSynchronize(a0); }
static inline CUresult call_cuEventElapsedTime(float * a0, CUevent a1, CUevent a2) { return cu.cuEventElapsedTime(a0, a1, a2); }
static inline CUresult call_cuModuleLoadData(CUmodule * a0, const void * a1) { return cu.cuModuleLoadData(a0, a1); }
static inline CUresult call_cuModuleUnload(CUmodule a0) { return cu.cuModuleUnload(a0); }
static inline CUresult call_cuModuleGetFunction(CUfunction * a0, CUmodule a1, const char * a2) { return cu.cuModuleGetFunction(a0, a1, a2); }
static inline CUresult call_cuLaunchKernel(CUfunction a0, unsigned a1, unsigned a2, unsigned a3, unsigned a4, unsigned a5, unsigned a6, unsigned a7, CUstream a8, void ** a9, void ** a10) { return cu.cuLaunchKernel(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10); }
static inline CUresult call_cuGetErrorName(CUresult a0, const char ** a1) { return cu.cuGetErrorName(a0, a1); }
static inline CUresult call_cuGetErrorString(CUresult a0, const char ** a1) { return cu.cuGetErrorString(a0, a1); }
static inline cublasStatus_t call_cublasCreate_v2(cublasHandle_t * a0) { return cublas.cublasCreate_v2(a0); }
static inline cublasStatus_t call_cublasDestroy_v2(cublasHandle_t a0) { return cublas.cublasDestroy_v2(a0); }
static inline cublasStatus_t call_cublasGetVersion_v2(cublasHandle_t a0, int * a1) { return cublas.cublasGetVersion_v2(a0, a1); }
static inline cublasStatus_t call_cublasSetStream_v2(cublasHandle_t a0, CUstream a1) { return cublas.cublasSetStream_v2(a0, a1); }
static inline cublasStatus_t call_cublasSetWorkspace_v2(cublasHandle_t a0, void * a1, size_t a2) { return cublas.cublasSetWorkspace_v2(a0, a1, a2); }
static inline cublasStatus_t call_cublasSetMathMode(cublasHandle_t a0, int a1) { return cublas.cublasSetMathMode(a0, a1); }
static inline cublasStatus_t call_cublasGemmEx(cublasHandle_t a0, int a1, int a2, int a3, int a4, int a5, const void * a6, const void * a7, int a8, int a9, const void * a10, int a11, int a12, const void * a13, void * a14, int a15, int a16, int a17, int a18) { return cublas.cublasGemmEx(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18); }
static inline cublasStatus_t call_cublasGemmStridedBatchedEx(cublasHandle_t a0, int a1, int a2, int a3, int a4, int a5, const void * a6, const void * a7, int a8, int a9, long long a10, const void * a11, int a12, int a13, long long a14, const void * a15, void * a16, int a17, int a18, long long a19, int a20, int a21, int a22) { return cublas.cublasGemmStridedBatchedEx(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19, a20, a21, a22); }
static inline cublasStatus_t call_cublasGemmGroupedBatchedEx(cublasHandle_t a0, const int * a1, const int * a2, const int * a3, const int * a4, const int * a5, const void * a6, const void *const * a7, int a8, const int * a9, const void *const * a10, int a11, const int * a12, const void * a13, void *const * a14, int a15, const int * a16, int a17, const int * a18, int a19) { return cublas.cublasGemmGroupedBatchedEx(a0, a1, a2, a3, a4, a5, a6, a7, a8, a9, a10, a11, a12, a13, a14, a15, a16, a17, a18, a19); }
static inline const char * call_cublasGetStatusString(cublasStatus_t a0) { return cublas.cublasGetStatusString(a0); }
static inline nvrtcResult call_nvrtcVersion(int * a0, int * a1) { return nvrtc.nvrtcVersion(a0, a1); }
static inline nvrtcResult call_nvrtcCreateProgram(nvrtcProgram * a0, const char * a1, const char * a2, int a3, const char *const * a4, const char *const * a5) { return nvrtc.nvrtcCreateProgram(a0, a1, a2, a3, a4, a5); }
static inline nvrtcResult call_nvrtcCompileProgram(nvrtcProgram a0, int a1, const char *const * a2) { return nvrtc.nvrtcCompileProgram(a0, a1, a2); }
static inline nvrtcResult call_nvrtcGetProgramLogSize(nvrtcProgram a0, size_t * a1) { return nvrtc.nvrtcGetProgramLogSize(a0, a1); }
static inline nvrtcResult call_nvrtcGetProgramLog(nvrtcProgram a0, char * a1) { return nvrtc.nvrtcGetProgramLog(a0, a1); }
static inline nvrtcResult call_nvrtcGetCUBINSize(nvrtcProgram a0, size_t * a1) { return nvrtc.nvrtcGetCUBINSize(a0, a1); }
static inline nvrtcResult call_nvrtcGetCUBIN(nvrtcProgram a0, char * a1) { return nvrtc.nvrtcGetCUBIN(a0, a1); }
static inline nvrtcResult call_nvrtcDestroyProgram(nvrtcProgram * a0) { return nvrtc.nvrtcDestroyProgram(a0); }
static inline const char * call_nvrtcGetErrorString(nvrtcResult a0) { return nvrtc.nvrtcGetErrorString(a0); }
static inline int call_cudaRuntimeGetVersion(int * a0) { return cudart.cudaRuntimeGetVersion(a0); }

#endif
