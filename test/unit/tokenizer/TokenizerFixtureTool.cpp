//===- TokenizerFixtureTool.cpp - Builds and checks tokenizer fixtures ----===//
//
// Not a test: the helper tools/tokenizer-reference/make-fixtures.sh uses to
// train the fixture tokenizers, and to print bitloom's ids in the same
// format as tools/tokenizer-reference/encode.mjs so the two can be diffed.
//
//   bitloom-tokenizer-fixture train <corpus> <vocab> gpt2|llama3 <out.json>
//                             [--bos TOKEN] [--special TOKEN]...
//   bitloom-tokenizer-fixture encode <tokenizer.json|dir> <cases.jsonl>
//
//===----------------------------------------------------------------------===//

#include "formats/Error.h"
#include "tokenizer/BpeTrainer.h"
#include "tokenizer/Tokenizer.h"

#include <nlohmann/json.hpp>

#include <fstream>
#include <iostream>
#include <sstream>

using namespace bitloom;

static std::string slurp(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw std::runtime_error("cannot open " + path);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

static int train(int argc, char **argv) {
  if (argc < 6)
    return 2;
  std::string corpus = slurp(argv[2]);
  size_t vocab = std::stoul(argv[3]);
  std::string style = argv[4];
  PreTokenizer pre =
      style == "gpt2" ? PreTokenizer::Gpt2 : PreTokenizer::Llama3;
  std::optional<std::string> bos;
  std::vector<std::string> specials;
  for (int i = 6; i + 1 < argc; i += 2) {
    std::string flag = argv[i];
    if (flag == "--bos")
      bos = argv[i + 1];
    else if (flag == "--special")
      specials.push_back(argv[i + 1]);
    else
      return 2;
  }
  BpeVocab v = trainByteLevelBpe(corpus, vocab, pre, specials);
  std::ofstream(argv[5], std::ios::binary) << toHfTokenizerJson(v, bos);
  std::cerr << argv[5] << ": " << v.tokens.size() << " tokens, "
            << v.merges.size() << " merges, " << v.specialIds.size()
            << " special\n";
  return 0;
}

static int encode(int argc, char **argv) {
  if (argc < 4)
    return 2;
  auto tok = Tokenizer::fromHfJson(argv[2]);
  std::ifstream in(argv[3]);
  std::string line;
  while (std::getline(in, line)) {
    if (line.empty())
      continue;
    std::string text = nlohmann::json::parse(line).get<std::string>();
    std::vector<int32_t> ids = tok->encode(text, false);
    nlohmann::ordered_json out;
    out["text"] = text;
    out["ids"] = ids;
    out["ids_with_special"] = tok->encode(text, true);
    out["decoded"] = tok->decode(ids);
    std::cout << out.dump(-1, ' ', false,
                          nlohmann::json::error_handler_t::replace)
              << "\n";
  }
  return 0;
}

int main(int argc, char **argv) {
  try {
    std::string cmd = argc > 1 ? argv[1] : "";
    int rc = cmd == "train"    ? train(argc, argv)
             : cmd == "encode" ? encode(argc, argv)
                               : 2;
    if (rc == 2)
      std::cerr << "usage: see the header of TokenizerFixtureTool.cpp\n";
    return rc;
  } catch (const std::exception &e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
}
