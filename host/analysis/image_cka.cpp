// See image_cka.hpp. Both estimators read a net's inputs through pack_block: the rows of one input, in
// (y, x) order, are its flattened features (the order does not matter to CKA).
#include "analysis/image_cka.hpp"

#include <cblas.h>

#include <algorithm>
#include <cmath>
#include <numeric>
#include <string>
#include <utility>

#include "convergent/error.hpp"
#include "cpu/pack.hpp"

namespace convergent::detail {
namespace {

// Exact path: inputs staged as float64 rows of every net's features, at most this many bytes at a time.
constexpr std::int64_t staging_bytes = std::int64_t{64} << 20;
// Minibatch path: features per Gram update (an input's positions are taken in groups of about this many).
constexpr std::int64_t gram_chunk_features = 4096;

// Song et al. (2012, eq. 5) for Gram matrices K, L (m x m, full, their diagonals ignored).
double unbiased_hsic(const Matrix& k, const Matrix& l) {
  const std::int64_t m = k.rows();
  double trace = 0.0, sum_k = 0.0, sum_l = 0.0, rows = 0.0;
  for (std::int64_t i = 0; i < m; ++i) {
    double row_k = 0.0, row_l = 0.0;
    for (std::int64_t j = 0; j < m; ++j) {
      if (i == j) continue;
      trace += k(i, j) * l(i, j);
      row_k += k(i, j);
      row_l += l(i, j);
    }
    sum_k += row_k;
    sum_l += row_l;
    rows += row_k * row_l;
  }
  const double n = static_cast<double>(m);
  return (trace + sum_k * sum_l / ((n - 1.0) * (n - 2.0)) - 2.0 / (n - 2.0) * rows) / (n * (n - 3.0));
}

}  // namespace

struct ImageCkaAccumulator::State {
  Backend* backend = nullptr;
  std::vector<std::int64_t> units;
  std::int64_t rows_per_input = 1;
  bool skip_nonfinite = false;
  double dead_threshold = 0.0;
  std::int64_t total_features = 0;
  std::vector<std::int64_t> feature_offset;  // per net, in the staged rows
  ImageCka result;
  // exact
  std::unique_ptr<MomentAccumulator> accumulator;
  std::int64_t staged_inputs = 0;  // inputs per add() to the accumulator
  std::vector<double> staging;
  // minibatch
  std::vector<double> chunk;
  std::vector<Matrix> grams;

  // Features of inputs [first, first + count) of net k into rows of `out` (stride given), from column 0.
  void pack_inputs(const ActivationBlock& block, std::int64_t k, std::int64_t first, std::int64_t count,
                   std::int64_t first_row_in_input, std::int64_t rows, double* out, std::int64_t stride) const {
    for (std::int64_t i = 0; i < count; ++i)
      pack_block(block, MatrixView<double>(out + i * stride, rows, units[k], units[k]), 0,
                 (first + i) * rows_per_input + first_row_in_input);
  }

  void add_exact(const std::vector<ActivationBlock>& batch, std::int64_t inputs) {
    for (std::int64_t first = 0; first < inputs; first += staged_inputs) {
      const std::int64_t count = std::min(staged_inputs, inputs - first);
      std::vector<ActivationBlock> blocks;
      for (std::size_t k = 0; k < units.size(); ++k) {
        double* at = staging.data() + feature_offset[k];
        pack_inputs(batch[k], static_cast<std::int64_t>(k), first, count, 0, rows_per_input, at, total_features);
        ActivationBlock b = row_major_block(at, DType::float64, count, result.features[k]);
        b.image_stride = total_features;
        blocks.push_back(b);
      }
      accumulator->add(blocks);
    }
  }

  // One minibatch of inputs [first, first + m): each net's Gram of its centred flattened features (the
  // unbiased HSIC does not change when every sample is shifted by one constant vector, so centring on
  // the minibatch's mean is free and keeps the float64 Gram from cancelling), then the HSIC of every pair.
  void add_minibatch(const std::vector<ActivationBlock>& batch, std::int64_t first, std::int64_t m) {
    bool finite = true;
    for (std::size_t k = 0; k < units.size() && finite; ++k) {
      const std::int64_t c = units[k];
      const std::int64_t rows_per_chunk = std::max<std::int64_t>(1, gram_chunk_features / c);
      Matrix& gram = grams[k];
      gram = Matrix(m, m);
      for (std::int64_t row = 0; row < rows_per_input && finite; row += rows_per_chunk) {
        const std::int64_t rows = std::min(rows_per_chunk, rows_per_input - row), f = rows * c;
        chunk.resize(static_cast<std::size_t>(m * f));
        pack_inputs(batch[k], static_cast<std::int64_t>(k), first, m, row, rows, chunk.data(), f);
        for (std::int64_t j = 0; j < f; ++j) {
          double mean = 0.0;
          for (std::int64_t i = 0; i < m; ++i) mean += chunk[i * f + j];
          mean /= static_cast<double>(m);
          for (std::int64_t i = 0; i < m; ++i) chunk[i * f + j] -= mean;
          finite = finite && std::isfinite(mean);
        }
        if (!finite) break;
        cblas_dsyrk(CblasRowMajor, CblasUpper, CblasNoTrans, static_cast<int>(m), static_cast<int>(f), 1.0,
                    chunk.data(), static_cast<int>(f), 1.0, gram.data(), static_cast<int>(m));
      }
      fill_lower_triangle(gram);
    }
    if (!finite) {
      if (!skip_nonfinite) throw Error("a NaN or infinity in the inputs " + std::to_string(first) + " to " + std::to_string(first + m - 1) + " of this batch");
      ++result.dropped_minibatches;
      return;
    }
    const std::int64_t nets = static_cast<std::int64_t>(units.size());
    for (std::int64_t a = 0; a < nets; ++a)
      for (std::int64_t b = a; b < nets; ++b) {
        result.hsic(a, b) += unbiased_hsic(grams[a], grams[b]);
        result.hsic(b, a) = result.hsic(a, b);
      }
    ++result.minibatches;
    result.last_minibatch_inputs = m;
  }
};

ImageCkaAccumulator::ImageCkaAccumulator(Backend& backend, const std::vector<std::int64_t>& units,
                                         std::int64_t rows_per_input, const StudyOptions& options)
    : state_(std::make_unique<State>()) {
  if (options.image_minibatch < 4)
    throw Error("the image-level CKA's minibatch must hold at least 4 inputs, not " +
                std::to_string(options.image_minibatch));
  State& s = *state_;
  s.backend = &backend;
  s.units = units;
  s.rows_per_input = rows_per_input;
  s.skip_nonfinite = options.skip_nonfinite_rows;
  s.dead_threshold = options.dead_threshold;
  for (const std::int64_t c : units) {
    s.feature_offset.push_back(s.total_features);
    s.result.features.push_back(c * rows_per_input);
    s.total_features += c * rows_per_input;
  }
  if (s.total_features <= options.image_exact_features) {
    s.result.estimator = ImageCka::Estimator::exact;
    s.staged_inputs = std::max<std::int64_t>(1, staging_bytes / (8 * s.total_features));
    s.staging.resize(static_cast<std::size_t>(s.staged_inputs * s.total_features));
    AccumulateOptions accumulate;
    accumulate.max_batch_rows = s.staged_inputs;
    accumulate.skip_nonfinite_rows = options.skip_nonfinite_rows;
    s.accumulator = backend.accumulator(s.result.features, accumulate);
  } else {
    s.result.estimator = ImageCka::Estimator::minibatch;
    s.result.minibatch_inputs = options.image_minibatch;
    const auto nets = static_cast<std::int64_t>(units.size());
    s.result.hsic = Matrix(nets, nets);
    s.grams.resize(units.size());
  }
}

ImageCkaAccumulator::~ImageCkaAccumulator() = default;

std::int64_t ImageCkaAccumulator::batch_inputs_multiple() const {
  return state_->result.estimator == ImageCka::Estimator::minibatch ? state_->result.minibatch_inputs : 1;
}

void ImageCkaAccumulator::add(const std::vector<ActivationBlock>& batch) {
  State& s = *state_;
  const std::int64_t inputs = batch.front().rows() / s.rows_per_input;
  if (s.result.estimator == ImageCka::Estimator::exact) {
    s.add_exact(batch, inputs);
    return;
  }
  // Batches hold whole minibatches (accumulate_study sizes them so), all but the last batch's last one.
  const std::int64_t m = s.result.minibatch_inputs;
  for (std::int64_t first = 0; first < inputs; first += m) {
    const std::int64_t count = std::min(m, inputs - first);
    if (count >= 4) s.add_minibatch(batch, first, count);
  }
}

ImageCka ImageCkaAccumulator::result() {
  State& s = *state_;
  if (s.result.estimator == ImageCka::Estimator::exact) {
    s.result.moments = s.accumulator->take_moments();
    s.accumulator.reset();
    std::vector<double>().swap(s.staging);
    s.result.dead = dead_units(s.result.moments, s.dead_threshold);
  } else if (s.result.minibatches > 0) {
    for (std::int64_t i = 0; i < s.result.hsic.rows() * s.result.hsic.cols(); ++i)
      s.result.hsic.data()[i] /= static_cast<double>(s.result.minibatches);
  }
  return std::move(s.result);
}

}  // namespace convergent::detail
