//===- ThreadPool.cpp - Persistent workers for the ukernels --------------===//
#include "ukernels/ThreadPool.h"

#include <chrono>

#if defined(__x86_64__) || defined(__i386__)
#include <immintrin.h>
#endif

namespace bitloom::uk {

namespace {

inline void cpuRelax() {
#if defined(__x86_64__) || defined(__i386__)
  _mm_pause();
#elif defined(__aarch64__)
  asm volatile("yield");
#endif
}

// How long an idle worker polls before sleeping. Long enough to bridge the
// gap between the kernels of one training step (a few element-wise ops),
// short enough not to burn a core the rest of the process could use.
constexpr auto kSpinTime = std::chrono::microseconds(200);

} // namespace

ThreadPool &ThreadPool::global() {
  // Leaked on purpose: workers must not be joined during static destruction,
  // when a dlopen'ed library may still be calling in.
  static ThreadPool *pool = new ThreadPool(1);
  return *pool;
}

ThreadPool::ThreadPool(int32_t threads) {
  startWorkers(threads < 1 ? 1 : threads);
}

ThreadPool::~ThreadPool() { stopWorkers(); }

int32_t ThreadPool::setThreads(int32_t n) {
  if (n < 1)
    n = 1;
  int32_t prev = numThreads;
  if (n != prev) {
    stopWorkers();
    startWorkers(n);
  }
  return prev;
}

void ThreadPool::startWorkers(int32_t n) {
  numThreads = n;
  stopping = false;
  // The generation is read here, not by the new thread, which might only
  // look after the first job has been published and then wait past it.
  uint64_t start = generation.load(std::memory_order_acquire);
  for (int32_t id = 1; id < n; ++id)
    workers.emplace_back([this, start] { workerLoop(start); });
}

void ThreadPool::stopWorkers() {
  {
    std::lock_guard<std::mutex> lock(mutex);
    stopping = true;
  }
  wake.notify_all();
  for (std::thread &t : workers)
    t.join();
  workers.clear();
  numThreads = 1;
}

void ThreadPool::runChunks() {
  for (;;) {
    uint64_t claim = claims.fetch_add(1, std::memory_order_acq_rel);
    int64_t chunks = int64_t(claim >> 32), chunk = int64_t(claim & 0xFFFFFFFF);
    if (chunk >= chunks)
      return;
    // The job outlives this call: the caller waits for `done` to count it.
    (*jobFn)(jobCount *chunk / chunks, jobCount * (chunk + 1) / chunks);
    done.fetch_add(1, std::memory_order_acq_rel);
  }
}

void ThreadPool::workerLoop(uint64_t seen) {
  for (;;) {
    uint64_t now = generation.load(std::memory_order_acquire);
    if (now == seen) {
      auto deadline = std::chrono::steady_clock::now() + kSpinTime;
      for (int spins = 0; now == seen; ++spins) {
        // Every 64 polls, give the core away if anything else wants it: on
        // a machine with more runnable threads than cores, polling would
        // otherwise delay the calling thread itself.
        if ((spins & 63) == 63) {
          if (std::chrono::steady_clock::now() > deadline)
            break;
          std::this_thread::yield();
        } else {
          cpuRelax();
        }
        now = generation.load(std::memory_order_acquire);
      }
      if (now == seen) {
        std::unique_lock<std::mutex> lock(mutex);
        wake.wait(lock, [&] {
          return stopping || generation.load(std::memory_order_acquire) != seen;
        });
        if (stopping)
          return;
        now = generation.load(std::memory_order_acquire);
      }
    }
    seen = now;
    runChunks();
  }
}

void ThreadPool::parallelFor(int64_t count, RangeFn fn) {
  if (count <= 0)
    return;
  if (numThreads == 1 || count == 1) {
    fn(0, count);
    return;
  }
  int32_t chunks = int32_t(count < numThreads ? count : numThreads);
  jobFn = &fn;
  jobCount = count;
  done.store(0, std::memory_order_relaxed);
  claims.store(uint64_t(chunks) << 32, std::memory_order_release);
  {
    // Under the mutex so that a worker between its predicate check and its
    // wait cannot miss the notification.
    std::lock_guard<std::mutex> lock(mutex);
    generation.fetch_add(1, std::memory_order_acq_rel);
  }
  wake.notify_all();
  runChunks();
  // Only chunks that a worker has claimed are left; it is running them.
  for (int spins = 0; done.load(std::memory_order_acquire) != chunks; ++spins) {
    if (spins < 4096)
      cpuRelax();
    else
      std::this_thread::yield();
  }
}

} // namespace bitloom::uk
