// What every benchmark program needs around its measurement: reproducible Gaussian data, a clock, the CPU's
// name for the record, and shell quoting for the anchor scripts it runs.
#pragma once

#include <chrono>
#include <cmath>
#include <cstdint>
#include <fstream>
#include <string>

#include "analysis/splitmix64.hpp"

namespace convergent::bench {

// splitmix64 + Box-Muller: the same data on every platform and standard library.
class Gaussian {
 public:
  explicit Gaussian(std::uint64_t seed) : bits_(seed) {}
  double operator()() {
    const double u1 = (static_cast<double>(bits_.next() >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = static_cast<double>(bits_.next() >> 11) * 0x1.0p-53;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }

 private:
  detail::SplitMix64 bits_;
};

inline double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

// The "model name" line of /proc/cpuinfo, for the record of where figures came from.
inline std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  for (std::string line; std::getline(in, line);)
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

// One argument for /bin/sh, whatever it holds.
inline std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

}  // namespace convergent::bench
