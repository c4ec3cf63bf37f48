// What every analysis reads from a Study: the live units of one net, and the blocks of the combined
// correlation and covariance that belong to them. Dead units are left out here, once.
#pragma once

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <string>
#include <vector>

#include "convergent/error.hpp"
#include "convergent/matrix.hpp"
#include "convergent/study.hpp"

namespace convergent::detail {

// Checks a net index of a study (Error naming `what` and the range otherwise).
inline void check_net(const Study& study, int net, const char* what) {
  if (net < 0 || net >= static_cast<int>(study.nets.size()))
    throw Error(std::string(what) + ": net " + std::to_string(net) + " is out of range (the study has " +
                std::to_string(study.nets.size()) + " nets)");
}

// Live units of a net, as indices within the net, ascending.
inline std::vector<std::int64_t> live_units(const Study& study, int net) {
  const NetInfo& info = study.nets[static_cast<std::size_t>(net)];
  std::vector<std::int64_t> live;
  for (std::int64_t u = 0; u < info.units; ++u)
    if (!study.dead[static_cast<std::size_t>(info.offset + u)]) live.push_back(u);
  return live;
}

// correlation(rows of net a, columns of net b) over the given units (indices within each net).
inline Matrix correlation_block(const Study& study, int a, const std::vector<std::int64_t>& rows, int b,
                                const std::vector<std::int64_t>& cols) {
  const std::int64_t ra = study.nets[static_cast<std::size_t>(a)].offset;
  const std::int64_t cb = study.nets[static_cast<std::size_t>(b)].offset;
  Matrix m(static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(cols.size()));
  for (std::size_t i = 0; i < rows.size(); ++i)
    for (std::size_t j = 0; j < cols.size(); ++j)
      m(static_cast<std::int64_t>(i), static_cast<std::int64_t>(j)) = study.correlation(ra + rows[i], cb + cols[j]);
  return m;
}

// x 2^k with the bits of std::ldexp(x, k), without its library call where 2^k is a normal double: the
// product is then rounded once, as ldexp rounds (only a subnormal result rounds at all).
inline double times_power_of_two(double x, int k) {
  if (k < -1022 || k > 1023) return std::ldexp(x, k);
  const std::uint64_t bits = static_cast<std::uint64_t>(k + 1023) << 52;
  double power;
  std::memcpy(&power, &bits, sizeof power);
  return x * power;
}

// Covariances in the input's units up to one power of two per net: every unit of net k is multiplied by
// 2^scale_k, with scale_k the smallest comoment exponent among its live units. Indices that are invariant
// to a global scale of each net (CKA, CCA, SVCCA, PWCCA, Procrustes after normalisation) read these; the
// largest-spread unit of each net then has a spread near 1, so no square or sum of squares of these
// entries overflows, whatever the input's magnitude. From the comoment while the Moments hold it; once it
// was handed over to the correlation (ComomentAfterStudy::hand_over, what align does) they are read back
// from the correlation and the kept diagonal, cov_ij = corr_ij sqrt(M_ii M_jj) / n (a few float64
// roundings from the comoment entry).
class ScaledCovariance {
 public:
  explicit ScaledCovariance(const Study& study) : study_(study) {}
  int net_scale(int net, const std::vector<std::int64_t>& live) const {
    const std::int64_t offset = study_.nets[static_cast<std::size_t>(net)].offset;
    int scale = 0;
    bool first = true;
    for (const std::int64_t u : live) {
      const int e = study_.moments.exponent[static_cast<std::size_t>(offset + u)];
      scale = first ? e : std::min(scale, e);
      first = false;
    }
    return scale;
  }
  // rows of net a x columns of net b, both scaled as above.
  Matrix block(int a, const std::vector<std::int64_t>& rows, int b, const std::vector<std::int64_t>& cols) const {
    const Moments& m = study_.moments;
    const std::int64_t ra = study_.nets[static_cast<std::size_t>(a)].offset;
    const std::int64_t cb = study_.nets[static_cast<std::size_t>(b)].offset;
    const int sa = net_scale(a, rows), sb = net_scale(b, cols);
    const double n = static_cast<double>(m.samples);
    Matrix out(static_cast<std::int64_t>(rows.size()), static_cast<std::int64_t>(cols.size()));
    if (m.comoment.rows() == m.units()) {
      std::vector<int> col_exponent(cols.size());
      for (std::size_t j = 0; j < cols.size(); ++j)
        col_exponent[j] = sb - m.exponent[static_cast<std::size_t>(cb + cols[j])];
      for (std::size_t i = 0; i < rows.size(); ++i) {
        const std::int64_t gi = ra + rows[i];
        const int ei = sa - m.exponent[static_cast<std::size_t>(gi)];
        const double* comoment = m.comoment.data() + gi * m.comoment.cols();
        double* row = &out(static_cast<std::int64_t>(i), 0);
        for (std::size_t j = 0; j < cols.size(); ++j)
          row[j] = times_power_of_two(comoment[cb + cols[j]] / n, ei + col_exponent[j]);
      }
      return out;
    }
    // sqrt(M_jj / n) 2^(s - e_j) per column: the unit's spread, scaled as its net.
    std::vector<double> col_spread(cols.size());
    for (std::size_t j = 0; j < cols.size(); ++j) {
      const std::int64_t gj = cb + cols[j];
      col_spread[j] = std::ldexp(std::sqrt(m.comoment_diagonal(gj) / n), sb - m.exponent[static_cast<std::size_t>(gj)]);
    }
    for (std::size_t i = 0; i < rows.size(); ++i) {
      const std::int64_t gi = ra + rows[i];
      const double row_spread =
          std::ldexp(std::sqrt(m.comoment_diagonal(gi) / n), sa - m.exponent[static_cast<std::size_t>(gi)]);
      for (std::size_t j = 0; j < cols.size(); ++j)
        out(static_cast<std::int64_t>(i), static_cast<std::int64_t>(j)) =
            study_.correlation(gi, cb + cols[j]) * row_spread * col_spread[j];
    }
    return out;
  }

 private:
  const Study& study_;
};

}  // namespace convergent::detail
