//===- Checkpoint.cpp - Crash-safe training checkpoints -------------------===//

#include "trainer/Checkpoint.h"

#include "formats/Error.h"
#include "formats/MappedFile.h"
#include "formats/Safetensors.h"

#include <algorithm>
#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <fcntl.h>
#include <filesystem>
#include <fstream>
#include <optional>
#include <sstream>
#include <unistd.h>

namespace fs = std::filesystem;

namespace bitloom::trainer {

namespace {

constexpr const char *kFormat = "bitloom-checkpoint";
constexpr int kVersion = 1;
constexpr const char *kState = "state.safetensors";
constexpr const char *kManifest = "manifest.json";

faults::FailHook &failHook() {
  static faults::FailHook hook;
  return hook;
}
void point(const char *name) {
  if (failHook())
    failHook()(name);
}

std::string canonical(double v) {
  char buf[40];
  std::snprintf(buf, sizeof buf, "%.17g", v);
  return buf;
}

std::string hex64(uint64_t v) {
  char buf[19];
  std::snprintf(buf, sizeof buf, "%016llx", static_cast<unsigned long long>(v));
  return buf;
}

uint64_t fnv1a(const uint8_t *p, size_t n) {
  uint64_t h = 1469598103934665603ull;
  for (size_t i = 0; i < n; ++i)
    h = (h ^ p[i]) * 1099511628211ull;
  return h;
}

uint64_t fileHash(const std::string &path) {
  auto f = MappedFile::open(path);
  return fnv1a(f->data(), f->size());
}

void fsyncDir(const fs::path &dir) {
  int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY);
  if (fd < 0)
    throw FormatError(dir.string(), "",
                      std::string("cannot open directory: ") +
                          std::strerror(errno));
  int rc = ::fsync(fd);
  int err = errno;
  ::close(fd);
  // Some file systems don't sync directories; that is not a failure.
  if (rc != 0 && err != EINVAL && err != EROFS)
    throw FormatError(dir.string(), "",
                      std::string("fsync failed: ") + std::strerror(err));
}

void renameOrThrow(const fs::path &from, const fs::path &to) {
  if (::rename(from.c_str(), to.c_str()) != 0)
    throw FormatError(to.string(), "",
                      "cannot rename " + from.string() + ": " +
                          std::strerror(errno));
}

// DIR without a trailing separator, and its parent ("." when relative).
fs::path targetOf(const std::string &dir) {
  fs::path p = fs::path(dir).lexically_normal();
  if (p.filename().empty())
    p = p.parent_path();
  if (p.empty() || p.filename() == "." || p.filename() == "..")
    throw FormatError(dir, "", "not a usable checkpoint directory name");
  return p;
}
fs::path parentOf(const fs::path &target) {
  return target.has_parent_path() ? target.parent_path() : fs::path(".");
}

std::string readText(const fs::path &path) {
  std::ifstream in(path, std::ios::binary);
  std::ostringstream ss;
  ss << in.rdbuf();
  return ss.str();
}

// The manifest of a complete checkpoint directory, or nullopt (with the
// reason) when something is missing or does not match its size / hash.
std::optional<nlohmann::json> completeManifest(const fs::path &dir,
                                               std::string *why = nullptr) {
  auto fail = [&](const std::string &w) -> std::optional<nlohmann::json> {
    if (why)
      *why = w;
    return std::nullopt;
  };
  fs::path mpath = dir / kManifest;
  std::error_code ec;
  if (!fs::is_regular_file(mpath, ec))
    return fail(mpath.string() + ": missing");
  nlohmann::json m;
  try {
    m = nlohmann::json::parse(readText(mpath));
  } catch (const std::exception &e) {
    return fail(mpath.string() + ": invalid JSON: " + e.what());
  }
  if (!m.is_object() || m.value("format", "") != kFormat)
    return fail(mpath.string() + ": format: not a bitloom checkpoint");
  if (!m.contains("version") || m["version"] != kVersion)
    return fail(mpath.string() + ": version: unsupported (expected " +
                std::to_string(kVersion) + ")");
  if (!m.contains("files") || !m["files"].is_object())
    return fail(mpath.string() + ": files: missing");
  for (const auto &[name, info] : m["files"].items()) {
    fs::path f = dir / name;
    if (!fs::is_regular_file(f, ec))
      return fail(f.string() + ": missing");
    if (!info.is_object() || !info.contains("bytes") ||
        !info.contains("fnv1a64"))
      return fail(mpath.string() + ": files." + name + ": malformed");
    if (fs::file_size(f, ec) != info["bytes"].get<uint64_t>())
      return fail(f.string() + ": size differs from the manifest (truncated?)");
    if (hex64(fileHash(f.string())) != info["fnv1a64"].get<std::string>())
      return fail(f.string() + ": content differs from the manifest's hash");
  }
  return m;
}

// Whether `dir` may be replaced by a save: an empty directory or one whose
// manifest says it is a bitloom checkpoint (complete or damaged). Anything
// else is the user's and is never moved or deleted.
bool replaceable(const fs::path &dir) {
  std::error_code ec;
  if (!fs::is_directory(dir, ec))
    return false;
  if (fs::is_empty(dir, ec))
    return true;
  try {
    nlohmann::json m = nlohmann::json::parse(readText(dir / kManifest));
    return m.is_object() && m.value("format", "") == kFormat;
  } catch (const std::exception &) {
    return false;
  }
}

std::string targetsText(const std::vector<std::string> &t) {
  std::string s;
  for (const std::string &x : t)
    s += (s.empty() ? "" : ",") + x;
  return s;
}

} // namespace

namespace faults {
void setCheckpointFailHook(FailHook hook) { failHook() = std::move(hook); }
} // namespace faults

//===----------------------------------------------------------------------===//
// Identity
//===----------------------------------------------------------------------===//

std::vector<std::pair<std::string, std::string>>
CheckpointIdentity::fields() const {
  std::vector<std::pair<std::string, std::string>> f = {
      {"artifact_hash", artifactHash},
      {"model_hash", modelHash},
      {"lora.rank", std::to_string(lora.rank)},
      {"lora.alpha", canonical(lora.alpha)},
      {"lora.dropout", canonical(lora.dropout)},
      {"lora.targets", targetsText(lora.targets)},
      {"optimizer.name", optimizer.name},
      {"optimizer.beta1", canonical(optimizer.beta1)},
      {"optimizer.beta2", canonical(optimizer.beta2)},
      {"optimizer.epsilon", canonical(optimizer.epsilon)},
      {"optimizer.weight_decay", canonical(optimizer.weightDecay)},
      {"optimizer.momentum", canonical(optimizer.momentum)},
  };
  for (const auto &[k, v] : extra)
    f.push_back({"extra." + k, v});
  return f;
}

nlohmann::json CheckpointIdentity::toJson() const {
  return {{"artifact_hash", artifactHash},
          {"model_hash", modelHash},
          {"lora",
           {{"rank", lora.rank},
            {"alpha", lora.alpha},
            {"dropout", lora.dropout},
            {"targets", lora.targets}}},
          {"optimizer",
           {{"name", optimizer.name},
            {"beta1", optimizer.beta1},
            {"beta2", optimizer.beta2},
            {"epsilon", optimizer.epsilon},
            {"weight_decay", optimizer.weightDecay},
            {"momentum", optimizer.momentum}}},
          {"extra", extra}};
}

CheckpointIdentity CheckpointIdentity::fromJson(const nlohmann::json &j,
                                                const std::string &source) {
  auto get = [&](const nlohmann::json &obj, const std::string &path,
                 const char *key) -> const nlohmann::json & {
    if (!obj.is_object() || !obj.contains(key))
      throw FormatError(source, path + key, "missing");
    return obj[key];
  };
  auto str = [&](const nlohmann::json &obj, const std::string &path,
                 const char *key) {
    const nlohmann::json &v = get(obj, path, key);
    if (!v.is_string())
      throw FormatError(source, path + key, "not a string");
    return v.get<std::string>();
  };
  auto num = [&](const nlohmann::json &obj, const std::string &path,
                 const char *key) {
    const nlohmann::json &v = get(obj, path, key);
    if (!v.is_number())
      throw FormatError(source, path + key, "not a number");
    return v.get<double>();
  };
  CheckpointIdentity id;
  id.artifactHash = str(j, "identity.", "artifact_hash");
  id.modelHash = str(j, "identity.", "model_hash");
  const nlohmann::json &l = get(j, "identity.", "lora");
  id.lora.rank = int64_t(num(l, "identity.lora.", "rank"));
  id.lora.alpha = num(l, "identity.lora.", "alpha");
  id.lora.dropout = num(l, "identity.lora.", "dropout");
  const nlohmann::json &t = get(l, "identity.lora.", "targets");
  if (!t.is_array())
    throw FormatError(source, "identity.lora.targets", "not a list");
  for (const auto &x : t) {
    if (!x.is_string())
      throw FormatError(source, "identity.lora.targets", "not a list of names");
    id.lora.targets.push_back(x.get<std::string>());
  }
  const nlohmann::json &o = get(j, "identity.", "optimizer");
  id.optimizer.name = str(o, "identity.optimizer.", "name");
  id.optimizer.beta1 = num(o, "identity.optimizer.", "beta1");
  id.optimizer.beta2 = num(o, "identity.optimizer.", "beta2");
  id.optimizer.epsilon = num(o, "identity.optimizer.", "epsilon");
  id.optimizer.weightDecay = num(o, "identity.optimizer.", "weight_decay");
  id.optimizer.momentum = num(o, "identity.optimizer.", "momentum");
  const nlohmann::json &e = get(j, "identity.", "extra");
  if (!e.is_object())
    throw FormatError(source, "identity.extra", "not an object");
  for (const auto &[k, v] : e.items()) {
    if (!v.is_string())
      throw FormatError(source, "identity.extra." + k, "not a string");
    id.extra[k] = v.get<std::string>();
  }
  return id;
}

std::string identityDifference(const CheckpointIdentity &saved,
                               const CheckpointIdentity &current) {
  std::vector<std::pair<std::string, std::string>> a = saved.fields(),
                                                   b = current.fields();
  std::map<std::string, std::string> ma(a.begin(), a.end()),
      mb(b.begin(), b.end());
  std::vector<std::string> keys;
  for (const auto &[k, v] : a)
    keys.push_back(k);
  for (const auto &[k, v] : b)
    if (!ma.count(k))
      keys.push_back(k);
  std::string out;
  auto show = [](const std::map<std::string, std::string> &m,
                 const std::string &k) {
    auto it = m.find(k);
    return it == m.end()        ? std::string("(absent)")
           : it->second.empty() ? std::string("\"\"")
                                : it->second;
  };
  for (const std::string &k : keys) {
    std::string va = show(ma, k), vb = show(mb, k);
    if (va != vb)
      out +=
          (out.empty() ? "" : "; ") + k + ": checkpoint " + va + ", now " + vb;
  }
  return out;
}

//===----------------------------------------------------------------------===//
// Save
//===----------------------------------------------------------------------===//

std::string recoverCheckpoint(const std::string &dir) {
  const fs::path target = targetOf(dir);
  const fs::path parent = parentOf(target);
  const std::string name = target.filename().string();
  std::error_code ec;
  if (!fs::is_directory(parent, ec))
    return "";
  std::vector<fs::path> leftovers;
  for (const auto &e : fs::directory_iterator(parent, ec)) {
    std::string f = e.path().filename().string();
    if (f.rfind(name + ".tmp-", 0) == 0 || f.rfind(name + ".old-", 0) == 0)
      leftovers.push_back(e.path());
  }
  if (leftovers.empty())
    return "";
  std::sort(leftovers.begin(), leftovers.end());
  std::string did;
  if (!fs::exists(target, ec)) {
    // Interrupted between moving the old checkpoint aside and putting the
    // new one in place (or during a first save): the newest complete one
    // wins; at equal steps the old one.
    std::optional<fs::path> best;
    int64_t bestStep = -1;
    bool bestOld = false;
    for (const fs::path &p : leftovers) {
      std::optional<nlohmann::json> m = completeManifest(p);
      if (!m || !(*m)["step"].is_number_integer())
        continue;
      int64_t step = (*m)["step"].get<int64_t>();
      bool isOld = p.filename().string().rfind(name + ".old-", 0) == 0;
      if (step > bestStep || (step == bestStep && isOld && !bestOld)) {
        best = p;
        bestStep = step;
        bestOld = isOld;
      }
    }
    if (best) {
      renameOrThrow(*best, target);
      fsyncDir(parent);
      did = "recovered " + target.string() + " (step " +
            std::to_string(bestStep) + ") from " + best->filename().string();
    }
  }
  for (const fs::path &p : leftovers) {
    if (!fs::exists(p, ec))
      continue;
    fs::remove_all(p, ec);
    did += std::string(did.empty() ? "" : "; ") + "removed " +
           p.filename().string();
  }
  fsyncDir(parent);
  return did;
}

void saveCheckpoint(const std::string &dir, const Checkpoint &c) {
  const fs::path target = targetOf(dir);
  const fs::path parent = parentOf(target);
  const std::string name = target.filename().string();
  std::error_code ec;
  fs::create_directories(parent, ec);
  if (ec)
    throw FormatError(parent.string(), "", "cannot create: " + ec.message());
  recoverCheckpoint(dir);
  if (fs::exists(target, ec) && !replaceable(target))
    throw FormatError(target.string(), "",
                      "exists and is not a bitloom checkpoint; refusing to "
                      "replace it");

  std::string tmpl = (parent / (name + ".tmp-XXXXXX")).string();
  std::vector<char> buf(tmpl.begin(), tmpl.end());
  buf.push_back('\0');
  if (!::mkdtemp(buf.data()))
    throw FormatError(tmpl, "",
                      std::string("cannot create: ") + std::strerror(errno));
  const fs::path tmp(buf.data());
  const std::string suffix = tmp.filename().string().substr(name.size() + 5);
  const fs::path old = parent / (name + ".old-" + suffix);
  bool moved = false;
  try {
    point("tmp-created");
    // Tensors: adapter then optimizer state, each in name order.
    std::vector<SafetensorsEntry> entries;
    for (const auto &[n, t] : c.adapter)
      entries.push_back({"adapter/" + n, DType::F32, t.shape, t.data.data(),
                         t.data.size() * sizeof(float)});
    for (const auto &[n, t] : c.optimizer)
      entries.push_back({"optimizer/" + n, DType::F32, t.shape, t.data.data(),
                         t.data.size() * sizeof(float)});
    for (const SafetensorsEntry &e : entries) {
      int64_t n = 1;
      for (int64_t d : e.shape)
        n *= d;
      if (uint64_t(n) * sizeof(float) != e.byteSize)
        throw FormatError(dir, e.name, "data does not match its shape");
    }
    const std::string identity = c.identity.toJson().dump();
    const std::string position = c.data.toJson().dump();
    writeSafetensors((tmp / kState).string(), entries,
                     {{"format", kFormat},
                      {"step", std::to_string(c.step)},
                      {"identity", identity},
                      {"data_position", position}});
    point("state-written");
    nlohmann::ordered_json m;
    m["format"] = kFormat;
    m["version"] = kVersion;
    m["step"] = c.step;
    m["data_position"] = c.data.toJson();
    m["identity"] = c.identity.toJson();
    m["state"] = c.state;
    nlohmann::json adapterNames = nlohmann::json::array(),
                   optimizerNames = nlohmann::json::array();
    for (const auto &[n, t] : c.adapter)
      adapterNames.push_back(n);
    for (const auto &[n, t] : c.optimizer)
      optimizerNames.push_back(n);
    m["tensors"] = {{"adapter", adapterNames}, {"optimizer", optimizerNames}};
    const std::string statePath = (tmp / kState).string();
    m["files"] = {{kState,
                   {{"bytes", fs::file_size(statePath)},
                    {"fnv1a64", hex64(fileHash(statePath))}}}};
    std::string text = m.dump(2) + "\n";
    writeFileAtomically((tmp / kManifest).string(), text.data(), text.size());
    point("files-written");
    fsyncDir(tmp);
    if (fs::exists(target, ec)) {
      renameOrThrow(target, old);
      moved = true;
      fsyncDir(parent);
      point("old-moved");
    }
    renameOrThrow(tmp, target);
    fsyncDir(parent);
    point("new-in-place");
    if (moved) {
      fs::remove_all(old, ec);
      fsyncDir(parent);
    }
    point("done");
  } catch (const faults::SimulatedCrash &) {
    throw; // a crash cleans nothing up
  } catch (...) {
    // A failed save must leave the previous checkpoint in place.
    if (moved && !fs::exists(target, ec))
      ::rename(old.c_str(), target.c_str());
    fs::remove_all(tmp, ec);
    throw;
  }
}

//===----------------------------------------------------------------------===//
// Load
//===----------------------------------------------------------------------===//

bool checkpointExists(const std::string &dir) {
  recoverCheckpoint(dir);
  std::error_code ec;
  return fs::exists(targetOf(dir) / kManifest, ec);
}

Checkpoint loadCheckpoint(const std::string &dir,
                          const CheckpointIdentity *expected) {
  recoverCheckpoint(dir);
  const fs::path target = targetOf(dir);
  const std::string mpath = (target / kManifest).string();
  std::error_code ec;
  if (!fs::is_directory(target, ec))
    throw FormatError(target.string(), "", "no checkpoint here");
  std::string why;
  std::optional<nlohmann::json> m = completeManifest(target, &why);
  if (!m)
    throw FormatError(target.string(), "",
                      "incomplete or damaged checkpoint: " + why);
  Checkpoint c;
  if (!(*m)["step"].is_number_integer())
    throw FormatError(mpath, "step", "not an integer");
  c.step = (*m)["step"].get<int64_t>();
  if (!m->contains("identity"))
    throw FormatError(mpath, "identity", "missing");
  c.identity = CheckpointIdentity::fromJson((*m)["identity"], mpath);
  if (!m->contains("data_position"))
    throw FormatError(mpath, "data_position", "missing");
  c.data = DataPosition::fromJson((*m)["data_position"], mpath);
  if (m->contains("state"))
    c.state = (*m)["state"];

  const std::string spath = (target / kState).string();
  SafetensorsFile st = SafetensorsFile::open(spath);
  const auto &meta = st.metadata();
  auto metaOf = [&](const char *k) {
    auto it = meta.find(k);
    return it == meta.end() ? std::string() : it->second;
  };
  // The two copies of the identity and step must agree: a manifest paired
  // with another run's tensors is refused.
  nlohmann::json metaIdentity;
  try {
    metaIdentity = nlohmann::json::parse(metaOf("identity"));
  } catch (const std::exception &) {
    throw FormatError(spath, "__metadata__.identity", "missing or not JSON");
  }
  if (metaIdentity != c.identity.toJson() ||
      metaOf("step") != std::to_string(c.step))
    throw FormatError(spath, "__metadata__",
                      "identity or step differs from manifest.json");
  if (expected) {
    std::string diff = identityDifference(c.identity, *expected);
    if (!diff.empty())
      throw FormatError(mpath, "identity",
                        "checkpoint belongs to another run: " + diff);
  }
  for (const SafetensorsTensor &t : st.tensors()) {
    if (t.dtype != DType::F32)
      throw FormatError(spath, t.name, "must be F32");
    FloatTensor f;
    f.shape = t.shape;
    f.data.resize(t.numElements());
    std::memcpy(f.data.data(), t.data, t.byteSize);
    if (t.name.rfind("adapter/", 0) == 0)
      c.adapter[t.name.substr(8)] = std::move(f);
    else if (t.name.rfind("optimizer/", 0) == 0)
      c.optimizer[t.name.substr(10)] = std::move(f);
    else
      throw FormatError(spath, t.name, "neither adapter/ nor optimizer/ state");
  }
  return c;
}

} // namespace bitloom::trainer
