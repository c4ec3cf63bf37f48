// bench_lap: times convergent::solve_assignment (maximise) on a generated or loaded matrix.
//   bench_lap --n N [--cols C] --kind uniform|corr|ties|rect --seed S [--threads T] [--npy FILE]
//             [--write-npy FILE]
// Prints one line of key=value pairs; bench_lap.py runs scipy on the same matrix (via --write-npy) and
// compares. A tiny .npy reader/writer lives here so that the benchmark depends only on the solver.
#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "convergent/error.hpp"
#include "convergent/lap.hpp"
#include "convergent/matrix.hpp"

namespace {

using convergent::Matrix;

struct Args {
  std::int64_t n = 1024;
  std::int64_t cols = -1;
  std::string kind = "uniform";
  std::uint64_t seed = 1;
  int threads = 1;
  std::string npy;
  std::string write_npy;
};

[[noreturn]] void usage(const std::string& why) {
  std::cerr << "bench_lap: " << why << "\n"
            << "usage: bench_lap --n N [--cols C] --kind uniform|corr|ties|rect --seed S [--threads T] "
               "[--npy FILE] [--write-npy FILE]\n";
  std::exit(2);
}

Args parse(int argc, char** argv) {
  Args a;
  for (int k = 1; k < argc; ++k) {
    const std::string key = argv[k];
    if (k + 1 >= argc) usage("missing value after " + key);
    const std::string value = argv[++k];
    if (key == "--n") a.n = std::stoll(value);
    else if (key == "--cols") a.cols = std::stoll(value);
    else if (key == "--kind") a.kind = value;
    else if (key == "--seed") a.seed = std::stoull(value);
    else if (key == "--threads") a.threads = std::stoi(value);
    else if (key == "--npy") a.npy = value;
    else if (key == "--write-npy") a.write_npy = value;
    else usage("unknown option " + key);
  }
  if (a.kind == "rect" && a.cols < 0) a.cols = a.n + a.n / 2;
  if (a.cols < 0) a.cols = a.n;
  return a;
}

// Independent entries drawn from `distribution`.
template <class Distribution>
Matrix random_matrix(std::int64_t rows, std::int64_t cols, std::uint64_t seed, Distribution distribution) {
  std::mt19937_64 rng(seed);
  Matrix m(rows, cols);
  for (std::int64_t i = 0; i < rows * cols; ++i) m.data()[i] = distribution(rng);
  return m;
}

// Population correlation between units of two nets, plus sampling noise of 10^4 samples:
//   a_i = alpha_i f_{p(i)} + L_i . z + e_i,  b_j = beta_j f_{q(j)} + M_j . z + e_j
// z are 16 latents every unit mixes (a low-rank background), f are per-feature latents that a unit of A
// and a unit of B may share (convergent features, strength varies), e is private noise. 3% of the units
// of each net are dead (zero row / column), as the library hands them to the solver.
Matrix corr(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> g(0.0, 1.0);
  std::uniform_real_distribution<double> u(0.0, 1.0);
  constexpr int k = 16;
  const std::int64_t features = std::max(rows, cols);
  auto make = [&](std::int64_t units, std::vector<double>& load, std::vector<double>& strength,
                  std::vector<std::int64_t>& feature, std::vector<double>& norm) {
    load.resize(static_cast<std::size_t>(units * k));
    strength.resize(static_cast<std::size_t>(units));
    feature.resize(static_cast<std::size_t>(units));
    norm.resize(static_cast<std::size_t>(units));
    for (std::int64_t i = 0; i < units; ++i) {
      double s = 0.3 * 0.3;  // private noise variance relative to the latents
      for (int t = 0; t < k; ++t) {
        const double x = 0.25 * g(rng);
        load[static_cast<std::size_t>(i * k + t)] = x;
        s += x * x;
      }
      strength[i] = u(rng) < 0.7 ? 0.5 + 1.5 * u(rng) : 0.0;
      feature[i] = static_cast<std::int64_t>(u(rng) * static_cast<double>(features));
      s += strength[i] * strength[i];
      norm[i] = std::sqrt(s);
    }
  };
  std::vector<double> la, lb, sa, sb, na, nb;
  std::vector<std::int64_t> fa, fb;
  make(rows, la, sa, fa, na);
  make(cols, lb, sb, fb, nb);
  // Units of B take the features of A in a shuffled order so that partners are not on the diagonal.
  std::vector<std::int64_t> perm(static_cast<std::size_t>(cols));
  for (std::int64_t j = 0; j < cols; ++j) perm[j] = j;
  std::shuffle(perm.begin(), perm.end(), rng);
  for (std::int64_t j = 0; j < cols; ++j) fb[j] = perm[j] < rows ? fa[perm[j]] : fb[j];
  const double sample_noise = 1.0 / std::sqrt(1e4);
  const double dead = 0.03;
  Matrix m(rows, cols);
  for (std::int64_t i = 0; i < rows; ++i) {
    double* mi = m.data() + i * cols;
    const double* li = la.data() + i * k;
    for (std::int64_t j = 0; j < cols; ++j) {
      const double* lj = lb.data() + j * k;
      double dot = 0.0;
      for (int t = 0; t < k; ++t) dot += li[t] * lj[t];
      if (fa[i] == fb[j]) dot += sa[i] * sb[j];
      mi[j] = dot / (na[i] * nb[j]);
    }
    for (std::int64_t j = 0; j < cols; ++j) mi[j] += sample_noise * g(rng);
  }
  for (std::int64_t i = 0; i < rows; ++i) {
    if (u(rng) < dead)
      for (std::int64_t j = 0; j < cols; ++j) m(i, j) = 0.0;
  }
  for (std::int64_t j = 0; j < cols; ++j) {
    if (u(rng) < dead)
      for (std::int64_t i = 0; i < rows; ++i) m(i, j) = 0.0;
  }
  return m;
}

void write_npy(const std::string& path, const Matrix& m) {
  std::string header = "{'descr': '<f8', 'fortran_order': False, 'shape': (" + std::to_string(m.rows()) + ", " +
                       std::to_string(m.cols()) + "), }";
  // Magic (6) + version (2) + length (2) + header + '\n', padded to a multiple of 64 bytes.
  const std::size_t unpadded = 10 + header.size() + 1;
  header.append((64 - unpadded % 64) % 64, ' ');
  header.push_back('\n');
  std::ofstream out(path, std::ios::binary);
  const char magic[] = {'\x93', 'N', 'U', 'M', 'P', 'Y', 1, 0};
  out.write(magic, 8);
  const std::uint16_t len = static_cast<std::uint16_t>(header.size());
  const char len_bytes[2] = {static_cast<char>(len & 0xff), static_cast<char>(len >> 8)};
  out.write(len_bytes, 2);
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  out.write(reinterpret_cast<const char*>(m.data()), static_cast<std::streamsize>(sizeof(double) * m.rows() * m.cols()));
  if (!out) throw convergent::Error(path + ": write failed");
}

// Reads a 2-D C-order little-endian float64 array, the only kind this benchmark writes or needs.
Matrix read_npy(const std::string& path) {
  std::ifstream in(path, std::ios::binary);
  if (!in) throw convergent::Error(path + ": cannot open");
  char pre[10];
  in.read(pre, 10);
  if (!in || std::string(pre + 1, 5) != "NUMPY") throw convergent::Error(path + ": not an .npy file");
  std::size_t len = static_cast<unsigned char>(pre[8]) | (static_cast<std::size_t>(static_cast<unsigned char>(pre[9])) << 8);
  if (pre[6] >= 2) {  // versions 2 and 3 have a 4-byte header length
    char more[2];
    in.read(more, 2);
    len |= (static_cast<std::size_t>(static_cast<unsigned char>(more[0])) << 16) |
           (static_cast<std::size_t>(static_cast<unsigned char>(more[1])) << 24);
  }
  std::string header(len, ' ');
  in.read(header.data(), static_cast<std::streamsize>(len));
  if (header.find("'<f8'") == std::string::npos || header.find("'fortran_order': False") == std::string::npos)
    throw convergent::Error(path + ": need a C-order float64 array, header is " + header);
  const auto open = header.find('(', header.find("'shape'"));
  const auto comma = header.find(',', open);
  const auto close = header.find(')', open);
  if (open == std::string::npos || comma == std::string::npos || close == std::string::npos || comma > close)
    throw convergent::Error(path + ": need a 2-D array, header is " + header);
  const std::int64_t rows = std::stoll(header.substr(open + 1, comma - open - 1));
  const std::int64_t cols = std::stoll(header.substr(comma + 1, close - comma - 1));
  Matrix m(rows, cols);
  in.read(reinterpret_cast<char*>(m.data()), static_cast<std::streamsize>(sizeof(double) * rows * cols));
  if (!in) throw convergent::Error(path + ": truncated data");
  return m;
}

}  // namespace

int main(int argc, char** argv) {
  try {
    const Args a = parse(argc, argv);
    Matrix w;
    if (!a.npy.empty()) {
      w = read_npy(a.npy);
    } else if (a.kind == "uniform" || a.kind == "rect") {
      w = random_matrix(a.n, a.cols, a.seed, std::uniform_real_distribution<double>(0.0, 1.0));
    } else if (a.kind == "corr") {
      w = corr(a.n, a.cols, a.seed);
    } else if (a.kind == "ties") {
      // Small integers 0..9: masses of exact ties, the degenerate case for assignment solvers.
      w = random_matrix(a.n, a.cols, a.seed, std::uniform_int_distribution<int>(0, 9));
    } else {
      usage("unknown kind " + a.kind);
    }
    if (!a.write_npy.empty()) write_npy(a.write_npy, w);
    convergent::AssignmentOptions options;
    options.objective = convergent::Objective::maximize;
    options.threads = a.threads;
    const auto start = std::chrono::steady_clock::now();
    const convergent::Assignment result = convergent::solve_assignment(w.view(), options);
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    std::printf("n=%lld cols=%lld kind=%s seed=%llu threads=%d time_s=%.6f total=%.17g\n",
                static_cast<long long>(w.rows()), static_cast<long long>(w.cols()),
                a.npy.empty() ? a.kind.c_str() : "npy", static_cast<unsigned long long>(a.seed), a.threads, seconds,
                result.total);
    return 0;
  } catch (const std::exception& e) {
    std::cerr << "bench_lap: " << e.what() << "\n";
    return 1;
  }
}
