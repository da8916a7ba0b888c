//===- train_io.h - token shards, safetensors checkpoints -------*- C++ -*-===//
//
// Token shards: a 32-byte header then the tokens as little-endian uint16:
//   bytes 0–7   magic "MMRECTOK"
//   8–11        version (uint32, 1)
//   12–15       vocabulary size (uint32)
//   16–23       token count (uint64)
//   24–27       bytes per token (uint32, 2)
//   28–31       CRC-32 of the token bytes (uint32)
// A shard is refused (Error naming the file and the field) when the magic,
// version, size, checksum or any token (≥ vocabulary) is wrong.
//
// Checkpoints: a directory `step-NNNNNNNN/` holding
//   model.safetensors     the weights, fp32, by MMREC_SPEC names (`embed`,
//                         `layers.{l}.W_q`, …) — readable by PyTorch's
//                         safetensors;
//   optimizer.safetensors AdamW's m and v (`m.<name>`, `v.<name>`), or, from
//                         a run on W > 1 ranks, one file per rank
//                         `optimizer-RRRRR-of-WWWWW.safetensors` holding
//                         the flat slice [lo, hi) of m and v that the rank
//                         owns (tensors `m`, `v`), written by that rank;
//   trainer.json          step, seed, data position, model name, the
//                         CRC-32 of each file, the optimizer shards and
//                         their ranges, the training settings; written by
//                         rank 0 last.
// Written into `step-NNNNNNNN.tmp/`, every file fsynced, then renamed into
// place and the parent directory fsynced: a crash leaves either the old set
// of checkpoints or the new one, never a half-written checkpoint in place.
//
//===----------------------------------------------------------------------===//

#ifndef MMREC_TRAIN_IO_H
#define MMREC_TRAIN_IO_H

#include "mmrec/dist.h"
#include "mmrec/train.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <vector>

namespace mmrec::train {

uint32_t crc32(const void *data, size_t bytes);

struct TokenShard {
  std::string path;
  uint32_t vocab = 0;
  std::vector<uint16_t> tokens;
  /// Reads and validates a shard; `maxVocab` > 0 also bounds the header's
  /// vocabulary (the model's V).
  static TokenShard read(const std::string &path, uint32_t maxVocab = 0);
  static void write(const std::string &path, uint32_t vocab, const std::vector<uint16_t> &tokens);
};

/// Draws B windows of T tokens from `shard` for training step `step`
/// (1-based): the window starts come from a generator seeded by (seed,
/// step), so the data position is just the step and a resumed run draws
/// exactly the batches the uninterrupted one would have.
void sampleBatch(const TokenShard &shard, int64_t B, int64_t T, uint64_t seed, int64_t step,
                 std::vector<int32_t> &out);

/// A named fp32 tensor to write.
struct NamedTensor {
  std::string name;
  std::vector<int64_t> shape;
  const float *data;
};

/// Writes a safetensors file (F32 tensors, in the order given, `metadata`
/// as string pairs) to `path`, fsynced.
void writeSafetensors(const std::string &path, const std::vector<NamedTensor> &tensors,
                      const std::map<std::string, std::string> &metadata = {});

/// Reads a safetensors file of F32 tensors: every tensor of `layout`
/// (prefixed by `prefix`) must be present with its shape; they are copied
/// into `out` at the layout's offsets. Throws Error naming the file and the
/// tensor on any mismatch, truncation or malformed header.
void readSafetensors(const std::string &path, const ParamLayout &layout, const std::string &prefix,
                     std::vector<float> &out);

struct TrainerState {
  int64_t step = 0;
  uint64_t seed = 0;
  std::string model;
  nlohmann::json settings; // the run's settings, for the record
  nlohmann::json extra;    // anything else (last losses, …)
};

/// Writes checkpoint `dir/step-NNNNNNNN` atomically and keeps the newest
/// `keep` checkpoints (older ones are removed after the new one is in
/// place). Returns the checkpoint's path.
///
/// With `comm` of W > 1 ranks this is collective: every rank calls it with
/// its optimizer shard (`opt` covering [lo, hi)) and writes its own file
/// into the shared temporary directory; rank 0 writes the weights and, once
/// every shard is fsynced, trainer.json, then renames the directory (the
/// directory must be on a file system every rank sees). Otherwise `opt` must
/// be whole.
std::string saveCheckpoint(const std::string &dir, const ParamLayout &layout,
                           const std::vector<float> &params, const AdamW *opt,
                           const TrainerState &state, int keep, dist::Comm *comm = nullptr);

/// The newest complete checkpoint under `dir` ("" if none).
std::string latestCheckpoint(const std::string &dir);

/// Loads a checkpoint written by saveCheckpoint: verifies the CRCs (of the
/// files it reads) and the model name, then fills params and, when `opt` is
/// given, its range [lo, hi) of m and v — from the whole optimizer file or
/// from the shards of a run on any number of ranks. Throws Error naming the
/// file and the problem.
TrainerState loadCheckpoint(const std::string &path, const ParamLayout &layout,
                            const std::string &modelName, std::vector<float> &params,
                            AdamW *opt);

/// The optimizer part of loadCheckpoint: m and v of the flat range [lo, hi)
/// (resized to hi − lo) from checkpoint `path` (trainer.json's checksums,
/// the whole optimizer file or the shards of any rank count).
void loadOptimizerState(const std::string &path, const ParamLayout &layout, int64_t lo,
                        int64_t hi, std::vector<float> &m, std::vector<float> &v);

} // namespace mmrec::train

#endif // MMREC_TRAIN_IO_H
