//===- gated_bench.cpp - the generated gated-recurrence kernels on the GPU ===//
//
// Times the compiler's persistent kernels for h_t = z_t ⊙ σ(h_{t-1}·W_g + b_g)
// + γ_t ⊙ h_{t-1} (bench/gated_bench.mlir): forward, and forward + backward
// (the reverse kernel plus the dW_g / db_g products in cuBLASLt), and prints
// one JSON object per case: µs per step, the recurrent product's FLOP/s
// (2·B·D·dh per step forward, 3x that forward + backward) and the HBM bytes/s
// of the per-step inputs and outputs. bench/gated_bench.py runs it beside the
// anchors. Inputs: z ~ U(-1, 1), ℓ ∈ [-0.2, 0], W_g ~ U(-1, 1)/√dh.
//
//===----------------------------------------------------------------------===//

#include "gated_bench_kernels.h"
#include "mmrec/runtime.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

using namespace mmrec::rt;
namespace K = mmrec::gen::gated_bench_kernels;

namespace {

struct Dev {
  void *p;
  size_t bytes;
  DType t;
  std::vector<int64_t> shape;
  Dev(DType t, std::vector<int64_t> s) : t(t), shape(std::move(s)) {
    size_t n = 1;
    for (int64_t d : shape) n *= size_t(d);
    bytes = n * dtypeSize(t);
    p = gpu::alloc(bytes);
  }
  ~Dev() { gpu::free(p); }
  TensorRef ref() const { return TensorRef{p, t, DeviceKind::gpu, shape}; }
  void fill(float lo, float hi, uint64_t seed) {
    size_t n = bytes / dtypeSize(t);
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<float> u(lo, hi);
    if (t == DType::f32) {
      std::vector<float> v(n);
      for (auto &x : v) x = u(rng);
      gpu::copyToDevice(p, v.data(), bytes);
    } else {
      std::vector<uint16_t> v(n);
      for (auto &x : v) x = toBF16(u(rng));
      gpu::copyToDevice(p, v.data(), bytes);
    }
  }
};

using Fwd = void (*)(const TensorRef &, const TensorRef &, const TensorRef &, const TensorRef &,
                     const TensorRef &, const TensorRef &, const TensorRef &, Stream);
using Bwd = void (*)(const TensorRef &, const TensorRef &, const TensorRef &, const TensorRef &,
                     const TensorRef &, const TensorRef &, const TensorRef &, const TensorRef &,
                     const TensorRef &, const TensorRef &, const TensorRef &, const TensorRef &,
                     const TensorRef &, Stream);

void runCase(const char *name, Fwd fwd, Bwd bwd, DType io, int64_t B, int64_t T, int64_t H,
             int64_t dh) {
  const int64_t D = H * dh;
  std::vector<int64_t> seq{B, T, D}, st{B, D};
  std::vector<int64_t> wshape = H > 1 ? std::vector<int64_t>{H, dh, dh} : std::vector<int64_t>{D, D};
  // (H = 1: the dense gate, one block of D channels)
  Dev z(io, seq), l(DType::f32, seq), W(io, wshape), bg(io, {D}), h0(io, st), h(io, seq),
      fin(io, st), dy(io, seq), dfin(io, st), dz(io, seq), dl(DType::f32, seq), dW(io, wshape),
      db(io, {D}), dh0(io, st);
  z.fill(-1, 1, 1);
  l.fill(-0.2f, 0, 2);
  float ws = 1.0f / std::sqrt(float(dh));
  W.fill(-ws, ws, 3);
  bg.fill(-0.1f, 0.1f, 4);
  h0.fill(-1, 1, 5);
  dy.fill(-1, 1, 6);
  dfin.fill(-1, 1, 7);
  auto forward = [&] { fwd(z.ref(), l.ref(), W.ref(), bg.ref(), h0.ref(), h.ref(), fin.ref(), nullptr); };
  auto backward = [&] {
    bwd(z.ref(), l.ref(), W.ref(), bg.ref(), h0.ref(), h.ref(), dy.ref(), dfin.ref(), dz.ref(),
        dl.ref(), dW.ref(), db.ref(), dh0.ref(), nullptr);
  };
  double fMs = gpu::medianMs(forward, 3, 10);
  double bMs = gpu::medianMs(backward, 3, 10);
  double fbMs = fMs + bMs;
  const double es = double(dtypeSize(io));
  const double flopStep = 2.0 * double(B) * double(D) * double(dh);
  // Per step, forward: z, ℓ (fp32) in, h out; backward: z, ℓ, h, dh in,
  // dz, dℓ, grad_pre out.
  const double fBytes = double(B) * D * (2 * es + 4) * T;
  const double bBytes = double(B) * D * (5 * es + 8) * T;
  auto line = [&](const char *what, double ms, double flops, double bytes) {
    std::printf("{\"case\": \"%s\", \"phase\": \"%s\", \"B\": %lld, \"T\": %lld, \"H\": %lld, "
                "\"dh\": %lld, \"dtype\": \"%s\", \"ms\": %.4f, \"us_per_step\": %.4f, "
                "\"TFLOPs\": %.3f, \"GBps\": %.1f}\n",
                name, what, (long long)B, (long long)T, (long long)H, (long long)dh,
                dtypeName(io), ms, ms * 1e3 / double(T), flops * T / (ms * 1e-3) / 1e12,
                bytes / (ms * 1e-3) / 1e9);
  };
  line("forward", fMs, flopStep, fBytes);
  line("forward+backward", fbMs, 3 * flopStep, fBytes + bBytes);
  std::fflush(stdout);
}

} // namespace

int main(int argc, char **argv) {
  if (!gpuAvailable()) {
    std::fprintf(stderr, "gated-bench: no GPU\n");
    return 1;
  }
  const bool quick = argc > 1 && std::string(argv[1]) == "--quick";
  const int64_t T = quick ? 256 : 2048;
  runCase("per_head H32 dh128 B8", K::heads_bf16_kernel, K::heads_bf16_grad_kernel, DType::bf16,
          8, T, 32, 128);
  runCase("per_head H32 dh128 B8", K::heads_f32_kernel, K::heads_f32_grad_kernel, DType::f32, 8,
          T, 32, 128);
  runCase("per_head H32 dh128 B16", K::heads_bf16_kernel, K::heads_bf16_grad_kernel, DType::bf16,
          16, T, 32, 128);
  runCase("dense D128 B8 (mmrec-tiny's gate)", K::dense128_bf16_kernel,
          K::dense128_bf16_grad_kernel, DType::bf16, 8, T, 1, 128);
  runCase("dense D768 B8 (mmrec-small's gate)", K::dense768_bf16_kernel,
          K::dense768_bf16_grad_kernel, DType::bf16, 8, T, 1, 768);
  runCase("dense D4096 B8 (the 7B gate)", K::dense4096_bf16_kernel, K::dense4096_bf16_grad_kernel,
          DType::bf16, 8, quick ? 128 : 512, 1, 4096);
  return 0;
}
