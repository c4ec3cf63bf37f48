// Arrays handed in from Python, as ActivationBlocks: numpy arrays through the buffer protocol and tensors
// (PyTorch, JAX, CuPy) through DLPack. Both read the caller's memory in place, strides and all: no copy.
#pragma once

#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>

#include <cstdint>
#include <string>
#include <vector>

#include "convergent/activation.hpp"
#include "convergent/study.hpp"

namespace convergent::python {

// One batch of one net: where its values are (block), its array shape, and the Python object that keeps
// that memory alive while the accumulator reads it.
struct ArrayBatch {
  ActivationBlock block;
  std::vector<std::int64_t> shape;
  pybind11::object owner;
};

// A numpy array of float16/32/64 in either byte order. Strided views (slices, transposes) are read in
// place; negative strides and strides that are not a multiple of the element size are refused. Throws
// Error starting with `what`.
ArrayBatch numpy_batch(const std::string& what, const pybind11::array& array, Layout layout);

// A DLPack capsule ("dltensor", as tensor.__dlpack__() returns; renamed "used_dltensor" once taken, as the
// protocol asks) of float16/32/64 in host memory (kDLCPU, or CUDA host and managed memory) or on a CUDA
// device (kDLCUDA: block.device set to the device, data a device pointer). Throws Error starting with `what` for another
// dtype, a vector type, a negative stride or another device type.
ArrayBatch dlpack_batch(const std::string& what, const pybind11::capsule& capsule, Layout layout);

}  // namespace convergent::python
