// Helpers for the analysis tests: a Study made straight from in-memory float64 data (exact moments, no
// files, no float32 products), and the float64 oracles the analyses are checked against.
#pragma once

#include <cmath>
#include <cstdint>
#include <random>
#include <string>
#include <vector>

#include "convergent/backend.hpp"
#include "convergent/matrix.hpp"
#include "convergent/moments.hpp"
#include "convergent/study.hpp"

namespace convergent::testing {

// samples x units, row-major.
struct Data {
  std::int64_t rows = 0, cols = 0;
  std::vector<double> v;
  Data() = default;
  Data(std::int64_t r, std::int64_t c) : rows(r), cols(c), v(static_cast<std::size_t>(r * c)) {}
  double& operator()(std::int64_t r, std::int64_t c) { return v[static_cast<std::size_t>(r * cols + c)]; }
  double operator()(std::int64_t r, std::int64_t c) const { return v[static_cast<std::size_t>(r * cols + c)]; }
};

inline Data gaussian_data(std::int64_t rows, std::int64_t cols, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> normal;
  Data d(rows, cols);
  for (double& x : d.v) x = normal(rng);
  return d;
}

// x w for a cols x k mixing matrix w (row-major).
inline Data mix(const Data& x, const std::vector<double>& w, std::int64_t k) {
  Data out(x.rows, k);
  for (std::int64_t r = 0; r < x.rows; ++r)
    for (std::int64_t j = 0; j < k; ++j) {
      double s = 0.0;
      for (std::int64_t i = 0; i < x.cols; ++i) s += x(r, i) * w[static_cast<std::size_t>(i * k + j)];
      out(r, j) = s;
    }
  return out;
}

// A random orthogonal n x n matrix (Gram-Schmidt on Gaussian columns), row-major.
inline std::vector<double> random_rotation(std::int64_t n, std::uint64_t seed) {
  const Data g = gaussian_data(n, n, seed);
  std::vector<double> q(g.v);
  for (std::int64_t j = 0; j < n; ++j) {
    for (std::int64_t k = 0; k < j; ++k) {
      double dot = 0.0;
      for (std::int64_t i = 0; i < n; ++i) dot += q[i * n + j] * q[i * n + k];
      for (std::int64_t i = 0; i < n; ++i) q[i * n + j] -= dot * q[i * n + k];
    }
    double norm = 0.0;
    for (std::int64_t i = 0; i < n; ++i) norm += q[i * n + j] * q[i * n + j];
    for (std::int64_t i = 0; i < n; ++i) q[i * n + j] /= std::sqrt(norm);
  }
  return q;
}

// A study of the given nets (same rows) from exact float64 moments: what run_study computes, without the
// float32 products, so that analyses can be held to float64 oracles.
inline Study study_of(const std::vector<Data>& nets, double dead_threshold = 1e-6) {
  std::vector<std::int64_t> units;
  std::int64_t total = 0;
  for (const Data& d : nets) units.push_back(d.cols), total += d.cols;
  const std::int64_t rows = nets.front().rows;
  std::vector<double> all(static_cast<std::size_t>(rows * total));
  Study s;
  std::int64_t offset = 0;
  for (std::size_t k = 0; k < nets.size(); ++k) {
    for (std::int64_t r = 0; r < rows; ++r)
      for (std::int64_t c = 0; c < nets[k].cols; ++c) all[static_cast<std::size_t>(r * total + offset + c)] = nets[k](r, c);
    NetInfo info;
    info.name = "net" + std::to_string(k);
    info.units = nets[k].cols;
    info.offset = offset;
    s.nets.push_back(info);
    offset += nets[k].cols;
  }
  s.moments = moments_of(MatrixView<const double>(all.data(), rows, total), units);
  s.dead = dead_units(s.moments, dead_threshold);
  s.correlation = make_backend(BackendChoice::cpu)->correlation(s.moments, s.dead);
  return s;
}

// Columns centred (and divided by their population std when `standardise`); constant columns become 0.
inline Data centred(const Data& x, bool standardise) {
  Data out = x;
  for (std::int64_t c = 0; c < x.cols; ++c) {
    double mean = 0.0, ss = 0.0;
    for (std::int64_t r = 0; r < x.rows; ++r) mean += x(r, c);
    mean /= static_cast<double>(x.rows);
    for (std::int64_t r = 0; r < x.rows; ++r) ss += (x(r, c) - mean) * (x(r, c) - mean);
    const double sd = std::sqrt(ss / static_cast<double>(x.rows));
    for (std::int64_t r = 0; r < x.rows; ++r)
      out(r, c) = standardise ? (sd > 0 ? (x(r, c) - mean) / sd : 0.0) : x(r, c) - mean;
  }
  return out;
}

}  // namespace convergent::testing
