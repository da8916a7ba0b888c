//===- KernelTestUtil.h - host arrays and runners for kernel tests -===//
//
// What the generated-kernel tests share: fresh seeds, host arrays of any
// I/O dtype converted to/from double, a runner that hands arrays to a
// kernel on the CPU or through device copies, and the relative error
// ‖x − r‖ / ‖r‖ (infinite when x has a NaN or Inf).
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_TEST_UNIT_KERNELTESTUTIL_H
#define MMREC_TEST_UNIT_KERNELTESTUTIL_H

#include "mmrec/runtime.h"

#include <cmath>
#include <cstring>
#include <limits>
#include <random>
#include <utility>
#include <vector>

namespace mmrec::test {

using namespace mmrec::rt;

enum class Where { cpu, gpu };

inline uint64_t freshSeed() {
  static std::random_device rd;
  return (uint64_t(rd()) << 32) ^ rd();
}

/// Host array of a given dtype holding values; converts to/from double.
struct HostArray {
  DType t;
  std::vector<int64_t> shape;
  std::vector<unsigned char> bytes;
  HostArray(DType t, std::vector<int64_t> s) : t(t), shape(std::move(s)) {
    int64_t n = 1;
    for (int64_t d : shape) n *= d;
    bytes.resize(size_t(n) * dtypeSize(t));
  }
  int64_t numel() const { return int64_t(bytes.size() / dtypeSize(t)); }
  double get(int64_t i) const {
    if (t == DType::f32) { float f; std::memcpy(&f, &bytes[i * 4], 4); return f; }
    uint16_t h; std::memcpy(&h, &bytes[i * 2], 2); return fromBF16(h);
  }
  void set(int64_t i, double v) {
    if (t == DType::f32) { float f = float(v); std::memcpy(&bytes[i * 4], &f, 4); return; }
    uint16_t h = toBF16(float(v)); std::memcpy(&bytes[i * 2], &h, 2);
  }
  std::vector<double> toDouble() const {
    std::vector<double> v(numel());
    for (int64_t i = 0; i < numel(); ++i) v[i] = get(i);
    return v;
  }
  void poison() {
    for (int64_t i = 0; i < numel(); ++i) set(i, std::numeric_limits<double>::quiet_NaN());
  }
};

/// Runs kernels on host arrays, on the CPU directly or through device copies.
struct Runner {
  Where where;
  std::vector<std::pair<void *, HostArray *>> devs;
  explicit Runner(Where w) : where(w) {}
  ~Runner() { for (auto &d : devs) gpu::free(d.first); }
  TensorRef operator()(HostArray &a) {
    if (where == Where::cpu)
      return TensorRef{a.bytes.data(), a.t, DeviceKind::cpu, a.shape};
    void *p = gpu::alloc(a.bytes.size());
    gpu::copyToDevice(p, a.bytes.data(), a.bytes.size());
    devs.push_back({p, &a});
    return TensorRef{p, a.t, DeviceKind::gpu, a.shape};
  }
  /// Copies device results back into their host arrays.
  void finish() {
    if (where == Where::gpu) {
      gpu::synchronize();
      for (auto &d : devs) gpu::copyToHost(d.second->bytes.data(), d.first, d.second->bytes.size());
    }
  }
};

/// ‖x − r‖ / ‖scale‖, where `scale` is the reference computed on the
/// inputs' absolute values (every term of every sum positive): the error
/// that rounding may reach in a sum is relative to its terms, not to the
/// sum, which cancellation can make arbitrarily small (one element of
/// exp(ℓ)·h0 + b near zero). scale ≥ |r| elementwise, so this is never looser
/// than the terms allow.
inline double relErrScaled(const std::vector<double> &x, const std::vector<double> &r,
                           const std::vector<double> &scale) {
  double num = 0, den = 0;
  for (size_t i = 0; i < x.size(); ++i) {
    if (!std::isfinite(x[i])) return std::numeric_limits<double>::infinity();
    num += (x[i] - r[i]) * (x[i] - r[i]);
    den += scale[i] * scale[i];
  }
  return den == 0 ? std::sqrt(num) : std::sqrt(num / den);
}

/// ‖x − r‖ / ‖r‖ (‖x − r‖ where r is zero); infinite for a non-finite x.
inline double relErr(const std::vector<double> &x, const std::vector<double> &r) {
  return relErrScaled(x, r, r);
}

} // namespace mmrec::test

#endif // MMREC_TEST_UNIT_KERNELTESTUTIL_H
