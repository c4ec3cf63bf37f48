// .npy reading (memory-mapped; a strict parser for the header dictionary, every field checked against the
// file) and writing.
#include "io/npy.hpp"
#include "io/mapped_files.hpp"

#include <fcntl.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <fstream>
#include <limits>
#include <string_view>
#include <utility>

#include "convergent/error.hpp"

namespace convergent {
namespace {

constexpr unsigned char npy_magic[] = {0x93, 'N', 'U', 'M', 'P', 'Y'};

[[noreturn]] void fail(const std::string& path, const std::string& problem) { throw Error(path + ": " + problem); }

// The host's own byte order, for the '=' and '|' descr prefixes (which mean "native").
constexpr bool host_is_big_endian =
#if defined(__BYTE_ORDER__) && defined(__ORDER_BIG_ENDIAN__) && __BYTE_ORDER__ == __ORDER_BIG_ENDIAN__
    true;
#else
    false;
#endif

// `text` quoted for an error message: printable ASCII as is, anything else as an escape, long text cut.
std::string quoted(std::string_view text) {
  constexpr std::size_t max_shown = 48;
  std::string out = "'";
  for (std::size_t i = 0; i < text.size() && i < max_shown; ++i) {
    const unsigned char c = static_cast<unsigned char>(text[i]);
    if (c == '\n') {
      out += "\\n";
    } else if (c >= 0x20 && c < 0x7f) {
      out += static_cast<char>(c);
    } else {
      static const char hex[] = "0123456789abcdef";
      out += {'\\', 'x', hex[c >> 4], hex[c & 15]};
    }
  }
  if (text.size() > max_shown) out += "...";
  return out + "'";
}

// Sets dtype and byte order from a descr string such as '<f4' or '>f8'.
void parse_descr(const std::string& path, const std::string& descr, NpyHeader& header) {
  const std::string kind = descr.size() == 3 ? descr.substr(1) : "";
  const char order = descr.empty() ? '\0' : descr[0];
  // '|' ("byte order not applicable") is not what numpy writes for floats, but it can only mean native
  // order; it was accepted before, so files written that way keep working.
  const bool known_order = order == '<' || order == '>' || order == '=' || order == '|';
  if (known_order && (kind == "f2" || kind == "f4" || kind == "f8")) {
    header.dtype = kind == "f2" ? DType::float16 : kind == "f4" ? DType::float32 : DType::float64;
    header.big_endian = order == '>' || (order != '<' && host_is_big_endian);
    return;
  }
  fail(path, "unsupported dtype " + quoted(descr) + ": convergent reads float16, float32 and float64 activations");
}

// ASCII only, whatever the locale: a byte above 0x7f is never part of a token the grammar accepts.
bool is_word_char(char c) {
  return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == '.';
}
bool is_digit(char c) { return c >= '0' && c <= '9'; }

// The header dictionary, read as the subset of Python literal syntax that .npy writers produce:
//   header     := space* '{' space* [entry (space* ',' space* entry)* space* [',' space*]] '}' ' '* '\n'
//   entry      := key space* ':' space* value
//   key        := a quoted string: 'descr', 'fortran_order' or 'shape', each exactly once
//   descr      := a quoted string           fortran_order := True | False
//   shape      := '(' space* [dim space* ',' space* (dim space* ',' space*)* [dim space*]] ')'
//                 (a Python tuple: (n,) is 1-D, (n) is not a tuple; () parses but is refused as 0-d)
//   dim        := '0' | [1-9][0-9]* ['L' | 'l']   (the L of Python 2 longs)
//   string     := '...' or "..." without backslashes or newlines;  space := ' ' | '\t'
// Nothing is picked out of the text: whatever does not parse is an error quoting what was found, because
// a header read loosely turns a lying file into a plausible array of the wrong shape.
class HeaderParser {
 public:
  HeaderParser(const std::string& path, std::string_view text) : path_(path), text_(text) {}

  void parse(NpyHeader& header) {
    skip_spaces();
    if (peek() != '{') expected("'{' opening the header dictionary");
    ++pos_;
    bool have_descr = false, have_fortran = false, have_shape = false;
    for (;;) {
      skip_spaces();
      if (peek() == '}') break;  // an empty dictionary, or a trailing comma
      const std::string key = parse_string("a quoted key");
      bool* seen = key == "descr" ? &have_descr : key == "fortran_order" ? &have_fortran : key == "shape" ? &have_shape : nullptr;
      if (!seen)
        malformed("unknown key " + quoted(key) + " (an .npy header holds 'descr', 'fortran_order' and 'shape')");
      if (*seen) malformed("key " + quoted(key) + " appears twice");
      *seen = true;
      skip_spaces();
      if (peek() != ':') expected("':' after " + quoted(key));
      ++pos_;
      skip_spaces();
      if (key == "descr") {
        if (peek() == '[') fail(path_, "unsupported dtype: structured arrays are not activations");
        parse_descr(path_, parse_string("a quoted dtype string for 'descr'"), header);
      } else if (key == "fortran_order") {
        header.fortran_order = parse_bool();
      } else {
        header.shape = parse_shape();
      }
      skip_spaces();
      if (peek() == ',') {
        ++pos_;
        continue;
      }
      if (peek() != '}') expected("',' or '}' after the value of " + quoted(key));
      break;
    }
    ++pos_;  // the '}'
    while (pos_ < text_.size() && text_[pos_] == ' ') ++pos_;
    if (pos_ + 1 != text_.size() || text_[pos_] != '\n') expected("only space padding and a final newline after '}'");
    if (!have_descr) malformed("no 'descr'");
    if (!have_fortran) malformed("no 'fortran_order'");
    if (!have_shape) malformed("no 'shape'");
  }

 private:
  [[noreturn]] void malformed(const std::string& problem) const { fail(path_, "malformed .npy header: " + problem); }
  [[noreturn]] void expected(const std::string& what) const { malformed("expected " + what + ", found " + found()); }

  // The token at the read position for an error message: up to the next ',', ':', ')', ']' or '}' outside
  // brackets and quotes, so that `np.int64(3000)` is shown whole.
  std::string found() const {
    if (pos_ >= text_.size()) return "the end of the header";
    std::size_t end = pos_;
    int depth = 0;
    for (; end < text_.size(); ++end) {
      const char c = text_[end];
      if (c == '\'' || c == '"') {
        const std::size_t close = text_.find_first_of(std::string{c, '\n'}, end + 1);
        if (close == std::string_view::npos || text_[close] == '\n') {
          end = close == std::string_view::npos ? text_.size() : close;
          break;
        }
        end = close;
      } else if (c == '(' || c == '[' || c == '{') {
        ++depth;
      } else if (c == ')' || c == ']' || c == '}') {
        if (depth == 0) break;
        --depth;
      } else if ((c == ',' || c == ':') && depth == 0) {
        break;
      } else if (c == '\n') {
        break;
      }
    }
    while (end > pos_ && (text_[end - 1] == ' ' || text_[end - 1] == '\t')) --end;
    if (end == pos_) end = pos_ + 1;  // a lone delimiter
    return quoted(text_.substr(pos_, end - pos_));
  }

  char peek() const { return pos_ < text_.size() ? text_[pos_] : '\0'; }

  void skip_spaces() {
    while (pos_ < text_.size() && (text_[pos_] == ' ' || text_[pos_] == '\t')) ++pos_;
  }

  std::string parse_string(const std::string& what) {
    const char quote = peek();
    if (quote != '\'' && quote != '"') expected(what);
    for (std::size_t end = pos_ + 1; end < text_.size(); ++end) {
      if (text_[end] == quote) {
        std::string value(text_.substr(pos_ + 1, end - pos_ - 1));
        pos_ = end + 1;
        return value;
      }
      // Python escapes would need a full decoder; no .npy writer emits them.
      if (text_[end] == '\\') malformed("escape sequences are not supported, found " + found());
      if (text_[end] == '\n') break;
    }
    malformed("unterminated string " + found());
  }

  bool parse_bool() {
    for (const bool value : {true, false}) {
      const std::string_view word = value ? "True" : "False";
      if (text_.substr(pos_, word.size()) == word &&
          (pos_ + word.size() == text_.size() || !is_word_char(text_[pos_ + word.size()]))) {
        pos_ += word.size();
        return value;
      }
    }
    expected("True or False for 'fortran_order'");
  }

  std::vector<std::int64_t> parse_shape() {
    if (peek() != '(') expected("a tuple for 'shape'");
    const std::size_t open = pos_++;
    std::vector<std::int64_t> shape;
    bool comma = false;  // after the last dimension
    for (;;) {
      skip_spaces();
      if (peek() == ')') break;
      if (!shape.empty() && !comma) expected("',' or ')' in 'shape'");
      shape.push_back(parse_dimension());
      skip_spaces();
      comma = peek() == ',';
      if (comma) ++pos_;
    }
    ++pos_;
    if (shape.size() == 1 && !comma) {
      pos_ = open;
      malformed("'shape' " + found() + " is not a tuple (a 1-D shape is written (n,))");
    }
    if (shape.empty()) fail(path_, "header shape () is a 0-d scalar; expected an array (2-D, 3-D or 4-D)");
    return shape;
  }

  std::int64_t parse_dimension() {
    const std::size_t start = pos_;
    std::int64_t value = 0;
    while (pos_ < text_.size() && is_digit(text_[pos_])) {
      const int digit = text_[pos_] - '0';
      if (value > (std::numeric_limits<std::int64_t>::max() - digit) / 10) {
        pos_ = start;
        malformed("dimension " + found() + " in 'shape' does not fit in 64 bits");
      }
      value = value * 10 + digit;
      ++pos_;
    }
    if (pos_ < text_.size() && (text_[pos_] == 'L' || text_[pos_] == 'l') && pos_ > start) ++pos_;
    // A number must stand alone: no sign, no fraction or exponent, no call, no leading zero (Python 3
    // rejects 012 too).
    const bool leading_zero = pos_ - start > 1 && text_[start] == '0';
    if (pos_ == start || leading_zero || (pos_ < text_.size() && (is_word_char(text_[pos_]) || text_[pos_] == '('))) {
      pos_ = start;
      expected("a non-negative integer in 'shape'");
    }
    return value;
  }

  const std::string& path_;
  std::string_view text_;
  std::size_t pos_ = 0;
};

// Bytes of data the header announces, or an error when that does not fit in 64 bits. As numpy does, the
// non-zero dimensions must fit even when another one is zero: readers multiply subsets of them (strides),
// and (0, 2^63 - 1, 2^62) would overflow there.
std::int64_t announced_bytes(const std::string& path, const NpyHeader& header) {
  std::int64_t bytes = dtype_size(header.dtype);
  bool empty = false;
  for (auto d : header.shape) {
    if (d == 0) {
      empty = true;
      continue;
    }
    if (bytes > std::numeric_limits<std::int64_t>::max() / d)
      fail(path, "header shape " + shape_text(header.shape) + " of " + dtype_name(header.dtype) +
                     " is more than 2^63 bytes of data; the header is corrupt");
    bytes *= d;
  }
  return empty ? 0 : bytes;
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
  const int major = bytes[6], minor = bytes[7];
  if ((major != 1 && major != 2 && major != 3) || minor != 0)
    fail(path, "unsupported .npy format version " + std::to_string(major) + "." + std::to_string(minor) +
                   " (numpy writes 1.0, 2.0 and 3.0)");
  std::int64_t header_len = 0;
  std::int64_t prefix = 0;
  if (major == 1) {
    header_len = bytes[8] | (bytes[9] << 8);
    prefix = 10;
  } else {
    if (size < 12) fail(path, "truncated: the file ends inside its .npy header");
    header_len = static_cast<std::int64_t>(bytes[8]) | (static_cast<std::int64_t>(bytes[9]) << 8) |
                 (static_cast<std::int64_t>(bytes[10]) << 16) | (static_cast<std::int64_t>(bytes[11]) << 24);
    prefix = 12;
  }
  if (prefix + header_len > size) fail(path, "truncated: the file ends inside its .npy header");

  // Versions 1.0 and 2.0 are latin-1, 3.0 utf-8: either way every byte the grammar accepts is ASCII, and a
  // stray byte is quoted as an escape.
  NpyHeader header;
  HeaderParser(path, std::string_view(reinterpret_cast<const char*>(bytes + prefix), static_cast<std::size_t>(header_len)))
      .parse(header);
  header.data_offset = prefix + header_len;
  // The data is read in place through typed pointers, so it must start on an element boundary; numpy pads
  // headers to 64 bytes (16 in old versions), so only a broken writer gets this wrong.
  if (header.data_offset % dtype_size(header.dtype) != 0)
    fail(path, "the data starts at byte " + std::to_string(header.data_offset) + ", not a multiple of the " +
                   std::to_string(dtype_size(header.dtype)) + "-byte element size; rewrite the file with numpy.save");

  const std::int64_t data_bytes = size - header.data_offset;
  const std::int64_t expected = announced_bytes(path, header);
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
  // O_NONBLOCK: a FIFO opens at once (and fstat refuses it) instead of waiting for a writer that never
  // comes; regular files ignore the flag.
  const int fd = ::open(path_.c_str(), O_RDONLY | O_CLOEXEC | O_NONBLOCK);
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
  register_mapping(base_, static_cast<std::size_t>(size_), path_);  // named if its pages vanish (SIGBUS)
}

MappedNpy::MappedNpy(MappedNpy&& other) noexcept
    : path_(std::move(other.path_)), header_(std::move(other.header_)), base_(other.base_), size_(other.size_) {
  other.base_ = nullptr;
  other.size_ = 0;
}

MappedNpy::~MappedNpy() {
  if (base_) {
    unregister_mapping(base_);
    ::munmap(base_, static_cast<std::size_t>(size_));
  }
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
