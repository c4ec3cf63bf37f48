// ActivationFile: the axes of a 2-D, 3-D or 4-D activation array, in either layout and storage order.
#include "io/activation_file.hpp"

#include <vector>

#include "convergent/error.hpp"

namespace convergent {

ActivationBlock activation_axes(const std::string& what, const std::vector<std::int64_t>& shape,
                                const std::vector<std::int64_t>& strides, DType dtype, Layout layout) {
  const int ndim = static_cast<int>(shape.size());
  if (ndim < 2 || ndim > 4)
    throw Error(what + ": shape " + shape_text(shape) + " is " + std::to_string(ndim) +
                "-D; expected 2-D (samples x units), 3-D (N, C, L) or 4-D (N, C, H, W) activations, or their "
                "channels-last forms with --layout channels-last");
  // Which array axis holds (image, unit, y, x); a 3-D array's one position axis is x.
  const bool first = layout == Layout::channels_first;
  int axis_unit = 1, axis_y = -1, axis_x = -1;
  if (ndim == 3) {
    axis_unit = first ? 1 : 2;
    axis_x = first ? 2 : 1;
  } else if (ndim == 4) {
    axis_unit = first ? 1 : 3;
    axis_y = first ? 2 : 1;
    axis_x = first ? 3 : 2;
  }
  ActivationBlock block;
  block.dtype = dtype;
  block.images = shape[0];
  block.units = shape[axis_unit];
  block.height = axis_y < 0 ? 1 : shape[axis_y];
  block.width = axis_x < 0 ? 1 : shape[axis_x];
  block.image_stride = strides[0];
  block.unit_stride = strides[axis_unit];
  block.y_stride = axis_y < 0 ? 0 : strides[axis_y];
  block.x_stride = axis_x < 0 ? 0 : strides[axis_x];
  if (block.units == 0) throw Error(what + ": shape " + shape_text(shape) + " has zero units");
  // No position, no sample: and rows per input would be 0, which batches are multiples of.
  if (block.height == 0 || block.width == 0)
    throw Error(what + ": shape " + shape_text(shape) + " has zero positions (a spatial axis of length 0)");
  return block;
}

ActivationFile::ActivationFile(const std::string& path, Layout layout) : npy_(path) {
  const auto& shape = npy_.header().shape;
  ndim_ = static_cast<int>(shape.size());
  // Element strides of each array axis, in the file's own order.
  std::vector<std::int64_t> stride(shape.size(), 1);
  if (npy_.header().fortran_order) {
    for (int k = 1; k < ndim_; ++k) stride[k] = stride[k - 1] * shape[k - 1];
  } else {
    for (int k = ndim_ - 2; k >= 0; --k) stride[k] = stride[k + 1] * shape[k + 1];
  }
  block_ = activation_axes(path, shape, stride, npy_.header().dtype, layout);
  block_.big_endian = npy_.header().big_endian;
}

ActivationBlock ActivationFile::block(std::int64_t first, std::int64_t count) const {
  ActivationBlock b = block_;
  b.data = npy_.data() + first * block_.image_stride * dtype_size(block_.dtype);
  b.images = count;
  return b;
}

void ActivationFile::release(std::int64_t first, std::int64_t count) const {
  const std::int64_t image_bytes = block_.image_stride * dtype_size(block_.dtype);
  if (block_.image_stride == block_.units * pixels()) npy_.release(first * image_bytes, (first + count) * image_bytes);
}

std::string ActivationFile::describe_row(std::int64_t row) const {
  std::string text = "sample row " + std::to_string(row);
  const std::int64_t image = row / pixels(), pixel = row % pixels();
  if (ndim_ == 3) text += " (image " + std::to_string(image) + ", l " + std::to_string(pixel) + ")";
  if (ndim_ == 4)
    text += " (image " + std::to_string(image) + ", y " + std::to_string(pixel / block_.width) + ", x " +
            std::to_string(pixel % block_.width) + ")";
  return text;
}

}  // namespace convergent
