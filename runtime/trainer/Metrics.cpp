//===- Metrics.cpp - Training logs, loss plot, progress -------------------===//

#include "trainer/Metrics.h"

#include "formats/Error.h"
#include "formats/MappedFile.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <sstream>
#include <unistd.h>

namespace fs = std::filesystem;

namespace bitloom::trainer {

//===----------------------------------------------------------------------===//
// JSON lines
//===----------------------------------------------------------------------===//

namespace {

// NaN / inf losses happen (a diverging run); JSON has no spelling for them,
// so they are written as null and read back as NaN.
nlohmann::json num(double v) {
  return std::isfinite(v) ? nlohmann::json(v) : nlohmann::json(nullptr);
}
double getNum(const nlohmann::json &j, const char *key) {
  if (!j.contains(key) || !j[key].is_number())
    return std::nan("");
  return j[key].get<double>();
}
int64_t getInt(const nlohmann::json &j, const char *key) {
  return j.contains(key) && j[key].is_number() ? j[key].get<int64_t>() : 0;
}

nlohmann::json toJson(const TrainRecord &r) {
  return {{"type", "train"},           {"step", r.step},
          {"epoch", num(r.epoch)},     {"loss", num(r.loss)},
          {"lr", num(r.learningRate)}, {"grad_norm", num(r.gradNorm)},
          {"tokens", r.tokens},        {"tokens_per_s", num(r.tokensPerSecond)},
          {"time_s", num(r.seconds)}};
}
nlohmann::json toJson(const ValidationRecord &r) {
  return {{"type", "validation"},
          {"step", r.step},
          {"epoch", num(r.epoch)},
          {"loss", num(r.loss)},
          {"perplexity", num(r.perplexity())},
          {"targets", r.targets}};
}

} // namespace

MetricsLog::MetricsLog(const std::string &path,
                       std::optional<int64_t> resumeStep)
    : path_(path) {
  std::vector<std::string> kept;
  bool dropped = false;
  if (fs::exists(path)) {
    std::ifstream in(path, std::ios::binary);
    std::string line;
    int64_t lineNo = 0;
    while (std::getline(in, line)) {
      ++lineNo;
      if (line.find_first_not_of(" \t\r") == std::string::npos)
        continue;
      nlohmann::json j;
      try {
        j = nlohmann::json::parse(line);
      } catch (const nlohmann::json::exception &) {
        // A line cut by a crash mid-write: only the last one can be.
        if (in.peek() == EOF) {
          dropped = true;
          continue;
        }
        throw FormatError(path, "line " + std::to_string(lineNo),
                          "invalid JSON in the metrics log");
      }
      int64_t step = getInt(j, "step");
      if (resumeStep && step > *resumeStep) {
        dropped = true;
        continue;
      }
      kept.push_back(line);
      std::string type = j.value("type", "");
      if (type == "train")
        train_.push_back({step, getNum(j, "epoch"), getNum(j, "loss"),
                          getNum(j, "lr"), getNum(j, "grad_norm"),
                          getInt(j, "tokens"), getNum(j, "tokens_per_s"),
                          getNum(j, "time_s")});
      else if (type == "validation")
        val_.push_back({step, getNum(j, "epoch"), getNum(j, "loss"),
                        getInt(j, "targets")});
    }
  }
  if (dropped) {
    std::string text;
    for (const std::string &l : kept)
      text += l + "\n";
    writeFileAtomically(path, text.data(), text.size());
  }
  if (!fs::exists(path)) {
    std::ofstream create(path, std::ios::binary);
    if (!create)
      throw FormatError(path, "", "cannot create the metrics log");
  }
}

void MetricsLog::append(const nlohmann::json &j) {
  std::ofstream out(path_, std::ios::binary | std::ios::app);
  out << j.dump() << '\n';
  out.flush();
  if (!out)
    throw FormatError(path_, "", "cannot append to the metrics log");
}

void MetricsLog::logTrain(const TrainRecord &r) {
  train_.push_back(r);
  append(toJson(r));
}

void MetricsLog::logValidation(const ValidationRecord &r) {
  val_.push_back(r);
  append(toJson(r));
}

void MetricsLog::logEvent(const nlohmann::json &event) {
  if (!event.is_object() || !event.contains("type"))
    throw std::invalid_argument("metrics event without a \"type\"");
  append(event);
}

std::string MetricsLog::plotPath() const {
  return fs::path(path_).replace_extension(".svg").string();
}

void MetricsLog::writePlot(const std::string &title) const {
  std::string svg = renderLossSvg(train_, val_, title);
  writeFileAtomically(plotPath(), svg.data(), svg.size());
}

//===----------------------------------------------------------------------===//
// SVG
//===----------------------------------------------------------------------===//

double ValidationRecord::perplexity() const { return std::exp(loss); }

AxisTicks niceTicks(double lo, double hi, int maxTicks) {
  AxisTicks a;
  if (!std::isfinite(lo) || !std::isfinite(hi)) {
    lo = 0;
    hi = 1;
  }
  if (hi < lo)
    std::swap(lo, hi);
  if (hi - lo < 1e-12) {
    double pad = std::max(std::fabs(lo) * 0.05, 0.5);
    lo -= pad;
    hi += pad;
  }
  double raw = (hi - lo) / std::max(1, maxTicks);
  double mag = std::pow(10.0, std::floor(std::log10(raw)));
  double step = mag;
  for (double m : {1.0, 2.0, 5.0, 10.0})
    if (m * mag >= raw) {
      step = m * mag;
      break;
    }
  a.step = step;
  a.lo = std::floor(lo / step + 1e-9) * step;
  a.hi = std::ceil(hi / step - 1e-9) * step;
  for (int i = 0;; ++i) {
    double t = a.lo + i * step;
    if (t > a.hi + step * 1e-6)
      break;
    a.ticks.push_back(std::fabs(t) < step * 1e-9 ? 0.0 : t);
  }
  return a;
}

namespace {

std::string escapeXml(const std::string &s) {
  std::string o;
  for (char c : s) {
    switch (c) {
    case '&':
      o += "&amp;";
      break;
    case '<':
      o += "&lt;";
      break;
    case '>':
      o += "&gt;";
      break;
    case '"':
      o += "&quot;";
      break;
    default:
      o += c;
    }
  }
  return o;
}

std::string fmt(double v, int decimals = 2) {
  char buf[64];
  std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
  return buf;
}

// A tick label with as many decimals as the tick step needs.
std::string tickLabel(double v, double step) {
  int decimals = step >= 1 ? 0 : int(std::ceil(-std::log10(step) - 1e-9));
  return fmt(v, std::min(decimals, 6));
}

} // namespace

std::string renderLossSvg(const std::vector<TrainRecord> &train,
                          const std::vector<ValidationRecord> &validation,
                          const std::string &title) {
  const double W = 800, H = 480, left = 72, right = 24, top = 48, bottom = 64;
  const double pw = W - left - right, ph = H - top - bottom;

  std::vector<std::pair<double, double>> tr, va;
  for (const TrainRecord &r : train)
    if (std::isfinite(r.loss))
      tr.push_back({double(r.step), r.loss});
  for (const ValidationRecord &r : validation)
    if (std::isfinite(r.loss))
      va.push_back({double(r.step), r.loss});

  double xmin = 0, xmax = 1, ymin = 0, ymax = 1;
  bool any = !tr.empty() || !va.empty();
  if (any) {
    xmin = 1e300;
    xmax = -1e300;
    ymin = 1e300;
    ymax = -1e300;
    for (const auto *v : {&tr, &va})
      for (const auto &[x, y] : *v) {
        xmin = std::min(xmin, x);
        xmax = std::max(xmax, x);
        ymin = std::min(ymin, y);
        ymax = std::max(ymax, y);
      }
    xmin = std::min(xmin, 0.0);
  }
  AxisTicks xa = niceTicks(xmin, xmax, 8), ya = niceTicks(ymin, ymax, 6);
  auto X = [&](double x) { return left + (x - xa.lo) / (xa.hi - xa.lo) * pw; };
  auto Y = [&](double y) { return top + (ya.hi - y) / (ya.hi - ya.lo) * ph; };

  std::ostringstream s;
  s << "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"" << W
    << "\" height=\"" << H << "\" viewBox=\"0 0 " << W << ' ' << H
    << "\" font-family=\"sans-serif\" font-size=\"12\">\n";
  s << "<title>" << escapeXml(title) << "</title>\n";
  s << "<rect width=\"100%\" height=\"100%\" fill=\"#ffffff\"/>\n";
  s << "<text x=\"" << W / 2
    << "\" y=\"28\" text-anchor=\"middle\" "
       "font-size=\"16\">"
    << escapeXml(title) << "</text>\n";
  // Grid, ticks and labels.
  s << "<g id=\"x-axis\" stroke=\"#000000\">\n";
  for (double t : xa.ticks) {
    double x = X(t);
    s << "<line x1=\"" << fmt(x) << "\" y1=\"" << top << "\" x2=\"" << fmt(x)
      << "\" y2=\"" << top + ph << "\" stroke=\"#e0e0e0\"/>";
    s << "<line x1=\"" << fmt(x) << "\" y1=\"" << top + ph << "\" x2=\""
      << fmt(x) << "\" y2=\"" << top + ph + 5 << "\"/>";
    s << "<text x=\"" << fmt(x) << "\" y=\"" << top + ph + 20
      << "\" text-anchor=\"middle\" stroke=\"none\">" << tickLabel(t, xa.step)
      << "</text>\n";
  }
  s << "</g>\n<g id=\"y-axis\" stroke=\"#000000\">\n";
  for (double t : ya.ticks) {
    double y = Y(t);
    s << "<line x1=\"" << left << "\" y1=\"" << fmt(y) << "\" x2=\""
      << left + pw << "\" y2=\"" << fmt(y) << "\" stroke=\"#e0e0e0\"/>";
    s << "<line x1=\"" << left - 5 << "\" y1=\"" << fmt(y) << "\" x2=\"" << left
      << "\" y2=\"" << fmt(y) << "\"/>";
    s << "<text x=\"" << left - 8 << "\" y=\"" << fmt(y + 4)
      << "\" text-anchor=\"end\" stroke=\"none\">" << tickLabel(t, ya.step)
      << "</text>\n";
  }
  s << "</g>\n";
  s << "<rect x=\"" << left << "\" y=\"" << top << "\" width=\"" << pw
    << "\" height=\"" << ph << "\" fill=\"none\" stroke=\"#000000\"/>\n";
  s << "<text x=\"" << left + pw / 2 << "\" y=\"" << H - 20
    << "\" text-anchor=\"middle\">step</text>\n";
  s << "<text x=\"18\" y=\"" << top + ph / 2
    << "\" text-anchor=\"middle\" transform=\"rotate(-90 18 " << top + ph / 2
    << ")\">loss</text>\n";

  if (!any)
    s << "<text x=\"" << left + pw / 2 << "\" y=\"" << top + ph / 2
      << "\" text-anchor=\"middle\" fill=\"#808080\">no data yet</text>\n";

  // Train loss: one vertex per step, or per pixel column a min/max pair when
  // there are more steps than pixels.
  if (!tr.empty()) {
    std::vector<std::pair<double, double>> pts;
    if (tr.size() <= size_t(pw)) {
      for (const auto &[x, y] : tr)
        pts.push_back({X(x), Y(y)});
    } else {
      // Per pixel column its min and max, in the order they occurred.
      int col = -1;
      double lo = 0, hi = 0;
      size_t loAt = 0, hiAt = 0;
      auto flush = [&] {
        if (col < 0)
          return;
        double x = left + col + 0.5;
        double a = loAt <= hiAt ? lo : hi, b = loAt <= hiAt ? hi : lo;
        pts.push_back({x, Y(a)});
        if (b != a)
          pts.push_back({x, Y(b)});
      };
      for (size_t i = 0; i < tr.size(); ++i) {
        double y = tr[i].second;
        int c = std::clamp(int(X(tr[i].first) - left), 0, int(pw) - 1);
        if (c != col) {
          flush();
          col = c;
          lo = hi = y;
          loAt = hiAt = i;
          continue;
        }
        if (y < lo) {
          lo = y;
          loAt = i;
        }
        if (y > hi) {
          hi = y;
          hiAt = i;
        }
      }
      flush();
    }
    s << "<polyline id=\"train-loss\" fill=\"none\" stroke=\"#1f77b4\" "
         "stroke-width=\"1.5\" points=\"";
    for (size_t i = 0; i < pts.size(); ++i)
      s << (i ? " " : "") << fmt(pts[i].first) << ',' << fmt(pts[i].second);
    s << "\"/>\n";
  }
  if (!va.empty()) {
    s << "<g id=\"validation-loss\" fill=\"#d62728\">\n";
    for (const auto &[x, y] : va)
      s << "<circle cx=\"" << fmt(X(x)) << "\" cy=\"" << fmt(Y(y))
        << "\" r=\"4\"><title>step " << int64_t(x) << ": validation loss "
        << fmt(y, 4) << "</title></circle>\n";
    s << "</g>\n";
  }
  // Legend.
  double lx = left + pw - 170, ly = top + 12;
  s << "<g id=\"legend\">\n<rect x=\"" << lx - 8 << "\" y=\"" << ly - 10
    << "\" width=\"170\" height=\"44\" fill=\"#ffffff\" stroke=\"#c0c0c0\"/>\n";
  s << "<line x1=\"" << lx << "\" y1=\"" << ly + 2 << "\" x2=\"" << lx + 24
    << "\" y2=\"" << ly + 2 << "\" stroke=\"#1f77b4\" stroke-width=\"2\"/>";
  s << "<text x=\"" << lx + 32 << "\" y=\"" << ly + 6
    << "\">train loss (per step)</text>\n";
  s << "<circle cx=\"" << lx + 12 << "\" cy=\"" << ly + 22
    << "\" r=\"4\" fill=\"#d62728\"/>";
  s << "<text x=\"" << lx + 32 << "\" y=\"" << ly + 26
    << "\">validation loss</text>\n</g>\n";
  s << "</svg>\n";
  return s.str();
}

//===----------------------------------------------------------------------===//
// Progress
//===----------------------------------------------------------------------===//

std::string formatDuration(double seconds) {
  if (!std::isfinite(seconds) || seconds < 0)
    return "?";
  auto s = int64_t(std::llround(seconds));
  char buf[32];
  if (s < 60)
    std::snprintf(buf, sizeof buf, "%llds", (long long)s);
  else if (s < 3600)
    std::snprintf(buf, sizeof buf, "%lldm%02llds", (long long)(s / 60),
                  (long long)(s % 60));
  else if (s < 86400)
    std::snprintf(buf, sizeof buf, "%lldh%02lldm", (long long)(s / 3600),
                  (long long)(s % 3600 / 60));
  else
    std::snprintf(buf, sizeof buf, "%lldd%02lldh", (long long)(s / 86400),
                  (long long)(s % 86400 / 3600));
  return buf;
}

ProgressReporter::ProgressReporter(int64_t totalSteps, std::ostream &out,
                                   std::optional<bool> tty, int64_t startStep,
                                   Clock clock)
    : total_(totalSteps), start_(startStep), out_(out),
      clock_(clock ? std::move(clock) : Clock([] {
        return std::chrono::duration<double>(
                   std::chrono::steady_clock::now().time_since_epoch())
            .count();
      })) {
  tty_ = tty ? *tty : (&out == &std::cout && ::isatty(STDOUT_FILENO));
  t0_ = clock_();
}

std::string ProgressReporter::line(int64_t step, double loss, double tps,
                                   double lr, bool bar) const {
  std::ostringstream s;
  double frac =
      total_ > 0 ? std::clamp(double(step) / double(total_), 0.0, 1.0) : 0.0;
  double elapsed = clock_() - t0_;
  int64_t done = step - start_;
  double eta = done > 0 ? elapsed / double(done) * double(total_ - step) : NAN;
  if (bar) {
    const int width = 24;
    int fill = int(frac * width + 1e-9);
    s << '[' << std::string(size_t(fill), '#')
      << std::string(size_t(width - fill), '-') << "] ";
  } else {
    s << "step ";
  }
  s << step << '/' << total_ << ' ' << int(frac * 100 + 1e-9) << "% | loss "
    << (std::isfinite(loss) ? fmt(loss, 4) : "nan") << " | ";
  if (std::isfinite(lr)) {
    char buf[32];
    std::snprintf(buf, sizeof buf, "lr %.2e | ", lr);
    s << buf;
  }
  s << int64_t(std::llround(std::isfinite(tps) ? tps : 0)) << " tok/s | ";
  if (step >= total_)
    s << "done in " << formatDuration(elapsed);
  else
    s << "ETA " << formatDuration(eta);
  return s.str();
}

void ProgressReporter::update(int64_t step, double loss, double tokensPerSecond,
                              double learningRate) {
  bool last = step >= total_;
  if (tty_) {
    double now = clock_();
    if (!last && now - lastDraw_ < 0.1)
      return;
    lastDraw_ = now;
    out_ << "\r\x1b[K" << line(step, loss, tokensPerSecond, learningRate, true);
    open_ = true;
    if (last) {
      out_ << '\n';
      open_ = false;
    }
    out_.flush();
    return;
  }
  if (last || step % logEvery_ == 0 || (logFirst_ && step == start_ + 1))
    out_ << line(step, loss, tokensPerSecond, learningRate, false) << '\n'
         << std::flush;
}

void ProgressReporter::message(const std::string &text) {
  if (tty_ && open_)
    out_ << "\r\x1b[K";
  out_ << text << '\n';
  open_ = false;
  lastDraw_ = -1e9; // redraw the bar at the next update
  out_.flush();
}

void ProgressReporter::finish() {
  if (open_)
    out_ << '\n';
  open_ = false;
  out_.flush();
}

} // namespace bitloom::trainer
