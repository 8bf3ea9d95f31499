//===- Validate.cpp - Structural checks of a manifest ---------------------===//
#include "artifact/Validate.h"
#include "artifact/Format.h"
#include "formats/DType.h"
#include "formats/Error.h"

#include <algorithm>
#include <cctype>
#include <numeric>
#include <set>
#include <string_view>

namespace bitloom::blm::detail {

namespace {

std::string num(uint64_t v) { return std::to_string(v); }

std::string dims(const fb::Dim3 &d) {
  return num(d.x()) + "x" + num(d.y()) + "x" + num(d.z());
}

/// The formats DType a parameter dtype names ("f32", "TQ2_0"), if any.
std::optional<DType> knownDType(const std::string &dtype) {
  std::string upper = dtype;
  for (char &c : upper)
    c = char(std::toupper(static_cast<unsigned char>(c)));
  return dtypeFromName(upper);
}

struct Checker {
  const fb::Manifest &m;
  const std::string &file;
  uint64_t dataOffset, dataSize;
  const std::vector<std::string> &owners;

  [[noreturn]] void fail(const std::string &field, const std::string &what) {
    throw FormatError(file, field, what);
  }

  /// FlatBuffers' Verifier (2.0.x) checks the alignment of a vector's length
  /// but not of its elements; 8-byte elements are checked here (an empty
  /// vector may sit anywhere).
  template <typename T>
  void aligned8(const flatbuffers::Vector<T> *v, const std::string &field) {
    if (v && v->size() > 0 && reinterpret_cast<uintptr_t>(v->Data()) % 8 != 0)
      fail(field, "misaligned vector in the manifest");
  }

  void blobs() {
    uint32_t n = count(m.blobs());
    aligned8(m.blobs(), "manifest.blobs");
    std::vector<uint32_t> order;
    for (uint32_t i = 0; i < n; ++i) {
      const fb::Blob *b = m.blobs()->Get(i);
      if (!isPowerOfTwo(b->alignment()) || b->alignment() < kMinBlobAlignment)
        fail(owners[i],
             "data alignment " + num(b->alignment()) +
                 " is not a power of two >= " + num(kMinBlobAlignment));
      if (!rangeInside(b->offset(), b->size(), dataSize))
        fail(owners[i], "data outside the file's data section: offset " +
                            num(b->offset()) + " + " + num(b->size()) +
                            " bytes > " + num(dataSize) + " bytes");
      if ((dataOffset + b->offset()) % b->alignment() != 0)
        fail(owners[i], "misaligned data: file offset " +
                            num(dataOffset + b->offset()) +
                            " is not a multiple of " + num(b->alignment()));
      if (b->size() > 0)
        order.push_back(i);
    }
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      return m.blobs()->Get(a)->offset() < m.blobs()->Get(b)->offset();
    });
    for (size_t k = 1; k < order.size(); ++k) {
      const fb::Blob *prev = m.blobs()->Get(order[k - 1]);
      const fb::Blob *cur = m.blobs()->Get(order[k]);
      if (prev->offset() + prev->size() > cur->offset())
        fail(owners[order[k]], "data overlaps " + owners[order[k - 1]]);
    }
  }

  void executables() {
    uint32_t nBlobs = count(m.blobs());
    for (uint32_t i = 0; i < count(m.executables()); ++i) {
      const fb::Executable *e = m.executables()->Get(i);
      std::string field = "executable " + num(i) + " (" + str(e->name()) + ")";
      if (e->blob() >= nBlobs)
        fail(field, "blob index " + num(e->blob()) + " out of range (" +
                        num(nBlobs) + " blobs)");
      for (uint32_t k = 0; k < count(e->kernels()); ++k) {
        const fb::Kernel *kernel = e->kernels()->Get(k);
        const fb::Dim3 *wg = kernel->workgroup_size();
        if (wg && (wg->x() == 0 || wg->y() == 0 || wg->z() == 0))
          fail(field + ", kernel " + num(k) + " (" + kernel->name()->str() +
                   ")",
               "workgroup size " + dims(*wg) + " has a zero extent");
      }
    }
  }

  void parameters() {
    uint32_t nBlobs = count(m.blobs());
    std::set<std::string_view> names;
    for (uint32_t i = 0; i < count(m.parameters()); ++i) {
      const fb::Parameter *p = m.parameters()->Get(i);
      std::string field = "parameter " + p->name()->str();
      aligned8(p->shape(), field + ", shape");
      if (!names.insert(p->name()->string_view()).second)
        fail(field, "duplicate parameter name");
      if (p->blob() >= nBlobs)
        fail(field, "blob index " + num(p->blob()) + " out of range (" +
                        num(nBlobs) + " blobs)");
      uint64_t elements = 1;
      bool overflow = false;
      for (uint32_t d = 0; d < count(p->shape()); ++d) {
        int64_t dim = p->shape()->Get(d);
        if (dim < 0)
          fail(field, "shape dimension " + std::to_string(dim) +
                          " is negative (parameters have static shapes)");
        if (dim != 0 && elements > UINT64_MAX / uint64_t(dim))
          overflow = true;
        elements *= uint64_t(dim);
      }
      std::optional<DType> t = knownDType(p->dtype()->str());
      if (!t)
        continue; // an opaque packing: its size is the producer's business
      uint64_t blockElems = dtypeBlockSize(*t),
               blockBytes = dtypeBlockBytes(*t);
      if (overflow || elements % blockElems != 0 ||
          elements / blockElems > UINT64_MAX / blockBytes)
        fail(field, "shape does not fit dtype " + p->dtype()->str());
      uint64_t bytes = elements / blockElems * blockBytes;
      uint64_t stored = m.blobs()->Get(p->blob())->size();
      if (bytes != stored)
        fail(field, "holds " + num(stored) + " bytes but " + p->dtype()->str() +
                        " of " + num(elements) + " elements takes " +
                        num(bytes));
    }
  }

  void
  signature(const flatbuffers::Vector<flatbuffers::Offset<fb::TensorSig>> *sigs,
            const std::string &entryField, const char *what) {
    for (uint32_t i = 0; i < count(sigs); ++i) {
      const fb::TensorSig *s = sigs->Get(i);
      std::string field = entryField + ", " + what + " " + num(i) + " (" +
                          s->name()->str() + ")";
      aligned8(s->shape(), field + ", shape");
      if (uint8_t(s->role()) > uint8_t(fb::Role::MAX))
        fail(field, "unknown role " + num(uint8_t(s->role())));
    }
  }

  void entryPoints() {
    std::set<std::string_view> names;
    uint32_t nExec = count(m.executables());
    uint32_t nParams = count(m.parameters());
    const fb::MemoryPlan *plan = m.memory_plan();
    uint32_t nSlots = plan ? count(plan->slots()) : 0;
    for (uint32_t e = 0; e < count(m.entry_points()); ++e) {
      const fb::EntryPoint *ep = m.entry_points()->Get(e);
      std::string field = "entry point " + ep->name()->str();
      if (!names.insert(ep->name()->string_view()).second)
        fail(field, "duplicate entry point name");
      signature(ep->arguments(), field, "argument");
      signature(ep->results(), field, "result");
      uint32_t nArgs = count(ep->arguments());
      uint32_t nResults = count(ep->results());
      for (uint32_t d = 0; d < count(ep->dispatches()); ++d) {
        const fb::Dispatch *dp = ep->dispatches()->Get(d);
        std::string dfield = field + ", dispatch " + num(d);
        if (dp->executable() >= nExec)
          fail(dfield, "executable index " + num(dp->executable()) +
                           " out of range (" + num(nExec) + " executables)");
        const fb::Executable *ex = m.executables()->Get(dp->executable());
        aligned8(dp->bindings(), dfield + ", bindings");
        if (dp->kernel() >= count(ex->kernels()))
          fail(dfield, "kernel index " + num(dp->kernel()) +
                           " out of range (executable " +
                           num(dp->executable()) + " has " +
                           num(count(ex->kernels())) + " kernels)");
        for (uint32_t k = 0; k < count(dp->bindings()); ++k) {
          const fb::Binding *b = dp->bindings()->Get(k);
          std::string bfield = dfield + ", binding " + num(k);
          if (uint8_t(b->access()) > uint8_t(fb::Access::MAX))
            fail(bfield, "unknown access " + num(uint8_t(b->access())));
          uint64_t limit = 0;
          bool sized = true;
          switch (b->source()) {
          case fb::BindingSource::ArenaSlot: {
            if (b->index() >= nSlots)
              fail(bfield, "arena slot " + num(b->index()) + " out of range (" +
                               num(nSlots) + " slots)");
            const fb::Slot *s = plan->slots()->Get(b->index());
            if (s->entry_point() != e)
              fail(bfield, "arena slot " + num(b->index()) +
                               " belongs to entry point " +
                               num(s->entry_point()));
            if (d < s->lifetime_begin() || d > s->lifetime_end())
              fail(bfield, "arena slot " + num(b->index()) +
                               " is not live here (dispatches " +
                               num(s->lifetime_begin()) + ".." +
                               num(s->lifetime_end()) + ")");
            limit = s->size();
            break;
          }
          case fb::BindingSource::Arena:
            if (!plan)
              fail(bfield, "binds the arena but there is no memory plan");
            if (b->index() != 0)
              fail(bfield,
                   "arena binding index " + num(b->index()) + " (must be 0)");
            limit = std::min<uint64_t>(plan->arena_size(),
                                       m.entry_points()->Get(e)->arena_bytes());
            break;
          case fb::BindingSource::Parameter:
            if (b->index() >= nParams)
              fail(bfield, "parameter " + num(b->index()) + " out of range (" +
                               num(nParams) + " parameters)");
            limit =
                m.blobs()->Get(m.parameters()->Get(b->index())->blob())->size();
            break;
          case fb::BindingSource::Argument:
            if (b->index() >= nArgs)
              fail(bfield, "argument " + num(b->index()) + " out of range (" +
                               num(nArgs) + " arguments)");
            sized = false; // the caller's buffer, checked at run time
            break;
          case fb::BindingSource::Result:
            if (b->index() >= nResults)
              fail(bfield, "result " + num(b->index()) + " out of range (" +
                               num(nResults) + " results)");
            sized = false;
            break;
          default:
            fail(bfield, "unknown binding source " + num(uint8_t(b->source())));
          }
          if (sized && !rangeInside(b->offset(), b->size(), limit))
            fail(bfield, "range offset " + num(b->offset()) + " + " +
                             num(b->size()) + " bytes exceeds its buffer (" +
                             num(limit) + " bytes)");
        }
      }
    }
  }

  static bool wholeDispatch(const fb::Slot *s) {
    return s->schedule_begin() == 0 && s->schedule_end() == UINT32_MAX;
  }

  static std::string lifetimeDetail(const fb::Slot *a, const fb::Slot *b) {
    if (wholeDispatch(a) && wholeDispatch(b))
      return "";
    return "; schedule positions " + num(b->schedule_begin()) + ".." +
           num(b->schedule_end()) + " and " + num(a->schedule_begin()) + ".." +
           num(a->schedule_end());
  }

  void memoryPlan() {
    const fb::MemoryPlan *plan = m.memory_plan();
    if (!plan)
      return;
    if (!isPowerOfTwo(plan->alignment()))
      fail("memory plan",
           "alignment " + num(plan->alignment()) + " is not a power of two");
    uint32_t nEntries = count(m.entry_points());
    for (uint32_t i = 0; i < count(plan->slots()); ++i) {
      const fb::Slot *s = plan->slots()->Get(i);
      std::string field =
          "memory plan, slot " + num(i) + " (" + str(s->name()) + ")";
      if (s->offset() % plan->alignment() != 0)
        fail(field, "offset " + num(s->offset()) + " is not a multiple of " +
                        num(plan->alignment()));
      if (!rangeInside(s->offset(), s->size(), plan->arena_size()))
        fail(field, "offset " + num(s->offset()) + " + " + num(s->size()) +
                        " bytes lies outside the arena (" +
                        num(plan->arena_size()) + " bytes)");
      if (s->entry_point() >= nEntries)
        fail(field, "entry point " + num(s->entry_point()) + " out of range (" +
                        num(nEntries) + " entry points)");
      uint32_t nDispatches =
          count(m.entry_points()->Get(s->entry_point())->dispatches());
      if (s->lifetime_begin() > s->lifetime_end() ||
          s->lifetime_end() >= nDispatches)
        fail(field, "lifetime " + num(s->lifetime_begin()) + ".." +
                        num(s->lifetime_end()) + " is not within the " +
                        num(nDispatches) + " dispatches of its entry point");
      if (!wholeDispatch(s)) {
        const fb::EntryPoint *ep = m.entry_points()->Get(s->entry_point());
        if (s->lifetime_begin() != s->lifetime_end() ||
            s->schedule_begin() > s->schedule_end() ||
            s->schedule_end() >= ep->schedule_length())
          fail(field, "schedule positions " + num(s->schedule_begin()) + ".." +
                          num(s->schedule_end()) +
                          " are not within one dispatch's schedule of " +
                          num(ep->schedule_length()) + " positions");
        if (!rangeInside(s->offset(), s->size(), ep->arena_bytes()))
          fail(field, "offset " + num(s->offset()) + " + " + num(s->size()) +
                          " bytes lies outside its entry point's arena (" +
                          num(ep->arena_bytes()) + " bytes)");
      }
    }
  }

  /// Two slots of one entry point conflict when they share arena bytes and
  /// their lifetimes intersect, except for an in-place hand-over (one ends at
  /// the very dispatch where the other begins).
  void aliasing() {
    const fb::MemoryPlan *plan = m.memory_plan();
    if (!plan)
      return;
    std::vector<uint32_t> order;
    for (uint32_t i = 0; i < count(plan->slots()); ++i)
      if (plan->slots()->Get(i)->size() > 0)
        order.push_back(i);
    auto slot = [&](uint32_t i) { return plan->slots()->Get(i); };
    std::sort(order.begin(), order.end(), [&](uint32_t a, uint32_t b) {
      return slot(a)->offset() < slot(b)->offset();
    });
    for (size_t i = 0; i < order.size(); ++i) {
      const fb::Slot *a = slot(order[i]);
      uint64_t end = a->offset() + a->size();
      for (size_t j = i + 1; j < order.size() && slot(order[j])->offset() < end;
           ++j) {
        const fb::Slot *b = slot(order[j]);
        if (a->entry_point() != b->entry_point())
          continue;
        bool intersect = a->lifetime_begin() <= b->lifetime_end() &&
                         b->lifetime_begin() <= a->lifetime_end();
        bool handOver = a->lifetime_end() == b->lifetime_begin() ||
                        b->lifetime_end() == a->lifetime_begin();
        bool conflict = intersect && !handOver;
        // Two buffers of one dispatch only: their positions in its schedule
        // decide, with no hand-over (an op may read one while writing the
        // other).
        if (a->lifetime_begin() == a->lifetime_end() &&
            b->lifetime_begin() == b->lifetime_end() &&
            a->lifetime_begin() == b->lifetime_begin())
          conflict = a->schedule_begin() <= b->schedule_end() &&
                     b->schedule_begin() <= a->schedule_end();
        if (conflict)
          fail("memory plan, slot " + num(order[j]) + " (" + str(b->name()) +
                   ")",
               "shares arena bytes with slot " + num(order[i]) + " (" +
                   str(a->name()) + ") while both are live (dispatches " +
                   num(b->lifetime_begin()) + ".." + num(b->lifetime_end()) +
                   " and " + num(a->lifetime_begin()) + ".." +
                   num(a->lifetime_end()) + lifetimeDetail(a, b) + ")");
      }
    }
  }
};

} // namespace

std::vector<std::string> blobOwners(const fb::Manifest &m) {
  uint32_t n = count(m.blobs());
  std::vector<std::string> owners(n);
  for (uint32_t i = 0; i < count(m.executables()); ++i) {
    const fb::Executable *e = m.executables()->Get(i);
    if (e->blob() < n && owners[e->blob()].empty())
      owners[e->blob()] =
          "executable " + std::to_string(i) + " (" + str(e->name()) + ")";
  }
  for (uint32_t i = 0; i < count(m.parameters()); ++i) {
    const fb::Parameter *p = m.parameters()->Get(i);
    if (p->blob() < n && owners[p->blob()].empty())
      owners[p->blob()] = "parameter " + str(p->name());
  }
  for (uint32_t i = 0; i < n; ++i)
    if (owners[i].empty())
      owners[i] = "blob " + std::to_string(i);
  return owners;
}

void validateManifest(const fb::Manifest &m, const std::string &file,
                      uint64_t dataOffset, uint64_t dataSize,
                      const std::vector<std::string> &owners,
                      bool checkAliasing) {
  Checker c{m, file, dataOffset, dataSize, owners};
  c.blobs();
  c.executables();
  c.parameters();
  c.memoryPlan();
  c.entryPoints();
  if (checkAliasing)
    c.aliasing();
}

} // namespace bitloom::blm::detail
