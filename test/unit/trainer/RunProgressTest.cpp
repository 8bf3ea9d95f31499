//===- RunProgressTest.cpp - What bitloom-run adds to metrics/progress ----===//
//
// bitloom-run logs validation perplexity and shows the learning rate and the
// first step of a (resumed) run in its plain progress lines.
//
//===----------------------------------------------------------------------===//

#include "TrainerTestUtil.h"

#include "trainer/Metrics.h"

#include <cmath>

using namespace bitloom;
using namespace bitloom::trainer;

TEST(RunMetrics, ValidationLogsPerplexity) {
  test::TempDir dir;
  std::string path = dir.path() + "/metrics.jsonl";
  {
    MetricsLog log(path);
    ValidationRecord v;
    v.step = 6;
    v.epoch = 1.5;
    v.loss = 2.0;
    v.targets = 868;
    log.logValidation(v);
    EXPECT_DOUBLE_EQ(v.perplexity(), std::exp(2.0));
  }
  std::string text = test::readText(path);
  nlohmann::json j = nlohmann::json::parse(text.substr(0, text.find('\n')));
  EXPECT_EQ(j["type"], "validation");
  EXPECT_EQ(j["targets"], 868);
  EXPECT_DOUBLE_EQ(j["perplexity"].get<double>(), std::exp(2.0));
  // Read back (a resumed run) the record keeps its loss.
  MetricsLog again(path, int64_t(6));
  ASSERT_EQ(again.validation().size(), 1u);
  EXPECT_DOUBLE_EQ(again.validation()[0].perplexity(), std::exp(2.0));
}

TEST(RunMetrics, NonFinitePerplexityIsNull) {
  test::TempDir dir;
  std::string path = dir.path() + "/metrics.jsonl";
  MetricsLog log(path);
  ValidationRecord v;
  v.step = 1;
  v.loss = 1000.0; // exp overflows
  log.logValidation(v);
  nlohmann::json j = nlohmann::json::parse(test::readText(path));
  EXPECT_TRUE(j["perplexity"].is_null());
}

TEST(RunProgress, FirstStepOfAResumedRunAndLearningRate) {
  std::ostringstream out;
  double now = 0;
  ProgressReporter p(10, out, false, 4, [&] { return now; });
  p.setLogEvery(5);
  p.setLogFirst(true);
  for (int s = 5; s <= 10; ++s) {
    now += 1;
    p.update(s, 1.0, 100, s == 5 ? 2e-3 : NAN);
  }
  EXPECT_EQ(out.str(),
            "step 5/10 50% | loss 1.0000 | lr 2.00e-03 | 100 tok/s | ETA 5s\n"
            "step 10/10 100% | loss 1.0000 | 100 tok/s | done in 6s\n");
}

TEST(RunProgress, BarShowsTheLearningRate) {
  std::ostringstream out;
  double now = 0;
  ProgressReporter p(2, out, true, 0, [&] { return now; });
  now += 1;
  p.update(1, 3.0, 64, 1e-2);
  now += 1;
  p.update(2, 2.5, 64, 5e-3);
  EXPECT_EQ(out.str(),
            "\r\x1b[K[############------------] 1/2 50% | loss 3.0000 "
            "| lr 1.00e-02 | 64 tok/s | ETA 1s"
            "\r\x1b[K[########################] 2/2 100% | loss "
            "2.5000 | lr 5.00e-03 | 64 tok/s | done in 2s\n");
}
