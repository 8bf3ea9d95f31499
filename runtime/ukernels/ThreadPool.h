//===- ThreadPool.h - Persistent workers for the ukernels -------*- C++ -*-===//
//
// A fixed set of std::thread workers that run static chunks of a range. The
// calling thread runs the first chunk itself, so one thread means no workers
// and no synchronization at all. Kernel calls are short (tens of microseconds
// to a few milliseconds) and frequent, so workers spin briefly before
// sleeping on a condition variable: a wake-up through the kernel would
// otherwise cost as much as a small kernel.
//
//===----------------------------------------------------------------------===//
#ifndef BITLOOM_UKERNELS_THREADPOOL_H
#define BITLOOM_UKERNELS_THREADPOOL_H

#include <atomic>
#include <condition_variable>
#include <cstdint>
#include <mutex>
#include <thread>
#include <type_traits>
#include <utility>
#include <vector>

namespace bitloom::uk {

/// A non-owning reference to a callable `void(int64_t begin, int64_t end)`.
class RangeFn {
public:
  template <typename F, typename = std::enable_if_t<
                            !std::is_same_v<std::decay_t<F>, RangeFn>>>
  RangeFn(F &&f)
      : obj(const_cast<void *>(static_cast<const void *>(&f))),
        call([](void *o, int64_t b, int64_t e) {
          (*static_cast<std::remove_reference_t<F> *>(o))(b, e);
        }) {}
  void operator()(int64_t begin, int64_t end) const { call(obj, begin, end); }

private:
  void *obj;
  void (*call)(void *, int64_t, int64_t);
};

class ThreadPool {
public:
  /// The pool every ukernel uses.
  static ThreadPool &global();

  explicit ThreadPool(int32_t threads = 1);
  ~ThreadPool();
  ThreadPool(const ThreadPool &) = delete;
  ThreadPool &operator=(const ThreadPool &) = delete;

  /// Sets the thread count (including the caller); returns the previous one.
  int32_t setThreads(int32_t n);
  int32_t threads() const { return numThreads; }

  /// Splits [0, count) into min(threads, count) contiguous chunks of nearly
  /// equal size and runs fn(begin, end) once on each, on the calling thread
  /// and the workers; returns when all are done. Chunks are claimed, not
  /// assigned: a worker that is slow to wake (descheduled, or asleep after a
  /// long gap) leaves its chunk to the caller instead of delaying it. Not
  /// reentrant: one caller at a time, and fn must not call parallelFor.
  void parallelFor(int64_t count, RangeFn fn);

private:
  void startWorkers(int32_t n);
  void stopWorkers();
  void workerLoop(uint64_t seen);
  /// Claims and runs chunks of the current job until none is left.
  void runChunks();

  int32_t numThreads = 1;
  std::vector<std::thread> workers;
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  // Bumped once per job, after it is published; idle workers poll it (or
  // sleep on `wake`) and then claim chunks. Each atomic has its own cache
  // line: the pollers should not be disturbed by the claims and completions.
  alignas(64) std::atomic<uint64_t> generation{0};
  // The current job's (chunk count << 32 | next unclaimed chunk). A claim
  // is a fetch_add; one at or past the count finds nothing, harmlessly.
  alignas(64) std::atomic<uint64_t> claims{0};
  // Chunks of the current job that have finished.
  alignas(64) std::atomic<int32_t> done{0};
  // The current job, written before `claims` is published and read only by
  // a thread that claimed one of its chunks.
  const RangeFn *jobFn = nullptr;
  int64_t jobCount = 0;
};

} // namespace bitloom::uk

#endif // BITLOOM_UKERNELS_THREADPOOL_H
