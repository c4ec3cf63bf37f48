// run_study: open and check every activation file, then one streaming pass through the backend.
#include <algorithm>
#include <cmath>
#include <numeric>

#include "convergent/error.hpp"
#include "convergent/study.hpp"
#include "npy.hpp"

namespace convergent {
namespace {

// One net's activation file, memory-mapped, with its axes read as (image, unit, y, x).
class ActivationFile {
 public:
  ActivationFile(const std::string& path, Layout layout) : npy_(path) {
    const auto& shape = npy_.header().shape;
    ndim_ = static_cast<int>(shape.size());
    if (ndim_ < 2 || ndim_ > 4)
      throw Error(path + ": shape " + shape_text(shape) + " is " + std::to_string(ndim_) +
                  "-D; expected 2-D (samples x units), 3-D (N, C, L) or 4-D (N, C, H, W) activations, or their "
                  "channels-last forms with --layout channels-last");
    // Element strides of each array axis, in the file's own order.
    std::vector<std::int64_t> stride(shape.size(), 1);
    if (npy_.header().fortran_order) {
      for (int k = 1; k < ndim_; ++k) stride[k] = stride[k - 1] * shape[k - 1];
    } else {
      for (int k = ndim_ - 2; k >= 0; --k) stride[k] = stride[k + 1] * shape[k + 1];
    }
    // Which array axis holds (image, unit, y, x); a 3-D array's one position axis is x.
    const bool first = layout == Layout::channels_first;
    int axis_unit = 1, axis_y = -1, axis_x = -1;
    if (ndim_ == 3) {
      axis_unit = first ? 1 : 2;
      axis_x = first ? 2 : 1;
    } else if (ndim_ == 4) {
      axis_unit = first ? 1 : 3;
      axis_y = first ? 2 : 1;
      axis_x = first ? 3 : 2;
    }
    block_.dtype = npy_.header().dtype;
    block_.big_endian = npy_.header().big_endian;
    block_.images = shape[0];
    block_.units = shape[axis_unit];
    block_.height = axis_y < 0 ? 1 : shape[axis_y];
    block_.width = axis_x < 0 ? 1 : shape[axis_x];
    block_.image_stride = stride[0];
    block_.unit_stride = stride[axis_unit];
    block_.y_stride = axis_y < 0 ? 0 : stride[axis_y];
    block_.x_stride = axis_x < 0 ? 0 : stride[axis_x];
    if (block_.units == 0) throw Error(path + ": shape " + shape_text(shape) + " has zero units");
  }

  const std::string& path() const { return npy_.path(); }
  const NpyHeader& header() const { return npy_.header(); }
  std::int64_t units() const { return block_.units; }
  std::int64_t pixels() const { return block_.height * block_.width; }
  std::int64_t samples() const { return block_.images * pixels(); }

  // The samples of images [first, first + count).
  ActivationBlock block(std::int64_t first, std::int64_t count) const {
    ActivationBlock b = block_;
    b.data = npy_.data() + first * block_.image_stride * dtype_size(block_.dtype);
    b.images = count;
    return b;
  }

  // Lets the kernel drop the pages of images already processed (when images are the outer axis).
  void release(std::int64_t first, std::int64_t count) const {
    const std::int64_t image_bytes = block_.image_stride * dtype_size(block_.dtype);
    if (block_.image_stride == block_.units * pixels()) npy_.release(first * image_bytes, (first + count) * image_bytes);
  }

  // "sample row 1234 (image 19, y 3, x 2)" for 4-D files, "sample row 1234 (image 19, l 6)" for 3-D ones,
  // "sample row 1234" for 2-D ones.
  std::string describe_row(std::int64_t row) const {
    std::string text = "sample row " + std::to_string(row);
    const std::int64_t image = row / pixels(), pixel = row % pixels();
    if (ndim_ == 3) text += " (image " + std::to_string(image) + ", l " + std::to_string(pixel) + ")";
    if (ndim_ == 4)
      text += " (image " + std::to_string(image) + ", y " + std::to_string(pixel / block_.width) + ", x " +
              std::to_string(pixel % block_.width) + ")";
    return text;
  }

 private:
  MappedNpy npy_;
  int ndim_ = 2;
  ActivationBlock block_;
};

std::int64_t automatic_batch_rows(std::int64_t units) {
  // About 64 MiB of float32 per batch: large enough that the product dominates the per-batch merge.
  return std::clamp<std::int64_t>((std::int64_t{1} << 24) / units, 256, 65536);
}

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

}  // namespace

Study run_study(Backend& backend, const std::vector<NetSource>& sources, const StudyOptions& options) {
  if (sources.size() < 2) throw Error("a study needs at least two nets");
  if (options.batch_rows < 0) throw Error("batch rows must be positive");
  std::vector<ActivationFile> files;
  files.reserve(sources.size());
  for (const auto& source : sources) files.emplace_back(source.path, options.layout);

  const ActivationFile& first = files.front();
  for (const auto& file : files) {
    if (file.samples() != first.samples())
      throw Error(file.path() + ": " + std::to_string(file.samples()) + " samples, but " + first.path() + " has " +
                  std::to_string(first.samples()));
  }
  if (first.samples() < 2)
    throw Error(first.path() + ": " + std::to_string(first.samples()) +
                " sample(s); correlations need at least 2");

  Study study;
  std::vector<std::int64_t> units_per_net;
  std::int64_t offset = 0;
  for (std::size_t i = 0; i < files.size(); ++i) {
    NetInfo info{sources[i].name, files[i].path(), files[i].header().shape, files[i].header().dtype,
                 files[i].units(), offset};
    offset += info.units;
    units_per_net.push_back(info.units);
    study.nets.push_back(std::move(info));
  }

  // Batches hold whole images of every net, so they are a multiple of each net's pixels per image.
  std::int64_t whole_images = 1;
  for (const auto& file : files) whole_images = std::lcm(whole_images, file.pixels());
  std::int64_t batch_rows = options.batch_rows > 0 ? options.batch_rows : automatic_batch_rows(offset);
  batch_rows = std::max<std::int64_t>(1, batch_rows / whole_images) * whole_images;

  AccumulateOptions accumulate;
  accumulate.precision = options.precision;
  accumulate.max_batch_rows = std::min(batch_rows, first.samples());
  accumulate.skip_nonfinite_rows = options.skip_nonfinite_rows;
  auto accumulator = backend.accumulator(units_per_net, accumulate);

  const std::int64_t total = first.samples();
  std::int64_t previous_row = 0, previous_count = 0;  // the batch whose pages may be dropped next
  auto release = [&](std::int64_t row, std::int64_t count) {
    for (const auto& file : files) file.release(row / file.pixels(), count / file.pixels());
  };
  std::vector<ActivationBlock> batch(files.size());
  for (std::int64_t row = 0; row < total; row += batch_rows) {
    const std::int64_t count = std::min(batch_rows, total - row);
    for (std::size_t i = 0; i < files.size(); ++i)
      batch[i] = files[i].block(row / files[i].pixels(), count / files[i].pixels());
    try {
      accumulator->add(batch);
    } catch (const NonFiniteValueError& e) {
      const ActivationFile& file = files[static_cast<std::size_t>(e.net())];
      throw Error(file.path() + ": NaN or infinity at " + file.describe_row(row + e.row()) + ", unit " +
                  std::to_string(e.unit()) + "; pass --skip-nonfinite to drop such rows");
    }
    // add() has returned, so the previous batch is no longer read (the blocks' validity contract).
    release(previous_row, previous_count);
    previous_row = row;
    previous_count = count;
    if (options.progress) options.progress(row + count, total);
  }
  study.moments = accumulator->moments();
  release(previous_row, previous_count);
  study.skipped_rows = accumulator->skipped_rows();
  if (study.moments.samples < 2)
    throw Error(first.path() + ": only " + std::to_string(study.moments.samples) + " of " + std::to_string(total) +
                " sample rows are free of NaN/infinity; correlations need at least 2");
  study.dead = dead_units(study.moments, options.dead_threshold);
  study.correlation = backend.correlation(study.moments, study.dead);
  check_finite(study);
  study.backend = backend.description();
  return study;
}

}  // namespace convergent
