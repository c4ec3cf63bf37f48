// libFuzzer target: an .npy activation file through what `convergent align` does with it. The bytes are
// the whole file; it is opened as both nets of a study (header parser, shape and layout checks, then every
// batch streamed through the CPU backend's dtype/byte-order/stride conversion and the moments pass), in
// both layouts, failing on non-finite values and skipping them. A convergent::Error is a correct answer to
// a bad file; anything else (a crash, a sanitizer report, a leak, a hang, another exception) is a bug.
#include <cstddef>
#include <cstdint>
#include <exception>

#include "convergent/backend.hpp"
#include "convergent/error.hpp"
#include "convergent/study.hpp"
#include "fuzz_util.hpp"
#include "io/activation_file.hpp"

namespace {

// The moments pass takes O(units^2) memory by design; wider files are still parsed and checked here, but
// not streamed, so that a 4 KiB input cannot ask for gigabytes of correlation matrix.
constexpr std::int64_t max_streamed_units = 64;

}  // namespace

extern "C" int LLVMFuzzerInitialize(int*, char***) {
  convergent::fuzz::single_threaded_blas();
  return 0;
}

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace convergent;
  static fuzz::InputFile file;
  const std::string& path = file.write(data, size);
  for (const Layout layout : {Layout::channels_first, Layout::channels_last}) {
    try {
      const ActivationFile activations(path, layout);
      if (activations.units() > max_streamed_units && activations.samples() >= 2) continue;
      StudyOptions options;
      options.layout = layout;
      options.batch_rows = 5;  // several batches, some cut mid-image, from a few hundred bytes
      options.skip_nonfinite_rows = layout == Layout::channels_last;
      run_study(fuzz::cpu_backend(), {{"a", path}, {"b", path}}, options);
    } catch (const InternalError& e) {
      fuzz::report_internal_error(e);
    } catch (const Error&) {
      // a clear refusal of a bad file
    }
  }
  return 0;
}
