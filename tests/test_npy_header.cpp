// The strict .npy header parser: a table of mangled headers that must be refused with a message naming the
// file and quoting what was found, the valid variants that writers produce, a seeded fuzz run, and
// big-endian files read back (library and CLI) to values written byte by byte.
#include <gtest/gtest.h>

#include <algorithm>
#include <cctype>
#include <cstring>
#include <fstream>
#include <iostream>
#include <memory>
#include <random>
#include <string>
#include <vector>

#include "convergent/error.hpp"
#include "io/npy.hpp"
#include "io/study_outputs.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

using testing::files_in;
using testing::run_cli;
using testing::ScratchDir;

// A whole .npy file: magic, version, header length, `dict` padded with spaces and ended with '\n' so that
// the data starts at a multiple of `align` (numpy: 64; 0 leaves the dict exactly as given, newline and all),
// then `data`.
std::string npy_file(const std::string& dict, const std::string& data, int major = 1, int align = 64) {
  const std::size_t prefix = major == 1 ? 10 : 12;
  std::string text = dict;
  if (align > 0) {
    while ((prefix + text.size() + 1) % static_cast<std::size_t>(align) != 0) text.push_back(' ');
    text.push_back('\n');
  }
  std::string file = "\x93NUMPY";
  file += {static_cast<char>(major), '\0'};
  for (std::size_t i = 0; i < prefix - 8; ++i) file.push_back(static_cast<char>((text.size() >> (8 * i)) & 0xff));
  return file + text + data;
}

std::string zeros(std::size_t bytes) { return std::string(bytes, '\0'); }

NpyHeader parse(const std::string& file, const std::string& path = "a.npy") {
  return parse_npy_header(path, reinterpret_cast<const unsigned char*>(file.data()), static_cast<std::int64_t>(file.size()));
}

// The error message of parsing `file`, or "" when it is accepted.
std::string error_of(const std::string& file) {
  try {
    parse(file);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

const std::string ok_dict = "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
const std::string ok_data = zeros(24);  // 2 x 3 float32

struct Mangled {
  const char* what;
  std::string file;
  const char* message;  // a substring the error must contain, after "a.npy: "
};

std::string with_shape(const std::string& shape, std::size_t bytes = 24) {
  return npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': " + shape + ", }", zeros(bytes));
}
std::string with_fortran(const std::string& value) {
  return npy_file("{'descr': '<f4', 'fortran_order': " + value + ", 'shape': (2, 3), }", ok_data);
}
std::string with_descr(const std::string& value) {
  return npy_file("{'descr': " + value + ", 'fortran_order': False, 'shape': (2, 3), }", ok_data);
}

std::vector<Mangled> mangled_headers() {
  const std::string version_4 = [] {
    std::string f = npy_file(ok_dict, ok_data);
    f[6] = 4;
    return f;
  }();
  const std::string minor_1 = [] {
    std::string f = npy_file(ok_dict, ok_data);
    f[7] = 1;
    return f;
  }();
  const std::string bad_magic = [] {
    std::string f = npy_file(ok_dict, ok_data);
    f[1] = 'n';
    return f;
  }();
  const std::string past_eof = [] {  // header length 0x4000, file far shorter
    std::string f = npy_file(ok_dict, ok_data);
    f[8] = 0;
    f[9] = 0x40;
    return f;
  }();
  const std::string past_eof_v2 = [] {
    std::string f = npy_file(ok_dict, ok_data, 2);
    f[11] = 0x10;
    return f;
  }();
  return {
      // The issue's file: numpy 2 scalar reprs in the shape.
      {"np.int64 shape",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (np.int64(3000), np.int64(64)), }",
                zeros(3000 * 64 * 4)),
       "malformed .npy header: expected a non-negative integer in 'shape', found 'np.int64(3000)'"},
      {"np.int64 second dim", with_shape("(2, np.int64(3))"), "found 'np.int64(3)'"},
      {"negative dim", with_shape("(-2, 3)"), "expected a non-negative integer in 'shape', found '-2'"},
      {"negative second dim", with_shape("(2, -3)"), "found '-3'"},
      {"plus sign", with_shape("(+2, 3)"), "found '+2'"},
      {"float dim", with_shape("(2.0, 3)"), "found '2.0'"},
      {"float dim .5", with_shape("(2, .5)"), "found '.5'"},
      {"exponent dim", with_shape("(2e0, 3)"), "found '2e0'"},
      {"hex dim", with_shape("(0x2, 3)"), "found '0x2'"},
      {"leading zero", with_shape("(02, 3)"), "found '02'"},
      {"underscore digits", with_shape("(2_0, 3)"), "found '2_0'"},
      {"double L", with_shape("(2LL, 3)"), "found '2LL'"},
      {"bare L", with_shape("(L, 3)"), "found 'L'"},
      {"name dim", with_shape("(n, 3)"), "found 'n'"},
      {"quoted dim", with_shape("('2', 3)"), "found ''2''"},
      {"call dim", with_shape("(int(2), 3)"), "found 'int(2)'"},
      {"nested tuple", with_shape("((2, 3),)"), "found '(2, 3)'"},
      {"list shape", with_shape("[2, 3]"), "expected a tuple for 'shape', found '[2, 3]'"},
      {"bare int shape", with_shape("6"), "expected a tuple for 'shape', found '6'"},
      {"parenthesised int", with_shape("(6)"), "'shape' '(6)' is not a tuple"},
      {"0-d scalar", with_shape("()", 4), "shape () is a 0-d scalar; expected an array (2-D, 3-D or 4-D)"},
      {"double comma", with_shape("(2,, 3)"), "found ','"},
      {"lone comma", with_shape("(,)"), "found ','"},
      {"missing comma", with_shape("(2 3)"), "expected ',' or ')' in 'shape', found '3'"},
      {"dim too large for int64", with_shape("(99999999999999999999, 3)"),
       "dimension '99999999999999999999' in 'shape' does not fit in 64 bits"},
      {"dim just over int64", with_shape("(9223372036854775808,)"), "does not fit in 64 bits"},
      {"byte count overflows", with_shape("(4294967296, 4294967296)"), "more than 2^63 bytes"},
      {"byte count 2^63", with_shape("(1152921504606846976, 2)"), "more than 2^63 bytes"},  // 2^60 * 2 * 4
      {"elements at int64 max", with_shape("(9223372036854775807,)"), "more than 2^63 bytes"},
      // Found by fuzz_npy_reader: an empty array whose other dimensions overflow (the strides did). numpy
      // refuses to make either ("array is too big"): it checks the non-zero dimensions' bytes.
      {"zero dim beside overflowing ones", with_shape("(0, 9223372036854775807, 4611686018427387904)", 0),
       "more than 2^63 bytes"},
      {"zero beside int64 max", with_shape("(0, 9223372036854775807)", 0), "more than 2^63 bytes"},
      {"unterminated tuple", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3", ok_data),
       "expected ',' or ')' in 'shape', found '\\n'"},
      {"unterminated tuple, no newline", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3", ok_data, 1, 0),
       "found the end of the header"},
      {"unterminated dict", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)", ok_data),
       "expected ',' or '}' after the value of 'shape', found '\\n'"},
      {"unterminated key", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'x}", ok_data),
       "unterminated string ''x}'"},
      {"unterminated descr", npy_file("{'descr': '<f4", ok_data), "unterminated string ''<f4'"},
      {"missing descr", npy_file("{'fortran_order': False, 'shape': (2, 3), }", ok_data), "malformed .npy header: no 'descr'"},
      {"missing fortran_order", npy_file("{'descr': '<f4', 'shape': (2, 3), }", ok_data), "no 'fortran_order'"},
      {"missing shape", npy_file("{'descr': '<f4', 'fortran_order': False, }", ok_data), "no 'shape'"},
      {"empty dict", npy_file("{}", ok_data), "no 'descr'"},
      {"duplicate descr", npy_file("{'descr': '<f4', 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", ok_data),
       "key 'descr' appears twice"},
      {"duplicate shape", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), 'shape': (2, 3), }", ok_data),
       "key 'shape' appears twice"},
      {"duplicate fortran_order",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'fortran_order': True}", ok_data),
       "key 'fortran_order' appears twice"},
      {"unknown key", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), 'extra': 1, }", ok_data),
       "unknown key 'extra'"},
      {"key case", npy_file("{'Descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", ok_data), "unknown key 'Descr'"},
      {"key with space", npy_file("{'shape ': (2, 3), 'descr': '<f4', 'fortran_order': False}", ok_data),
       "unknown key 'shape '"},
      {"unquoted key", npy_file("{descr: '<f4', 'fortran_order': False, 'shape': (2, 3), }", ok_data),
       "expected a quoted key, found 'descr'"},
      {"missing colon", npy_file("{'descr' '<f4', 'fortran_order': False, 'shape': (2, 3), }", ok_data),
       "expected ':' after 'descr', found ''<f4''"},
      {"equals for colon", npy_file("{'descr'= '<f4', 'fortran_order': False, 'shape': (2, 3), }", ok_data),
       "expected ':' after 'descr', found '= '<f4''"},
      {"missing comma between entries", npy_file("{'descr': '<f4' 'fortran_order': False, 'shape': (2, 3), }", ok_data),
       "expected ',' or '}' after the value of 'descr', found ''fortran_order''"},
      {"leading comma", npy_file("{, 'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", ok_data),
       "expected a quoted key, found ','"},
      {"two trailing commas", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3),, }", ok_data),
       "expected a quoted key, found ','"},
      {"no opening brace", npy_file("'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }", ok_data),
       "expected '{' opening the header dictionary, found ''descr''"},
      {"bool lowercase true", with_fortran("true"), "expected True or False for 'fortran_order', found 'true'"},
      {"bool lowercase false", with_fortran("false"), "found 'false'"},
      {"bool upper", with_fortran("TRUE"), "found 'TRUE'"},
      {"bool int", with_fortran("0"), "found '0'"},
      {"bool quoted", with_fortran("'False'"), "found ''False''"},
      {"bool prefix", with_fortran("Falsey"), "found 'Falsey'"},
      {"bool None", with_fortran("None"), "found 'None'"},
      {"descr int", with_descr("5"), "expected a quoted dtype string for 'descr', found '5'"},
      {"descr bytes prefix", with_descr("b'<f4'"), "expected a quoted dtype string for 'descr', found 'b'<f4''"},
      {"descr escape", with_descr("'<f\\x34'"), "escape sequences are not supported, found ''<f\\x34''"},
      {"descr structured", with_descr("[('a', '<f4')]"), "unsupported dtype: structured arrays are not activations"},
      {"descr padded", with_descr("'<f4 '"), "unsupported dtype '<f4 '"},
      {"descr no order", with_descr("'f4'"), "unsupported dtype 'f4'"},
      {"descr name", with_descr("'float32'"), "unsupported dtype 'float32'"},
      {"descr f16", with_descr("'<f16'"), "unsupported dtype '<f16'"},
      {"descr capital", with_descr("'<F4'"), "unsupported dtype '<F4'"},
      {"descr big-endian int", with_descr("'>i4'"), "unsupported dtype '>i4'"},
      {"descr empty", with_descr("''"), "unsupported dtype ''"},
      {"garbage after brace", npy_file(ok_dict + " x", ok_data),
       "expected only space padding and a final newline after '}', found 'x'"},
      {"second dict", npy_file(ok_dict + "{}", ok_data), "found '{}'"},
      {"tab padding", npy_file(ok_dict + "\t", ok_data), "found '\\x09'"},
      {"NUL padding", npy_file(ok_dict + std::string(1, '\0'), ok_data), "found '\\x00'"},
      {"no final newline", npy_file(ok_dict + std::string(53, ' '), ok_data, 1, 0),
       "a final newline after '}', found the end of the header"},
      {"newline before padding", npy_file(ok_dict + "\n" + std::string(52, ' '), ok_data, 1, 0),
       "a final newline after '}', found '\\n'"},
      {"CRLF", npy_file(ok_dict + std::string(51, ' ') + "\r\n", ok_data, 1, 0), "found '\\x0d'"},
      {"newline inside dict", npy_file("{'descr': '<f4',\n'fortran_order': False, 'shape': (2, 3), }", ok_data),
       "expected a quoted key, found '\\n'"},
      {"non-ASCII key (latin-1)", npy_file("{'descr\xe9': '<f4', 'fortran_order': False, 'shape': (2, 3), }", ok_data),
       "unknown key 'descr\\xe9'"},
      {"non-ASCII space (utf-8 NBSP)", npy_file("{'descr':\xc2\xa0'<f4', 'fortran_order': False, 'shape': (2, 3), }", ok_data),
       "expected a quoted dtype string for 'descr', found '\\xc2\\xa0'<f4''"},
      {"non-ASCII digit (utf-8 fullwidth 2)", with_shape("(\xef\xbc\x92, 3)"), "found '\\xef\\xbc\\x92'"},
      {"empty header", npy_file("", ok_data, 1, 0), "expected '{' opening the header dictionary, found the end of the header"},
      {"data one byte short", npy_file(ok_dict, zeros(23)), "truncated: its header announces shape (2, 3) float32 = 24 bytes"},
      {"data one byte long", npy_file(ok_dict, zeros(25)), "header does not match the file"},
      {"data for the transposed lie", with_shape("(3, 2)", 28), "header does not match the file"},
      {"data misaligned", npy_file(ok_dict + "\n", ok_data, 1, 0), "the data starts at byte 70, not a multiple of the 4-byte"},
      {"header past EOF", past_eof, "truncated: the file ends inside its .npy header"},
      {"v2 header past EOF", past_eof_v2, "truncated: the file ends inside its .npy header"},
      {"version 4.0", version_4, "unsupported .npy format version 4.0"},
      {"version 1.1", minor_1, "unsupported .npy format version 1.1"},
      {"bad magic", bad_magic, "not an .npy file"},
      {"cut after magic", std::string("\x93NUMPY\x01", 7), "not an .npy file"},
      {"v2 cut in length", std::string("\x93NUMPY\x02\x00\x40\x00", 10), "truncated: the file ends inside its .npy header"},
  };
}

// A test name from a case's description: letters and digits, the rest as '_'.
std::string case_name(const char* what) {
  std::string name;
  for (const char* c = what; *c; ++c) name += std::isalnum(static_cast<unsigned char>(*c)) ? *c : '_';
  return name;
}

void PrintTo(const Mangled& c, std::ostream* os) { *os << c.what; }

// One CTest test per row of the table.
class NpyHeaderMangled : public ::testing::TestWithParam<Mangled> {};

TEST_P(NpyHeaderMangled, RefusedNamingFileAndFinding) {
  const Mangled& c = GetParam();
  const std::string message = error_of(c.file);
  EXPECT_EQ(message.rfind("a.npy: ", 0), 0u) << message;
  EXPECT_NE(message.find(c.message), std::string::npos) << "\n  wanted: " << c.message << "\n  got:    " << message;
}

INSTANTIATE_TEST_SUITE_P(Table, NpyHeaderMangled, ::testing::ValuesIn(mangled_headers()),
                         [](const ::testing::TestParamInfo<Mangled>& info) { return case_name(info.param.what); });

TEST(NpyHeader, IssueFileIsRefusedThroughTheMap) {
  // The file of issue 9: a lying header over 3000 x 64 float32 values was read as (64, 3000).
  ScratchDir dir;
  std::ofstream(dir.file("lying.npy"), std::ios::binary)
      << npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (np.int64(3000), np.int64(64)), }",
                  zeros(3000 * 64 * 4));
  try {
    MappedNpy npy(dir.file("lying.npy"));
    FAIL() << "accepted as " << shape_text(npy.header().shape);
  } catch (const Error& e) {
    const std::string message = e.what();
    EXPECT_EQ(message.rfind(dir.file("lying.npy") + ": ", 0), 0u) << message;
    EXPECT_NE(message.find("found 'np.int64(3000)'"), std::string::npos) << message;
  }
}

struct Valid {
  const char* what;
  std::string file;
  std::vector<std::int64_t> shape;
  DType dtype;
  bool fortran_order;
  bool big_endian;
};

std::vector<Valid> valid_headers() {
  const auto f4 = DType::float32;
  return {
      {"numpy.save", npy_file(ok_dict, ok_data), {2, 3}, f4, false, false},
      {"no trailing comma", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3)}", ok_data), {2, 3}, f4,
       false, false},
      {"tuple trailing comma", with_shape("(2, 3,)"), {2, 3}, f4, false, false},
      {"L suffix (Python 2)", npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2L, 3L), }", ok_data), {2, 3},
       f4, false, false},
      {"l suffix", with_shape("(2l, 3)"), {2, 3}, f4, false, false},
      {"double quotes", npy_file("{\"descr\": \"<f4\", \"fortran_order\": True, \"shape\": (2, 3)}", ok_data), {2, 3}, f4,
       true, false},
      {"mixed quotes", npy_file("{'descr': \"<f4\", \"fortran_order\": False, 'shape': (2, 3), }", ok_data), {2, 3}, f4,
       false, false},
      {"extra spaces and tabs",
       npy_file("  {  'descr' :\t'<f4' ,  'fortran_order' : True ,'shape':(  2 ,3 , ) ,  }", ok_data), {2, 3}, f4, true,
       false},
      {"no spaces", npy_file("{'descr':'<f4','fortran_order':False,'shape':(2,3)}", ok_data), {2, 3}, f4, false, false},
      {"keys in another order", npy_file("{'shape': (2, 3), 'fortran_order': False, 'descr': '<f4'}", ok_data), {2, 3},
       f4, false, false},
      {"1-D", npy_file("{'descr': '<f8', 'fortran_order': False, 'shape': (3,), }", zeros(24)), {3},
       DType::float64, false, false},
      {"4-D", npy_file("{'descr': '<f2', 'fortran_order': False, 'shape': (1, 2, 3, 2), }", zeros(24)), {1, 2, 3, 2},
       DType::float16, false, false},
      {"zero rows", with_shape("(0, 3)", 0), {0, 3}, f4, false, false},
      // The largest dimension numpy allows beside a zero: the other dimensions' bytes fit in int64.
      {"zero beside the largest float32 dim", with_shape("(0, 2305843009213693951)", 0), {0, 2305843009213693951}, f4,
       false, false},
      {"numpy growth padding",
       npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }" + std::string(20, ' '), ok_data), {2, 3},
       f4, false, false},
      {"old numpy 16-byte alignment", npy_file(ok_dict, ok_data, 1, 16), {2, 3}, f4, false, false},
      {"version 2.0", npy_file(ok_dict, ok_data, 2), {2, 3}, f4, false, false},
      {"version 3.0", npy_file(ok_dict, ok_data, 3), {2, 3}, f4, false, false},
      {"native order =", with_descr("'=f4'"), {2, 3}, f4, false, false},
      {"| order (read as native)", with_descr("'|f4'"), {2, 3}, f4, false, false},
      {"big-endian f4", with_descr("'>f4'"), {2, 3}, f4, false, true},
      {"big-endian f2", npy_file("{'descr': '>f2', 'fortran_order': True, 'shape': (4, 3), }", zeros(24)), {4, 3},
       DType::float16, true, true},
      {"big-endian f8 v2", npy_file("{'descr': '>f8', 'fortran_order': False, 'shape': (3,), }", zeros(24), 2), {3},
       DType::float64, false, true},
  };
}

void PrintTo(const Valid& v, std::ostream* os) { *os << v.what; }

class NpyHeaderValid : public ::testing::TestWithParam<Valid> {};

TEST_P(NpyHeaderValid, AcceptedWithItsShape) {
  const Valid& v = GetParam();
  NpyHeader h;
  ASSERT_NO_THROW(h = parse(v.file)) << error_of(v.file);
  EXPECT_EQ(h.shape, v.shape);
  EXPECT_EQ(h.dtype, v.dtype);
  EXPECT_EQ(h.fortran_order, v.fortran_order);
  EXPECT_EQ(h.big_endian, v.big_endian);
  // The data starts right after the header and fills the file exactly.
  EXPECT_EQ(h.data_offset + h.elements() * dtype_size(h.dtype), static_cast<std::int64_t>(v.file.size()));
}

INSTANTIATE_TEST_SUITE_P(Table, NpyHeaderValid, ::testing::ValuesIn(valid_headers()),
                         [](const ::testing::TestParamInfo<Valid>& info) { return case_name(info.param.what); });

TEST(NpyHeader, WriterOutputParses) {
  const std::vector<std::int64_t> shape = {7, 1, 5};
  const std::string header = npy_header_bytes(DType::float16, shape);
  const NpyHeader h = parse(header + zeros(70));
  EXPECT_EQ(h.shape, shape);
  EXPECT_EQ(h.dtype, DType::float16);
  EXPECT_FALSE(h.big_endian);
  EXPECT_EQ(h.data_offset, static_cast<std::int64_t>(header.size()));
}

// Seeded random byte flips, insertions, deletions and truncations of a valid file: each result is either
// refused with convergent::Error naming the file, or accepted with a header whose data fills the file
// exactly. Run under sanitizers, this also shows that no mutation reads outside the buffer.
TEST(NpyHeader, FuzzedHeadersAreRefusedOrExact) {
  const std::string base = npy_file("{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3L), }", ok_data);
  const std::string alphabet = "{}()[],:'\" \t\n0123456789LlTrueFalsdcrhpo_<>=|f248-+.eEx\\\x93\xff";
  std::mt19937_64 rng(20240909);
  auto below = [&](std::size_t n) { return static_cast<std::size_t>(rng() % n); };
  int accepted = 0, refused = 0;
  constexpr int rounds = 5000;
  for (int round = 0; round < rounds; ++round) {
    std::string file = base;
    const int edits = 1 + static_cast<int>(below(4));
    for (int e = 0; e < edits; ++e) {
      // Mostly inside the header text, where the parser works; sometimes anywhere.
      const std::size_t at = below(4) == 0 || file.size() <= 11 ? below(file.size() + 1)
                                                                : 10 + below(std::min<std::size_t>(file.size(), 64) - 10);
      const char byte = below(3) == 0 ? static_cast<char>(below(256)) : alphabet[below(alphabet.size())];
      switch (below(5)) {
        case 0:
        case 1:
          if (at < file.size()) file[at] = byte;
          break;
        case 2:
          file.insert(at, 1, byte);
          break;
        case 3:
          if (at < file.size()) file.erase(at, 1 + below(3));
          break;
        default:
          if (below(4) == 0) file.resize(at);  // truncation, rarer: it ends most runs
          break;
      }
    }
    // An exactly sized heap copy, so that a read past the end is caught by AddressSanitizer.
    const std::size_t n = file.size();
    auto bytes = std::make_unique<unsigned char[]>(n == 0 ? 1 : n);
    std::memcpy(bytes.get(), file.data(), n);
    try {
      const NpyHeader h = parse_npy_header("fuzz.npy", bytes.get(), static_cast<std::int64_t>(n));
      ++accepted;
      ASSERT_FALSE(h.shape.empty()) << "round " << round;
      for (auto d : h.shape) ASSERT_GE(d, 0) << "round " << round;
      ASSERT_EQ(h.data_offset + h.elements() * dtype_size(h.dtype), static_cast<std::int64_t>(n)) << "round " << round;
    } catch (const Error& e) {
      ++refused;
      ASSERT_EQ(std::string(e.what()).rfind("fuzz.npy: ", 0), 0u) << "round " << round << ": " << e.what();
    } catch (const std::exception& e) {
      FAIL() << "round " << round << ": not a convergent::Error: " << e.what();
    }
  }
  // Both outcomes occur (mutations of padding or data keep a file valid), so the run exercised both paths.
  EXPECT_GT(accepted, 0);
  EXPECT_GT(refused, rounds / 2);
  std::cout << "fuzz: " << accepted << " accepted, " << refused << " refused of " << rounds << "\n";
}

// --- Big-endian data, written byte by byte from hex literals so that the expected values do not go
// through the code under test.

std::string bytes_of(std::initializer_list<unsigned> values) {
  std::string s;
  for (unsigned v : values) s.push_back(static_cast<char>(v));
  return s;
}

void write_file(const std::string& path, const std::string& contents) {
  std::ofstream(path, std::ios::binary) << contents;
}

TEST(NpyHeader, BigEndianFloat16ReadsKnownValues) {
  ScratchDir dir;
  // 1.5 = 0x3e00, -2.5 = 0xc100, 65504 = 0x7bff, 2^-24 = 0x0001, 0 = 0x0000, -0.099975586 = 0xae66.
  write_file(dir.file("h.npy"),
             npy_file("{'descr': '>f2', 'fortran_order': False, 'shape': (2, 3), }",
                      bytes_of({0x3e, 0x00, 0xc1, 0x00, 0x7b, 0xff, 0x00, 0x01, 0x00, 0x00, 0xae, 0x66})));
  const Matrix m = read_matrix_npy(dir.file("h.npy"));
  const double want[2][3] = {{1.5, -2.5, 65504.0}, {5.9604644775390625e-08, 0.0, -0.0999755859375}};
  for (int r = 0; r < 2; ++r)
    for (int c = 0; c < 3; ++c) EXPECT_EQ(m(r, c), want[r][c]) << r << "," << c;  // exact: every half is a double
}

TEST(NpyHeader, BigEndianFloat32ReadsKnownValues) {
  ScratchDir dir;
  // Fortran order (2, 2): column-major 1.5 (0x3fc00000), -0.1f (0xbdcccccd), 3e38f (0x7f61b1e6), 2^-149 (0x00000001).
  write_file(dir.file("s.npy"),
             npy_file("{'descr': '>f4', 'fortran_order': True, 'shape': (2, 2), }",
                      bytes_of({0x3f, 0xc0, 0, 0, 0xbd, 0xcc, 0xcc, 0xcd, 0x7f, 0x61, 0xb1, 0xe6, 0, 0, 0, 0x01})));
  const Matrix m = read_matrix_npy(dir.file("s.npy"));
  EXPECT_EQ(m(0, 0), 1.5);
  EXPECT_EQ(m(1, 0), static_cast<double>(-0.1f));
  EXPECT_EQ(m(0, 1), static_cast<double>(3e38f));
  EXPECT_EQ(m(1, 1), 1.401298464324817e-45);  // 2^-149, the smallest float subnormal
}

TEST(NpyHeader, BigEndianFloat64ReadsKnownValues) {
  ScratchDir dir;
  // 1.5 = 0x3ff8000000000000, -0.1 = 0xbfb999999999999a, 1e300 = 0x7e37e43c8800759c.
  write_file(dir.file("d.npy"),
             npy_file("{'descr': '>f8', 'fortran_order': False, 'shape': (1, 3), }",
                      bytes_of({0x3f, 0xf8, 0, 0, 0, 0, 0, 0, 0xbf, 0xb9, 0x99, 0x99, 0x99, 0x99, 0x99, 0x9a, 0x7e, 0x37,
                                0xe4, 0x3c, 0x88, 0x00, 0x75, 0x9c})));
  const Matrix m = read_matrix_npy(dir.file("d.npy"));
  EXPECT_EQ(m(0, 0), 1.5);
  EXPECT_EQ(m(0, 1), -0.1);
  EXPECT_EQ(m(0, 2), 1e300);
}

// --- The CLI on big-endian inputs and on the issue's lying header.

// `values` with every element's bytes reversed: the big-endian image of a little-endian array.
template <class T>
std::string swapped(const std::vector<T>& values) {
  std::string s(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
  for (std::size_t i = 0; i < s.size(); i += sizeof(T)) std::reverse(s.begin() + i, s.begin() + i + sizeof(T));
  return s;
}
template <class T>
std::string raw(const std::vector<T>& values) {
  return std::string(reinterpret_cast<const char*>(values.data()), values.size() * sizeof(T));
}

std::string array_dict(const char* descr, const std::string& shape, bool fortran = false) {
  return std::string("{'descr': '") + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
         ", 'shape': " + shape + ", }";
}

std::string read_bytes(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  return {std::istreambuf_iterator<char>(in), std::istreambuf_iterator<char>()};
}

TEST(NpyCli, AlignOnBigEndianNetsEqualsLittleEndian) {
  ScratchDir dir;
  std::mt19937_64 rng(9);
  std::normal_distribution<float> normal;
  const std::int64_t rows = 300;
  std::vector<float> a(rows * 5), b(rows * 4);
  for (auto& x : a) x = normal(rng);
  for (std::size_t i = 0; i < b.size(); ++i) b[i] = a[i / 4 * 5 + i % 4] + 0.3f * normal(rng);  // related to a
  std::vector<double> b64(b.begin(), b.end());
  std::vector<std::uint16_t> a16(a.size());  // a, rounded to half by truncating float32's mantissa (exact bits)
  for (std::size_t i = 0; i < a.size(); ++i) {
    std::uint32_t bits;
    std::memcpy(&bits, &a[i], 4);
    const int exponent = static_cast<int>((bits >> 23) & 0xff) - 127;
    a16[i] = exponent < -14 ? static_cast<std::uint16_t>((bits >> 16) & 0x8000)  // tiny: signed zero
                            : static_cast<std::uint16_t>(((bits >> 16) & 0x8000) | ((exponent + 15) << 10) |
                                                         ((bits >> 13) & 0x3ff));
  }
  const std::string shape_a = "(300, 5)", shape_b = "(300, 4)";
  write_file(dir.file("le_a.npy"), npy_file(array_dict("<f4", shape_a), raw(a)));
  write_file(dir.file("be_a.npy"), npy_file(array_dict(">f4", shape_a), swapped(a)));
  write_file(dir.file("le_b.npy"), npy_file(array_dict("<f8", shape_b), raw(b64)));
  write_file(dir.file("be_b.npy"), npy_file(array_dict(">f8", shape_b), swapped(b64)));
  write_file(dir.file("le_h.npy"), npy_file(array_dict("<f2", shape_a), raw(a16)));
  write_file(dir.file("be_h.npy"), npy_file(array_dict(">f2", shape_a), swapped(a16)));

  auto align = [&](const std::string& a_file, const std::string& b_file, const std::string& out) {
    const auto r = run_cli("align a=" + dir.file(a_file) + " b=" + dir.file(b_file) + " --clusters none --backend cpu --out " +
                           dir.file(out));
    EXPECT_EQ(r.exit_code, 0) << r.output;
  };
  align("le_a.npy", "le_b.npy", "le");
  align("be_a.npy", "be_b.npy", "be");
  align("le_a.npy", "be_b.npy", "mixed");
  align("le_h.npy", "le_b.npy", "le_half");
  align("be_h.npy", "be_b.npy", "be_half");
  for (const char* name : {"corr_a_b.npy", "corr_a.npy", "corr_b.npy", "matching_a_b.csv", "semi_a_b.csv"}) {
    const std::string le = read_bytes(dir.file(std::string("le/") + name));
    ASSERT_FALSE(le.empty()) << name;
    EXPECT_EQ(read_bytes(dir.file(std::string("be/") + name)), le) << name;
    EXPECT_EQ(read_bytes(dir.file(std::string("mixed/") + name)), le) << name;
    EXPECT_EQ(read_bytes(dir.file(std::string("be_half/") + name)), read_bytes(dir.file(std::string("le_half/") + name)))
        << name;
  }
  // The byte-swapped read is not a no-op: correlations of a with its noisy copy b are strong on the diagonal.
  const Matrix corr = read_matrix_npy(dir.file("be/corr_a_b.npy"));
  for (int u = 0; u < 4; ++u) EXPECT_GT(corr(u, u), 0.9) << u;
}

TEST(NpyCli, MatchReadsBigEndianMatrices) {
  ScratchDir dir;
  // The matrix of Cli.MatchReadsACorrelationMatrix, Fortran order: best one-to-one (0,1), (1,0), (2,2).
  const std::vector<double> column_major = {0.1, 0.9, 0.0, 0.8, 0.7, 0.0, 0.0, 0.0, 0.5};
  write_file(dir.file("corr.npy"), npy_file(array_dict(">f8", "(3, 3)", true), swapped(column_major)));
  const auto r = run_cli("match " + dir.file("corr.npy") + " --out " + dir.file("m"));
  ASSERT_EQ(r.exit_code, 0) << r.output;
  EXPECT_EQ(read_bytes(dir.file("m/matching_a_b.csv")),
            "unit_a,unit_b,corr\n0,1,0.80000000000000004\n1,0,0.90000000000000002\n2,2,0.5\n");
  const std::vector<float> column_major32(column_major.begin(), column_major.end());
  write_file(dir.file("corr32.npy"), npy_file(array_dict(">f4", "(3, 3)", true), swapped(column_major32)));
  const auto r32 = run_cli("match " + dir.file("corr32.npy") + " --out " + dir.file("m32"));
  ASSERT_EQ(r32.exit_code, 0) << r32.output;
  EXPECT_EQ(read_bytes(dir.file("m32/matching_a_b.csv")),
            "unit_a,unit_b,corr\n0,1,0.80000001192092896\n1,0,0.89999997615814209\n2,2,0.5\n");
}

TEST(NpyCli, LyingHeaderExitsNonZeroWithNoOutputs) {
  ScratchDir dir;
  const std::string lying = "{'descr': '<f4', 'fortran_order': False, 'shape': (np.int64(3000), np.int64(64)), }";
  std::vector<float> values(3000 * 64);
  for (std::size_t i = 0; i < values.size(); ++i) values[i] = static_cast<float>(i % 97) * 0.01f;
  write_file(dir.file("lying.npy"), npy_file(lying, raw(values)));
  write_file(dir.file("honest.npy"), npy_file(array_dict("<f4", "(3000, 64)"), raw(values)));
  for (const std::string& args : {"align " + dir.file("lying.npy") + " " + dir.file("honest.npy") + " --out " + dir.file("o1"),
                                  "align " + dir.file("honest.npy") + " " + dir.file("lying.npy") + " --out " + dir.file("o2"),
                                  "match " + dir.file("lying.npy") + " --out " + dir.file("o3")}) {
    const auto r = run_cli(args);
    EXPECT_NE(r.exit_code, 0) << args << "\n" << r.output;
    EXPECT_NE(r.output.find(dir.file("lying.npy") + ": malformed .npy header"), std::string::npos) << r.output;
    EXPECT_NE(r.output.find("'np.int64(3000)'"), std::string::npos) << r.output;
  }
  for (const char* out : {"o1", "o2", "o3"}) EXPECT_TRUE(files_in(dir.file(out)).empty()) << out;
}

}  // namespace
}  // namespace convergent
