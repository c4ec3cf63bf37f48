// bench_spectral: convergent's spectral clustering against scikit-learn's SpectralClustering on the same
// correlation matrices, in the same run, on three kinds of data:
//   planted  planted shared subspaces plus sampling noise (2 nets, k = U / 128 subspaces of dimension 4);
//   relu     a ReLU factor model: 2 nets, X = ReLU(z W + noise) with shared Gaussian factors z, k = 64;
//   real     the bundled example's activations (examples/digits, three MLPs), correlated by run_study.
// Prints our time against scikit-learn's default (assign_labels='kmeans') and our normalised cut against
// the best of scikit-learn's assign_labels options (kmeans, discretize, cluster_qr) over several random
// states, every cut computed with one formula (convergent::normalized_cut). Also prints which of our
// candidates was kept, how many single-unit moves refined it, and how many scikit-learn runs found fewer
// than k clusters (left out of the best: fewer clusters make a cut lower but not comparable).
//
//   bench_spectral [--kinds planted,relu,real] [--sizes 1024,2048,4096] [--samples 1024] [--noise 1.0]
//                  [--relu-units 1024] [--relu-samples 8192] [--relu-factors 48] [--relu-k 64]
//                  [--real-k 4,8,16] [--digits DIR] [--repeats 3] [--sklearn-repeats 1]
//                  [--sklearn-states 5] [--seed 0] [--python python3] [--script bench/bench_spectral.py]
//                  [--tmp /tmp] [--ours-only] [--restarts R] [--yu-shi-starts S]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "convergent/backend.hpp"
#include "convergent/error.hpp"
#include "convergent/spectral.hpp"
#include "convergent/study.hpp"
#include "bench_util.hpp"
#include "io/npy.hpp"

#ifndef CONVERGENT_BENCH_DIR
#define CONVERGENT_BENCH_DIR "bench"
#endif

namespace {

using convergent::bench::cpu_model;
using convergent::bench::Gaussian;
using convergent::bench::seconds_since;
using convergent::bench::shell_quote;

using convergent::Matrix;

// Exact float64 Pearson correlation of the columns of x (samples x units, row-major; overwritten).
Matrix pearson(std::vector<double>& x, std::int64_t samples, std::int64_t units) {
  for (std::int64_t u = 0; u < units; ++u) {  // standardise columns
    double mean = 0, ss = 0;
    for (std::int64_t r = 0; r < samples; ++r) mean += x[r * units + u];
    mean /= static_cast<double>(samples);
    for (std::int64_t r = 0; r < samples; ++r) ss += (x[r * units + u] - mean) * (x[r * units + u] - mean);
    const double scale = ss > 0 ? 1.0 / std::sqrt(ss) : 0.0;
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

// Two nets of units / 2 units each; k latent subspaces of dimension 4. Three quarters of the subspaces
// are shared by both nets, one eighth is private to each net. Every unit is a random mix of its
// subspace's signals plus independent noise (`noise` times the signal's scale), seen on `samples`
// samples.
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
  return pearson(x, samples, units);
}

// The ReLU factor model: `factors` shared Gaussian factors z (samples x factors); every unit of either
// net is ReLU(z w + e) with its own Gaussian loadings w ~ N(0, I / factors) (signal variance about 1) and
// independent noise e ~ N(0, 1). No planted clusters: a smooth shared subspace, much weaker structure.
Matrix relu_correlation(std::int64_t units, std::int64_t samples, std::int64_t factors, std::uint64_t seed) {
  Gaussian g(seed);
  std::vector<double> z(static_cast<std::size_t>(samples * factors)), w(static_cast<std::size_t>(factors * units));
  for (auto& v : z) v = g();
  const double scale = 1.0 / std::sqrt(static_cast<double>(factors));
  for (auto& v : w) v = scale * g();
  std::vector<double> x(static_cast<std::size_t>(samples * units));
  cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(samples), static_cast<int>(units),
              static_cast<int>(factors), 1.0, z.data(), static_cast<int>(factors), w.data(), static_cast<int>(units),
              0.0, x.data(), static_cast<int>(units));
  for (auto& v : x) v = std::max(0.0, v + g());
  return pearson(x, samples, units);
}

struct Anchor {
  double seconds = 0;  // the default (assign_labels='kmeans', random_state = seed), best of its repeats
  std::string version;
  std::vector<std::string> options;
  std::vector<std::int64_t> default_labels;
  std::vector<std::vector<std::int64_t>> labels;  // [option * states + state]
};

Anchor run_sklearn(const std::string& python, const std::string& script, const std::string& corr_path,
                   const std::string& labels_path, std::int64_t k, std::uint64_t seed, int repeats, int states) {
  const std::string command = shell_quote(python) + " " + shell_quote(script) + " " + shell_quote(corr_path) +
                              " " + std::to_string(k) + " " + std::to_string(seed) + " " +
                              shell_quote(labels_path) + " " + std::to_string(repeats) + " " + std::to_string(states);
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
    if (word == "options") {
      std::string list, item;
      words >> list;
      std::istringstream items(list);
      while (std::getline(items, item, ',')) anchor.options.push_back(item);
    }
  }
  const convergent::MappedNpy npy(labels_path);
  const auto& shape = npy.header().shape;
  if (npy.header().dtype != convergent::DType::float64 || shape.size() != 2 ||
      shape[0] != 1 + static_cast<std::int64_t>(anchor.options.size()) * states)
    throw convergent::Error(labels_path + ": expected float64 labels, one row per run");
  const double* values = reinterpret_cast<const double*>(npy.data());
  for (std::int64_t row = 0; row < shape[0]; ++row) {
    std::vector<std::int64_t> labels(static_cast<std::size_t>(shape[1]));
    for (std::int64_t i = 0; i < shape[1]; ++i) labels[i] = static_cast<std::int64_t>(values[row * shape[1] + i]);
    (row == 0 ? anchor.default_labels : anchor.labels.emplace_back()) = std::move(labels);
  }
  return anchor;
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> items;
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) items.push_back(item);
  return items;
}

std::vector<std::int64_t> parse_sizes(const std::string& text) {
  std::vector<std::int64_t> sizes;
  for (const std::string& item : split(text)) sizes.push_back(std::stoll(item));
  return sizes;
}

// One workload: the correlation of the live units (scikit-learn gets the same matrix, so dead units of
// real data are left out of both), and how they split into nets.
struct Case {
  std::string kind;
  Matrix corr;
  std::vector<std::int64_t> units_per_net;
  std::vector<std::int64_t> ks;
};

Case real_case(convergent::Backend& backend, const std::string& dir, const std::vector<std::int64_t>& ks) {
  std::vector<convergent::NetSource> nets;
  for (const char* name : {"net1", "net2", "net3"}) nets.push_back({name, dir + "/" + name + ".npy"});
  const convergent::Study study = convergent::run_study(backend, nets, {});
  Case c{"real", Matrix(), {}, ks};
  std::vector<std::int64_t> live;
  for (const convergent::NetInfo& net : study.nets) {
    std::int64_t alive = 0;
    for (std::int64_t u = net.offset; u < net.offset + net.units; ++u)
      if (!study.dead[u]) live.push_back(u), ++alive;
    c.units_per_net.push_back(alive);
  }
  const std::int64_t n = static_cast<std::int64_t>(live.size());
  c.corr = Matrix(n, n);
  for (std::int64_t i = 0; i < n; ++i)
    for (std::int64_t j = 0; j < n; ++j) c.corr(i, j) = study.correlation(live[i], live[j]);
  return c;
}

}  // namespace

int main(int argc, char** argv) {
  std::vector<std::string> kinds = {"planted", "relu", "real"};
  std::vector<std::int64_t> sizes = {1024, 2048, 4096}, real_ks = {4, 8, 16};
  int repeats = 3, sklearn_repeats = 1, sklearn_states = 5;
  std::int64_t samples = 1024, relu_units = 1024, relu_samples = 8192, relu_factors = 48, relu_k = 64;
  double noise = 1.0;
  bool ours_only = false;  // profiling: time ours alone, no anchor
  std::optional<int> restarts, yu_shi_starts;  // SpectralOptions, when not the defaults
  std::uint64_t seed = 0;
  std::string python = "python3", script = std::string(CONVERGENT_BENCH_DIR) + "/bench_spectral.py", tmp = "/tmp";
  std::string digits = std::string(CONVERGENT_BENCH_DIR) + "/../examples/digits";
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw convergent::Error(arg + " needs a value");
        return argv[++i];
      };
      if (arg == "--kinds") kinds = split(value());
      else if (arg == "--sizes") sizes = parse_sizes(value());
      else if (arg == "--samples") samples = std::stoll(value());
      else if (arg == "--noise") noise = std::stod(value());
      else if (arg == "--relu-units") relu_units = std::stoll(value());
      else if (arg == "--relu-samples") relu_samples = std::stoll(value());
      else if (arg == "--relu-factors") relu_factors = std::stoll(value());
      else if (arg == "--relu-k") relu_k = std::stoll(value());
      else if (arg == "--real-k") real_ks = parse_sizes(value());
      else if (arg == "--digits") digits = value();
      else if (arg == "--repeats") repeats = std::stoi(value());
      else if (arg == "--sklearn-repeats") sklearn_repeats = std::stoi(value());
      else if (arg == "--sklearn-states") sklearn_states = std::stoi(value());
      else if (arg == "--seed") seed = std::stoull(value());
      else if (arg == "--python") python = value();
      else if (arg == "--script") script = value();
      else if (arg == "--tmp") tmp = value();
      else if (arg == "--ours-only") ours_only = true;
      else if (arg == "--restarts") restarts = std::stoi(value());
      else if (arg == "--yu-shi-starts") yu_shi_starts = std::stoi(value());
      else throw convergent::Error("unknown argument " + arg);
    }

    auto backend = convergent::make_backend(convergent::BackendChoice::cpu);
    std::cout << "bench_spectral: spectral clustering against scikit-learn, same matrices, same run\n"
              << "machine: " << cpu_model() << ", backend " << backend->description() << "\n"
              << "kinds: planted (2 nets, k = U/128 subspaces of dim 4, 3/4 shared, " << samples << " samples, noise "
              << noise << "); relu (2 x " << relu_units << " units, " << relu_samples << " samples, ReLU(z W + noise), "
              << relu_factors << " shared factors, k = " << relu_k << "); real (" << digits
              << ", three MLPs, live units)\n"
              << "ours: convergent::spectral_clustering (|corr|, k given, defaults, seed " << seed << "), best of "
              << repeats << "; sklearn: SpectralClustering(affinity='precomputed', assign_labels='kmeans', "
              << "random_state=" << seed << "), best of " << sklearn_repeats << "; best sklearn ncut: every "
              << "assign_labels option x random_state " << seed << ".." << seed + sklearn_states - 1 << "\n"
              << "ncut = sum over clusters of cut(C, V\\C) / vol(C) on |corr| with unit diagonal, same code for all\n\n";
    std::cout << "| kind    |     U |  k | ours (s) | sklearn (s) | speedup | ncut ours | ncut sklearn | best sklearn ncut "
                 "(option, state) | ncut ours/best | ours kept          | moves | short |\n"
              << "|---------|------:|---:|---------:|------------:|--------:|----------:|-------------:|-----------------"
                 "-------------------:|---------------:|:-------------------|------:|------:|\n";

    // One case at a time, so that only one matrix is held.
    auto run_case = [&](const Case& c) {
      const std::int64_t units = c.corr.rows();
      const std::string corr_path = tmp + "/bench_spectral_corr.npy";
      const std::string labels_path = tmp + "/bench_spectral_labels.npy";
      convergent::write_npy(corr_path, c.corr.data(), {units, units});
      for (std::int64_t k : c.ks) {
        convergent::SpectralOptions options;
        options.k = k;
        options.seed = seed;
        if (restarts) options.restarts = *restarts;
        if (yu_shi_starts) options.yu_shi_starts = *yu_shi_starts;
        convergent::SpectralResult ours;
        double best = 1e300;
        for (int r = 0; r < repeats; ++r) {
          const auto start = std::chrono::steady_clock::now();
          ours = convergent::spectral_clustering(*backend, c.corr.view(), c.units_per_net, options);
          best = std::min(best, seconds_since(start));
        }
        if (ours_only) {
          std::printf("| %-7s | %5lld | %2lld | %8.3f | ncut %.6f | %s, %lld moves |\n", c.kind.c_str(),
                      static_cast<long long>(units), static_cast<long long>(k), best, ours.normalized_cut,
                      to_string(ours.assignment), static_cast<long long>(ours.refinement_moves));
          continue;
        }
        const Anchor anchor =
            run_sklearn(python, script, corr_path, labels_path, k, seed, sklearn_repeats, sklearn_states);
        const double ncut_ours = convergent::normalized_cut(c.corr.view(), ours.labels);
        const double ncut_default = convergent::normalized_cut(c.corr.view(), anchor.default_labels);
        // Only runs that found k clusters count: a labelling with fewer clusters has fewer terms in its cut
        // (discretize can leave a cluster empty), which makes it lower but not comparable.
        double ncut_best = 1e300;
        std::string which;
        int short_runs = 0;
        for (std::size_t run = 0; run < anchor.labels.size(); ++run) {
          if (std::set<std::int64_t>(anchor.labels[run].begin(), anchor.labels[run].end()).size() !=
              static_cast<std::size_t>(k)) {
            ++short_runs;
            continue;
          }
          const double cut = convergent::normalized_cut(c.corr.view(), anchor.labels[run]);
          if (cut < ncut_best) {
            ncut_best = cut;
            which = anchor.options[run / sklearn_states] + ", " + std::to_string(seed + run % sklearn_states);
          }
        }
        char line[512];
        std::snprintf(line, sizeof line,
                      "| %-7s | %5lld | %2lld | %8.3f | %11.3f | %6.1fx | %9.4f | %12.4f | %9.4f (%-14s) | %14.4f | "
                      "%-18s | %5lld | %5d |\n",
                      c.kind.c_str(), static_cast<long long>(units), static_cast<long long>(k), best, anchor.seconds,
                      anchor.seconds / best, ncut_ours, ncut_default, ncut_best, which.c_str(), ncut_ours / ncut_best,
                      to_string(ours.assignment), static_cast<long long>(ours.refinement_moves), short_runs);
        std::cout << line << std::flush;
      }
      std::remove(corr_path.c_str());
      std::remove(labels_path.c_str());
    };
    for (const std::string& kind : kinds) {
      if (kind == "planted") {
        for (std::int64_t units : sizes) {
          const std::int64_t k = std::max<std::int64_t>(2, units / 128);
          run_case({kind, planted_correlation(units, k, samples, noise, seed + static_cast<std::uint64_t>(units)),
                    {units / 2, units - units / 2}, {k}});
        }
      } else if (kind == "relu") {
        run_case({kind, relu_correlation(2 * relu_units, relu_samples, relu_factors, seed + 7),
                  {relu_units, relu_units}, {relu_k}});
      } else if (kind == "real") {
        run_case(real_case(*backend, digits, real_ks));
      } else {
        throw convergent::Error("unknown kind " + kind + ": expected planted, relu or real");
      }
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_spectral: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
