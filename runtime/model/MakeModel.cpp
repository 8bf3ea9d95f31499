//===- MakeModel.cpp - Seeded random BitNet checkpoints -------------------===//
//
// Writes checkpoints shaped like real ones (what transformers'
// save_pretrained and llama.cpp's convert_hf_to_gguf.py produce for a
// BitNet b1.58 model) from seeded random master weights. A tensor's values
// depend only on (seed, HF name), so the HF and GGUF files of one seed hold
// the same model. Tensors are generated and written one at a time: a 2b4t
// checkpoint never sits in memory.
//
//===----------------------------------------------------------------------===//
#include "model/MakeModel.h"

#include "formats/Error.h"
#include "formats/Gguf.h"
#include "formats/MappedFile.h"
#include "model/CheckpointWriter.h"
#include "model/ModelLayout.h"
#include "model/Random.h"
#include "tokenizer/BpeTrainer.h"

#include <nlohmann/json.hpp>

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstring>
#include <exception>
#include <filesystem>
#include <thread>

namespace fs = std::filesystem;
using json = nlohmann::json;

namespace bitloom {

namespace {

#include "model/BundledCorpus.inc"

using detail::TensorRole;
using detail::TensorSpec;

constexpr float kInitStd = 0.02f; // BitNetConfig.initializer_range
constexpr size_t kChunk = size_t(1) << 20;

std::string bundledCorpus() {
  std::string s;
  for (const char *part : kBundledCorpusParts)
    s += part;
  return s;
}

struct Preset {
  const char *name;
  int64_t vocab, hidden, ffn, layers, heads, kvHeads, maxPos;
  double theta;
};

// "tiny256" is not advertised: it exists so tests can write TQ1_0/TQ2_0
// GGUFs, whose 256-weight blocks need input dims that are multiples of 256.
const Preset kPresets[] = {
    {"tiny", 512, 64, 160, 2, 4, 2, 256, 10000.0},
    {"tiny256", 512, 256, 512, 2, 4, 2, 256, 10000.0},
    {"small", 32000, 768, 2048, 12, 12, 4, 2048, 500000.0},
    {"2b4t", 128256, 2560, 6912, 30, 20, 5, 4096, 500000.0},
};

// Llama-3's special tokens that its chat template uses.
const char *const kBos = "<|begin_of_text|>";
const char *const kEndOfText = "<|end_of_text|>";
const char *const kStartHeader = "<|start_header_id|>";
const char *const kEndHeader = "<|end_header_id|>";
const char *const kEot = "<|eot_id|>";

// Llama-3-Instruct's template (Jinja escapes: the \n stay literal here).
const char *const kChatTemplate =
    R"({% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + '<|end_header_id|>\n\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %})";

// Same rounding as floatToBf16 (finite values only, which is all we make),
// inlined: make-model rounds ~2.4e9 values for 2b4t.
inline uint16_t bf16Bits(float f) {
  uint32_t u;
  std::memcpy(&u, &f, 4);
  return uint16_t((u + 0x7fffu + ((u >> 16) & 1)) >> 16);
}
inline float bf16Value(uint16_t b) {
  uint32_t u = uint32_t(b) << 16;
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
inline float bf16Round(float x) { return bf16Value(bf16Bits(x)); }

unsigned workerCount() {
  unsigned n = std::thread::hardware_concurrency();
  return std::clamp(n, 1u, 8u);
}

/// Runs fn(begin, end) over [0, n) split into contiguous pieces whose
/// boundaries are multiples of `grain`. Results never depend on the number
/// of threads: every piece of work is defined by its indices alone.
template <typename Fn> void parallelFor(uint64_t n, uint64_t grain, Fn fn) {
  const uint64_t grains = (n + grain - 1) / grain;
  const unsigned threads = unsigned(std::min<uint64_t>(workerCount(), grains));
  if (threads <= 1) {
    fn(uint64_t(0), n);
    return;
  }
  std::vector<std::thread> pool;
  std::vector<std::exception_ptr> errors(threads);
  for (unsigned t = 0; t < threads; ++t) {
    uint64_t b = std::min(n, grains * t / threads * grain);
    uint64_t e = std::min(n, grains * (t + 1) / threads * grain);
    pool.emplace_back([&, t, b, e] {
      try {
        fn(b, e);
      } catch (...) {
        errors[t] = std::current_exception();
      }
    });
  }
  for (std::thread &th : pool)
    th.join();
  for (const std::exception_ptr &err : errors)
    if (err)
      std::rethrow_exception(err);
}

/// Elements per independently seeded random stream: lets generation run in
/// parallel while a tensor's values stay a function of (seed, name) only.
constexpr uint64_t kStreamBlock = uint64_t(1) << 16;
static_assert(kChunk % kStreamBlock == 0, "chunks hold whole stream blocks");

/// The seeded master values of one tensor, already rounded to bf16 (the
/// checkpoint's master dtype).
class MasterValues {
public:
  MasterValues(uint64_t seed, const TensorSpec &spec, bool repeat)
      : seed_(streamSeed(seed, spec.hfName)),
        norm_(spec.role == TensorRole::Norm), repeat_(repeat) {}

  /// Elements [begin, end); `begin` is a multiple of kStreamBlock.
  void fill(uint64_t begin, uint64_t end, float *out) const {
    for (uint64_t blk = begin / kStreamBlock; blk * kStreamBlock < end; ++blk) {
      Xoshiro256 rng(seed_ ^ ((repeat_ ? 0 : blk) * 0xd1b54a32d192ed03ULL));
      const uint64_t e = std::min(end, (blk + 1) * kStreamBlock);
      for (uint64_t i = blk * kStreamBlock; i < e; ++i) {
        float z = rng.normal(kInitStd);
        // Norm weights: 1 plus small noise, so norm gradients are not all
        // alike in tests.
        out[i - begin] = bf16Round(norm_ ? 1.0f + z : z);
      }
    }
  }

private:
  static uint64_t streamSeed(uint64_t seed, const std::string &name) {
    uint64_t x = seed;
    return splitmix64(x) ^ fnv1a64(name);
  }
  uint64_t seed_;
  bool norm_;
  bool repeat_; // every stream block repeats the first
};

uint64_t numElements(const std::vector<int64_t> &shape) {
  uint64_t n = 1;
  for (int64_t d : shape)
    n *= uint64_t(d);
  return n;
}

struct GeneratedTokenizer {
  BpeVocab vocab;
  int32_t bos = -1, endOfText = -1, eot = -1;
};

GeneratedTokenizer buildTokenizer(const ModelConfig &c) {
  GeneratedTokenizer t;
  // The corpus runs out of merges long before 32k or 128k tokens; the
  // trainer then fills the vocabulary with reserved special tokens, as
  // Llama-3 does, so the tokenizer always has exactly vocab_size tokens.
  t.vocab = trainByteLevelBpe(
      bundledCorpus(), size_t(c.vocabSize), PreTokenizer::Llama3,
      {kBos, kEndOfText, kStartHeader, kEndHeader, kEot});
  if (int64_t(t.vocab.tokens.size()) != c.vocabSize)
    throw std::logic_error("make-model: tokenizer size != vocab_size");
  for (int32_t id : t.vocab.specialIds) {
    const std::string &tok = t.vocab.tokens.at(size_t(id));
    if (tok == kBos)
      t.bos = id;
    else if (tok == kEndOfText)
      t.endOfText = id;
    else if (tok == kEot)
      t.eot = id;
  }
  if (t.bos < 0 || t.endOfText < 0 || t.eot < 0)
    throw std::logic_error("make-model: special tokens missing from vocab");
  return t;
}

/// Element encoders: n floats -> bytes at dst.
void encodeBf16(const float *x, size_t n, uint8_t *dst) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t b = bf16Bits(x[i]);
    std::memcpy(dst + 2 * i, &b, 2);
  }
}
void encodeF16(const float *x, size_t n, uint8_t *dst) {
  for (size_t i = 0; i < n; ++i) {
    uint16_t b = floatToHalf(x[i]);
    std::memcpy(dst + 2 * i, &b, 2);
  }
}
void encodeF32(const float *x, size_t n, uint8_t *dst) {
  std::memcpy(dst, x, n * 4);
}
using Encoder = void (*)(const float *, size_t, uint8_t *);

/// Encodes `n` floats into the sink in chunks, in parallel.
void writeEncoded(const float *x, uint64_t n, size_t elemBytes, Encoder enc,
                  TensorSink &sink) {
  std::vector<uint8_t> bytes(size_t(std::min<uint64_t>(n, kChunk)) * elemBytes);
  for (uint64_t done = 0; done < n;) {
    const uint64_t m = std::min<uint64_t>(n - done, kChunk);
    parallelFor(m, kStreamBlock, [&](uint64_t b, uint64_t e) {
      enc(x + done + b, size_t(e - b), bytes.data() + b * elemBytes);
    });
    sink.write(bytes.data(), size_t(m * elemBytes));
    done += m;
  }
}

/// Streams the master values of `spec`, chunk by chunk, without holding the
/// tensor (embeddings of 2b4t are 328M values).
void streamMaster(uint64_t seed, bool repeat, const TensorSpec &spec,
                  size_t elemBytes, Encoder enc, TensorSink &sink) {
  const MasterValues master(seed, spec, repeat);
  const uint64_t n = numElements(spec.shape);
  const size_t chunk = size_t(std::min<uint64_t>(n, kChunk));
  std::vector<float> values(chunk);
  std::vector<uint8_t> bytes(chunk * elemBytes);
  for (uint64_t done = 0; done < n;) {
    const uint64_t m = std::min<uint64_t>(n - done, kChunk);
    parallelFor(m, kStreamBlock, [&](uint64_t b, uint64_t e) {
      master.fill(done + b, done + e, values.data() + b);
      enc(values.data() + b, size_t(e - b), bytes.data() + b * elemBytes);
    });
    sink.write(bytes.data(), size_t(m * elemBytes));
    done += m;
  }
}

/// A whole projection's master, ternarized.
struct TernaryTensor {
  std::vector<float> master;
  std::vector<int8_t> codes;
  float scale; // s = mean|W|
  float sInv;  // 1/s as transformers computes it (float32)
};

TernaryTensor ternarizeMaster(uint64_t seed, bool repeat,
                              const TensorSpec &spec) {
  const uint64_t n = numElements(spec.shape);
  TernaryTensor t;
  t.master.resize(n);
  const MasterValues master(seed, spec, repeat);
  parallelFor(n, kStreamBlock, [&](uint64_t b, uint64_t e) {
    master.fill(b, e, t.master.data() + b);
  });
  t.codes.resize(n);
  t.scale = ternarizeAbsmean(t.master.data(), n, t.codes.data());
  t.sInv = 1.0f / t.scale;
  return t;
}

void writeJson(const fs::path &path, const json &j) {
  std::string text = j.dump(2) + "\n";
  writeFileAtomically(path.string(), text.data(), text.size());
}

//===----------------------------------------------------------------------===//
// Hugging Face
//===----------------------------------------------------------------------===//

void writeHf(const MakeModelOptions &o, const ModelConfig &c,
             const GeneratedTokenizer &tok, const fs::path &dir) {
  std::error_code ec;
  if (fs::exists(dir, ec) && !fs::is_directory(dir, ec))
    throw FormatError(dir.string(), "",
                      "exists and is not a directory (HF output is a "
                      "directory)");
  fs::create_directories(dir, ec);
  if (ec)
    throw FormatError(dir.string(), "", "cannot create: " + ec.message());

  // config.json: the keys BitNetConfig.to_json_string writes (sorted), with
  // the quantization_config transformers needs to build (Auto)BitLinear.
  json config = {
      {"architectures", {"BitNetForCausalLM"}},
      {"attention_bias", false},
      {"attention_dropout", 0.0},
      {"bos_token_id", tok.bos},
      {"eos_token_id", tok.eot},
      {"hidden_act", "relu2"},
      {"hidden_size", c.hiddenSize},
      {"initializer_range", 0.02},
      {"intermediate_size", c.intermediateSize},
      {"max_position_embeddings", c.maxPositionEmbeddings},
      {"model_type", "bitnet"},
      {"num_attention_heads", c.numHeads},
      {"num_hidden_layers", c.numLayers},
      {"num_key_value_heads", c.numKvHeads},
      {"quantization_config",
       {{"linear_class", "autobitlinear"},
        {"quant_method", "bitnet"},
        {"quantization_mode", o.packed ? "offline" : "online"}}},
      {"rms_norm_eps", c.rmsNormEps},
      {"rope_theta", c.ropeTheta},
      {"tie_word_embeddings", c.tieWordEmbeddings},
      {"torch_dtype", "bfloat16"},
      {"transformers_version", "4.52.0"},
      {"use_cache", true},
      {"vocab_size", c.vocabSize},
  };
  writeJson(dir / "config.json", config);

  json generation = {{"_from_model_config", true},
                     {"bos_token_id", tok.bos},
                     {"eos_token_id", {tok.endOfText, tok.eot}},
                     {"transformers_version", "4.52.0"}};
  writeJson(dir / "generation_config.json", generation);

  std::string tokenizerJson = toHfTokenizerJson(tok.vocab, std::string(kBos));
  writeFileAtomically((dir / "tokenizer.json").string(), tokenizerJson.data(),
                      tokenizerJson.size());

  json added = json::object();
  for (int32_t id : tok.vocab.specialIds)
    added[std::to_string(id)] = {{"content", tok.vocab.tokens[size_t(id)]},
                                 {"lstrip", false},
                                 {"normalized", false},
                                 {"rstrip", false},
                                 {"single_word", false},
                                 {"special", true}};
  json tokenizerConfig = {
      {"added_tokens_decoder", added},
      {"bos_token", kBos},
      {"chat_template", kChatTemplate},
      {"clean_up_tokenization_spaces", true},
      {"eos_token", kEot},
      {"model_input_names", {"input_ids", "attention_mask"}},
      {"model_max_length", c.maxPositionEmbeddings},
      {"tokenizer_class", "PreTrainedTokenizerFast"},
  };
  writeJson(dir / "tokenizer_config.json", tokenizerConfig);

  // model.safetensors: bf16 masters, or packed projections + weight_scale.
  const std::vector<TensorSpec> layout = detail::tensorLayout(c);
  struct Item {
    size_t spec;
    bool scale; // the weight_scale that follows a packed weight
  };
  std::vector<Item> items;
  SafetensorsStreamWriter writer;
  writer.setMetadata({{"format", "pt"}}); // transformers checks this
  for (size_t i = 0; i < layout.size(); ++i) {
    const TensorSpec &s = layout[i];
    if (o.packed && s.role == TensorRole::Projection) {
      writer.add(s.hfName, DType::U8, {s.shape[0] / 4, s.shape[1]});
      items.push_back({i, false});
      writer.add(s.hfName.substr(0, s.hfName.size() - 6) + "weight_scale",
                 DType::BF16, {1});
      items.push_back({i, true});
    } else {
      writer.add(s.hfName, DType::BF16, s.shape);
      items.push_back({i, false});
    }
  }
  float lastScale = 1.0f;
  writer.write(
      (dir / "model.safetensors").string(), [&](size_t k, TensorSink &sink) {
        const Item &item = items[k];
        const TensorSpec &s = layout[item.spec];
        if (item.scale) {
          uint16_t b = floatToBf16(lastScale);
          sink.write(&b, 2);
        } else if (o.packed && s.role == TensorRole::Projection) {
          // transformers' pack_weights: packed row r holds rows
          // r + i*P in bits 2i..2i+1 as code + 1.
          TernaryTensor t = ternarizeMaster(o.seed, o.repeatBlocks, s);
          const uint64_t rows = uint64_t(s.shape[0]);
          const uint64_t cols = uint64_t(s.shape[1]);
          const uint64_t p = rows / 4;
          std::vector<uint8_t> packed(size_t(p * cols), 0);
          parallelFor(p, 1, [&](uint64_t rb, uint64_t re) {
            for (uint64_t r = rb; r < re; ++r)
              for (uint64_t i = 0; i < 4; ++i) {
                const int8_t *src = &t.codes[size_t((r + i * p) * cols)];
                uint8_t *dst = &packed[size_t(r * cols)];
                for (uint64_t col = 0; col < cols; ++col)
                  dst[col] |= uint8_t((src[col] + 1) << (2 * i));
              }
          });
          lastScale = t.scale;
          sink.write(packed.data(), packed.size());
        } else {
          streamMaster(o.seed, o.repeatBlocks, s, 2, encodeBf16, sink);
        }
      });
}

//===----------------------------------------------------------------------===//
// GGUF
//===----------------------------------------------------------------------===//

struct GgufProjectionType {
  GgmlType type;
  uint32_t fileType; // llama_ftype
};

GgufProjectionType parseProjectionType(const std::string &name) {
  std::string u = name;
  for (char &ch : u)
    ch = char(std::toupper(static_cast<unsigned char>(ch)));
  if (u == "TQ2_0")
    return {GgmlType::TQ2_0, 37};
  if (u == "TQ1_0")
    return {GgmlType::TQ1_0, 36};
  if (u == "F32")
    return {GgmlType::F32, 0};
  if (u == "F16")
    return {GgmlType::F16, 1};
  if (u == "BF16")
    return {GgmlType::BF16, 32};
  throw FormatError("", "--gguf-type",
                    "unknown projection type '" + name +
                        "' (TQ2_0, TQ1_0, F32, F16 or BF16)");
}

void writeGguf(const MakeModelOptions &o, const ModelConfig &c,
               const GeneratedTokenizer &tok, const fs::path &path) {
  const GgufProjectionType proj = parseProjectionType(o.ggufProjectionType);
  const bool ternaryBlocks =
      proj.type == GgmlType::TQ1_0 || proj.type == GgmlType::TQ2_0;
  // convert_hf_to_gguf.py keeps token_embd at F16 for TQ outputs.
  const GgmlType embType = ternaryBlocks ? GgmlType::F16 : proj.type;

  std::error_code ec;
  if (fs::is_directory(path, ec))
    throw FormatError(path.string(), "",
                      "is a directory (GGUF output is a file path)");
  if (path.has_parent_path()) {
    fs::create_directories(path.parent_path(), ec);
    if (ec)
      throw FormatError(path.parent_path().string(), "",
                        "cannot create: " + ec.message());
  }

  GgufStreamWriter w;
  const std::string a = "bitnet.";
  w.set("general.architecture", GgufValue::string("bitnet"));
  w.set("general.type", GgufValue::string("model"));
  w.set("general.name", GgufValue::string("bitloom-" + o.preset));
  w.set(a + "block_count", GgufValue::u32(uint32_t(c.numLayers)));
  w.set(a + "context_length",
        GgufValue::u32(uint32_t(c.maxPositionEmbeddings)));
  w.set(a + "embedding_length", GgufValue::u32(uint32_t(c.hiddenSize)));
  w.set(a + "feed_forward_length",
        GgufValue::u32(uint32_t(c.intermediateSize)));
  w.set(a + "attention.head_count", GgufValue::u32(uint32_t(c.numHeads)));
  w.set(a + "attention.head_count_kv", GgufValue::u32(uint32_t(c.numKvHeads)));
  w.set(a + "rope.freq_base", GgufValue::f32(float(c.ropeTheta)));
  w.set(a + "attention.layer_norm_rms_epsilon",
        GgufValue::f32(float(c.rmsNormEps)));
  w.set("general.file_type", GgufValue::u32(proj.fileType));
  w.set(a + "vocab_size", GgufValue::u32(uint32_t(c.vocabSize)));
  w.set(a + "rope.dimension_count", GgufValue::u32(uint32_t(c.headDim)));
  w.set(a + "rope.scaling.type", GgufValue::string("linear"));
  w.set(a + "rope.scaling.factor", GgufValue::f32(1.0f));
  w.set("general.quantization_version", GgufValue::u32(2));

  // Vocabulary as _set_vocab_gpt2 writes it (and as
  // writeGgufTokenizerMetadata does for a GgufWriter): specials, including
  // the trainer's reserved padding tokens, are control tokens.
  std::vector<int32_t> types(tok.vocab.tokens.size(), 1); // NORMAL
  for (int32_t id : tok.vocab.specialIds)
    types[size_t(id)] = 3; // CONTROL
  std::vector<std::string> merges;
  merges.reserve(tok.vocab.merges.size());
  for (const auto &m : tok.vocab.merges)
    merges.push_back(m.first + " " + m.second);
  w.set("tokenizer.ggml.model", GgufValue::string("gpt2"));
  w.set("tokenizer.ggml.pre",
        GgufValue::string(tok.vocab.pre == PreTokenizer::Llama3 ? "llama-bpe"
                                                                : "gpt-2"));
  w.set("tokenizer.ggml.tokens", GgufValue::stringArray(tok.vocab.tokens));
  w.set("tokenizer.ggml.token_type", GgufValue::i32Array(types));
  w.set("tokenizer.ggml.merges", GgufValue::stringArray(std::move(merges)));
  w.set("tokenizer.ggml.bos_token_id", GgufValue::u32(uint32_t(tok.bos)));
  w.set("tokenizer.ggml.eos_token_id", GgufValue::u32(uint32_t(tok.eot)));
  w.set("tokenizer.ggml.add_bos_token", GgufValue::boolean(true));
  w.set("tokenizer.chat_template", GgufValue::string(kChatTemplate));

  const std::vector<TensorSpec> layout = detail::tensorLayout(c);
  std::vector<GgmlType> types2;
  for (const TensorSpec &s : layout) {
    GgmlType t = GgmlType::F32; // norms
    if (s.role == TensorRole::Embedding || s.role == TensorRole::LmHead)
      t = embType;
    else if (s.role == TensorRole::Projection)
      // Like the converter (gguf QuantError -> "falling back to F16"): rows
      // that are not whole 256-weight blocks are written F16.
      t = ternaryBlocks && s.shape[1] % 256 != 0 ? GgmlType::F16 : proj.type;
    types2.push_back(t);
    w.add(s.ggufName, t,
          std::vector<int64_t>(s.shape.rbegin(), s.shape.rend()));
  }

  w.write(path.string(), [&](size_t k, TensorSink &sink) {
    const TensorSpec &s = layout[k];
    const GgmlType t = types2[k];
    const size_t elemBytes = t == GgmlType::F32 ? 4 : 2;
    const Encoder enc = t == GgmlType::F32   ? encodeF32
                        : t == GgmlType::F16 ? encodeF16
                                             : encodeBf16;
    if (s.role != TensorRole::Projection) {
      streamMaster(o.seed, o.repeatBlocks, s, elemBytes, enc, sink);
      return;
    }
    // The converter's weight_quant: (w * (1/s)).round().clamp(-1, 1) / (1/s)
    // in float32, cast back to the master dtype (bf16), then stored in the
    // output type. So every GGUF projection holds {-v, 0, v}.
    TernaryTensor tt = ternarizeMaster(o.seed, o.repeatBlocks, s);
    const float v = bf16Round(1.0f / tt.sInv);
    std::vector<float> &values = tt.master; // reused in place
    const uint64_t n = values.size();
    parallelFor(n, kStreamBlock, [&](uint64_t b, uint64_t e) {
      for (uint64_t i = b; i < e; ++i)
        values[i] = float(tt.codes[i]) * v;
    });
    if (t == GgmlType::TQ1_0 || t == GgmlType::TQ2_0) {
      const DType dt = t == GgmlType::TQ1_0 ? DType::TQ1_0 : DType::TQ2_0;
      const uint64_t cols = uint64_t(s.shape[1]);
      const size_t rowBytes = dtypeStorageBytes(dt, cols);
      std::vector<uint8_t> bytes(rowBytes * size_t(s.shape[0]));
      parallelFor(uint64_t(s.shape[0]), 1, [&](uint64_t rb, uint64_t re) {
        quantizeTernary(dt, values.data() + rb * cols,
                        bytes.data() + rb * rowBytes, (re - rb) * cols);
      });
      sink.write(bytes.data(), bytes.size());
    } else {
      writeEncoded(values.data(), n, elemBytes, enc, sink);
    }
  });
}

} // namespace

float ternarizeAbsmean(const float *w, uint64_t n, int8_t *codes) {
  // mean|w|: per block of kStreamBlock, four interleaved double sums, then
  // the blocks in order. A fixed order, so deterministic, yet parallel.
  const uint64_t blocks = (n + kStreamBlock - 1) / kStreamBlock;
  std::vector<double> partial(static_cast<size_t>(blocks));
  parallelFor(blocks, 1, [&](uint64_t bb, uint64_t be) {
    for (uint64_t blk = bb; blk < be; ++blk) {
      const uint64_t b = blk * kStreamBlock;
      const uint64_t e = std::min(n, b + kStreamBlock);
      double acc[4] = {0, 0, 0, 0};
      uint64_t i = b;
      for (; i + 4 <= e; i += 4)
        for (int k = 0; k < 4; ++k)
          acc[k] += std::fabs(double(w[i + uint64_t(k)]));
      for (; i < e; ++i)
        acc[0] += std::fabs(double(w[i]));
      partial[size_t(blk)] = (acc[0] + acc[1]) + (acc[2] + acc[3]);
    }
  });
  double sum = 0;
  for (double p : partial)
    sum += p;
  const float s = std::max(float(n ? sum / double(n) : 0.0), 1e-5f);
  const float sInv = 1.0f / s;
  // clamp(round_half_even(x), -1, 1) == (x > 0.5) - (x < -0.5).
  parallelFor(n, kStreamBlock, [&](uint64_t b, uint64_t e) {
    for (uint64_t i = b; i < e; ++i) {
      const float x = w[i] * sInv;
      codes[i] = int8_t(int(x > 0.5f) - int(x < -0.5f));
    }
  });
  return s;
}

ModelConfig presetConfig(const std::string &preset) {
  for (const Preset &p : kPresets) {
    if (preset != p.name)
      continue;
    ModelConfig c;
    c.vocabSize = p.vocab;
    c.hiddenSize = p.hidden;
    c.intermediateSize = p.ffn;
    c.numLayers = p.layers;
    c.numHeads = p.heads;
    c.numKvHeads = p.kvHeads;
    c.headDim = p.hidden / p.heads;
    c.maxPositionEmbeddings = p.maxPos;
    c.rmsNormEps = 1e-5;
    c.ropeTheta = p.theta;
    c.tieWordEmbeddings = true;
    c.hiddenAct = "relu2";
    c.weightQuant = WeightQuant::Online;
    return c;
  }
  throw FormatError("", "--preset",
                    "unknown preset '" + preset + "' (tiny, small or 2b4t)");
}

void makeModel(const MakeModelOptions &options, const std::string &out) {
  if (out.empty())
    throw FormatError("", "--out", "missing output path");
  ModelConfig c = presetConfig(options.preset);
  if (options.format == CheckpointFormat::Gguf) {
    if (options.packed)
      throw FormatError("", "--packed",
                        "applies to the hf format only (GGUF projections are "
                        "always ternary; see --gguf-type)");
    parseProjectionType(options.ggufProjectionType); // fail before training
  }
  GeneratedTokenizer tok = buildTokenizer(c);
  c.bosTokenId = tok.bos;
  c.eosTokenId = tok.eot;
  c.weightQuant = options.packed ? WeightQuant::Offline : WeightQuant::Online;
  if (options.format == CheckpointFormat::HuggingFace)
    writeHf(options, c, tok, fs::path(out));
  else
    writeGguf(options, c, tok, fs::path(out));
}

} // namespace bitloom
