//===- Dataset.h - Training samples, splits and batches ---------*- C++ -*-===//
//
// Turns a plain-text file or a JSONL chat file into fixed-length samples
// {ids, lossMask} for a causal LM, with Hugging Face's label semantics:
// lossMask[t] = 1 makes token t a prediction target (labels[t] = ids[t] in
// HF terms, -100 otherwise); the consumer shifts, so position t - 1 predicts
// token t and lossMask[0] never matters.
//
//  - Plain text: the whole file is one document, tokenized once with the
//    tokenizer's special tokens (BOS where its post-processor adds one) and
//    cut into windows of seqLen tokens. Consecutive windows share one token
//    (window w starts at w * (seqLen - 1)) so every token after the first is
//    a target exactly once; the last window is padded with a masked-out pad
//    token, never dropped.
//  - JSONL chat: one {"messages": [{"role", "content"}, ...]} per line,
//    rendered with the model's chat template (ChatTemplate) and tokenized as
//    one string (special tokens in the text match as specials). Targets are
//    the assistant turns' content and end-of-turn token. Samples longer than
//    seqLen are truncated or split into windows like text, by policy; every
//    truncation and split is counted in DatasetStats, never silent.
//
// Batching is deterministic: a seeded shuffle per epoch, and a DataPosition
// (epoch, index, the epoch's RNG state) that a checkpoint stores so a resumed
// run continues with exactly the batch the interrupted one would have taken.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_TRAINER_DATASET_H
#define BITLOOM_TRAINER_DATASET_H

#include "trainer/ChatTemplate.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace bitloom {
class Tokenizer;
} // namespace bitloom

namespace bitloom::trainer {

enum class DatasetFormat { Auto, Text, Chat }; // Auto: .jsonl is chat
enum class LongSamplePolicy { Truncate, Split };

/// What happens to a chat rendering without BOS when the tokenizer's
/// post-processor would add one: `Template` keeps the template's text as
/// transformers' apply_chat_template(tokenize=True) does; `AddIfMissing`
/// prepends BOS as llama.cpp does when it tokenizes a rendered chat (and as
/// BitNet b1.58 2B4T's own examples show: "<|begin_of_text|>User: ...").
enum class ChatBos { Template, AddIfMissing };

struct DatasetOptions {
  int64_t seqLen = 0;
  DatasetFormat format = DatasetFormat::Auto;
  LongSamplePolicy longSamples = LongSamplePolicy::Split;
  ChatBos chatBos = ChatBos::AddIfMissing;
  /// Pad id for short samples (masked out); default: EOS, else 0.
  std::optional<int32_t> padId;
};

struct Sample {
  std::vector<int32_t> ids;  // seqLen
  std::vector<uint8_t> mask; // seqLen; 1 = prediction target
  int64_t source = 0;        // text: window index; chat: line number
  int32_t window = 0;        // window of a split sample
  int32_t realTokens = 0;    // tokens before the padding
  int64_t targets() const;   // number of mask[t] = 1 for t >= 1
};

struct DatasetStats {
  std::string format;            // "text" or "chat"
  std::string templateVariant;   // chat only
  int64_t sources = 0;           // text: 1 document; chat: conversations
  int64_t samples = 0;           // sequences produced
  int64_t tokens = 0;            // tokens before windowing
  int64_t targetTokens = 0;      // mask = 1 over all samples (t >= 1)
  int64_t paddedTokens = 0;      // pad tokens added
  int64_t truncated = 0;         // chat samples cut to seqLen
  int64_t truncatedTokens = 0;   //   tokens they lost
  int64_t split = 0;             // chat samples split into windows
  int64_t splitWindows = 0;      //   windows they became
  int64_t droppedWindows = 0;    // windows / truncations left with no target
  int64_t noTargetSamples = 0;   // conversations without an assistant turn
  int64_t bosAdded = 0;          // chat renderings given a BOS (ChatBos)
  int64_t inexactBoundaries = 0; // mask edges inside a merged token
  /// One paragraph for the log: counts, and every non-zero loss.
  std::string summary() const;
};

class Dataset {
public:
  /// Loads `path`. Chat files need `chatTemplate`. Errors are FormatError
  /// naming the file and, for JSONL, "line N" (bad JSON, missing fields,
  /// roles, or what the template raises for that conversation).
  static Dataset load(const std::string &path, const Tokenizer &tokenizer,
                      const ChatTemplate *chatTemplate,
                      const DatasetOptions &options);
  /// The same from in-memory text (tests, tools). `name` is used in errors.
  static Dataset fromText(const std::string &text, const std::string &name,
                          const Tokenizer &tokenizer,
                          const DatasetOptions &options);
  static Dataset fromJsonl(const std::string &jsonl, const std::string &name,
                           const Tokenizer &tokenizer,
                           const ChatTemplate &chatTemplate,
                           const DatasetOptions &options);

  const std::vector<Sample> &samples() const { return samples_; }
  const DatasetStats &stats() const { return stats_; }
  int64_t seqLen() const { return seqLen_; }
  int32_t padId() const { return padId_; }
  /// FNV-1a 64 over every sample's ids and mask (and seqLen): a resumed run
  /// checks it to refuse a position into a different dataset.
  uint64_t fingerprint() const;

private:
  std::vector<Sample> samples_;
  DatasetStats stats_;
  int64_t seqLen_ = 0;
  int32_t padId_ = 0;
  friend struct DatasetBuilder;
};

/// Token-level loss mask for one rendered chat: tokenizes the pieces'
/// concatenation once (so ids equal the tokenizer's on the whole string) and
/// marks every token overlapping a target piece, as transformers' assistant
/// masks do. `inexact` counts target edges that fall inside a token.
struct TokenizedChat {
  std::vector<int32_t> ids;
  std::vector<uint8_t> mask;
  int inexact = 0;
  bool bosAdded = false;
};
TokenizedChat tokenizeChat(const std::vector<ChatPiece> &pieces,
                           const Tokenizer &tokenizer, ChatBos bos);

/// Sample indices split into training and validation sets: whole sources
/// (a conversation's windows stay together) are shuffled with `seed` and the
/// first round(fraction * sources) go to validation (at least one, and one
/// source is always left for training). Both lists ascend.
struct DatasetSplit {
  std::vector<int64_t> train, validation;
};
DatasetSplit splitValidation(const Dataset &dataset, double fraction,
                             uint64_t seed);

/// Where a Batcher stands: the next batch is row `index` of epoch `epoch`'s
/// order, which is the shuffle of the sample list drawn from RNG state
/// `epochRng`. `samples`, `batchSize` and `fingerprint` guard a restore.
struct DataPosition {
  uint64_t epoch = 0;
  uint64_t index = 0;
  uint64_t epochRng = 0;
  uint64_t samples = 0;
  uint64_t batchSize = 0;
  uint64_t fingerprint = 0;
  nlohmann::json toJson() const;
  /// Throws FormatError(source, "data_position", ...) on a malformed object.
  static DataPosition fromJson(const nlohmann::json &j,
                               const std::string &source);
  bool operator==(const DataPosition &o) const;
};

/// A batch in the layout train_step takes: [rows, seqLen] ids and mask,
/// row-major. A final partial batch is filled with all-pad, all-masked rows
/// (sampleIndex -1) so shapes stay static and no sample is dropped.
struct Batch {
  int64_t rows = 0, seqLen = 0;
  std::vector<int32_t> ids;
  std::vector<float> lossMask;
  std::vector<int64_t> sampleIndex; // -1 for filler rows
  uint64_t epoch = 0;
  int64_t realRows() const;
  int64_t targetTokens() const; // mask = 1 at t >= 1
};

class Batcher {
public:
  /// Batches over `indices` (into dataset.samples()); the dataset must
  /// outlive the batcher. `shuffle` false keeps `indices` order (eval).
  Batcher(const Dataset &dataset, std::vector<int64_t> indices,
          int64_t batchSize, uint64_t seed, bool shuffle = true);

  /// The next batch; after the last batch of an epoch the next epoch starts
  /// with a fresh shuffle.
  Batch next();
  int64_t batchesPerEpoch() const;
  /// The position of the batch next() returns next.
  DataPosition position() const;
  /// Continues from `p` (from position()). FormatError(source,
  /// "data_position", ...) when it belongs to another dataset or batch size.
  void restore(const DataPosition &p, const std::string &source = "");

private:
  void startEpoch(uint64_t epoch, uint64_t rngState);
  const Dataset *dataset_;
  std::vector<int64_t> indices_, order_;
  int64_t batchSize_;
  bool shuffle_;
  uint64_t epoch_ = 0, index_ = 0, epochRng_ = 0, nextRng_ = 0;
};

/// SplitMix64: the trainer's only RNG, so data order is identical on every
/// platform and serializable as one integer.
class SplitMix64 {
public:
  explicit SplitMix64(uint64_t state) : state_(state) {}
  uint64_t next();
  /// Uniform in [0, bound) without modulo bias.
  uint64_t below(uint64_t bound);
  uint64_t state() const { return state_; }

private:
  uint64_t state_;
};

} // namespace bitloom::trainer

#endif // BITLOOM_TRAINER_DATASET_H
