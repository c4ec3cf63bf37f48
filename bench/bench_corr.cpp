// bench_corr: streams a generated (samples x units) float32 workload from an .npy file through a backend
// and prints samples/s and GFLOP/s; on the CPU it also runs numpy.corrcoef on the same file in the same
// run (bench/corrcoef_numpy.py) and prints the speed ratio, both peak memories and the largest
// difference between the two correlation matrices, and the CPU's ceiling from the same rounds: the time of
// the float32 products alone and the FMA peak, with the largest ratio over numpy each allows. On CUDA it
// prints, for each unit count, the bare cuBLAS ceiling and the host-to-device bandwidth measured in the
// same run, and times torch.corrcoef on the same GPU and file (bench/corrcoef_torch.py), the anchor a user
// would pick instead, as a Markdown table that can go into bench/RESULTS.md as it is.
#include <cblas.h>
#include <unistd.h>

#if defined(__x86_64__)
#include <immintrin.h>
#endif

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <random>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "convergent/convergent.hpp"
#include "backend/cuda_backend.hpp"
#include "bench_util.hpp"
#include "io/npy.hpp"
#include "cpu/parallel.hpp"
#include "cpu/reference_backend.hpp"
#include "io/resident_memory.hpp"

namespace {

using namespace convergent;

struct Config {
  std::string backend = "cpu";
  std::int64_t samples = 100000;
  std::vector<std::int64_t> sample_counts = {100000};  // --samples N[,N...]: several with --generated only
  bool generated = false;                                // batches generated in memory, no file
  double max_peak_growth_mib = NAN;                      // --generated: fail above this growth of the peak
  bool samples_given = false;  // --backend cuda sizes the workload itself unless told
  std::int64_t file_mib = 0;   // > 0: samples chosen per unit count so that the file has this size
  std::vector<std::int64_t> units = {1024};
  bool units_given = false;
  std::vector<std::int64_t> batch_rows = {0};  // 0: the automatic batch (automatic_batch_rows)
  int threads = 0;
  std::uint64_t seed = 1;
  std::string precision = "fp32";
  bool numpy = true;
  std::string python = "python3";
  std::string work_dir = "";
  int repeat = 3;  // best of this many timed passes, for us and for numpy alike: the machine is shared
};

[[noreturn]] void usage() {
  std::fprintf(stderr,
               "usage: bench_corr [--backend cpu|cuda] [--samples N[,N...]] [--units U[,U...]] [--batch-rows B[,B...]]\n"
               "                  [--threads T] [--seed S] [--precision fp32|tf32|bf16] [--no-numpy]\n"
               "                  [--python PYTHON] [--work-dir DIR] [--repeat R] [--file-mib M]\n"
               "                  [--generated [--max-peak-growth-mib M]]\n"
               "  --file-mib M: for each unit count, as many samples as make an M MiB float32 file\n"
               "  --batch-rows: 0 is the automatic batch; several (CPU): a table of time and peak memory per\n"
               "    batch for each unit count, rounds alternating over the batches (no numpy)\n"
               "  --no-numpy also leaves out torch.corrcoef with --backend cuda\n"
               "  --generated: no file; batches of ReLU units are generated in memory and streamed through the\n"
               "    accumulator align uses, for each --samples N[,N...]; prints time and peak memory of each.\n"
               "    --max-peak-growth-mib M: exit 1 when the last count's peak exceeds the first's by more\n");
  std::exit(2);
}

Config parse(int argc, char** argv) {
  Config c;
  for (int i = 1; i < argc; ++i) {
    const std::string a = argv[i];
    auto value = [&]() -> std::string {
      if (i + 1 >= argc) usage();
      return argv[++i];
    };
    auto list = [&]() {
      std::vector<std::int64_t> items;
      std::stringstream text(value());
      // Through double, so that 1e8 reads as it is written.
      for (std::string item; std::getline(text, item, ',');) items.push_back(static_cast<std::int64_t>(std::stod(item)));
      return items;
    };
    if (a == "--backend") c.backend = value();
    else if (a == "--samples") {
      c.sample_counts = list();
      c.samples = c.sample_counts.front();
      c.samples_given = true;
    }
    else if (a == "--generated") c.generated = true;
    else if (a == "--max-peak-growth-mib") c.max_peak_growth_mib = std::stod(value());
    else if (a == "--units") {
      c.units = list();
      c.units_given = true;
    } else if (a == "--batch-rows") c.batch_rows = list();
    else if (a == "--threads") c.threads = std::stoi(value());
    else if (a == "--seed") c.seed = std::stoull(value());
    else if (a == "--precision") c.precision = value();
    else if (a == "--no-numpy") c.numpy = false;
    else if (a == "--python") c.python = value();
    else if (a == "--work-dir") c.work_dir = value();
    else if (a == "--repeat") c.repeat = std::max(1, std::stoi(value()));
    else usage();
  }
  return c;
}

double now() { return std::chrono::duration<double>(std::chrono::steady_clock::now().time_since_epoch()).count(); }

// ReLU units driven by 16 shared factors with per-unit offsets: correlated, with means far from zero
// (the case where a naive E[xy] - E[x]E[y] loses digits). Written batch by batch: O(batch) memory.
void generate(const std::string& path, std::int64_t samples, std::int64_t units, std::uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::vector<float> offset(static_cast<std::size_t>(units)), weight(static_cast<std::size_t>(units));
  std::uniform_real_distribution<float> uniform(0.0f, 1.0f);
  for (std::int64_t u = 0; u < units; ++u) {
    offset[u] = 4.0f * uniform(rng) - 1.0f;
    weight[u] = 0.5f + uniform(rng);
  }
  std::ofstream out(path, std::ios::binary | std::ios::trunc);
  const std::string header = npy_header_bytes(DType::float32, {samples, units});
  out.write(header.data(), static_cast<std::streamsize>(header.size()));
  const std::int64_t chunk = 4096;
  std::vector<float> rows(static_cast<std::size_t>(chunk * units));
  std::normal_distribution<float> normal;
  float factors[16];
  for (std::int64_t r0 = 0; r0 < samples; r0 += chunk) {
    const std::int64_t n = std::min(chunk, samples - r0);
    for (std::int64_t r = 0; r < n; ++r) {
      for (float& f : factors) f = normal(rng);
      float* row = rows.data() + r * units;
      for (std::int64_t u = 0; u < units; ++u)
        row[u] = std::max(0.0f, offset[u] + weight[u] * factors[u % 16] + 0.7f * normal(rng));
    }
    out.write(reinterpret_cast<const char*>(rows.data()), static_cast<std::streamsize>(n * units * sizeof(float)));
  }
  if (!out) throw Error(path + ": cannot write the workload");
}

struct StreamResult {
  double seconds = 0.0;
  double peak_mib = 0.0;  // resident memory added by the streaming pass
  Matrix corr;
};

// Rows per batch: the one asked for, or the automatic one `convergent align` would take.
std::int64_t batch_for(std::int64_t asked, std::int64_t units) { return asked > 0 ? asked : automatic_batch_rows(units); }

StreamResult stream(Backend& backend, const std::string& path, const Config& c, std::int64_t asked_batch) {
  const MappedNpy npy(path);
  const std::int64_t samples = npy.header().shape[0], units = npy.header().shape[1];
  const std::int64_t batch = batch_for(asked_batch, units);
  StreamResult result;
  detail::reset_peak_resident();
  const double rss_before = detail::status_mib("VmRSS");
  const double start = now();
  AccumulateOptions options;
  options.max_batch_rows = batch;
  options.precision = parse_precision(c.precision);
  auto accumulator = backend.accumulator({units}, options);
  const std::int64_t row_bytes = units * static_cast<std::int64_t>(sizeof(float));
  std::int64_t previous = -1;
  for (std::int64_t r = 0; r < samples; r += batch) {
    const std::int64_t n = std::min(batch, samples - r);
    accumulator->add({row_major_block(npy.data() + r * row_bytes, DType::float32, n, units)});
    if (previous >= 0) npy.release(previous * row_bytes, r * row_bytes);
    previous = r;
  }
  const Moments moments = accumulator->moments();
  npy.release(previous * row_bytes, samples * row_bytes);
  result.corr = backend.correlation(moments, dead_units(moments, 1e-6));
  result.seconds = now() - start;
  result.peak_mib = detail::status_mib("VmHWM") - rss_before;
  return result;
}

// The CPU's float32 ceiling, measured in the same round as the two passes so that a slow spell of the
// shared machine lowers it too.
struct CpuCeiling {
  double fma_gflops = NAN;        // independent float32 FMAs on every thread: the arithmetic peak
  double product_seconds = NAN;   // the workload's products alone: OpenBLAS ssyrk on resident data
};

#if defined(__x86_64__)
// 10 independent 8-wide FMA chains: enough to keep both FMA pipes of current x86 cores busy.
__attribute__((target("avx2,fma"))) float fma_chains(std::int64_t iterations) {
  __m256 acc[10];
  const __m256 scale = _mm256_set1_ps(0.999999f), add = _mm256_set1_ps(1e-6f);
#pragma GCC unroll 10
  for (int k = 0; k < 10; ++k) acc[k] = _mm256_set1_ps(static_cast<float>(k));
  for (std::int64_t i = 0; i < iterations; ++i) {
#pragma GCC unroll 10
    for (int k = 0; k < 10; ++k) acc[k] = _mm256_fmadd_ps(acc[k], scale, add);
  }
  float sum = 0.0f;
  for (const __m256& a : acc) sum += _mm256_cvtss_f32(a);
  return sum;
}
#endif

double fma_peak_gflops(int threads) {
#if defined(__x86_64__)
  if (!__builtin_cpu_supports("avx2") || !__builtin_cpu_supports("fma")) return NAN;
  const std::int64_t iterations = 20'000'000;  // about 0.2 s a thread
  std::vector<float> sinks(static_cast<std::size_t>(threads));
  const double start = now();
  std::vector<std::thread> pool;
  for (int t = 0; t < threads; ++t) pool.emplace_back([&, t] { sinks[t] = fma_chains(iterations); });
  for (auto& thread : pool) thread.join();
  const double seconds = now() - start;
  volatile float sink = std::accumulate(sinks.begin(), sinks.end(), 0.0f);  // the chains' results are used
  (void)sink;
  return 2.0 * 8 * 10 * static_cast<double>(iterations) * threads / seconds / 1e9;
#else
  (void)threads;
  return NAN;
#endif
}

// The float32 products of a samples x units pass as the CPU backend forms them (one SYRK per
// cpu_product_rows rows), on one resident chunk of random rows: the time no pass built on them can beat.
double product_seconds(std::int64_t samples, std::int64_t units) {
  const std::int64_t rows = detail::cpu_product_rows;
  std::vector<float> chunk(static_cast<std::size_t>(rows * units)), product(static_cast<std::size_t>(units * units));
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> uniform(-1.0f, 1.0f);
  for (float& v : chunk) v = uniform(rng);
  const double start = now();
  const int u = static_cast<int>(units);
  for (std::int64_t r = 0; r < samples; r += rows)
    cblas_ssyrk(CblasRowMajor, CblasUpper, CblasTrans, u, static_cast<int>(std::min(rows, samples - r)), 1.0f,
                chunk.data(), u, 0.0f, product.data(), u);
  return now() - start;
}

std::string run_capture(const std::string& command) {
  std::string output;
  FILE* pipe = ::popen(command.c_str(), "r");
  if (!pipe) return output;
  char buffer[4096];
  std::size_t got;
  while ((got = std::fread(buffer, 1, sizeof buffer, pipe)) > 0) output.append(buffer, got);
  if (::pclose(pipe) != 0) output += " (exit status non-zero)";
  while (!output.empty() && (output.back() == '\n' || output.back() == ' ')) output.pop_back();
  return output;
}

// "key=value" lines printed by corrcoef_numpy.py.
double field(const std::string& text, const std::string& key) {
  const auto at = text.find(key + "=");
  if (at == std::string::npos) return NAN;
  return std::stod(text.substr(at + key.size() + 1));
}

// Rounds alternate between our pass and numpy's (a fresh process each), and each side keeps its best
// round, so that a slow spell of the shared machine does not land on one side only.
void bench_cpu(const Config& c, const std::string& dir) {
  auto backend = make_backend(BackendChoice::cpu, {c.threads, 0});
  const std::string script = std::string(CONVERGENT_SOURCE_DIR) + "/bench/corrcoef_numpy.py";
  for (const std::int64_t units : c.units) {
    const std::string data = dir + "/bench_corr_data.npy", ours = dir + "/bench_corr_ours.npy";
    generate(data, c.samples, units, c.seed);
    std::printf("workload: %lld samples x %lld units float32 (seed %llu), %s, %s\n",
                static_cast<long long>(c.samples), static_cast<long long>(units),
                static_cast<unsigned long long>(c.seed), backend->description().c_str(), bench::cpu_model().c_str());
    StreamResult best;
    double numpy_seconds = INFINITY, numpy_peak = NAN, diff = NAN;
    std::string numpy_note;
    CpuCeiling ceiling;
    for (int round = 0; round < c.repeat; ++round) {
      StreamResult r = stream(*backend, data, c, c.batch_rows.front());
      if (round == 0 || r.seconds < best.seconds) best = std::move(r);
      ceiling.fma_gflops = std::fmax(ceiling.fma_gflops, fma_peak_gflops(thread_count(c.threads)));
      ceiling.product_seconds = std::fmin(ceiling.product_seconds, product_seconds(c.samples, units));
      if (!c.numpy) continue;
      if (round == 0) write_npy(ours, best.corr.data(), {units, units});
      const std::string out = run_capture(c.python + " " + script + " " + data + " " + ours + " 2>&1");
      if (std::isnan(field(out, "seconds"))) {
        numpy_note = out;
        break;
      }
      numpy_seconds = std::min(numpy_seconds, field(out, "seconds"));
      numpy_peak = field(out, "peak_mib");
      diff = field(out, "max_abs_diff");
      numpy_note = out.substr(out.find("numpy="));
    }
    const double flops = static_cast<double>(c.samples) * units * (units + 1);
    std::printf("convergent (best of %d): %.3f s  %.3g samples/s  %.1f GFLOP/s  peak +%.0f MiB\n", c.repeat,
                best.seconds, c.samples / best.seconds, flops / best.seconds / 1e9, best.peak_mib);
    if (!c.numpy) {
    } else if (std::isinf(numpy_seconds)) {
      std::printf("numpy: not measured (%s)\n", numpy_note.c_str());
    } else {
      std::printf("numpy.corrcoef (best of %d): %.3f s  %.3g samples/s  peak +%.0f MiB  (%s)\n", c.repeat,
                  numpy_seconds, c.samples / numpy_seconds, numpy_peak, numpy_note.c_str());
      std::printf("ratio: %.2fx faster, %.1fx less peak memory; max |corr - numpy| = %.2e (target <= 1e-6)\n",
                  numpy_seconds / best.seconds, numpy_peak / best.peak_mib, diff);
    }
    // What bounds the ratio on this machine: the products alone, as OpenBLAS forms them and at the
    // arithmetic peak, with nothing else of the pass done.
    std::printf("ceiling: products alone %.3f s (%.1f GFLOP/s", ceiling.product_seconds,
                flops / ceiling.product_seconds / 1e9);
    if (!std::isnan(ceiling.fma_gflops))
      std::printf(", %.0f%% of the float32 FMA peak %.1f GFLOP/s on %d threads; at that peak %.3f s",
                  100.0 * flops / ceiling.product_seconds / 1e9 / ceiling.fma_gflops, ceiling.fma_gflops,
                  thread_count(c.threads), flops / ceiling.fma_gflops / 1e9);
    std::printf(")\n");
    if (std::isfinite(numpy_seconds)) {
      std::printf("ceiling ratio: at most %.2fx numpy with these products", numpy_seconds / ceiling.product_seconds);
      if (!std::isnan(ceiling.fma_gflops))
        std::printf(", %.2fx at the FMA peak", numpy_seconds / (flops / ceiling.fma_gflops / 1e9));
      std::printf(" (our pass: %.2fx)\n", numpy_seconds / best.seconds);
    }
    std::remove(ours.c_str());
    std::remove(data.c_str());
  }
}

// For each unit count, every batch of --batch-rows in turn, round by round (so that a slow spell of the shared
// machine does not land on one batch only): the best time of each and the largest peak it reached, as a
// Markdown table. The anchor is the fastest batch of the same unit count and run.
void bench_batches(const Config& c, const std::string& dir) {
  auto backend = make_backend(BackendChoice::cpu, {c.threads, 0});
  std::printf("backend: %s, %s; best of %d rounds, rounds alternate over the batches\n",
              backend->description().c_str(), bench::cpu_model().c_str(), c.repeat);
  std::printf("\n| U | samples | batch rows | batch MiB | s | samples/s | GFLOP/s | time / fastest | peak MiB |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  for (const std::int64_t units : c.units) {
    const std::string data = dir + "/bench_corr_data.npy";
    generate(data, c.samples, units, c.seed);
    stream(*backend, data, c, c.batch_rows.front());  // warm-up: the file into the page cache
    std::vector<StreamResult> best(c.batch_rows.size());
    for (int round = 0; round < c.repeat; ++round)
      for (std::size_t b = 0; b < c.batch_rows.size(); ++b) {
        StreamResult r = stream(*backend, data, c, c.batch_rows[b]);
        const double peak = std::fmax(r.peak_mib, best[b].peak_mib);
        if (round == 0 || r.seconds < best[b].seconds) best[b] = std::move(r);
        best[b].peak_mib = peak;
      }
    double fastest = INFINITY;
    for (const StreamResult& r : best) fastest = std::fmin(fastest, r.seconds);
    const double flops = static_cast<double>(c.samples) * units * (units + 1);
    for (std::size_t b = 0; b < c.batch_rows.size(); ++b) {
      const std::int64_t rows = batch_for(c.batch_rows[b], units);
      std::printf("| %lld | %lld | %lld%s | %.1f | %.3f | %.3g | %.1f | %.2f | %.0f |\n", static_cast<long long>(units),
                  static_cast<long long>(c.samples), static_cast<long long>(rows), c.batch_rows[b] > 0 ? "" : " (auto)",
                  4.0 * rows * units / (1 << 20), best[b].seconds, c.samples / best[b].seconds,
                  flops / best[b].seconds / 1e9, best[b].seconds / fastest, best[b].peak_mib);
    }
    std::fflush(stdout);
    std::remove(data.c_str());
  }
  std::printf("\npeak MiB: resident memory added by the pass (VmHWM after clear_refs, the mapped input included), the\n"
              "largest of the rounds; s: the best round.\n");
}

// Activations made batch by batch in memory, never stored: two nets of units / 2 ReLU units each, driven
// by 16 shared factors per sample with per-unit offsets and weights (as generate() writes them) plus noise
// read from a fixed table at a random start per row, cheap enough that the products, not the generator,
// set the pace. Row r depends only on (seed, r), so any batch size and thread count give the same data.
class GeneratedNets {
 public:
  GeneratedNets(std::int64_t units, std::uint64_t seed, std::int64_t max_rows, int threads)
      : units_{units / 2, units - units / 2}, seed_(seed), threads_(threads) {
    bench::Gaussian gaussian(seed);
    for (std::int64_t u = 0; u < units; ++u) {
      offset_.push_back(static_cast<float>(4.0 * (0.5 + 0.5 * std::erf(gaussian())) - 1.0));
      weight_.push_back(static_cast<float>(0.5 + std::fabs(gaussian())));
    }
    noise_.resize(std::size_t{1} << 20);
    for (float& v : noise_) v = static_cast<float>(0.7 * gaussian());
    for (const std::int64_t n : units_) batches_.emplace_back(static_cast<std::size_t>(max_rows * n));
  }

  // Rows [first, first + rows) of every net, one row-major block per net, valid until the next call.
  std::vector<ActivationBlock> batch(std::int64_t first, std::int64_t rows) {
    const std::int64_t units = units_[0] + units_[1];
    parallel_for(rows, threads_, [&](std::int64_t r) {
      detail::SplitMix64 bits(seed_ ^ (static_cast<std::uint64_t>(first + r) * 0x9E3779B97F4A7C15ULL));
      float factors[16];
      for (float& f : factors) f = static_cast<float>(static_cast<double>(bits.next() >> 11) * 0x1.0p-52 - 1.0);
      const float* noise = noise_.data() + bits.below(static_cast<std::int64_t>(noise_.size()) - units);
      for (std::int64_t net = 0, u0 = 0; net < 2; u0 += units_[net], ++net)
        generate_row(offset_.data() + u0, weight_.data() + u0, noise + u0, factors, u0, units_[net],
                     batches_[net].data() + r * units_[net]);
    });
    return {row_major_block(batches_[0].data(), DType::float32, rows, units_[0]),
            row_major_block(batches_[1].data(), DType::float32, rows, units_[1])};
  }
  const std::vector<std::int64_t>& units() const { return units_; }

 private:
  // One net's part of a row (units u0 ...); plain arrays that do not overlap, so the loop vectorises.
  static void generate_row(const float* __restrict__ offset, const float* __restrict__ weight,
                           const float* __restrict__ noise, const float* __restrict__ factors, std::int64_t u0,
                           std::int64_t n, float* __restrict__ row) {
    float repeated[32];  // unit u takes factor u & 15: from u0 on, factor (u0 + k) & 15 is repeated[(u0 & 15) + k]
    for (int k = 0; k < 32; ++k) repeated[k] = factors[k & 15];
    const float* f = repeated + (u0 & 15);
    std::int64_t j = 0;
    for (; j + 16 <= n; j += 16)
      for (int k = 0; k < 16; ++k) {
        const float x = offset[j + k] + weight[j + k] * f[k] + noise[j + k];
        row[j + k] = x > 0.0f ? x : 0.0f;
      }
    for (; j < n; ++j) {
      const float x = offset[j] + weight[j] * f[j & 15] + noise[j];
      row[j] = x > 0.0f ? x : 0.0f;
    }
  }

  std::vector<std::int64_t> units_;
  std::uint64_t seed_;
  int threads_;
  std::vector<float> offset_, weight_, noise_;
  std::vector<std::vector<float>> batches_;
};

// For each unit count and each --samples count: generated batches (the automatic batch unless
// --batch-rows) through the accumulator `convergent align` streams its files into, then the correlation.
// Prints time, throughput and the resident memory the pass added at its peak; with
// --max-peak-growth-mib, fails when the peak of the last count exceeds the first's by more than that.
// Returns the exit status.
int bench_generated(const Config& c) {
  auto backend = make_backend(c.backend == "cuda" ? BackendChoice::cuda : BackendChoice::cpu, {c.threads, 0});
  std::printf("backend: %s, %s; generated data (two nets of U/2 units), nothing stored\n",
              backend->description().c_str(), bench::cpu_model().c_str());
  std::printf("\n| U | samples | batch rows | s | samples/s | GFLOP/s | peak MiB |\n|---:|---:|---:|---:|---:|---:|---:|\n");
  int status = 0;
  for (const std::int64_t units : c.units) {
    const std::int64_t batch = batch_for(c.batch_rows.front(), units);
    // Returns the seconds and the peak the pass added.
    auto pass = [&](std::int64_t samples) {
      detail::reset_peak_resident();
      const double rss_before = detail::status_mib("VmRSS");
      const double start = now();
      GeneratedNets nets(units, c.seed, batch, thread_count(c.threads));
      AccumulateOptions options;
      options.max_batch_rows = batch;
      options.precision = parse_precision(c.precision);
      auto accumulator = backend->accumulator(nets.units(), options);
      for (std::int64_t r = 0; r < samples; r += batch) accumulator->add(nets.batch(r, std::min(batch, samples - r)));
      const Moments moments = accumulator->moments();
      const Matrix corr = backend->correlation(moments, dead_units(moments, 1e-6));
      return std::pair<double, double>(now() - start, detail::status_mib("VmHWM") - rss_before);
    };
    pass(2 * batch);  // warm-up: what the process keeps after its first pass (OpenBLAS buffers, heap arenas)
    std::vector<double> peaks;
    for (const std::int64_t samples : c.sample_counts) {
      const auto [seconds, peak] = pass(samples);
      peaks.push_back(peak);
      const double flops = static_cast<double>(samples) * units * (units + 1);
      std::printf("| %lld | %lld | %lld | %.1f | %.3g | %.1f | %.1f |\n", static_cast<long long>(units),
                  static_cast<long long>(samples), static_cast<long long>(batch), seconds, samples / seconds,
                  flops / seconds / 1e9, peaks.back());
      std::fflush(stdout);
    }
    const double growth = peaks.back() - peaks.front();
    std::printf("U = %lld: peak at %lld samples minus peak at %lld: %+.1f MiB", static_cast<long long>(units),
                static_cast<long long>(c.sample_counts.back()), static_cast<long long>(c.sample_counts.front()), growth);
    if (!std::isnan(c.max_peak_growth_mib)) {
      const bool ok = growth <= c.max_peak_growth_mib;
      std::printf(" (limit %.1f MiB: %s)", c.max_peak_growth_mib, ok ? "ok" : "FAILED");
      if (!ok) status = 1;
    }
    std::printf("\n");
  }
  std::printf("\npeak MiB: resident memory the pass added (VmHWM after clear_refs), the generator's batches included;\n"
              "GFLOP/s count samples*U*(U+1) flops.\n");
  return status;
}

// "key=value" text after `key=` up to the next space.
std::string text_field(const std::string& text, const std::string& key) {
  const auto at = text.find(key + "=");
  if (at == std::string::npos) return "";
  const auto start = at + key.size() + 1;
  return text.substr(start, text.find(' ', start) - start);
}

// For each unit count: our streaming pass end to end (file in the page cache -> correlation in host
// memory; best of --repeat after a warm-up), against the bare cuBLAS product of one batch on resident
// data and the pinned host-to-device rate (both the ceilings of the pass), and against torch.corrcoef on
// the same GPU and file. Prints a Markdown table.
void bench_cuda(const Config& c, const std::string& dir) {
  auto backend = make_backend(BackendChoice::cuda, {c.threads, 0});
  const std::string script = std::string(CONVERGENT_SOURCE_DIR) + "/bench/corrcoef_torch.py";
  std::printf("backend: %s; host: %s, %u hardware threads; precision %s\n", backend->description().c_str(),
              bench::cpu_model().c_str(), std::thread::hardware_concurrency(), c.precision.c_str());
  std::printf("\n| U | samples | batch rows | ours s | ours GFLOP/s | cuBLAS GFLOP/s | share | ours GB/s | H2D GB/s | share "
              "| torch s | torch compute s | torch / ours | max abs diff |\n");
  std::printf("|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n");
  std::vector<std::string> notes;
  for (const std::int64_t units : c.units) {
    // Unless told: enough samples for a few seconds of products, capped by a 4 GiB workload file.
    const std::int64_t samples =
        c.file_mib > 0  ? (c.file_mib << 20) / (units * 4)
        : c.samples_given ? c.samples
                        : std::min<std::int64_t>(std::max<std::int64_t>(100000, (std::int64_t{1} << 40) / (units * units)),
                                                 (std::int64_t{1} << 30) / units);
    const std::string data = dir + "/bench_corr_data.npy", ours = dir + "/bench_corr_ours.npy";
    generate(data, samples, units, c.seed);
    const std::int64_t batch = batch_for(c.batch_rows.front(), units);
    const detail::CudaCeiling ceiling = detail::measure_cuda_ceiling(batch, units, parse_precision(c.precision));
    stream(*backend, data, c, batch);  // warm-up: page cache, device allocations, cuBLAS heuristics
    StreamResult best;
    for (int round = 0; round < c.repeat; ++round) {
      StreamResult r = stream(*backend, data, c, batch);
      if (round == 0 || r.seconds < best.seconds) best = std::move(r);
    }
    const double flops = static_cast<double>(samples) * units * (units + 1);
    const double gflops = flops / best.seconds / 1e9;
    const double gbps = static_cast<double>(samples) * units * 4 / best.seconds / 1e9;
    std::string torch_seconds = "-", torch_compute = "-", ratio = "-", diff = "-";
    if (c.numpy) {
      write_npy(ours, best.corr.data(), {units, units});
      const std::string out =
          run_capture(c.python + " " + script + " " + data + " " + ours + " " + std::to_string(c.repeat) + " 2>&1");
      const double seconds = field(out, "end_to_end_seconds");
      if (std::isnan(seconds)) {
        notes.push_back("U = " + std::to_string(units) + ": torch.corrcoef not measured: " + out);
      } else {
        char text[64];
        std::snprintf(text, sizeof text, "%.3f", seconds);
        torch_seconds = text;
        std::snprintf(text, sizeof text, "%.3f", field(out, "compute_seconds"));
        torch_compute = text;
        std::snprintf(text, sizeof text, "%.2fx", seconds / best.seconds);
        ratio = text;
        diff = text_field(out, "max_abs_diff");
        notes.push_back("U = " + std::to_string(units) + ": torch " + text_field(out, "torch") + ", device peak " +
                        text_field(out, "device_peak_mib") + " MiB, NaN entries in its result " +
                        text_field(out, "nan_entries"));
      }
      std::remove(ours.c_str());
    }
    std::printf("| %lld | %lld | %lld | %.3f | %.0f | %.0f | %.2f | %.2f | %.2f | %.2f | %s | %s | %s | %s |\n",
                static_cast<long long>(units), static_cast<long long>(samples), static_cast<long long>(batch),
                best.seconds, gflops, ceiling.product_gflops, gflops / ceiling.product_gflops, gbps,
                ceiling.host_to_device_gbps, gbps / ceiling.host_to_device_gbps, torch_seconds.c_str(),
                torch_compute.c_str(), ratio.c_str(), diff.c_str());
    std::fflush(stdout);
    std::remove(data.c_str());
  }
  std::printf("\nDevice: %s. GFLOP/s count samples*U*(U+1) flops; GB/s count the float32 input. ours s and torch s are\n"
              "end to end (file in the page cache -> correlation in host memory), best of %d after a warm-up; torch\n"
              "compute s is torch.corrcoef alone on resident data; share = ours / its ceiling.\n",
              backend->description().c_str(), c.repeat);
  for (const std::string& note : notes) std::printf("%s\n", note.c_str());
}

}  // namespace

int main(int argc, char** argv) {
  Config c = parse(argc, argv);
  const std::string dir = c.work_dir.empty() ? (std::getenv("TMPDIR") ? std::getenv("TMPDIR") : "/tmp") : c.work_dir;
  try {
    if (c.generated) {
      return bench_generated(c);
    } else if (c.backend == "cuda") {
      if (!c.units_given) c.units = {256, 1024, 4096, 8192};
      bench_cuda(c, dir);
    } else if (c.file_mib > 0) {
      std::fprintf(stderr, "bench_corr: --file-mib is for --backend cuda; use --samples\n");
      return 2;
    } else if (c.batch_rows.size() > 1) {
      bench_batches(c, dir);
    } else {
      bench_cpu(c, dir);
    }
  } catch (const std::exception& e) {
    std::fprintf(stderr, "bench_corr: %s\n", e.what());
    return 1;
  }
  return 0;
}
