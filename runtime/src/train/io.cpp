//===- io.cpp - token shards and safetensors checkpoints ------------------===//

#include "json_util.h"
#include "mmrec/train_io.h"

#include <zlib.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <random>
#include <sys/stat.h>
#include <unistd.h>

using namespace mmrec::train;
using nlohmann::json;
namespace fs = std::filesystem;

uint32_t mmrec::train::crc32(const void *data, size_t bytes) {
  uLong c = ::crc32(0L, Z_NULL, 0);
  const auto *p = static_cast<const Bytef *>(data);
  while (bytes > 0) {
    uInt n = uInt(std::min<size_t>(bytes, 1u << 30));
    c = ::crc32(c, p, n);
    p += n;
    bytes -= n;
  }
  return uint32_t(c);
}

namespace {

std::string readFile(const std::string &path, const char *what) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw Error(path + ": cannot open the " + what);
  return std::string(std::istreambuf_iterator<char>(in), {});
}

/// Writes `bytes` to `path` and fsyncs it.
void writeDurable(const std::string &path, const void *data, size_t bytes) {
  int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd < 0)
    throw Error(path + ": cannot create: " + std::strerror(errno));
  const char *p = static_cast<const char *>(data);
  while (bytes > 0) {
    ssize_t n = ::write(fd, p, bytes);
    if (n < 0) {
      if (errno == EINTR)
        continue;
      int e = errno;
      ::close(fd);
      throw Error(path + ": write failed: " + std::strerror(e));
    }
    p += n;
    bytes -= size_t(n);
  }
  if (::fsync(fd) != 0 || ::close(fd) != 0)
    throw Error(path + ": fsync/close failed: " + std::strerror(errno));
}

void fsyncDir(const std::string &dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd >= 0) {
    ::fsync(fd);
    ::close(fd);
  }
}

template <class T> T readLE(const std::string &s, size_t at) {
  T v;
  std::memcpy(&v, s.data() + at, sizeof(T));
  return v;
}

} // namespace

//===----------------------------------------------------------------------===//
// Token shards
//===----------------------------------------------------------------------===//

TokenShard TokenShard::read(const std::string &path, uint32_t maxVocab) {
  std::string s = readFile(path, "token shard");
  if (s.size() < 32)
    throw Error(path + ": token shard: shorter than its 32-byte header (" +
                std::to_string(s.size()) + " bytes)");
  if (s.compare(0, 8, "MMRECTOK") != 0)
    throw Error(path + ": token shard: bad magic (expected MMRECTOK)");
  uint32_t version = readLE<uint32_t>(s, 8);
  if (version != 1)
    throw Error(path + ": token shard: version " + std::to_string(version) +
                " is not supported (expected 1)");
  TokenShard t;
  t.path = path;
  t.vocab = readLE<uint32_t>(s, 12);
  uint64_t count = readLE<uint64_t>(s, 16);
  uint32_t width = readLE<uint32_t>(s, 24);
  uint32_t crc = readLE<uint32_t>(s, 28);
  if (width != 2)
    throw Error(path + ": token shard: bytes per token is " + std::to_string(width) +
                " (expected 2)");
  if (t.vocab == 0 || t.vocab > 65536)
    throw Error(path + ": token shard: vocabulary size " + std::to_string(t.vocab) +
                " is outside [1, 65536]");
  if (maxVocab && t.vocab > maxVocab)
    throw Error(path + ": token shard: vocabulary size " + std::to_string(t.vocab) +
                " exceeds the model's " + std::to_string(maxVocab));
  if (count != (s.size() - 32) / 2 || (s.size() - 32) % 2)
    throw Error(path + ": token shard: header says " + std::to_string(count) + " tokens, the file holds " +
                std::to_string((s.size() - 32) / 2) + " (truncated or padded)");
  if (crc32(s.data() + 32, s.size() - 32) != crc)
    throw Error(path + ": token shard: checksum mismatch (the file is corrupt)");
  t.tokens.resize(count);
  if (count > 0) // memcpy's pointers must not be null, even for 0 bytes (fuzz finding)
    std::memcpy(t.tokens.data(), s.data() + 32, count * 2);
  for (uint64_t i = 0; i < count; ++i)
    if (t.tokens[i] >= t.vocab)
      throw Error(path + ": token shard: token " + std::to_string(t.tokens[i]) + " at " +
                  std::to_string(i) + " is outside the vocabulary");
  return t;
}

void TokenShard::write(const std::string &path, uint32_t vocab,
                       const std::vector<uint16_t> &tokens) {
  std::string s(32, '\0');
  std::memcpy(&s[0], "MMRECTOK", 8);
  uint32_t version = 1, width = 2;
  uint64_t count = tokens.size();
  uint32_t crc = crc32(tokens.data(), tokens.size() * 2);
  std::memcpy(&s[8], &version, 4);
  std::memcpy(&s[12], &vocab, 4);
  std::memcpy(&s[16], &count, 8);
  std::memcpy(&s[24], &width, 4);
  std::memcpy(&s[28], &crc, 4);
  if (!tokens.empty())
    s.append(reinterpret_cast<const char *>(tokens.data()), tokens.size() * 2);
  std::string tmp = path + ".tmp";
  writeDurable(tmp, s.data(), s.size());
  fs::rename(tmp, path);
}

void mmrec::train::sampleBatch(const TokenShard &shard, int64_t B, int64_t T, uint64_t seed,
                               int64_t step, std::vector<int32_t> &out) {
  const int64_t n = int64_t(shard.tokens.size());
  if (n < T)
    throw Error(shard.path + ": " + std::to_string(n) + " tokens, fewer than one sequence of " +
                std::to_string(T));
  std::seed_seq seq{uint32_t(seed), uint32_t(seed >> 32), uint32_t(step), uint32_t(step >> 32)};
  std::mt19937_64 rng(seq);
  out.resize(size_t(B * T));
  for (int64_t b = 0; b < B; ++b) {
    int64_t start = int64_t(rng() % uint64_t(n - T + 1));
    for (int64_t t = 0; t < T; ++t)
      out[size_t(b * T + t)] = shard.tokens[size_t(start + t)];
  }
}

//===----------------------------------------------------------------------===//
// safetensors
//===----------------------------------------------------------------------===//

void mmrec::train::writeSafetensors(const std::string &path,
                                    const std::vector<NamedTensor> &tensors,
                                    const std::map<std::string, std::string> &metadata) {
  json header = json::object();
  if (!metadata.empty())
    header["__metadata__"] = metadata;
  uint64_t offset = 0;
  for (const NamedTensor &t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape)
      numel *= d;
    header[t.name] = {{"dtype", "F32"},
                      {"shape", t.shape},
                      {"data_offsets", {offset, offset + uint64_t(numel) * 4}}};
    offset += uint64_t(numel) * 4;
  }
  std::string h = header.dump();
  h.append((8 - h.size() % 8) % 8, ' ');
  std::string out(8, '\0');
  uint64_t hl = h.size();
  std::memcpy(&out[0], &hl, 8);
  out += h;
  out.reserve(out.size() + offset);
  for (const NamedTensor &t : tensors) {
    int64_t numel = 1;
    for (int64_t d : t.shape)
      numel *= d;
    out.append(reinterpret_cast<const char *>(t.data), size_t(numel) * 4);
  }
  writeDurable(path, out.data(), out.size());
}

namespace {

/// The header and data section of safetensors bytes `s` read from `path`.
struct SafetensorsView {
  json header;
  const char *data = nullptr;
  uint64_t dataSize = 0;
};

SafetensorsView parseSafetensors(const std::string &s, const std::string &path) {
  if (s.size() < 8)
    throw Error(path + ": safetensors: shorter than its 8-byte header length");
  uint64_t hl = readLE<uint64_t>(s, 0);
  if (hl > s.size() - 8 || hl > (100u << 20))
    throw Error(path + ": safetensors: header length " + std::to_string(hl) +
                " exceeds the file (truncated or not a safetensors file)");
  json header;
  try {
    header = json::parse(s.begin() + 8, s.begin() + 8 + int64_t(hl));
  } catch (const json::exception &e) {
    throw Error(path + ": safetensors: malformed header: " + e.what());
  }
  if (!header.is_object())
    throw Error(path + ": safetensors: the header is not a JSON object");
  return {std::move(header), s.data() + 8 + hl, s.size() - 8 - hl};
}

/// The data of F32 tensor `name` of shape `want`, checked.
const char *tensorData(const SafetensorsView &st, const std::string &path, const std::string &name,
                       const std::vector<int64_t> &want) {
  auto it = st.header.find(name);
  if (it == st.header.end())
    throw Error(path + ": tensor '" + name + "' is missing");
  try {
    if (it->at("dtype").get<std::string>() != "F32")
      throw Error(path + ": tensor '" + name + "' has dtype " + it->at("dtype").get<std::string>() +
                  ", expected F32");
    auto shape = detail::jsonArray<int64_t>(it->at("shape"), path + ": shape of " + name,
                                            [&](const json &x) {
                                              return detail::jsonInt(x, path + ": shape of " + name);
                                            });
    if (shape != want) {
      std::string a, b;
      for (int64_t d : shape)
        a += (a.empty() ? "" : ",") + std::to_string(d);
      for (int64_t d : want)
        b += (b.empty() ? "" : ",") + std::to_string(d);
      throw Error(path + ": tensor '" + name + "' has shape [" + a + "], the model needs [" + b +
                  "]");
    }
    int64_t numel = 1;
    for (int64_t d : want)
      numel *= d;
    auto off = detail::jsonArray<uint64_t>(
        it->at("data_offsets"), path + ": data_offsets of " + name,
        [&](const json &x) { return detail::jsonUint(x, path + ": data_offsets of " + name); });
    if (off.size() != 2 || off[0] > off[1] || off[1] > st.dataSize ||
        off[1] - off[0] != uint64_t(numel) * 4)
      throw Error(path + ": tensor '" + name + "' has data offsets outside the file or of the "
                  "wrong size (truncated?)");
    return st.data + off[0];
  } catch (const json::exception &e) {
    throw Error(path + ": tensor '" + name + "': malformed entry: " + e.what());
  }
}

void readLayoutTensors(const std::string &bytes, const std::string &path, const ParamLayout &layout,
                       const std::string &prefix, std::vector<float> &out) {
  SafetensorsView st = parseSafetensors(bytes, path);
  out.resize(size_t(layout.numel()));
  for (const ParamInfo &p : layout.tensors())
    std::memcpy(out.data() + p.offset, tensorData(st, path, prefix + p.name, p.shape),
                size_t(p.numel) * 4);
}

} // namespace

void mmrec::train::readSafetensors(const std::string &path, const ParamLayout &layout,
                                   const std::string &prefix, std::vector<float> &out) {
  readLayoutTensors(readFile(path, "safetensors file"), path, layout, prefix, out);
}

//===----------------------------------------------------------------------===//
// Checkpoints
//===----------------------------------------------------------------------===//

namespace {

std::string stepName(int64_t step) {
  char buf[32];
  std::snprintf(buf, sizeof buf, "step-%08lld", static_cast<long long>(step));
  return buf;
}

/// Steps of the complete checkpoints under `dir`, ascending.
std::vector<std::pair<int64_t, std::string>> listCheckpoints(const std::string &dir) {
  std::vector<std::pair<int64_t, std::string>> out;
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return out;
  for (const auto &e : fs::directory_iterator(dir, ec)) {
    std::string n = e.path().filename().string();
    if (n.size() != 13 || n.compare(0, 5, "step-") != 0 || !e.is_directory())
      continue;
    if (!std::all_of(n.begin() + 5, n.end(), ::isdigit))
      continue;
    if (!fs::exists(e.path() / "trainer.json"))
      continue;
    out.push_back({std::stoll(n.substr(5)), e.path().string()});
  }
  std::sort(out.begin(), out.end());
  return out;
}

} // namespace

std::string mmrec::train::saveCheckpoint(const std::string &dir, const ParamLayout &layout,
                                         const std::vector<float> &params, const AdamW *opt,
                                         const TrainerState &state, int keep, dist::Comm *comm) {
  const int W = comm ? comm->size() : 1, R = comm ? comm->rank() : 0;
  const bool sharded = W > 1 && opt;
  if (opt && !sharded && (opt->lo() != 0 || opt->hi() != layout.numel()))
    throw Error("saveCheckpoint: the optimizer state must be whole (or pass the ranks' comm)");
  std::string final = dir + "/" + stepName(state.step);
  std::string tmp = final + ".tmp";
  if (R == 0) {
    fs::create_directories(dir);
    fs::remove_all(tmp);
    fs::create_directories(tmp);
  }
  auto crcOf = [](const std::string &path) {
    std::string s = readFile(path, "checkpoint file");
    return crc32(s.data(), s.size());
  };
  json files, shards = json::array();
  if (sharded) {
    comm->barrier(); // the directory exists
    char name[64];
    std::snprintf(name, sizeof name, "optimizer-%05d-of-%05d.safetensors", R, W);
    const int64_t n = opt->hi() - opt->lo();
    writeSafetensors(tmp + "/" + name, {{"m", {n}, opt->m.data()}, {"v", {n}, opt->v.data()}},
                     {{"step", std::to_string(state.step)},
                      {"lo", std::to_string(opt->lo())},
                      {"hi", std::to_string(opt->hi())},
                      {"rank", std::to_string(R)},
                      {"ranks", std::to_string(W)}});
    // Every rank's range and CRC to rank 0 (exact in doubles: < 2^53).
    std::vector<double> info(size_t(3 * W), 0.0);
    info[size_t(3 * R)] = double(opt->lo());
    info[size_t(3 * R + 1)] = double(opt->hi());
    info[size_t(3 * R + 2)] = double(crcOf(tmp + "/" + name));
    comm->allreduceSum(info.data(), int64_t(info.size()));
    for (int r = 0; r < W; ++r) {
      std::snprintf(name, sizeof name, "optimizer-%05d-of-%05d.safetensors", r, W);
      files[name] = uint32_t(info[size_t(3 * r + 2)]);
      shards.push_back({{"file", name},
                        {"lo", int64_t(info[size_t(3 * r)])},
                        {"hi", int64_t(info[size_t(3 * r + 1)])}});
    }
  }
  if (R == 0) {
    std::vector<NamedTensor> w;
    for (const ParamInfo &p : layout.tensors())
      w.push_back({p.name, p.shape, params.data() + p.offset});
    std::map<std::string, std::string> meta = {{"format", "pt"}, {"model", state.model},
                                               {"step", std::to_string(state.step)}};
    writeSafetensors(tmp + "/model.safetensors", w, meta);
    files["model.safetensors"] = crcOf(tmp + "/model.safetensors");
    if (opt && !sharded) {
      std::vector<NamedTensor> o;
      for (const ParamInfo &p : layout.tensors())
        o.push_back({"m." + p.name, p.shape, opt->m.data() + p.offset});
      for (const ParamInfo &p : layout.tensors())
        o.push_back({"v." + p.name, p.shape, opt->v.data() + p.offset});
      writeSafetensors(tmp + "/optimizer.safetensors", o, {{"step", std::to_string(state.step)}});
      files["optimizer.safetensors"] = crcOf(tmp + "/optimizer.safetensors");
    }
    json j = {{"format", "mmrec-checkpoint"}, {"version", 1},     {"step", state.step},
              {"seed", state.seed},           {"model", state.model}, {"data_position", state.step},
              {"files", files},               {"settings", state.settings}, {"extra", state.extra}};
    if (sharded)
      j["optimizer_shards"] = shards;
    std::string text = j.dump(2) + "\n";
    writeDurable(tmp + "/trainer.json", text.data(), text.size());
    fsyncDir(tmp);
    if (fs::exists(final)) {
      std::string old = final + ".old";
      fs::remove_all(old);
      fs::rename(final, old);
      fs::rename(tmp, final);
      fs::remove_all(old);
    } else {
      fs::rename(tmp, final);
    }
    fsyncDir(dir);
    auto all = listCheckpoints(dir);
    for (size_t i = 0; keep > 0 && i + size_t(keep) < all.size(); ++i)
      fs::remove_all(all[i].second);
  }
  if (W > 1)
    comm->barrier(); // in place for every rank
  return final;
}

std::string mmrec::train::latestCheckpoint(const std::string &dir) {
  auto all = listCheckpoints(dir);
  return all.empty() ? "" : all.back().second;
}

namespace {

/// trainer.json of checkpoint `path`, parsed, with the CRC of every file it
/// lists (each file must exist and be a plain name inside the checkpoint).
json readTrainerJson(const std::string &path, std::map<std::string, uint32_t> &crcs) {
  std::string tj = path + "/trainer.json";
  json j;
  try {
    j = json::parse(readFile(tj, "checkpoint state"));
  } catch (const json::exception &e) {
    throw Error(tj + ": malformed checkpoint state: " + e.what());
  }
  try {
    if (!j.is_object() || j.at("format") != "mmrec-checkpoint" || j.at("version") != 1)
      throw Error(tj + ": not an mmrec checkpoint of version 1");
    for (auto &[file, crc] : j.at("files").items()) {
      if (file.empty() || file.find('/') != std::string::npos || file == "." || file == "..")
        throw Error(tj + ": file '" + file + "' is not a plain file name of the checkpoint");
      if (!fs::exists(path + "/" + file))
        throw Error(path + "/" + file + ": listed in trainer.json but missing (the checkpoint is "
                    "incomplete)");
      crcs[file] = uint32_t(detail::jsonUint(crc, tj + ": crc of " + file, 0xffffffffu));
    }
  } catch (const json::exception &e) {
    throw Error(tj + ": malformed checkpoint state: " + e.what());
  }
  return j;
}

/// The bytes of checkpoint file `file`, checked against its CRC.
std::string readVerified(const std::string &path, const std::map<std::string, uint32_t> &crcs,
                         const std::string &file) {
  std::string f = path + "/" + file;
  auto it = crcs.find(file);
  if (it == crcs.end())
    throw Error(path + "/trainer.json: lists no checksum for " + file);
  std::string s = readFile(f, "checkpoint file");
  if (crc32(s.data(), s.size()) != it->second)
    throw Error(f + ": checksum mismatch (the checkpoint is corrupt)");
  return s;
}

} // namespace

TrainerState mmrec::train::loadCheckpoint(const std::string &path, const ParamLayout &layout,
                                          const std::string &modelName,
                                          std::vector<float> &params, AdamW *opt) {
  const std::string tj = path + "/trainer.json";
  std::map<std::string, uint32_t> crcs;
  json j = readTrainerJson(path, crcs);
  TrainerState st;
  try {
    st.step = detail::jsonInt(j.at("step"), tj + ": step");
    st.seed = detail::jsonUint(j.at("seed"), tj + ": seed");
    st.model = j.at("model").get<std::string>();
    st.settings = j.value("settings", json());
    st.extra = j.value("extra", json());
  } catch (const json::exception &e) {
    throw Error(tj + ": malformed checkpoint state: " + e.what());
  }
  if (!modelName.empty() && st.model != modelName)
    throw Error(path + ": the checkpoint is of model '" + st.model + "', not '" + modelName + "'");
  readLayoutTensors(readVerified(path, crcs, "model.safetensors"), path + "/model.safetensors",
                    layout, "", params);
  if (opt)
    loadOptimizerState(path, layout, opt->lo(), opt->hi(), opt->m, opt->v);
  return st;
}

void mmrec::train::loadOptimizerState(const std::string &path, const ParamLayout &layout,
                                      int64_t lo, int64_t hi, std::vector<float> &mOut,
                                      std::vector<float> &vOut) {
  const std::string tj = path + "/trainer.json";
  const int64_t P = layout.numel();
  if (lo < 0 || lo > hi || hi > P)
    throw Error("loadOptimizerState: range [" + std::to_string(lo) + ", " + std::to_string(hi) +
                ") is outside the " + std::to_string(P) + " parameters");
  std::map<std::string, uint32_t> crcs;
  json j = readTrainerJson(path, crcs);
  mOut.resize(size_t(hi - lo));
  vOut.resize(size_t(hi - lo));
  if (crcs.count("optimizer.safetensors")) {
    std::vector<float> m, v;
    std::string bytes = readVerified(path, crcs, "optimizer.safetensors");
    readLayoutTensors(bytes, path + "/optimizer.safetensors", layout, "m.", m);
    readLayoutTensors(bytes, path + "/optimizer.safetensors", layout, "v.", v);
    std::copy(m.begin() + lo, m.begin() + hi, mOut.begin());
    std::copy(v.begin() + lo, v.begin() + hi, vOut.begin());
    return;
  }
  if (!j.contains("optimizer_shards"))
    throw Error(path + ": the checkpoint has no optimizer state to resume from");
  // Shards of a run on another number of ranks: they must tile [0, P); this
  // range reads the ones it meets.
  struct Shard {
    std::string file;
    int64_t lo, hi;
  };
  std::vector<Shard> list;
  try {
    const json &shards = j.at("optimizer_shards");
    if (!shards.is_array())
      throw Error(tj + ": optimizer_shards is not an array");
    for (const json &e : shards)
      list.push_back({e.at("file").get<std::string>(),
                      detail::jsonInt(e.at("lo"), tj + ": optimizer_shards lo"),
                      detail::jsonInt(e.at("hi"), tj + ": optimizer_shards hi")});
  } catch (const json::exception &e) {
    throw Error(tj + ": malformed optimizer_shards: " + e.what());
  }
  std::sort(list.begin(), list.end(), [](const Shard &a, const Shard &b) { return a.lo < b.lo; });
  int64_t covered = 0;
  for (const Shard &sh : list) {
    if (sh.lo != covered || sh.hi < sh.lo || sh.hi > P)
      throw Error(tj + ": optimizer shard " + sh.file + " covers [" + std::to_string(sh.lo) + ", " +
                  std::to_string(sh.hi) + "), expected to start at " + std::to_string(covered) +
                  " within the " + std::to_string(P) + " parameters");
    covered = sh.hi;
  }
  if (covered != P)
    throw Error(tj + ": the optimizer shards cover " + std::to_string(covered) + " of the " +
                std::to_string(P) + " parameters");
  for (const Shard &sh : list) {
    const int64_t x = std::max(lo, sh.lo), y = std::min(hi, sh.hi);
    if (x >= y)
      continue;
    const std::string f = path + "/" + sh.file;
    std::string bytes = readVerified(path, crcs, sh.file);
    SafetensorsView view = parseSafetensors(bytes, f);
    const int64_t n = sh.hi - sh.lo;
    const char *m = tensorData(view, f, "m", {n}), *v = tensorData(view, f, "v", {n});
    std::memcpy(mOut.data() + (x - lo), m + 4 * (x - sh.lo), size_t(y - x) * 4);
    std::memcpy(vOut.data() + (x - lo), v + 4 * (x - sh.lo), size_t(y - x) * 4);
  }
}
