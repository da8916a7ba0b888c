//===- cuda_absent.cpp - the GPU entry points when CUDA was not found -----===//
//
// This build has no CUDA toolkit: gpuAvailable() is false and every GPU
// entry point throws an Error that says so (never a silent wrong answer).
//
//===----------------------------------------------------------------------===//

#include "mmrec/runtime.h"

namespace mmrec::rt {
namespace {
[[noreturn]] void noGpu(const std::string &what) {
  throw Error(what + ": this mmrec runtime was built without CUDA support");
}
} // namespace

bool gpuAvailable() { return false; }

namespace gpu {
Module::Module(const char *name, const void *, size_t, const char *) : name_(name) {
  noGpu("loading kernel image '" + name_ + "'");
}
Module::~Module() = default;
void *Module::function(const char *kernel) { noGpu(kernel); }
void launch(const char *kernel, void *, int64_t, int, size_t, Stream, void **) { noGpu(kernel); }
void launchCooperative(const char *kernel, void *, int64_t, int64_t, int, size_t, Stream, void **) {
  noGpu(kernel);
}
void launchClusters(const char *kernel, void *, int64_t, int64_t, int, size_t, Stream, void **) {
  noGpu(kernel);
}
int deviceAttribute(int) { noGpu("deviceAttribute"); }
int multiprocessorCount() { noGpu("multiprocessorCount"); }
Workspace::~Workspace() = default;
void *Workspace::get(size_t, size_t, Stream) { noGpu("workspace"); }
Workspace &threadWorkspace() {
  thread_local Workspace ws;
  return ws;
}
TaggedBuffer threadScanStatus(size_t, Stream) { noGpu("scan status"); }
void *alloc(size_t) { noGpu("alloc"); }
void free(void *) {}
void copyToDevice(void *, const void *, size_t) { noGpu("copyToDevice"); }
void copyToHost(void *, const void *, size_t) { noGpu("copyToHost"); }
void memsetD8(void *, unsigned char, size_t) { noGpu("memsetD8"); }
void synchronize() {}
double medianMs(const std::function<void()> &, int, int) { noGpu("medianMs"); }
void memInfo(size_t &, size_t &) { noGpu("memInfo"); }
void copyDeviceToDevice(void *, const void *, size_t) { noGpu("copyDeviceToDevice"); }
std::string takeLaunchError() { return {}; }
Stream createStream() { noGpu("createStream"); }
void destroyStream(Stream) {}
void synchronizeStream(Stream) { noGpu("synchronizeStream"); }
Event createEvent() { noGpu("createEvent"); }
void destroyEvent(Event) {}
void recordEvent(Event, Stream) { noGpu("recordEvent"); }
void streamWaitEvent(Stream, Event) { noGpu("streamWaitEvent"); }
bool eventDone(Event) { noGpu("eventDone"); }
} // namespace gpu
} // namespace mmrec::rt
