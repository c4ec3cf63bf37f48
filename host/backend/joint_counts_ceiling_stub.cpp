// Stands in for kernels/joint_counts.cu's ceiling in builds without the CUDA toolkit.
#include "convergent/error.hpp"
#include "backend/joint_counts_ceiling.hpp"

namespace convergent::detail {

double measure_int8_gemm_ceiling(std::int64_t, std::int64_t) {
  throw Error("CUDA backend not compiled: rebuild with the CUDA toolkit and -DCONVERGENT_CUDA=ON");
}

}  // namespace convergent::detail
