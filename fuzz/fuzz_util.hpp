// Shared by the libFuzzer targets: the fuzzer's bytes as a file that the readers open by path, with no
// disk traffic (an in-memory file from memfd_create, opened again through /proc/self/fd).
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <memory>
#include <string>

#include "convergent/backend.hpp"
#include "convergent/error.hpp"

namespace convergent::fuzz {

// One in-memory regular file per process, rewritten with each input. `path()` names it for the readers
// (and so appears in their error messages).
class InputFile {
 public:
  InputFile() {
    fd_ = ::memfd_create("fuzz-input.npy", 0);
    if (fd_ < 0) std::abort();
    path_ = "/proc/self/fd/" + std::to_string(fd_);
  }
  const std::string& write(const std::uint8_t* data, std::size_t size) {
    if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, data, size, 0) != static_cast<ssize_t>(size)) std::abort();
    return path_;
  }

 private:
  int fd_ = -1;
  std::string path_;
};

// Single-threaded OpenBLAS: the fuzzers run many tiny inputs per second, and a thread pool per product
// would only add noise to the coverage signal.
inline void single_threaded_blas() { ::setenv("OPENBLAS_NUM_THREADS", "1", 1); }

// The CPU backend on one thread, made once per process (the targets run many tiny inputs).
inline Backend& cpu_backend() {
  static const std::unique_ptr<Backend> backend = make_backend(BackendChoice::cpu, {1, 0});
  return *backend;
}

// convergent::InternalError is a bug of ours, not a refusal of bad input: the fuzzer records it as a crash.
[[noreturn]] inline void report_internal_error(const InternalError& e) {
  std::fprintf(stderr, "%s\n", e.what());
  std::abort();
}

}  // namespace convergent::fuzz
