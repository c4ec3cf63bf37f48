// Test cases that run once per compiled backend: the CPU reference always, CUDA when it is compiled. CUDA
// cases skip where no device is usable, and fail instead when CONVERGENT_REQUIRE_GPU=1.
#pragma once

#include <gtest/gtest.h>

#include <cstdlib>
#include <memory>
#include <ostream>
#include <string>
#include <vector>

#include "convergent/backend.hpp"
#include "backend/cuda_backend.hpp"

namespace convergent {

// Readable parameter values in gtest messages and CTest names ("cuda" rather than a 4-byte object).
inline void PrintTo(BackendKind kind, std::ostream* os) { *os << to_string(kind); }

}  // namespace convergent

namespace convergent::testing {

inline bool gpu_required() {
  const char* value = std::getenv("CONVERGENT_REQUIRE_GPU");
  return value != nullptr && std::string(value) == "1";
}

inline std::vector<BackendKind> compiled_backends() {
  std::vector<BackendKind> kinds{BackendKind::cpu};
  if (detail::cuda_backend_compiled()) kinds.push_back(BackendKind::cuda);
  return kinds;
}

// Instantiate with INSTANTIATE_TEST_SUITE_P(Backends, Fixture, ValuesIn(compiled_backends()), backend_name).
inline std::string backend_name(const ::testing::TestParamInfo<BackendKind>& info) { return to_string(info.param); }

// A fixture whose backend_ is the parameter's backend.
class PerBackend : public ::testing::TestWithParam<BackendKind> {
 protected:
  void SetUp() override {
    if (GetParam() == BackendKind::cuda) {
      const BackendStatus status = detail::cuda_backend_status({});
      if (!status.usable) {
        if (gpu_required()) FAIL() << "CONVERGENT_REQUIRE_GPU=1 but the CUDA backend is not usable: " << status.detail;
        GTEST_SKIP() << "CUDA backend compiled but not usable here (" << status.detail
                     << "); set CONVERGENT_REQUIRE_GPU=1 to make this a failure";
      }
    }
    backend_ = make_backend(GetParam() == BackendKind::cpu ? BackendChoice::cpu : BackendChoice::cuda);
  }

  std::unique_ptr<Backend> backend_;
};

}  // namespace convergent::testing
