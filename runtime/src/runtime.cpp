//===- runtime.cpp - host side of the mmrec runtime ---------------------===//

#include "mmrec/runtime.h"

#include <sstream>

namespace mmrec::rt {

const char *dtypeName(DType t) {
  switch (t) {
  case DType::f32: return "f32";
  case DType::f16: return "f16";
  case DType::bf16: return "bf16";
  case DType::f64: return "f64";
  case DType::i32: return "i32";
  }
  return "?";
}

size_t dtypeSize(DType t) {
  switch (t) {
  case DType::f32: case DType::i32: return 4;
  case DType::f16: case DType::bf16: return 2;
  case DType::f64: return 8;
  }
  return 0;
}

int64_t TensorRef::numel() const {
  int64_t n = 1;
  for (int64_t d : shape)
    n *= d;
  return n;
}

std::string TensorRef::shapeString() const {
  std::ostringstream os;
  os << "[";
  for (size_t i = 0; i < shape.size(); ++i)
    os << (i ? ", " : "") << shape[i];
  os << "]";
  return os.str();
}

void checkArg(const char *kernel, const char *name, const TensorRef &t, DType dtype,
              const std::vector<int64_t> &shape) {
  TensorRef want{nullptr, dtype, t.device, shape};
  if (!t.data && want.numel() != 0) // an empty array may have no storage
    throw Error(std::string(kernel) + ": argument '" + name + "' is a null pointer");
  if (t.dtype != dtype)
    throw Error(std::string(kernel) + ": argument '" + name + "' must be " +
                dtypeName(dtype) + ", got " + dtypeName(t.dtype));
  if (t.shape != shape)
    throw Error(std::string(kernel) + ": argument '" + name + "' must have shape " +
                want.shapeString() + ", got " + t.shapeString());
}

namespace gpu {
namespace {
thread_local Stream current = nullptr;
} // namespace

Stream currentStream() { return current; }
StreamScope::StreamScope(Stream s) : prev_(current) { current = s; }
StreamScope::~StreamScope() { current = prev_; }
} // namespace gpu

} // namespace mmrec::rt
