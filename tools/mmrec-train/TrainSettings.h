//===- TrainSettings.h - mmrec-train's settings and their checks -*- C++ -*-===//
//
// The options of mmrec-train (command line or --config FILE, INI/TOML) and
// the checks that need no model: what the tool's main and the fuzz target
// test/fuzz/fuzz_config.cpp share. A bad setting throws
// CLI::ValidationError naming the option.
//
//===----------------------------------------------------------------------===//
#ifndef MMREC_TOOLS_TRAIN_SETTINGS_H
#define MMREC_TOOLS_TRAIN_SETTINGS_H

#include <CLI/CLI.hpp>

#include <cmath>
#include <cstdint>
#include <utility>
#include <string>

namespace mmrec::train {

struct Settings {
  std::string model, kernels, data, out, checkpoint, device = "auto", collectives = "auto",
      optimizerStates = "fp32", matmul = "auto", level0 = "auto";
  double distTimeout = 600; // seconds without progress before a multi-rank job ends (0: never)
  int64_t steps = 600, batch = 16, seqLen = 128, warmup = 50, gradAccum = 1;
  double lr = 3e-3, minLr = 3e-4, weightDecay = 0.1, beta1 = 0.9, beta2 = 0.95, clip = 1.0;
  int64_t evalInterval = 100, evalTokens = 1 << 16, ckptInterval = 200, keep = 3, logInterval = 1;
  uint64_t seed = 1;
  bool resume = false, evalOnly = false, recompute = false, tf32 = false, profile = false;
  bool recomputeStates = false;
  bool serialLevel0 = false; // level 0 on the default stream, not beside levels 1 and 2
  bool unpinnedCopies = false; // backward rounds forward's activations again (Model::setPinCopies)
  bool noParamCopy = false; // weights rounded at their products (Model::setParamCopy)
  double targetLoss = 0; // > 0: stop once the validation loss is below it
  double peakTflops = 0;  // the device's peak for MFU (0: 989.4 on a GPU, none on the CPU)
  int64_t stopAfter = 0;  // > 0: stop (with a checkpoint) after this many steps of this run
  int64_t sampleTokens = 64; // tokens of the greedy sample printed at each evaluation (0: none)
  int64_t gradReport = 0;    // > 0: log the tensors with the largest gradient norms
  int64_t overflowRetries = 3; // a step whose gradient overflows runs again at 2^-24 of the scale
  int64_t lossScaleLog2 = 0;   // the loss gradient's initial scale, 2^this
};

/// Limits far above any real run that keep the trainer's arithmetic
/// (step × accumulation counters, ranks × tokens per step) inside int64.
constexpr int64_t kMaxSteps = int64_t(1) << 40;
constexpr int64_t kMaxGradAccum = int64_t(1) << 20;
constexpr int64_t kMaxTokensPerStep = int64_t(1) << 40; // batch × seq-len × grad-accum, per rank
constexpr int64_t kMaxKeep = 1 << 20;

/// Declares every option of mmrec-train on `app`, writing into `s`.
inline void addSettingsOptions(CLI::App &app, Settings &s) {
  app.set_config("--config", "", "Read settings from an INI/TOML file (keys are the long options)");
  app.add_option("--model", s.model, "Model file (.mlir); compiled with mmrec-compile");
  app.add_option("--kernels", s.kernels, "A training manifest (NAME.train.json) instead of --model");
  app.add_option("--device", s.device, "auto (the GPU when there is one), cpu or gpu");
  app.add_option("--optimizer-states", s.optimizerStates,
                 "AdamW's m and v in fp32 (default) or bf16 (8 bytes of weights and state a "
                 "parameter: the 7B model on an 80 GB GPU)");
  app.add_option("--collectives", s.collectives,
                 "Data parallel: auto (NCCL for GPU ranks when libnccl.so.2 loads, MPI "
                 "otherwise), nccl (also with one rank) or mpi");
  app.add_option("--dist-timeout", s.distTimeout,
                 "Seconds a rank may wait for the others (a step, an evaluation, a checkpoint) "
                 "before the whole job ends with an error (0: wait forever)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--data", s.data, "Directory with train.bin and val.bin (mmrec-data)")->required();
  app.add_option("--out", s.out, "Run directory (default runs/<model>)");
  app.add_option("--steps", s.steps, "Optimizer steps")->check(CLI::PositiveNumber);
  app.add_option("--batch", s.batch, "Sequences per micro-batch")->check(CLI::PositiveNumber);
  app.add_option("--seq-len", s.seqLen, "Tokens per sequence (≤ max_seq_len)");
  app.add_option("--grad-accum", s.gradAccum, "Micro-batches per step")->check(CLI::PositiveNumber);
  app.add_option("--lr", s.lr, "Peak learning rate")->check(CLI::Range(0.0, 10.0));
  app.add_option("--min-lr", s.minLr, "Final learning rate of the cosine decay")
      ->check(CLI::Range(0.0, 10.0));
  app.add_option("--warmup", s.warmup, "Linear warmup steps")->check(CLI::NonNegativeNumber);
  app.add_option("--weight-decay", s.weightDecay, "AdamW weight decay (matrices, S)")
      ->check(CLI::Range(0.0, 1.0));
  app.add_option("--beta1", s.beta1, "AdamW β1")->check(CLI::Range(0.0, 0.999999));
  app.add_option("--beta2", s.beta2, "AdamW β2")->check(CLI::Range(0.0, 0.999999));
  app.add_option("--clip", s.clip, "Global gradient-norm clip (0: off)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--eval-interval", s.evalInterval, "Steps between validations")
      ->check(CLI::PositiveNumber);
  app.add_option("--eval-tokens", s.evalTokens, "Validation tokens per evaluation")
      ->check(CLI::PositiveNumber);
  app.add_option("--ckpt-interval", s.ckptInterval,
                 "Steps between checkpoints (also one at the end; 0: none at all)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--keep", s.keep, "Checkpoints to keep")->check(CLI::PositiveNumber);
  app.add_option("--log-interval", s.logInterval, "Steps between log lines")
      ->check(CLI::PositiveNumber);
  app.add_option("--seed", s.seed, "Seed of the initialization and the data order");
  app.add_option("--target-loss", s.targetLoss,
                 "Stop once the validation loss falls below this (0: run all steps)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--stop-after", s.stopAfter,
                 "Stop after this many steps of this run, as if interrupted (0: never)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--matmul", s.matmul,
                 "Matrix products: auto (bf16 on a GPU, fp32 on the CPU), fp32, tf32 (TF32 "
                 "tensor cores on a GPU) or bf16 (bf16 operands, fp32 accumulation and results; "
                 "weights, activations and gradients stay fp32)");
  app.add_flag("--tf32", s.tf32, "The same as --matmul tf32");
  app.add_option("--level0", s.level0,
                 "GPU, when mmrec-train compiles --model: how its level-0 kernels multiply by "
                 "W_g: auto (clusters when the products are bf16, as by default on a GPU, "
                 "falling back to bf16 where the model's width does not allow them; fp32 "
                 "otherwise), fp32, bf16 (tensor cores: mmrec-compile --train-gated-bf16) or "
                 "clusters (bf16, each row group of 8 one thread-block cluster: "
                 "--train-gated-cluster)");
  app.add_option("--sample-tokens", s.sampleTokens,
                 "Tokens of the greedy sample printed at each evaluation (0: none)")
      ->check(CLI::Range(int64_t(0), int64_t(4096)));
  app.add_option("--peak-tflops", s.peakTflops,
                 "Peak TFLOP/s for the MFU column (default: 989.4, H100/H200 dense bf16, on a "
                 "GPU; none on the CPU)")
      ->check(CLI::NonNegativeNumber);
  app.add_option("--grad-report", s.gradReport,
                 "Log the N tensors with the largest gradient norms at each log line (0: off)")
      ->check(CLI::Range(int64_t(0), int64_t(1) << 20));
  app.add_option("--overflow-retries", s.overflowRetries,
                 "A step whose loss is finite but whose gradient overflows fp32 runs again with "
                 "the loss gradient scaled by 2^-24 (exact: backward is linear in it), at most "
                 "this many times a step, before it is skipped; the scale stays for later steps "
                 "and grows back by 2^8 every 200 finite steps (0: skip such a step at once)")
      ->check(CLI::Range(int64_t(0), int64_t(4)));
  app.add_option("--loss-scale-log2", s.lossScaleLog2,
                 "The loss gradient's initial scale (and the most it grows back to) is 2^this; "
                 "gradients are divided by it before the update, so only overflow (too high) "
                 "or underflow (too low) changes the result")
      ->check(CLI::Range(int64_t(-64), int64_t(126)));
  app.add_flag("--profile", s.profile,
               "Time every kernel and product (synchronizing after each) and print the "
               "breakdown at the end");
  app.add_flag("--recompute", s.recompute,
               "Keep only each layer's input and its level-0 states h (where they fit) and "
               "recompute its other activations in backward");
  app.add_flag("--recompute-states", s.recomputeStates,
               "With --recompute, recompute the level-0 states too (runs the sequential "
               "recurrence again; saves 4·B·T·D bytes a layer)");
  app.add_flag("--serial-level0", s.serialLevel0,
               "On the GPU, run the level-0 recurrence's kernels on the default stream in "
               "program order instead of beside the memory hierarchy's work (the same results up to "
               "the noise of atomic sums)");
  app.add_flag("--unpinned-copies", s.unpinnedCopies,
               "With --matmul bf16, do not keep each layer's bf16 copies of the activations its "
               "backward's products take (u, u2, o, g, q, k, v and the slot addresses): less memory, and "
               "backward rounds them again");
  app.add_flag("--no-param-copy", s.noParamCopy,
               "With --matmul bf16, do not round all the parameters to one bf16 copy a forward "
               "(2 bytes a parameter, made where it fits): each weight is rounded at its products "
               "instead, two or three times a step");
  app.add_flag("--resume", s.resume, "Continue from the newest checkpoint under OUT/checkpoints");
  app.add_option("--checkpoint", s.checkpoint, "A checkpoint to evaluate or to resume from");
  app.add_flag("--eval-only", s.evalOnly, "Print the validation loss of --checkpoint and exit");
}

/// The checks of the parsed settings that need no model. CLI11's range
/// checks let NaN through (every comparison with NaN is false), and sizes
/// are bounded so that the trainer's products (steps × accumulation, ranks ×
/// tokens per step for up to 2^16 ranks) stay inside int64.
inline void validateSettings(const Settings &s) {
  if (s.model.empty() && s.kernels.empty())
    throw CLI::ValidationError("--model", "one of --model or --kernels is required");
  const std::pair<const char *, double> reals[] = {
      {"--lr", s.lr},       {"--min-lr", s.minLr}, {"--weight-decay", s.weightDecay},
      {"--beta1", s.beta1}, {"--beta2", s.beta2},  {"--clip", s.clip},
      {"--target-loss", s.targetLoss}, {"--peak-tflops", s.peakTflops},
      {"--dist-timeout", s.distTimeout}};
  for (const auto &[name, v] : reals)
    if (!std::isfinite(v))
      throw CLI::ValidationError(name, std::string("must be a finite number, got ") +
                                           (std::isnan(v) ? "nan" : v > 0 ? "inf" : "-inf"));
  if (s.device != "auto" && s.device != "cpu" && s.device != "gpu")
    throw CLI::ValidationError("--device", "must be auto, cpu or gpu, got '" + s.device + "'");
  if (s.optimizerStates != "fp32" && s.optimizerStates != "bf16")
    throw CLI::ValidationError("--optimizer-states",
                               "must be fp32 or bf16, got '" + s.optimizerStates + "'");
  if (s.matmul != "auto" && s.matmul != "fp32" && s.matmul != "tf32" && s.matmul != "bf16")
    throw CLI::ValidationError("--matmul",
                               "must be auto, fp32, tf32 or bf16, got '" + s.matmul + "'");
  if (s.tf32 && s.matmul != "auto" && s.matmul != "tf32")
    throw CLI::ValidationError("--tf32", "contradicts --matmul " + s.matmul);
  if (s.level0 != "auto" && s.level0 != "fp32" && s.level0 != "bf16" && s.level0 != "clusters")
    throw CLI::ValidationError("--level0",
                               "must be auto, fp32, bf16 or clusters, got '" + s.level0 + "'");
  if (s.level0 != "auto" && !s.kernels.empty())
    throw CLI::ValidationError("--level0",
                               "applies when mmrec-train compiles --model; the library of "
                               "--kernels is compiled already (mmrec-compile "
                               "--train-gated-bf16 or --train-gated-cluster)");
  if (s.collectives != "auto" && s.collectives != "nccl" && s.collectives != "mpi")
    throw CLI::ValidationError("--collectives",
                               "must be auto, nccl or mpi, got '" + s.collectives + "'");
  if (s.minLr > s.lr)
    throw CLI::ValidationError("--min-lr", "must not exceed --lr");
  if (s.steps > kMaxSteps)
    throw CLI::ValidationError("--steps", "must be at most 2^40, got " + std::to_string(s.steps));
  if (s.warmup > s.steps)
    throw CLI::ValidationError("--warmup", "must not exceed --steps");
  if (s.gradAccum > kMaxGradAccum)
    throw CLI::ValidationError("--grad-accum", "must be at most 2^20, got " +
                                                   std::to_string(s.gradAccum));
  if (s.keep > kMaxKeep)
    throw CLI::ValidationError("--keep", "must be at most 2^20, got " + std::to_string(s.keep));
  // Tokens per step and rank; --seq-len itself is checked against the model.
  if (s.batch >= 1 && s.seqLen >= 1 &&
      (s.batch > kMaxTokensPerStep / s.seqLen ||
       s.gradAccum > kMaxTokensPerStep / (s.batch * s.seqLen)))
    throw CLI::ValidationError("--batch", "--batch × --seq-len × --grad-accum (" +
                                              std::to_string(s.batch) + " × " +
                                              std::to_string(s.seqLen) + " × " +
                                              std::to_string(s.gradAccum) +
                                              ") must be at most 2^40 tokens per step");
}

/// The checks against the model's configuration.
inline void validateSettingsForModel(const Settings &s, int64_t Tmax, const std::string &model) {
  if (s.seqLen < 2 || s.seqLen > Tmax)
    throw CLI::ValidationError("--seq-len", "must be in [2, " + std::to_string(Tmax) +
                                                "] (max_seq_len of " + model + "), got " +
                                                std::to_string(s.seqLen));
}

} // namespace mmrec::train

#endif
