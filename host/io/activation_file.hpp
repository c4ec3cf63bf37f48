// One net's activation file, memory-mapped, read as (image, unit, y, x): shared by the moments pass of
// run_study and the later passes of mutual information, so every pass sees the same layouts, dtypes, byte
// orders and row numbering.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "convergent/activation.hpp"
#include "convergent/study.hpp"
#include "io/npy.hpp"

namespace convergent {

// The (image, unit, y, x) axes of an array of `shape` with element `strides` (one per axis, in elements),
// read by `layout`: 2-D (samples, units); 3-D (N, C, L) or, channels-last, (N, L, C); 4-D (N, C, H, W) or
// (N, H, W, C). The block's data is left null. Throws Error starting with `what` (a file name, or a net's)
// for another rank or zero units. The one rule for files and for arrays handed in from Python.
ActivationBlock activation_axes(const std::string& what, const std::vector<std::int64_t>& shape,
                                const std::vector<std::int64_t>& strides, DType dtype, Layout layout);

class ActivationFile {
 public:
  // Maps the file and reads its axes by `layout`: 2-D (samples, units); 3-D (N, C, L) or, channels-last,
  // (N, L, C); 4-D (N, C, H, W) or (N, H, W, C). Throws Error naming the path for another rank or zero units
  // (and whatever MappedNpy throws for a bad file).
  ActivationFile(const std::string& path, Layout layout);

  const std::string& path() const { return npy_.path(); }
  const NpyHeader& header() const { return npy_.header(); }
  std::int64_t units() const { return block_.units; }
  std::int64_t pixels() const { return block_.height * block_.width; }
  std::int64_t samples() const { return block_.images * pixels(); }

  // The samples of images [first, first + count).
  ActivationBlock block(std::int64_t first, std::int64_t count) const;

  // Lets the kernel drop the pages of images already processed (when images are the outer axis).
  void release(std::int64_t first, std::int64_t count) const;

  // "sample row 1234 (image 19, y 3, x 2)" for 4-D files, "sample row 1234 (image 19, l 6)" for 3-D ones,
  // "sample row 1234" for 2-D ones.
  std::string describe_row(std::int64_t row) const;

 private:
  MappedNpy npy_;
  int ndim_ = 2;
  ActivationBlock block_;
};

}  // namespace convergent
