//===- cuda.cpp - CUDA driver-API part of the mmrec runtime -------------===//
//
// Every driver call is checked; failures name the call and the kernel or
// module involved. Built only when the CUDA toolkit is found; otherwise
// cuda_stub.cpp provides the same entry points, which report that no GPU
// support was built.
//
//===----------------------------------------------------------------------===//

#include "mmrec/runtime.h"

#include <cuda.h>

#include <algorithm>
#include <mutex>
#include <vector>
#include <string>

namespace mmrec::rt {
namespace {

std::string cuErrorString(CUresult r) {
  const char *name = nullptr, *msg = nullptr;
  cuGetErrorName(r, &name);
  cuGetErrorString(r, &msg);
  return std::string(name ? name : "CUDA_ERROR") + " (" + (msg ? msg : "?") + ")";
}

void check(CUresult r, const std::string &what) {
  if (r != CUDA_SUCCESS)
    throw Error(what + ": " + cuErrorString(r));
}

/// Initializes the driver and makes the primary context of device 0 current.
bool ensureContext(bool throwOnFailure) {
  static std::once_flag once;
  static CUresult status = CUDA_SUCCESS;
  static CUcontext ctx = nullptr;
  std::call_once(once, [] {
    status = cuInit(0);
    int count = 0;
    if (status == CUDA_SUCCESS)
      status = cuDeviceGetCount(&count);
    if (status == CUDA_SUCCESS && count == 0)
      status = CUDA_ERROR_NO_DEVICE;
    CUdevice dev;
    if (status == CUDA_SUCCESS)
      status = cuDeviceGet(&dev, 0);
    if (status == CUDA_SUCCESS)
      status = cuDevicePrimaryCtxRetain(&ctx, dev);
  });
  if (status == CUDA_SUCCESS) {
    CUcontext cur = nullptr;
    cuCtxGetCurrent(&cur);
    if (cur != ctx)
      check(cuCtxSetCurrent(ctx), "cuCtxSetCurrent");
    return true;
  }
  if (throwOnFailure)
    throw Error("mmrec runtime: no usable CUDA device: " + cuErrorString(status));
  return false;
}

} // namespace

bool gpuAvailable() { return ensureContext(false); }

namespace gpu {

Module::Module(const char *name, const void *cubin, size_t cubinSize, const char *ptx)
    : name_(name) {
  ensureContext(true);
  CUmodule m = nullptr;
  CUresult r = CUDA_ERROR_INVALID_IMAGE;
  if (cubin && cubinSize)
    r = cuModuleLoadData(&m, cubin);
  if (r != CUDA_SUCCESS) {
    // The cubin is for another architecture (or absent): JIT the PTX.
    char log[8192] = {0};
    CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *vals[] = {log, reinterpret_cast<void *>(sizeof(log))};
    r = cuModuleLoadDataEx(&m, ptx, 2, opts, vals);
    if (r != CUDA_SUCCESS)
      throw Error("loading kernel image '" + name_ + "': " + cuErrorString(r) +
                  (log[0] ? std::string("\n") + log : std::string()));
  }
  module_ = m;
}

Module::~Module() {
  if (module_)
    cuModuleUnload(static_cast<CUmodule>(module_));
}

void *Module::function(const char *kernel) {
  for (auto &f : functions_)
    if (f.first == kernel)
      return f.second;
  CUfunction fn = nullptr;
  check(cuModuleGetFunction(&fn, static_cast<CUmodule>(module_), kernel),
        "cuModuleGetFunction(" + std::string(kernel) + ") in '" + name_ + "'");
  functions_.emplace_back(kernel, fn);
  return fn;
}

void launch(const char *kernel, void *fn, int64_t gridX, int blockX, size_t sharedBytes,
            Stream stream, void **params) {
  if (gridX <= 0)
    return;
  if (gridX > 0x7fffffff)
    throw Error(std::string(kernel) + ": grid of " + std::to_string(gridX) +
                " blocks exceeds the device limit");
  check(cuLaunchKernel(static_cast<CUfunction>(fn), unsigned(gridX), 1, 1, unsigned(blockX),
                       1, 1, unsigned(sharedBytes), static_cast<CUstream>(stream), params,
                       nullptr),
        std::string("launching ") + kernel);
}

Workspace::~Workspace() {
  if (ptr_)
    cuMemFree(reinterpret_cast<CUdeviceptr>(ptr_));
}

void *Workspace::get(size_t bytes, size_t zeroBytes, Stream stream) {
  ensureContext(true);
  if (bytes > size_) {
    if (ptr_) {
      check(cuCtxSynchronize(), "cuCtxSynchronize (workspace)");
      cuMemFree(reinterpret_cast<CUdeviceptr>(ptr_));
    }
    CUdeviceptr p;
    check(cuMemAlloc(&p, bytes), "cuMemAlloc(" + std::to_string(bytes) + ") for a workspace");
    ptr_ = reinterpret_cast<void *>(p);
    size_ = bytes;
  }
  if (zeroBytes)
    check(cuMemsetD8Async(reinterpret_cast<CUdeviceptr>(ptr_), 0, zeroBytes,
                          static_cast<CUstream>(stream)),
          "cuMemsetD8Async (workspace)");
  return ptr_;
}

Workspace &threadWorkspace() {
  thread_local Workspace ws;
  return ws;
}

void *alloc(size_t bytes) {
  ensureContext(true);
  CUdeviceptr p;
  check(cuMemAlloc(&p, bytes ? bytes : 1), "cuMemAlloc(" + std::to_string(bytes) + ")");
  return reinterpret_cast<void *>(p);
}
void free(void *p) {
  if (p)
    cuMemFree(reinterpret_cast<CUdeviceptr>(p));
}
void copyToDevice(void *dst, const void *src, size_t bytes) {
  check(cuMemcpyHtoD(reinterpret_cast<CUdeviceptr>(dst), src, bytes), "cuMemcpyHtoD");
}
void copyToHost(void *dst, const void *src, size_t bytes) {
  check(cuMemcpyDtoH(dst, reinterpret_cast<CUdeviceptr>(src), bytes), "cuMemcpyDtoH");
}
void memsetD8(void *dst, unsigned char value, size_t bytes) {
  check(cuMemsetD8(reinterpret_cast<CUdeviceptr>(dst), value, bytes), "cuMemsetD8");
}
void synchronize() { check(cuCtxSynchronize(), "cuCtxSynchronize"); }

double medianMs(const std::function<void()> &fn, int warmup, int reps) {
  ensureContext(true);
  for (int i = 0; i < warmup; ++i)
    fn();
  check(cuCtxSynchronize(), "cuCtxSynchronize (timing)");
  std::vector<float> ms;
  CUevent a, b;
  check(cuEventCreate(&a, CU_EVENT_DEFAULT), "cuEventCreate");
  check(cuEventCreate(&b, CU_EVENT_DEFAULT), "cuEventCreate");
  for (int i = 0; i < reps; ++i) {
    check(cuEventRecord(a, nullptr), "cuEventRecord");
    fn();
    check(cuEventRecord(b, nullptr), "cuEventRecord");
    check(cuEventSynchronize(b), "cuEventSynchronize");
    float t = 0;
    check(cuEventElapsedTime(&t, a, b), "cuEventElapsedTime");
    ms.push_back(t);
  }
  cuEventDestroy(a);
  cuEventDestroy(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void memInfo(size_t &freeBytes, size_t &totalBytes) {
  ensureContext(true);
  check(cuMemGetInfo(&freeBytes, &totalBytes), "cuMemGetInfo");
}

void copyDeviceToDevice(void *dst, const void *src, size_t bytes) {
  check(cuMemcpyDtoD(reinterpret_cast<CUdeviceptr>(dst), reinterpret_cast<CUdeviceptr>(src),
                     bytes),
        "cuMemcpyDtoD");
}

} // namespace gpu
} // namespace mmrec::rt
