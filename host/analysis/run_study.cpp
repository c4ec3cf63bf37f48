// run_study: open and check every activation file, then one streaming pass through the backend.
#include <algorithm>
#include <cmath>
#include <numeric>
#include <optional>

#include "convergent/error.hpp"
#include "convergent/study.hpp"
#include "analysis/image_cka.hpp"
#include "cpu/reference_backend.hpp"
#include "io/activation_file.hpp"

namespace convergent {
namespace {

// Every finite input gives finite statistics (DESIGN.md, numerics), so a NaN or infinity here is a bug of
// ours: it is reported as one before it can reach the assignment solver, the clustering or an output.
void check_finite(const Study& study) {
  const Moments& m = study.moments;
  const std::vector<double> sd = m.stddev();
  for (std::int64_t i = 0; i < m.units(); ++i)
    if (!std::isfinite(m.mean[i]) || !std::isfinite(sd[i]))
      throw InternalError("unit " + std::to_string(i) + " has mean " + std::to_string(m.mean[i]) + " and std " +
                          std::to_string(sd[i]));
  const Matrix& c = study.correlation;
  for (std::int64_t i = 0; i < c.rows(); ++i)
    for (std::int64_t j = 0; j < c.cols(); ++j)
      if (!std::isfinite(c(i, j)))
        throw InternalError("the correlation of units " + std::to_string(i) + " and " + std::to_string(j) + " is " +
                            std::to_string(c(i, j)));
}

// The files of a study, opened and checked against each other (headers only), the nets they hold, the
// rows per batch and the inputs the pass covers.
struct OpenedStudy {
  std::vector<ActivationFile> files;
  StudyInputs inputs;
  std::int64_t whole_images = 1;  // rows per input of every net: batches are a multiple of it
  InputRange range;               // StudyOptions::inputs, or every input
  std::int64_t range_rows() const { return (range.end - range.begin) * whole_images; }
};

Error too_few_samples(const std::string& path, std::int64_t rows) {
  return Error(path + ": " + std::to_string(rows) + " sample(s); correlations need at least 2");
}

OpenedStudy open_study(const std::vector<NetSource>& sources, const StudyOptions& options) {
  if (sources.size() < 2) throw Error("a study needs at least two nets");
  if (options.batch_rows < 0) throw Error("batch rows must be positive");
  if (!(options.dead_threshold >= 0.0 && options.dead_threshold < 1.0))
    throw Error("the dead-unit threshold must be in [0, 1), not " + std::to_string(options.dead_threshold));
  OpenedStudy opened;
  std::vector<ActivationFile>& files = opened.files;
  files.reserve(sources.size());
  for (const auto& source : sources) files.emplace_back(source.path, options.layout);

  const ActivationFile& first = files.front();
  for (const auto& file : files) {
    if (file.samples() != first.samples())
      throw Error(file.path() + ": " + std::to_string(file.samples()) + " samples, but " + first.path() + " has " +
                  std::to_string(first.samples()));
    // Equal sample totals from different input counts would pair rows of different inputs. (A 2-D file
    // may hold another net's positions flattened, so only two files with positions are compared.)
    if (file.pixels() > 1 && first.pixels() > 1 && file.samples() / file.pixels() != first.samples() / first.pixels())
      throw Error(file.path() + ": " + std::to_string(file.samples() / file.pixels()) + " inputs of " +
                  std::to_string(file.pixels()) + " positions, but " + first.path() + " has " +
                  std::to_string(first.samples() / first.pixels()) + " inputs of " + std::to_string(first.pixels()) +
                  "; its rows would not be the same inputs");
  }

  StudyInputs& inputs = opened.inputs;
  inputs.samples = first.samples();
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    NetInfo info{sources[i].name, files[i].path(), files[i].header().shape, files[i].header().dtype,
                 files[i].units(), offset};
    offset += info.units;
    inputs.nets.push_back(std::move(info));
  }

  // Batches hold whole inputs of every net, so they are a multiple of each net's pixels per input.
  for (const auto& file : files) opened.whole_images = std::lcm(opened.whole_images, file.pixels());
  inputs.rows_per_input = opened.whole_images;
  const std::int64_t batch_rows = options.batch_rows > 0 ? options.batch_rows : automatic_batch_rows(offset);
  inputs.batch_rows = std::max<std::int64_t>(1, batch_rows / opened.whole_images) * opened.whole_images;

  const std::int64_t whole_inputs = first.samples() / opened.whole_images;
  opened.range = options.inputs.value_or(InputRange{0, whole_inputs});
  if (opened.range.begin < 0 || opened.range.end < opened.range.begin || opened.range.end > whole_inputs)
    throw Error(first.path() + ": inputs " + std::to_string(opened.range.begin) + ":" +
                std::to_string(opened.range.end) + " are not a range within its " + std::to_string(whole_inputs) +
                " inputs");
  return opened;
}

}  // namespace

std::int64_t automatic_batch_rows(std::int64_t units) {
  // A batch costs about 12 bytes a row and unit at the peak (its float32 copy and the mapped pages of
  // two float32 batches), while the time hardly depends on it: the CPU backend multiplies and merges
  // 2048-row chunks whatever the batch, and the rest of a batch's cost is well under a millisecond
  // (bench/RESULTS.md, "Automatic batch size"). So about 16 MiB of float32 per batch, in whole chunks,
  // at least one, at most 65536 rows: 2 x 512 units take 4096 rows (align's streaming peak 80 MB, where
  // the earlier 64 MiB batches peaked at 228 MB). Never from the thread count: outputs do not depend on it.
  constexpr std::int64_t budget_values = std::int64_t{1} << 22, chunk = detail::cpu_product_rows;
  const std::int64_t rows = budget_values / std::max<std::int64_t>(1, units) / chunk * chunk;
  return std::clamp<std::int64_t>(rows, chunk, 65536);
}

StudyInputs inspect_study(const std::vector<NetSource>& sources, const StudyOptions& options) {
  OpenedStudy opened = open_study(sources, options);
  if (opened.range_rows() < 2) throw too_few_samples(opened.files.front().path(), opened.range_rows());
  return std::move(opened.inputs);
}

namespace {

// The pass of accumulate_study. A whole study (correlations_follow) refuses a range of fewer than 2 sample
// rows before the accumulator takes its units^2 storage: finish_study would refuse it after the pass.
Study accumulate_pass(Backend& backend, const std::vector<NetSource>& sources, const StudyOptions& options,
                      bool correlations_follow) {
  OpenedStudy opened = open_study(sources, options);
  const std::vector<ActivationFile>& files = opened.files;
  const ActivationFile& first = files.front();
  const std::int64_t whole_images = opened.whole_images;
  Study study;
  study.nets = std::move(opened.inputs.nets);
  std::vector<std::int64_t> units_per_net;
  for (const NetInfo& net : study.nets) units_per_net.push_back(net.units);
  study.rows_per_input = whole_images;
  study.inputs = first.samples() / whole_images;
  study.range = opened.range;
  if (correlations_follow && opened.range_rows() < 2) throw too_few_samples(first.path(), opened.range_rows());
  std::int64_t batch_rows = opened.inputs.batch_rows;
  std::optional<detail::ImageCkaAccumulator> images;
  if (options.samples == Samples::images) {
    images.emplace(backend, units_per_net, whole_images, options);
    const std::int64_t whole_minibatches = whole_images * images->batch_inputs_multiple();
    batch_rows = std::max<std::int64_t>(1, batch_rows / whole_minibatches) * whole_minibatches;
  }

  const std::int64_t begin = study.range.begin * whole_images, end = study.range.end * whole_images;
  AccumulateOptions accumulate;
  accumulate.precision = options.precision;
  accumulate.max_batch_rows = std::max<std::int64_t>(1, std::min(batch_rows, end - begin));
  accumulate.skip_nonfinite_rows = options.skip_nonfinite_rows;
  auto accumulator = backend.accumulator(units_per_net, accumulate);

  std::int64_t previous_row = begin, previous_count = 0;  // the batch whose pages may be dropped next
  auto release = [&](std::int64_t row, std::int64_t count) {
    for (const auto& file : files) file.release(row / file.pixels(), count / file.pixels());
  };
  std::vector<ActivationBlock> batch(files.size());
  for (std::int64_t row = begin; row < end; row += batch_rows) {
    const std::int64_t count = std::min(batch_rows, end - row);
    for (std::size_t i = 0; i < files.size(); ++i)
      batch[i] = files[i].block(row / files[i].pixels(), count / files[i].pixels());
    try {
      accumulator->add(batch);
      if (images) images->add(batch);
    } catch (const NonFiniteValueError& e) {
      const ActivationFile& file = files[static_cast<std::size_t>(e.net())];
      throw Error(file.path() + ": NaN or infinity at " + file.describe_row(row + e.row()) + ", unit " +
                  std::to_string(e.unit()) + "; pass --skip-nonfinite to drop such rows");
    }
    // add() has returned, so the previous batch is no longer read (the blocks' validity contract).
    release(previous_row, previous_count);
    previous_row = row;
    previous_count = count;
    if (options.progress) options.progress(row + count - begin, end - begin);
  }
  study.skipped_rows = accumulator->skipped_rows();
  if (images) study.image_cka = images->result();
  // The accumulator hands its comoment over and is gone before the correlation is formed.
  study.moments = accumulator->take_moments();
  accumulator.reset();
  release(previous_row, previous_count);
  study.backend = backend.description();
  study.batch_rows = batch_rows;
  return study;
}

}  // namespace

Study accumulate_study(Backend& backend, const std::vector<NetSource>& sources, const StudyOptions& options) {
  return accumulate_pass(backend, sources, options, false);
}

void finish_study(Backend& backend, Study& study, double dead_threshold, ComomentAfterStudy comoment) {
  const std::string& first = study.nets.front().path;
  const std::int64_t rows = study.moments.samples + study.skipped_rows;
  if (study.moments.samples < 2 && study.skipped_rows == 0)
    throw too_few_samples(first, rows);
  if (study.moments.samples < 2)
    throw Error(first + ": only " + std::to_string(study.moments.samples) + " of " + std::to_string(rows) +
                " sample rows are free of NaN/infinity; correlations need at least 2");
  study.dead = dead_units(study.moments, dead_threshold);
  study.correlation = comoment == ComomentAfterStudy::hand_over ? backend.take_correlation(study.moments, study.dead)
                                                                 : backend.correlation(study.moments, study.dead);
  check_finite(study);
}

Study run_study(Backend& backend, const std::vector<NetSource>& sources, const StudyOptions& options) {
  Study study = accumulate_pass(backend, sources, options, true);
  finish_study(backend, study, options.dead_threshold);
  return study;
}

}  // namespace convergent
