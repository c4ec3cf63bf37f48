// The backend factory and the names of the enums.
#include "convergent/backend.hpp"

#include <thread>

#include "convergent/error.hpp"
#include "cuda_backend.hpp"
#include "parallel.hpp"
#include "reference_backend.hpp"

namespace convergent {

const char* to_string(BackendKind kind) { return kind == BackendKind::cpu ? "cpu" : "cuda"; }

const char* to_string(Precision precision) {
  switch (precision) {
    case Precision::fp32: return "fp32";
    case Precision::tf32: return "tf32";
    case Precision::bf16: return "bf16";
  }
  return "?";
}

Precision parse_precision(const std::string& text) {
  for (Precision p : {Precision::fp32, Precision::tf32, Precision::bf16})
    if (text == to_string(p)) return p;
  throw Error("unknown precision '" + text + "': expected fp32, tf32 or bf16");
}

std::unique_ptr<Backend> make_backend(BackendChoice choice, const BackendOptions& options) {
  switch (choice) {
    case BackendChoice::cpu: return detail::make_reference_backend(options);
    case BackendChoice::cuda: return detail::make_cuda_backend(options);
    case BackendChoice::automatic:
      if (detail::cuda_backend_status(options).usable) return detail::make_cuda_backend(options);
      return detail::make_reference_backend(options);
  }
  throw Error("unknown backend choice");
}

std::vector<BackendStatus> backend_status() {
  const int cores = thread_count(0);
  return {{BackendKind::cpu, true, true, "OpenBLAS, " + std::to_string(cores) + " cores"},
          detail::cuda_backend_status({})};
}

}  // namespace convergent
