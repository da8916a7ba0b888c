//===- runtime.h - the thin mmrec runtime -----------------------*- C++ -*-===//
//
// What generated launch functions and the trainer need, and nothing more:
// typed views of arrays on the host or a GPU, errors that name what failed,
// a CUDA driver-API module loader and launcher, and a reusable workspace.
// The runtime does not link MLIR; kernels come only from mmrec-compile.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_RUNTIME_H
#define MMREC_RUNTIME_H

#include <cstddef>
#include <cstdint>
#include <functional>
#include <stdexcept>
#include <string>
#include <vector>

namespace mmrec::rt {

/// Every runtime failure: a message naming the kernel, argument or call.
class Error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

enum class DType { f32, f16, bf16, f64, i32 };
const char *dtypeName(DType t);
size_t dtypeSize(DType t);

enum class DeviceKind { cpu, gpu };

/// A view of a row-major array: no ownership.
struct TensorRef {
  void *data = nullptr;
  DType dtype = DType::f32;
  DeviceKind device = DeviceKind::cpu;
  std::vector<int64_t> shape;

  int64_t numel() const;
  std::string shapeString() const;
};

/// bf16 <-> f32 on the host (round to nearest even; NaN stays NaN).
inline uint16_t toBF16(float f) {
  uint32_t u;
  __builtin_memcpy(&u, &f, 4);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return uint16_t((u >> 16) | 0x40);
  u += 0x7fffu + ((u >> 16) & 1u);
  return uint16_t(u >> 16);
}
inline float fromBF16(uint16_t h) {
  uint32_t u = uint32_t(h) << 16;
  float f;
  __builtin_memcpy(&f, &u, 4);
  return f;
}

/// An opaque CUDA stream (CUstream); null is the default stream.
using Stream = void *;

/// Checks that `t` has dtype `dtype` and exactly `shape`; throws an Error
/// "<kernel>: argument '<name>' ..." otherwise.
void checkArg(const char *kernel, const char *name, const TensorRef &t, DType dtype,
              const std::vector<int64_t> &shape);

/// True when this build has the CUDA runtime and a GPU is present.
bool gpuAvailable();

namespace gpu {

/// A loaded kernel image (cubin preferred, PTX JIT-compiled otherwise).
class Module {
public:
  Module(const char *name, const void *cubin, size_t cubinSize, const char *ptx);
  ~Module();
  Module(const Module &) = delete;
  Module &operator=(const Module &) = delete;
  /// The CUfunction of `kernel`, loaded on first use; throws naming it.
  void *function(const char *kernel);

private:
  std::string name_;
  void *module_ = nullptr;
  std::vector<std::pair<std::string, void *>> functions_;
};

/// Launches `fn` (from Module::function) with a 1-D grid; `params` as in
/// cuLaunchKernel. Above 48 KiB of dynamic shared memory the function is
/// opted in first (a request beyond the device's limit throws). Checks the
/// launch and names `kernel` on failure.
void launch(const char *kernel, void *fn, int64_t gridX, int blockX, size_t sharedBytes,
            Stream stream, void **params);

/// Launches `fn` cooperatively (cuLaunchCooperativeKernel): every block is
/// resident at once, so blocks may wait for each other (grid-wide
/// barriers). The grid is gridX × gridY where gridY counts independent
/// groups of gridX blocks (the level-0 kernels' row groups, which need only
/// one): when the device cannot hold all of them, fewer groups are launched
/// (the kernel reads gridDim.y). Throws naming `kernel` when the device
/// cannot hold one group.
void launchCooperative(const char *kernel, void *fn, int64_t gridX, int64_t gridY, int blockX,
                       size_t sharedBytes, Stream stream, void **params);

/// Launches `fn`, a kernel compiled for thread-block clusters of gridX
/// blocks (.reqnctapercluster, e.g. the level-0 kernels whose row groups
/// are clusters), on gridX × gridY blocks: gridY independent clusters,
/// not necessarily resident at once (the blocks of a cluster always are).
/// Cluster sizes beyond 8 are opted in (non-portable). Throws naming
/// `kernel` when the device cannot hold one such cluster.
void launchClusters(const char *kernel, void *fn, int64_t gridX, int64_t gridY, int blockX,
                    size_t sharedBytes, Stream stream, void **params);

/// A CUdevice_attribute of device 0 (cuDeviceGetAttribute).
int deviceAttribute(int attribute);
/// Number of streaming multiprocessors of device 0.
int multiprocessorCount();

/// A device buffer reused across launches (grows, never shrinks).
class Workspace {
public:
  ~Workspace();
  /// At least `bytes` of device memory; the first `zeroBytes` set to zero
  /// (asynchronously on `stream`).
  void *get(size_t bytes, size_t zeroBytes, Stream stream);

private:
  void *ptr_ = nullptr;
  size_t size_ = 0;
};

/// The workspace shared by generated kernels of this thread.
Workspace &threadWorkspace();

/// Device memory for the status words of the scans' look-back, owned by
/// them alone (nothing else writes it): zeroed when (re)allocated, then
/// each launch gets a new `epoch` (1, 2, ...) and tags its words with it, so
/// words left by earlier launches read as unpublished without a memset.
struct TaggedBuffer {
  void *ptr;
  uint32_t epoch;
};
TaggedBuffer threadScanStatus(size_t bytes, Stream stream);

/// Plain device memory helpers (used by tests and the trainer).
void *alloc(size_t bytes);
void free(void *p);
void copyToDevice(void *dst, const void *src, size_t bytes);
void copyToHost(void *dst, const void *src, size_t bytes);
void memsetD8(void *dst, unsigned char value, size_t bytes);
void synchronize();

/// Median time in milliseconds of `fn` over `reps` runs after `warmup`
/// runs, each timed with CUDA events on the default stream.
double medianMs(const std::function<void()> &fn, int warmup, int reps);

/// Bytes of free and total device memory.
void memInfo(size_t &freeBytes, size_t &totalBytes);

/// Device-to-device copy (cuMemcpyDtoD).
void copyDeviceToDevice(void *dst, const void *src, size_t bytes);

/// The first failure of a kernel launched by generated host code (the
/// mgpu* entry points this runtime provides to MLIR's gpu-to-llvm output),
/// cleared; empty when there was none. Launches after a failure are
/// skipped until it is taken.
std::string takeLaunchError();

/// Streams and events for work beside the default stream (the collectives'
/// stream). A created stream does not synchronize implicitly with the
/// default stream: order work with events.
Stream createStream();
void destroyStream(Stream s);
void synchronizeStream(Stream s);
using Event = void *;
Event createEvent();
void destroyEvent(Event e);
void recordEvent(Event e, Stream s);
/// Work queued on `s` after this waits for the work `e` recorded.
void streamWaitEvent(Stream s, Event e);
/// True once the work `e` recorded has finished (cuEventQuery).
bool eventDone(Event e);

/// The stream that this thread's launches naming none go to: the kernels
/// launched by generated host code (mgpuLaunchKernel, whose streams are
/// null) and the products given a null stream (gemm, mmrecGemmF32). Null
/// (the default stream) unless a StreamScope is open. Copies and memsets
/// (copyToDevice, memsetD8, FBuf::zero) stay on the default stream: work in
/// a scope must not depend on them without an event.
Stream currentStream();

/// Sends this thread's launches that name no stream to `s` while alive
/// (scopes nest; the previous stream comes back at the end).
class StreamScope {
public:
  explicit StreamScope(Stream s);
  ~StreamScope();
  StreamScope(const StreamScope &) = delete;
  StreamScope &operator=(const StreamScope &) = delete;

private:
  Stream prev_;
};

} // namespace gpu
} // namespace mmrec::rt

#endif // MMREC_RUNTIME_H
