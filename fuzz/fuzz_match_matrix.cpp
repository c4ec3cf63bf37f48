// libFuzzer target: `convergent match`'s input. The bytes are the whole CORR.npy; it is read as match reads
// it (read_correlation_npy: header, any dtype, byte order and storage order, finite entries in [-1, 1]) and
// then matched (semi-matching and the one-to-one assignment). A convergent::Error is a correct answer to a
// bad file; anything else (a crash, a sanitizer report, a leak, a hang, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>

#include "convergent/backend.hpp"
#include "convergent/error.hpp"
#include "convergent/study.hpp"
#include "fuzz_util.hpp"
#include "io/study_outputs.hpp"

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  convergent::fuzz::single_threaded_blas();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace convergent;
  static fuzz::InputFile file;
  try {
    const Matrix corr = read_correlation_npy(file.write(data, size));
    align_pair(fuzz::cpu_backend(), corr.view(), 1);
  } catch (const InternalError& e) {
    fuzz::report_internal_error(e);
  } catch (const Error&) {
    // a clear refusal of a bad file
  }
  return 0;
}
