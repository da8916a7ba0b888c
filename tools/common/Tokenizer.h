//===- Tokenizer.h - the tokenizer mmrec-data wrote beside the shards -*- C++ -*-===//
//
// DIR/tokenizer.json: {"kind": "bytes"} or {"kind": "spm", "model": FILE} (a
// SentencePiece model, Debian's libsentencepiece). Shared by mmrec-generate
// and mmrec-train (its samples at evaluation).
//
//===----------------------------------------------------------------------===//
#ifndef MMREC_TOOLS_COMMON_TOKENIZER_H
#define MMREC_TOOLS_COMMON_TOKENIZER_H

#include "mmrec/train.h"

#include <nlohmann/json.hpp>
#include <sentencepiece_processor.h>

#include <fstream>
#include <string>
#include <vector>

namespace mmrec::train {

struct Tokenizer {
  bool bytes = true;
  sentencepiece::SentencePieceProcessor sp;
  explicit Tokenizer(const std::string &dir) {
    std::string path = dir + "/tokenizer.json";
    std::ifstream in(path);
    if (!in)
      throw Error(path + ": cannot open the tokenizer description (written by mmrec-data)");
    nlohmann::json j;
    try {
      in >> j;
      bytes = j.at("kind").get<std::string>() == "bytes";
      if (!bytes && !sp.Load(dir + "/" + j.at("model").get<std::string>()).ok())
        throw Error(dir + "/" + j.at("model").get<std::string>() + ": cannot load the SentencePiece model");
    } catch (const nlohmann::json::exception &e) {
      throw Error(path + ": malformed: " + e.what());
    }
  }
  std::vector<int32_t> encode(const std::string &text) {
    std::vector<int32_t> out;
    if (bytes) {
      for (unsigned char c : text)
        out.push_back(c);
    } else {
      std::vector<int> ids;
      sp.Encode(text, &ids);
      out.assign(ids.begin(), ids.end());
    }
    return out;
  }
  std::string decode(const std::vector<int32_t> &ids) {
    if (bytes)
      return std::string(ids.begin(), ids.end());
    std::string s;
    sp.Decode(std::vector<int>(ids.begin(), ids.end()), &s);
    return s;
  }
};

} // namespace mmrec::train

#endif
