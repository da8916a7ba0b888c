//===- generate.cpp - token-by-token inference with carried state ---------===//
//
// One token of every layer: the projections as gemms over B rows, the
// level-0 recurrence as one step of the gated kernel (T = 1, its initial
// state the carried h), level 1 and 2 through the generated decode_*
// kernels (reads of the completed chunks and of Mem as it stood before the
// current chunk; the chunk's statistics pushed, and applied when the token
// closes its chunk), then the combination and the FFN.
//
//===----------------------------------------------------------------------===//

#include "gemm.h"
#include "mmrec/train.h"

#include <algorithm>

using namespace mmrec::train;

namespace {
// No bf16 copies from the kernels here (their `bf16` index is 0): decoding
// rounds its few product operands with to_bf16.
const Arr kNo16(static_cast<uint16_t *>(nullptr), 0);
} // namespace

struct Generator::LayerState {
  FBuf h, mem, K1, V1, ksum, vsum, nacc, pacc;
};

Generator::Generator(KernelLibrary &lib, const ParamLayout &layout, int64_t B)
    : lib_(lib), layout_(layout), c_(lib.config()), dev_(lib.device()), B_(B) {
  if (B <= 0)
    throw Error("Generator: the batch must be positive, got " + std::to_string(B));
  if (c_.Tmax % c_.C != 0)
    throw Error("Generator: max_seq_len (" + std::to_string(c_.Tmax) +
                ") must be a multiple of chunk_size (" + std::to_string(c_.C) + ")");
  nCmax_ = c_.Tmax / c_.C;
  const int64_t D = c_.D, F = c_.F, G = c_.Nm, M = c_.M, d = c_.dm();
  auto resize = [this](FBuf &v, int64_t n) { v.reset(dev_, n); };
  for (int64_t l = 0; l < c_.L; ++l) {
    auto s = std::make_unique<LayerState>();
    resize(s->h, B * D);
    resize(s->mem, B * G * M * d);
    resize(s->K1, B * nCmax_ * D);
    resize(s->V1, B * nCmax_ * D);
    resize(s->ksum, B * D);
    resize(s->vsum, B * D);
    resize(s->nacc, B * G * M);
    resize(s->pacc, B * G * M * d);
    layers_.push_back(std::move(s));
  }
  for (auto *v : {&x_, &u_, &q_, &k_, &v_, &z_, &pre_, &ell_, &hs_, &hfin_, &y1_, &y2_, &o_, &x1_,
                  &u2_, &xf_})
    resize(*v, B * D);
  resize(rstd_, B);
  resize(ua_, B * c_.r);
  resize(hrstd_, B * G);
  for (auto *v : {&f1_, &f3_, &g_})
    resize(*v, B * F);
  resize(logits_, B * c_.V);
  resize(slots_, B * G * M);
  resize(slotLogits_, 2 * B * G * M);
  logitsHost_.assign(size_t(B * c_.V), 0.0f);
  tok_.reset(dev_, B);
  sync_.reset(dev_, gatedSyncWords(B, c_.D));
  reset();
}

Generator::~Generator() = default;

void Generator::reset() {
  pos_ = 0;
  w16From_ = nullptr;
  for (auto &s : layers_)
    for (auto *v : {&s->h, &s->mem, &s->K1, &s->V1, &s->ksum, &s->vsum, &s->nacc, &s->pacc})
      v->zero();
}

int64_t Generator::stateBytes() const {
  int64_t n = 0;
  for (const auto &s : layers_)
    for (const auto *v : {&s->h, &s->mem, &s->K1, &s->V1, &s->ksum, &s->vsum, &s->nacc, &s->pacc})
      n += v->size();
  for (const auto *v : {&x_, &u_, &rstd_, &q_, &k_, &v_, &z_, &ua_, &pre_, &ell_, &hs_, &hfin_,
                        &y1_, &y2_, &hrstd_, &o_, &x1_, &u2_, &f1_, &f3_, &g_, &xf_, &logits_,
                        &slots_, &slotLogits_})
    n += v->size();
  return n * 4;
}

void Generator::mm(const float *A, const float *B, float *C, int64_t m, int64_t n, int64_t k,
                   bool transB, float beta) {
  ProfileScope prof("gemm", dev_);
  prof.work(0, 2.0 * double(m) * double(n) * double(k));
  detail::mm(A, B, C, m, n, k, false, transB, beta, dev_);
}

void Generator::roundActivation(const FBuf &A, int64_t n) {
  if (a16_.size() < n)
    a16_.reset(dev_, n);
  lib_("to_bf16", Arr(const_cast<FBuf &>(A)), Arr(a16_.data(), n), n);
}

void Generator::mm16(const float *P, const float *W, float *C, int64_t m, int64_t n, int64_t k,
                     bool transB, float beta) {
  ProfileScope prof("gemm", dev_);
  prof.work(0, 2.0 * double(m) * double(n) * double(k));
  rt::GemmDesc d = detail::denseGemm(m, n, k, false, transB, beta);
  const int64_t at = Model::paramCopyOffset(w16Runs_, W - P, transB ? n * k : k * n);
  if (at < 0)
    throw Error("generate: a product's weight is outside the parameters' bf16 copy");
  rt::gemm(d, rt::DType::bf16, a16_.data(), w16_.data() + at, rt::DType::f32, C, dev_);
}

const std::vector<float> &Generator::step(const float *P, const int32_t *tokens) {
  const int64_t B = B_, D = c_.D, F = c_.F, r = c_.r, V = c_.V, C = c_.C;
  for (int64_t b = 0; b < B; ++b)
    if (tokens[b] < 0 || tokens[b] >= V)
      throw Error("generate: token " + std::to_string(tokens[b]) + " is outside the vocabulary");
  tok_.upload(tokens, B);
  if (bf16_ && w16From_ != P) {
    // In the trainer's layout (see Model::paramRunsOf).
    if (w16Runs_.empty())
      w16Runs_ = Model::paramRunsOf(layout_);
    const int64_t n = Model::paramCopySize(w16Runs_);
    if (w16_.size() != n)
      w16_.reset(dev_, n);
    Model::roundParams(lib_, w16Runs_, P, w16_.data());
    w16From_ = P;
  }
  // C = A·W (A: B rows of k), in the generator's precision.
  auto proj = [&](const FBuf &A, bool fresh, const float *Wt, FBuf &Cb, int64_t n, int64_t k,
                  float beta, bool transB = false) {
    if (!bf16_)
      return mm(A.data(), Wt, Cb.data(), B, n, k, transB, beta);
    if (fresh)
      roundActivation(A, B * k);
    mm16(P, Wt, Cb.data(), B, n, k, transB, beta);
  };
  const int64_t chunk = pos_ / C;
  const int64_t close = pos_ % C == C - 1 ? 1 : 0;
  const float *E = P + layout_.get("embed").offset;
  lib_("embed_fwd", Arr(tok_), Arr(const_cast<float *>(E), V * D), Arr(x_), B);
  for (int64_t l = 0; l < c_.L; ++l) {
    LayerState &s = *layers_[size_t(l)];
    auto W = [&](const char *n) {
      const ParamInfo &p = layout_.get(ParamLayout::layerName(l, n));
      return Arr(const_cast<float *>(P + p.offset), p.numel);
    };
    auto Wp = [&](const char *n) { return P + layout_.layer(l, n); };
    lib_("rmsnorm_fwd", Arr(x_), W("w_in"), Arr(u_), kNo16, Arr(rstd_), B, int64_t(0));
    // u rounded once for its five products.
    proj(u_, true, Wp("W_q"), q_, D, D, 0);
    proj(u_, false, Wp("W_k"), k_, D, D, 0);
    proj(u_, false, Wp("W_v"), v_, D, D, 0);
    proj(u_, false, Wp("W_z"), z_, D, D, 0);
    proj(u_, false, Wp("A_gamma"), ua_, r, D, 0);
    proj(ua_, true, Wp("B_gamma"), pre_, D, r, 0);
    lib_("decay_fwd", Arr(pre_), W("lambda"), Arr(ell_), B);
    lib_("gated_fwd", Arr(z_), Arr(ell_), W("W_g"), W("b_g"), Arr(s.h), Arr(hs_), Arr(hfin_),
         Arr(sync_), B, int64_t(1));
    s.h.swap(hfin_);
    lib_("decode_level1", Arr(q_), Arr(s.K1), Arr(s.V1), Arr(y1_), B, chunk);
    // The MDI read (the memory before this token's chunk) and write address.
    lib_("decode_mdi_logits", Arr(q_), Arr(k_), W("S"), Arr(slotLogits_), B);
    lib_("decode_mdi", Arr(slotLogits_), Arr(s.mem), Arr(slots_), Arr(y2_), B);
    lib_("decode_level1_push", Arr(k_), Arr(v_), Arr(s.ksum), Arr(s.vsum), Arr(s.K1), Arr(s.V1), B,
         chunk, C, close);
    lib_("decode_mdi_update", Arr(slots_), Arr(v_), W("mu"), Arr(s.nacc), Arr(s.pacc), Arr(s.mem),
         B, close);
    lib_("combine_fwd", Arr(hs_), Arr(y1_), Arr(y2_), W("rho"), Arr(hrstd_), Arr(o_), kNo16, B,
         int64_t(0));
    x1_ = x_;
    proj(o_, true, Wp("W_o"), x1_, D, D, 1);
    lib_("rmsnorm_fwd", Arr(x1_), W("w_ffn"), Arr(u2_), kNo16, Arr(rstd_), B, int64_t(0));
    proj(u2_, true, Wp("W_1"), f1_, F, D, 0);
    proj(u2_, false, Wp("W_3"), f3_, F, D, 0);
    lib_("swiglu_fwd", Arr(f1_), Arr(f3_), Arr(g_), kNo16, B * F, int64_t(0));
    x_ = x1_;
    proj(g_, true, Wp("W_2"), x_, D, F, 1);
  }
  const ParamInfo &fn = layout_.get("final_norm");
  lib_("rmsnorm_fwd", Arr(x_), Arr(const_cast<float *>(P + fn.offset), D), Arr(xf_), kNo16,
       Arr(rstd_), B, int64_t(0));
  proj(xf_, true, E, logits_, V, D, 0, true);
  // After T_max tokens a new segment starts: level 1 restarts (its chunk
  // slots are reused from 0); h and Mem carry on.
  if (++pos_ == c_.Tmax)
    pos_ = 0;
  logits_.download(logitsHost_.data(), B * V);
  return logitsHost_;
}
