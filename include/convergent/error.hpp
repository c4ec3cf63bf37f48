// The one exception family of convergent. Every message names what went wrong and, where there is one,
// the file it came from, so that a user can act on it without reading the source.
#pragma once

#include <cstdint>
#include <stdexcept>
#include <string>

namespace convergent {

class Error : public std::runtime_error {
 public:
  using std::runtime_error::runtime_error;
};

// A fault of convergent itself, never of the input (a NaN in a statistic computed from finite values,
// say): the message says so, so that users report it instead of hunting for a bad file.
class InternalError : public Error {
 public:
  explicit InternalError(const std::string& what)
      : Error("internal error (a bug in convergent; please report it with the command line): " + what) {}
};

// A NaN or infinity in the activations. The accumulator knows only the net index and the row inside the
// batch; the caller that owns the files turns it into a message with the file name and absolute row.
class NonFiniteValueError : public Error {
 public:
  NonFiniteValueError(int net, std::int64_t row, std::int64_t unit)
      : Error("non-finite value in net " + std::to_string(net) + " at batch row " + std::to_string(row) +
              ", unit " + std::to_string(unit)),
        net_(net), row_(row), unit_(unit) {}
  int net() const { return net_; }
  std::int64_t row() const { return row_; }
  std::int64_t unit() const { return unit_; }

 private:
  int net_;
  std::int64_t row_;
  std::int64_t unit_;
};

}  // namespace convergent
