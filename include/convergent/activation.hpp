// How a batch of activations of one net is handed to a backend: the file's own element type and strides,
// so that dtype conversion and the NCHW/NHWC-to-rows transpose can run on the device that computes.
#pragma once

#include <cstdint>
#include <string>

namespace convergent {

enum class DType { float16, float32, float64 };

inline int dtype_size(DType t) { return t == DType::float16 ? 2 : t == DType::float32 ? 4 : 8; }
inline const char* dtype_name(DType t) {
  return t == DType::float16 ? "float16" : t == DType::float32 ? "float32" : "float64";
}

// A batch of `images` inputs of one net. Each (image, y, x) position is one sample (one row) of a
// `units`-dimensional vector; a dense layer has height = width = 1. Element (image, unit, y, x) lives at
// data + (image * image_stride + unit * unit_stride + y * y_stride + x * x_stride) * dtype_size(dtype).
// Sample rows are ordered image-major, then y, then x.
struct ActivationBlock {
  const void* data = nullptr;
  DType dtype = DType::float32;
  std::int64_t images = 0;
  std::int64_t units = 0;
  std::int64_t height = 1;
  std::int64_t width = 1;
  std::int64_t image_stride = 0;
  std::int64_t unit_stride = 0;
  std::int64_t y_stride = 0;
  std::int64_t x_stride = 0;
  // Elements stored most significant byte first (an .npy descr of '>f4', say); readers swap them.
  bool big_endian = false;
  // -1: `data` is host memory. Otherwise the CUDA device whose memory `data` points to (a CUDA tensor
  // handed over through DLPack): only an accumulator on that device reads it (MomentAccumulator::device),
  // in place, with no host copy; the producer's work on it must be complete when add() is called.
  int device = -1;

  std::int64_t rows() const { return images * height * width; }
};

// A row-major (rows x units) block of a plain matrix.
inline ActivationBlock row_major_block(const void* data, DType dtype, std::int64_t rows, std::int64_t units) {
  ActivationBlock b;
  b.data = data;
  b.dtype = dtype;
  b.images = rows;
  b.units = units;
  b.image_stride = units;
  b.unit_stride = 1;
  return b;
}

}  // namespace convergent
