// Resident memory of this process, read from /proc/self (Linux): for the benchmarks and tests that
// measure or bound it.
#pragma once

#include <cmath>
#include <fstream>
#include <string>

namespace convergent::detail {

// A field of /proc/self/status (VmRSS, VmHWM, ...) in MiB; NaN when it is absent.
inline double status_mib(const std::string& field) {
  std::ifstream status("/proc/self/status");
  for (std::string line; std::getline(status, line);)
    if (line.rfind(field + ":", 0) == 0) return std::stod(line.substr(field.size() + 1)) / 1024.0;
  return NAN;
}

// Sets the peak resident size (VmHWM) back to the current one (VmRSS).
inline void reset_peak_resident() { std::ofstream("/proc/self/clear_refs") << "5"; }

}  // namespace convergent::detail
