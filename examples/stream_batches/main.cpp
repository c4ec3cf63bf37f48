// Two "nets" that learned the same four features in a different order, each with two features of its
// own, streamed batch by batch through the public API (no files): accumulate the moments, correlate,
// match units one to one. The matching must find the planted partners; the program says so and exits
// 0, or exits 1.
#include <convergent/convergent.hpp>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace {

constexpr std::int64_t shared = 4, own = 2, units = shared + own;  // per net
constexpr std::int64_t batches = 20, rows_per_batch = 500;
// Net B holds shared feature k as its unit partner_of[k]; its private units sit in between.
constexpr std::int64_t partner_of[shared] = {3, 0, 5, 1};

}  // namespace

int main() {
  auto backend = convergent::make_backend(convergent::BackendChoice::automatic);
  convergent::AccumulateOptions options;
  options.max_batch_rows = rows_per_batch;
  auto accumulator = backend->accumulator({units, units}, options);

  std::mt19937_64 rng(2016);  // fixed seed: the same batches every run
  std::normal_distribution<float> normal;
  std::vector<float> a(static_cast<std::size_t>(rows_per_batch * units)), b(a.size());
  for (std::int64_t batch = 0; batch < batches; ++batch) {
    for (std::int64_t r = 0; r < rows_per_batch; ++r) {
      float* ra = &a[static_cast<std::size_t>(r * units)];
      float* rb = &b[static_cast<std::size_t>(r * units)];
      std::fill(rb, rb + units, 0.0f);
      for (std::int64_t k = 0; k < shared; ++k) {
        // One latent feature, seen by both nets through a ReLU, with its own scale, offset and noise.
        const float feature = std::max(0.0f, normal(rng) + 0.3f);
        ra[k] = 1.0f * feature + 0.3f * normal(rng);
        rb[partner_of[k]] = 2.5f * feature + 10.0f + 0.6f * normal(rng);
      }
      for (std::int64_t k = shared; k < units; ++k) ra[k] = std::max(0.0f, normal(rng));
      for (std::int64_t u = 0; u < units; ++u)  // B's units that hold no shared feature
        if (std::find(std::begin(partner_of), std::end(partner_of), u) == std::end(partner_of))
          rb[u] = std::max(0.0f, normal(rng));
    }
    accumulator->add({convergent::row_major_block(a.data(), convergent::DType::float32, rows_per_batch, units),
                      convergent::row_major_block(b.data(), convergent::DType::float32, rows_per_batch, units)});
  }

  const convergent::Moments moments = accumulator->moments();
  const convergent::Matrix corr = backend->correlation(moments, std::vector<bool>(2 * units, false));
  const convergent::PairAlignment alignment = convergent::align_pair(*backend, corr.block(0, units, units, units));

  std::printf("%lld samples streamed in %lld batches (%s backend)\n", static_cast<long long>(moments.samples),
              static_cast<long long>(batches), convergent::to_string(backend->kind()));
  std::printf("one-to-one matching, mean corr %.3f (semi-matching %.3f):\n", alignment.matching_mean_corr,
              alignment.semi_mean_corr);
  int found = 0;
  for (std::int64_t u = 0; u < units; ++u) {
    const std::int64_t partner = alignment.matching.row_to_col[static_cast<std::size_t>(u)];
    const bool planted = u < shared;
    const bool right = planted && partner == partner_of[u];
    found += right;
    std::printf("  A unit %lld -> B unit %lld  corr %+.3f  %s\n", static_cast<long long>(u), static_cast<long long>(partner),
                corr(u, units + partner), planted ? (right ? "shared feature, found" : "shared feature, MISSED") : "A's own");
  }
  std::printf("%d of %lld shared features matched to their planted partner\n", found, static_cast<long long>(shared));
  return found == shared ? 0 : 1;
}
