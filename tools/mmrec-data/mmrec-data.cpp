//===- mmrec-data.cpp - the training corpus as token shards ---------------===//
//
//   mmrec-data --out DIR [--tokenizer bytes|spm] [--vocab 32000]
//              [--source FILE] [--val-every 100]
//
// Builds the corpus from Debian's King James Bible (`bible -p /usr/lib -f
// gen1:1-rev22:21`, package bible-kjv; or --source FILE, one text line per
// record), strips the verse references ("Ge1:1 "), holds out every N-th verse
// as the validation split, tokenizes it — bytes (vocabulary 256, mmrec-tiny)
// or a SentencePiece model trained here (Debian's libsentencepiece) — and
// writes DIR/train.bin, DIR/val.bin (mmrec/train_io.h) and DIR/tokenizer.json
// (+ DIR/tokenizer.model for SentencePiece).
//
//===----------------------------------------------------------------------===//

#include "mmrec/train_io.h"
#include "tools/common/Progress.h"

#include <CLI/CLI.hpp>
#include <sentencepiece_processor.h>
#include <sentencepiece_trainer.h>

#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>

using namespace mmrec::train;
namespace fs = std::filesystem;

static std::vector<std::string> readLines(const std::string &source) {
  std::vector<std::string> lines;
  if (!source.empty()) {
    std::ifstream in(source);
    if (!in)
      throw Error("--source: cannot open " + source);
    for (std::string l; std::getline(in, l);)
      lines.push_back(l);
    return lines;
  }
  FILE *p = popen("bible -p /usr/lib -f gen1:1-rev22:21 2>/dev/null", "r");
  if (!p)
    throw Error("cannot run `bible` (install the bible-kjv package: scripts/setup does)");
  std::string cur;
  char buf[1 << 16];
  size_t n;
  while ((n = fread(buf, 1, sizeof buf, p)) > 0)
    cur.append(buf, n);
  int rc = pclose(p);
  if (rc != 0 || cur.empty())
    throw Error("`bible -p /usr/lib -f gen1:1-rev22:21` failed (is bible-kjv installed?)");
  size_t at = 0;
  while (at < cur.size()) {
    size_t e = cur.find('\n', at);
    if (e == std::string::npos)
      e = cur.size();
    lines.push_back(cur.substr(at, e - at));
    at = e + 1;
  }
  return lines;
}

/// "Ge1:1 In the beginning" -> "In the beginning" (a leading token with a
/// ':' between digits is a verse reference).
static std::string stripReference(const std::string &l) {
  size_t sp = l.find(' ');
  if (sp == std::string::npos)
    return l;
  std::string ref = l.substr(0, sp);
  size_t colon = ref.find(':');
  if (colon == std::string::npos || colon == 0 || !isdigit((unsigned char)ref[colon - 1]) ||
      colon + 1 >= ref.size() || !isdigit((unsigned char)ref[colon + 1]))
    return l;
  return l.substr(sp + 1);
}

int main(int argc, char **argv) {
  CLI::App app{"mmrec-data: the King James Bible as token shards for mmrec-train"};
  std::string out, tokenizer = "bytes", source;
  int vocab = 32000, valEvery = 100;
  app.add_option("--out", out, "Output directory")->required();
  app.add_option("--tokenizer", tokenizer, "bytes (vocabulary 256) or spm (SentencePiece)")
      ->check(CLI::IsMember({"bytes", "spm"}));
  app.add_option("--vocab", vocab, "SentencePiece vocabulary size")->check(CLI::Range(300, 65536));
  app.add_option("--source", source, "A text file instead of the bible-kjv corpus");
  app.add_option("--val-every", valEvery, "Every N-th line goes to the validation split")
      ->check(CLI::Range(2, 1000000));
  CLI11_PARSE(app, argc, argv);
  try {
    std::vector<std::string> lines = readLines(source);
    std::string train, val;
    size_t nTrain = 0, nVal = 0;
    for (size_t i = 0; i < lines.size(); ++i) {
      std::string l = stripReference(lines[i]);
      if (l.empty())
        continue;
      ((i + 1) % size_t(valEvery) == 0 ? val : train) += l + "\n";
      ++((i + 1) % size_t(valEvery) == 0 ? nVal : nTrain);
    }
    if (train.empty() || val.empty())
      throw Error("the corpus is too small for a training and a validation split");
    fs::create_directories(out);
    std::vector<uint16_t> trainTok, valTok;
    uint32_t V;
    if (tokenizer == "bytes") {
      V = 256;
      for (unsigned char c : train)
        trainTok.push_back(c);
      for (unsigned char c : val)
        valTok.push_back(c);
      std::ofstream(out + "/tokenizer.json") << "{\"kind\": \"bytes\", \"vocab_size\": 256}\n";
    } else {
      std::string textPath = out + "/train.txt";
      std::ofstream(textPath) << train;
      std::cerr << "mmrec-data: training a SentencePiece model (vocabulary " << vocab << ")\n";
      auto st = sentencepiece::SentencePieceTrainer::Train(
          "--input=" + textPath + " --model_prefix=" + out + "/tokenizer --vocab_size=" +
          std::to_string(vocab) +
          " --model_type=bpe --character_coverage=1.0 --byte_fallback=true --minloglevel=1");
      if (!st.ok())
        throw Error("SentencePiece training failed: " + st.ToString());
      sentencepiece::SentencePieceProcessor sp;
      if (!sp.Load(out + "/tokenizer.model").ok())
        throw Error(out + "/tokenizer.model: cannot load");
      V = uint32_t(sp.GetPieceSize());
      // Line by line, with a progress bar (the whole corpus at once would
      // give no sign of life for many seconds).
      auto encode = [&](const std::string &text, std::vector<uint16_t> &dst,
                        mmrec::tools::Progress &bar) {
        std::vector<int> ids;
        size_t at = 0;
        while (at < text.size()) {
          size_t end = text.find('\n', at);
          end = end == std::string::npos ? text.size() : end + 1;
          sp.Encode(text.substr(at, end - at), &ids);
          for (int id : ids)
            dst.push_back(uint16_t(id));
          at = end;
          bar.advance();
        }
      };
      mmrec::tools::Progress bar("mmrec-data: tokenizing", int64_t(nTrain + nVal));
      encode(train, trainTok, bar);
      encode(val, valTok, bar);
      bar.done();
      std::ofstream(out + "/tokenizer.json")
          << "{\"kind\": \"spm\", \"vocab_size\": " << V << ", \"model\": \"tokenizer.model\"}\n";
    }
    TokenShard::write(out + "/train.bin", V, trainTok);
    TokenShard::write(out + "/val.bin", V, valTok);
    std::cout << "mmrec-data: " << nTrain << " training and " << nVal << " validation lines -> "
              << trainTok.size() << " / " << valTok.size() << " tokens (vocabulary " << V
              << ") in " << out << "\n";
  } catch (const std::exception &e) {
    std::cerr << "mmrec-data: error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
