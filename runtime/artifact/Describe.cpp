//===- Describe.cpp - Human-readable summary of a .blm artifact -----------===//
#include "artifact/Describe.h"
#include "artifact/Artifact.h"
#include "artifact/Validate.h"

#include <cstdio>
#include <set>
#include <sstream>
#include <tuple>
#include <utility>

namespace bitloom::blm {

using detail::count;
using detail::str;

std::string formatBytes(uint64_t bytes) {
  static const char *units[] = {"KiB", "MiB", "GiB", "TiB"};
  if (bytes < 1024)
    return std::to_string(bytes) + " B";
  double v = double(bytes);
  int u = -1;
  while (v >= 1024 && u < 3) {
    v /= 1024;
    ++u;
  }
  char buf[32];
  std::snprintf(buf, sizeof(buf), "%.2f %s", v, units[u]);
  return buf;
}

namespace {

std::string join(const std::vector<std::string> &v, const char *sep) {
  std::string out;
  for (size_t i = 0; i < v.size(); ++i)
    out += (i ? sep : "") + v[i];
  return out;
}

std::string dims(const fb::Dim3 *d) {
  if (!d)
    return "1x1x1";
  return std::to_string(d->x()) + "x" + std::to_string(d->y()) + "x" +
         std::to_string(d->z());
}

std::string shape(const flatbuffers::Vector<int64_t> *s) {
  std::string out = "[";
  for (uint32_t i = 0; i < count(s); ++i) {
    int64_t d = s->Get(i);
    out += (i ? ", " : "") + (d < 0 ? std::string("?") : std::to_string(d));
  }
  return out + "]";
}

std::string number(double v) {
  std::ostringstream os;
  os << v;
  return os.str();
}

const char *accessName(fb::Access a) {
  switch (a) {
  case fb::Access::Read:
    return "r";
  case fb::Access::Write:
    return "w";
  default:
    return "rw";
  }
}

void signatures(
    std::ostream &os, const char *what,
    const flatbuffers::Vector<flatbuffers::Offset<fb::TensorSig>> *sigs) {
  for (uint32_t i = 0; i < count(sigs); ++i) {
    const fb::TensorSig *s = sigs->Get(i);
    os << "    " << what << " " << i << " " << s->name()->str() << ": "
       << str(s->dtype()) << " " << shape(s->shape()) << " "
       << fb::EnumNameRole(s->role()) << "\n";
  }
}

/// The kernels an entry point runs (each once) and the bytes its
/// dispatches bind, by source.
void kernelsAndBindings(const Artifact &a, const fb::EntryPoint &e,
                        std::ostream &os, const DescribeOptions &options) {
  std::set<std::pair<uint32_t, uint32_t>> kernels;
  std::set<std::tuple<int, uint32_t, uint64_t>> bound; // source, index, offset
  std::set<uint32_t> parameters, slots;
  uint64_t bytes[5] = {0, 0, 0, 0, 0};
  for (uint32_t d = 0; d < count(e.dispatches()); ++d) {
    const fb::Dispatch *dp = e.dispatches()->Get(d);
    if (kernels.insert({dp->executable(), dp->kernel()}).second) {
      const fb::Executable &ex = a.executable(dp->executable());
      const fb::Kernel *k = ex.kernels()->Get(dp->kernel());
      os << "    kernel " << k->name()->str() << " (executable "
         << dp->executable() << " " << str(ex.name()) << ", "
         << ex.format()->str() << "): grid " << dims(k->workgroup_count())
         << ", workgroup " << dims(k->workgroup_size());
      if (k->source_location() && k->source_location()->size())
        os << ", at " << k->source_location()->str();
      os << "\n";
      auto note = options.kernelNotes.find(k->name()->str());
      if (note != options.kernelNotes.end())
        os << "      " << note->second << "\n";
    }
    for (uint32_t b = 0; b < count(dp->bindings()); ++b) {
      // A buffer bound by several dispatches counts once.
      const fb::Binding *bd = dp->bindings()->Get(b);
      if (!bound.insert({int(bd->source()), bd->index(), bd->offset()}).second)
        continue;
      if (bd->source() == fb::BindingSource::Parameter)
        parameters.insert(bd->index());
      if (bd->source() == fb::BindingSource::ArenaSlot)
        slots.insert(bd->index());
      if (size_t(bd->source()) < 5)
        bytes[size_t(bd->source())] += bd->size();
    }
  }
  if (!count(e.dispatches()))
    return;
  os << "    binds " << parameters.size() << " parameters ("
     << formatBytes(bytes[size_t(fb::BindingSource::Parameter)])
     << "), arguments "
     << formatBytes(bytes[size_t(fb::BindingSource::Argument)]) << ", results "
     << formatBytes(bytes[size_t(fb::BindingSource::Result)]) << ", "
     << slots.size() << " arena slots ("
     << formatBytes(bytes[size_t(fb::BindingSource::ArenaSlot)]) << ")";
  if (bytes[size_t(fb::BindingSource::Arena)])
    os << ", its arena ("
       << formatBytes(bytes[size_t(fb::BindingSource::Arena)]) << ")";
  os << "\n";
}

} // namespace

void describeArtifact(const Artifact &a, std::ostream &os,
                      const DescribeOptions &options) {
  const fb::Manifest &m = a.manifest();
  os << a.path() << ": .blm " << a.version().major << "." << a.version().minor
     << ", " << formatBytes(a.fileSize()) << " (" << a.fileSize() << " bytes)";
  if (!a.producer().empty())
    os << ", produced by " << a.producer();
  os << "\n";

  TargetInfo t = a.target();
  os << "target: " << (t.name.empty() ? "(none)" : t.name);
  if (!t.cpu.empty())
    os << ", cpu " << t.cpu;
  if (!t.features.empty())
    os << ", features " << join(t.features, ",");
  os << "\n";

  if (m.model()) {
    ModelConfig c = a.modelConfig();
    os << "model: " << c.architecture << ", vocab " << c.vocabSize
       << ", hidden " << c.hiddenSize << ", intermediate " << c.intermediateSize
       << ", layers " << c.numLayers << ", heads " << c.numHeads << " (kv "
       << c.numKvHeads << ", dim " << c.headDim << "), max positions "
       << c.maxPositionEmbeddings << ", rope theta " << number(c.ropeTheta)
       << ", rms eps " << number(c.rmsNormEps) << ", " << c.hiddenAct << ", "
       << (c.tieWordEmbeddings ? "tied" : "untied") << " embeddings, "
       << c.weightQuant << " weights\n";
  }
  if (m.lora()) {
    LoraConfig l = a.loraConfig();
    os << "lora: rank " << l.rank << ", alpha " << number(l.alpha)
       << ", dropout " << number(l.dropout) << ", targets "
       << join(l.targets, ",") << ", trainable " << l.trainable << "\n";
  }
  if (m.options()) {
    CompileOptions o = a.compileOptions();
    os << "compiled for: seq len " << o.seqLen << ", batch " << o.batchSize
       << ", memory budget "
       << (o.memoryBudget ? formatBytes(o.memoryBudget) : "none")
       << ", optimizer " << o.optimizer
       << (o.recompute ? ", activation recompute" : "") << "\n";
  }
  // Long or multi-line values (tokenizer.json, chat templates) by size only.
  for (const auto &[k, v] : a.metadata()) {
    if (v.size() > 120 || v.find('\n') != std::string::npos)
      os << "metadata " << k << " = (" << v.size() << " bytes)\n";
    else
      os << "metadata " << k << " = " << v << "\n";
  }

  os << "entry points (" << a.numEntryPoints() << "):\n";
  for (size_t i = 0; i < a.numEntryPoints(); ++i) {
    const fb::EntryPoint &e = a.entryPoint(i);
    os << "  " << e.name()->str() << ": " << count(e.arguments())
       << " arguments, " << count(e.results()) << " results, "
       << count(e.dispatches()) << " dispatches\n";
    kernelsAndBindings(a, e, os, options);
    signatures(os, "arg", e.arguments());
    signatures(os, "result", e.results());
  }

  os << "executables (" << a.numExecutables() << "):\n";
  for (size_t i = 0; i < a.numExecutables(); ++i) {
    const fb::Executable &e = a.executable(i);
    std::string target = str(e.target());
    os << "  " << i << " " << str(e.name()) << ": " << e.format()->str()
       << ", target " << (target.empty() ? t.name : target) << ", "
       << formatBytes(a.blob(e.blob()).size()) << ", " << count(e.kernels())
       << " kernels\n";
    for (uint32_t k = 0; k < count(e.kernels()); ++k) {
      const fb::Kernel *kernel = e.kernels()->Get(k);
      os << "    kernel " << k << " " << kernel->name()->str() << ": grid "
         << dims(kernel->workgroup_count()) << ", workgroup "
         << dims(kernel->workgroup_size());
      if (kernel->source_location() && kernel->source_location()->size())
        os << ", at " << kernel->source_location()->str();
      os << "\n";
    }
  }

  uint64_t total = 0, trainable = 0;
  for (size_t i = 0; i < a.numParameters(); ++i) {
    uint64_t size = a.blob(a.parameter(i).blob()).size();
    total += size;
    if (a.parameter(i).trainable())
      trainable += size;
  }
  os << "parameters (" << a.numParameters() << ", " << formatBytes(total)
     << ", " << formatBytes(trainable) << " trainable):\n";
  for (size_t i = 0; i < a.numParameters(); ++i) {
    const fb::Parameter &p = a.parameter(i);
    const fb::Blob &b = a.blob(p.blob());
    os << "  " << i << " " << p.name()->str() << ": " << p.dtype()->str() << " "
       << shape(p.shape()) << ", " << formatBytes(b.size()) << " at data+"
       << b.offset() << (p.trainable() ? ", trainable" : "") << "\n";
  }

  if (const fb::MemoryPlan *plan = a.memoryPlan()) {
    os << "memory plan: arena " << formatBytes(plan->arena_size()) << " ("
       << plan->arena_size() << " bytes), alignment " << plan->alignment()
       << ", " << count(plan->slots()) << " slots"
       << (options.slots || !count(plan->slots())
               ? ""
               : " (bitloom inspect --memory lists the largest)")
       << "\n";
    for (uint32_t i = 0; options.slots && i < count(plan->slots()); ++i) {
      const fb::Slot *s = plan->slots()->Get(i);
      os << "  slot " << i << " " << str(s->name()) << ": [" << s->offset()
         << ", " << s->offset() + s->size() << ") " << formatBytes(s->size())
         << ", " << a.entryPoint(s->entry_point()).name()->str()
         << " dispatches " << s->lifetime_begin() << ".." << s->lifetime_end();
      if (s->schedule_begin() != 0 || s->schedule_end() != UINT32_MAX)
        os << " (schedule " << s->schedule_begin() << ".." << s->schedule_end()
           << ")";
      if (s->op() && s->op()->size())
        os << ", defined by " << s->op()->str();
      os << "\n";
    }
  } else {
    os << "memory plan: none\n";
  }

  for (size_t i = 0; options.dispatches && i < a.numEntryPoints(); ++i) {
    const fb::EntryPoint &e = a.entryPoint(i);
    os << "schedule " << e.name()->str() << ":\n";
    for (uint32_t d = 0; d < count(e.dispatches()); ++d) {
      const fb::Dispatch *dp = e.dispatches()->Get(d);
      const fb::Executable &ex = a.executable(dp->executable());
      os << "  " << d << " " << ex.kernels()->Get(dp->kernel())->name()->str()
         << " (executable " << dp->executable() << ", kernel " << dp->kernel()
         << ") grid " << dims(dp->workgroup_count());
      if (dp->op() && dp->op()->size())
        os << ", op " << dp->op()->str();
      os << "\n";
      for (uint32_t k = 0; k < count(dp->bindings()); ++k) {
        const fb::Binding *b = dp->bindings()->Get(k);
        os << "    binding " << k << ": ";
        switch (b->source()) {
        case fb::BindingSource::ArenaSlot:
          os << "slot " << b->index() << " "
             << str(a.memoryPlan()->slots()->Get(b->index())->name());
          break;
        case fb::BindingSource::Parameter:
          os << "parameter " << a.parameter(b->index()).name()->str();
          break;
        case fb::BindingSource::Argument:
          os << "argument " << e.arguments()->Get(b->index())->name()->str();
          break;
        case fb::BindingSource::Result:
          os << "result " << e.results()->Get(b->index())->name()->str();
          break;
        case fb::BindingSource::Arena:
          os << "the arena";
          break;
        }
        os << " [+" << b->offset() << ", " << b->size() << " bytes] "
           << accessName(b->access()) << "\n";
      }
      if (count(dp->constants())) {
        os << "    constants:";
        for (uint32_t c = 0; c < count(dp->constants()); ++c)
          os << " " << dp->constants()->Get(c);
        os << "\n";
      }
    }
  }
}

} // namespace bitloom::blm
