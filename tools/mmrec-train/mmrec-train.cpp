//===- mmrec-train.cpp - train MM-Rec from the compiler's kernels ---------===//
//
//   mmrec-train --model models/mmrec-tiny.mlir --data DIR [--out DIR] [...]
//   mmrec-train --model ... --data DIR --eval-only --checkpoint CKPT
//   mmrec-train --config run.ini
//
// Compiles the model file with mmrec-compile (the executable beside this
// one) into OUT/kernels unless --kernels names a training manifest, then
// trains on DIR/train.bin and validates on DIR/val.bin (mmrec-data writes
// both): AdamW with warmup + cosine decay, global-norm clipping, gradient
// accumulation, periodic validation and atomic checkpoints (mmrec/train_io.h)
// with keep-last-N; --resume continues from the newest checkpoint in OUT
// and reproduces the uninterrupted run's losses bit for bit. Each step
// prints one line (step, loss, grad norm, lr, ms, tokens/s, GFLOP/s, peak
// memory) and appends a JSON record to OUT/metrics.jsonl. A non-finite loss
// or gradient skips the step; five in a row stop the run (exit 3) with the
// last checkpoint intact. Settings are validated up front: a bad one exits non-zero
// naming the option.
//
// --device picks the CPU (OpenBLAS products, the generated host kernels) or
// the GPU (cuBLASLt products, the generated GPU training library, weights,
// gradients and optimizer state in device memory); auto takes the GPU when
// there is one.
//
//===----------------------------------------------------------------------===//

#include "mmrec/dist.h"
#include "mmrec/train_io.h"
#include "tools/common/Tokenizer.h"
#include "tools/mmrec-train/Watchdog.h"

#include "TrainSettings.h"

#include <chrono>
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sys/resource.h>
#include <unistd.h>

using namespace mmrec::train;
using nlohmann::json;
namespace fs = std::filesystem;

namespace {

json toJson(const Settings &s) {
  return {{"model", s.model},     {"steps", s.steps},     {"batch", s.batch},
          {"seq_len", s.seqLen},  {"warmup", s.warmup},   {"grad_accum", s.gradAccum},
          {"lr", s.lr},           {"min_lr", s.minLr},    {"weight_decay", s.weightDecay},
          {"beta1", s.beta1},     {"beta2", s.beta2},     {"clip", s.clip},
          {"overflow_retries", s.overflowRetries}, {"loss_scale_log2", s.lossScaleLog2},
          {"seed", s.seed},       {"eval_interval", s.evalInterval}, {"recompute", s.recompute}, {"recompute_states", s.recomputeStates},
          {"serial_level0", s.serialLevel0}, {"unpinned_copies", s.unpinnedCopies},
          {"no_param_copy", s.noParamCopy},
          {"eval_tokens", s.evalTokens}, {"tf32", s.tf32}, {"matmul", s.matmul}, {"device", s.device},
          {"optimizer_states", s.optimizerStates}, {"level0", s.level0}};
}

std::string selfDir() {
  std::error_code ec;
  fs::path p = fs::read_symlink("/proc/self/exe", ec);
  return ec ? "." : p.parent_path().string();
}

std::string shellQuote(const std::string &s) {
  std::string q = "'";
  for (char c : s)
    q += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return q + "'";
}

/// Compiles `model` into `dir` with mmrec-compile (with the GPU library when
/// `gpu`, its level-0 kernels as `level0` says: fp32, bf16 or clusters);
/// returns the manifest.
std::string compileModel(const std::string &model, const std::string &dir, bool gpu,
                         const std::string &level0) {
  if (!fs::exists(model))
    throw Error("--model: " + model + " does not exist");
  std::string name = fs::path(model).stem().string();
  fs::create_directories(dir);
  std::string compiler = selfDir() + "/mmrec-compile";
  const char *target = gpu ? "all" : "cpu";
  std::string flags = std::string("--target=") + target;
  if (gpu && level0 == "bf16")
    flags += " --train-gated-bf16";
  else if (gpu && level0 == "clusters")
    flags += " --train-gated-cluster";
  std::string cmd = shellQuote(compiler) + " " + shellQuote(model) + " -o " + shellQuote(dir) +
                    " " + flags;
  std::cerr << "mmrec-train: compiling " << model << " (mmrec-compile " << flags << ")\n";
  int rc = std::system(cmd.c_str());
  if (rc != 0)
    throw Error("mmrec-compile failed on " + model + " (its messages are above)");
  return dir + "/" + name + ".train.json";
}

double lrAt(const Settings &s, int64_t step) {
  if (step <= s.warmup)
    return s.lr * double(step) / double(std::max<int64_t>(1, s.warmup));
  double p = double(step - s.warmup) / double(std::max<int64_t>(1, s.steps - s.warmup));
  p = std::min(1.0, p);
  return s.minLr + 0.5 * (s.lr - s.minLr) * (1.0 + std::cos(M_PI * p));
}

/// FLOPs of one forward+backward per token: 6 × the parameters of every
/// matrix product (projections, the decay gate, FFN, tied logits) plus the
/// level-0 product h·W_g (2·D² forward, 4·D² backward per token and layer).
double flopsPerToken(const ModelConfig &c) {
  double D = double(c.D), F = double(c.F), r = double(c.r), V = double(c.V);
  double gate = c.perHead ? D * D / double(c.H) : D * D;
  double perLayer = 5 * D * D + 2 * D * r + 3 * D * F;
  return 6.0 * (double(c.L) * (perLayer + gate) + V * D);
}

double peakRssMiB() {
  rusage u{};
  getrusage(RUSAGE_SELF, &u);
  return double(u.ru_maxrss) / 1024.0;
}

/// Device memory in use (all processes), MiB.
double gpuUsedMiB() {
  size_t freeB = 0, totalB = 0;
  mmrec::rt::gpu::memInfo(freeB, totalB);
  return double(totalB - freeB) / double(1 << 20);
}

/// Mean loss over consecutive windows of T tokens of the validation shard
/// (at most `maxTokens` tokens), B windows a batch; the windows are split
/// across the ranks and the sum reduced. Where the shard (or maxTokens)
/// holds less than one window, one window of all of it, with a note.
double evaluate(Model &model, const float *params, const TokenShard &val, int64_t B, int64_t T,
                int64_t maxTokens, mmrec::dist::Comm &comm) {
  const int64_t avail = std::min<int64_t>(int64_t(val.tokens.size()), maxTokens);
  if (avail < T) {
    if (avail < 2)
      throw Error(val.path + ": fewer than 2 validation tokens (--eval-tokens " +
                  std::to_string(maxTokens) + ")");
    static bool noted = false;
    if (!noted && comm.rank() == 0)
      std::cerr << "mmrec-train: note: validation in one window of " << avail
                << " tokens (fewer than --seq-len " << T << " in " << val.path
                << " or --eval-tokens)\n";
    noted = true;
    T = avail;
  }
  int64_t windows = avail / T;
  const int64_t per = (windows + comm.size() - 1) / comm.size();
  const int64_t w0 = std::min(windows, per * comm.rank()), w1 = std::min(windows, w0 + per);
  double sum = 0;
  std::vector<int32_t> tok;
  for (int64_t w = w0; w < w1; w += B) {
    int64_t b = std::min(B, w1 - w);
    tok.assign(val.tokens.begin() + w * T, val.tokens.begin() + (w + b) * T);
    sum += model.forward(params, tok.data(), b, T) * double(b);
  }
  comm.allreduceSum(&sum, 1);
  return sum / double(windows);
}

/// A greedy continuation of the first 16 validation tokens, with the
/// recurrent state carried (Generator), as text.
std::string greedySample(KernelLibrary &lib, const ParamLayout &layout, const float *params,
                         const TokenShard &val, Tokenizer &tok, int64_t n) {
  Generator gen(lib, layout, 1);
  std::vector<int32_t> out(val.tokens.begin(),
                           val.tokens.begin() + std::min<size_t>(16, val.tokens.size()));
  const std::vector<float> *logits = nullptr;
  for (int32_t t : out)
    logits = &gen.step(params, &t);
  const size_t prompt = out.size();
  for (int64_t i = 0; i < n && logits; ++i) {
    int32_t next = int32_t(std::max_element(logits->begin(), logits->end()) - logits->begin());
    out.push_back(next);
    logits = &gen.step(params, &next);
  }
  std::string text = tok.decode(std::vector<int32_t>(out.begin(), out.begin() + long(prompt))) +
                     " ⟶ " + tok.decode(std::vector<int32_t>(out.begin() + long(prompt), out.end()));
  for (char &c : text)
    if (c == '\n')
      c = ' ';
  return text;
}

int run(Settings s, mmrec::dist::Comm &comm) {
  const int R = comm.rank(), W = comm.size();
  const bool lead = R == 0;
  validateSettings(s);
  if (s.out.empty())
    s.out = "runs/" + (s.model.empty() ? fs::path(s.kernels).stem().stem().string()
                                       : fs::path(s.model).stem().string());
  const bool gpu = s.device == "gpu" || (s.device == "auto" && mmrec::rt::gpuAvailable());
  if (gpu && !mmrec::rt::gpuAvailable())
    throw CLI::ValidationError("--device", "gpu: no usable CUDA device here");
  const std::string matmul = s.tf32 ? "tf32" : s.matmul != "auto" ? s.matmul : gpu ? "bf16" : "fp32";
  std::string manifest = s.kernels;
  if (manifest.empty()) {
    // Rank 0 compiles; the others wait for it. The level-0 kernels follow
    // the products' precision unless --level0 says otherwise; with bf16
    // products, the clustered row groups (measured faster than the
    // cooperative ones on an H100: docs/benchmarks/train-gpu.md, session 18),
    // which mmrec-compile replaces by the cooperative bf16 kernels, with a
    // note, where D is not a multiple of 256 up to 1024.
    const std::string level0 =
        s.level0 != "auto" ? s.level0 : matmul == "bf16" ? "clusters" : "fp32";
    if (lead)
      manifest = compileModel(s.model, s.out + "/kernels", gpu, level0);
    comm.barrier();
    manifest = s.out + "/kernels/" + fs::path(s.model).stem().string() + ".train.json";
  }
  const auto dev = gpu ? mmrec::rt::DeviceKind::gpu : mmrec::rt::DeviceKind::cpu;
  KernelLibrary lib(manifest, dev);
  const ModelConfig &c = lib.config();
  validateSettingsForModel(s, c.Tmax, c.name);
  ParamLayout layout(c);
  Model model(lib, layout);
  model.setRecompute(s.recompute);
  model.setKeepStates(!s.recomputeStates);
  model.setOverlapLevel0(!s.serialLevel0);
  model.setPinCopies(!s.unpinnedCopies);
  model.setParamCopy(!s.noParamCopy);
  bool recomputeNoted = false;
  model.setMatmul(matmul == "bf16"   ? Model::Matmul::bf16
                  : matmul == "tf32" ? Model::Matmul::tf32
                                     : Model::Matmul::fp32);
  TokenShard val = TokenShard::read(s.data + "/val.bin", uint32_t(c.V));
  // The tokenizer only for the samples: a data directory without one (or
  // with a broken one) turns them off with a note.
  std::unique_ptr<Tokenizer> tok;
  if (s.sampleTokens > 0) {
    try {
      tok = std::make_unique<Tokenizer>(s.data);
    } catch (const Error &e) {
      if (lead)
        std::cerr << "mmrec-train: note: no samples at evaluation (" << e.what() << ")\n";
      s.sampleTokens = 0;
    }
  }
  // ZeRO: the flat parameter array padded to W shards of S elements; rank R
  // owns [R·S, (R+1)·S): its gradients (reduce-scattered) and AdamW state.
  const int64_t P = layout.numel(), S = (P + W - 1) / W;
  const int64_t lo = std::min(P, R * S), hi = std::min(P, (R + 1) * S);
  std::vector<float> params;

  if (s.evalOnly) {
    if (s.checkpoint.empty())
      throw CLI::ValidationError("--checkpoint", "--eval-only needs --checkpoint");
    TrainerState st = loadCheckpoint(s.checkpoint, layout, c.name, params, nullptr);
    FBuf dp;
    dp.reset(dev, int64_t(params.size()));
    dp.upload(params.data(), int64_t(params.size()));
    double loss = evaluate(model, dp.data(), val, s.batch, s.seqLen, s.evalTokens, comm);
    if (lead)
      std::printf("eval %s step %lld: val_loss %.9g\n", s.checkpoint.c_str(),
                  static_cast<long long>(st.step), loss);
    return 0;
  }

  TokenShard train = TokenShard::read(s.data + "/train.bin", uint32_t(c.V));
  // How the ranks' gradients meet (mmrec/dist.h): NCCL on GPUs when it
  // loads, MPI otherwise; one rank alone needs nothing unless NCCL is asked.
  if (s.collectives == "nccl" && !gpu)
    throw CLI::ValidationError("--collectives", "nccl needs the GPU (--device gpu)");
  std::unique_ptr<mmrec::dist::GradSync> sync;
  std::string ncclWhy;
  if (gpu && (s.collectives == "nccl" ||
              (s.collectives == "auto" && W > 1 && mmrec::dist::ncclAvailable(&ncclWhy))))
    sync = mmrec::dist::ncclGradSync(comm);
  else if (W > 1)
    sync = gpu ? mmrec::dist::stagedGradSync(comm) : mmrec::dist::hostGradSync(comm);
  if (gpu && W > 1 && s.collectives == "auto" && !ncclWhy.empty() && lead)
    std::cerr << "mmrec-train: note: " << ncclWhy << "; the GPU ranks' collectives go through MPI "
              << "and host memory\n";
  // How much of the reduction overlaps backward: measured with --profile
  // (on a GPU it synchronizes) and always on CPU ranks (it costs nothing).
  if (sync)
    sync->setMeasure(s.profile || (!gpu && W > 1));
  AdamW opt(lib, layout, lo, hi, s.optimizerStates == "bf16");
  AdamWConfig oc;
  oc.beta1 = float(s.beta1);
  oc.beta2 = float(s.beta2);
  oc.weightDecay = float(s.weightDecay);
  const std::string ckptDir = s.out + "/checkpoints";
  // The loss gradient's scale (a power of two, at most 2^--loss-scale-log2;
  // --overflow-retries) and the finite steps since it last changed: trainer
  // state, checkpointed.
  const double maxLossScale = std::ldexp(1.0, int(s.lossScaleLog2));
  double lossScale = maxLossScale;
  int64_t finiteAtScale = 0;
  int64_t start = 0;
  std::string from = !s.checkpoint.empty() ? s.checkpoint : s.resume ? latestCheckpoint(ckptDir) : "";
  if (!from.empty()) {
    // Every rank reads the weights and its range of the optimizer state,
    // from the shards of a run on any number of ranks.
    TrainerState st = loadCheckpoint(from, layout, c.name, params, &opt);
    opt.pushState();
    opt.dropHostState();
    if (st.seed != s.seed && lead)
      std::cerr << "mmrec-train: note: the checkpoint was trained with --seed " << st.seed
                << "; continuing with its seed\n";
    s.seed = st.seed;
    start = st.step;
    if (st.extra.is_object() && st.extra.contains("loss_scale")) {
      // A power of two in [2^-100, 2^126] (what a run can reach), and a
      // count of steps.
      const json &ls = st.extra["loss_scale"];
      const json fa = st.extra.value("finite_at_loss_scale", json(uint64_t(0)));
      const double v = ls.is_number() ? ls.get<double>() : NAN;
      if (!(v >= 0x1p-100 && v <= 0x1p126) || std::ldexp(1.0, std::ilogb(v)) != v ||
          !fa.is_number_unsigned())
        throw Error(from + ": trainer.json: extra.loss_scale must be a power of two in "
                    "[2^-100, 2^126] and extra.finite_at_loss_scale a count, got " +
                    ls.dump() + " and " + fa.dump());
      lossScale = std::min(maxLossScale, v);
      finiteAtScale = fa.get<int64_t>();
    }
    if (lead)
      std::cerr << "mmrec-train: resumed from " << from << " at step " << start << " on " << W
                << " rank" << (W > 1 ? "s" : "") << "\n";
  } else {
    if (s.resume && lead)
      std::cerr << "mmrec-train: no checkpoint under " << ckptDir << ": starting afresh\n";
    params = initParams(c, layout, s.seed);
  }
  params.resize(size_t(S * W), 0.0f);
  // Where the model reads weights and writes gradients: the host arrays on
  // the CPU; device copies on the GPU (the host `params` then serve the
  // checkpoints and, with several ranks, the collectives).
  FBuf dParams, dGrads, dGshard;
  if (gpu) {
    dParams.reset(dev, S * W);
    dParams.upload(params.data(), S * W);
    dGrads.reset(dev, S * W);
    if (sync)
      dGshard.reset(dev, S);
  }
  float *Pw = gpu ? dParams.data() : params.data();
  std::ofstream metrics;
  if (lead) {
    fs::create_directories(s.out);
    metrics.open(s.out + "/metrics.jsonl", start > 0 ? std::ios::app : std::ios::trunc);
    std::printf("mmrec-train: %s, %lld parameters, %zu training / %zu validation tokens, "
                "%d rank%s (%s, %s, %s products) x B %lld x T %lld x accumulation %lld, "
                "%lld steps\n",
                c.name.c_str(), static_cast<long long>(P), train.tokens.size(), val.tokens.size(),
                W, W > 1 ? "s" : "", sync ? sync->name().c_str() : comm.backend().c_str(),
                gpu ? "GPU" : "CPU", matmul.c_str(), static_cast<long long>(s.batch),
                static_cast<long long>(s.seqLen), static_cast<long long>(s.gradAccum),
                static_cast<long long>(s.steps));
    std::fflush(stdout);
  }

  std::vector<float> grads(static_cast<size_t>(gpu ? 0 : S * W)),
      gshard(static_cast<size_t>(!gpu && sync ? S : 0));
  std::vector<int32_t> all;
  const double flopsTok = flopsPerToken(c);
  int badInARow = 0;
  double lastVal = NAN;
  // A multi-rank job whose peer stops answering ends within --dist-timeout.
  Watchdog dog(W > 1 || sync ? s.distTimeout : 0, R,
               sync ? std::function<std::string()>([&] { return sync->asyncError(); })
                    : std::function<std::string()>());
  auto save = [&](int64_t step, double loss) {
    // Every rank writes its optimizer shard; rank 0 the weights and the
    // manifest (trainer.json), last.
    dog.pet("the checkpoint of step " + std::to_string(step));
    opt.pullState();
    if (gpu)
      dParams.download(params.data(), P);
    TrainerState st;
    st.step = step;
    st.seed = s.seed;
    st.model = c.name;
    st.settings = toJson(s);
    st.settings["ranks"] = W;
    st.extra = {{"train_loss", loss}, {"val_loss", std::isnan(lastVal) ? json() : json(lastVal)},
                {"loss_scale", lossScale}, {"finite_at_loss_scale", finiteAtScale}};
    std::string path =
        saveCheckpoint(ckptDir, layout, params, &opt, st, int(s.keep), W > 1 ? &comm : nullptr);
    opt.dropHostState();
    if (lead)
      std::printf("checkpoint %s\n", path.c_str());
  };
  // --profile times the steps after the first one of the run (its lazy
  // module loads and product heuristics are warm-up) when there are two or
  // more, and no evaluation: its report is of training steps only.
  // Its wall time (and so "idle") starts there; checkpoints are not timed.
  const int64_t profiledFrom = start + (s.steps - start >= 2 ? 2 : 1);
  int64_t lastStep = start;
  for (int64_t step = start + 1; step <= s.steps; ++step) {
    lastStep = step;
    if (s.profile && step == profiledFrom)
      Profile::get().start();
    auto t0 = std::chrono::steady_clock::now();
    dog.pet("step " + std::to_string(step));
    float *Gw = gpu ? dGrads.data() : grads.data();
    float *Gs = sync ? (gpu ? dGshard.data() : gshard.data()) : Gw;
    double loss = 0, ss = 0;
    const int64_t bt = s.batch * s.seqLen;
    // A finite loss whose gradient overflows fp32 (a long sequence through
    // the level-0 recurrence at initialization can amplify it past 3.4e38):
    // the step runs again with the loss gradient scaled by 2^-24. Backward
    // is linear in it, so the gradients are the same ones times the scale
    // (exactly, a power of two, barring underflow); the update divides it
    // out below, and the clipped update is the unscaled run's.
    int retries = 0;
    for (;;) {
      if (gpu)
        dGrads.zero();
      else
        std::fill(grads.begin(), grads.end(), 0.0f);
      loss = 0;
      for (int64_t a = 0; a < s.gradAccum; ++a) {
        // The global batch of W·B windows; this rank takes its B of them.
        sampleBatch(train, W * s.batch, s.seqLen, s.seed, (step - 1) * s.gradAccum + a + 1, all);
        const int32_t *tok = all.data() + R * bt;
        // The loss comes from backward's head (lastLoss): the head runs once.
        model.forward(Pw, tok, s.batch, s.seqLen, /*loss=*/false);
        if (s.recompute && lead && !recomputeNoted) {
          // Known once forward has sized the activations.
          recomputeNoted = true;
          std::printf("recompute: %s\n",
                      model.keptStates()
                          ? "each layer's input and level-0 states kept"
                          : s.recomputeStates ? "each layer's input kept (level-0 states recomputed)"
                                              : "each layer's input kept (level-0 states recomputed: "
                                                "keeping them would not fit)");
          std::fflush(stdout);
        }
        // In the last micro-batch each layer's gradients are summed into
        // their owners' shards as soon as backward completes them.
        const bool last = a + 1 == s.gradAccum;
        if (sync && last) {
          sync->begin(Gw, Gs, S);
          model.setGradReadyHook([&](int64_t x, int64_t y) { sync->ready(x, y == P ? S * W : y); });
        }
        model.backward(Pw, Gw, float(lossScale) / float(s.gradAccum * W));
        model.setGradReadyHook({});
        loss += model.lastLoss() / double(s.gradAccum * W);
      }
      if (sync)
        sync->finish();
      comm.allreduceSum(&loss, 1);
      ss = opt.sumSquares(Gs, S);
      comm.allreduceSum(&ss, 1);
      // (Below 2^-100 the scaled loss gradient itself would underflow.)
      if (!std::isfinite(loss) || std::isfinite(ss) || retries >= s.overflowRetries ||
          std::ldexp(lossScale, -24) < 0x1p-100)
        break;
      ++retries;
      lossScale = std::ldexp(lossScale, -24);
      finiteAtScale = 0;
      if (lead)
        std::fprintf(stderr,
                     "mmrec-train: step %lld: the gradient overflowed fp32 (loss %.4f); running "
                     "the step again with the loss gradient scaled by 2^%d\n",
                     static_cast<long long>(step), loss, std::ilogb(lossScale));
    }
    // The norm of the unscaled gradient, in f64 (finite where fp32's is not).
    double gnorm = std::sqrt(ss) / lossScale;
    // Where the gradient norm sits (--grad-report): each tensor's Σg² over
    // the ranks' shards.
    std::string gradText, layerText;
    json gradTop = json::array(), gradLayers = json::array();
    if (s.gradReport > 0 && (step % s.logInterval == 0 || step == s.steps)) {
      const auto &ts = layout.tensors();
      std::vector<double> per(ts.size(), 0.0);
      for (size_t i = 0; i < ts.size(); ++i) {
        const int64_t a = std::max(ts[i].offset, lo), b = std::min(ts[i].offset + ts[i].numel, hi);
        if (a < b)
          per[i] = opt.sumSquares(Gs + (a - lo), b - a) / (lossScale * lossScale);
      }
      comm.allreduceSum(per.data(), int64_t(per.size()));
      std::vector<size_t> order(ts.size());
      for (size_t i = 0; i < order.size(); ++i)
        order[i] = i;
      const size_t top = std::min(order.size(), size_t(s.gradReport));
      // Non-finite norms first (as the largest), so that an overflow shows
      // where it is.
      auto key = [&](size_t i) { return std::isnan(per[i]) ? INFINITY : per[i]; };
      std::partial_sort(order.begin(), order.begin() + int64_t(top), order.end(),
                        [&](size_t x, size_t y) { return key(x) > key(y); });
      for (size_t k = 0; k < top; ++k) {
        char buf[160];
        std::snprintf(buf, sizeof buf, "%s%s %.3g", k ? ", " : "", ts[order[k]].name.c_str(),
                      std::sqrt(per[order[k]]));
        gradText += buf;
        gradTop.push_back({{"tensor", ts[order[k]].name}, {"norm", std::sqrt(per[order[k]])}});
      }
      // Each layer's norm (its tensors "layers.{l}.…"), bottom to top: where
      // along the depth the gradient grows (non-finite: null in the JSON).
      std::vector<double> layerSq(size_t(c.L), 0.0);
      for (size_t i = 0; i < ts.size(); ++i) {
        const std::string &n = ts[i].name;
        if (n.rfind("layers.", 0) == 0)
          layerSq[size_t(std::stoll(n.substr(7)))] += per[i];
      }
      for (int64_t l = 0; l < c.L; ++l) {
        char buf[48];
        const double v = std::sqrt(layerSq[size_t(l)]);
        std::snprintf(buf, sizeof buf, "%s%lld %.3g", l ? ", " : "", static_cast<long long>(l), v);
        layerText += buf;
        gradLayers.push_back(std::isfinite(v) ? json(v) : json(nullptr));
      }
    }
    double lr = lrAt(s, step);
    // The update's gradient (clipped) must fit fp32, the optimizer's state:
    // past 3.4e38 only clipping brings it back.
    const double applied = s.clip > 0 ? std::min(gnorm, s.clip) : gnorm;
    bool finite = std::isfinite(loss) && std::isfinite(gnorm) && applied < 0x1p127;
    if (finite) {
      badInARow = 0;
      // The gradients hold lossScale times the gradient: divided out here.
      const double clipScale = s.clip > 0 && gnorm > s.clip ? s.clip / (gnorm + 1e-6) : 1.0;
      float scale = float(clipScale / lossScale);
      opt.step(Pw, Gs, step, float(lr), scale, oc);
      if (lossScale < maxLossScale && retries == 0 && ++finiteAtScale >= 200) {
        lossScale = std::min(maxLossScale, std::ldexp(lossScale, 8));
        finiteAtScale = 0;
      }
      if (sync)
        sync->allgather(Pw, S);
    } else if (++badInARow >= 5) {
      if (lead)
        std::fprintf(stderr,
                     "mmrec-train: error: non-finite loss or gradient at 5 steps in a row (last: "
                     "step %lld); stopping. The last checkpoint under %s is intact.\n",
                     static_cast<long long>(step), ckptDir.c_str());
      return 3;
    } else if (lead) {
      std::fprintf(stderr, "mmrec-train: step %lld: non-finite loss %g or grad norm %g%s: skipped\n",
                   static_cast<long long>(step), loss, gnorm,
                   std::isfinite(gnorm) && !(applied < 0x1p127)
                       ? " (beyond fp32 for the optimizer; --clip bounds it)"
                       : retries > 0 ? " (also with the loss gradient scaled)" : "");
    }
    double ms = std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
    double tokens = double(W * s.batch * s.seqLen * s.gradAccum);
    // MFU: the exact FLOPs of the step over the device's peak (--peak-tflops;
    // on the GPU the dense bf16 peak of an H100/H200 by default).
    const double peak = s.peakTflops > 0 ? s.peakTflops : gpu ? 989.4 : 0.0;
    const double mfu = peak > 0 ? flopsTok * tokens / (ms * 1e-3) / (peak * 1e12) : 0.0;
    char mfuText[32] = "";
    if (peak > 0)
      std::snprintf(mfuText, sizeof mfuText, " | MFU %.2f%%", 100 * mfu);
    // The reductions done when backward ended, of all (overlap).
    std::string commText;
    const bool measured = sync && sync->lastOverlap().buckets > 0;
    if (measured) {
      const auto &o = sync->lastOverlap();
      char buf[96];
      std::snprintf(buf, sizeof buf, " | comm %d/%d reduced during backward, then %.1f ms",
                    o.doneAtBackwardEnd, o.buckets, o.waitMs);
      commText = buf;
    }
    if (lead && (step % s.logInterval == 0 || step == s.steps))
      std::printf("step %6lld | loss %.4f | gnorm %.3f | lr %.2e | %8.1f ms | %8.0f tok/s | "
                  "%6.2f GFLOP/s%s | peak %.0f MiB%s%s%s\n",
                  static_cast<long long>(step), loss, gnorm, lr, ms, tokens / ms * 1e3,
                  flopsTok * tokens / ms * 1e-6, mfuText, peakRssMiB(),
                  gpu ? (" | GPU " + std::to_string(int64_t(gpuUsedMiB())) + " MiB").c_str() : "",
                  commText.c_str(), finite ? "" : " | SKIPPED");
    json rec = {{"step", step},   {"loss", loss},       {"grad_norm", gnorm},
                {"lr", lr},       {"ms", ms},           {"tokens_per_s", tokens / ms * 1e3},
                {"gflops", flopsTok * tokens / ms * 1e-6},
                {"skipped", !finite}, {"peak_rss_mib", peakRssMiB()}};
    if (lossScale != 1 || retries > 0) {
      rec["loss_scale"] = lossScale;
      rec["overflow_retries"] = retries;
    }
    if (peak > 0)
      rec["mfu"] = mfu;
    if (gpu)
      rec["gpu_used_mib"] = gpuUsedMiB();
    if (!gradTop.empty()) {
      rec["grad_norms_top"] = gradTop;
      rec["grad_norms_layers"] = gradLayers;
      if (lead)
        std::printf("grads  %6lld | largest norms: %s | by layer: %s\n",
                    static_cast<long long>(step), gradText.c_str(), layerText.c_str());
    }
    if (measured)
      rec["comm"] = {{"reductions", sync->lastOverlap().buckets},
                     {"done_at_backward_end", sync->lastOverlap().doneAtBackwardEnd},
                     {"wait_ms", sync->lastOverlap().waitMs}};
    bool evalNow = step % s.evalInterval == 0 || step == s.steps;
    if (evalNow) {
      dog.pet("the evaluation of step " + std::to_string(step));
      Profile::get().pause(); // no-ops unless --profile is timing
      lastVal = evaluate(model, Pw, val, s.batch, s.seqLen, s.evalTokens, comm);
      rec["val_loss"] = lastVal;
      if (lead)
        std::printf("eval step %6lld | val_loss %.4f\n", static_cast<long long>(step), lastVal);
      if (lead && s.sampleTokens > 0) {
        std::string text = greedySample(lib, layout, Pw, val, *tok, s.sampleTokens);
        std::printf("sample step %6lld | %s\n", static_cast<long long>(step), text.c_str());
        rec["sample"] = text;
      }
      Profile::get().resume();
    }
    if (lead)
      metrics << rec.dump() << "\n" << std::flush;
    std::fflush(stdout);
    bool reached = evalNow && s.targetLoss > 0 && lastVal < s.targetLoss;
    bool stopped = s.stopAfter > 0 && step - start >= s.stopAfter;
    bool done = step == s.steps || reached || stopped;
    if (s.ckptInterval > 0 && (step % s.ckptInterval == 0 || done)) {
      Profile::get().pause();
      save(step, loss);
      Profile::get().resume();
    }
    if (reached && step != s.steps) {
      if (lead)
        std::printf("mmrec-train: validation loss %.4f is below --target-loss %.4f at step %lld\n",
                    lastVal, s.targetLoss, static_cast<long long>(step));
      break;
    }
    if (stopped && step != s.steps) {
      if (lead)
        std::printf("mmrec-train: stopping after %lld steps (--stop-after); --resume continues\n",
                    static_cast<long long>(s.stopAfter));
      break;
    }
  }
  if (lead && !std::isnan(lastVal))
    std::printf("final val_loss %.4f\n", lastVal);
  if (lead && s.profile)
    std::printf("time per kernel over steps %lld..%lld (--profile; the run's first step and "
                "evaluations are not timed):\n%s",
                static_cast<long long>(profiledFrom), static_cast<long long>(lastStep),
                Profile::get().report().c_str());
  return 0;
}

} // namespace

int main(int argc, char **argv) {
  CLI::App app{"mmrec-train: train the MM-Rec model from the kernels mmrec-compile generates"};
  Settings s;
  addSettingsOptions(app, s);
  CLI11_PARSE(app, argc, argv);
  mmrec::dist::Comm &comm = mmrec::dist::Comm::world();
  const bool many = comm.size() > 1;
  try {
    if (!many)
      for (const char *v : {"OMPI_COMM_WORLD_SIZE", "PMI_SIZE"})
        if (const char *n = std::getenv(v); n && std::atoi(n) > 1)
          throw Error(std::string("launched as one of ") + n + " ranks, but this mmrec-train "
                      "was built without MPI (install libopenmpi-dev and rebuild)");
    return run(s, comm);
  } catch (const CLI::Error &e) {
    int rc = app.exit(e);
    if (many)
      comm.abort(rc == 0 ? 2 : rc);
    return rc;
  } catch (const std::exception &e) {
    std::cerr << "mmrec-train: error" << (many ? " (rank " + std::to_string(comm.rank()) + ")" : "")
              << ": " << e.what() << "\n";
    // A failing rank ends the whole job: the others must not wait for it.
    if (many)
      comm.abort(1);
    return 1;
  }
}
