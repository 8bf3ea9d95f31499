//===- CheckpointTest.cpp - Atomic checkpoints and identity checks --------===//

#include "TrainerTestUtil.h"

#include "trainer/Checkpoint.h"

#include <cmath>

using namespace bitloom;
using namespace bitloom::trainer;

namespace {

std::string errorOf(const std::function<void()> &f) {
  try {
    f();
  } catch (const std::exception &e) {
    return e.what();
  }
  return "";
}

FloatTensor randomTensor(std::vector<int64_t> shape, uint64_t seed) {
  FloatTensor t;
  t.shape = std::move(shape);
  SplitMix64 rng(seed);
  t.data.resize(size_t(t.numElements()));
  for (float &v : t.data)
    v = float(int64_t(rng.next() % 2001) - 1000) / 997.0f;
  return t;
}

CheckpointIdentity identity() {
  CheckpointIdentity id;
  id.artifactHash = "a1b2c3";
  id.modelHash = "m0d31";
  id.lora.rank = 4;
  id.lora.alpha = 8;
  id.lora.targets = {"q", "v"};
  id.extra["seq_len"] = "128";
  return id;
}

Checkpoint checkpointAtStep(int64_t step) {
  Checkpoint c;
  c.step = step;
  c.identity = identity();
  c.data.epoch = uint64_t(step / 10);
  c.data.index = uint64_t(step % 10);
  c.data.epochRng = 0xdeadbeefcafef00dull + uint64_t(step);
  c.data.samples = 40;
  c.data.batchSize = 4;
  c.data.fingerprint = 0x0123456789abcdefull;
  const std::string q0 = "base_model.model.model.layers.0.self_attn.q_proj";
  c.adapter[q0 + ".lora_A.weight"] = randomTensor({4, 64}, uint64_t(step) * 3);
  c.adapter[q0 + ".lora_B.weight"] =
      randomTensor({64, 4}, uint64_t(step) * 3 + 1);
  c.optimizer[q0 + ".lora_A.weight.exp_avg"] = randomTensor({4, 64}, 77 + step);
  c.optimizer[q0 + ".lora_A.weight.exp_avg_sq"] =
      randomTensor({4, 64}, 78 + step);
  c.state = {{"lr_schedule", {{"kind", "cosine"}, {"warmup", 10}}},
             {"rng", "0123"}};
  return c;
}

void expectSame(const Checkpoint &a, const Checkpoint &b) {
  EXPECT_EQ(a.step, b.step);
  EXPECT_EQ(a.data, b.data);
  EXPECT_EQ(identityDifference(a.identity, b.identity), "");
  EXPECT_EQ(a.state, b.state);
  ASSERT_EQ(a.adapter.size(), b.adapter.size());
  for (const auto &[n, t] : a.adapter) {
    EXPECT_EQ(t.shape, b.adapter.at(n).shape);
    EXPECT_EQ(t.data, b.adapter.at(n).data) << n;
  }
  ASSERT_EQ(a.optimizer.size(), b.optimizer.size());
  for (const auto &[n, t] : a.optimizer)
    EXPECT_EQ(t.data, b.optimizer.at(n).data) << n;
}

} // namespace

TEST(Checkpoint, RoundTripsEverything) {
  test::TempDir dir;
  std::string ckpt = dir.file("ckpt");
  Checkpoint c = checkpointAtStep(12);
  saveCheckpoint(ckpt, c);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"ckpt"}));
  EXPECT_TRUE(checkpointExists(ckpt));
  CheckpointIdentity id = identity();
  expectSame(loadCheckpoint(ckpt, &id), c);

  nlohmann::json m = test::readJson(ckpt + "/manifest.json");
  EXPECT_EQ(m["format"], "bitloom-checkpoint");
  EXPECT_EQ(m["step"], 12);
  EXPECT_EQ(m["identity"]["lora"]["rank"], 4);
  EXPECT_EQ(m["data_position"]["epoch_rng"], "deadbeefcafef019");
  EXPECT_TRUE(m["files"].contains("state.safetensors"));
  // Saving again replaces it in place, leaving nothing beside it.
  Checkpoint d = checkpointAtStep(13);
  saveCheckpoint(ckpt + "/", d);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"ckpt"}));
  expectSame(loadCheckpoint(ckpt), d);
}

TEST(Checkpoint, RefusesAnotherRunsCheckpointNamingTheDifferences) {
  test::TempDir dir;
  saveCheckpoint(dir.file("ckpt"), checkpointAtStep(5));
  CheckpointIdentity other = identity();
  other.modelHash = "ffff";
  other.lora.rank = 16;
  other.lora.targets = {"q", "k", "v"};
  other.optimizer.beta2 = 0.95;
  other.extra["seq_len"] = "256";
  other.extra["batch_size"] = "8";
  EXPECT_EQ(errorOf([&] { loadCheckpoint(dir.file("ckpt"), &other); }),
            dir.file("ckpt") +
                "/manifest.json: identity: checkpoint belongs to another run: "
                "model_hash: checkpoint m0d31, now ffff; lora.rank: checkpoint "
                "4, now 16; lora.targets: checkpoint q,v, now q,k,v; "
                "optimizer.beta2: checkpoint 0.999, now 0.94999999999999996; "
                "extra.seq_len: checkpoint 128, now 256; extra.batch_size: "
                "checkpoint (absent), now 8");
  // Without an expected identity it loads, and reports its own.
  EXPECT_EQ(loadCheckpoint(dir.file("ckpt")).identity.modelHash, "m0d31");
}

TEST(Checkpoint, PreviousCheckpointSurvivesACrashAtEveryPoint) {
  struct Case {
    const char *point;
    int64_t stepAfter; // what a resume finds
  };
  // Before the new directory is complete the old one stays; once both are
  // complete (old moved aside) the newer wins; after the rename it is the
  // new one.
  const Case cases[] = {{"tmp-created", 1},   {"state-written", 1},
                        {"files-written", 1}, {"old-moved", 2},
                        {"new-in-place", 2},  {"done", 2}};
  for (const Case &k : cases) {
    SCOPED_TRACE(k.point);
    test::TempDir dir;
    std::string ckpt = dir.file("ckpt");
    Checkpoint one = checkpointAtStep(1), two = checkpointAtStep(2);
    saveCheckpoint(ckpt, one);
    faults::setCheckpointFailHook([&](const std::string &p) {
      if (p == k.point)
        throw faults::SimulatedCrash();
    });
    EXPECT_THROW(saveCheckpoint(ckpt, two), faults::SimulatedCrash);
    faults::setCheckpointFailHook(nullptr);
    // What the crash left behind, then what a restarted run loads.
    std::vector<std::string> left = dir.entries();
    std::string kinds;
    for (const std::string &e : left)
      kinds += (kinds.empty() ? "" : " ") +
               (e == "ckpt" ? e : e.substr(0, 9)); // "ckpt.tmp-" / "ckpt.old-"
    const std::string p = k.point;
    EXPECT_EQ(kinds, p == "old-moved"      ? "ckpt.old- ckpt.tmp-"
                     : p == "new-in-place" ? "ckpt ckpt.old-"
                     : p == "done"         ? "ckpt"
                                           : "ckpt ckpt.tmp-");
    Checkpoint got = loadCheckpoint(ckpt);
    expectSame(got, k.stepAfter == 1 ? one : two);
    EXPECT_EQ(dir.entries(), (std::vector<std::string>{"ckpt"}));
    // And training goes on saving normally.
    saveCheckpoint(ckpt, checkpointAtStep(3));
    EXPECT_EQ(loadCheckpoint(ckpt).step, 3);
  }
}

TEST(Checkpoint, CrashDuringTheFirstSave) {
  for (const char *p : {"tmp-created", "state-written", "files-written"}) {
    SCOPED_TRACE(p);
    test::TempDir dir;
    std::string ckpt = dir.file("ckpt");
    faults::setCheckpointFailHook([&](const std::string &q) {
      if (q == p)
        throw faults::SimulatedCrash();
    });
    EXPECT_THROW(saveCheckpoint(ckpt, checkpointAtStep(1)),
                 faults::SimulatedCrash);
    faults::setCheckpointFailHook(nullptr);
    // An incomplete directory is never taken for a checkpoint; a complete
    // one that missed its rename is.
    bool complete = std::string(p) == "files-written";
    EXPECT_EQ(checkpointExists(ckpt), complete);
    EXPECT_EQ(dir.entries().size(), complete ? 1u : 0u);
  }
}

TEST(Checkpoint, FailedSaveRollsBack) {
  test::TempDir dir;
  std::string ckpt = dir.file("ckpt");
  Checkpoint one = checkpointAtStep(1);
  saveCheckpoint(ckpt, one);
  faults::setCheckpointFailHook([](const std::string &p) {
    if (p == "old-moved")
      throw std::runtime_error("disk full");
  });
  EXPECT_EQ(errorOf([&] { saveCheckpoint(ckpt, checkpointAtStep(2)); }),
            "disk full");
  faults::setCheckpointFailHook(nullptr);
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"ckpt"}));
  expectSame(loadCheckpoint(ckpt), one);
}

TEST(Checkpoint, NeverReplacesADirectoryThatIsNotACheckpoint) {
  test::TempDir dir;
  std::filesystem::create_directories(dir.file("mine"));
  test::writeText(dir.file("mine/notes.txt"), "precious");
  EXPECT_EQ(
      errorOf([&] { saveCheckpoint(dir.file("mine"), checkpointAtStep(1)); }),
      dir.file("mine") +
          ": exists and is not a bitloom checkpoint; refusing to replace "
          "it");
  EXPECT_EQ(test::readText(dir.file("mine/notes.txt")), "precious");
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"mine"}));
  // An empty directory is fine.
  std::filesystem::create_directories(dir.file("empty"));
  saveCheckpoint(dir.file("empty"), checkpointAtStep(1));
  EXPECT_EQ(loadCheckpoint(dir.file("empty")).step, 1);
}

TEST(Checkpoint, DetectsDamage) {
  test::TempDir dir;
  std::string ckpt = dir.file("ckpt");
  saveCheckpoint(ckpt, checkpointAtStep(4));
  std::string state = ckpt + "/state.safetensors";
  std::string bytes = test::readText(state);
  bytes[bytes.size() - 5] ^= 0x40;
  test::writeText(state, bytes);
  EXPECT_EQ(errorOf([&] { loadCheckpoint(ckpt); }),
            ckpt + ": incomplete or damaged checkpoint: " + state +
                ": content differs from the manifest's hash");
  test::writeText(state, bytes.substr(0, 100));
  EXPECT_NE(errorOf([&] { loadCheckpoint(ckpt); }).find("size differs"),
            std::string::npos);
  EXPECT_EQ(errorOf([&] { loadCheckpoint(dir.file("none")); }),
            dir.file("none") + ": no checkpoint here");
}

TEST(Checkpoint, IdentityJsonRoundTripAndErrors) {
  CheckpointIdentity id = identity();
  id.lora.dropout = 0.05;
  id.optimizer.name = "sgd";
  id.optimizer.momentum = 0.9;
  CheckpointIdentity back = CheckpointIdentity::fromJson(id.toJson(), "m.json");
  EXPECT_EQ(identityDifference(id, back), "");
  nlohmann::json bad = id.toJson();
  bad["lora"].erase("rank");
  EXPECT_EQ(errorOf([&] { CheckpointIdentity::fromJson(bad, "m.json"); }),
            "m.json: identity.lora.rank: missing");
}
