// bench_spectral: convergent's spectral clustering against scikit-learn's SpectralClustering on the same
// correlation-like matrices (planted shared subspaces plus sampling noise), in the same run. Prints both
// times, the speedup and both normalised cuts, computed with one formula (convergent::normalized_cut).
//
//   bench_spectral [--sizes 1024,2048,4096] [--repeats 3] [--sklearn-repeats 1] [--samples 1024]
//                  [--noise 1.0] [--seed 0] [--python python3] [--script bench/bench_spectral.py]
//                  [--tmp /tmp]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <sstream>
#include <string>
#include <vector>

#include "convergent/backend.hpp"
#include "convergent/error.hpp"
#include "convergent/spectral.hpp"
#include "npy.hpp"

#ifndef CONVERGENT_BENCH_DIR
#define CONVERGENT_BENCH_DIR "bench"
#endif

namespace {

using convergent::Matrix;

class Gaussian {  // splitmix64 + Box-Muller: the same matrices on every platform
 public:
  explicit Gaussian(std::uint64_t seed) : state_(seed) {}
  double operator()() {
    const double u1 = (static_cast<double>(next() >> 11) + 0.5) * 0x1.0p-53;
    const double u2 = static_cast<double>(next() >> 11) * 0x1.0p-53;
    return std::sqrt(-2.0 * std::log(u1)) * std::cos(2.0 * M_PI * u2);
  }

 private:
  std::uint64_t next() {
    std::uint64_t z = (state_ += 0x9E3779B97F4A7C15ULL);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ULL;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBULL;
    return z ^ (z >> 31);
  }
  std::uint64_t state_;
};

// Two nets of units / 2 units each; k latent subspaces of dimension 4. Three quarters of the subspaces
// are shared by both nets, one eighth is private to each net. Every unit is a random mix of its
// subspace's signals plus independent noise (`noise` times the signal's scale), seen on `samples`
// samples; the result is the exact float64 Pearson correlation of those samples.
Matrix planted_correlation(std::int64_t units, std::int64_t k, std::int64_t samples, double noise,
                           std::uint64_t seed) {
  constexpr std::int64_t dim = 4;
  Gaussian g(seed);
  std::vector<double> latent(static_cast<std::size_t>(samples * k * dim));
  for (auto& v : latent) v = g();
  std::vector<double> x(static_cast<std::size_t>(samples * units));
  const std::int64_t half = units / 2, eighth = std::max<std::int64_t>(1, k / 8);
  for (std::int64_t u = 0; u < units; ++u) {
    const bool second = u >= half;
    std::int64_t s = (second ? u - half : u) % k;
    if (!second && s >= k - eighth) s -= eighth;                       // net 0 skips net 1's private ones
    if (second && s >= k - 2 * eighth && s < k - eighth) s += eighth;  // and the other way round
    double w[dim], norm = 0;
    for (auto& v : w) {
      v = g();
      norm += v * v;
    }
    const double sigma = noise * std::sqrt(norm);
    for (std::int64_t r = 0; r < samples; ++r) {
      double value = sigma * g();
      for (std::int64_t d = 0; d < dim; ++d) value += w[d] * latent[r * k * dim + s * dim + d];
      x[r * units + u] = value;
    }
  }
  for (std::int64_t u = 0; u < units; ++u) {  // standardise columns
    double mean = 0, ss = 0;
    for (std::int64_t r = 0; r < samples; ++r) mean += x[r * units + u];
    mean /= static_cast<double>(samples);
    for (std::int64_t r = 0; r < samples; ++r) ss += (x[r * units + u] - mean) * (x[r * units + u] - mean);
    const double scale = 1.0 / std::sqrt(ss);
    for (std::int64_t r = 0; r < samples; ++r) x[r * units + u] = (x[r * units + u] - mean) * scale;
  }
  Matrix corr(units, units);
  cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, static_cast<int>(units), static_cast<int>(samples), 1.0,
              x.data(), static_cast<int>(units), 0.0, corr.data(), static_cast<int>(units));
  for (std::int64_t i = 0; i < units; ++i) {
    corr(i, i) = 1.0;
    for (std::int64_t j = i + 1; j < units; ++j) corr(j, i) = corr(i, j) = std::clamp(corr(i, j), -1.0, 1.0);
  }
  return corr;
}

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

std::string cpu_model() {
  std::ifstream in("/proc/cpuinfo");
  std::string line;
  while (std::getline(in, line))
    if (line.rfind("model name", 0) == 0) return line.substr(line.find(':') + 2);
  return "unknown CPU";
}

std::string shell_quote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

struct Anchor {
  double seconds = 0;
  std::string version;
  std::vector<std::int64_t> labels;
};

Anchor run_sklearn(const std::string& python, const std::string& script, const std::string& corr_path,
                   const std::string& labels_path, std::int64_t k, std::uint64_t seed, int repeats) {
  const std::string command = shell_quote(python) + " " + shell_quote(script) + " " + shell_quote(corr_path) +
                              " " + std::to_string(k) + " " + std::to_string(seed) + " " +
                              shell_quote(labels_path) + " " + std::to_string(repeats);
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw convergent::Error("cannot run " + command);
  std::string output;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  if (pclose(pipe) != 0) throw convergent::Error("the scikit-learn anchor failed: " + command + "\n" + output);
  Anchor anchor;
  std::istringstream words(output);
  std::string word;
  while (words >> word) {
    if (word == "sklearn_seconds") words >> anchor.seconds;
    if (word == "version") words >> anchor.version;
  }
  const convergent::MappedNpy labels(labels_path);
  if (labels.header().dtype != convergent::DType::float64)
    throw convergent::Error(labels_path + ": expected float64 labels");
  const double* values = reinterpret_cast<const double*>(labels.data());
  for (std::int64_t i = 0; i < labels.header().elements(); ++i)
    anchor.labels.push_back(static_cast<std::int64_t>(values[i]));
  return anchor;
}

std::vector<std::int64_t> parse_sizes(const std::string& text) {
  std::vector<std::int64_t> sizes;
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) sizes.push_back(std::stoll(item));
  return sizes;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::int64_t> sizes = {1024, 2048, 4096};
  int repeats = 3, sklearn_repeats = 1;
  std::int64_t samples = 1024;
  double noise = 1.0;
  std::uint64_t seed = 0;
  std::string python = "python3", script = std::string(CONVERGENT_BENCH_DIR) + "/bench_spectral.py", tmp = "/tmp";
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw convergent::Error(arg + " needs a value");
        return argv[++i];
      };
      if (arg == "--sizes") sizes = parse_sizes(value());
      else if (arg == "--repeats") repeats = std::stoi(value());
      else if (arg == "--sklearn-repeats") sklearn_repeats = std::stoi(value());
      else if (arg == "--samples") samples = std::stoll(value());
      else if (arg == "--noise") noise = std::stod(value());
      else if (arg == "--seed") seed = std::stoull(value());
      else if (arg == "--python") python = value();
      else if (arg == "--script") script = value();
      else if (arg == "--tmp") tmp = value();
      else throw convergent::Error("unknown argument " + arg);
    }

    auto backend = convergent::make_backend(convergent::BackendChoice::cpu);
    std::cout << "bench_spectral: spectral clustering of planted correlation matrices (2 nets, k subspaces of "
                 "dim 4, 3/4 shared; "
              << samples << " samples, noise " << noise << ", seed " << seed << ")\n"
              << "machine: " << cpu_model() << ", backend " << backend->description() << "\n"
              << "ours: convergent::spectral_clustering (|corr|, k given, 10 k-means++ restarts), best of "
              << repeats << "; anchor: sklearn SpectralClustering(affinity='precomputed', assign_labels='kmeans'), "
              << "best of " << sklearn_repeats << "\n"
              << "ncut = sum over clusters of cut(C, V\\C) / vol(C) on |corr| with unit diagonal, same code "
                 "for both\n\n";
    std::cout << "|     U |  k | ours (s) | sklearn (s) | speedup | ncut ours | ncut sklearn | ncut ours/sklearn |\n"
              << "|------:|---:|---------:|------------:|--------:|----------:|-------------:|------------------:|\n";
    for (std::int64_t units : sizes) {
      const std::int64_t k = std::max<std::int64_t>(2, units / 128);
      const Matrix corr = planted_correlation(units, k, samples, noise, seed + static_cast<std::uint64_t>(units));
      const std::string corr_path = tmp + "/bench_spectral_corr_" + std::to_string(units) + ".npy";
      const std::string labels_path = tmp + "/bench_spectral_labels_" + std::to_string(units) + ".npy";
      convergent::write_npy(corr_path, corr.data(), {units, units});

      convergent::SpectralOptions options;
      options.k = k;
      options.seed = seed;
      convergent::SpectralResult ours;
      double best = 1e300;
      for (int r = 0; r < repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        ours = convergent::spectral_clustering(*backend, corr.view(), {units / 2, units - units / 2}, options);
        best = std::min(best, seconds_since(start));
      }
      const Anchor anchor = run_sklearn(python, script, corr_path, labels_path, k, seed, sklearn_repeats);
      const double ncut_ours = convergent::normalized_cut(corr.view(), ours.labels);
      const double ncut_theirs = convergent::normalized_cut(corr.view(), anchor.labels);
      char line[256];
      std::snprintf(line, sizeof line, "| %5lld | %2lld | %8.3f | %11.3f | %6.1fx | %9.4f | %12.4f | %17.4f |\n",
                    static_cast<long long>(units), static_cast<long long>(k), best, anchor.seconds,
                    anchor.seconds / best, ncut_ours, ncut_theirs, ncut_ours / ncut_theirs);
      std::cout << line << std::flush;
      std::remove(corr_path.c_str());
      std::remove(labels_path.c_str());
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_spectral: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
