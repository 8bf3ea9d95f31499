//===- MetricsTest.cpp - Metrics log, loss plot, progress -----------------===//

#include "TrainerTestUtil.h"

#include "trainer/Metrics.h"

#include <cmath>
#include <regex>

using namespace bitloom;
using namespace bitloom::trainer;

namespace {

std::vector<nlohmann::json> readLines(const std::string &path) {
  std::vector<nlohmann::json> out;
  std::istringstream in(test::readText(path));
  std::string line;
  while (std::getline(in, line))
    out.push_back(nlohmann::json::parse(line));
  return out;
}

size_t count(const std::string &s, const std::string &what) {
  size_t n = 0;
  for (size_t p = s.find(what); p != std::string::npos; p = s.find(what, p + 1))
    ++n;
  return n;
}

TrainRecord rec(int64_t step, double loss) {
  TrainRecord r;
  r.step = step;
  r.loss = loss;
  r.epoch = step / 10.0;
  r.learningRate = 1e-4;
  r.tokens = 512;
  r.tokensPerSecond = 1000;
  return r;
}

} // namespace

TEST(Metrics, WritesJsonLinesAndReadsThemBack) {
  test::TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path);
    log.logTrain(rec(1, 2.5));
    log.logTrain(rec(2, std::nan("")));
    log.logValidation({2, 0.2, 2.25, 300});
    log.logEvent({{"type", "checkpoint"}, {"step", 2}, {"dir", "ckpt"}});
  }
  auto lines = readLines(path);
  ASSERT_EQ(lines.size(), 4u);
  EXPECT_EQ(lines[0]["type"], "train");
  EXPECT_EQ(lines[0]["step"], 1);
  EXPECT_DOUBLE_EQ(lines[0]["loss"].get<double>(), 2.5);
  EXPECT_DOUBLE_EQ(lines[0]["lr"].get<double>(), 1e-4);
  EXPECT_TRUE(lines[1]["loss"].is_null()); // NaN has no JSON spelling
  EXPECT_EQ(lines[2]["type"], "validation");
  EXPECT_EQ(lines[2]["targets"], 300);
  EXPECT_EQ(lines[3]["type"], "checkpoint");

  MetricsLog again(path);
  ASSERT_EQ(again.train().size(), 2u);
  EXPECT_TRUE(std::isnan(again.train()[1].loss));
  ASSERT_EQ(again.validation().size(), 1u);
  EXPECT_DOUBLE_EQ(again.validation()[0].loss, 2.25);
  EXPECT_EQ(again.plotPath(), dir.file("metrics.svg"));
}

TEST(Metrics, ResumeDropsRecordsAfterTheCheckpointAndACutLine) {
  test::TempDir dir;
  std::string path = dir.file("metrics.jsonl");
  {
    MetricsLog log(path);
    for (int s = 1; s <= 10; ++s) {
      log.logTrain(rec(s, 3.0 - s * 0.1));
      if (s % 5 == 0)
        log.logValidation({s, s / 10.0, 2.0, 100});
    }
  }
  // A crash in the middle of writing step 11.
  {
    std::ofstream out(path, std::ios::app);
    out << "{\"type\": \"train\", \"step\": 11, \"lo";
  }
  MetricsLog resumed(path, 6);
  EXPECT_EQ(resumed.train().size(), 6u);
  EXPECT_EQ(resumed.validation().size(), 1u);
  auto lines = readLines(path);
  ASSERT_EQ(lines.size(), 7u);
  EXPECT_EQ(lines.back()["step"], 6);
  resumed.logTrain(rec(7, 2.0));
  EXPECT_EQ(readLines(path).back()["step"], 7);

  // Garbage before the last line is an error, not silently dropped.
  test::writeText(path, "{\"type\":\"train\",\"step\":1}\nnot json\n"
                        "{\"type\":\"train\",\"step\":2}\n");
  try {
    MetricsLog bad(path);
    FAIL();
  } catch (const FormatError &e) {
    EXPECT_EQ(std::string(e.what()),
              path + ": line 2: invalid JSON in the metrics log");
  }
}

TEST(Metrics, NiceTicks) {
  AxisTicks a = niceTicks(0, 9.3, 6);
  EXPECT_DOUBLE_EQ(a.step, 2);
  EXPECT_EQ(a.ticks, (std::vector<double>{0, 2, 4, 6, 8, 10}));
  AxisTicks b = niceTicks(2.31, 2.38, 6);
  EXPECT_NEAR(b.step, 0.02, 1e-12);
  EXPECT_NEAR(b.lo, 2.30, 1e-9);
  EXPECT_NEAR(b.hi, 2.38, 1e-9);
  AxisTicks c = niceTicks(5, 5, 6); // a flat curve still gets a range
  EXPECT_LT(c.lo, 5);
  EXPECT_GT(c.hi, 5);
  EXPECT_GE(c.ticks.size(), 2u);
  AxisTicks d = niceTicks(0, 12000, 8);
  EXPECT_DOUBLE_EQ(d.step, 2000);
}

TEST(Metrics, LossSvgHasCurvePointsAxesAndLabels) {
  std::vector<TrainRecord> train;
  for (int s = 1; s <= 50; ++s)
    train.push_back(rec(s, 3.0 * std::exp(-s / 20.0) + 0.5));
  train.push_back(rec(51, std::nan(""))); // skipped, not drawn
  std::vector<ValidationRecord> val = {{25, 1, 1.6, 10}, {50, 2, 1.1, 10}};
  std::string svg = renderLossSvg(train, val, "run <1> & co");
  EXPECT_EQ(svg.rfind("<svg xmlns=\"http://www.w3.org/2000/svg\"", 0), 0u);
  EXPECT_EQ(svg.substr(svg.size() - 7), "</svg>\n");
  EXPECT_NE(svg.find("run &lt;1&gt; &amp; co"), std::string::npos);
  std::smatch m;
  ASSERT_TRUE(std::regex_search(svg, m, std::regex("points=\"([^\"]*)\"")));
  EXPECT_EQ(count(m[1].str(), ","), 50u);
  EXPECT_EQ(count(svg, "<circle cx="), 2u + 1u); // + the legend's marker
  EXPECT_NE(svg.find(">step</text>"), std::string::npos);
  EXPECT_NE(svg.find(">loss</text>"), std::string::npos);
  EXPECT_NE(svg.find(">validation loss</text>"), std::string::npos);
  // Tick labels at round values on both axes.
  EXPECT_NE(svg.find(">50</text>"), std::string::npos);
  EXPECT_NE(svg.find(">0.5</text>"), std::string::npos);
  // Self-contained: nothing fetched from elsewhere.
  EXPECT_EQ(count(svg, "http"), 1u);
  EXPECT_EQ(svg.find("<script"), std::string::npos);
  EXPECT_EQ(svg.find("href"), std::string::npos);

  // Long runs are thinned to at most two vertices per pixel column.
  std::vector<TrainRecord> longRun;
  for (int s = 1; s <= 100000; ++s)
    longRun.push_back(rec(s, 2.0 + std::sin(s * 0.01)));
  std::string big = renderLossSvg(longRun, {}, "long");
  ASSERT_TRUE(std::regex_search(big, m, std::regex("points=\"([^\"]*)\"")));
  EXPECT_LE(count(m[1].str(), ","), 2u * 704u);
  EXPECT_LT(big.size(), 64u * 1024u);

  std::string empty = renderLossSvg({}, {}, "nothing");
  EXPECT_NE(empty.find("no data yet"), std::string::npos);
}

TEST(Metrics, WritePlotBesideTheLog) {
  test::TempDir dir;
  MetricsLog log(dir.file("run.jsonl"));
  log.logTrain(rec(1, 2.0));
  log.writePlot();
  EXPECT_EQ(dir.entries(), (std::vector<std::string>{"run.jsonl", "run.svg"}));
  EXPECT_NE(test::readText(dir.file("run.svg")).find("train-loss"),
            std::string::npos);
}

TEST(Metrics, FormatDuration) {
  EXPECT_EQ(formatDuration(0), "0s");
  EXPECT_EQ(formatDuration(59.4), "59s");
  EXPECT_EQ(formatDuration(187), "3m07s");
  EXPECT_EQ(formatDuration(3720), "1h02m");
  EXPECT_EQ(formatDuration(2 * 86400 + 3 * 3600), "2d03h");
  EXPECT_EQ(formatDuration(NAN), "?");
}

TEST(Progress, PlainLinesWhenNotATerminal) {
  std::ostringstream out;
  double now = 0;
  ProgressReporter p(10, out, false, 0, [&] { return now; });
  EXPECT_FALSE(p.isTty());
  p.setLogEvery(5);
  for (int s = 1; s <= 10; ++s) {
    now += 2;
    p.update(s, 2.0 - s * 0.1, 1234.4);
  }
  p.message("validation loss 1.5");
  p.finish();
  EXPECT_EQ(out.str(), "step 5/10 50% | loss 1.5000 | 1234 tok/s | ETA 10s\n"
                       "step 10/10 100% | loss 1.0000 | 1234 tok/s | done in "
                       "20s\n"
                       "validation loss 1.5\n");
}

TEST(Progress, BarOnATerminalRedrawsInPlace) {
  std::ostringstream out;
  double now = 100;
  ProgressReporter p(4, out, true, 2, [&] { return now; }); // resumed at 2
  now += 1;
  p.update(3, 1.25, 500);
  now += 0.01;
  p.update(3, 1.2, 500); // throttled: within 0.1 s
  p.message("saved checkpoint");
  now += 1;
  p.update(4, 1.0, 500);
  EXPECT_EQ(out.str(),
            "\r\x1b[K[##################------] 3/4 75% | loss 1.2500 | 500 "
            "tok/s | ETA 1s"
            "\r\x1b[Ksaved checkpoint\n"
            "\r\x1b[K[########################] 4/4 100% | loss 1.0000 | 500 "
            "tok/s | done in 2s\n");
}
