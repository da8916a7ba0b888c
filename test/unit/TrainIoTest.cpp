//===- TrainIoTest.cpp - token shards, safetensors, checkpoints -----------===//
//
// Round trips, and refusal of every kind of damage with a message that names
// the file and the problem: truncation, bad magic or version, checksum
// mismatches, out-of-vocabulary tokens, missing tensors, wrong shapes, a
// checkpoint of another model. A checkpoint write interrupted before its
// rename leaves the previous checkpoint the newest complete one.
//
//===----------------------------------------------------------------------===//

#include "mmrec/train_io.h"

#include <gtest/gtest.h>

#include <condition_variable>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <random>
#include <thread>

using namespace mmrec::train;
namespace fs = std::filesystem;

namespace {

std::string manifest() { return std::string(MMREC_TRAIN_TEST_DIR) + "/mmrec-test-dense.train.json"; }

fs::path tempDir(const std::string &name) {
  fs::path p = fs::temp_directory_path() /
               ("mmrec-io-" + name + "-" + std::to_string(std::random_device{}()));
  fs::remove_all(p);
  fs::create_directories(p);
  return p;
}

std::string slurp(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  return std::string(std::istreambuf_iterator<char>(in), {});
}
void spit(const fs::path &p, const std::string &s) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << s;
}

/// Expects `f` to throw an Error whose message contains `what`.
template <class F> void expectError(F f, const std::string &what) {
  try {
    f();
    ADD_FAILURE() << "no error; expected one mentioning '" << what << "'";
  } catch (const Error &e) {
    EXPECT_NE(std::string(e.what()).find(what), std::string::npos) << e.what();
  }
}

TEST(TrainIo, ShardRoundTripAndDamage) {
  fs::path d = tempDir("shard");
  std::vector<uint16_t> tok = {1, 2, 3, 200, 255, 0, 7};
  std::string p = (d / "a.bin").string();
  TokenShard::write(p, 256, tok);
  TokenShard s = TokenShard::read(p, 256);
  EXPECT_EQ(s.tokens, tok);
  EXPECT_EQ(s.vocab, 256u);
  expectError([&] { TokenShard::read(p, 100); }, "exceeds the model's 100");
  std::string bytes = slurp(p);
  spit(d / "trunc.bin", bytes.substr(0, bytes.size() - 1));
  expectError([&] { TokenShard::read((d / "trunc.bin").string()); }, "truncated");
  spit(d / "short.bin", bytes.substr(0, 10));
  expectError([&] { TokenShard::read((d / "short.bin").string()); }, "header");
  std::string flipped = bytes;
  flipped[34] ^= 1;
  spit(d / "flip.bin", flipped);
  expectError([&] { TokenShard::read((d / "flip.bin").string()); }, "checksum");
  std::string magic = bytes;
  magic[0] = 'X';
  spit(d / "magic.bin", magic);
  expectError([&] { TokenShard::read((d / "magic.bin").string()); }, "magic");
  std::string version = bytes;
  version[8] = 9;
  spit(d / "version.bin", version);
  expectError([&] { TokenShard::read((d / "version.bin").string()); }, "version 9");
  TokenShard::write((d / "oov.bin").string(), 100, {1, 150});
  expectError([&] { TokenShard::read((d / "oov.bin").string()); }, "token 150 at 1");
  expectError([&] { TokenShard::read((d / "none.bin").string()); }, "cannot open");
  fs::remove_all(d);
}

TEST(TrainIo, BatchesAreReproducibleAndInRange) {
  TokenShard s;
  s.path = "mem";
  for (int i = 0; i < 1000; ++i)
    s.tokens.push_back(uint16_t(i % 251));
  std::vector<int32_t> a, b, c;
  sampleBatch(s, 4, 16, 7, 3, a);
  sampleBatch(s, 4, 16, 7, 3, b);
  sampleBatch(s, 4, 16, 7, 4, c);
  EXPECT_EQ(a, b);
  EXPECT_NE(a, c);
  for (int64_t w = 0; w < 4; ++w)
    for (int64_t t = 1; t < 16; ++t)
      EXPECT_EQ(a[size_t(w * 16 + t)], (a[size_t(w * 16 + t - 1)] + 1) % 251);
  expectError([&] { sampleBatch(s, 1, 2000, 1, 1, a); }, "fewer than one sequence");
}

TEST(TrainIo, SafetensorsRoundTripAndDamage) {
  KernelLibrary lib(manifest());
  ParamLayout layout(lib.config());
  std::vector<float> p = initParams(lib.config(), layout, 5);
  fs::path d = tempDir("st");
  std::vector<NamedTensor> w;
  for (const ParamInfo &t : layout.tensors())
    w.push_back({t.name, t.shape, p.data() + t.offset});
  std::string path = (d / "m.safetensors").string();
  writeSafetensors(path, w, {{"format", "pt"}});
  std::vector<float> q;
  readSafetensors(path, layout, "", q);
  EXPECT_EQ(p, q);
  // The header is the safetensors format: 8-byte length, JSON, 8-aligned.
  std::string bytes = slurp(path);
  uint64_t hl;
  std::memcpy(&hl, bytes.data(), 8);
  EXPECT_EQ(hl % 8, 0u);
  auto header = nlohmann::json::parse(bytes.substr(8, hl));
  EXPECT_EQ(header["layers.1.W_q"]["shape"], nlohmann::json({24, 24}));
  EXPECT_EQ(header["__metadata__"]["format"], "pt");
  spit(d / "trunc.safetensors", bytes.substr(0, bytes.size() - 4));
  expectError([&] { readSafetensors((d / "trunc.safetensors").string(), layout, "", q); },
              "final_norm");
  spit(d / "hdr.safetensors", bytes.substr(0, 4));
  expectError([&] { readSafetensors((d / "hdr.safetensors").string(), layout, "", q); },
              "shorter than");
  std::string bad = bytes;
  bad[8] = '!';
  spit(d / "json.safetensors", bad);
  expectError([&] { readSafetensors((d / "json.safetensors").string(), layout, "", q); },
              "malformed header");
  w.pop_back();
  writeSafetensors((d / "missing.safetensors").string(), w);
  expectError([&] { readSafetensors((d / "missing.safetensors").string(), layout, "", q); },
              "tensor 'final_norm' is missing");
  std::vector<int64_t> wrong = {2, 2};
  w[1].shape = wrong;
  writeSafetensors((d / "shape.safetensors").string(), w);
  expectError([&] { readSafetensors((d / "shape.safetensors").string(), layout, "", q); },
              "has shape [2,2], the model needs [24]");
  fs::remove_all(d);
}

TEST(TrainIo, CheckpointsAtomicKeepLastAndRefuseDamage) {
  KernelLibrary lib(manifest());
  ParamLayout layout(lib.config());
  AdamW opt(lib, layout);
  std::vector<float> p = initParams(lib.config(), layout, 9);
  for (size_t i = 0; i < opt.m.size(); ++i) {
    opt.m[i] = float(i) * 1e-3f;
    opt.v[i] = float(i) * 2e-3f;
  }
  fs::path d = tempDir("ckpt");
  TrainerState st;
  st.seed = 42;
  st.model = lib.config().name;
  for (int64_t step : {10, 20, 30, 40}) {
    st.step = step;
    p[0] = float(step);
    saveCheckpoint(d.string(), layout, p, &opt, st, 2);
  }
  // keep = 2: steps 30 and 40 remain.
  EXPECT_FALSE(fs::exists(d / "step-00000020"));
  EXPECT_TRUE(fs::exists(d / "step-00000030"));
  EXPECT_EQ(latestCheckpoint(d.string()), (d / "step-00000040").string());
  // A write cut before its rename (a leftover .tmp) is ignored.
  fs::create_directories(d / "step-00000050.tmp");
  spit(d / "step-00000050.tmp" / "model.safetensors", "partial");
  EXPECT_EQ(latestCheckpoint(d.string()), (d / "step-00000040").string());

  std::vector<float> q;
  AdamW opt2(lib, layout);
  TrainerState back = loadCheckpoint(latestCheckpoint(d.string()), layout, st.model, q, &opt2);
  EXPECT_EQ(back.step, 40);
  EXPECT_EQ(back.seed, 42u);
  EXPECT_EQ(q, p);
  EXPECT_EQ(opt2.m, opt.m);
  EXPECT_EQ(opt2.v, opt.v);

  expectError([&] { loadCheckpoint((d / "step-00000040").string(), layout, "other", q, nullptr); },
              "not 'other'");
  fs::path model = d / "step-00000040" / "model.safetensors";
  std::string bytes = slurp(model);
  bytes[bytes.size() - 1] ^= 0x40;
  spit(model, bytes);
  expectError([&] { loadCheckpoint((d / "step-00000040").string(), layout, "", q, nullptr); },
              "checksum mismatch");
  // A step that is no integer (1e300 was undefined behaviour to convert).
  fs::path tj = d / "step-00000030" / "trainer.json";
  auto state = nlohmann::json::parse(slurp(tj));
  state["step"] = 1e300;
  spit(tj, state.dump());
  expectError([&] { loadCheckpoint((d / "step-00000030").string(), layout, "", q, nullptr); },
              "step must be an integer");
  spit(tj, "{not json");
  expectError([&] { loadCheckpoint((d / "step-00000030").string(), layout, "", q, nullptr); },
              "malformed checkpoint state");
  fs::remove_all(d);
}

/// W ranks as threads of this process: enough of dist::Comm for the
/// collective checkpoint write (barrier, sums).
struct ThreadRanks {
  explicit ThreadRanks(int w) : W(w) {}
  int W;
  std::mutex mu;
  std::condition_variable cv;
  int arrived = 0, generation = 0;
  std::vector<double> acc;
  void barrier() {
    std::unique_lock<std::mutex> lock(mu);
    int g = generation;
    if (++arrived == W) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != g; });
    }
  }
};

class ThreadComm final : public mmrec::dist::Comm {
public:
  ThreadComm(ThreadRanks &t, int r) : t_(t), r_(r) {}
  int rank() const override { return r_; }
  int size() const override { return t_.W; }
  std::string backend() const override { return "threads"; }
  void allreduceSum(double *x, int64_t n) override {
    t_.barrier();
    if (r_ == 0)
      t_.acc.assign(size_t(n), 0.0);
    t_.barrier();
    {
      std::lock_guard<std::mutex> lock(t_.mu);
      for (int64_t i = 0; i < n; ++i)
        t_.acc[size_t(i)] += x[i];
    }
    t_.barrier();
    std::copy(t_.acc.begin(), t_.acc.begin() + n, x);
    t_.barrier();
  }
  void barrier() override { t_.barrier(); }
  void allgather(const float *, float *, int64_t) override { unused(); }
  void broadcast(void *, int64_t, int) override { unused(); }
  void reduceAsync(const float *, float *, int64_t, int) override { unused(); }
  void wait() override { unused(); }
  [[noreturn]] void abort(int) override { unused(); }

private:
  [[noreturn]] static void unused() { throw std::logic_error("ThreadComm: not used here"); }
  ThreadRanks &t_;
  int r_;
};

// A checkpoint of 3 ranks: each writes its optimizer shard, rank 0 the
// weights and trainer.json; it loads whole, into another rank's range (a
// different rank count), and is refused when a shard is corrupt, missing or
// the shards do not tile the parameters.
TEST(TrainIo, ShardedCheckpointsResumeOnOtherRankCounts) {
  KernelLibrary lib(manifest());
  ParamLayout layout(lib.config());
  const int W = 3;
  const int64_t P = layout.numel(), S = (P + W - 1) / W;
  std::vector<float> p = initParams(lib.config(), layout, 4);
  auto mOf = [](int64_t i) { return float(i) * 1e-3f; };
  auto vOf = [](int64_t i) { return float(i % 977) * 2e-3f; };
  fs::path d = tempDir("sharded");
  ThreadRanks ranks(W);
  std::vector<std::string> paths(W), errors(W);
  std::vector<std::thread> threads;
  for (int r = 0; r < W; ++r)
    threads.emplace_back([&, r] {
      try {
        ThreadComm comm(ranks, r);
        AdamW opt(lib, layout, std::min(P, r * S), std::min(P, (r + 1) * S));
        for (int64_t i = opt.lo(); i < opt.hi(); ++i) {
          opt.m[size_t(i - opt.lo())] = mOf(i);
          opt.v[size_t(i - opt.lo())] = vOf(i);
        }
        TrainerState st;
        st.step = 7;
        st.seed = 3;
        st.model = lib.config().name;
        paths[size_t(r)] = saveCheckpoint(d.string(), layout, p, &opt, st, 2, &comm);
      } catch (const std::exception &e) {
        errors[size_t(r)] = e.what();
      }
    });
  for (auto &t : threads)
    t.join();
  for (int r = 0; r < W; ++r)
    ASSERT_EQ(errors[size_t(r)], "") << "rank " << r;
  const fs::path ck = d / "step-00000007";
  EXPECT_EQ(paths[0], ck.string());
  for (const char *f : {"optimizer-00000-of-00003.safetensors", "optimizer-00001-of-00003.safetensors",
                        "optimizer-00002-of-00003.safetensors", "model.safetensors", "trainer.json"})
    EXPECT_TRUE(fs::exists(ck / f)) << f;
  EXPECT_FALSE(fs::exists(d / "step-00000007.tmp"));

  // One rank (the whole state), then the second of 2 ranks.
  std::vector<float> q;
  AdamW whole(lib, layout);
  loadCheckpoint(ck.string(), layout, lib.config().name, q, &whole);
  EXPECT_EQ(q, p);
  for (int64_t i = 0; i < P; ++i)
    ASSERT_TRUE(whole.m[size_t(i)] == mOf(i) && whole.v[size_t(i)] == vOf(i)) << i;
  const int64_t S2 = (P + 1) / 2;
  AdamW half(lib, layout, S2, P);
  loadCheckpoint(ck.string(), layout, lib.config().name, q, &half);
  for (int64_t i = S2; i < P; ++i)
    ASSERT_TRUE(half.m[size_t(i - S2)] == mOf(i) && half.v[size_t(i - S2)] == vOf(i)) << i;

  // Damage.
  const fs::path shard1 = ck / "optimizer-00001-of-00003.safetensors";
  std::string good = slurp(shard1), bad = good;
  bad[bad.size() - 3] ^= 0x10;
  spit(shard1, bad);
  expectError([&] { loadCheckpoint(ck.string(), layout, "", q, &whole); }, "checksum mismatch");
  spit(shard1, good);
  fs::rename(shard1, ck / "gone");
  expectError([&] { loadCheckpoint(ck.string(), layout, "", q, &whole); },
              "listed in trainer.json but missing");
  fs::rename(ck / "gone", shard1);
  const fs::path tj = ck / "trainer.json";
  const std::string state = slurp(tj);
  auto j = nlohmann::json::parse(state);
  j["optimizer_shards"][1]["lo"] = int64_t(j["optimizer_shards"][1]["lo"]) + 1;
  spit(tj, j.dump());
  expectError([&] { loadCheckpoint(ck.string(), layout, "", q, &whole); }, "expected to start at");
  j = nlohmann::json::parse(state);
  j["optimizer_shards"].erase(2);
  spit(tj, j.dump());
  expectError([&] { loadCheckpoint(ck.string(), layout, "", q, &whole); }, "the optimizer shards cover");
  j = nlohmann::json::parse(state);
  j["files"]["../outside"] = 0;
  spit(tj, j.dump());
  expectError([&] { loadCheckpoint(ck.string(), layout, "", q, &whole); },
              "is not a plain file name of the checkpoint");
  spit(tj, state);
  loadCheckpoint(ck.string(), layout, "", q, &whole); // intact again
  fs::remove_all(d);
}

} // namespace

namespace {

TEST(TrainIo, AbsurdSizesAreRefusedBeforeAllocating) {
  // A manifest whose configuration asks for 10^15 parameters.
  fs::path d = tempDir("absurd");
  auto j = nlohmann::json::parse(slurp(manifest()));
  j["config"]["hidden_dim"] = int64_t(1) << 40;
  j["config"]["num_heads"] = 1;
  j["config"]["num_memories"] = 1;
  spit(d / "x.train.json", j.dump());
  expectError([&] { KernelLibrary lib((d / "x.train.json").string()); }, "sizes out of range");
  j = nlohmann::json::parse(slurp(manifest()));
  j["config"]["hidden_dim"] = -4;
  spit(d / "y.train.json", j.dump());
  expectError([&] { KernelLibrary lib((d / "y.train.json").string()); }, "must be positive");
  j = nlohmann::json::parse(slurp(manifest()));
  j["config"].erase("ffn_dim");
  spit(d / "z.train.json", j.dump());
  expectError([&] { KernelLibrary lib((d / "z.train.json").string()); }, "ffn_dim");
  // A batch whose activations cannot fit in memory.
  KernelLibrary lib(manifest());
  ParamLayout layout(lib.config());
  Model model(lib, layout);
  std::vector<float> p = initParams(lib.config(), layout, 1);
  std::vector<int32_t> tok(4, 1);
  expectError([&] { model.forward(p.data(), tok.data(), int64_t(1) << 40, 64); },
              "MiB of activations");
  // A sequence longer than max_seq_len (the kernels' per-segment scratch).
  expectError([&] { model.forward(p.data(), tok.data(), 1, int64_t(1) << 20); },
              "exceeds max_seq_len");
  fs::remove_all(d);
}

} // namespace

namespace {

// Inputs the fuzzers found (test/fuzz/regressions/<target>/): each must now
// give a result or an Error, never undefined behaviour (this binary runs
// under UBSan in scripts/run-sanitized-tests).
TEST(TrainIo, FuzzFindingsStayFixed) {
  fs::path dir = fs::path(MMREC_SOURCE_DIR) / "test/fuzz/regressions/shard";
  int n = 0;
  for (const auto &e : fs::directory_iterator(dir)) {
    ++n;
    try {
      TokenShard s = TokenShard::read(e.path().string());
      std::vector<int32_t> batch;
      expectError([&] { sampleBatch(s, 1, 4, 1, 1, batch); }, "fewer than one sequence");
    } catch (const Error &) {
    }
  }
  EXPECT_GE(n, 1);
  // The finding itself: a valid header announcing zero tokens.
  TokenShard s = TokenShard::read((dir / "empty-shard.bin").string());
  EXPECT_TRUE(s.tokens.empty());
  EXPECT_EQ(s.vocab, 37u);
  // Manifests: a size beyond 64 bits (kept by the JSON parser as a double)
  // was converted to int64 (UBSan: outside the representable range).
  fs::path mdir = fs::path(MMREC_SOURCE_DIR) / "test/fuzz/regressions/manifest";
  for (const auto &e : fs::directory_iterator(mdir))
    expectError([&] { ModelConfig::fromManifest(slurp(e.path()), e.path().string()); },
                "must be an integer");
}

// Integers of manifests and checkpoints must be integers in range: neither
// 1e300 (undefined behaviour when converted) nor 3.5 (silently truncated).
TEST(TrainIo, JsonIntegersAreChecked) {
  auto j = nlohmann::json::parse(slurp(manifest()));
  for (const char *bad : {"1e300", "3.5", "-1e30", "18446744073709551615"}) {
    j["config"]["vocab_size"] = nlohmann::json::parse(bad);
    std::string what = std::string(bad) == "18446744073709551615" ? "out of range"
                                                                  : "must be an integer";
    expectError([&] { ModelConfig::fromManifest(j.dump(), "m.json"); }, what);
  }
  j = nlohmann::json::parse(slurp(manifest()));
  j["config"]["hidden_dim"] = "24";
  expectError([&] { ModelConfig::fromManifest(j.dump(), "m.json"); }, "hidden_dim must be an integer");
}

} // namespace
