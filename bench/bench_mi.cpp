// bench_mi: mutual information of every unit pair against the loop researchers write today
// (scikit-learn's mutual_info_score on digitised units, pair by pair), on the same files in the same run.
//
//   bench_mi [--units-per-net 256] [--samples 100000] [--bins 10] [--sklearn-pairs 200 (0: no anchor)] [--threads 0]
//            [--backend cpu|cuda] [--python python3] [--script bench/bench_mi.py] [--tmp /tmp] [--seed 1]
//
// Two nets of ReLU units (float32 .npy, 100k samples) driven by shared latents. Ours: run_study (the
// moments pass, timed apart), then mutual_information with equal-width and with quantile bins, all
// U (U + 1) / 2 pairs within and between nets. The anchor times mutual_info_score over the first
// --sklearn-pairs between-net pairs and its per-pair time is projected to the pairs we compute; its MI is
// checked against our equal-width MI (same bins: numpy.histogram's). Prints the rate in pairs per second
// and the ratio. With --backend cuda the counting runs on the GPU and the rate is also shown as a share
// of the device's int8 GEMM ceiling (the one-hot product's 2 N (U S)^2 operations).
#include <chrono>
#include <cmath>
#include <limits>
#include <cstdio>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "convergent/convergent.hpp"
#include "convergent/mutual_information.hpp"
#include "backend/joint_counts_ceiling.hpp"
#include "bench_util.hpp"
#include "io/npy.hpp"

namespace {

using namespace convergent;
using Clock = std::chrono::steady_clock;
using bench::seconds_since;
using bench::shell_quote;

// Both nets share 32 latents; unit u of each net reads a few of them, ReLU'd, plus noise.
void write_nets(const std::string& a_path, const std::string& b_path, std::int64_t units, std::int64_t samples,
                std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> normal;
  const int latents = 32;
  std::vector<float> load(static_cast<std::size_t>(2 * units * latents));
  for (auto& l : load) l = std::abs(normal(rng)) < 1.2f ? 0.0f : normal(rng);
  std::vector<float> a(static_cast<std::size_t>(samples * units)), b(a.size()), z(latents);
  for (std::int64_t r = 0; r < samples; ++r) {
    for (auto& v : z) v = normal(rng);
    for (std::int64_t u = 0; u < 2 * units; ++u) {
      float s = 0.5f * normal(rng);
      for (int k = 0; k < latents; ++k) s += load[static_cast<std::size_t>(u * latents + k)] * z[static_cast<std::size_t>(k)];
      (u < units ? a[static_cast<std::size_t>(r * units + u)] : b[static_cast<std::size_t>(r * units + u - units)]) =
          std::max(0.0f, s);
    }
  }
  write_npy(a_path, a.data(), {samples, units});
  write_npy(b_path, b.data(), {samples, units});
}

struct Anchor {
  double seconds_per_pair = 0;
  std::string version;
  std::vector<double> mi;
};

Anchor run_sklearn(const std::string& python, const std::string& script, const std::string& a, const std::string& b,
                   int bins, std::int64_t pairs, const std::string& out) {
  const std::string command = shell_quote(python) + " " + shell_quote(script) + " " + shell_quote(a) + " " +
                              shell_quote(b) + " " + std::to_string(bins) + " " + std::to_string(pairs) + " " +
                              shell_quote(out);
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw Error("cannot run " + command);
  std::string output;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  if (pclose(pipe) != 0) throw Error("the scikit-learn anchor failed: " + command + "\n" + output);
  Anchor anchor;
  std::istringstream words(output);
  std::string word;
  while (words >> word) {
    if (word == "sklearn_seconds_per_pair") words >> anchor.seconds_per_pair;
    if (word == "version") words >> anchor.version;
  }
  const MappedNpy npy(out);
  const auto* values = reinterpret_cast<const double*>(npy.data());
  anchor.mi.assign(values, values + npy.header().shape[0]);
  return anchor;
}

}  // namespace

int main(int argc, char** argv) {
  std::int64_t units = 256, samples = 100000, sklearn_pairs = 200;
  int bins = 10, threads = 0;
  std::uint64_t seed = 1;
  std::string backend_name = "cpu", python = "python3", script = std::string(CONVERGENT_BENCH_DIR) + "/bench_mi.py",
              tmp = "/tmp";
  for (int i = 1; i < argc; ++i) {
    const std::string arg = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) throw Error(arg + " needs a value");
      return argv[++i];
    };
    if (arg == "--units-per-net") units = std::stoll(value());
    else if (arg == "--samples") samples = std::stoll(value());
    else if (arg == "--bins") bins = std::stoi(value());
    else if (arg == "--sklearn-pairs") sklearn_pairs = std::stoll(value());
    else if (arg == "--threads") threads = std::stoi(value());
    else if (arg == "--backend") backend_name = value();
    else if (arg == "--python") python = value();
    else if (arg == "--script") script = value();
    else if (arg == "--tmp") tmp = value();
    else if (arg == "--seed") seed = std::stoull(value());
    else {
      std::fprintf(stderr, "unknown argument %s\n", arg.c_str());
      return 2;
    }
  }
  try {
    const std::string a_path = tmp + "/bench_mi_a.npy", b_path = tmp + "/bench_mi_b.npy";
    write_nets(a_path, b_path, units, samples, seed);
    auto backend = make_backend(backend_name == "cuda" ? BackendChoice::cuda : BackendChoice::cpu, {threads, 0});
    const std::int64_t total = 2 * units, all_pairs = total * (total + 1) / 2;
    std::printf("workload: 2 nets x %lld ReLU units (float32), %lld samples, %d bins; %lld unit pairs "
                "(within and between nets)\nbackend: %s; %u hardware threads\n",
                static_cast<long long>(units), static_cast<long long>(samples), bins, static_cast<long long>(all_pairs),
                backend->description().c_str(), std::thread::hardware_concurrency());

    auto start = Clock::now();
    StudyOptions study_options;
    const Study study = run_study(*backend, {{"a", a_path}, {"b", b_path}}, study_options);
    const double moments_seconds = seconds_since(start);

    MiOptions options;
    options.bins = bins;
    options.threads = threads;
    options.base = MiBase::nats;
    options.binning = MiBinning::equal_width;
    start = Clock::now();
    const MutualInformation equal = mutual_information(*backend, study, study_options, options);
    const double equal_seconds = seconds_since(start);
    options.binning = MiBinning::quantile;
    start = Clock::now();
    const MutualInformation quantile = mutual_information(*backend, study, study_options, options);
    const double quantile_seconds = seconds_since(start);

    // --sklearn-pairs 0 skips the anchor (a GPU machine without scikit-learn): ours alone, ratio 0.
    const Anchor anchor = sklearn_pairs > 0
                              ? run_sklearn(python, script, a_path, b_path, bins, sklearn_pairs, tmp + "/bench_mi_sklearn.npy")
                              : Anchor{std::numeric_limits<double>::infinity(), "not run", {}};
    double worst = 0.0;
    for (std::int64_t k = 0; k < sklearn_pairs; ++k)
      worst = std::max(worst, std::abs(anchor.mi[static_cast<std::size_t>(k)] - equal.mi(k / units, units + k % units)));

    const double sklearn_rate = 1.0 / anchor.seconds_per_pair;
    std::printf("\nmoments pass (run_study): %.2f s\n", moments_seconds);
    std::printf("%-34s %10s %8s %14s %10s\n", "", "seconds", "passes", "pairs/s", "vs sklearn");
    std::printf("%-34s %10.3f %8lld %14.4g %9.0fx\n", "ours, equal-width (all pairs)", equal_seconds,
                static_cast<long long>(equal.passes), double(all_pairs) / equal_seconds,
                double(all_pairs) / equal_seconds / sklearn_rate);
    std::printf("%-34s %10.3f %8lld %14.4g %9.0fx\n", "ours, quantile (all pairs)", quantile_seconds,
                static_cast<long long>(quantile.passes), double(all_pairs) / quantile_seconds,
                double(all_pairs) / quantile_seconds / sklearn_rate);
    std::printf("%-34s %10.3f %8s %14.4g %10s\n", "sklearn mutual_info_score, per pair", anchor.seconds_per_pair, "-",
                sklearn_rate, "1x");
    std::printf("sklearn %s, %lld between-net pairs timed (digitising not timed); projected for our %lld pairs: "
                "%.0f s\n",
                anchor.version.c_str(), static_cast<long long>(sklearn_pairs), static_cast<long long>(all_pairs),
                anchor.seconds_per_pair * double(all_pairs));
    if (sklearn_pairs > 0)
      std::printf("check: largest |MI ours - MI sklearn| over those pairs (equal-width, nats): %.3g %s\n", worst,
                  worst <= 1e-12 ? "(same bins, same counts)" : "(MISMATCH)");
    if (backend->kind() == BackendKind::cuda) {
      const double ops = 2.0 * double(samples) * double(total * equal.slots) * double(total * equal.slots);
      const double ceiling = detail::measure_int8_gemm_ceiling(samples, total * equal.slots);
      std::printf("GPU: counting at %.3g int8 TOPS-equivalent (one-hot GEMM, 2 N (U S)^2 ops, equal-width run incl. "
                  "binning and reading); bare cublasGemmEx int8 ceiling %.3g TOPS: %.1f%%\n",
                  ops / equal_seconds * 1e-12, ceiling * 1e-12, 100.0 * ops / equal_seconds / ceiling);
    }
    return worst <= 1e-12 ? 0 : 1;
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_mi: %s\n", e.what());
    return 1;
  }
}
