// Helpers shared by the tests: scratch directories, hand-made .npy files (including malformed ones),
// and running the CLI.
#pragma once

#include <sys/wait.h>
#include <unistd.h>

#include <cmath>
#include <cstdint>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "convergent/moments.hpp"

namespace convergent::testing {

class ScratchDir {
 public:
  ScratchDir() {
    std::random_device seed;
    path_ = std::filesystem::temp_directory_path() /
            ("convergent-test-" + std::to_string(::getpid()) + "-" + std::to_string(seed()));
    std::filesystem::create_directories(path_);
  }
  ~ScratchDir() {
    std::error_code ec;
    std::filesystem::permissions(path_, std::filesystem::perms::owner_all, ec);
    std::filesystem::remove_all(path_, ec);
  }
  std::string file(const std::string& name) const { return (path_ / name).string(); }
  const std::filesystem::path& path() const { return path_; }

 private:
  std::filesystem::path path_;
};

// Writes an .npy file with the given header fields and raw data bytes; nothing is checked, so tests can
// make files whose header lies.
inline void write_raw_npy(const std::string& path, const std::string& descr, bool fortran,
                          const std::string& shape_tuple, const void* data, std::size_t bytes) {
  std::string dict = "{'descr': '" + descr + "', 'fortran_order': " + (fortran ? "True" : "False") +
                     ", 'shape': " + shape_tuple + ", }";
  while ((10 + dict.size() + 1) % 64 != 0) dict.push_back(' ');
  dict.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  out.write("\x93NUMPY\x01\x00", 8);
  const unsigned char len[2] = {static_cast<unsigned char>(dict.size() & 0xff), static_cast<unsigned char>(dict.size() >> 8)};
  out.write(reinterpret_cast<const char*>(len), 2);
  out << dict;
  out.write(static_cast<const char*>(data), static_cast<std::streamsize>(bytes));
}

inline std::string shape_tuple(const std::vector<std::int64_t>& shape) {
  std::string text = "(";
  for (std::size_t i = 0; i < shape.size(); ++i) text += (i ? ", " : "") + std::to_string(shape[i]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

// A C-order array of T (float or double) with the matching descr.
template <class T>
void write_array(const std::string& path, const std::vector<T>& values, const std::vector<std::int64_t>& shape,
                 bool fortran = false) {
  const std::string descr = sizeof(T) == 4 ? "<f4" : "<f8";
  write_raw_npy(path, descr, fortran, shape_tuple(shape), values.data(), values.size() * sizeof(T));
}

// Round-to-nearest-even float16 bits of v, subnormals included, NaN as 0x7e00, infinities kept, values
// beyond 65504 rounded to infinity; `stored` (when given) receives the value the bits hold. Written from
// the IEEE 754 definition, independent of the reader's half_to_float.
inline std::uint16_t float16_bits(double v, double* stored = nullptr) {
  const std::uint16_t sign = std::signbit(v) ? 0x8000 : 0;
  const double a = std::abs(v);
  std::uint16_t bits;
  double held;
  if (std::isnan(v)) {
    bits = 0x7e00, held = v;
  } else if (a < 0x1p-14) {  // subnormal; 1024 steps round up into the first normal, whose bits follow on
    const auto m = static_cast<std::uint16_t>(std::nearbyint(a * 0x1p24));
    bits = m, held = m * 0x1p-24;
  } else if (std::isinf(a)) {  // before the mantissa: an infinity does not convert to int
    bits = 0x7c00, held = INFINITY;
  } else {
    int e = std::ilogb(a);
    auto m = static_cast<int>(std::nearbyint(std::ldexp(a, 10 - e)));  // in [1024, 2048]
    if (m == 2048) m = 1024, ++e;
    if (e > 15) {
      bits = 0x7c00, held = INFINITY;
    } else {
      bits = static_cast<std::uint16_t>(((e + 15) << 10) | (m - 1024)), held = std::ldexp(static_cast<double>(m), e - 10);
    }
  }
  if (stored) *stored = sign ? -held : held;
  return static_cast<std::uint16_t>(sign | bits);
}

// A (rows x units) float32 file of independent N(0, 1) values.
inline void write_random(const std::string& path, std::int64_t rows, std::int64_t units, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  std::vector<float> v(static_cast<std::size_t>(rows * units));
  for (auto& x : v) x = normal(rng);
  write_array(path, v, {rows, units});
}

struct CliResult {
  int exit_code = -1;
  std::string output;  // stdout and stderr together
};

// Runs a shell command line, stdout and stderr together.
inline CliResult run_shell(const std::string& command_line) {
  const std::string command = command_line + " 2>&1";
  CliResult result;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return result;
  char buffer[4096];
  std::size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) result.output.append(buffer, got);
  const int status = ::pclose(pipe);
  result.exit_code = WIFEXITED(status) ? WEXITSTATUS(status) : -1;
  return result;
}

// Runs the convergent CLI with `arguments` (already shell-quoted where needed).
inline CliResult run_cli(const std::string& arguments) { return run_shell(std::string(CONVERGENT_CLI_PATH) + " " + arguments); }

inline std::vector<std::string> files_in(const std::filesystem::path& dir) {
  std::vector<std::string> names;
  if (!std::filesystem::exists(dir)) return names;
  for (const auto& entry : std::filesystem::directory_iterator(dir)) names.push_back(entry.path().filename().string());
  return names;
}

// The norm sums of the debiased CKA (Moments::sqnorm_comoment, unit_sqnorm_comoment) within `relative` of
// the oracle's, relative to their Cauchy-Schwarz bounds sqrt(Q_kk Q_ll) and sqrt(M2_uu Q_ll); equal values
// (two sums that both overflowed to +inf) agree.
inline void expect_norm_sums_near(const Moments& got, const Moments& oracle, double relative, const std::string& label) {
  const Matrix& q = oracle.sqnorm_comoment;
  ASSERT_EQ(got.sqnorm_comoment.rows(), q.rows()) << label;
  ASSERT_EQ(got.unit_sqnorm_comoment.rows(), oracle.units()) << label;
  auto near = [](double a, double b, double tolerance) { return a == b || std::abs(a - b) <= tolerance; };
  for (std::int64_t k = 0; k < q.rows(); ++k) {
    for (std::int64_t l = 0; l < q.cols(); ++l)
      EXPECT_TRUE(near(got.sqnorm_comoment(k, l), q(k, l), relative * std::sqrt(q(k, k) * q(l, l))))
          << label << ": sqnorm_comoment(" << k << "," << l << ") " << got.sqnorm_comoment(k, l) << " vs "
          << q(k, l);
    for (std::int64_t u = 0; u < oracle.units(); ++u) {
      const double m2 = oracle.covariance(u, u) * static_cast<double>(oracle.samples);
      EXPECT_TRUE(near(got.unit_sqnorm_comoment(u, k), oracle.unit_sqnorm_comoment(u, k),
                       relative * std::sqrt(m2 * q(k, k))))
          << label << ": unit_sqnorm_comoment(" << u << "," << k << ") " << got.unit_sqnorm_comoment(u, k)
          << " vs " << oracle.unit_sqnorm_comoment(u, k);
    }
  }
}

}  // namespace convergent::testing
