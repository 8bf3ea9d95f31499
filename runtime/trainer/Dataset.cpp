//===- Dataset.cpp - Training samples, splits and batches -----------------===//

#include "trainer/Dataset.h"

#include "formats/Error.h"
#include "tokenizer/Tokenizer.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <sstream>

namespace bitloom::trainer {

namespace {

constexpr uint64_t kFnvOffset = 1469598103934665603ull;
constexpr uint64_t kFnvPrime = 1099511628211ull;

uint64_t fnv(uint64_t h, const void *data, size_t n) {
  const auto *p = static_cast<const uint8_t *>(data);
  for (size_t i = 0; i < n; ++i)
    h = (h ^ p[i]) * kFnvPrime;
  return h;
}
uint64_t fnv64(uint64_t h, uint64_t v) {
  uint8_t b[8];
  for (int i = 0; i < 8; ++i)
    b[i] = uint8_t(v >> (8 * i));
  return fnv(h, b, 8);
}

std::string hex64(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

int64_t countTargets(const std::vector<uint8_t> &mask, size_t begin,
                     size_t end) {
  int64_t n = 0;
  for (size_t t = begin + 1; t < end; ++t) // t = begin is never predicted
    n += mask[t];
  return n;
}

bool startsWith(const std::vector<int32_t> &a, const std::vector<int32_t> &p) {
  return p.size() <= a.size() && std::equal(p.begin(), p.end(), a.begin());
}
bool endsWith(const std::vector<int32_t> &a, const std::vector<int32_t> &s) {
  return s.size() <= a.size() && std::equal(s.rbegin(), s.rend(), a.rbegin());
}

} // namespace

//===----------------------------------------------------------------------===//
// RNG
//===----------------------------------------------------------------------===//

uint64_t SplitMix64::next() {
  uint64_t z = (state_ += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}

uint64_t SplitMix64::below(uint64_t bound) {
  // Rejection sampling: draws >= the largest multiple of bound are redrawn.
  uint64_t limit = UINT64_MAX - UINT64_MAX % bound;
  uint64_t x;
  do
    x = next();
  while (x >= limit);
  return x % bound;
}

namespace {
template <typename T> void shuffle(std::vector<T> &v, SplitMix64 &rng) {
  for (size_t i = v.size(); i > 1; --i)
    std::swap(v[i - 1], v[rng.below(i)]);
}
} // namespace

//===----------------------------------------------------------------------===//
// Samples and stats
//===----------------------------------------------------------------------===//

int64_t Sample::targets() const { return countTargets(mask, 0, mask.size()); }

std::string DatasetStats::summary() const {
  std::ostringstream s;
  s << format << " dataset";
  if (!templateVariant.empty())
    s << " (chat template " << templateVariant << ")";
  s << ": " << sources << (format == "chat" ? " conversations" : " document")
    << " -> " << samples << " samples; " << tokens << " tokens, "
    << targetTokens << " loss targets, " << paddedTokens << " padding";
  if (truncated)
    s << "; " << truncated << " truncated to the sequence length (losing "
      << truncatedTokens << " tokens)";
  if (split)
    s << "; " << split << " split into " << splitWindows << " windows";
  if (droppedWindows)
    s << "; " << droppedWindows
      << " windows left without a loss target were skipped";
  if (noTargetSamples)
    s << "; " << noTargetSamples
      << " conversations without an assistant turn were skipped";
  if (bosAdded)
    s << "; BOS added to " << bosAdded << " renderings";
  if (inexactBoundaries)
    s << "; " << inexactBoundaries
      << " mask edges fall inside a token (the token is trained on)";
  return s.str();
}

uint64_t Dataset::fingerprint() const {
  uint64_t h = fnv64(kFnvOffset, uint64_t(seqLen_));
  for (const Sample &s : samples_) {
    h = fnv(h, s.ids.data(), s.ids.size() * sizeof(int32_t));
    h = fnv(h, s.mask.data(), s.mask.size());
  }
  return h;
}

//===----------------------------------------------------------------------===//
// Chat tokenization and masks
//===----------------------------------------------------------------------===//

TokenizedChat tokenizeChat(const std::vector<ChatPiece> &pieces,
                           const Tokenizer &tokenizer, ChatBos bos) {
  std::string text;
  std::vector<std::pair<size_t, size_t>> spans; // target byte ranges
  for (const ChatPiece &p : pieces) {
    if (p.target && !p.text.empty()) {
      if (!spans.empty() && spans.back().second == text.size())
        spans.back().second += p.text.size();
      else
        spans.push_back({text.size(), text.size() + p.text.size()});
    }
    text += p.text;
  }
  TokenizedChat out;
  // One encode of the whole string: the ids are exactly the tokenizer's.
  out.ids = tokenizer.encode(text, false);
  const size_t n = out.ids.size();

  // The token index of byte `b`: exact when the text before b (or after it)
  // tokenizes to a prefix (suffix) of the ids; otherwise b falls inside a
  // token merged across it, which counts as a target (any overlap trains, as
  // transformers' assistant masks do) and is reported.
  auto boundary = [&](size_t b, bool isStart) -> size_t {
    if (b == 0)
      return 0;
    if (b == text.size())
      return n;
    std::vector<int32_t> pre = tokenizer.encode(text.substr(0, b), false);
    if (startsWith(out.ids, pre))
      return pre.size();
    std::vector<int32_t> suf = tokenizer.encode(text.substr(b), false);
    if (endsWith(out.ids, suf))
      return n - suf.size();
    ++out.inexact;
    size_t lcp = 0;
    while (lcp < pre.size() && lcp < n && pre[lcp] == out.ids[lcp])
      ++lcp;
    size_t lcs = 0;
    while (lcs < suf.size() && lcs < n &&
           suf[suf.size() - 1 - lcs] == out.ids[n - 1 - lcs])
      ++lcs;
    return isStart ? lcp : n - lcs;
  };
  out.mask.assign(n, 0);
  for (const auto &[b, e] : spans) {
    size_t tb = boundary(b, true), te = boundary(e, false);
    for (size_t t = tb; t < te && t < n; ++t)
      out.mask[t] = 1;
  }
  if (bos == ChatBos::AddIfMissing && tokenizer.bosId()) {
    int32_t bosId = *tokenizer.bosId();
    std::vector<int32_t> special = tokenizer.encode("", true);
    bool adds = !special.empty() && special[0] == bosId;
    if (adds && (out.ids.empty() || out.ids[0] != bosId)) {
      out.ids.insert(out.ids.begin(), bosId);
      out.mask.insert(out.mask.begin(), 0);
      out.bosAdded = true;
    }
  }
  return out;
}

//===----------------------------------------------------------------------===//
// Building
//===----------------------------------------------------------------------===//

struct DatasetBuilder {
  Dataset ds;
  int64_t seqLen;

  DatasetBuilder(const DatasetOptions &o, const Tokenizer &tok,
                 const std::string &name) {
    if (o.seqLen < 2)
      throw FormatError(name, "seq_len",
                        "must be at least 2 (one token predicts the next)");
    seqLen = o.seqLen;
    ds.seqLen_ = o.seqLen;
    ds.padId_ = o.padId ? *o.padId : tok.eosId() ? *tok.eosId() : 0;
  }

  // Appends ids[begin, end) as a sample padded to seqLen; false (and
  // nothing appended) when it has no target.
  bool add(const std::vector<int32_t> &ids, const std::vector<uint8_t> &mask,
           size_t begin, size_t end, int64_t source, int32_t window) {
    if (countTargets(mask, begin, end) == 0)
      return false;
    Sample s;
    s.ids.assign(ids.begin() + begin, ids.begin() + end);
    s.mask.assign(mask.begin() + begin, mask.begin() + end);
    s.mask[0] = 0; // never predicted: keeps sum(mask) = predictions
    s.realTokens = int32_t(end - begin);
    s.ids.resize(seqLen, ds.padId_);
    s.mask.resize(seqLen, 0);
    s.source = source;
    s.window = window;
    ds.stats_.targetTokens += s.targets();
    ds.stats_.paddedTokens += seqLen - s.realTokens;
    ds.samples_.push_back(std::move(s));
    return true;
  }

  // Windows of seqLen sharing one token; returns (kept, dropped).
  std::pair<int64_t, int64_t> windows(const std::vector<int32_t> &ids,
                                      const std::vector<uint8_t> &mask,
                                      int64_t source) {
    int64_t kept = 0, dropped = 0;
    size_t n = ids.size(), start = 0;
    for (int32_t w = 0;; ++w) {
      size_t end = std::min(n, start + size_t(seqLen));
      if (add(ids, mask, start, end, source, w))
        ++kept;
      else
        ++dropped;
      if (end == n)
        break;
      start = end - 1;
    }
    return {kept, dropped};
  }

  Dataset finish(const std::string &name) {
    ds.stats_.samples = int64_t(ds.samples_.size());
    if (ds.samples_.empty())
      throw FormatError(name, "",
                        "no training samples (" + ds.stats_.summary() + ")");
    return std::move(ds);
  }
};

Dataset Dataset::fromText(const std::string &text, const std::string &name,
                          const Tokenizer &tokenizer,
                          const DatasetOptions &options) {
  DatasetBuilder b(options, tokenizer, name);
  b.ds.stats_.format = "text";
  b.ds.stats_.sources = 1;
  // The whole file is one document: special tokens as the post-processor
  // adds them (BOS once), then windows.
  std::vector<int32_t> ids = tokenizer.encode(text, true);
  b.ds.stats_.tokens = int64_t(ids.size());
  std::vector<uint8_t> mask(ids.size(), 1);
  auto [kept, dropped] = b.windows(ids, mask, 0);
  (void)kept;
  b.ds.stats_.droppedWindows += dropped;
  for (Sample &s : b.ds.samples_)
    s.source = s.window; // every text window is its own unit for splits
  return b.finish(name);
}

Dataset Dataset::fromJsonl(const std::string &jsonl, const std::string &name,
                           const Tokenizer &tokenizer,
                           const ChatTemplate &chatTemplate,
                           const DatasetOptions &options) {
  DatasetBuilder b(options, tokenizer, name);
  DatasetStats &st = b.ds.stats_;
  st.format = "chat";
  st.templateVariant = chatTemplate.variant();
  size_t pos = 0;
  int64_t lineNo = 0;
  // A UTF-8 byte order mark is not part of the first line's JSON.
  if (jsonl.compare(0, 3, "\xEF\xBB\xBF") == 0)
    pos = 3;
  while (pos < jsonl.size()) {
    size_t nl = jsonl.find('\n', pos);
    std::string line = jsonl.substr(
        pos, nl == std::string::npos ? std::string::npos : nl - pos);
    pos = nl == std::string::npos ? jsonl.size() : nl + 1;
    ++lineNo;
    if (!line.empty() && line.back() == '\r')
      line.pop_back();
    if (line.find_first_not_of(" \t") == std::string::npos)
      continue;
    const std::string where = "line " + std::to_string(lineNo);
    nlohmann::json j;
    try {
      j = nlohmann::json::parse(line);
    } catch (const nlohmann::json::exception &e) {
      throw FormatError(name, where, std::string("invalid JSON: ") + e.what());
    }
    if (!j.is_object() || !j.contains("messages") || !j["messages"].is_array())
      throw FormatError(name, where,
                        "expected {\"messages\": [{\"role\": ..., \"content\": "
                        "...}, ...]}");
    std::vector<ChatMessage> msgs;
    for (size_t i = 0; i < j["messages"].size(); ++i) {
      const nlohmann::json &m = j["messages"][i];
      const std::string field = where + ": messages[" + std::to_string(i) + "]";
      if (!m.is_object() || !m.contains("role") || !m["role"].is_string() ||
          !m.contains("content") || !m["content"].is_string())
        throw FormatError(name, field,
                          "expected {\"role\": string, \"content\": string}");
      std::string role = m["role"];
      if (role != "system" && role != "user" && role != "assistant")
        throw FormatError(name, field + ".role",
                          "\"" + role +
                              "\" (supported: system, user, assistant)");
      msgs.push_back({role, m["content"].get<std::string>()});
    }
    if (msgs.empty())
      throw FormatError(name, where, "\"messages\" is empty");
    ++st.sources;
    std::vector<ChatPiece> pieces;
    try {
      pieces = chatTemplate.render(msgs);
    } catch (const ChatTemplateError &e) {
      throw FormatError(name, where,
                        std::string("the chat template (") +
                            chatTemplate.variant() + ") raises: " + e.what());
    }
    TokenizedChat tc = tokenizeChat(pieces, tokenizer, options.chatBos);
    st.tokens += int64_t(tc.ids.size());
    st.inexactBoundaries += tc.inexact;
    st.bosAdded += tc.bosAdded;
    if (countTargets(tc.mask, 0, tc.mask.size()) == 0) {
      ++st.noTargetSamples;
      continue;
    }
    const size_t n = tc.ids.size();
    if (n <= size_t(b.seqLen)) {
      b.add(tc.ids, tc.mask, 0, n, lineNo, 0);
    } else if (options.longSamples == LongSamplePolicy::Truncate) {
      ++st.truncated;
      st.truncatedTokens += int64_t(n) - b.seqLen;
      if (!b.add(tc.ids, tc.mask, 0, size_t(b.seqLen), lineNo, 0))
        ++st.droppedWindows;
    } else {
      ++st.split;
      auto [kept, dropped] = b.windows(tc.ids, tc.mask, lineNo);
      st.splitWindows += kept;
      st.droppedWindows += dropped;
    }
  }
  return b.finish(name);
}

namespace {
std::string readWhole(const std::string &path) {
  std::ifstream in(path, std::ios::binary);
  if (!in)
    throw FormatError(path, "", "cannot open");
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}
bool endsWithStr(const std::string &s, const std::string &suffix) {
  return s.size() >= suffix.size() &&
         s.compare(s.size() - suffix.size(), suffix.size(), suffix) == 0;
}
} // namespace

Dataset Dataset::load(const std::string &path, const Tokenizer &tokenizer,
                      const ChatTemplate *chatTemplate,
                      const DatasetOptions &options) {
  DatasetFormat format = options.format;
  if (format == DatasetFormat::Auto)
    format =
        endsWithStr(path, ".jsonl") ? DatasetFormat::Chat : DatasetFormat::Text;
  std::string text = readWhole(path);
  if (format == DatasetFormat::Text)
    return fromText(text, path, tokenizer, options);
  if (!chatTemplate)
    throw FormatError(path, "",
                      "a chat dataset needs the model's chat template");
  return fromJsonl(text, path, tokenizer, *chatTemplate, options);
}

//===----------------------------------------------------------------------===//
// Validation split
//===----------------------------------------------------------------------===//

DatasetSplit splitValidation(const Dataset &dataset, double fraction,
                             uint64_t seed) {
  if (!(fraction >= 0.0 && fraction < 1.0))
    throw FormatError("", "validation fraction", "must be in [0, 1)");
  DatasetSplit out;
  const std::vector<Sample> &samples = dataset.samples();
  std::vector<int64_t> sources;
  for (const Sample &s : samples)
    if (sources.empty() || sources.back() != s.source)
      sources.push_back(s.source);
  if (fraction == 0.0) {
    for (size_t i = 0; i < samples.size(); ++i)
      out.train.push_back(int64_t(i));
    return out;
  }
  if (sources.size() < 2)
    throw FormatError("", "validation fraction",
                      "the dataset has one sample source; nothing to hold out");
  // A separate stream from the batch order's, so changing one doesn't move
  // the other.
  SplitMix64 rng(seed ^ 0x76616C6964617465ull); // "validate"
  std::vector<int64_t> order = sources;
  shuffle(order, rng);
  int64_t nVal = std::llround(fraction * double(sources.size()));
  nVal = std::clamp<int64_t>(nVal, 1, int64_t(sources.size()) - 1);
  std::vector<int64_t> val(order.begin(), order.begin() + nVal);
  std::sort(val.begin(), val.end());
  for (size_t i = 0; i < samples.size(); ++i)
    (std::binary_search(val.begin(), val.end(), samples[i].source)
         ? out.validation
         : out.train)
        .push_back(int64_t(i));
  return out;
}

//===----------------------------------------------------------------------===//
// Batching
//===----------------------------------------------------------------------===//

nlohmann::json DataPosition::toJson() const {
  // 64-bit values as hex strings: JSON readers with double numbers would
  // round them.
  return {{"epoch", epoch},
          {"index", index},
          {"epoch_rng", hex64(epochRng)},
          {"samples", samples},
          {"batch_size", batchSize},
          {"fingerprint", hex64(fingerprint)}};
}

DataPosition DataPosition::fromJson(const nlohmann::json &j,
                                    const std::string &source) {
  auto u64 = [&](const char *key) -> uint64_t {
    if (!j.is_object() || !j.contains(key))
      throw FormatError(source, std::string("data_position.") + key, "missing");
    const nlohmann::json &v = j[key];
    if (v.is_number_unsigned())
      return v.get<uint64_t>();
    if (v.is_number_integer() && v.get<int64_t>() >= 0)
      return uint64_t(v.get<int64_t>());
    if (v.is_string()) {
      const std::string s = v.get<std::string>();
      if (s.empty() || s.size() > 16 ||
          s.find_first_not_of("0123456789abcdef") != std::string::npos)
        throw FormatError(source, std::string("data_position.") + key,
                          "not a 64-bit hex value");
      return std::stoull(s, nullptr, 16);
    }
    throw FormatError(source, std::string("data_position.") + key,
                      "not an unsigned integer");
  };
  DataPosition p;
  p.epoch = u64("epoch");
  p.index = u64("index");
  p.epochRng = u64("epoch_rng");
  p.samples = u64("samples");
  p.batchSize = u64("batch_size");
  p.fingerprint = u64("fingerprint");
  return p;
}

bool DataPosition::operator==(const DataPosition &o) const {
  return epoch == o.epoch && index == o.index && epochRng == o.epochRng &&
         samples == o.samples && batchSize == o.batchSize &&
         fingerprint == o.fingerprint;
}

int64_t Batch::realRows() const {
  return int64_t(std::count_if(sampleIndex.begin(), sampleIndex.end(),
                               [](int64_t i) { return i >= 0; }));
}

int64_t Batch::targetTokens() const {
  int64_t n = 0;
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t t = 1; t < seqLen; ++t)
      n += lossMask[r * seqLen + t] != 0.0f;
  return n;
}

Batcher::Batcher(const Dataset &dataset, std::vector<int64_t> indices,
                 int64_t batchSize, uint64_t seed, bool shuffle)
    : dataset_(&dataset), indices_(std::move(indices)), batchSize_(batchSize),
      shuffle_(shuffle) {
  if (batchSize_ < 1)
    throw FormatError("", "batch_size", "must be at least 1");
  if (indices_.empty())
    throw FormatError("", "dataset", "no samples to batch");
  for (int64_t i : indices_)
    if (i < 0 || i >= int64_t(dataset.samples().size()))
      throw std::out_of_range("Batcher: sample index out of range");
  startEpoch(0, seed);
}

void Batcher::startEpoch(uint64_t epoch, uint64_t rngState) {
  epoch_ = epoch;
  index_ = 0;
  epochRng_ = rngState;
  SplitMix64 rng(rngState);
  order_ = indices_;
  if (shuffle_)
    shuffle(order_, rng);
  // Mixed once more so the next epoch's state differs even without a
  // shuffle draw (one-sample datasets).
  rng.next();
  nextRng_ = rng.state();
}

int64_t Batcher::batchesPerEpoch() const {
  return (int64_t(indices_.size()) + batchSize_ - 1) / batchSize_;
}

Batch Batcher::next() {
  if (index_ >= order_.size())
    startEpoch(epoch_ + 1, nextRng_);
  const int64_t L = dataset_->seqLen();
  Batch b;
  b.rows = batchSize_;
  b.seqLen = L;
  b.epoch = epoch_;
  b.ids.assign(size_t(batchSize_ * L), dataset_->padId());
  b.lossMask.assign(size_t(batchSize_ * L), 0.0f);
  b.sampleIndex.assign(size_t(batchSize_), -1);
  for (int64_t r = 0; r < batchSize_ && index_ < order_.size(); ++r) {
    int64_t si = order_[index_++];
    const Sample &s = dataset_->samples()[size_t(si)];
    std::copy(s.ids.begin(), s.ids.end(), b.ids.begin() + r * L);
    for (int64_t t = 0; t < L; ++t)
      b.lossMask[size_t(r * L + t)] = s.mask[size_t(t)];
    b.sampleIndex[size_t(r)] = si;
  }
  return b;
}

DataPosition Batcher::position() const {
  DataPosition p;
  p.epoch = epoch_;
  p.index = index_;
  p.epochRng = epochRng_;
  p.samples = indices_.size();
  p.batchSize = uint64_t(batchSize_);
  uint64_t h = fnv64(dataset_->fingerprint(), indices_.size());
  for (int64_t i : indices_)
    h = fnv64(h, uint64_t(i));
  p.fingerprint = h;
  return p;
}

void Batcher::restore(const DataPosition &p, const std::string &source) {
  DataPosition mine = position();
  if (p.samples != mine.samples || p.fingerprint != mine.fingerprint)
    throw FormatError(source, "data_position",
                      "saved for a different dataset or split (" +
                          std::to_string(p.samples) + " samples, fingerprint " +
                          hex64(p.fingerprint) + "; now " +
                          std::to_string(mine.samples) + ", " +
                          hex64(mine.fingerprint) + ")");
  if (p.batchSize != mine.batchSize)
    throw FormatError(source, "data_position",
                      "saved with batch size " + std::to_string(p.batchSize) +
                          ", now " + std::to_string(mine.batchSize));
  if (p.index > indices_.size())
    throw FormatError(source, "data_position.index", "past the epoch's end");
  startEpoch(p.epoch, p.epochRng);
  index_ = p.index;
}

} // namespace bitloom::trainer
