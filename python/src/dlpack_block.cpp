// numpy arrays and DLPack tensors as ActivationBlocks, read in place.
#include "dlpack_block.hpp"

#include "convergent/error.hpp"
#include "io/activation_file.hpp"
#include "io/npy.hpp"

namespace py = pybind11;

namespace convergent::python {
namespace {

// The DLPack ABI (dmlc/dlpack, dlpack.h, versions 0.5 to 0.8: the unversioned "dltensor" capsule that
// numpy, PyTorch, JAX and CuPy export). Only the fields read here; the layout is fixed by the standard.
enum DLDeviceType : std::int32_t { kDLCPU = 1, kDLCUDA = 2, kDLCUDAHost = 3, kDLCUDAManaged = 13 };
enum DLDataTypeCode : std::uint8_t { kDLInt = 0, kDLUInt = 1, kDLFloat = 2, kDLBfloat = 4, kDLComplex = 5, kDLBool = 6 };
struct DLDevice {
  std::int32_t device_type;
  std::int32_t device_id;
};
struct DLDataType {
  std::uint8_t code;
  std::uint8_t bits;
  std::uint16_t lanes;
};
struct DLTensor {
  void* data;
  DLDevice device;
  std::int32_t ndim;
  DLDataType dtype;
  std::int64_t* shape;
  std::int64_t* strides;  // in elements; null for a compact row-major tensor
  std::uint64_t byte_offset;
};
struct DLManagedTensor {
  DLTensor dl_tensor;
  void* manager_ctx;
  void (*deleter)(DLManagedTensor* self);
};

// The element strides of a compact row-major array of `shape`.
std::vector<std::int64_t> row_major_strides(const std::vector<std::int64_t>& shape) {
  std::vector<std::int64_t> strides(shape.size(), 1);
  for (int k = static_cast<int>(shape.size()) - 2; k >= 0; --k) strides[k] = strides[k + 1] * shape[k + 1];
  return strides;
}

// A DLPack dtype as numpy and torch name it (int64, bfloat16, bool8, ...; float16 x 4 for vector lanes).
std::string dlpack_dtype_name(const DLDataType& d) {
  const char* kind = d.code == kDLInt ? "int" : d.code == kDLUInt ? "uint" : d.code == kDLFloat ? "float"
                     : d.code == kDLBfloat ? "bfloat" : d.code == kDLComplex ? "complex" : d.code == kDLBool ? "bool"
                     : nullptr;
  std::string name = kind ? kind + std::to_string(d.bits)
                          : "of DLPack code " + std::to_string(d.code) + " (" + std::to_string(d.bits) + " bits)";
  if (d.lanes != 1) name += " x " + std::to_string(d.lanes);
  return name;
}

void check_strides(const std::string& what, const std::vector<std::int64_t>& strides) {
  for (const std::int64_t s : strides)
    if (s < 0)
      throw Error(what + ": negative strides (a reversed view) are not read in place; pass a copy "
                         "(numpy.ascontiguousarray, or tensor.contiguous())");
}

}  // namespace

ArrayBatch numpy_batch(const std::string& what, const py::array& array, Layout layout) {
  const py::dtype dtype = array.dtype();
  const auto size = dtype.itemsize();
  if (dtype.kind() != 'f' || (size != 2 && size != 4 && size != 8))
    throw Error(what + ": dtype " + std::string(py::str(static_cast<const py::handle&>(dtype))) +
                " is not supported; activations must be float16, float32 or float64");
  ArrayBatch batch;
  batch.owner = array;
  std::vector<std::int64_t> strides;
  for (py::ssize_t k = 0; k < array.ndim(); ++k) {
    batch.shape.push_back(array.shape(k));
    if (array.strides(k) % size != 0)
      throw Error(what + ": stride of " + std::to_string(array.strides(k)) + " bytes on axis " + std::to_string(k) +
                  " is not a multiple of the element size; pass numpy.ascontiguousarray(x)");
    strides.push_back(array.strides(k) / size);
  }
  check_strides(what, strides);
  const DType t = size == 2 ? DType::float16 : size == 4 ? DType::float32 : DType::float64;
  batch.block = activation_axes(what, batch.shape, strides, t, layout);
  batch.block.data = array.data();
  // '>' is big-endian; '=' and '|' are native, and this library runs on little-endian machines only.
  batch.block.big_endian = dtype.attr("byteorder").cast<std::string>() == ">";
  return batch;
}

ArrayBatch dlpack_batch(const std::string& what, const py::capsule& capsule, Layout layout) {
  if (std::string(capsule.name() ? capsule.name() : "") != "dltensor")
    throw Error(what + ": expected a DLPack capsule named 'dltensor' (tensor.__dlpack__()), not '" +
                std::string(capsule.name() ? capsule.name() : "") + "' (a capsule can be taken once)");
  auto* managed = capsule.get_pointer<DLManagedTensor>();
  // The capsule is ours now: renamed so that its producer's destructor leaves it alone, and the tensor
  // freed through its deleter when the batch's owner goes.
  PyCapsule_SetName(capsule.ptr(), "used_dltensor");
  ArrayBatch batch;
  batch.owner = py::capsule(managed, [](void* p) {
    auto* m = static_cast<DLManagedTensor*>(p);
    if (m->deleter) m->deleter(m);
  });
  const DLTensor& t = managed->dl_tensor;
  const std::int32_t device_type = t.device.device_type;
  if (device_type != kDLCPU && device_type != kDLCUDA && device_type != kDLCUDAHost && device_type != kDLCUDAManaged)
    throw Error(what + ": DLPack device type " + std::to_string(device_type) +
                " is not supported; tensors must be in host memory or on a CUDA device");
  if (t.dtype.code != kDLFloat || t.dtype.lanes != 1 || (t.dtype.bits != 16 && t.dtype.bits != 32 && t.dtype.bits != 64))
    throw Error(what + ": dtype " + dlpack_dtype_name(t.dtype) +
                " is not supported; activations must be float16, float32 or float64 (bfloat16 too: "
                "convert it with tensor.float())");
  batch.shape.assign(t.shape, t.shape + t.ndim);
  const std::vector<std::int64_t> strides =
      t.strides ? std::vector<std::int64_t>(t.strides, t.strides + t.ndim) : row_major_strides(batch.shape);
  check_strides(what, strides);
  const DType dtype = t.dtype.bits == 16 ? DType::float16 : t.dtype.bits == 32 ? DType::float32 : DType::float64;
  batch.block = activation_axes(what, batch.shape, strides, dtype, layout);
  batch.block.data = static_cast<const char*>(t.data) + t.byte_offset;
  if (device_type == kDLCUDA) batch.block.device = t.device.device_id;
  return batch;
}

}  // namespace convergent::python
