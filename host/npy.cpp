// .npy reading (memory-mapped, with every header field checked against the file) and writing.
#include "npy.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <regex>
#include <utility>

#include "convergent/error.hpp"

namespace convergent {
namespace {

constexpr unsigned char npy_magic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

[[noreturn]] void fail(const std::string& path, const std::string& problem) { throw Error(path + ": " + problem); }

// Value text of `'key': value` in the header dictionary, or "" when absent.
std::string dict_value(const std::string& dict, const std::string& key, const std::string& value_pattern) {
  std::smatch match;
  if (std::regex_search(dict, match, std::regex("['\"]" + key + "['\"]\\s*:\\s*(" + value_pattern + ")")))
    return match[1].str();
  return "";
}

DType parse_descr(const std::string& path, const std::string& descr) {
  if (descr.size() < 3) fail(path, "unsupported dtype '" + descr + "'");
  const char order = descr[0];
  const std::string kind = descr.substr(1);
  if (order == '>' && (kind == "f2" || kind == "f4" || kind == "f8"))
    fail(path, "big-endian dtype '" + descr + "' is not supported; convert with arr.astype('<" + kind + "')");
  if (order == '<' || order == '=' || order == '|') {
    if (kind == "f2") return DType::float16;
    if (kind == "f4") return DType::float32;
    if (kind == "f8") return DType::float64;
  }
  fail(path, "unsupported dtype '" + descr + "': convergent reads float16, float32 and float64 activations");
}

std::vector<std::int64_t> parse_shape(const std::string& path, const std::string& tuple) {
  std::vector<std::int64_t> shape;
  static const std::regex number("\\d+");
  for (auto it = std::sregex_iterator(tuple.begin(), tuple.end(), number); it != std::sregex_iterator(); ++it) {
    const std::string digits = it->str();
    if (digits.size() > 15) fail(path, "header shape " + tuple + " is implausibly large");
    shape.push_back(std::stoll(digits));
  }
  if (shape.empty()) fail(path, "header shape " + tuple + " is a scalar; expected a 2-D or 4-D array");
  return shape;
}

template <class T>
void write_array(const std::string& path, DType dtype, const T* data, const std::vector<std::int64_t>& shape) {
  std::int64_t elements = 1;
  for (auto d : shape) elements *= d;
  const std::string header = npy_header_bytes(dtype, shape);
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  if (!out) throw Error(path + ": cannot create: " + std::strerror(errno));
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(data), static_cast<std::streamsize>(elements * sizeof(T)));
  out.close();
  if (!out) throw Error(path + ": write failed (disk full?)");
}

}  // namespace

std::int64_t NpyHeader::elements() const {
  std::int64_t n = 1;
  for (auto d : shape) n *= d;
  return n;
}

std::string shape_text(const std::vector<std::int64_t>& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

NpyHeader parse_npy_header(const std::string& path, const unsigned char* bytes, std::int64_t size) {
  if (size < 10 || std::memcmp(bytes, npy_magic, sizeof npy_magic) != 0)
    fail(path, "not an .npy file (no \\x93NUMPY magic at the start)");
  const int major = bytes[6];
  std::int64_t header_len = 0;
  std::int64_t prefix = 0;
  if (major == 1) {
    header_len = bytes[8] | (bytes[9] << 8);
    prefix = 10;
  } else if (major == 2 || major == 3) {
    if (size < 12) fail(path, "not an .npy file (header cut short)");
    header_len = static_cast<std::int64_t>(bytes[8]) | (static_cast<std::int64_t>(bytes[9]) << 8) |
                 (static_cast<std::int64_t>(bytes[10]) << 16) | (static_cast<std::int64_t>(bytes[11]) << 24);
    prefix = 12;
  } else {
    fail(path, "unsupported .npy format version " + std::to_string(major));
  }
  if (prefix + header_len > size) fail(path, "truncated: the file ends inside its .npy header");
  const std::string dict(reinterpret_cast<const char*>(bytes + prefix), static_cast<std::size_t>(header_len));

  NpyHeader header;
  const std::string descr = dict_value(dict, "descr", "'[^']*'|\"[^\"]*\"|\\[");
  if (descr.empty()) fail(path, "malformed .npy header: no 'descr'");
  if (descr == "[") fail(path, "unsupported dtype: structured arrays are not activations");
  header.dtype = parse_descr(path, descr.substr(1, descr.size() - 2));
  const std::string fortran = dict_value(dict, "fortran_order", "True|False");
  if (fortran.empty()) fail(path, "malformed .npy header: no 'fortran_order'");
  header.fortran_order = fortran == "True";
  const std::string shape = dict_value(dict, "shape", "\\([^)]*\\)");
  if (shape.empty()) fail(path, "malformed .npy header: no 'shape'");
  header.shape = parse_shape(path, shape);
  header.data_offset = prefix + header_len;

  const std::int64_t data_bytes = size - header.data_offset;
  const std::int64_t expected = header.elements() * dtype_size(header.dtype);
  const std::string announced = "its header announces shape " + shape_text(header.shape) + " " +
                                dtype_name(header.dtype) + " = " + std::to_string(expected) + " bytes of data";
  if (data_bytes < expected)
    fail(path, "truncated: " + announced + ", but the file holds " + std::to_string(data_bytes));
  if (data_bytes > expected)
    fail(path, "header does not match the file: " + announced + ", but the file holds " +
                   std::to_string(data_bytes));
  return header;
}

MappedNpy::MappedNpy(std::string path) : path_(std::move(path)) {
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC);
  if (fd < 0) fail(path_, std::string("cannot open: ") + std::strerror(errno));
  struct stat st {};
  if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
    ::close(fd);
    fail(path_, "cannot read: not a regular file");
  }
  size_ = st.st_size;
  if (size_ == 0) {
    ::close(fd);
    fail(path_, "not an .npy file (the file is empty)");
  }
  void* mapped = ::mmap(nullptr, static_cast<std::size_t>(size_), PROT_READ, MAP_SHARED, fd, 0);
  const int map_errno = errno;
  ::close(fd);
  if (mapped == MAP_FAILED) fail(path_, std::string("cannot map: ") + std::strerror(map_errno));
  base_ = static_cast<unsigned char*>(mapped);
  try {
    header_ = parse_npy_header(path_, base_, size_);
  } catch (...) {
    ::munmap(base_, static_cast<std::size_t>(size_));
    throw;
  }
  ::madvise(base_, static_cast<std::size_t>(size_), MADV_SEQUENTIAL);
}

MappedNpy::MappedNpy(MappedNpy&& other) noexcept
    : path_(std::move(other.path_)), header_(std::move(other.header_)), base_(other.base_), size_(other.size_) {
  other.base_ = nullptr;
  other.size_ = 0;
}

MappedNpy::~MappedNpy() {
  if (base_) ::munmap(base_, static_cast<std::size_t>(size_));
}

void MappedNpy::release(std::int64_t begin, std::int64_t end) const {
  // madvise works on whole pages: keep the partial pages at both ends.
  const std::int64_t page = ::sysconf(_SC_PAGESIZE);
  const std::int64_t first = (header_.data_offset + begin + page - 1) / page * page;
  const std::int64_t last = (header_.data_offset + end) / page * page;
  if (last > first) ::madvise(base_ + first, static_cast<std::size_t>(last - first), MADV_DONTNEED);
}

std::string npy_header_bytes(DType dtype, const std::vector<std::int64_t>& shape) {
  const char* descr = dtype == DType::float16 ? "<f2" : dtype == DType::float32 ? "<f4" : "<f8";
  std::string dict = std::string("{'descr': '") + descr + "', 'fortran_order': False, 'shape': " + shape_text(shape) + ", }";
  // The magic, version and length take 10 bytes; numpy pads the whole header to a multiple of 64.
  const std::size_t total = (10 + dict.size() + 1 + 63) / 64 * 64;
  dict.append(total - 10 - dict.size() - 1, ' ');
  dict.push_back('\n');
  std::string header(reinterpret_cast<const char*>(npy_magic), sizeof npy_magic);
  header += {'\x01', '\x00', static_cast<char>(dict.size() & 0xff), static_cast<char>(dict.size() >> 8)};
  return header + dict;
}

void write_npy(const std::string& path, const double* data, const std::vector<std::int64_t>& shape) {
  write_array(path, DType::float64, data, shape);
}

void write_npy(const std::string& path, const float* data, const std::vector<std::int64_t>& shape) {
  write_array(path, DType::float32, data, shape);
}

}  // namespace convergent
