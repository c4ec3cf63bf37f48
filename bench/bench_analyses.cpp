// bench_analyses: the issue-11 analyses against their Python anchors on the same data, in the same run.
//   lasso    convergent::lasso_path (covariance form, 3 penalties, warm-started) against scikit-learn's
//            Lasso(precompute=Gram, warm_start=True) on the same z-scored samples, p = m = U units; the
//            objective of every fit is recomputed from the weights by one formula for both, and held
//            against scikit-learn run again at a tight tolerance.
//   indices  run_study + similarity_indices, one index at a time (linear and debiased CKA, CCA, SVCCA, PWCCA,
//            Procrustes), against numpy implementations of each from the raw samples' float64 covariance on
//            the same .npy files: seconds and values.
//   images   image-level CKA (--samples images): exact and minibatch estimators against numpy on the same
//            conv activations (inputs x positions x channels).
// Data: the ReLU factor model of bench_spectral: two nets of U units, X = ReLU(z W + noise) with shared
// Gaussian factors z (samples x factors) and per-net loadings W ~ N(0, 1 / factors).
//
//   bench_analyses [--parts lasso,indices,images] [--sizes 256,1024] [--alphas 0.1,0.01,0.001] [--lasso-samples 4096]
//                  [--index-samples 20000] [--factors 48] [--tol 1e-7] [--tight-tol 1e-12]
//                  [--tight-max-units 256] [--repeats 3] [--python python3] [--script bench/bench_analyses.py]
//                  [--tmp /tmp] [--image-channels 8,16] [--image-inputs 4096] [--image-positions 64]
//                  [--image-minibatch 256]
#include <cblas.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <fstream>
#include <iostream>
#include <map>
#include <sstream>
#include <string>
#include <vector>

#include "convergent/error.hpp"
#include "convergent/similarity_indices.hpp"
#include "convergent/sparse_prediction.hpp"
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

// Two nets of `units` each (samples x units, row-major) from one set of factors.
std::pair<std::vector<double>, std::vector<double>> relu_nets(std::int64_t samples, std::int64_t units,
                                                               std::int64_t factors, std::uint64_t seed) {
  Gaussian g(seed);
  std::vector<double> z(static_cast<std::size_t>(samples * factors));
  for (auto& v : z) v = g();
  auto net = [&] {
    std::vector<double> w(static_cast<std::size_t>(factors * units)), x(static_cast<std::size_t>(samples * units));
    const double scale = 1.0 / std::sqrt(static_cast<double>(factors));
    for (auto& v : w) v = scale * g();
    cblas_dgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, static_cast<int>(samples), static_cast<int>(units),
                static_cast<int>(factors), 1.0, z.data(), static_cast<int>(factors), w.data(), static_cast<int>(units),
                0.0, x.data(), static_cast<int>(units));
    for (auto& v : x) v = std::max(0.0, v + g());
    return x;
  };
  auto a = net();
  auto b = net();
  return {std::move(a), std::move(b)};
}

void z_score(std::vector<double>& x, std::int64_t samples, std::int64_t units) {
  for (std::int64_t u = 0; u < units; ++u) {
    double mean = 0, ss = 0;
    for (std::int64_t r = 0; r < samples; ++r) mean += x[r * units + u];
    mean /= static_cast<double>(samples);
    for (std::int64_t r = 0; r < samples; ++r) ss += (x[r * units + u] - mean) * (x[r * units + u] - mean);
    const double scale = 1.0 / std::sqrt(ss / static_cast<double>(samples));
    for (std::int64_t r = 0; r < samples; ++r) x[r * units + u] = (x[r * units + u] - mean) * scale;
  }
}

// Runs the anchor; returns its `key value` words.
std::map<std::string, std::string> run_python(const std::string& command) {
  FILE* pipe = popen(command.c_str(), "r");
  if (pipe == nullptr) throw convergent::Error("cannot run " + command);
  std::string output;
  char buffer[512];
  while (std::fgets(buffer, sizeof buffer, pipe) != nullptr) output += buffer;
  if (pclose(pipe) != 0) throw convergent::Error("the anchor failed: " + command + "\n" + output);
  std::map<std::string, std::string> words;
  std::istringstream in(output);
  std::string key, value;
  while (in >> key >> value) words[key] = value;
  return words;
}

std::string number(double v) {  // round-trips, unlike std::to_string (which prints 1e-7 as 0.000000)
  char text[32];
  std::snprintf(text, sizeof text, "%.17g", v);
  return text;
}

std::vector<std::string> split(const std::string& text) {
  std::vector<std::string> items;
  std::istringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) items.push_back(item);
  return items;
}

// 1/2 (1 - 2 w.c + w^T R w) + alpha ||w||_1 for a dense weight row: one formula for every fit compared.
double objective(const Matrix& gram, const double* c, const double* w, double alpha) {
  const std::int64_t p = gram.rows();
  std::vector<std::int64_t> nz;
  double wc = 0.0, l1 = 0.0, wrw = 0.0;
  for (std::int64_t j = 0; j < p; ++j)
    if (w[j] != 0.0) nz.push_back(j), wc += w[j] * c[j], l1 += std::abs(w[j]);
  for (const std::int64_t i : nz)
    for (const std::int64_t j : nz) wrw += w[i] * gram(i, j) * w[j];
  return 0.5 * (1.0 - 2.0 * wc + wrw) + alpha * l1;
}

struct Settings {
  std::vector<std::int64_t> sizes = {256, 1024};
  std::vector<double> alphas = {0.1, 0.01, 0.001};
  std::int64_t lasso_samples = 4096, index_samples = 20000, factors = 48, tight_max_units = 256;
  std::vector<std::int64_t> image_channels = {8, 16};
  std::int64_t image_inputs = 4096, image_positions = 64, image_minibatch = 256;
  double tol = 1e-7, tight_tol = 1e-12;
  int repeats = 3;
  std::string python = "python3", script = std::string(CONVERGENT_BENCH_DIR) + "/bench_analyses.py", tmp = "/tmp";
};

void bench_lasso(const Settings& s) {
  std::cout << "## lasso: " << s.lasso_samples << " samples, p = m = U, alphas";
  for (const double a : s.alphas) std::cout << " " << a;
  std::cout << "; ours: lasso_path (relative duality gap " << s.tol << "), best of " << s.repeats
            << "; sklearn: Lasso(precompute=Gram, warm_start=True, tol=" << s.tol
            << ") over the same path, once (its gap bound is absolute, so it never has to go further than ours)\n"
            << "objective: max over fits of |ours - sklearn(tol=" << s.tight_tol << ")| / sklearn, when U <= "
            << s.tight_max_units << "\n\n"
            << "| U | ours 2 thr s | ours 1 thr s | sklearn s | ratio (2 thr) | ratio (1 thr) | mean nnz per alpha | mean loss per alpha | max rel. objective diff | ours lower |\n"
            << "|---:|---:|---:|---:|---:|---:|---|---|---:|---:|\n";
  std::string alpha_list;
  for (const double a : s.alphas) alpha_list += (alpha_list.empty() ? "" : ",") + number(a);
  for (const std::int64_t units : s.sizes) {
    auto [za, zb] = relu_nets(s.lasso_samples, units, s.factors, 17 + static_cast<std::uint64_t>(units));
    z_score(za, s.lasso_samples, units);
    z_score(zb, s.lasso_samples, units);
    const double n = static_cast<double>(s.lasso_samples);
    Matrix gram(units, units), target(units, units);
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(units), static_cast<int>(units),
                static_cast<int>(s.lasso_samples), 1.0 / n, za.data(), static_cast<int>(units), za.data(),
                static_cast<int>(units), 0.0, gram.data(), static_cast<int>(units));
    cblas_dgemm(CblasRowMajor, CblasTrans, CblasNoTrans, static_cast<int>(units), static_cast<int>(units),
                static_cast<int>(s.lasso_samples), 1.0 / n, zb.data(), static_cast<int>(units), za.data(),
                static_cast<int>(units), 0.0, target.data(), static_cast<int>(units));
    fill_lower_triangle(gram);
    for (std::int64_t j = 0; j < units; ++j) gram(j, j) = 1.0;  // z-scored: exactly 1 but for rounding
    const std::string za_path = s.tmp + "/bench_analyses_za.npy", zb_path = s.tmp + "/bench_analyses_zb.npy";
    const std::string prefix = s.tmp + "/bench_analyses_coefs";
    convergent::write_npy(za_path, za.data(), {s.lasso_samples, units});
    convergent::write_npy(zb_path, zb.data(), {s.lasso_samples, units});

    convergent::LassoOptions options;
    options.alphas = s.alphas;
    options.tolerance = s.tol;
    std::vector<std::vector<convergent::LassoFit>> fits;
    double best[2] = {1e300, 1e300};
    for (int threads : {0, 1})
      for (int r = 0; r < s.repeats; ++r) {
        options.threads = threads;
        const auto start = std::chrono::steady_clock::now();
        fits = convergent::lasso_path(gram.view(), target.view(), options);
        best[threads] = std::min(best[threads], seconds_since(start));
      }
    const bool tight = units <= s.tight_max_units;
    const auto words = run_python(shell_quote(s.python) + " " + shell_quote(s.script) + " lasso " + shell_quote(za_path) +
                                  " " + shell_quote(zb_path) + " " + alpha_list + " " + number(s.tol) + " " +
                                  number(tight ? s.tight_tol : 0.0) + " " + shell_quote(prefix));
    const double sklearn = std::stod(words.at("sklearn_seconds"));
    std::string nnz, loss;
    double worst = 0.0;
    std::int64_t lower = 0, compared = 0;
    std::vector<double> dense(static_cast<std::size_t>(units));
    const convergent::MappedNpy reference(prefix + (tight ? "_tight.npy" : "_timed.npy"));
    const double* coefs = reinterpret_cast<const double*>(reference.data());
    for (std::size_t k = 0; k < s.alphas.size(); ++k) {
      double mean_nnz = 0.0, mean_loss = 0.0;
      for (std::int64_t b = 0; b < units; ++b) {
        const convergent::LassoFit& fit = fits[k][static_cast<std::size_t>(b)];
        mean_nnz += static_cast<double>(fit.predictors.size()) / static_cast<double>(units);
        mean_loss += fit.loss / static_cast<double>(units);
        std::fill(dense.begin(), dense.end(), 0.0);
        for (std::size_t i = 0; i < fit.predictors.size(); ++i) dense[static_cast<std::size_t>(fit.predictors[i])] = fit.weights[i];
        const double ours = objective(gram, target.data() + b * units, dense.data(), s.alphas[k]);
        const double theirs = objective(gram, target.data() + b * units, coefs + (k * units + b) * units, s.alphas[k]);
        worst = std::max(worst, std::abs(ours - theirs) / theirs);
        lower += ours < theirs;
        ++compared;
      }
      char text[64];
      std::snprintf(text, sizeof text, "%s%.1f", nnz.empty() ? "" : " / ", mean_nnz);
      nnz += text;
      std::snprintf(text, sizeof text, "%s%.3f", loss.empty() ? "" : " / ", mean_loss);
      loss += text;
    }
    char line[512];
    std::snprintf(line, sizeof line, "| %lld | %.3f | %.3f | %.3f | %.1fx | %.1fx | %s | %s | %.1e%s | %lld of %lld |\n",
                  static_cast<long long>(units), best[0], best[1], sklearn, sklearn / best[0], sklearn / best[1],
                  nnz.c_str(), loss.c_str(), worst, tight ? "" : " (vs timed sklearn)", static_cast<long long>(lower),
                  static_cast<long long>(compared));
    std::cout << line << std::flush;
    for (const std::string& f : {za_path, zb_path, prefix + "_timed.npy", prefix + "_tight.npy"}) std::remove(f.c_str());
  }
  std::cout << "\n";
}

// One line of the indices table: ours against numpy, seconds and values.
void index_row(std::int64_t units, const char* name, double ours_s, double numpy_s, double ours, double numpy) {
  char line[512];
  std::snprintf(line, sizeof line, "| %lld | %s | %.3f | %.3f | %.1fx | %.9f | %.9f | %.1e |\n",
                static_cast<long long>(units), name, ours_s, numpy_s, numpy_s / ours_s, ours, numpy,
                std::abs(ours - numpy));
  std::cout << line << std::flush;
}

std::string anchor(const Settings& s, const std::string& mode, const std::string& a_path, const std::string& b_path,
                   const std::string& arguments) {
  return shell_quote(s.python) + " " + shell_quote(s.script) + " " + mode + " " + shell_quote(a_path) + " " +
         shell_quote(b_path) + " " + arguments + " " + std::to_string(s.repeats);
}

void bench_indices(const Settings& s) {
  std::cout << "## indices: " << s.index_samples << " samples, two nets of U units (float32 .npy), best of "
            << s.repeats << " each; ours: run_study (the pass, reading the files) and similarity_indices with one index "
            << "asked for at a time (linear CKA brings the debiased one); numpy (bench_analyses.py): float64 "
            << "centring and covariance of [A | B] (files loaded, untimed), then each index from it alone "
            << "(ridge 1e-6, SVCCA 0.99 of the variance)\n\n"
            << "| U | step | ours s | numpy s | numpy / ours | ours | numpy | abs. diff |\n"
            << "|---:|---|---:|---:|---:|---:|---:|---:|\n";
  auto backend = convergent::make_backend(convergent::BackendChoice::cpu);
  for (const std::int64_t units : s.sizes) {
    const auto [a, b] = relu_nets(s.index_samples, units, s.factors, 29 + static_cast<std::uint64_t>(units));
    const std::string a_path = s.tmp + "/bench_analyses_a.npy", b_path = s.tmp + "/bench_analyses_b.npy";
    convergent::write_npy(a_path, std::vector<float>(a.begin(), a.end()).data(), {s.index_samples, units});
    convergent::write_npy(b_path, std::vector<float>(b.begin(), b.end()).data(), {s.index_samples, units});
    double pass = 1e300;
    convergent::Study study;
    for (int r = 0; r < s.repeats; ++r) {
      const auto start = std::chrono::steady_clock::now();
      study = convergent::run_study(*backend, {{"a", a_path}, {"b", b_path}}, {});
      pass = std::min(pass, seconds_since(start));
    }
    // Each index alone, best of the repeats.
    enum Index { cka, cca, svcca, pwcca, procrustes };
    auto alone = [&](Index index, double& seconds) {
      convergent::SimilarityOptions o;
      o.linear_cka = index == cka;
      o.cca = index == cca;
      o.svcca = index == svcca;
      o.pwcca = index == pwcca;
      o.procrustes = index == procrustes;
      convergent::PairSimilarity result;
      seconds = 1e300;
      for (int r = 0; r < s.repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        result = convergent::similarity_indices(*backend, study, o)[0];
        seconds = std::min(seconds, seconds_since(start));
      }
      return result;
    };
    double t_cka, t_cca, t_svcca, t_pwcca, t_procrustes;
    const convergent::PairSimilarity r_cka = alone(cka, t_cka), r_cca = alone(cca, t_cca),
                                     r_svcca = alone(svcca, t_svcca), r_pwcca = alone(pwcca, t_pwcca),
                                     r_procrustes = alone(procrustes, t_procrustes);
    const auto words = run_python(anchor(s, "indices", a_path, b_path, "1e-6 0.99"));
    auto numpy = [&](const std::string& key) { return std::stod(words.at(key)); };
    index_row(units, "pass / covariance", pass, numpy("time_covariance"), 0.0, 0.0);
    index_row(units, "linear CKA", t_cka, numpy("time_linear_cka"), *r_cka.linear_cka, numpy("value_linear_cka"));
    index_row(units, "debiased linear CKA", t_cka, numpy("time_debiased_cka"), *r_cka.debiased_linear_cka,
              numpy("value_debiased_cka"));
    index_row(units, "mean CCA", t_cca, numpy("time_cca"), r_cca.cca->mean, numpy("value_cca"));
    index_row(units, "SVCCA", t_svcca, numpy("time_svcca"), r_svcca.svcca->cca.mean, numpy("value_svcca"));
    index_row(units, "PWCCA", t_pwcca, numpy("time_pwcca"), r_pwcca.pwcca->value, numpy("value_pwcca"));
    index_row(units, "Procrustes nu", t_procrustes, numpy("time_procrustes"), r_procrustes.procrustes->similarity,
              numpy("value_procrustes"));
    std::remove(a_path.c_str());
    std::remove(b_path.c_str());
  }
  std::cout << "\n";
}

// Image-level CKA (--samples images): the same nets as conv activations (inputs x positions x channels,
// channels-last), every input one sample of its positions x channels features.
void bench_images(const Settings& s) {
  std::cout << "## images: " << s.image_inputs << " inputs x " << s.image_positions
            << " positions, two nets of U channels (float32 .npy, channels-last), best of " << s.repeats
            << "; ours: run_study --samples images (the pass over positions and images, reading the files) + "
            << "image_cka_indices, exact (features <= " << convergent::StudyOptions{}.image_exact_features
            << ") and minibatch (forced, minibatches of " << s.image_minibatch
            << " inputs); numpy: flattened features, exact from the float64 covariance and the feature-space "
            << "unbiased HSIC, minibatch from each minibatch's Gram matrices\n\n"
            << "| U | features per net | step | ours s | numpy s | numpy / ours | ours | numpy | abs. diff |\n"
            << "|---:|---:|---|---:|---:|---:|---:|---:|---:|\n";
  auto backend = convergent::make_backend(convergent::BackendChoice::cpu);
  for (const std::int64_t units : s.image_channels) {
    const std::int64_t rows = s.image_inputs * s.image_positions, features = units * s.image_positions;
    const auto [a, b] = relu_nets(rows, units, s.factors, 31 + static_cast<std::uint64_t>(units));
    const std::string a_path = s.tmp + "/bench_analyses_image_a.npy", b_path = s.tmp + "/bench_analyses_image_b.npy";
    convergent::write_npy(a_path, std::vector<float>(a.begin(), a.end()).data(), {s.image_inputs, s.image_positions, units});
    convergent::write_npy(b_path, std::vector<float>(b.begin(), b.end()).data(), {s.image_inputs, s.image_positions, units});
    auto ours = [&](bool exact, double& seconds) {
      convergent::StudyOptions o;
      o.layout = convergent::Layout::channels_last;
      o.samples = convergent::Samples::images;
      o.image_minibatch = s.image_minibatch;
      if (!exact) o.image_exact_features = 0;
      convergent::PairSimilarity result;
      seconds = 1e300;
      for (int r = 0; r < s.repeats; ++r) {
        const auto start = std::chrono::steady_clock::now();
        const convergent::Study study = convergent::run_study(*backend, {{"a", a_path}, {"b", b_path}}, o);
        result = convergent::image_cka_indices(*backend, *study.image_cka)[0];
        seconds = std::min(seconds, seconds_since(start));
      }
      return result;
    };
    double t_exact, t_minibatch;
    const convergent::PairSimilarity exact = ours(true, t_exact), minibatch = ours(false, t_minibatch);
    const auto words = run_python(anchor(s, "images", a_path, b_path, std::to_string(s.image_minibatch)));
    auto numpy = [&](const std::string& key) { return std::stod(words.at(key)); };
    auto row = [&](const char* name, double ours_s, double numpy_s, double v_ours, double v_numpy) {
      char line[512];
      std::snprintf(line, sizeof line, "| %lld | %lld | %s | %.3f | %.3f | %.1fx | %.9f | %.9f | %.1e |\n",
                    static_cast<long long>(units), static_cast<long long>(features), name, ours_s, numpy_s,
                    numpy_s / ours_s, v_ours, v_numpy, std::abs(v_ours - v_numpy));
      std::cout << line << std::flush;
    };
    row("exact linear CKA", t_exact, numpy("time_exact"), *exact.linear_cka, numpy("value_linear_cka"));
    row("exact debiased CKA", t_exact, numpy("time_exact"), *exact.debiased_linear_cka, numpy("value_debiased_cka"));
    row("minibatch debiased CKA", t_minibatch, numpy("time_minibatch"), *minibatch.debiased_linear_cka,
        numpy("value_minibatch_cka"));
    std::remove(a_path.c_str());
    std::remove(b_path.c_str());
  }
  std::cout << "\n";
}

}  // namespace

int main(int argc, char** argv) {
  Settings s;
  std::vector<std::string> parts = {"lasso", "indices", "images"};
  try {
    for (int i = 1; i < argc; ++i) {
      const std::string arg = argv[i];
      auto value = [&]() -> std::string {
        if (i + 1 >= argc) throw convergent::Error(arg + " needs a value");
        return argv[++i];
      };
      if (arg == "--parts") parts = split(value());
      else if (arg == "--sizes") { s.sizes.clear(); for (const auto& v : split(value())) s.sizes.push_back(std::stoll(v)); }
      else if (arg == "--alphas") { s.alphas.clear(); for (const auto& v : split(value())) s.alphas.push_back(std::stod(v)); }
      else if (arg == "--lasso-samples") s.lasso_samples = std::stoll(value());
      else if (arg == "--index-samples") s.index_samples = std::stoll(value());
      else if (arg == "--image-channels") { s.image_channels.clear(); for (const auto& v : split(value())) s.image_channels.push_back(std::stoll(v)); }
      else if (arg == "--image-inputs") s.image_inputs = std::stoll(value());
      else if (arg == "--image-positions") s.image_positions = std::stoll(value());
      else if (arg == "--image-minibatch") s.image_minibatch = std::stoll(value());
      else if (arg == "--factors") s.factors = std::stoll(value());
      else if (arg == "--tol") s.tol = std::stod(value());
      else if (arg == "--tight-tol") s.tight_tol = std::stod(value());
      else if (arg == "--tight-max-units") s.tight_max_units = std::stoll(value());
      else if (arg == "--repeats") s.repeats = std::stoi(value());
      else if (arg == "--python") s.python = value();
      else if (arg == "--script") s.script = value();
      else if (arg == "--tmp") s.tmp = value();
      else throw convergent::Error("unknown argument " + arg);
    }
    std::cout << "bench_analyses: issue-11 analyses against scikit-learn and numpy, same data, same run\n"
              << "machine: " << cpu_model() << ", " << convergent::make_backend(convergent::BackendChoice::cpu)->description()
              << "\ndata: two nets, X = ReLU(z W + noise), " << s.factors << " shared factors\n\n";
    for (const std::string& part : parts) {
      if (part == "lasso") bench_lasso(s);
      else if (part == "indices") bench_indices(s);
      else if (part == "images") bench_images(s);
      else throw convergent::Error("unknown part " + part + ": expected lasso, indices or images");
    }
  } catch (const std::exception& e) {
    std::cerr << "bench_analyses: " << e.what() << "\n";
    return 1;
  }
  return 0;
}
