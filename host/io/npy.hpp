// Reading and writing numpy's .npy format. Reading memory-maps the file so that arrays larger than RAM
// stream through; writing goes through the caller's temporary path (see outputs.hpp).
#pragma once

#include <cstddef>
#include <cstdint>
#include <string>
#include <vector>

#include "convergent/activation.hpp"

namespace convergent {

struct NpyHeader {
  DType dtype = DType::float32;
  bool big_endian = false;  // the data is stored most significant byte first ('>f4'; '=f4' on such a host)
  bool fortran_order = false;
  std::vector<std::int64_t> shape;
  std::int64_t data_offset = 0;  // bytes from the start of the file to the first element

  std::int64_t elements() const;
};

// Parses the header at the start of `bytes` (the whole file, `size` bytes long) and checks that the data
// that follows has exactly the size the header announces. The header dictionary is parsed strictly (the
// grammar is in npy.cpp): quoted keys 'descr', 'fortran_order' and 'shape', each once; descr '<f2', '<f4',
// '<f8', their big-endian '>' and native '=' / '|' forms; True or False; a tuple of non-negative integers.
// Format versions 1.0, 2.0 and 3.0.
// Throws convergent::Error, with a message that names `path` and quotes what was found, for: a missing
// magic, an unknown version, a header cut short, any text outside that grammar, another dtype, a 0-d
// shape, a shape whose byte count overflows 64 bits, data not aligned to its element size, and data whose
// size differs from the announced one.
NpyHeader parse_npy_header(const std::string& path, const unsigned char* bytes, std::int64_t size);

// A read-only memory map of an .npy file.
class MappedNpy {
 public:
  // Maps the file and parses its header (parse_npy_header). Throws convergent::Error naming the path when
  // the file cannot be opened or mapped, is empty, or its header is rejected.
  explicit MappedNpy(std::string path);
  ~MappedNpy();
  MappedNpy(const MappedNpy&) = delete;
  MappedNpy& operator=(const MappedNpy&) = delete;
  MappedNpy(MappedNpy&& other) noexcept;
  MappedNpy& operator=(MappedNpy&&) = delete;

  const std::string& path() const { return path_; }
  const NpyHeader& header() const { return header_; }
  const unsigned char* data() const { return base_ + header_.data_offset; }
  // Tells the kernel that a byte range of the data will not be read again, so that a file larger than
  // RAM does not keep its pages resident.
  void release(std::int64_t begin, std::int64_t end) const;

 private:
  std::string path_;
  NpyHeader header_;
  unsigned char* base_ = nullptr;
  std::int64_t size_ = 0;
};

std::string shape_text(const std::vector<std::int64_t>& shape);  // "(3, 4)" as numpy prints it

// The bytes of a version 1.0 header (little-endian descr) for a C-order array; the data follows it directly. For writers that
// stream the data themselves.
std::string npy_header_bytes(DType dtype, const std::vector<std::int64_t>& shape);

// Writes a C-order float64 or float32 array (version 1.0 header, as numpy.save writes).
void write_npy(const std::string& path, const double* data, const std::vector<std::int64_t>& shape);
void write_npy(const std::string& path, const float* data, const std::vector<std::int64_t>& shape);

}  // namespace convergent
