//===- model.cpp - MMREC_SPEC's model on the generated kernels ------------===//
//
// Forward: spec section 2 per layer, section 3 around it. Backward: the same
// composition in reverse, each step the vector-Jacobian product of one
// kernel or one matrix product. Matrix products are row-major `gemm` calls
// (OpenBLAS); everything else is a `train_*` kernel.
//
//===----------------------------------------------------------------------===//

#include "gemm.h"
#include "mmrec/train.h"

#include <algorithm>
#include <cstring>
#include <unistd.h>

using namespace mmrec::train;
using mmrec::rt::DeviceKind;
using mmrec::rt::DType;
using mmrec::rt::GemmDesc;


namespace {

void zero(FBuf &v) { v.zero(); }

} // namespace

/// One layer's activations (everything backward needs).
struct Model::Layer {
  FBuf x, rstd1, u, q, k, v, z, ua, pre, ell, h, hfin, K1, V1, y1, w, n, lb, P, mems,
      memfin, a, y2, hrstd, o, x1, rstd2, u2, f1, f3, g, l1lse;
  /// The bf16 copies of u, w, a, o, u2 and g that backward takes (pinTarget),
  /// and of q, k, v (level1_fwd's: pinned only).
  enum Pin { pinU, pinW, pinA, pinO, pinU2, pinG, pinQ, pinK, pinV, kPins };
  Bf16Copy pins[kPins];
};

Model::Model(KernelLibrary &lib, const ParamLayout &layout)
    : lib_(lib), layout_(layout), c_(lib.config()), dev_(lib.device()) {
  for (int64_t l = 0; l < c_.L; ++l)
    layers_.push_back(std::make_unique<Layer>());
}

Model::~Model() {
  if (!side_)
    return;
  try {
    rt::gpu::synchronizeStream(side_);
  } catch (...) {
  }
  rt::gpu::destroyEvent(forkEvent_);
  rt::gpu::destroyEvent(joinEvent_);
  rt::gpu::destroyStream(side_);
}

void Model::runBeside(const std::function<void()> &fn) {
  if (!overlapLevel0_ || dev_ != rt::DeviceKind::gpu) {
    fn();
    return;
  }
  if (!side_) {
    side_ = rt::gpu::createStream();
    forkEvent_ = rt::gpu::createEvent();
    joinEvent_ = rt::gpu::createEvent();
  }
  rt::gpu::recordEvent(forkEvent_, nullptr);
  rt::gpu::streamWaitEvent(side_, forkEvent_);
  {
    rt::gpu::StreamScope scope(side_);
    fn();
  }
  rt::gpu::recordEvent(joinEvent_, side_);
  joinPending_ = true;
}

void Model::joinBeside() {
  if (!joinPending_)
    return;
  rt::gpu::streamWaitEvent(nullptr, joinEvent_);
  joinPending_ = false;
}

long double mmrec::train::physicalMemoryBytes() {
  long pages = sysconf(_SC_PHYS_PAGES), size = sysconf(_SC_PAGE_SIZE);
  return pages > 0 && size > 0 ? (long double)pages * size : 1.0L * (1ull << 62);
}

void Model::mm(const float *A, const float *B, float *C, int64_t m, int64_t n, int64_t k,
                bool transA, bool transB, float beta, const char *what) {
  if (m == 0 || n == 0)
    return;
  gemm(what, detail::denseGemm(m, n, k, transA, transB, beta), A, B, C);
}

const uint16_t *Model::bf16Operand(const float *p, int64_t n, const Bf16Copy *keep,
                                   const Bf16Copy **slot) {
  const uint64_t epoch = castEpoch();
  const auto at = [](const float *x) { return reinterpret_cast<uintptr_t>(x); };
  auto found = [&](Bf16Copy &c) {
    return reuseCasts_ && c.src && (c.pinned || c.epoch == epoch) && at(p) >= at(c.src) &&
           at(p + n) <= at(c.src + c.n);
  };
  auto take = [&](Bf16Copy &c) {
    c.used = ++castUses_;
    if (c.fromKernel && !c.read)
      ++kernelCopiesRead_;
    c.read = true;
    if (slot)
      *slot = &c;
    return c.buf.data() + (p - c.src);
  };
  if (params16_.src && at(p) >= at(params16_.src) && at(p + n) <= at(params16_.src + params16_.n))
    if (const uint16_t *q = paramCopyAt(p - params16_.src, n)) {
      params16_.used = ++castUses_;
      params16_.read = true;
      if (slot)
        *slot = &params16_;
      return q;
    }
  for (Bf16Copy &c : casts_)
    if (found(c))
      return take(c);
  for (Bf16Copy *c : pins_)
    if (found(*c))
      return take(*c);
  Bf16Copy *v = victim(keep, n);
  lib_("to_bf16", Arr(const_cast<float *>(p), n), Arr(v->buf.data(), n), n);
  ++castLaunches_;
  if (paramBase_ && at(p) >= at(paramBase_) && at(p + n) <= at(paramBase_ + layout_.numel()))
    ++weightRoundings_;
  own(*v, p, n, false);
  if (slot)
    *slot = v;
  return v->buf.data();
}

std::vector<Model::ParamRun> Model::paramRunsOf(const ParamLayout &layout) {
  // A new run where a tensor would sit at an offset that is not a multiple
  // of 128 from its run's start, or where the flat array has a gap.
  constexpr int64_t kAlign = 128;
  std::vector<ParamRun> runs;
  for (const ParamInfo &t : layout.tensors()) {
    ParamRun *last = runs.empty() ? nullptr : &runs.back();
    if (last && t.offset == last->end && (t.offset - last->begin) % kAlign == 0) {
      last->end += t.numel;
      continue;
    }
    const int64_t at =
        last ? (last->copyAt + (last->end - last->begin) + kAlign - 1) / kAlign * kAlign : 0;
    runs.push_back({t.offset, t.offset + t.numel, at});
  }
  return runs;
}

int64_t Model::paramCopyOffset(const std::vector<ParamRun> &runs, int64_t off, int64_t n) {
  auto r = std::upper_bound(runs.begin(), runs.end(), off,
                            [](int64_t o, const ParamRun &run) { return o < run.begin; });
  if (r == runs.begin())
    return -1;
  --r;
  return off + n <= r->end ? r->copyAt + (off - r->begin) : -1;
}

int64_t Model::paramCopySize(const std::vector<ParamRun> &runs) {
  return runs.empty() ? 0 : runs.back().copyAt + (runs.back().end - runs.back().begin);
}

int64_t Model::roundParams(KernelLibrary &lib, const std::vector<ParamRun> &runs, const float *P,
                           uint16_t *copy) {
  // Pieces of at most 2^30: a launch's grid stays far inside the GPU's
  // limits whatever the run (the 7B has 5.9e9 parameters).
  int64_t launches = 0;
  for (const ParamRun &r : runs)
    for (int64_t at = r.begin; at < r.end; at += int64_t(1) << 30) {
      const int64_t n = std::min<int64_t>(r.end - at, int64_t(1) << 30);
      lib("to_bf16", Arr(const_cast<float *>(P) + at, n), Arr(copy + r.copyAt + (at - r.begin), n),
          n);
      ++launches;
    }
  return launches;
}

const uint16_t *Model::paramCopyAt(int64_t off, int64_t n) const {
  const int64_t at = paramCopyOffset(paramRuns_, off, n);
  return at < 0 || params16_.buf.size() == 0 ? nullptr : params16_.buf.data() + at;
}

Model::Bf16Copy *Model::victim(const Bf16Copy *keep, int64_t n) {
  // An invalid copy if there is one, else the least recently used; never
  // `keep` or a pending target.
  const uint64_t epoch = castEpoch();
  // Among valid copies, one a product has read goes before one a kernel
  // wrote for products still to come.
  Bf16Copy *v = nullptr;
  auto rank = [&](const Bf16Copy &c) {
    return !c.src || c.epoch != epoch ? 0 : c.fromKernel && !c.read ? 2 : 1;
  };
  for (Bf16Copy &c : casts_) {
    if (&c == keep || std::find(pending_, pending_ + pendingCount_, &c) != pending_ + pendingCount_)
      continue;
    if (!v || rank(c) < rank(*v) || (rank(c) == rank(*v) && c.used < v->used))
      v = &c;
  }
  if (v->buf.size() < n)
    v->buf.reset(dev_, n);
  return v;
}

void Model::own(Bf16Copy &c, const float *src, int64_t n, bool fromKernel) {
  c.src = src;
  c.n = n;
  c.fromKernel = fromKernel;
  c.read = !fromKernel; // a rounding is made for the product that reads it
  c.epoch = castEpoch();
  c.used = ++castUses_;
}

void Model::checkPending() const {
  if (pendingCount_ == kMaxPending)
    throw Error("more than " + std::to_string(kMaxPending) + " bf16 copies asked for one launch");
}

uint16_t *Model::pend(Bf16Copy &c) {
  checkPending();
  c.src = nullptr;
  pending_[pendingCount_++] = &c;
  return c.buf.data();
}

uint16_t *Model::bf16Target(int64_t n) {
  checkPending(); // before victim() resizes a slot
  Bf16Copy *v = victim(nullptr, n);
  v->used = ++castUses_;
  return pend(*v);
}

void Model::bf16Written(const float *src, int64_t n) {
  if (pendingCount_ == 0)
    throw Error("bf16Written: no copy was asked for (bf16Target)");
  Bf16Copy *c = pending_[0];
  std::copy(pending_ + 1, pending_ + kMaxPending, pending_);
  pending_[kMaxPending - 1] = nullptr;
  --pendingCount_;
  own(*c, src, n, true);
  ++kernelCopies_;
}

uint16_t *Model::copyTarget(int64_t n) { return kernelCopies() ? bf16Target(n) : nullptr; }

uint16_t *Model::pinOnlyTarget(Layer &Ly, int slot, int64_t n) {
  return kernelCopies() && pinned_ ? pinTarget(Ly, slot, n) : nullptr;
}

uint16_t *Model::pinTarget(Layer &Ly, int slot, int64_t n) {
  if (!kernelCopies() || !pinned_)
    return copyTarget(n);
  checkPending();
  Bf16Copy &c = Ly.pins[slot];
  if (c.buf.size() < n)
    c.buf.reset(dev_, n);
  c.pinned = true;
  return pend(c);
}

Arr Model::copyArr(uint16_t *p, int64_t n) { return Arr(p, p ? n : 0); }

void Model::copyWritten(uint16_t *p, const float *src, int64_t n) {
  if (p)
    bf16Written(src, n);
}

void Model::carryCopies(uint64_t before,
                        std::initializer_list<std::pair<const float *, int64_t>> written) {
  const auto at = [](const float *x) { return reinterpret_cast<uintptr_t>(x); };
  const uint64_t now = castEpoch();
  for (Bf16Copy &c : casts_) {
    if (!c.src || c.epoch != before)
      continue;
    bool touched = false;
    for (auto [p, n] : written)
      touched |= at(p) < at(c.src + c.n) && at(c.src) < at(p + n);
    if (!touched)
      c.epoch = now;
  }
}

void Model::dropCopies(const float *p, int64_t n, bool all, bool keepPinned) {
  const auto at = [](const float *x) { return reinterpret_cast<uintptr_t>(x); };
  auto drop = [&](Bf16Copy &c) {
    if (c.src &&
        (all ? !(keepPinned && c.pinned) : at(p) < at(c.src + c.n) && at(c.src) < at(p + n)))
      c.src = nullptr;
  };
  drop(params16_);
  for (Bf16Copy &c : casts_)
    drop(c);
  for (Bf16Copy *c : pins_)
    drop(*c);
  if (all) // a launch that threw between bf16Target and bf16Written
    pendingCount_ = 0;
}

void Model::gemm(const char *what, const GemmDesc &g, const float *A, const float *B, float *C,
                 bool fine) {
  ProfileScope prof(what, dev_);
  prof.work(0, 2.0 * double(g.m) * double(g.n) * double(g.k) * double(g.batch) *
                  double(g.groups));
  // The elements an operand spans: `groups` × `batch` matrices of `rows`
  // rows of ld.
  auto extent = [&](int64_t rows, int64_t cols, int64_t ld, int64_t stride, int64_t gstride) {
    return rows == 0 || cols == 0
               ? 0
               : (g.groups - 1) * gstride + (g.batch - 1) * stride + (rows - 1) * ld + cols;
  };
  // C is written whatever the path: bf16 copies of what it overlaps go.
  dropCopies(C, extent(g.m, g.n, g.ldc, g.strideC, g.groupStrideC));
  if (matmul_ != Matmul::bf16 || fine) {
    GemmDesc d = g;
    d.tf32 = matmul_ != Matmul::fp32;
    mmrec::rt::gemm(d, DType::f32, A, B, DType::f32, C, dev_);
    return;
  }
  const int64_t nA = g.transA ? extent(g.k, g.m, g.lda, g.strideA, g.groupStrideA)
                              : extent(g.m, g.k, g.lda, g.strideA, g.groupStrideA);
  const int64_t nB = g.transB ? extent(g.n, g.k, g.ldb, g.strideB, g.groupStrideB)
                              : extent(g.k, g.n, g.ldb, g.strideB, g.groupStrideB);
  if (g.k == 0 || nA == 0 || nB == 0) {
    mmrec::rt::gemm(g, DType::f32, A, B, DType::f32, C, dev_);
    return;
  }
  const Bf16Copy *slotA = nullptr;
  const uint16_t *a16 = bf16Operand(A, nA, nullptr, &slotA);
  const uint16_t *b16 = bf16Operand(B, nB, slotA);
  mmrec::rt::gemm(g, DType::bf16, a16, b16, DType::f32, C, dev_);
  ++bf16Products_;
}

void Model::batchedMM(const char *what, StridedOpd A, bool transA, StridedOpd B, bool transB,
                      StridedOpd C, int64_t m, int64_t n, int64_t k, int64_t batch, float beta,
                      bool fine, int64_t groups) {
  GemmDesc g = detail::denseGemm(m, n, k, transA, transB, beta);
  g.lda = A.ld;
  g.ldb = B.ld;
  g.ldc = C.ld;
  g.batch = batch;
  g.strideA = A.stride;
  g.strideB = B.stride;
  g.strideC = C.stride;
  g.groups = groups;
  g.groupStrideA = A.groupStride;
  g.groupStrideB = B.groupStride;
  g.groupStrideC = C.groupStride;
  gemm(what, g, A.p, B.p, const_cast<float *>(C.p), fine);
}

void Model::groupMM(const char *what, MdiOpd A, bool transA, MdiOpd B, bool transB, MdiOpd C,
                    int64_t m, int64_t n, int64_t k, float beta) {
  batchedMM(what, {A.p, A.ld, A.gs}, transA, {B.p, B.ld, B.gs}, transB, {C.p, C.ld, C.gs}, m, n, k,
            c_.Nm, beta);
}

void Model::chunkMM(const char *what, MdiOpd A, bool transA, MdiOpd B, bool transB, MdiOpd C,
                    int64_t m, int64_t n, int64_t k, float beta, bool fine) {
  const int64_t Ch = c_.C, nC = (T_ + Ch - 1) / Ch, cs = c_.Nm * c_.M * c_.dm();
  // Chunks c0 .. c0 + count of batch row b, each of len tokens, for every
  // group: one call, the groups the outer batch axis.
  auto run = [&](int64_t b, int64_t c0, int64_t count, int64_t len) {
    auto at = [&](const MdiOpd &o) -> StridedOpd {
      return {o.p + (o.tok ? (b * T_ + c0 * Ch) * o.ld : (b * nC + c0) * cs), o.ld,
              o.tok ? Ch * o.ld : cs, o.gs};
    };
    auto len_ = [&](int64_t x) { return x < 0 ? len : x; };
    batchedMM(what, at(A), transA, at(B), transB, at(C), len_(m), len_(n), len_(k), count, beta,
              fine, c_.Nm);
  };
  if (matmul_ == Matmul::bf16 && !fine && reuseCasts_) {
    // Round each operand whole, once: every group's and chunk's product
    // below takes a slice of the copy (rounded per group, the operands of
    // the chunk states would be rounded N_m times).
    auto whole = [&](const MdiOpd &o) { return o.tok ? B_ * T_ * o.ld : B_ * nC * cs; };
    const Bf16Copy *slotA = nullptr;
    bf16Operand(A.p, whole(A), nullptr, &slotA);
    bf16Operand(B.p, whole(B), slotA);
  }
  if (T_ % Ch == 0) {
    // Every chunk has C tokens: one batch over all B·nC chunks (token rows
    // of chunk b·nC + c start at (b·nC + c)·C).
    run(0, 0, B_ * nC, Ch);
    return;
  }
  for (int64_t b = 0; b < B_; ++b) {
    if (nC > 1)
      run(b, 0, nC - 1, Ch);
    run(b, nC - 1, 1, T_ - (nC - 1) * Ch);
  }
}

void Model::prevChunkMM(const char *what, Prev mode, MdiOpd A, bool transA, MdiOpd B, bool transB,
                        MdiOpd C, int64_t m, int64_t n, int64_t k, const float *first, bool fine) {
  const int64_t Ch = c_.C, nC = (T_ + Ch - 1) / Ch, cs = c_.Nm * c_.M * c_.dm();
  const MdiOpd *state = mode == Prev::write ? &C : !A.tok ? &A : &B;
  if (state->tok || (mode == Prev::read && A.tok == B.tok))
    throw Error("prevChunkMM: needs one per-chunk operand");
  // Batches of chunks c0 .. c0 + count of batch row b (flattened over b
  // when every chunk is full), each of len tokens, for every group; the state
  // operand at its chunk c − 1 (or at `base`, stride cs, for chunk 0).
  auto run = [&](int64_t b, int64_t c0, int64_t count, int64_t len, const float *base,
                 bool fineHere) {
    auto at = [&](const MdiOpd &o) -> StridedOpd {
      if (o.tok)
        return {o.p + (b * T_ + c0 * Ch) * o.ld, o.ld, base ? T_ * o.ld : Ch * o.ld, o.gs};
      if (base)
        return {base + b * cs, o.ld, cs, o.gs};
      return {o.p + (b * nC + c0 - 1) * cs, o.ld, cs, o.gs};
    };
    auto len_ = [&](int64_t x) { return x < 0 ? len : x; };
    batchedMM(what, at(A), transA, at(B), transB, at(C), len_(m), len_(n), len_(k), count, 0.0f,
              fineHere, c_.Nm);
  };
  if (matmul_ == Matmul::bf16 && !fine && reuseCasts_) {
    // Each operand rounded whole, once (see chunkMM). Chunk 0's products
    // with `first` (1/⌈T/C⌉ of the work) are fp32/TF32: a bf16 copy of
    // `first` per group would cost more than they do.
    auto whole = [&](const MdiOpd &o) { return o.tok ? B_ * T_ * o.ld : B_ * nC * cs; };
    const Bf16Copy *slotA = nullptr;
    bf16Operand(A.p, whole(A), nullptr, &slotA);
    bf16Operand(B.p, whole(B), slotA);
  }
  const int64_t len0 = std::min(T_, Ch);
  if (T_ % Ch == 0) {
    // Flattened over the batch rows: chunk i = b·nC + c reads state i − 1,
    // which for c = 0 (b ≥ 1) is the previous row's last state — redone
    // below from `first` (reads) or zeroed (writes).
    if (B_ * nC > 1)
      run(0, 1, B_ * nC - 1, Ch, nullptr, fine);
  } else {
    for (int64_t b = 0; b < B_; ++b) {
      if (nC > 2)
        run(b, 1, nC - 2, Ch, nullptr, fine);
      if (nC > 1)
        run(b, nC - 1, 1, T_ - (nC - 1) * Ch, nullptr, fine);
    }
  }
  if (mode == Prev::read)
    run(0, 0, B_, len0, first, true);
  if (mode == Prev::write) {
    // No chunk reads the last state of a row (the final memory's gradient
    // comes from outside): 0, also where the flattened batch wrote there.
    float *out = const_cast<float *>(C.p);
    for (int64_t b = 0; b < B_; ++b) {
      float *last = out + (b * nC + nC - 1) * cs;
      dropCopies(last, cs);
      if (dev_ == DeviceKind::gpu)
        rt::gpu::memsetD8(last, 0, size_t(cs) * sizeof(float));
      else
        std::fill(last, last + cs, 0.0f);
    }
  }
}

void Model::ensure(int64_t B, int64_t T) {
  if (B == B_ && T == T_)
    return;
  if (T > c_.Tmax)
    throw Error("forward: T=" + std::to_string(T) + " exceeds max_seq_len " +
                std::to_string(c_.Tmax) + " (split longer sequences into segments)");
  auto resize = [this](FBuf &v, int64_t n) { v.reset(dev_, n); };
  const int64_t N = B * T, D = c_.D, F = c_.F, G = c_.Nm, M = c_.M, d = c_.dm();
  const int64_t nC = (T + c_.C - 1) / c_.C;
  const int64_t mem = B * G * M * d, mems = B * nC * G * M * d;
  // Refuse before allocating: the activations of every layer plus the
  // backward's scratch, in floats (long double: no overflow for absurd sizes).
  long double perLayer = (long double)N * (14 * D + 2 + c_.r + 2 * G * M + 2 * G + 3 * F) +
                         (long double)B * D + 2.0L * B * nC * D + 2.0L * B * nC * G * M +
                         2.0L * mems + mem;
  // The head's block of logits: about 4 MiB on the CPU, 512 MiB on the GPU
  // (fewer, larger products and cross-entropy launches).
  const int64_t logitBudget = dev_ == DeviceKind::gpu ? int64_t(1) << 27 : int64_t(1) << 20;
  const int64_t headRows = std::max<int64_t>(
      1, std::min<int64_t>(N, headRowsWanted_ > 0 ? headRowsWanted_ : logitBudget / c_.V));
  const int64_t logitRows = keepLogits_ ? N : headRows;
  long double layerStore = recompute_ ? (long double)c_.L * N * D + perLayer : perLayer * c_.L;
  long double total = layerStore + (long double)N * (22 * D + 3 * F + c_.r + 2 * G * M) +
                      2.0L * logitRows * c_.V + 4.5L * mems + 5.0L * mem +
                      (long double)B * nC * G * M + (long double)N * G;
  long double limit = mmrec::train::physicalMemoryBytes();
  if (dev_ == DeviceKind::gpu) {
    size_t freeB = 0, totalB = 0;
    rt::gpu::memInfo(freeB, totalB);
    // What this model holds already is released before reallocating.
    limit = (long double)freeB + activationBytes();
  }
  // Recomputation keeps every layer's h as well where it fits (with 1/16
  // of the limit to spare for the allocator and the products' workspaces).
  const long double kept = (long double)c_.L * N * D;
  const bool keep = recompute_ && keepStates_ && (total + kept) * 4 <= limit * 15 / 16;
  if (keep)
    total += kept;
  // The layers' pinned bf16 copies (setPinCopies), where they fit like the
  // kept states; else backward rounds those activations again.
  const long double pinFloats =
      ((6.0L * D + F) * N + 2.0L * N * G * M) / 2 * (recompute_ ? 1 : c_.L);
  const bool pin = pinCopies_ && (total + pinFloats) * 4 <= limit * 15 / 16;
  // The parameters' bf16 copy (setParamCopy) after those, with more to
  // spare: it saves a few percent of a step's traffic, the pins more.
  const long double paramFloats = (long double)layout_.numel() / 2;
  const bool pcopy = paramCopy_ && kernelCopies() &&
                     (total + (pin ? pinFloats : 0) + paramFloats) * 4 <= limit * 7 / 8;
  long double bytes = total * 4;
  if (bytes > limit)
    throw Error("forward: B=" + std::to_string(B) + ", T=" + std::to_string(T) + " needs " +
                std::to_string(int64_t(bytes / (1 << 20))) + " MiB of activations, more than the " +
                (dev_ == DeviceKind::gpu ? "GPU's free " : "machine's ") +
                std::to_string(int64_t(limit / (1 << 20))) + " MiB");
  B_ = B;
  T_ = T;
  headRows_ = headRows;
  keptStates_ = keep;
  pinned_ = pin;
  paramCopied_ = pcopy;
  // The runs depend on the layout only; the copy's buffer is kept across
  // shapes (training and evaluation batches alternate) while it is made.
  params16_.src = nullptr;
  if (paramRuns_.empty())
    paramRuns_ = paramRunsOf(layout_);
  if (!pcopy)
    params16_.buf.clear();
  else if (params16_.buf.size() != paramCopySize(paramRuns_))
    params16_.buf.reset(dev_, paramCopySize(paramRuns_));
  workHolds_ = -1;
  auto sizeAll = [&](Layer &L) {
    for (Bf16Copy &c : L.pins)
      c = Bf16Copy();
    for (auto *v : {&L.x, &L.u, &L.q, &L.k, &L.v, &L.z, &L.pre, &L.ell, &L.h, &L.y1, &L.y2, &L.o,
                    &L.x1, &L.u2})
      resize(*v, N * D);
    resize(L.rstd1, N);
    resize(L.rstd2, N);
    resize(L.ua, N * c_.r);
    resize(L.hfin, B * D);
    resize(L.K1, B * nC * D);
    resize(L.V1, B * nC * D);
    resize(L.w, N * G * M);
    resize(L.a, N * G * M);
    resize(L.n, B * nC * G * M);
    resize(L.lb, B * nC * G * M);
    resize(L.P, mems);
    resize(L.mems, mems);
    resize(L.memfin, mem);
    resize(L.hrstd, N * G);
    resize(L.l1lse, N * G);
    for (auto *v : {&L.f1, &L.f3, &L.g})
      resize(*v, N * F);
  };
  // With recomputation only each layer's input is kept per layer; one set
  // of activations (work_) serves every layer in turn.
  for (auto &Lp : layers_) {
    if (recompute_) {
      *Lp = Layer();
      resize(Lp->x, N * D);
      if (keep)
        resize(Lp->h, N * D);
    } else {
      sizeAll(*Lp);
    }
  }
  work_ = std::make_unique<Layer>();
  if (recompute_) {
    sizeAll(*work_);
    resize(xL_scratch_, N * D);
  } else {
    xL_scratch_.clear();
  }
  pins_.clear();
  auto addPins = [&](Layer &L) {
    for (Bf16Copy &c : L.pins)
      pins_.push_back(&c);
  };
  if (recompute_)
    addPins(*work_);
  else
    for (auto &Lp : layers_)
      addPins(*Lp);
  tokens_.reset(dev_, N);
  sync_.reset(dev_, gatedSyncWords(B, D));
  targets_.reset(dev_, N);
  targetsHost_.assign(size_t(N), -1);
  for (auto *v : {&xL_, &xf_, &dx_, &dx1_, &dy_, &dxf_, &du2_, &do_, &dh_, &dy1_, &dy2_, &dq_, &dk_,
                  &dv_, &dz_, &du_, &dpre_, &dell_, &gp_})
    resize(*v, N * D);
  resize(rstdF_, N);
  resize(logits_, logitRows * c_.V);
  resize(dlogits_, headRows * c_.V);
  resize(loss_, 2);
  scale_.fill(dev_, 1, 1.0f);
  for (auto *v : {&dg_, &df1_, &df3_})
    resize(*v, N * F);
  resize(dua_, N * c_.r);
  resize(dK1_, B * nC * D);
  resize(dV1_, B * nC * D);
  resize(dw_, N * G * M);
  resize(dslot_, N * G * M);
  resize(dP_, mems);
  resize(dn_, B * nC * G * M);
  resize(l1stat_, N * G);
  resize(dmems_, mems);
  resize(dmem0b_, mem);
  resize(zerosMem_, mem);
  resize(gp0_, B * D);
  resize(dh0_, B * D);
  resize(zerosBD_, B * D);
  ones_.fill(dev_, std::max<int64_t>(N, B), 1.0f);
}

int64_t Model::activationBytes() const {
  int64_t n = xL_scratch_.size();
  std::vector<const Layer *> all;
  for (const auto &Lp : layers_)
    all.push_back(Lp.get());
  if (work_)
    all.push_back(work_.get());
  for (const Layer *Lp : all) {
    const Layer &L = *Lp;
    for (const auto *v : {&L.x, &L.rstd1, &L.u, &L.q, &L.k, &L.v, &L.z, &L.ua, &L.pre, &L.ell,
                          &L.h, &L.hfin, &L.K1, &L.V1, &L.y1, &L.w, &L.n, &L.lb, &L.P, &L.mems,
                          &L.memfin, &L.a, &L.y2, &L.hrstd, &L.o, &L.x1, &L.rstd2, &L.u2, &L.f1,
                          &L.f3, &L.g, &L.l1lse})
      n += v->size();
  }
  for (const auto *v : {&xL_, &rstdF_, &xf_, &logits_, &dlogits_, &dx_, &dx1_, &dy_, &dxf_, &dg_,
                        &df1_, &df3_, &du2_, &do_, &dh_, &dy1_, &dy2_, &dq_, &dk_, &dv_, &dz_,
                        &du_, &dua_, &dpre_, &dell_, &dK1_, &dV1_, &dw_, &dslot_, &dP_,
                        &dmems_, &dn_, &l1stat_,
                        &dmem0b_, &gp_, &gp0_, &dh0_, &zerosBD_, &zerosMem_, &ones_})
    n += int64_t(v->size());
  for (const Bf16Copy &c : casts_)
    n += (c.buf.size() + 1) / 2; // bf16: two to a float
  for (const Bf16Copy *c : pins_)
    n += (c->buf.size() + 1) / 2;
  n += (params16_.buf.size() + 1) / 2;
  return n * 4;
}

void Model::layerForward(int64_t l, const float *P, Layer &Ly, FBuf &out, bool recurrence) {
  const int64_t B = B_, T = T_, N = B * T, D = c_.D, F = c_.F, r = c_.r;
  const int64_t nC = (T + c_.C - 1) / c_.C, GMd = c_.Nm * c_.M * c_.dm();
  auto W = [&](const char *n) {
    const ParamInfo &p = layout_.get(ParamLayout::layerName(l, n));
    return Arr(const_cast<float *>(P + p.offset), p.numel);
  };
  auto Wp = [&](const char *n) { return P + layout_.layer(l, n); };
  // With bf16 products, the kernels that produce a product's operand write
  // its bf16 copy too (copyTarget): no separate rounding pass reads it again.
  uint16_t *u16 = pinTarget(Ly, Layer::pinU, Ly.u.size());
  lib_("rmsnorm_fwd", Arr(Ly.x), W("w_in"), Arr(Ly.u), copyArr(u16, Ly.u.size()), Arr(Ly.rstd1),
       N, int64_t(u16 != nullptr));
  copyWritten(u16, Ly.u.data(), Ly.u.size());
  // Level 0's inputs first (z and the decay), so that the recurrence, the
  // longest of the layer's three levels, starts beside the products of q,
  // k and v as well as levels 1 and 2 (runBeside): they meet at combine_fwd.
  mm(Ly.u.data(), Wp("W_z"), Ly.z.data(), N, D, D, false, false, 0, "gemm:proj");
  mm(Ly.u.data(), Wp("A_gamma"), Ly.ua.data(), N, r, D, false, false, 0, "gemm:lowrank");
  mm(Ly.ua.data(), Wp("B_gamma"), Ly.pre.data(), N, D, r, false, false, 0, "gemm:lowrank");
  lib_("decay_fwd", Arr(Ly.pre), W("lambda"), Arr(Ly.ell), N);
  if (recurrence)
    runBeside([&] {
      lib_("gated_fwd", Arr(Ly.z), Arr(Ly.ell), W("W_g"), W("b_g"), Arr(zerosBD_), Arr(Ly.h),
           Arr(Ly.hfin), Arr(sync_), B, T);
    });
  mm(Ly.u.data(), Wp("W_q"), Ly.q.data(), N, D, D, false, false, 0, "gemm:proj");
  mm(Ly.u.data(), Wp("W_k"), Ly.k.data(), N, D, D, false, false, 0, "gemm:proj");
  mm(Ly.u.data(), Wp("W_v"), Ly.v.data(), N, D, D, false, false, 0, "gemm:proj");
  // Level 1 reads q, k, v whole: with pinned copies it writes their bf16
  // copies too, which the slot products here and in backward take (an
  // LRU copy would not outlive the launches before its products).
  uint16_t *q16 = pinOnlyTarget(Ly, Layer::pinQ, Ly.q.size());
  uint16_t *k16 = pinOnlyTarget(Ly, Layer::pinK, Ly.k.size());
  uint16_t *v16 = pinOnlyTarget(Ly, Layer::pinV, Ly.v.size());
  lib_("level1_fwd", Arr(Ly.q), Arr(Ly.k), Arr(Ly.v), Arr(Ly.K1), Arr(Ly.V1), Arr(Ly.y1),
       Arr(Ly.l1lse), copyArr(q16, Ly.q.size()), copyArr(k16, Ly.k.size()),
       copyArr(v16, Ly.v.size()), B, T, int64_t(q16 != nullptr));
  copyWritten(q16, Ly.q.data(), Ly.q.size());
  copyWritten(k16, Ly.k.data(), Ly.k.size());
  copyWritten(v16, Ly.v.data(), Ly.v.size());
  // Level 2: the write address w = softmax(k·Sᵀ/√d), the chunk sums
  // P_c = w_cᵀ·v_c, n, logβ and (1 − β)·U, the memory scan over chunks, then
  // the read a = softmax(q·Sᵀ/√d), y2_c = a_c·Mem_{c−1}.
  const float *S = Wp("S");
  const int64_t GM = c_.Nm * c_.M, Md = c_.M * c_.dm(), d = c_.dm();
  groupMM("gemm_mdi_kS", {Ly.k.data(), D, d, true}, false, {S, d, Md, false}, true,
          {Ly.w.data(), GM, c_.M, true}, N, c_.M, d, 0);
  uint16_t *w16 = pinTarget(Ly, Layer::pinW, Ly.w.size());
  lib_("slot_softmax", Arr(Ly.w), copyArr(w16, Ly.w.size()), N * c_.Nm, int64_t(w16 != nullptr));
  copyWritten(w16, Ly.w.data(), Ly.w.size());
  chunkMM("gemm_mdi_wv", {Ly.w.data(), GM, c_.M, true}, true, {Ly.v.data(), D, d, true}, false,
          {Ly.P.data(), d, Md, false}, c_.M, d, -1, 0);
  lib_("mdi_chunk_fwd", Arr(Ly.w), W("mu"), Arr(Ly.n), Arr(Ly.lb), B, T);
  // The memory scan forms (1 − β)·U from P itself; with bf16 products it
  // also writes the states' bf16 copy, which the read's products below take
  // (no rounding pass over the largest array of the layer).
  uint16_t *mems16 = copyTarget(Ly.mems.size());
  lib_("mem_scan_fwd", Arr(Ly.lb), Arr(Ly.P), Arr(Ly.n), Arr(zerosMem_), Arr(Ly.mems),
       copyArr(mems16, Ly.mems.size()), Arr(Ly.memfin), B, nC, GMd, int64_t(mems16 != nullptr));
  copyWritten(mems16, Ly.mems.data(), Ly.mems.size());
  // The read's addresses after the scan (they do not depend on it), so that
  // the read's product finds both bf16 copies: slot_softmax writes only a
  // (and a's copy), so the states' copy stays valid across it.
  groupMM("gemm_mdi_qS", {Ly.q.data(), D, d, true}, false, {S, d, Md, false}, true,
          {Ly.a.data(), GM, c_.M, true}, N, c_.M, d, 0);
  uint16_t *a16 = pinTarget(Ly, Layer::pinA, Ly.a.size());
  const uint64_t beforeA = castEpoch();
  lib_("slot_softmax", Arr(Ly.a), copyArr(a16, Ly.a.size()), N * c_.Nm, int64_t(a16 != nullptr));
  carryCopies(beforeA, {{Ly.a.data(), Ly.a.size()}});
  copyWritten(a16, Ly.a.data(), Ly.a.size());
  // y2_c = a_c·Mem_{c−1}: chunk c's product reads state c − 1 in place.
  prevChunkMM("gemm_mdi_aM", Prev::read, {Ly.a.data(), GM, c_.M, true}, false,
              {Ly.mems.data(), d, Md, false}, false, {Ly.y2.data(), D, d, true}, -1, d, c_.M,
              zerosMem_.data());
  joinBeside();
  uint16_t *o16 = pinTarget(Ly, Layer::pinO, Ly.o.size());
  lib_("combine_fwd", Arr(Ly.h), Arr(Ly.y1), Arr(Ly.y2), W("rho"), Arr(Ly.hrstd), Arr(Ly.o),
       copyArr(o16, Ly.o.size()), N, int64_t(o16 != nullptr));
  copyWritten(o16, Ly.o.data(), Ly.o.size());
  Ly.x1 = Ly.x;
  mm(Ly.o.data(), Wp("W_o"), Ly.x1.data(), N, D, D, false, false, 1, "gemm:proj");
  uint16_t *u216 = pinTarget(Ly, Layer::pinU2, Ly.u2.size());
  lib_("rmsnorm_fwd", Arr(Ly.x1), W("w_ffn"), Arr(Ly.u2), copyArr(u216, Ly.u2.size()),
       Arr(Ly.rstd2), N, int64_t(u216 != nullptr));
  copyWritten(u216, Ly.u2.data(), Ly.u2.size());
  mm(Ly.u2.data(), Wp("W_1"), Ly.f1.data(), N, F, D, false, false, 0, "gemm:ffn");
  mm(Ly.u2.data(), Wp("W_3"), Ly.f3.data(), N, F, D, false, false, 0, "gemm:ffn");
  uint16_t *g16 = pinTarget(Ly, Layer::pinG, Ly.g.size());
  lib_("swiglu_fwd", Arr(Ly.f1), Arr(Ly.f3), Arr(Ly.g), copyArr(g16, Ly.g.size()), N * F,
       int64_t(g16 != nullptr));
  copyWritten(g16, Ly.g.data(), Ly.g.size());
  out = Ly.x1;
  mm(Ly.g.data(), Wp("W_2"), out.data(), N, D, F, false, false, 1, "gemm:ffn");
}

double Model::forward(const float *P, const int32_t *tokens, int64_t B, int64_t T, bool loss) {
  if (B <= 0 || T <= 0)
    throw Error("forward: B and T must be positive, got B=" + std::to_string(B) +
                ", T=" + std::to_string(T));
  // The parameters may have been written outside the library (uploads,
  // collectives) since the last call: no bf16 copy outlives a call.
  dropCopies(nullptr, 0, true);
  ensure(B, T);
  const int64_t N = B * T, D = c_.D, V = c_.V;
  for (int64_t i = 0; i < N; ++i)
    if (tokens[i] < 0 || tokens[i] >= V)
      throw Error("forward: token " + std::to_string(tokens[i]) + " at position " +
                  std::to_string(i) + " is outside the vocabulary [0, " + std::to_string(V) + ")");
  paramBase_ = P;
  if (paramCopied_) {
    // Every parameter rounded once; pinned, so backward keeps it too
    // (forward's parameters are backward's).
    castLaunches_ += uint64_t(roundParams(lib_, paramRuns_, P, params16_.buf.data()));
    own(params16_, P, layout_.numel(), false);
    params16_.pinned = true;
    ++paramRoundings_;
  }
  tokens_.upload(tokens, N);
  for (int64_t b = 0; b < B; ++b)
    for (int64_t t = 0; t < T; ++t)
      targetsHost_[size_t(b * T + t)] = t + 1 < T ? tokens[b * T + t + 1] : -1;
  targets_.upload(targetsHost_.data(), N);
  const float *E = P + layout_.get("embed").offset;
  lib_("embed_fwd", Arr(tokens_), Arr(const_cast<float *>(E), V * D), Arr(layers_[0]->x), N);
  for (int64_t l = 0; l < c_.L; ++l) {
    FBuf &out = l + 1 < c_.L ? layers_[size_t(l + 1)]->x : xL_;
    if (recompute_) {
      // Only each layer's input (and its h, where kept) is kept; the rest
      // is recomputed in backward.
      work_->x = layers_[size_t(l)]->x;
      if (keptStates_)
        work_->h.swap(layers_[size_t(l)]->h);
      layerForward(l, P, *work_, out);
      if (keptStates_)
        work_->h.swap(layers_[size_t(l)]->h);
    } else {
      layerForward(l, P, *layers_[size_t(l)], out);
    }
  }
  // With recomputation work_ now holds the last layer's activations, which
  // its backward takes as they are.
  workHolds_ = recompute_ ? c_.L - 1 : -1;
  const ParamInfo &fn = layout_.get("final_norm");
  // (Without the loss the head waits for backward, which drops every copy.)
  uint16_t *xf16 = loss ? copyTarget(xf_.size()) : nullptr;
  lib_("rmsnorm_fwd", Arr(xL_), Arr(const_cast<float *>(P + fn.offset), D), Arr(xf_),
       copyArr(xf16, xf_.size()), Arr(rstdF_), N, int64_t(xf16 != nullptr));
  copyWritten(xf16, xf_.data(), xf_.size());
  lastLoss_ = loss ? head(P, nullptr, 1.0f) : NAN;
  return lastLoss_;
}

double Model::head(const float *P, float *Gr, float scale) {
  // The tied LM head and the cross-entropy, a block of rows at a time: the
  // logits of the whole batch never exist at once (unless keepLogits).
  // With Gr: dE += dlogitsᵀ·xf and dxf = dlogits·E, block by block.
  const int64_t N = B_ * T_, D = c_.D, V = c_.V;
  const float *E = P + layout_.get("embed").offset;
  int64_t count = 0;
  for (int32_t t : targetsHost_)
    count += t >= 0;
  const float s = scale / float(std::max<int64_t>(count, 1));
  scale_.upload(&s, 1);
  double sum = 0;
  for (int64_t r0 = 0; r0 < N; r0 += headRows_) {
    const int64_t rows = std::min(headRows_, N - r0);
    float *lg = logits_.data() + (keepLogits_ ? r0 * V : 0);
    mm(xf_.data() + r0 * D, E, lg, rows, V, D, false, true, 0, "gemm:head");
    // The gradient only with Gr; with bf16 products only its bf16 copy,
    // which both products below take (the fp32 dlogits are not written).
    uint16_t *d16 = Gr ? copyTarget(rows * V) : nullptr;
    const int64_t grad = !Gr ? 0 : d16 ? 2 : 1;
    lib_("xent", Arr(lg, rows * V), Arr(targets_.data() + r0, rows), Arr(scale_), Arr(loss_),
         Arr(dlogits_.data(), grad & 1 ? rows * V : 0), copyArr(d16, rows * V), rows, grad);
    if (d16) {
      bf16Written(dlogits_.data(), rows * V);
      const Bf16Copy *slot = nullptr;
      bf16Operand(dlogits_.data(), rows * V, nullptr, &slot);
      if (!slot || slot->buf.data() != d16)
        throw Error("head: the bf16 gradient of the logits is not where the products look");
    }
    float lossHost[2];
    loss_.download(lossHost, 2);
    sum += lossHost[0];
    if (Gr) {
      mm(dlogits_.data(), xf_.data() + r0 * D, Gr + layout_.get("embed").offset, V, D, rows, true,
         false, 1, "gemm:head.dw");
      mm(dlogits_.data(), E, dxf_.data() + r0 * D, rows, D, V, false, false, 0, "gemm:head.dx");
    }
  }
  return count ? sum / double(count) : 0.0;
}

void Model::recomputeLayer(int64_t l, const float *P) {
  work_->x = layers_[size_t(l)]->x;
  // With the states kept, the sequential recurrence is not run again.
  if (keptStates_)
    work_->h.swap(layers_[size_t(l)]->h);
  layerForward(l, P, *work_, xL_scratch_, !keptStates_);
  workHolds_ = -1;
  ++recomputedLayers_;
}

void Model::backward(const float *P, float *Gr, float scale) {
  if (B_ == 0)
    throw Error("backward: no forward pass to differentiate");
  // The layers' pinned copies stay: their sources are forward's
  // activations, which nothing has written since.
  dropCopies(nullptr, 0, true, true);
  const int64_t B = B_, T = T_, N = B * T, D = c_.D, F = c_.F, r = c_.r, V = c_.V;
  float *dE = Gr + layout_.get("embed").offset;
  lastLoss_ = head(P, Gr, scale);
  zero(dx_);
  const ParamInfo &fn = layout_.get("final_norm");
  // dx's bf16 copy where the last layer's first products come next (without
  // recomputation; with it, the layer's forward runs in between).
  uint16_t *dxf16 = recompute_ ? nullptr : copyTarget(dx_.size());
  lib_("rmsnorm_bwd", Arr(xL_), Arr(const_cast<float *>(P + fn.offset), D), Arr(rstdF_), Arr(dxf_),
       Arr(dx_), copyArr(dxf16, dx_.size()), Arr(Gr + fn.offset, D), N, int64_t(dxf16 != nullptr));
  copyWritten(dxf16, dx_.data(), dx_.size());
  for (int64_t l = c_.L - 1; l >= 0; --l) {
    if (recompute_) {
      // The last layer's activations are still forward's (workHolds_).
      if (workHolds_ == l) {
        if (keptStates_)
          work_->h.swap(layers_[size_t(l)]->h);
        workHolds_ = -1;
      } else {
        recomputeLayer(l, P);
      }
    }
    Layer &Ly = recompute_ ? *work_ : *layers_[size_t(l)];
    auto W = [&](const char *n) {
      const ParamInfo &p = layout_.get(ParamLayout::layerName(l, n));
      return Arr(const_cast<float *>(P + p.offset), p.numel);
    };
    auto dW = [&](const char *n) {
      const ParamInfo &p = layout_.get(ParamLayout::layerName(l, n));
      return Arr(Gr + p.offset, p.numel);
    };
    auto Wp = [&](const char *n) { return P + layout_.layer(l, n); };
    auto dWp = [&](const char *n) { return Gr + layout_.layer(l, n); };
    // x_out = x1 + g·W_2, g = swiglu(u2·W_1, u2·W_3), u2 = RMSNorm(x1)·w_ffn.
    std::swap(dy_, dx_); // dy = dL/dx_out
    mm(dy_.data(), Wp("W_2"), dg_.data(), N, F, D, false, true, 0, "gemm:ffn.dx");
    mm(Ly.g.data(), dy_.data(), dWp("W_2"), F, D, N, true, false, 1, "gemm:ffn.dw");
    uint16_t *df116 = copyTarget(df1_.size());
    uint16_t *df316 = copyTarget(df3_.size());
    lib_("swiglu_bwd", Arr(Ly.f1), Arr(Ly.f3), Arr(dg_), Arr(df1_), Arr(df3_),
         copyArr(df116, df1_.size()), copyArr(df316, df3_.size()), N * F,
         int64_t(df116 != nullptr));
    copyWritten(df116, df1_.data(), df1_.size());
    copyWritten(df316, df3_.data(), df3_.size());
    // Each of df1, df3 feeds its two products back to back (with bf16
    // products: their copies come from swiglu_bwd, and each survives the
    // other's products).
    mm(df1_.data(), Wp("W_1"), du2_.data(), N, D, F, false, true, 0, "gemm:ffn.dx");
    mm(Ly.u2.data(), df1_.data(), dWp("W_1"), D, F, N, true, false, 1, "gemm:ffn.dw");
    mm(df3_.data(), Wp("W_3"), du2_.data(), N, D, F, false, true, 1, "gemm:ffn.dx");
    mm(Ly.u2.data(), df3_.data(), dWp("W_3"), D, F, N, true, false, 1, "gemm:ffn.dw");
    dx1_ = dy_;
    uint16_t *dx116 = copyTarget(dx1_.size());
    lib_("rmsnorm_bwd", Arr(Ly.x1), W("w_ffn"), Arr(Ly.rstd2), Arr(du2_), Arr(dx1_),
         copyArr(dx116, dx1_.size()), dW("w_ffn"), N, int64_t(dx116 != nullptr));
    copyWritten(dx116, dx1_.data(), dx1_.size());
    // x1 = x + o·W_o.
    mm(dx1_.data(), Wp("W_o"), do_.data(), N, D, D, false, true, 0, "gemm:proj.dx");
    mm(Ly.o.data(), dx1_.data(), dWp("W_o"), D, D, N, true, false, 1, "gemm:proj.dw");
    // dy2's bf16 copy for the read's product below (it survives gated_bwd,
    // which writes none of its sources).
    uint16_t *dy216 = copyTarget(dy2_.size());
    lib_("combine_bwd", Arr(Ly.h), Arr(Ly.y1), Arr(Ly.y2), W("rho"), Arr(Ly.hrstd), Arr(do_),
         Arr(dh_), Arr(dy1_), Arr(dy2_), copyArr(dy216, dy2_.size()), dW("rho"), N,
         int64_t(dy216 != nullptr));
    copyWritten(dy216, dy2_.data(), dy2_.size());
    // Level 0's adjoint beside levels 2 and 1's (runBeside), joined before
    // the products of its gradients. dW_g = Σ h_{t−1}ᵀ a_t through the
    // shifted pre-activation gradient (the initial state is zero: its term
    // vanishes), db_g = Σ a_t.
    const uint64_t beforeGated = castEpoch();
    runBeside([&] {
      lib_("gated_bwd", Arr(Ly.z), Arr(Ly.ell), W("W_g"), W("b_g"), Arr(zerosBD_), Arr(Ly.h),
           Arr(dh_), Arr(zerosBD_), Arr(dz_), Arr(dell_), Arr(gp_), Arr(gp0_), Arr(dh0_),
           Arr(sync_), B, T);
    });
    carryCopies(beforeGated, {{dz_.data(), dz_.size()},
                              {dell_.data(), dell_.size()},
                              {gp_.data(), gp_.size()},
                              {gp0_.data(), gp0_.size()},
                              {dh0_.data(), dh0_.size()}});
    zero(dq_);
    zero(dk_);
    zero(dv_);
    // Level 2 backward. The read: da_c = dy2_c·prev_cᵀ, dR_c = a_cᵀ·dy2_c
    // (the gradient of the state chunk c read, prev_c = Mem_{c−1}: into
    // dmems_ at chunk c − 1, the gradient the memory scan takes), the logits'
    // gradient dl through the softmax, dq += dl·S_g, dS += dlᵀ·q.
    const float *S = Wp("S");
    float *dS = dWp("S");
    const int64_t GM = c_.Nm * c_.M, Md = c_.M * c_.dm(), d = c_.dm();
    // The states each chunk read are Mem_{c−1} (prevChunkMM reads them in
    // place). dslot and dw feed a softmax's gradient (a ⊙ (dslot − Σ a·dslot)),
    // whose cancellation amplifies bf16 rounding (to ~10% in dS): never bf16.
    prevChunkMM("gemm_mdi_dy2M", Prev::read, {dy2_.data(), D, d, true}, false,
                {Ly.mems.data(), d, Md, false}, true, {dslot_.data(), GM, c_.M, true}, -1, c_.M, d,
                zerosMem_.data(), true);
    // The gradient of the state chunk c read goes straight to Mem_{c−1}'s.
    prevChunkMM("gemm_mdi_ady2", Prev::write, {Ly.a.data(), GM, c_.M, true}, true,
                {dy2_.data(), D, d, true}, false, {dmems_.data(), d, Md, false}, c_.M, d, -1,
                nullptr);
    uint16_t *dslot16 = copyTarget(dslot_.size());
    lib_("slot_softmax_bwd", Arr(Ly.a), Arr(dslot_), copyArr(dslot16, dslot_.size()), N * c_.Nm,
         int64_t(dslot16 != nullptr));
    copyWritten(dslot16, dslot_.data(), dslot_.size());
    groupMM("gemm_mdi_dlS", {dslot_.data(), GM, c_.M, true}, false, {S, d, Md, false}, false,
            {dq_.data(), D, d, true}, N, d, c_.M, 1);
    groupMM("gemm_mdi_dlx", {dslot_.data(), GM, c_.M, true}, true, {Ly.q.data(), D, d, true}, false,
            {dS, d, Md, false}, c_.M, d, N, 1);
    // The memory scan's adjoint with the chunk write's: dP and dn per slot
    // (and dμ); with bf16 products also dP's bf16 copy for dv's product.
    uint16_t *dP16 = copyTarget(dP_.size());
    lib_("mem_scan_bwd", Arr(Ly.mems), Arr(zerosMem_), Arr(dmems_), Arr(zerosMem_), W("mu"),
         Arr(Ly.n), Arr(Ly.P), dW("mu"), Arr(dP_), Arr(dP16, dP16 ? dP_.size() : 0), Arr(dn_),
         Arr(dmem0b_), B, T, int64_t(dP16 != nullptr));
    if (dP16)
      bf16Written(dP_.data(), dP_.size());
    // The write: dw_c = v_c·dP_cᵀ, dv_c += w_c·dP_c, dl through the softmax
    // (with dn), dk += dl·S_g, dS += dlᵀ·k.
    chunkMM("gemm_mdi_vdP", {Ly.v.data(), D, d, true}, false, {dP_.data(), d, Md, false}, true,
            {dw_.data(), GM, c_.M, true}, -1, c_.M, d, 0, true);
    chunkMM("gemm_mdi_wdP", {Ly.w.data(), GM, c_.M, true}, false, {dP_.data(), d, Md, false}, false,
            {dv_.data(), D, d, true}, -1, d, c_.M, 1);
    uint16_t *dw16 = copyTarget(dw_.size());
    lib_("mdi_write_softmax_bwd", Arr(Ly.w), Arr(dn_), Arr(dw_), copyArr(dw16, dw_.size()), B, T,
         int64_t(dw16 != nullptr));
    copyWritten(dw16, dw_.data(), dw_.size());
    groupMM("gemm_mdi_dlS", {dw_.data(), GM, c_.M, true}, false, {S, d, Md, false}, false,
            {dk_.data(), D, d, true}, N, d, c_.M, 1);
    groupMM("gemm_mdi_dlx", {dw_.data(), GM, c_.M, true}, true, {Ly.k.data(), D, d, true}, false,
            {dS, d, Md, false}, c_.M, d, N, 1);
    // Level 1's adjoint adds last into dq, dk and dv (with their bf16
    // copies), so their products come next, while the copies are valid.
    uint16_t *dq16 = copyTarget(dq_.size());
    uint16_t *dk16 = copyTarget(dk_.size());
    uint16_t *dv16 = copyTarget(dv_.size());
    lib_("level1_bwd", Arr(Ly.q), Arr(Ly.K1), Arr(Ly.V1), Arr(Ly.y1), Arr(Ly.l1lse), Arr(dy1_),
         Arr(dq_), Arr(dk_), Arr(dv_), Arr(dK1_), Arr(dV1_), Arr(l1stat_), copyArr(dq16, dq_.size()),
         copyArr(dk16, dk_.size()), copyArr(dv16, dv_.size()), B, T, int64_t(dq16 != nullptr));
    copyWritten(dq16, dq_.data(), dq_.size());
    copyWritten(dk16, dk_.data(), dk_.size());
    copyWritten(dv16, dv_.data(), dv_.size());
    const std::pair<const char *, FBuf *> proj[] = {{"W_q", &dq_}, {"W_k", &dk_}, {"W_v", &dv_}};
    for (auto [name, g] : proj) {
      mm(g->data(), Wp(name), du_.data(), N, D, D, false, true, g == &dq_ ? 0 : 1,
         "gemm:proj.dx");
      mm(Ly.u.data(), g->data(), dWp(name), D, D, N, true, false, 1, "gemm:proj.dw");
    }
    joinBeside();
    if (c_.perHead) {
      // dW_g's H diagonal blocks: head i's columns of h and of the gradient.
      const int64_t dh = c_.dh();
      batchedMM("gemm:gate.dw", {Ly.h.data(), D, dh}, true, {gp_.data(), D, dh}, false,
                {dWp("W_g"), dh, dh * dh}, dh, dh, N, c_.H, 1);
    } else {
      mm(Ly.h.data(), gp_.data(), dWp("W_g"), D, D, N, true, false, 1, "gemm:gate.dw");
    }
    mm(ones_.data(), gp_.data(), dWp("b_g"), 1, D, N, false, false, 1, "gemm:gate.dw");
    mm(ones_.data(), gp0_.data(), dWp("b_g"), 1, D, B, false, false, 1, "gemm:gate.dw");
    // ℓ = clamp(logσ(ua·B_γ + λ)), ua = u·A_γ.
    uint16_t *dpre16 = copyTarget(dpre_.size());
    lib_("decay_bwd", Arr(Ly.pre), W("lambda"), Arr(dell_), Arr(dpre_),
         copyArr(dpre16, dpre_.size()), dW("lambda"), N, int64_t(dpre16 != nullptr));
    copyWritten(dpre16, dpre_.data(), dpre_.size());
    mm(Ly.ua.data(), dpre_.data(), dWp("B_gamma"), r, D, N, true, false, 1, "gemm:lowrank.bwd");
    mm(dpre_.data(), Wp("B_gamma"), dua_.data(), N, r, D, false, true, 0, "gemm:lowrank.bwd");
    mm(Ly.u.data(), dua_.data(), dWp("A_gamma"), D, r, N, true, false, 1, "gemm:lowrank.bwd");
    mm(dua_.data(), Wp("A_gamma"), du_.data(), N, D, r, false, true, 1, "gemm:lowrank.bwd");
    mm(dz_.data(), Wp("W_z"), du_.data(), N, D, D, false, true, 1, "gemm:proj.dx");
    mm(Ly.u.data(), dz_.data(), dWp("W_z"), D, D, N, true, false, 1, "gemm:proj.dw");
    dx_ = dx1_;
    // dx's copy for the next layer's first products (see the final norm's).
    uint16_t *dx16 = recompute_ || l == 0 ? nullptr : copyTarget(dx_.size());
    lib_("rmsnorm_bwd", Arr(Ly.x), W("w_in"), Arr(Ly.rstd1), Arr(du_), Arr(dx_),
         copyArr(dx16, dx_.size()), dW("w_in"), N, int64_t(dx16 != nullptr));
    copyWritten(dx16, dx_.data(), dx_.size());
    if (recompute_ && keptStates_)
      Ly.h.swap(layers_[size_t(l)]->h);
    if (gradReady_)
      gradReady_(layout_.layer(l, "w_in"),
                 l + 1 < c_.L ? layout_.layer(l + 1, "w_in") : fn.offset);
  }
  lib_("embed_bwd", Arr(tokens_), Arr(dx_), Arr(dE, V * D), N);
  if (gradReady_) {
    gradReady_(0, layout_.layer(0, "w_in"));
    gradReady_(fn.offset, layout_.numel());
  }
}

AdamW::AdamW(KernelLibrary &lib, const ParamLayout &layout, int64_t lo, int64_t hi,
             bool bf16States)
    : lib_(lib), layout_(layout), lo_(lo), hi_(hi < 0 ? layout.numel() : hi), dev_(lib.device()),
      bf16_(bf16States) {
  if (lo_ < 0 || lo_ > hi_ || hi_ > layout.numel())
    throw Error("AdamW: shard [" + std::to_string(lo_) + ", " + std::to_string(hi_) +
                ") is outside the " + std::to_string(layout.numel()) + " parameters");
  // On the GPU, or with bf16 states, the host copies m, v exist only while a
  // checkpoint is written or read (pullState / loadCheckpoint): 8 bytes a
  // parameter of host memory that a 7B model cannot spare.
  if (bf16_) {
    m16_.reset(dev_, hi_ - lo_);
    v16_.reset(dev_, hi_ - lo_);
  } else if (dev_ == DeviceKind::cpu) {
    m.assign(size_t(hi_ - lo_), 0.0f);
    v.assign(size_t(hi_ - lo_), 0.0f);
  } else {
    md_.reset(dev_, hi_ - lo_);
    vd_.reset(dev_, hi_ - lo_);
  }
  hp_.reset(dev_, 8 * int64_t(layout.tensors().size()));
  out_.reset(dev_, 1);
}

void AdamW::pullState() {
  const int64_t n = hi_ - lo_;
  if (bf16_) {
    std::vector<uint16_t> h(static_cast<size_t>(n));
    for (auto [buf, out] : {std::pair<HBuf *, std::vector<float> *>{&m16_, &m}, {&v16_, &v}}) {
      buf->download(h.data(), n);
      out->resize(size_t(n));
      for (int64_t i = 0; i < n; ++i)
        (*out)[size_t(i)] = mmrec::rt::fromBF16(h[size_t(i)]);
    }
    return;
  }
  if (dev_ != DeviceKind::gpu)
    return;
  m.resize(size_t(md_.size()));
  v.resize(size_t(vd_.size()));
  md_.download(m.data(), md_.size());
  vd_.download(v.data(), vd_.size());
}

void AdamW::pushState() {
  const int64_t n = hi_ - lo_;
  if (bf16_ || dev_ == DeviceKind::gpu)
    if (int64_t(m.size()) != n || int64_t(v.size()) != n)
      throw Error("AdamW::pushState: the host state has " + std::to_string(m.size()) +
                  " elements, the shard " + std::to_string(n));
  if (bf16_) {
    std::vector<uint16_t> h(static_cast<size_t>(n));
    for (auto [buf, in] : {std::pair<HBuf *, std::vector<float> *>{&m16_, &m}, {&v16_, &v}}) {
      for (int64_t i = 0; i < n; ++i)
        h[size_t(i)] = mmrec::rt::toBF16((*in)[size_t(i)]);
      buf->upload(h.data(), n);
    }
    return;
  }
  if (dev_ != DeviceKind::gpu)
    return;
  md_.upload(m.data(), md_.size());
  vd_.upload(v.data(), vd_.size());
}

void AdamW::dropHostState() {
  if (dev_ != DeviceKind::gpu && !bf16_)
    return;
  std::vector<float>().swap(m);
  std::vector<float>().swap(v);
}

double AdamW::sumSquares(const float *grads, int64_t n) {
  out_.zero();
  lib_("sumsq", Arr(const_cast<float *>(grads), n), Arr(out_), n);
  double r = 0;
  out_.download(&r, 1);
  return r;
}

double AdamW::gradNorm(std::vector<float> &grads) {
  if (dev_ != DeviceKind::cpu)
    throw Error("AdamW::gradNorm: host gradients with a GPU library; use sumSquares");
  return std::sqrt(sumSquares(grads.data(), int64_t(grads.size())));
}

void AdamW::step(float *params, const float *grads, int64_t t, float lr, float gradScale,
                 const AdamWConfig &c) {
  const double bc1 = 1.0 / (1.0 - std::pow(double(c.beta1), double(t)));
  const double bc2 = 1.0 / (1.0 - std::pow(double(c.beta2), double(t)));
  // Every tensor's hyper-parameters in one copy.
  const auto &ts = layout_.tensors();
  std::vector<float> hp(8 * ts.size());
  for (size_t i = 0; i < ts.size(); ++i) {
    const float row[8] = {lr,         c.beta1,    c.beta2,  c.eps, ts[i].decay ? c.weightDecay : 0.0f,
                          float(bc1), float(bc2), gradScale};
    std::copy(row, row + 8, hp.begin() + 8 * int64_t(i));
  }
  hp_.upload(hp.data(), int64_t(hp.size()));
  float *M = bf16_ ? nullptr : dev_ == DeviceKind::gpu ? md_.data() : m.data();
  float *Vv = bf16_ ? nullptr : dev_ == DeviceKind::gpu ? vd_.data() : v.data();
  // A launch per run of consecutive tensors with the same hyper-parameters
  // (adjacent in the flat buffer; only the weight decay differs between
  // rows): the update is elementwise, so this is the per-tensor result.
  for (size_t i = 0, j; i < ts.size(); i = j) {
    j = i + 1;
    while (j < ts.size() && ts[j].decay == ts[i].decay &&
           ts[j].offset == ts[j - 1].offset + ts[j - 1].numel)
      ++j;
    const int64_t begin = ts[i].offset, end = ts[j - 1].offset + ts[j - 1].numel;
    // The part of these tensors inside the shard.
    int64_t a = std::max(begin, lo_), b = std::min(end, hi_);
    if (a >= b)
      continue;
    const int64_t n = b - a, s = a - lo_;
    if (bf16_)
      lib_("adamw_bf16", Arr(params + a, n), Arr(const_cast<float *>(grads) + s, n),
           Arr(m16_.data() + s, n), Arr(v16_.data() + s, n), Arr(hp_.data() + 8 * int64_t(i), 8),
           n);
    else
      lib_("adamw", Arr(params + a, n), Arr(const_cast<float *>(grads) + s, n), Arr(M + s, n),
           Arr(Vv + s, n), Arr(hp_.data() + 8 * int64_t(i), 8), n);
  }
}
