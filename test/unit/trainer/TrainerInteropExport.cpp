//===- TrainerInteropExport.cpp - Files for the Python interop check ------===//
//
// Writes, into the directory given as argv[1], what bitloom's trainer
// exports - PEFT adapters (F32, BF16), llama.cpp GGUF LoRA files (F32, F16),
// a checkpoint, a loss plot - plus expected.json describing them. The ctest
// TrainerInterop.verify then reads every file with independent code: a plain
// numpy safetensors reader, llama.cpp's gguf-py, xml.etree
// (adapter_interop_check.py).
//
//===----------------------------------------------------------------------===//

#include "model/Model.h"
#include "trainer/Adapter.h"
#include "trainer/Checkpoint.h"
#include "trainer/Dataset.h"
#include "trainer/Metrics.h"

#include <nlohmann/json.hpp>

#include <cmath>
#include <filesystem>
#include <fstream>
#include <iostream>

using namespace bitloom;
using namespace bitloom::trainer;

int main(int argc, char **argv) {
  if (argc != 2) {
    std::cerr << "usage: " << argv[0] << " OUTDIR\n";
    return 2;
  }
  const std::filesystem::path out = argv[1];
  try {
    std::filesystem::remove_all(out);
    std::filesystem::create_directories(out);
    // The tiny preset's shape, with kv heads != heads.
    ModelConfig m;
    m.vocabSize = 512;
    m.hiddenSize = 64;
    m.intermediateSize = 160;
    m.numLayers = 2;
    m.numHeads = 4;
    m.numKvHeads = 2;
    m.headDim = 16;
    LoraConfig l;
    l.rank = 4;
    l.alpha = 8;
    l.dropout = 0.1;
    l.targets = {"q", "k", "v", "o", "gate", "up", "down"};
    l.baseModel = "bitloom/tiny";
    TensorMap t;
    SplitMix64 rng(2024);
    for (const LoraTensorSpec &s : loraTensorSpecs(m, l)) {
      FloatTensor f;
      f.shape = s.shape;
      f.data.resize(size_t(f.numElements()));
      for (float &v : f.data) // includes values that round in f16 / bf16
        v = float((double(rng.next() >> 11) / double(1ull << 53) - 0.5) * 0.2);
      t[s.name] = f;
    }
    exportPeftAdapter((out / "peft").string(), l, t, m, DType::F32);
    exportPeftAdapter((out / "peft-bf16").string(), l, t, m, DType::BF16);
    exportGgufLoraAdapter((out / "lora-f32.gguf").string(), l, t, m, DType::F32,
                          "tiny-lora");
    exportGgufLoraAdapter((out / "lora-f16.gguf").string(), l, t, m, DType::F16,
                          "tiny-lora");

    Checkpoint c;
    c.step = 3;
    c.identity.artifactHash = "artifact";
    c.identity.modelHash = "model";
    c.identity.lora = l;
    c.adapter = t;
    c.optimizer[t.begin()->first + ".exp_avg"] = t.begin()->second;
    c.data.samples = 10;
    c.data.batchSize = 2;
    saveCheckpoint((out / "checkpoint").string(), c);

    MetricsLog log((out / "metrics.jsonl").string());
    for (int s = 1; s <= 120; ++s) {
      TrainRecord r;
      r.step = s;
      r.loss = 3.0 * std::exp(-s / 40.0) + 0.6;
      log.logTrain(r);
      if (s % 40 == 0)
        log.logValidation({s, s / 40.0, r.loss + 0.1, 100});
    }
    log.writePlot("interop <check>");

    nlohmann::json expected;
    expected["rank"] = l.rank;
    expected["alpha"] = l.alpha;
    expected["dropout"] = l.dropout;
    expected["layers"] = m.numLayers;
    expected["target_modules"] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                  "gate_proj", "up_proj", "down_proj"};
    for (const LoraTensorSpec &s : loraTensorSpecs(m, l))
      expected["tensors"][s.name] = {
          {"shape", s.shape},
          {"gguf", ggufLoraName(s.layer, *s.projection, s.isA)},
          {"values", t[s.name].data}};
    std::ofstream(out / "expected.json") << expected.dump() << "\n";
  } catch (const std::exception &e) {
    std::cerr << "error: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
