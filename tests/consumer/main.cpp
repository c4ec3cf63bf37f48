// Streams two tiny nets through the installed library and checks one correlation by hand.
#include <convergent/convergent.hpp>

#include <cmath>
#include <cstdio>

int main() {
  // Net A: x; net B: 2x + 1 (perfectly correlated), 4 samples.
  const float a[] = {1, 2, 3, 5};
  const float b[] = {3, 5, 7, 11};
  auto backend = convergent::make_backend(convergent::BackendChoice::cpu);
  convergent::AccumulateOptions options;
  options.max_batch_rows = 4;
  auto accumulator = backend->accumulator({1, 1}, options);
  accumulator->add({convergent::row_major_block(a, convergent::DType::float32, 4, 1),
                    convergent::row_major_block(b, convergent::DType::float32, 4, 1)});
  const convergent::Moments moments = accumulator->moments();
  const convergent::Matrix corr = backend->correlation(moments, {false, false});
  std::printf("corr = %.9f\n", corr(0, 1));
  return std::abs(corr(0, 1) - 1.0) < 1e-6 ? 0 : 1;
}
