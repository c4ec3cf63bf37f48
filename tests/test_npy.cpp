// The .npy reader: every header field checked against the file, errors that name the file.
#include <gtest/gtest.h>

#include <cmath>

#include "convergent/error.hpp"
#include "io/npy.hpp"
#include "cpu/pack.hpp"
#include "test_util.hpp"

namespace convergent {
namespace {

using testing::ScratchDir;
using testing::write_raw_npy;

std::string error_of(const std::string& path) {
  try {
    MappedNpy npy(path);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

TEST(Npy, ReadsHeaderAndData) {
  ScratchDir dir;
  const std::vector<float> values = {1, 2, 3, 4, 5, 6};
  testing::write_array(dir.file("a.npy"), values, {2, 3});
  MappedNpy npy(dir.file("a.npy"));
  EXPECT_EQ(npy.header().dtype, DType::float32);
  EXPECT_FALSE(npy.header().fortran_order);
  EXPECT_EQ(npy.header().shape, (std::vector<std::int64_t>{2, 3}));
  EXPECT_EQ(reinterpret_cast<const float*>(npy.data())[5], 6.0f);
}

TEST(Npy, WriterRoundTrips) {
  ScratchDir dir;
  const std::vector<double> values = {0.5, -1.25, 3.0, 1e-300};
  write_npy(dir.file("w.npy"), values.data(), {2, 2});
  MappedNpy npy(dir.file("w.npy"));
  EXPECT_EQ(npy.header().dtype, DType::float64);
  EXPECT_EQ(npy.header().shape, (std::vector<std::int64_t>{2, 2}));
  EXPECT_EQ(npy.header().data_offset % 64, 0);  // numpy aligns data to 64 bytes
  const double* read = reinterpret_cast<const double*>(npy.data());
  for (int i = 0; i < 4; ++i) EXPECT_EQ(read[i], values[i]);
}

TEST(Npy, ReadsVersion2Headers) {
  ScratchDir dir;
  std::string dict = "{'descr': '<f8', 'fortran_order': True, 'shape': (2,), }";
  while ((12 + dict.size() + 1) % 64 != 0) dict.push_back(' ');
  dict.push_back('\n');
  std::ofstream out(dir.file("v2.npy"), std::ios::binary);
  out.write("\x93NUMPY\x02\x00", 8);
  const unsigned char len[4] = {static_cast<unsigned char>(dict.size()), 0, 0, 0};
  out.write(reinterpret_cast<const char*>(len), 4);
  out << dict;
  const double values[2] = {1, 2};
  out.write(reinterpret_cast<const char*>(values), sizeof values);
  out.close();
  MappedNpy npy(dir.file("v2.npy"));
  EXPECT_TRUE(npy.header().fortran_order);
  EXPECT_EQ(npy.header().shape, std::vector<std::int64_t>{2});
}

TEST(Npy, MissingFileNamesThePath) {
  const std::string message = error_of("/nonexistent/acts.npy");
  EXPECT_NE(message.find("/nonexistent/acts.npy"), std::string::npos) << message;
  EXPECT_NE(message.find("cannot open"), std::string::npos) << message;
}

TEST(Npy, RejectsFilesThatAreNotNpy) {
  ScratchDir dir;
  std::ofstream(dir.file("text.npy")) << "samples,units\n1,2\n";
  EXPECT_NE(error_of(dir.file("text.npy")).find("not an .npy file"), std::string::npos);
  std::ofstream(dir.file("empty.npy")).close();
  EXPECT_NE(error_of(dir.file("empty.npy")).find("empty"), std::string::npos);
}

TEST(Npy, RejectsUnsupportedDtypes) {
  ScratchDir dir;
  const int values[4] = {1, 2, 3, 4};
  for (const char* descr : {"<i4", "<c8", "|O", "|b1", "<u2", ">i4", ">c16"}) {
    write_raw_npy(dir.file("bad.npy"), descr, false, "(2, 2)", values, sizeof values);
    const std::string message = error_of(dir.file("bad.npy"));
    EXPECT_NE(message.find("unsupported dtype"), std::string::npos) << descr << ": " << message;
    EXPECT_NE(message.find("bad.npy"), std::string::npos) << message;
  }
}

TEST(Npy, ReadsBigEndianHeaders) {
  ScratchDir dir;
  const float values[4] = {};
  write_raw_npy(dir.file("be.npy"), ">f4", false, "(2, 2)", values, sizeof values);
  MappedNpy be(dir.file("be.npy"));
  EXPECT_TRUE(be.header().big_endian);
  EXPECT_EQ(be.header().dtype, DType::float32);
  write_raw_npy(dir.file("le.npy"), "<f4", false, "(2, 2)", values, sizeof values);
  EXPECT_FALSE(MappedNpy(dir.file("le.npy")).header().big_endian);
}

TEST(Npy, RejectsTruncatedData) {
  ScratchDir dir;
  const float values[5] = {};
  write_raw_npy(dir.file("short.npy"), "<f4", false, "(2, 3)", values, sizeof values);
  const std::string message = error_of(dir.file("short.npy"));
  EXPECT_NE(message.find("truncated"), std::string::npos) << message;
  EXPECT_NE(message.find("24 bytes"), std::string::npos) << message;
}

TEST(Npy, RejectsHeaderThatLiesAboutItsSize) {
  ScratchDir dir;
  const float values[8] = {};
  write_raw_npy(dir.file("long.npy"), "<f4", false, "(2, 3)", values, sizeof values);
  const std::string message = error_of(dir.file("long.npy"));
  EXPECT_NE(message.find("header does not match"), std::string::npos) << message;
}

TEST(Npy, RejectsHeaderCutShort) {
  ScratchDir dir;
  std::ofstream out(dir.file("cut.npy"), std::ios::binary);
  out.write("\x93NUMPY\x01\x00\x40\x00{'descr'", 18);
  out.close();
  EXPECT_NE(error_of(dir.file("cut.npy")).find("ends inside its .npy header"), std::string::npos);
}

TEST(Npy, HalfToFloatCoversEveryClass) {
  EXPECT_EQ(half_to_float(0x3c00), 1.0f);
  EXPECT_EQ(half_to_float(0xc000), -2.0f);
  EXPECT_EQ(half_to_float(0x0000), 0.0f);
  EXPECT_EQ(half_to_float(0x0001), 5.9604644775390625e-08f);  // smallest subnormal, 2^-24
  EXPECT_EQ(half_to_float(0x7bff), 65504.0f);                 // largest finite half
  EXPECT_TRUE(std::isinf(half_to_float(0x7c00)));
  EXPECT_TRUE(std::isnan(half_to_float(0x7e00)));
}

}  // namespace
}  // namespace convergent
