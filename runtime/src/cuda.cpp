//===- cuda.cpp - CUDA driver-API part of the mmrec runtime -------------===//
//
// Every driver call is checked; failures name the call and the kernel or
// module involved. Built only when the CUDA toolkit is found; otherwise
// cuda_absent.cpp provides the same entry points, which report that no GPU
// support was built.
//
//===----------------------------------------------------------------------===//

#include "mmrec/runtime.h"
#include "mmrec/blas.h"

#include <cuda.h>
#include <dlfcn.h>

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <memory>
#include <mutex>
#include <unordered_map>
#include <vector>
#include <string>

namespace mmrec::rt {
namespace {

// The driver is loaded with dlopen at first use, so that programs built with
// the GPU runtime start (and run their CPU paths) on machines without one.
// Each entry: our name, the driver's exported symbol (the versioned one
// that cuda.h maps the name to).
#define MMREC_CU_FUNCTIONS(X)                                                                \
  X(cuInit, "cuInit")                                                                        \
  X(cuDeviceGetCount, "cuDeviceGetCount")                                                    \
  X(cuDeviceGet, "cuDeviceGet")                                                              \
  X(cuDevicePrimaryCtxRetain, "cuDevicePrimaryCtxRetain")                                    \
  X(cuCtxGetCurrent, "cuCtxGetCurrent")                                                      \
  X(cuCtxSetCurrent, "cuCtxSetCurrent")                                                      \
  X(cuCtxSynchronize, "cuCtxSynchronize")                                                    \
  X(cuGetErrorName, "cuGetErrorName")                                                        \
  X(cuGetErrorString, "cuGetErrorString")                                                    \
  X(cuModuleLoadData, "cuModuleLoadData")                                                    \
  X(cuModuleLoadDataEx, "cuModuleLoadDataEx")                                                \
  X(cuModuleUnload, "cuModuleUnload")                                                        \
  X(cuModuleGetFunction, "cuModuleGetFunction")                                              \
  X(cuLaunchKernel, "cuLaunchKernel")                                                        \
  X(cuFuncSetAttribute, "cuFuncSetAttribute")                                                \
  X(cuLaunchCooperativeKernel, "cuLaunchCooperativeKernel")                                  \
  X(cuLaunchKernelEx, "cuLaunchKernelEx")                                                    \
  X(cuFuncGetAttribute, "cuFuncGetAttribute")                                                \
  X(cuOccupancyMaxActiveClusters, "cuOccupancyMaxActiveClusters")                            \
  X(cuOccupancyMaxActiveBlocksPerMultiprocessor, "cuOccupancyMaxActiveBlocksPerMultiprocessor") \
  X(cuDeviceGetAttribute, "cuDeviceGetAttribute")                                            \
  X(cuMemAlloc, "cuMemAlloc_v2")                                                             \
  X(cuMemFree, "cuMemFree_v2")                                                               \
  X(cuMemGetInfo, "cuMemGetInfo_v2")                                                         \
  X(cuMemcpyHtoD, "cuMemcpyHtoD_v2")                                                         \
  X(cuMemcpyDtoH, "cuMemcpyDtoH_v2")                                                         \
  X(cuMemcpyDtoD, "cuMemcpyDtoD_v2")                                                         \
  X(cuMemsetD8, "cuMemsetD8_v2")                                                             \
  X(cuMemsetD8Async, "cuMemsetD8Async")                                                      \
  X(cuEventCreate, "cuEventCreate")                                                          \
  X(cuEventDestroy, "cuEventDestroy_v2")                                                     \
  X(cuEventRecord, "cuEventRecord")                                                          \
  X(cuEventSynchronize, "cuEventSynchronize")                                                \
  X(cuEventElapsedTime, "cuEventElapsedTime")                                                \
  X(cuEventQuery, "cuEventQuery")                                                            \
  X(cuStreamCreate, "cuStreamCreate")                                                        \
  X(cuStreamDestroy, "cuStreamDestroy_v2")                                                   \
  X(cuStreamWaitEvent, "cuStreamWaitEvent")                                                  \
  X(cuStreamSynchronize, "cuStreamSynchronize")

struct Driver {
#define MMREC_CU_MEMBER(name, sym) decltype(&::name) name = nullptr;
  MMREC_CU_FUNCTIONS(MMREC_CU_MEMBER)
#undef MMREC_CU_MEMBER
  std::string error;
  bool ok = false;

  Driver() {
    void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
    if (!lib) {
      error = std::string("cannot load the CUDA driver (libcuda.so.1): ") + dlerror();
      return;
    }
#define MMREC_CU_LOAD(name, sym)                                                               \
  name = reinterpret_cast<decltype(name)>(dlsym(lib, sym));                                    \
  if (!name) {                                                                                 \
    error = "the CUDA driver lacks " sym;                                                      \
    return;                                                                                    \
  }
    MMREC_CU_FUNCTIONS(MMREC_CU_LOAD)
#undef MMREC_CU_LOAD
    ok = true;
  }
};

const Driver &driver() {
  static Driver d;
  return d;
}

// Calls below go through the loaded driver.
#define MMREC_CU_CALL(name) driver().name

std::string cuErrorString(CUresult r) {
  const char *name = nullptr, *msg = nullptr;
  if (!driver().ok)
    return "CUDA error " + std::to_string(int(r));
  MMREC_CU_CALL(cuGetErrorName)(r, &name);
  MMREC_CU_CALL(cuGetErrorString)(r, &msg);
  return std::string(name ? name : "CUDA_ERROR") + " (" + (msg ? msg : "?") + ")";
}

void check(CUresult r, const std::string &what) {
  if (r != CUDA_SUCCESS)
    throw Error(what + ": " + cuErrorString(r));
}

/// The device this process uses: under a launcher that sets a local rank
/// (Open MPI, Slurm, torchrun-style LOCAL_RANK), local rank mod the number of
/// devices, so that the ranks of one host take one GPU each; device 0 alone.
int chosenOrdinal(int count) {
  for (const char *v : {"OMPI_COMM_WORLD_LOCAL_RANK", "SLURM_LOCALID", "MPI_LOCALRANKID",
                        "LOCAL_RANK"})
    if (const char *s = std::getenv(v)) {
      char *end = nullptr;
      long r = std::strtol(s, &end, 10);
      if (end != s && *end == '\0' && r >= 0 && count > 0)
        return int(r % count);
    }
  return 0;
}

int g_ordinal = 0;

/// Initializes the driver and makes the primary context of the process's
/// device (chosenOrdinal) current.
bool ensureContext(bool throwOnFailure) {
  static std::once_flag once;
  static CUresult status = CUDA_SUCCESS;
  static CUcontext ctx = nullptr;
  static std::string loadError;
  std::call_once(once, [] {
    if (!driver().ok) {
      status = CUDA_ERROR_NOT_INITIALIZED;
      loadError = driver().error;
      return;
    }
    status = MMREC_CU_CALL(cuInit)(0);
    int count = 0;
    if (status == CUDA_SUCCESS)
      status = MMREC_CU_CALL(cuDeviceGetCount)(&count);
    if (status == CUDA_SUCCESS && count == 0)
      status = CUDA_ERROR_NO_DEVICE;
    CUdevice dev;
    g_ordinal = chosenOrdinal(count);
    if (status == CUDA_SUCCESS)
      status = MMREC_CU_CALL(cuDeviceGet)(&dev, g_ordinal);
    if (status == CUDA_SUCCESS)
      status = MMREC_CU_CALL(cuDevicePrimaryCtxRetain)(&ctx, dev);
  });
  if (status == CUDA_SUCCESS) {
    CUcontext cur = nullptr;
    MMREC_CU_CALL(cuCtxGetCurrent)(&cur);
    if (cur != ctx)
      check(MMREC_CU_CALL(cuCtxSetCurrent)(ctx), "cuCtxSetCurrent");
    return true;
  }
  if (throwOnFailure)
    throw Error("mmrec runtime: no usable CUDA device: " +
                (loadError.empty() ? cuErrorString(status) : loadError));
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
    r = MMREC_CU_CALL(cuModuleLoadData)(&m, cubin);
  if (r != CUDA_SUCCESS) {
    // The cubin is for another architecture (or absent): JIT the PTX.
    char log[8192] = {0};
    CUjit_option opts[] = {CU_JIT_ERROR_LOG_BUFFER, CU_JIT_ERROR_LOG_BUFFER_SIZE_BYTES};
    void *vals[] = {log, reinterpret_cast<void *>(sizeof(log))};
    r = MMREC_CU_CALL(cuModuleLoadDataEx)(&m, ptx, 2, opts, vals);
    if (r != CUDA_SUCCESS)
      throw Error("loading kernel image '" + name_ + "': " + cuErrorString(r) +
                  (log[0] ? std::string("\n") + log : std::string()));
  }
  module_ = m;
}

Module::~Module() {
  if (module_)
    MMREC_CU_CALL(cuModuleUnload)(static_cast<CUmodule>(module_));
}

void *Module::function(const char *kernel) {
  for (auto &f : functions_)
    if (f.first == kernel)
      return f.second;
  CUfunction fn = nullptr;
  check(MMREC_CU_CALL(cuModuleGetFunction)(&fn, static_cast<CUmodule>(module_), kernel),
        "cuModuleGetFunction(" + std::string(kernel) + ") in '" + name_ + "'");
  functions_.emplace_back(kernel, fn);
  return fn;
}

int deviceAttribute(int attribute) {
  ensureContext(true);
  CUdevice dev;
  check(MMREC_CU_CALL(cuDeviceGet)(&dev, g_ordinal), "cuDeviceGet");
  int v = 0;
  check(MMREC_CU_CALL(cuDeviceGetAttribute)(&v, static_cast<CUdevice_attribute>(attribute), dev),
        "cuDeviceGetAttribute");
  return v;
}

int multiprocessorCount() { return deviceAttribute(CU_DEVICE_ATTRIBUTE_MULTIPROCESSOR_COUNT); }

void launch(const char *kernel, void *fn, int64_t gridX, int blockX, size_t sharedBytes,
            Stream stream, void **params) {
  if (gridX <= 0)
    return;
  if (gridX > 0x7fffffff)
    throw Error(std::string(kernel) + ": grid of " + std::to_string(gridX) +
                " blocks exceeds the device limit");
  // The 48 KB default covers static and dynamic shared memory together.
  int staticBytes = 0;
  if (sharedBytes > 0)
    check(MMREC_CU_CALL(cuFuncGetAttribute)(&staticBytes, CU_FUNC_ATTRIBUTE_SHARED_SIZE_BYTES,
                                            static_cast<CUfunction>(fn)),
          std::string("querying the static shared memory of ") + kernel);
  if (sharedBytes + size_t(staticBytes) > 48 * 1024) {
    if (sharedBytes + size_t(staticBytes) >
        size_t(deviceAttribute(CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)))
      throw Error(std::string(kernel) + ": needs " + std::to_string(sharedBytes + staticBytes) +
                  " bytes of shared memory per block, more than the device offers (" +
                  std::to_string(deviceAttribute(
                      CU_DEVICE_ATTRIBUTE_MAX_SHARED_MEMORY_PER_BLOCK_OPTIN)) +
                  ")");
    check(MMREC_CU_CALL(cuFuncSetAttribute)(static_cast<CUfunction>(fn),
                                            CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                            int(sharedBytes)),
          std::string("setting the shared memory size of ") + kernel);
  }
  check(MMREC_CU_CALL(cuLaunchKernel)(static_cast<CUfunction>(fn), unsigned(gridX), 1, 1, unsigned(blockX),
                       1, 1, unsigned(sharedBytes), static_cast<CUstream>(stream), params,
                       nullptr),
        std::string("launching ") + kernel);
}

namespace {
/// Opts `f` in to `sharedBytes` of dynamic shared memory beyond 48 KiB.
void optInShared(CUfunction f, size_t sharedBytes, const char *kernel) {
  if (sharedBytes > 48 * 1024)
    check(MMREC_CU_CALL(cuFuncSetAttribute)(f, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                            int(sharedBytes)),
          std::string("setting the shared memory size of ") + kernel);
}
/// The cluster width `f` was compiled for (.reqnctapercluster; 0 without).
int clusterWidth(CUfunction f, const char *kernel) {
  int clusterX = 0;
  check(MMREC_CU_CALL(cuFuncGetAttribute)(&clusterX, CU_FUNC_ATTRIBUTE_REQUIRED_CLUSTER_WIDTH, f),
        std::string("the cluster shape of ") + kernel);
  return clusterX;
}
/// A cuLaunchKernelEx configuration of gridX × gridY blocks of blockX
/// threads (no attributes: the cluster shape comes from the kernel).
CUlaunchConfig launchConfig(int64_t gridX, int64_t gridY, int blockX, size_t sharedBytes,
                            Stream stream) {
  CUlaunchConfig cfg = {};
  cfg.gridDimX = unsigned(gridX);
  cfg.gridDimY = unsigned(gridY);
  cfg.gridDimZ = 1;
  cfg.blockDimX = unsigned(blockX);
  cfg.blockDimY = cfg.blockDimZ = 1;
  cfg.sharedMemBytes = unsigned(sharedBytes);
  cfg.hStream = static_cast<CUstream>(stream);
  return cfg;
}
/// How many clusters of `f` the device holds at once under `cfg`.
int activeClusters(CUfunction f, const CUlaunchConfig &cfg, const char *kernel) {
  int clusters = 0;
  check(MMREC_CU_CALL(cuOccupancyMaxActiveClusters)(&clusters, f, &cfg),
        std::string("cluster occupancy of ") + kernel);
  return clusters;
}
} // namespace

void launchCooperative(const char *kernel, void *fn, int64_t gridX, int64_t gridY, int blockX,
                       size_t sharedBytes, Stream stream, void **params) {
  if (gridX <= 0 || gridY <= 0)
    return;
  // MMREC_COOP_MAX_GROUPS caps the groups (benchmarks: 1 is the kernels
  // without row groups).
  static const int64_t maxGroups = [] {
    const char *e = std::getenv("MMREC_COOP_MAX_GROUPS");
    return e && *e ? std::max<int64_t>(1, std::atoll(e)) : int64_t(1) << 30;
  }();
  gridY = std::min(gridY, maxGroups);
  CUfunction f = static_cast<CUfunction>(fn);
  optInShared(f, sharedBytes, kernel);
  // A kernel compiled for thread-block clusters (.reqnctapercluster, e.g.
  // the level-0 MMA kernels that split their contraction across a cluster):
  // every cluster must be resident at once, and the launch is cooperative
  // through cuLaunchKernelEx (the cluster shape comes from the kernel).
  const int clusterX = clusterWidth(f, kernel);
  if (clusterX > 1) {
    if (gridX % clusterX != 0)
      throw Error(std::string(kernel) + ": a grid of " + std::to_string(gridX) +
                  " blocks is not a whole number of clusters of " + std::to_string(clusterX));
    CUlaunchAttribute attr[1] = {};
    attr[0].id = CU_LAUNCH_ATTRIBUTE_COOPERATIVE;
    attr[0].value.cooperative = 1;
    CUlaunchConfig cfg = launchConfig(gridX, 1, blockX, sharedBytes, stream);
    const int clusters = activeClusters(f, cfg, kernel);
    if (gridX / clusterX > clusters)
      throw Error(std::string(kernel) + ": the cooperative kernel needs " +
                  std::to_string(gridX / clusterX) + " co-resident clusters of " +
                  std::to_string(clusterX) + " blocks of " + std::to_string(blockX) +
                  " threads, the device holds " + std::to_string(clusters));
    cfg.gridDimY = unsigned(std::min<int64_t>(gridY, clusters / (gridX / clusterX)));
    cfg.attrs = attr;
    cfg.numAttrs = 1;
    check(MMREC_CU_CALL(cuLaunchKernelEx)(&cfg, f, params, nullptr),
          std::string("launching ") + kernel + " cooperatively in clusters of " +
              std::to_string(clusterX));
    return;
  }
  int perSM = 0;
  check(MMREC_CU_CALL(cuOccupancyMaxActiveBlocksPerMultiprocessor)(&perSM, f, blockX,
                                                                   sharedBytes),
        std::string("occupancy of ") + kernel);
  const int64_t resident = int64_t(perSM) * multiprocessorCount();
  if (gridX > resident)
    throw Error(std::string(kernel) + ": the cooperative kernel needs " + std::to_string(gridX) +
                " co-resident blocks of " + std::to_string(blockX) + " threads, the device holds " +
                std::to_string(resident));
  const auto groups = unsigned(std::min<int64_t>(gridY, resident / gridX));
  check(MMREC_CU_CALL(cuLaunchCooperativeKernel)(f, unsigned(gridX), groups, 1, unsigned(blockX), 1, 1,
                                                 unsigned(sharedBytes),
                                                 static_cast<CUstream>(stream), params),
        std::string("launching ") + kernel + " cooperatively");
}

void launchClusters(const char *kernel, void *fn, int64_t gridX, int64_t gridY, int blockX,
                    size_t sharedBytes, Stream stream, void **params) {
  if (gridX <= 0 || gridY <= 0)
    return;
  CUfunction f = static_cast<CUfunction>(fn);
  const int clusterX = clusterWidth(f, kernel);
  if (clusterX != gridX)
    throw Error(std::string(kernel) + ": a cluster launch of " + std::to_string(gridX) +
                " blocks a row, the kernel's clusters have " + std::to_string(clusterX));
  optInShared(f, sharedBytes, kernel);
  if (clusterX > 8) // beyond the portable size (H100 / H200: up to 16)
    check(MMREC_CU_CALL(cuFuncSetAttribute)(f, CU_FUNC_ATTRIBUTE_NON_PORTABLE_CLUSTER_SIZE_ALLOWED,
                                            1),
          std::string("allowing clusters of ") + std::to_string(clusterX) + " for " + kernel);
  CUlaunchConfig cfg = launchConfig(gridX, gridY, blockX, sharedBytes, stream);
  if (activeClusters(f, cfg, kernel) < 1)
    throw Error(std::string(kernel) + ": the device cannot hold a cluster of " +
                std::to_string(clusterX) + " blocks of " + std::to_string(blockX) +
                " threads and " + std::to_string(sharedBytes) +
                " bytes of shared memory (compile without --train-gated-cluster)");
  check(MMREC_CU_CALL(cuLaunchKernelEx)(&cfg, f, params, nullptr),
        std::string("launching ") + kernel + " in clusters of " + std::to_string(clusterX));
}

Workspace::~Workspace() {
  if (ptr_)
    MMREC_CU_CALL(cuMemFree)(reinterpret_cast<CUdeviceptr>(ptr_));
}

void *Workspace::get(size_t bytes, size_t zeroBytes, Stream stream) {
  ensureContext(true);
  if (bytes > size_) {
    if (ptr_) {
      check(MMREC_CU_CALL(cuCtxSynchronize)(), "cuCtxSynchronize (workspace)");
      MMREC_CU_CALL(cuMemFree)(reinterpret_cast<CUdeviceptr>(ptr_));
    }
    CUdeviceptr p;
    check(MMREC_CU_CALL(cuMemAlloc)(&p, bytes), "cuMemAlloc(" + std::to_string(bytes) + ") for a workspace");
    ptr_ = reinterpret_cast<void *>(p);
    size_ = bytes;
  }
  if (zeroBytes)
    check(MMREC_CU_CALL(cuMemsetD8Async)(reinterpret_cast<CUdeviceptr>(ptr_), 0, zeroBytes,
                          static_cast<CUstream>(stream)),
          "cuMemsetD8Async (workspace)");
  return ptr_;
}

Workspace &threadWorkspace() {
  thread_local Workspace ws;
  return ws;
}

TaggedBuffer threadScanStatus(size_t bytes, Stream stream) {
  struct Status {
    CUdeviceptr ptr = 0;
    size_t size = 0;
    uint32_t epoch = 0;
    ~Status() {
      if (ptr)
        MMREC_CU_CALL(cuMemFree)(ptr);
    }
  };
  thread_local Status st;
  ensureContext(true);
  // Tags are epoch·4 + 1 or 2 in a u32: start over (zeroed) well before
  // they could wrap.
  bool zero = st.epoch >= (1u << 29);
  if (bytes > st.size) {
    if (st.ptr) {
      check(MMREC_CU_CALL(cuCtxSynchronize)(), "cuCtxSynchronize (scan status)");
      MMREC_CU_CALL(cuMemFree)(st.ptr);
      st.ptr = 0;
    }
    check(MMREC_CU_CALL(cuMemAlloc)(&st.ptr, bytes),
          "cuMemAlloc(" + std::to_string(bytes) + ") for the scan status words");
    st.size = bytes;
    zero = true;
  }
  if (zero) {
    check(MMREC_CU_CALL(cuMemsetD8Async)(st.ptr, 0, st.size, static_cast<CUstream>(stream)),
          "cuMemsetD8Async (scan status)");
    st.epoch = 0;
  }
  return {reinterpret_cast<void *>(st.ptr), ++st.epoch};
}

void *alloc(size_t bytes) {
  ensureContext(true);
  CUdeviceptr p;
  check(MMREC_CU_CALL(cuMemAlloc)(&p, bytes ? bytes : 1), "cuMemAlloc(" + std::to_string(bytes) + ")");
  return reinterpret_cast<void *>(p);
}
void free(void *p) {
  if (p)
    MMREC_CU_CALL(cuMemFree)(reinterpret_cast<CUdeviceptr>(p));
}
void copyToDevice(void *dst, const void *src, size_t bytes) {
  check(MMREC_CU_CALL(cuMemcpyHtoD)(reinterpret_cast<CUdeviceptr>(dst), src, bytes), "cuMemcpyHtoD");
}
void copyToHost(void *dst, const void *src, size_t bytes) {
  check(MMREC_CU_CALL(cuMemcpyDtoH)(dst, reinterpret_cast<CUdeviceptr>(src), bytes), "cuMemcpyDtoH");
}
void memsetD8(void *dst, unsigned char value, size_t bytes) {
  check(MMREC_CU_CALL(cuMemsetD8)(reinterpret_cast<CUdeviceptr>(dst), value, bytes), "cuMemsetD8");
}
void synchronize() { check(MMREC_CU_CALL(cuCtxSynchronize)(), "cuCtxSynchronize"); }

Stream createStream() {
  ensureContext(true);
  CUstream s = nullptr;
  check(MMREC_CU_CALL(cuStreamCreate)(&s, CU_STREAM_NON_BLOCKING), "cuStreamCreate");
  return s;
}
void destroyStream(Stream s) {
  if (s)
    MMREC_CU_CALL(cuStreamDestroy)(static_cast<CUstream>(s));
}
void synchronizeStream(Stream s) {
  check(MMREC_CU_CALL(cuStreamSynchronize)(static_cast<CUstream>(s)), "cuStreamSynchronize");
}
Event createEvent() {
  ensureContext(true);
  CUevent e = nullptr;
  check(MMREC_CU_CALL(cuEventCreate)(&e, CU_EVENT_DISABLE_TIMING), "cuEventCreate");
  return e;
}
void destroyEvent(Event e) {
  if (e)
    MMREC_CU_CALL(cuEventDestroy)(static_cast<CUevent>(e));
}
void recordEvent(Event e, Stream s) {
  check(MMREC_CU_CALL(cuEventRecord)(static_cast<CUevent>(e), static_cast<CUstream>(s)),
        "cuEventRecord");
}
void streamWaitEvent(Stream s, Event e) {
  check(MMREC_CU_CALL(cuStreamWaitEvent)(static_cast<CUstream>(s), static_cast<CUevent>(e), 0),
        "cuStreamWaitEvent");
}
bool eventDone(Event e) {
  CUresult r = MMREC_CU_CALL(cuEventQuery)(static_cast<CUevent>(e));
  if (r == CUDA_ERROR_NOT_READY)
    return false;
  check(r, "cuEventQuery");
  return true;
}

double medianMs(const std::function<void()> &fn, int warmup, int reps) {
  ensureContext(true);
  for (int i = 0; i < warmup; ++i)
    fn();
  check(MMREC_CU_CALL(cuCtxSynchronize)(), "cuCtxSynchronize (timing)");
  std::vector<float> ms;
  CUevent a, b;
  check(MMREC_CU_CALL(cuEventCreate)(&a, CU_EVENT_DEFAULT), "cuEventCreate");
  check(MMREC_CU_CALL(cuEventCreate)(&b, CU_EVENT_DEFAULT), "cuEventCreate");
  for (int i = 0; i < reps; ++i) {
    check(MMREC_CU_CALL(cuEventRecord)(a, nullptr), "cuEventRecord");
    fn();
    check(MMREC_CU_CALL(cuEventRecord)(b, nullptr), "cuEventRecord");
    check(MMREC_CU_CALL(cuEventSynchronize)(b), "cuEventSynchronize");
    float t = 0;
    check(MMREC_CU_CALL(cuEventElapsedTime)(&t, a, b), "cuEventElapsedTime");
    ms.push_back(t);
  }
  MMREC_CU_CALL(cuEventDestroy)(a);
  MMREC_CU_CALL(cuEventDestroy)(b);
  std::sort(ms.begin(), ms.end());
  return ms[ms.size() / 2];
}

void memInfo(size_t &freeBytes, size_t &totalBytes) {
  ensureContext(true);
  check(MMREC_CU_CALL(cuMemGetInfo)(&freeBytes, &totalBytes), "cuMemGetInfo");
}

void copyDeviceToDevice(void *dst, const void *src, size_t bytes) {
  check(MMREC_CU_CALL(cuMemcpyDtoD)(reinterpret_cast<CUdeviceptr>(dst), reinterpret_cast<CUdeviceptr>(src),
                     bytes),
        "cuMemcpyDtoD");
}

} // namespace gpu
} // namespace mmrec::rt

//===----------------------------------------------------------------------===//
// The mgpu* entry points of MLIR's gpu-to-llvm lowering
//===----------------------------------------------------------------------===//
//
// The GPU training library (NAME.train.gpu.so) is host code that MLIR's
// gpu-to-llvm produced: its global constructors register kernel images with
// mgpuModuleLoad(JIT), and each launch asks for a stream, the function, the
// launch and a synchronization. They are provided here, on mmrec's driver
// loader, and exported to the libraries the trainer dlopens (executables
// are linked with ENABLE_EXPORTS). They never throw (the callers are
// generated frames without unwind information): the first failure is kept
// and taken by gpu::takeLaunchError(), which KernelLibrary checks after
// every kernel; later launches are skipped until then.
//
// Images are loaded lazily, at the first use of one of their functions, so
// that opening a library costs nothing on the device. Every launch goes to
// the runtime's stream (the legacy default stream): launches run in order,
// and the runtime's copies to the host wait for them, so the per-launch
// synchronization the lowering asks for is not needed.

using namespace mmrec::rt;

namespace {

/// An image registered by a library's constructor, loaded (as a gpu::Module:
/// cubin, or PTX JIT-compiled) at the first use of one of its functions.
struct LazyImage {
  const void *data = nullptr;
  size_t size = 0; // 0: PTX text
  std::unique_ptr<gpu::Module> module;
  std::mutex mu;
};

struct LaunchState {
  std::mutex mu;
  std::string error;                             // the first failure
  std::unordered_map<void *, std::string> names; // for messages and *_coop
};

LaunchState &launchState() {
  static LaunchState *s = new LaunchState; // outlives library destructors
  return *s;
}

void recordError(const std::string &what) {
  LaunchState &s = launchState();
  std::lock_guard<std::mutex> g(s.mu);
  if (s.error.empty())
    s.error = what;
}

bool errorPending() {
  LaunchState &s = launchState();
  std::lock_guard<std::mutex> g(s.mu);
  return !s.error.empty();
}

} // namespace

std::string mmrec::rt::gpu::takeLaunchError() {
  LaunchState &s = launchState();
  std::lock_guard<std::mutex> g(s.mu);
  std::string e;
  std::swap(e, s.error);
  return e;
}

extern "C" {

__attribute__((visibility("default"))) void *mgpuModuleLoad(void *data, size_t size) {
  auto *img = new LazyImage;
  img->data = data;
  img->size = size;
  return img;
}

__attribute__((visibility("default"))) void *mgpuModuleLoadJIT(void *data, int) {
  return mgpuModuleLoad(data, 0);
}

__attribute__((visibility("default"))) void mgpuModuleUnload(void *m) {
  auto *img = static_cast<LazyImage *>(m);
  // At process exit the context may already be gone: keep the module.
  if (img)
    (void)img->module.release();
  delete img;
}

__attribute__((visibility("default"))) void *mgpuModuleGetFunction(void *m, const char *name) {
  auto *img = static_cast<LazyImage *>(m);
  try {
    std::lock_guard<std::mutex> g(img->mu);
    if (!img->module)
      img->module = img->size ? std::make_unique<gpu::Module>(name, img->data, img->size, nullptr)
                              : std::make_unique<gpu::Module>(
                                    name, nullptr, 0, static_cast<const char *>(img->data));
    void *fn = img->module->function(name);
    LaunchState &s = launchState();
    std::lock_guard<std::mutex> g2(s.mu);
    s.names.emplace(fn, name);
    return fn;
  } catch (const std::exception &e) {
    recordError(e.what());
    return nullptr;
  }
}

__attribute__((visibility("default"))) void *mgpuStreamCreate() { return nullptr; }
__attribute__((visibility("default"))) void mgpuStreamDestroy(void *) {}
__attribute__((visibility("default"))) void mgpuStreamSynchronize(void *) {}

__attribute__((visibility("default"))) void
mgpuLaunchKernel(void *function, intptr_t gridX, intptr_t gridY, intptr_t gridZ, intptr_t blockX,
                 intptr_t blockY, intptr_t blockZ, int32_t smem, void *stream, void **params,
                 void **, size_t) {
  if (!function || errorPending())
    return;
  // Generated host code's streams are null (mgpuStreamCreate): the
  // thread's current stream (StreamScope) takes its launches.
  if (!stream)
    stream = gpu::currentStream();
  std::string name;
  {
    LaunchState &s = launchState();
    std::lock_guard<std::mutex> g(s.mu);
    auto it = s.names.find(function);
    name = it == s.names.end() ? "?" : it->second;
  }
  try {
    // Kernels whose blocks wait for each other (named *_coop by the
    // compiler) are launched cooperatively: all blocks resident, or an error;
    // their gridY counts groups of blocks that do not wait for each other
    // (launchCooperative). The others use 1-D grids; every kernel 1-D blocks.
    // Kernels named *_gcl run in clusters of gridX blocks, gridY of them
    // (launchClusters).
    auto endsWith = [&](const char *suffix) {
      const size_t n = std::strlen(suffix);
      return name.size() > n && name.compare(name.size() - n, n, suffix) == 0;
    };
    const bool coop = endsWith("_coop"), gcl = endsWith("_gcl");
    if ((gridY != 1 && !coop && !gcl) || gridZ != 1 || blockY != 1 || blockZ != 1)
      throw Error("kernel '" + name + "': only 1-D launches are supported");
    if (gcl)
      gpu::launchClusters(name.c_str(), function, gridX, gridY, int(blockX), size_t(smem), stream,
                          params);
    else if (coop)
      gpu::launchCooperative(name.c_str(), function, gridX, gridY, int(blockX), size_t(smem),
                             stream, params);
    else
      gpu::launch(name.c_str(), function, gridX, int(blockX), size_t(smem), stream, params);
  } catch (const std::exception &e) {
    recordError(e.what());
  }
}

// The products that generated host code calls (TrainKernels.cpp,
// gatedPreactProduct): C = A·B, row-major fp32 (TF32 when `tf32`), on the
// kernels' stream; a failure is reported like a launch's.
__attribute__((visibility("default"))) void
mmrecGemmF32(int64_t m, int64_t n, int64_t k, intptr_t A, int64_t lda, int64_t strideA,
             intptr_t B, int64_t ldb, int64_t strideB, intptr_t C, int64_t ldc, int64_t strideC,
             int64_t batch, int64_t tf32) {
  if (errorPending())
    return;
  try {
    mmrec::rt::GemmDesc g;
    g.m = m;
    g.n = n;
    g.k = k;
    g.lda = lda;
    g.ldb = ldb;
    g.ldc = ldc;
    g.batch = batch;
    g.strideA = strideA;
    g.strideB = strideB;
    g.strideC = strideC;
    g.tf32 = tf32 != 0;
    mmrec::rt::gemm(g, DType::f32, reinterpret_cast<const void *>(A),
             reinterpret_cast<const void *>(B), DType::f32, reinterpret_cast<void *>(C),
             DeviceKind::gpu); // the thread's current stream (gemmGpu)
  } catch (const std::exception &e) {
    recordError(std::string("product called by a generated kernel: ") + e.what());
  }
}

} // extern "C"
