//===- train.h - the MM-Rec model on generated kernels: train, eval ---*- C++ -*-===//
//
// The trainer's engine, on the CPU: the model of MMREC_SPEC (sections 2–3)
// run from the training library that `mmrec-compile` generates for a model
// file (NAME.train.so + NAME.train.json, see lib/Conversion/TrainKernels.h),
// with matrix products through `mmrec::rt::gemm` (OpenBLAS). Like llm.c,
// the layer's structure is written out here; every non-GEMM operation is a
// generated kernel.
//
//   KernelLibrary  opens the library, checks every kernel's signature
//                  against the manifest and calls kernels by name;
//   ModelConfig    the model's configuration (from the manifest);
//   ParamLayout    every parameter by checkpoint name (`embed`,
//                  `layers.{l}.W_q`, …, `final_norm`) in one flat fp32 array;
//   Model          forward (loss) and backward (every gradient) of a batch
//                  of B sequences of T tokens, activations kept between them;
//   AdamW          the optimizer step (generated `adamw` / `sumsq` kernels).
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_TRAIN_H
#define MMREC_TRAIN_H

#include "mmrec/runtime.h"
#include "mmrec/blas.h"

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <functional>
#include <initializer_list>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <utility>
#include <vector>

namespace mmrec::train {

using rt::Error;

struct ModelConfig {
  std::string name;
  int64_t V = 0, D = 0, L = 0, H = 1, Nm = 1, M = 1, F = 0, C = 1, Tmax = 0, r = 0;
  bool perHead = false;
  double decayInit = 0.99, clampMin = -50.0, clampMax = 0.0, eps = 1e-6;
  int64_t paramCount = 0; // as mmrec-compile computed it (MMREC_SPEC section 6)
  int64_t dm() const { return D / Nm; }
  int64_t dh() const { return D / H; }
  /// The configuration of a training manifest's text (NAME.train.json),
  /// validated; throws Error naming `where` and the field.
  static ModelConfig fromManifest(const std::string &text, const std::string &where);
};

/// A 1-D array on the CPU or the GPU (device memory through the runtime):
/// the trainer's activations and scratch. Copies stay on the source's
/// device; `reset` picks the device and zero-fills.
template <class T> class Buffer {
public:
  Buffer() = default;
  ~Buffer() { clear(); }
  Buffer(const Buffer &o) { *this = o; }
  Buffer(Buffer &&o) noexcept { swap(o); }
  Buffer &operator=(const Buffer &o) {
    if (this == &o)
      return *this;
    if (o.dev_ != dev_ || o.n_ != n_)
      reset(o.dev_, o.n_);
    if (dev_ == rt::DeviceKind::cpu)
      host_ = o.host_;
    else if (n_)
      rt::gpu::copyDeviceToDevice(p_, o.p_, size_t(n_) * sizeof(T));
    return *this;
  }
  Buffer &operator=(Buffer &&o) noexcept {
    Buffer tmp;
    tmp.swap(o);
    swap(tmp);
    return *this;
  }
  void swap(Buffer &o) noexcept {
    std::swap(dev_, o.dev_);
    std::swap(p_, o.p_);
    std::swap(n_, o.n_);
    host_.swap(o.host_);
  }
  /// n zeros on `dev`.
  void reset(rt::DeviceKind dev, int64_t n) {
    if (dev != dev_ || n != n_) {
      clear();
      dev_ = dev;
      n_ = n;
      if (dev_ == rt::DeviceKind::gpu)
        p_ = static_cast<T *>(rt::gpu::alloc(size_t(std::max<int64_t>(n, 1)) * sizeof(T)));
    }
    zero();
  }
  /// n copies of v on `dev`.
  void fill(rt::DeviceKind dev, int64_t n, T v) {
    reset(dev, n);
    std::vector<T> h(size_t(n), v);
    upload(h.data(), n);
  }
  void zero() {
    if (dev_ == rt::DeviceKind::cpu)
      host_.assign(size_t(n_), T(0));
    else if (n_)
      rt::gpu::memsetD8(p_, 0, size_t(n_) * sizeof(T));
  }
  void clear() {
    if (p_)
      rt::gpu::free(p_);
    p_ = nullptr;
    n_ = 0;
    host_.clear();
    host_.shrink_to_fit();
  }
  /// Elements [offset, offset + n) from / to host memory.
  void upload(const T *src, int64_t n, int64_t offset = 0) {
    if (dev_ == rt::DeviceKind::cpu)
      std::copy(src, src + n, host_.begin() + offset);
    else if (n)
      rt::gpu::copyToDevice(p_ + offset, src, size_t(n) * sizeof(T));
  }
  void download(T *dst, int64_t n, int64_t offset = 0) const {
    if (dev_ == rt::DeviceKind::cpu)
      std::copy(host_.begin() + offset, host_.begin() + offset + n, dst);
    else if (n)
      rt::gpu::copyToHost(dst, p_ + offset, size_t(n) * sizeof(T));
  }
  std::vector<T> toHost() const {
    std::vector<T> h(static_cast<size_t>(n_));
    download(h.data(), n_);
    return h;
  }
  T *data() { return dev_ == rt::DeviceKind::cpu ? host_.data() : p_; }
  const T *data() const { return dev_ == rt::DeviceKind::cpu ? host_.data() : p_; }
  int64_t size() const { return n_; }
  rt::DeviceKind device() const { return dev_; }

private:
  rt::DeviceKind dev_ = rt::DeviceKind::cpu;
  T *p_ = nullptr;         // GPU
  int64_t n_ = 0;
  std::vector<T> host_;    // CPU
};
using FBuf = Buffer<float>;
using IBuf = Buffer<int32_t>;
using HBuf = Buffer<uint16_t>; // bf16 bits

/// A 1-D array argument of a kernel.
struct Arr {
  void *p;
  int64_t n;
  int64_t elementBytes = 4;
  Arr(float *p, int64_t n) : p(p), n(n) {}
  Arr(int32_t *p, int64_t n) : p(p), n(n) {}
  Arr(std::vector<float> &v) : p(v.data()), n(int64_t(v.size())) {}
  Arr(std::vector<int32_t> &v) : p(v.data()), n(int64_t(v.size())) {}
  Arr(FBuf &v) : p(v.data()), n(v.size()) {}
  Arr(IBuf &v) : p(v.data()), n(v.size()) {}
  Arr(uint16_t *p, int64_t n) : p(p), n(n), elementBytes(2) {}
  Arr(double *p, int64_t n) : p(p), n(n), elementBytes(8) {}
  Arr(Buffer<double> &v) : p(v.data()), n(v.size()), elementBytes(8) {}
  int64_t bytes() const { return n * elementBytes; }
};

/// Wall time per kernel and per product class, when enabled: each timed
/// call synchronizes the device before and after (so enable it only to
/// measure). The trainer's --profile prints it, with the rate of each entry
/// where its calls said how much work they did: for a generated kernel the
/// bytes of its array arguments (each array read or written once: the
/// kernel's least traffic) over its time, for a product its FLOPs.
class Profile {
public:
  static Profile &get();
  bool enabled = false;
  struct Entry {
    double ms = 0;
    int64_t calls = 0;
    double bytes = 0, flops = 0;
  };
  std::map<std::string, Entry> entries;
  /// Turns profiling on, from now: report() then also gives the wall time
  /// since, and the part of it no timed scope covers ("idle": the host's
  /// own work, data loading, checkpoints, gaps between launches).
  void start();
  /// Stops timing (pause) and starts again (resume) without losing what was
  /// timed: the paused wall time counts neither as work nor as idle. Both
  /// are no-ops when nothing is being timed (pause) or paused (resume). The
  /// trainer pauses around its evaluations and checkpoints.
  void pause();
  void resume();
  /// The kind of work an entry is, for the per-step breakdown: "products"
  /// (the dense matrix products, LM head included), "recurrence" (level 0),
  /// "memory hierarchy" (levels 1 and 2, their slot products and the
  /// combination), "elementwise" (norms, SwiGLU, the decay gate, roundings,
  /// embedding, cross-entropy), "optimizer" (AdamW, the gradient norm) or
  /// "other".
  static std::string kindOf(const std::string &name);
  void add(const std::string &name, double ms, double bytes = 0, double flops = 0) {
    Entry &e = entries[name];
    e.ms += ms;
    ++e.calls;
    e.bytes += bytes;
    e.flops += flops;
  }
  /// A table of the entries, largest first, with shares of the total and,
  /// where known, GB/s (array bytes) and TFLOP/s; then the time by kind
  /// (kindOf), with idle time after start(), and the memory hierarchy's
  /// time as a share of the products' (issue 5's measure).
  std::string report() const;

private:
  double startMs_ = -1, pausedAt_ = -1, pausedMs_ = 0;
};

/// Times a scope into Profile::get() under `name` when profiling is on.
class ProfileScope {
public:
  ProfileScope(const std::string &name, rt::DeviceKind dev);
  ~ProfileScope();
  /// The work of the scope, for its entry's rates.
  void work(double bytes, double flops) {
    bytes_ = bytes;
    flops_ = flops;
  }

private:
  std::string name_;
  rt::DeviceKind dev_;
  double t0_ = -1, nested_ = 0; // nested_: the time of scopes opened inside
  double bytes_ = 0, flops_ = 0;
  ProfileScope *outer_ = nullptr;
};

class KernelLibrary {
public:
  /// Opens DIR/NAME.train.json and the library it names for `device`
  /// (`library`, or `gpu_library`: the same kernels taking device
  /// pointers). Throws Error with the file and the problem (missing file,
  /// bad JSON, missing kernel, no GPU).
  explicit KernelLibrary(const std::string &manifestPath,
                         rt::DeviceKind device = rt::DeviceKind::cpu);
  ~KernelLibrary();
  KernelLibrary(const KernelLibrary &) = delete;
  KernelLibrary &operator=(const KernelLibrary &) = delete;

  const ModelConfig &config() const { return cfg_; }
  rt::DeviceKind device() const { return device_; }
  const std::string &path() const { return path_; }
  /// Kernels launched through this library so far (Model uses it to know
  /// that no kernel has written anything since it rounded an operand).
  uint64_t launches() const { return launches_; }

  /// Calls `train_<name>` with arrays then index arguments (int64_t), in
  /// the order of the manifest; the counts are checked.
  template <class... A> void operator()(const std::string &name, A... a) {
    constexpr size_t nArr = (0 + ... + size_t(std::is_same_v<A, Arr>));
    void *fn = lookup(name, nArr, sizeof...(A) - nArr);
    ++launches_;
    ProfileScope prof(name, device_);
    if (Profile::get().enabled)
      prof.work(double((0 + ... + arrBytes(a))), 0);
    invoke(fn, std::index_sequence_for<A...>{}, a...);
    if (device_ == rt::DeviceKind::gpu)
      checkLaunch(name);
  }

private:
  struct Desc {
    void *allocated, *aligned;
    int64_t offset, size, stride;
  };
  template <class T> static auto conv(T x, Desc &d) {
    if constexpr (std::is_same_v<T, Arr>) {
      d = {x.p, x.p, 0, x.n, 1};
      return &d;
    } else {
      return int64_t(x);
    }
  }
  template <class T> static int64_t arrBytes(const T &x) {
    if constexpr (std::is_same_v<T, Arr>)
      return x.bytes();
    else
      return 0;
  }
  template <class... A, size_t... I> void invoke(void *fn, std::index_sequence<I...>, A... a) {
    Desc descs[sizeof...(A) + 1];
    using Fn = void (*)(std::conditional_t<std::is_same_v<A, Arr>, Desc *, int64_t>...);
    reinterpret_cast<Fn>(fn)(conv(a, descs[I])...);
  }
  void *lookup(const std::string &name, size_t arrays, size_t indices);
  /// Throws the first launch failure of the GPU kernel `name`, if any.
  void checkLaunch(const std::string &name);

  struct Sig {
    void *fn = nullptr;
    size_t arrays = 0, indices = 0;
  };
  std::string path_;
  rt::DeviceKind device_ = rt::DeviceKind::cpu;
  uint64_t launches_ = 0;
  void *handle_ = nullptr;
  ModelConfig cfg_;
  std::map<std::string, Sig> kernels_;
};

/// One named parameter tensor inside the flat array.
struct ParamInfo {
  std::string name;
  std::vector<int64_t> shape;
  int64_t offset = 0, numel = 0;
  bool decay = false; // AdamW weight decay applies (matrices, S)
};

/// This machine's physical memory, in bytes (for refusing absurd sizes
/// before allocating).
long double physicalMemoryBytes();

/// Floats (i32 words) of the level-0 kernels' `sync` array for B rows of D
/// channels: the cooperative kernels' grid-barrier counter and, for their
/// tensor-core variant, a bf16 exchange of the rows each step publishes
/// (GatedKernelSpec::coopSyncWords in lib/Conversion/GatedKernels.h; with
/// only B words the kernels stage rows from the fp32 arrays instead).
inline int64_t gatedSyncWords(int64_t B, int64_t D) { return 64 + B * D; }

class ParamLayout {
public:
  explicit ParamLayout(const ModelConfig &cfg);
  const std::vector<ParamInfo> &tensors() const { return tensors_; }
  int64_t numel() const { return numel_; }
  /// The tensor of a checkpoint name; throws Error if there is none.
  const ParamInfo &get(const std::string &name) const;
  /// Offset of `layers.{l}.<name>`.
  int64_t layer(int64_t l, const std::string &name) const { return get(layerName(l, name)).offset; }
  static std::string layerName(int64_t l, const std::string &name) {
    return "layers." + std::to_string(l) + "." + name;
  }

private:
  std::vector<ParamInfo> tensors_;
  std::map<std::string, size_t> byName_;
  int64_t numel_ = 0;
};

/// MMREC_SPEC section 4, with the oracle's convention (one mt19937_64(seed),
/// normal_distribution<double>(0, 1) scaled per tensor, in layout order).
std::vector<float> initParams(const ModelConfig &cfg, const ParamLayout &layout, uint64_t seed);

class Model {
public:
  Model(KernelLibrary &lib, const ParamLayout &layout);
  ~Model();
  /// Mean next-token cross-entropy of B sequences of T tokens (positions
  /// 0..T−2 predict 1..T−1); keeps the activations for backward().
  /// With `loss` false the head (the tied LM head's logits and the
  /// cross-entropy) is left to backward(), which needs its logits anyway and
  /// computes the same loss (lastLoss()): a training step runs the head once
  /// instead of twice. It then returns NaN.
  double forward(const float *params, const int32_t *tokens, int64_t B, int64_t T,
                 bool loss = true);
  /// Adds dL/dparams · scale to `grads` (same layout as the parameters)
  /// for the last forward().
  void backward(const float *params, float *grads, float scale = 1.0f);
  /// The loss of the last forward() that computed it, or of the last
  /// backward() (the same value, bit for bit).
  double lastLoss() const { return lastLoss_; }
  /// Bytes of activations and scratch currently allocated.
  int64_t activationBytes() const;
  /// Keep only each layer's input in forward() and recompute the layer's
  /// activations in backward() (memory O(L·N·D) instead of O(L·N·(30 D + F))).
  void setRecompute(bool on) { recompute_ = on; B_ = T_ = 0; }
  /// With recomputation, also keep each layer's level-0 states h (4·B·T·D
  /// bytes a layer) so that backward() does not run the sequential
  /// recurrence again: the default. Where the GPU's (or the machine's)
  /// memory cannot hold them, ensure() drops them and recomputes h as well
  /// (the same numbers: the recurrence's kernels are deterministic);
  /// keptStates() says which one the current shape got.
  void setKeepStates(bool on) { keepStates_ = on; B_ = T_ = 0; }
  bool keptStates() const { return recompute_ && keptStates_; }
  /// Keep the logits of every position (for logits()); by default the head
  /// works a block of rows at a time and keeps at most ~4 MiB of logits.
  void setKeepLogits(bool on) { keepLogits_ = on; B_ = T_ = 0; }
  /// Rows of logits the head computes at a time (0: about 4 MiB of them on
  /// the CPU, 512 MiB on the GPU).
  void setHeadRows(int64_t rows) { headRowsWanted_ = rows; B_ = T_ = 0; }
  /// How matrix products multiply: fp32 (the default: the fp32 oracle
  /// tests), TF32 on the GPU's tensor cores (fp32 on the CPU), or bf16
  /// operands with fp32 accumulation and fp32 results (mixed precision:
  /// each fp32 operand is rounded to a bf16 copy by the generated `to_bf16`
  /// kernel just before its product; weights, activations and gradients
  /// stay fp32).
  enum class Matmul { fp32, tf32, bf16 };
  void setMatmul(Matmul m) { matmul_ = m; }
  Matmul matmul() const { return matmul_; }
  void setTf32(bool on) { matmul_ = on ? Matmul::tf32 : Matmul::fp32; }
  /// bf16 products so far, and the to_bf16 roundings of their operands
  /// (below two a product: an operand shared by consecutive products, and
  /// the MDI's per-group products, are rounded once).
  uint64_t bf16Products() const { return bf16Products_; }
  uint64_t bf16Roundings() const { return castLaunches_; }
  /// bf16 copies written by kernels beside their fp32 outputs (RMSNorm's,
  /// the slot softmaxes', the memory scan's states, the combination's,
  /// SwiGLU's and its adjoint's, the memory scan adjoint's dP), taken by
  /// products instead of a rounding; and how many of them a product took
  /// (each counted once: a copy written but never read is wasted work).
  uint64_t bf16KernelCopies() const { return kernelCopies_; }
  uint64_t bf16KernelCopiesRead() const { return kernelCopiesRead_; }
  /// Off: every bf16 product rounds its operands afresh (the reference the
  /// tests compare the reuse with, bit for bit).
  void setBf16Reuse(bool on) { reuseCasts_ = on; }
  /// With bf16 copies reused, each layer keeps its own bf16 copies of the
  /// activations that its backward's products take again (u, u2, o, g, w,
  /// a, q, k, v: 6·N·D + N·F + 2·N·N_m·M bf16 values a layer, or one set with
  /// recomputation) where they fit beside the activations; off, or where
  /// they do not fit, backward rounds those activations again.
  void setPinCopies(bool on) {
    pinCopies_ = on;
    B_ = T_ = 0;
  }
  /// Whether the last forward kept them.
  bool pinnedCopies() const { return pinned_; }
  /// With bf16 copies reused, each forward rounds all the parameters to one
  /// bf16 copy (one to_bf16 pass, 2 bytes a parameter) where it fits beside
  /// the activations and the pinned copies (with 1/8 of the limit to
  /// spare); the products of that forward, of the recomputation and of
  /// backward take their weights from it. Off, or where it does not fit, a
  /// weight is rounded at its products: two or three times a step, and
  /// again for each block of the head's rows. The same values either way.
  void setParamCopy(bool on) {
    paramCopy_ = on;
    B_ = T_ = 0;
  }
  /// Whether the last forward made it.
  bool paramCopied() const { return paramCopied_; }
  /// Roundings of the whole parameter array so far (one a forward with the
  /// copy), and roundings of single weights (a product's operand inside the
  /// parameters, rounded for it; none with the copy).
  uint64_t paramRoundings() const { return paramRoundings_; }
  uint64_t weightRoundings() const { return weightRoundings_; }
  /// Where the copy holds parameters [off, off + n) (null where no run of
  /// it spans them, or before the first forward with it), and the runs it
  /// is made in (one to_bf16 launch each).
  const uint16_t *paramCopyAt(int64_t off, int64_t n) const;
  int64_t paramCopyRuns() const { return int64_t(paramRuns_.size()); }
  /// The runs of the copy for a layout (see paramRuns_).
  struct ParamRun {
    int64_t begin, end, copyAt; // [begin, end) of the parameters at copyAt
  };
  static std::vector<ParamRun> paramRunsOf(const ParamLayout &layout);
  /// Where parameters [off, off + n) sit in a copy laid out in `runs`; -1
  /// where no run spans them.
  static int64_t paramCopyOffset(const std::vector<ParamRun> &runs, int64_t off, int64_t n);
  /// Elements of a copy laid out in `runs`.
  static int64_t paramCopySize(const std::vector<ParamRun> &runs);
  /// Rounds P into `copy` laid out in `runs` with the generated to_bf16, a
  /// launch a run (pieces of at most 2^30); returns the launches.
  static int64_t roundParams(KernelLibrary &lib, const std::vector<ParamRun> &runs,
                             const float *P, uint16_t *copy);
  /// Layers recomputed by backward so far (with recomputation, the last
  /// layer's activations are still those of the forward: L − 1 a step).
  uint64_t recomputedLayers() const { return recomputedLayers_; }
  /// On the GPU, the level-0 recurrence's kernels (gated_fwd, gated_bwd)
  /// run on a stream of their own beside the memory hierarchy's work, which
  /// does not depend on them (a layer's combination, and the products of
  /// h's gradient, wait for both): the recurrence keeps a few SMs busy for
  /// thousands of steps while the rest of the GPU would idle. The default;
  /// off, everything runs on the default stream in program order (the same
  /// results up to the run-to-run noise of the gradient sums' atomic adds).
  void setOverlapLevel0(bool on) { overlapLevel0_ = on; }
  bool overlapLevel0() const { return overlapLevel0_; }
  /// Called by backward() with each range [a, b) of the flat gradient array
  /// as soon as it is final: layer L−1 first, …, layer 0, then the
  /// embedding and the final norm (data-parallel training starts summing a
  /// layer's gradients over the ranks while the layers below still run).
  /// Empty: no calls.
  void setGradReadyHook(std::function<void(int64_t, int64_t)> hook) { gradReady_ = std::move(hook); }
  /// The last forward()'s logits (B, T, V), copied to the host; needs
  /// setKeepLogits(true).
  std::vector<float> logits() const { return logits_.toHost(); }
  /// Where the model runs (the kernel library's device): on the GPU,
  /// `params` and `grads` are device pointers; tokens stay on the host.
  rt::DeviceKind device() const { return dev_; }

private:
  struct Layer;
  void ensure(int64_t B, int64_t T);
  /// recurrence = false: Ly.h holds the level-0 states already.
  void layerForward(int64_t l, const float *P, Layer &Ly, FBuf &out, bool recurrence = true);
  /// C = op(A)·op(B) + beta·C (row-major fp32) on the model's device;
  /// `what` names it in --profile (gemm:<weights>[.dx|.dw], kind products).
  void mm(const float *A, const float *B, float *C, int64_t m, int64_t n, int64_t k, bool transA,
          bool transB, float beta, const char *what);
  /// The LM head and cross-entropy by blocks of rows; with Gr, also dE and dxf.
  double head(const float *P, float *Gr, float scale);
  double lastLoss_ = NAN;
  /// A strided batch of operands: operand i at p + i·stride, rows of ld.
  struct StridedOpd {
    const float *p;
    int64_t ld, stride;
    int64_t groupStride = 0;
  };
  /// C_ji = op(A_ji)·op(B_ji) + beta·C_ji for j < groups, i < batch (an
  /// operand's product (j, i) at j·groupStride + i·stride), profiled as
  /// `what`: one call however many groups.
  void batchedMM(const char *what, StridedOpd A, bool transA, StridedOpd B, bool transB,
                 StridedOpd C, int64_t m, int64_t n, int64_t k, int64_t batch, float beta,
                 bool fine = false, int64_t groups = 1);
  /// One operand of the MDI's products (model.cpp): group g of token rows
  /// (`tok`: row r of batch row b at p + (b·T + r)·ld + g·gs) or of the
  /// per-chunk matrices (p + (b·nC + c)·G·M·d + g·gs, rows of ld).
  struct MdiOpd {
    const float *p;
    int64_t ld, gs;
    bool tok;
  };
  /// For every group g and chunk c: C_c = op(A_c)·op(B_c) + beta·C_c, where
  /// a size given as −1 is the chunk's token count (C, or T's remainder).
  void chunkMM(const char *what, MdiOpd A, bool transA, MdiOpd B, bool transB, MdiOpd C, int64_t m,
               int64_t n, int64_t k, float beta, bool fine = false);
  /// chunkMM where the per-chunk operand is the memory as each chunk reads
  /// it, Mem_{c−1}, taken from the per-chunk states `Mem_c` without a
  /// shifted copy. Prev::read: that operand (A or B, the one with
  /// tok = false) is the states, and chunk 0 reads `first` (B×G·M·d, the
  /// memory before the segment); beta must be 0. Prev::write: the result C
  /// is the gradient of what chunk c read, accumulated into the states'
  /// chunk c−1 (beta 0); the last chunk of each row gets 0, and chunk 0's
  /// part (the gradient of the initial memory) is not formed.
  enum class Prev { read, write };
  void prevChunkMM(const char *what, Prev mode, MdiOpd A, bool transA, MdiOpd B, bool transB,
                   MdiOpd C, int64_t m, int64_t n, int64_t k, const float *first,
                   bool fine = false);
  /// For every group g: C_g = op(A_g)·op(B_g) + beta·C_g over all B·T
  /// tokens (the slot logits x·S_gᵀ and their gradients). `what`: the
  /// profile's name for it (gemm_mdi_…: each call site its own line).
  void groupMM(const char *what, MdiOpd A, bool transA, MdiOpd B, bool transB, MdiOpd C, int64_t m,
               int64_t n, int64_t k, float beta);
  /// Every product of the model: C = op(A)·op(B) + beta·C as `g` says,
  /// in the precision of matmul_; `fine`: never with bf16 operands (TF32
  /// on the GPU, fp32 on the CPU, when matmul_ is bf16).
  void gemm(const char *what, const rt::GemmDesc &g, const float *A, const float *B, float *C,
            bool fine = false);
  /// A bf16 copy of the floats [src, src + n): valid while `epoch` is
  /// castEpoch(), i.e. no kernel has run since it was made, and no product
  /// has written over its source since (gemm drops those).
  struct Bf16Copy {
    HBuf buf;
    const float *src = nullptr;
    int64_t n = 0;
    uint64_t epoch = 0, used = 0;
    bool fromKernel = false, read = false;
    /// A layer's own copy of one of its activations (pinTarget): valid,
    /// whatever runs, until a product writes over its source or the next
    /// forward starts.
    bool pinned = false;
  };
  /// The bf16 copy of p[0, n): a slice of a valid copy that spans it
  /// (consecutive products of one operand, and chunkMM's groups, round it
  /// once), else a new copy by the to_bf16 kernel in the least recently
  /// used slot other than `keep`. `slot`: where it lies.
  const uint16_t *bf16Operand(const float *p, int64_t n, const Bf16Copy *keep,
                              const Bf16Copy **slot = nullptr);
  /// A slot (the least recently used) for a bf16 copy of n floats that the
  /// next kernel writes beside its fp32 output; bf16Written(src, n) after
  /// that launch makes it the copy of src[0, n), found by bf16Operand like
  /// a rounding's.
  /// Up to kMaxPending targets may be pending for one launch; bf16Written takes
  /// them in the order they were asked for.
  uint16_t *bf16Target(int64_t n);
  /// Makes c the next pending target (its source unset until bf16Written);
  /// checkPending throws where kMaxPending are pending already.
  uint16_t *pend(Bf16Copy &c);
  void checkPending() const;
  void bf16Written(const float *src, int64_t n);
  /// bf16Target(n) where kernels write copies, else null (the kernel's
  /// `bf16` index is then 0 and its copy array empty: copyArr).
  uint16_t *copyTarget(int64_t n);
  /// copyTarget for an activation of layer Ly that its backward's products
  /// take again (u, w, a, o, u2, g): with pinning (pinnedCopies()), the
  /// layer's own copy `slot`, so that backward finds it instead of
  /// rounding the activation again.
  uint16_t *pinTarget(Layer &Ly, int slot, int64_t n);
  /// pinTarget where copies are pinned, else null (no copy: one in the LRU
  /// slots would not survive until its products).
  uint16_t *pinOnlyTarget(Layer &Ly, int slot, int64_t n);
  static Arr copyArr(uint16_t *p, int64_t n);
  /// bf16Written(src, n) if p is a target.
  void copyWritten(uint16_t *p, const float *src, int64_t n);
  /// After a launch that wrote nothing but the ranges [p, p + n) in
  /// `written` (and copies it reported): the copies valid before it
  /// (castEpoch() was `before`) whose sources it did not touch stay valid.
  void carryCopies(uint64_t before,
                   std::initializer_list<std::pair<const float *, int64_t>> written);
  /// The slot a new copy of n elements goes to (its buffer large enough).
  Bf16Copy *victim(const Bf16Copy *keep, int64_t n);
  /// Makes c the copy of src[0, n) as of now.
  void own(Bf16Copy &c, const float *src, int64_t n, bool fromKernel);
  /// Whether kernels write bf16 copies of their outputs (bf16 products with
  /// copies reused).
  bool kernelCopies() const { return matmul_ == Matmul::bf16 && reuseCasts_; }
  /// Kernels launched by the library, not counting the roundings.
  uint64_t castEpoch() const { return lib_.launches() - castLaunches_; }
  /// Invalidates the copies whose source overlaps [p, p + n) (`all`: every
  /// copy, but the layers' pinned ones with keepPinned).
  void dropCopies(const float *p, int64_t n, bool all = false, bool keepPinned = false);
  /// Runs `fn` (level 0's launches) on side_ after the default stream's
  /// work so far (setOverlapLevel0; inline otherwise); joinBeside() makes
  /// the default stream wait for it.
  void runBeside(const std::function<void()> &fn);
  void joinBeside();
  bool overlapLevel0_ = true, joinPending_ = false;
  rt::Stream side_ = nullptr;
  rt::gpu::Event forkEvent_ = nullptr, joinEvent_ = nullptr;
  bool recompute_ = false, keepLogits_ = false, keepStates_ = true, keptStates_ = false;
  Matmul matmul_ = Matmul::fp32;
  // Four slots: a product's two operands, and two more so that operands
  // shared by a product and the next survive (A of one, B of the other),
  // as do the copies kernels wrote beside their outputs.
  Bf16Copy casts_[4];
  /// Every layer's pinned copies (and the recomputation's work layer's),
  /// searched after casts_; never a victim.
  std::vector<Bf16Copy *> pins_;
  bool pinCopies_ = true, pinned_ = false;
  /// The bf16 copy of the parameters [paramBase_, + layout_.numel()) that
  /// forward made (setParamCopy); pinned, searched before casts_. It is laid
  /// out in runs of consecutive tensors, each run at a multiple of 128
  /// elements and each tensor inside one at a multiple of 128 from its start
  /// (256-byte aligned, as a weight's own rounding was: cuBLASLt chooses its
  /// kernels by the operands' alignment, and a small tensor such as ρ's 12
  /// values shifts every later offset of the flat array).
  std::vector<ParamRun> paramRuns_;
  Bf16Copy params16_;
  const float *paramBase_ = nullptr;
  bool paramCopy_ = true, paramCopied_ = false;
  uint64_t paramRoundings_ = 0, weightRoundings_ = 0;
  static constexpr int kMaxPending = 3;
  Bf16Copy *pending_[kMaxPending] = {};
  int pendingCount_ = 0;
  uint64_t kernelCopies_ = 0, kernelCopiesRead_ = 0;
  uint64_t castLaunches_ = 0, castUses_ = 0, bf16Products_ = 0;
  bool reuseCasts_ = true;
  std::function<void(int64_t, int64_t)> gradReady_;
  int64_t headRows_ = 1, headRowsWanted_ = 0;
  std::unique_ptr<Layer> work_;
  /// The layer whose activations work_ holds from the last forward (-1:
  /// none, or used since).
  int64_t workHolds_ = -1;
  uint64_t recomputedLayers_ = 0;
  /// With recomputation: layer l's input (and kept h) into work_ and its
  /// forward.
  void recomputeLayer(int64_t l, const float *P);
  FBuf xL_scratch_;
  KernelLibrary &lib_;
  const ParamLayout &layout_;
  ModelConfig c_;
  rt::DeviceKind dev_;
  int64_t B_ = 0, T_ = 0;
  std::vector<std::unique_ptr<Layer>> layers_;
  std::vector<int32_t> targetsHost_;
  IBuf tokens_, targets_, sync_; // sync_: the level-0 kernels' row barriers
  FBuf xL_, rstdF_, xf_, logits_, dlogits_, loss_, scale_;
  // Backward scratch.
  FBuf dx_, dx1_, dy_, dxf_, dg_, df1_, df3_, du2_, do_, dh_, dy1_, dy2_, dq_, dk_, dv_, dz_, du_,
      dua_, dpre_, dell_, dK1_, dV1_, dw_, dslot_, dP_, dmems_, dmem0b_, dn_,
      l1stat_, gp_,
      gp0_, dh0_,
      zerosBD_, zerosMem_, ones_;
};

/// Token-by-token inference with the recurrent state carried (MMREC_SPEC
/// section 3): per layer h (B, D), Mem (B, N_m, M, d_m), the current
/// segment's chunk means K1, V1 (B, ⌈T_max/C⌉, D) and the running sums of
/// the current chunk. The state has a fixed size: memory does not grow with
/// the number of tokens generated. After T_max tokens a new segment starts
/// (level 1 restarts; h and Mem carry on). Feeding a sequence gives, at
/// every position, the logits Model::forward computes for it.
class Generator {
public:
  Generator(KernelLibrary &lib, const ParamLayout &layout, int64_t B);
  ~Generator();
  /// A document start: every state zero.
  void reset();
  /// Consumes one token per sequence (B of them, on the host); returns the
  /// logits of the next token, (B, V), on the host. With a GPU library,
  /// `params` is a device pointer and the state stays on the device.
  const std::vector<float> &step(const float *params, const int32_t *tokens);
  int64_t position() const { return pos_; }
  /// Bytes of state and scratch (constant; the bf16 weights not counted).
  int64_t stateBytes() const;
  /// bf16 products (off: fp32): the matrix products multiply a bf16 copy of
  /// the parameters (rounded by the generated to_bf16 kernel at the first
  /// step after this call or after reset(), so call reset() after changing
  /// the weights) by the activations rounded to bf16, with fp32
  /// accumulation: half the bytes a token (the weights are most of them),
  /// the products the trainer's --matmul bf16 computes.
  void setBf16Weights(bool on) { bf16_ = on; w16From_ = nullptr; }
  bool bf16Weights() const { return bf16_; }
  /// Bytes of the bf16 copy of the parameters (0 before the first step;
  /// laid out as the trainer's, Model::paramRunsOf: a little padding).
  int64_t bf16WeightBytes() const { return int64_t(w16_.size()) * 2; }

private:
  struct LayerState;
  void mm(const float *A, const float *B, float *C, int64_t m, int64_t n, int64_t k, bool transB,
          float beta);
  /// With bf16_: A (m × k) rounded into a16_, for the products that follow.
  void roundActivation(const FBuf &A, int64_t n);
  /// C = a16_ · W16 (+ beta·C), W16 the bf16 copy of the parameter at W.
  void mm16(const float *P, const float *W, float *C, int64_t m, int64_t n, int64_t k,
            bool transB, float beta);
  KernelLibrary &lib_;
  const ParamLayout &layout_;
  ModelConfig c_;
  rt::DeviceKind dev_;
  int64_t B_, pos_ = 0, nCmax_ = 0;
  std::vector<std::unique_ptr<LayerState>> layers_;
  IBuf tok_, sync_;
  FBuf x_, u_, rstd_, q_, k_, v_, z_, ua_, pre_, ell_, hs_, hfin_, y1_, y2_, hrstd_, o_, x1_, u2_,
      f1_, f3_, g_, xf_, logits_, slots_, slotLogits_;
  std::vector<float> logitsHost_;
  bool bf16_ = false;
  const float *w16From_ = nullptr; // the parameters w16_ was rounded from
  HBuf w16_, a16_;
  /// w16_'s layout: the trainer's runs of tensors (Model::paramRunsOf),
  /// every weight 256-byte aligned for cuBLASLt.
  std::vector<Model::ParamRun> w16Runs_;
};

struct AdamWConfig {
  float lr = 3e-3f, beta1 = 0.9f, beta2 = 0.95f, eps = 1e-8f, weightDecay = 0.1f;
};

/// fp32 AdamW state (m, v) over the elements [lo, hi) of the flat parameter
/// array (all of it by default; one rank's shard under ZeRO). On the GPU
/// (the library's device) parameters and gradients are device pointers and
/// the moments live on the device; `m`, `v` are their host copies, filled
/// by pullState() (to save them) and sent back by pushState() (after
/// loading them).
class AdamW {
public:
  /// `bf16States`: m and v stored in bf16 (the `adamw_bf16` kernel), on
  /// either device; m and v (fp32) then exist only around checkpoints.
  AdamW(KernelLibrary &lib, const ParamLayout &layout, int64_t lo = 0, int64_t hi = -1,
        bool bf16States = false);
  /// √Σ g² over `grads` (the `sumsq` kernel); CPU only.
  double gradNorm(std::vector<float> &grads);
  /// Σ g² over the first n elements of `grads` (on the library's device).
  double sumSquares(const float *grads, int64_t n);
  /// The moments where they live (device, or bf16) → m, v (fp32); m, v →
  /// there. No-ops for fp32 states on the CPU (m, v are the state).
  void pullState();
  void pushState();
  /// Frees m, v where they are copies (GPU or bf16 states), after a
  /// checkpoint is written or read.
  void dropHostState();
  bool bf16States() const { return bf16_; }
  /// Bytes of optimizer state (m and v).
  int64_t stateBytes() const { return 2 * (hi_ - lo_) * (bf16_ ? 2 : 4); }
  /// One update at step `t` (1-based) with learning rate `lr` of params[lo,
  /// hi) from grads[0, hi − lo) (the shard's gradients); gradients are
  /// multiplied by `gradScale` first (clipping).
  void step(float *params, const float *grads, int64_t t, float lr, float gradScale,
            const AdamWConfig &cfg);
  void step(std::vector<float> &params, std::vector<float> &grads, int64_t t, float lr,
            float gradScale, const AdamWConfig &cfg) {
    step(params.data(), grads.data(), t, lr, gradScale, cfg);
  }
  int64_t lo() const { return lo_; }
  int64_t hi() const { return hi_; }
  std::vector<float> m, v; // (hi − lo) each

private:
  KernelLibrary &lib_;
  const ParamLayout &layout_;
  int64_t lo_, hi_;
  rt::DeviceKind dev_;
  bool bf16_ = false;
  FBuf md_, vd_, hp_; // GPU moments; hyper-parameters per tensor
  Buffer<double> out_; // Σx² (f64: finite for every finite fp32 gradient)
  HBuf m16_, v16_;          // bf16 moments (either device)
};

} // namespace mmrec::train

#endif // MMREC_TRAIN_H
