// A fork-join loop on plain std::threads. Threads end with the loop: nothing spins between loops and
// takes cores from OpenBLAS's own threads (an idle OpenMP team does, and slowed the CPU backend by 40%).
#pragma once

#include <cblas.h>

#include <algorithm>
#include <cstdint>
#include <exception>
#include <thread>
#include <vector>

namespace convergent {

// Threads to use for a request: the request itself, or every core for 0 (or less).
inline int thread_count(int requested) {
  return requested > 0 ? requested : static_cast<int>(std::max(1u, std::thread::hardware_concurrency()));
}

// Runs body(task) for task in [0, tasks); thread t takes tasks t, t + threads, ... so that tasks of
// decreasing cost (rows of a triangle) spread evenly. Callers make each task's result independent of
// the thread that ran it. The first exception a task throws is rethrown here after all threads join.
template <class Body>
void parallel_for(std::int64_t tasks, int threads, const Body& body) {
  const int workers = static_cast<int>(std::max<std::int64_t>(1, std::min<std::int64_t>(threads, tasks)));
  std::vector<std::exception_ptr> failures(static_cast<std::size_t>(workers));
  auto run = [&](int worker) {
    try {
      for (std::int64_t task = worker; task < tasks; task += workers) body(task);
    } catch (...) {
      failures[static_cast<std::size_t>(worker)] = std::current_exception();
    }
  };
  std::vector<std::thread> pool;
  for (int worker = 1; worker < workers; ++worker) pool.emplace_back(run, worker);
  run(0);
  for (auto& thread : pool) thread.join();
  for (const auto& failure : failures)
    if (failure) std::rethrow_exception(failure);
}

// OpenBLAS on one thread while it lives (the setting is process-wide), then as before: for LAPACK and BLAS
// calls inside the threads of parallel_for, where OpenBLAS's own threads would only contend, and wherever
// the bits must not depend on the thread count: OpenBLAS 0.3.21 splits the sums of dot/gemv/symv (and so
// of the LAPACK built on them: dsyevd, dgesdd, dsyevr, dgeqrf, dpotrf) over its threads, and its gemm
// rounds entries differently at panel edges that move with the thread count (ssyrk did not).
class OneOpenBlasThread {
 public:
  OneOpenBlasThread() : before_(openblas_get_num_threads()) { openblas_set_num_threads(1); }
  ~OneOpenBlasThread() { openblas_set_num_threads(before_); }
  OneOpenBlasThread(const OneOpenBlasThread&) = delete;
  OneOpenBlasThread& operator=(const OneOpenBlasThread&) = delete;

 private:
  int before_;
};

}  // namespace convergent
