// The memory plan: each phase of align as the code allocates it (see the parts' names for where), and the
// machine's available memory (/proc/meminfo, cgroup v2, or CONVERGENT_AVAILABLE_MEMORY).
#include "convergent/memory_plan.hpp"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <numeric>
#include <sstream>

#include "convergent/backend.hpp"
#include "convergent/error.hpp"

namespace convergent {
namespace {

// What the program holds before any job: code, libraries, OpenBLAS's per-thread buffers, the heap's
// arenas (measured on the smallest jobs of a CPU-only build, tests/test_memory_plan.cpp): 32 MiB, of which
// about 12 MiB are resident before the job starts. A build that loads more (the CUDA libraries) adds what
// it holds beyond those 12 MiB when the plan is made (MemoryJob::resident_bytes).
std::int64_t program_bytes(const MemoryJob& job) {
  constexpr std::int64_t base = std::int64_t{32} << 20, base_resident = std::int64_t{12} << 20;
  return base + std::max<std::int64_t>(0, job.resident_bytes - base_resident);
}

std::int64_t square(std::int64_t x) { return x * x; }

// Eigensolver working set for n units and k pairs (host/cpu/reference_backend.cpp). Block Lanczos keeps an
// n x 8p float64 basis and a few n x p blocks; when it gives up on a crowded spectrum (and for small
// problems) ssyevr, then dsyevr, work on a copy of the matrix (column-major, so LAPACKE copies nothing
// more): the float64 one, 8 n^2, is the larger. The plan takes the larger of the two; above
// max_dense_eigen_rows no dense solver runs and Lanczos alone is counted.
std::int64_t eigensolver_bytes(std::int64_t n, std::int64_t k) {
  const std::int64_t p = k + std::max<std::int64_t>(8, k / 4), cols = 8 * p;
  const std::int64_t lanczos = 3 * 8 * n * cols;
  if (n > max_dense_eigen_rows) return lanczos;
  const std::int64_t dense = 8 * square(n) + 4 * 8 * n * k;
  if (n < 1024 || 32 * p > n) return dense;
  return std::max(dense, lanczos);
}

}  // namespace

SaveMatrices parse_save_matrices(const std::string& text) {
  if (text == "all") return SaveMatrices::all;
  if (text == "pairs") return SaveMatrices::pairs;
  if (text == "none") return SaveMatrices::none;
  throw Error("--save-matrices '" + text + "': expected all, pairs or none");
}

const char* to_string(SaveMatrices s) {
  return s == SaveMatrices::all ? "all" : s == SaveMatrices::pairs ? "pairs" : "none";
}

std::int64_t MemoryPhase::bytes() const {
  std::int64_t total = 0;
  for (const MemoryPart& p : parts) total += p.bytes;
  return total;
}

MemoryPlan plan_memory(const MemoryJob& job) {
  if (job.units_per_net.size() < 2) throw Error("memory plan: a study needs at least two nets");
  const std::int64_t u = std::accumulate(job.units_per_net.begin(), job.units_per_net.end(), std::int64_t{0});
  // --samples images: the pass's batches hold whole minibatches (run_study's accumulate_pass).
  const std::int64_t image_total =
      std::accumulate(job.image_features.begin(), job.image_features.end(), std::int64_t{0});
  const bool image_exact = image_total > 0 && image_total <= job.image_exact_features;
  std::int64_t batch_rows = job.batch_rows;
  if (image_total > 0 && !image_exact) {
    const std::int64_t whole = job.rows_per_input * job.image_minibatch;
    batch_rows = std::max<std::int64_t>(1, batch_rows / whole) * whole;
  }
  const std::int64_t rows = std::max<std::int64_t>(1, std::min(batch_rows, job.samples));
  // Sums and maxima of unit-count products; `lasso` is the largest sparse prediction (from net a to net
  // b, host/analysis/sparse_prediction.cpp): the predictors' gram and its inverse (Ca^2 each), the target
  // correlations and the path's weights and gradients (Cb x Ca each), and per thread a solver whose
  // active-set factor and packed working-set gram reach Ca^2 each, and the lock-step solves' factors
  // (32 targets' blocks of H = R^-1 outside their supports, each under Ca / 2 + 1/8 slack, at most 32 MiB).
  std::int64_t within = 0, largest_pair = 0, largest_net = 0, lasso = 0;
  const std::int64_t threads = std::max<std::int64_t>(1, job.threads);
  for (std::size_t a = 0; a < job.units_per_net.size(); ++a) {
    const std::int64_t ua = job.units_per_net[a];
    within += square(ua);
    largest_net = std::max(largest_net, ua);
    for (std::size_t b = 0; b < job.units_per_net.size(); ++b) {
      if (b == a) continue;
      const std::int64_t ub = job.units_per_net[b];
      if (b > a) largest_pair = std::max(largest_pair, ua * ub);
      const std::int64_t lock_step = std::min<std::int64_t>(std::int64_t{32} << 20, 8 * 10 * square(ua));
      lasso = std::max(lasso, 8 * ((2 + 2 * threads) * square(ua) + 3 * ua * ub) + threads * lock_step);
    }
  }
  const std::int64_t matrix = 8 * square(u);  // one float64 U x U matrix
  // Image-level CKA (host/analysis/image_cka.cpp), counted on the host whatever the backend. Exact: inputs
  // staged as float64 rows of all F features (64 MiB at a time) into a Moments accumulator over the
  // features (float64 comoment, float32 product, its batch and per-feature arrays), whose Moments are
  // handed over at the end of the pass and kept to the analyses: 12 F^2 while streaming, 8 F^2 after.
  // Minibatch: one m x m float64 Gram per net and a chunk of m inputs' features (about 4096, or a pixel's).
  std::vector<MemoryPart> image_streaming;
  std::int64_t image_kept = 0;
  if (image_exact) {
    const std::int64_t f = image_total, staged = std::max<std::int64_t>(1, (std::int64_t{64} << 20) / (8 * f));
    image_kept = 8 * square(f);
    image_streaming = {{"image-level CKA: staged inputs (float64)", 8 * staged * f},
                       {"image-level CKA: comoment and product of the features", 12 * square(f)},
                       {"image-level CKA: batch (float32) and per-feature arrays",
                        4 * staged * f + 6 * 8 * ((staged + 2047) / 2048) * f + 2048 * f}};
  } else if (image_total > 0) {
    const std::int64_t m = job.image_minibatch;
    const std::int64_t largest = *std::max_element(job.units_per_net.begin(), job.units_per_net.end());
    image_streaming = {{"image-level CKA: Gram matrices and a chunk of features (float64)",
                        8 * m * m * static_cast<std::int64_t>(job.units_per_net.size()) +
                            8 * m * std::max<std::int64_t>(4096, largest)}};
  }
  MemoryPlan plan;
  auto phase = [&](std::string name, std::vector<MemoryPart> parts) {
    parts.insert(parts.begin(), MemoryPart{"program", program_bytes(job)});
    if (name == "streaming") {
      parts.insert(parts.end(), image_streaming.begin(), image_streaming.end());
    } else if (image_kept > 0) {
      parts.push_back({"image-level CKA: Moments of the features", image_kept});
    }
    plan.host.push_back({std::move(name), std::move(parts)});
  };

  // Streaming (run_study): the running comoment, the float32 batch product and batch, and the mapped
  // pages of the batch being read and the one before it (released after the next add).
  const std::int64_t chunks = (rows + 2047) / 2048;
  const std::int64_t mapped = std::min(2 * rows, job.samples) * job.input_row_bytes;
  if (job.cuda) {
    phase("streaming", {{"comoment (copied back)", matrix}, {"pinned batches", 2 * 4 * rows * u},
                        {"mapped input", mapped}});
    plan.device.push_back({"streaming", {{"comoment", matrix}, {"batch product", 4 * square(u)},
                                         {"batches", 2 * 4 * rows * u}}});
  } else {
    // The per-unit part: the accumulator's per-unit arrays and what OpenBLAS sizes by the unit count,
    // 2 KiB a unit (measured beyond the other parts: 7.6 MiB at 2 x 8192, 22 MiB at 2 x 16384, 37 MiB at 4 x 8192).
    phase("streaming", {{"comoment", matrix},
                        {"batch product (float32)", 4 * square(u)},
                        {"per-unit arrays and buffers", 2048 * u},
                        {"batch (float32)", 4 * rows * u + 6 * 8 * chunks * u},
                        {"mapped input", mapped}});
  }
  // The correlation is formed in the comoment's storage (Backend::take_correlation): one U x U float64
  // from the end of the pass on. The CUDA backend turns it on the device (the comoment and its result).
  const MemoryPart correlation{"correlation (in the comoment's storage)", matrix};
  phase("correlation", {correlation});
  if (job.cuda) plan.device.push_back({"correlation", {{"comoment", matrix}, {"correlation", matrix}}});

  // Matching works on the between-net block in place; only a taller-than-wide block is transposed.
  std::int64_t transposed = 0;
  for (std::size_t a = 0; a < job.units_per_net.size(); ++a)
    for (std::size_t b = a + 1; b < job.units_per_net.size(); ++b)
      if (job.units_per_net[a] > job.units_per_net[b])
        transposed = std::max(transposed, 8 * job.units_per_net[a] * job.units_per_net[b]);
  phase("matching", {correlation, {"assignment (transposed block, duals, candidate edges)", transposed + 1024 * u}});

  if (job.clustering) {
    const std::int64_t k = std::min(job.eigenpairs, u);
    phase("clustering", {correlation, {"Laplacian (float32)", 4 * square(u)},
                         {"eigensolver", eigensolver_bytes(u, k)}});
    if (job.cuda)
      plan.device.push_back({"clustering", {{"Laplacian (float32)", 4 * square(u)}, {"eigensolver", eigensolver_bytes(u, k)}}});
  }

  // Sparse prediction, one direction at a time (`lasso` above). Similarity indices: three p x p matrices per net kept for the pairs, and at the peak a net's
  // eigendecomposition (input, work, vectors, dsyevd's 2 p^2 workspace) or a pair's whitened SVD.
  std::int64_t analyses = 0;
  std::string analyses_name;
  if (job.sparse_prediction) {
    analyses = lasso;
    analyses_name = "sparse prediction (gram, inverse, targets, path, a solver per thread)";
  }
  if (job.similarity_indices) {
    const std::int64_t indices = 8 * (3 * within + 5 * square(largest_net) + 6 * largest_pair);
    if (indices > analyses) analyses_name = "similarity indices (bases, eigendecompositions, SVDs)";
    analyses = std::max(analyses, indices);
  }
  if (analyses > 0) phase("analyses", {correlation, {analyses_name, analyses}});

  // Mutual information: a second pass (two with quantile bins) in float64 batches of about 32 MiB, the
  // per-pair terms (n log n and occupied cells), the counts within --mi-memory, then three U x U results.
  const MemoryPart mi_results{"MI matrices (plug-in, Miller-Madow, normalised)", 3 * matrix};
  if (job.mutual_information) {
    const std::int64_t mi_rows = std::clamp<std::int64_t>((std::int64_t{1} << 22) / u, 256, 65536);
    // The unit groups of host/analysis/mutual_information.cpp (unit_groups): blocks of g units a side
    // within the budget, one counting pass per pair of groups; the counter's int64 counts and their copy.
    const std::int64_t s = job.mi_slots;
    std::int64_t g = u;
    if (8.0 * double(g * s) * double(g * s) > double(job.mi_memory_budget_bytes)) {
      g = std::max<std::int64_t>(1, static_cast<std::int64_t>(std::sqrt(double(job.mi_memory_budget_bytes) / 8.0)) / s);
      while (g > 1 && 8.0 * double(g * s) * double(g * s) > double(job.mi_memory_budget_bytes)) --g;
    }
    const std::int64_t groups = (u + g - 1) / g, side = (u + groups - 1) / groups;
    plan.data_passes += groups * (groups + 1) / 2 + (job.mi_quantile ? 1 : 0);
    phase("mutual information", {correlation, {"pair terms", 12 * square(u)},
                                 {"joint counts and their copy (--mi-memory)", 2 * 8 * square(side * s)},
                                 {"batches (float64 values, bin slots, transposed codes)",
                                  27 * mi_rows * u + std::min(2 * mi_rows, job.samples) * job.input_row_bytes}});
    phase("mutual information results", {correlation, {"pair terms", 12 * square(u)}, mi_results});
  }

  // Writing: matrices go out row by row from the held ones (corr_clustered.npy permuted on the fly).
  std::vector<MemoryPart> held = {correlation};
  if (job.mutual_information) held.push_back(mi_results);
  std::vector<MemoryPart> writing = held;
  writing.push_back({"row buffers", 16 * u});
  phase("writing", writing);

  // report.html draws the written matrices row by row from their files (NpyMatrixRows: a row and its
  // permuted copy, the pages of each row dropped once read).
  if (job.report) {
    std::vector<MemoryPart> report = held;
    report.push_back({"rows read back", 3 * 8 * u});
    phase("report", report);
  }

  for (const MemoryPhase& p : plan.host)
    if (p.bytes() > plan.peak_host_bytes) {
      plan.peak_host_bytes = p.bytes();
      plan.peak_host_phase = p.name;
    }
  for (const MemoryPhase& p : plan.device) plan.peak_device_bytes = std::max(plan.peak_device_bytes, p.bytes());
  return plan;
}

AvailableMemory available_host_memory() {
  AvailableMemory a;
  if (const char* text = std::getenv("CONVERGENT_AVAILABLE_MEMORY"); text && *text) {
    char* end = nullptr;
    const double value = std::strtod(text, &end);
    double scale = 1.0;
    const std::string suffix(end);
    if (suffix == "K" || suffix == "KiB") scale = 1024.0;
    else if (suffix == "M" || suffix == "MiB") scale = 1024.0 * 1024.0;
    else if (suffix == "G" || suffix == "GiB") scale = 1024.0 * 1024.0 * 1024.0;
    else if (suffix == "T" || suffix == "TiB") scale = 1024.0 * 1024.0 * 1024.0 * 1024.0;
    else if (!suffix.empty()) scale = -1.0;
    if (end == text || !(value >= 0.0) || scale < 0.0)
      throw Error(std::string("CONVERGENT_AVAILABLE_MEMORY='") + text +
                  "': expected a number of bytes, optionally with K, M, G or T (powers of 1024)");
    a.host_bytes = static_cast<std::int64_t>(value * scale);
    a.host_source = "CONVERGENT_AVAILABLE_MEMORY";
    return a;
  }
  std::ifstream meminfo("/proc/meminfo");
  for (std::string line; std::getline(meminfo, line);)
    if (line.rfind("MemAvailable:", 0) == 0) {
      a.host_bytes = std::stoll(line.substr(13)) * 1024;
      a.host_source = "MemAvailable";
    }
  // cgroup v2: the limit of this process's group less what the group uses already.
  std::ifstream group("/proc/self/cgroup");
  std::string line, path;
  while (std::getline(group, line))
    if (line.rfind("0::", 0) == 0) path = line.substr(3);
  std::ifstream max("/sys/fs/cgroup" + path + "/memory.max"), current("/sys/fs/cgroup" + path + "/memory.current");
  std::string limit;
  std::int64_t used = 0;
  if (max >> limit && limit != "max" && current >> used) {
    const std::int64_t room = std::max<std::int64_t>(0, std::stoll(limit) - used);
    if (a.host_source.empty() || room < a.host_bytes) {
      a.host_bytes = room;
      a.host_source = "cgroup memory.max";
    }
  }
  if (a.host_source.empty()) a.host_source = "unknown (no /proc/meminfo)";
  return a;
}

namespace {

// The command-line options that turn `job` into `changed` (only ever smaller: fewer outputs or analyses).
std::string options_between(const MemoryJob& job, const MemoryJob& changed) {
  std::string text;
  auto add = [&text](const std::string& option) { text += (text.empty() ? "" : " ") + option; };
  if (changed.save_matrices != job.save_matrices) add(std::string("--save-matrices ") + to_string(changed.save_matrices));
  if (changed.report != job.report) add("--no-report");
  if (changed.mutual_information != job.mutual_information || changed.similarity_indices != job.similarity_indices ||
      changed.sparse_prediction != job.sparse_prediction) {
    std::string list = "reliability,mean_distributions";
    if (changed.sparse_prediction) list += ",sparse_prediction";
    if (changed.similarity_indices) list += ",linear_cka,cca,svcca,pwcca,procrustes";
    if (changed.mutual_information) list += ",mutual_information";
    add("--analyses " + list);
  }
  if (changed.clustering != job.clustering) add("--clusters none");
  return text;
}

}  // namespace

std::vector<MemoryFix> memory_fixes(const MemoryJob& job, std::int64_t available_bytes) {
  // Each step keeps the ones before it; the cheapest losses come first.
  void (*const steps[])(MemoryJob&) = {
      [](MemoryJob& j) { j.save_matrices = SaveMatrices::pairs; },
      [](MemoryJob& j) { j.save_matrices = SaveMatrices::none; },
      [](MemoryJob& j) { j.report = false; },
      [](MemoryJob& j) { j.mutual_information = false; },
      [](MemoryJob& j) { j.similarity_indices = false; },
      [](MemoryJob& j) { j.sparse_prediction = false; },
      [](MemoryJob& j) { j.clustering = false; },
  };
  std::vector<MemoryFix> fixes;
  MemoryJob changed = job;
  std::int64_t last = plan_memory(job).peak_host_bytes;
  for (const auto& step : steps) {
    MemoryJob next = changed;
    step(next);
    const std::int64_t peak = plan_memory(next).peak_host_bytes;
    if (peak >= last) continue;  // no lower peak: this loss buys nothing
    changed = next;
    last = peak;
    fixes.push_back({options_between(job, changed), peak});
    if (peak <= available_bytes) break;
  }
  return fixes;
}

std::string format_bytes(std::int64_t bytes) {
  char text[32];
  const double b = static_cast<double>(bytes);
  if (b >= 1024.0 * 1024.0 * 1024.0) std::snprintf(text, sizeof text, "%.2f GiB", b / (1024.0 * 1024.0 * 1024.0));
  else std::snprintf(text, sizeof text, "%.1f MiB", b / (1024.0 * 1024.0));
  return text;
}

std::string format_plan(const MemoryPlan& plan, const AvailableMemory& available) {
  std::ostringstream out;
  out << "memory plan (host; every part an upper bound):\n";
  for (const MemoryPhase& p : plan.host) {
    out << "  " << p.name << ": " << format_bytes(p.bytes()) << "\n";
    for (const MemoryPart& part : p.parts)
      if (part.bytes > 0) out << "      " << part.name << " " << format_bytes(part.bytes) << "\n";
  }
  out << "peak: " << format_bytes(plan.peak_host_bytes) << " in " << plan.peak_host_phase << "\n";
  if (!plan.device.empty()) out << "device peak: " << format_bytes(plan.peak_device_bytes) << "\n";
  out << "passes over the data: " << plan.data_passes << "\n";
  out << "available: " << format_bytes(available.host_bytes) << " (" << available.host_source << "); "
      << (plan.peak_host_bytes <= available.host_bytes ? "fits" : "does not fit") << "\n";
  return out.str();
}

void check_plan_fits(const MemoryJob& job, const MemoryPlan& plan, const AvailableMemory& available) {
  if (plan.peak_host_bytes <= available.host_bytes &&
      (!available.device_bytes || plan.peak_device_bytes <= *available.device_bytes))
    return;
  std::string message;
  if (plan.peak_host_bytes > available.host_bytes) {
    message = "this job needs about " + format_bytes(plan.peak_host_bytes) + " of memory (peak in " +
              plan.peak_host_phase + "), but " + format_bytes(available.host_bytes) + " is available (" +
              available.host_source + "); nothing was read.";
    const std::vector<MemoryFix> fixes = memory_fixes(job, available.host_bytes);
    if (!fixes.empty() && fixes.back().peak_host_bytes <= available.host_bytes)
      message += " It fits with: " + fixes.back().options + " (about " + format_bytes(fixes.back().peak_host_bytes) +
                 ").";
    else
      message += " No option brings it under that: the correlation of " +
                 std::to_string(std::accumulate(job.units_per_net.begin(), job.units_per_net.end(), std::int64_t{0})) +
                 " units alone takes " + format_bytes(plan.host[1].bytes()) +
                 "; align fewer units together (pairs of nets in separate runs) or use a larger machine.";
    for (const MemoryFix& fix : fixes) message += "\n  " + fix.options + ": about " + format_bytes(fix.peak_host_bytes);
  } else {
    message = "this job needs about " + format_bytes(plan.peak_device_bytes) + " of device memory, but " +
              format_bytes(*available.device_bytes) + " is free; run it with --backend cpu";
  }
  message += "\nconvergent align --plan shows the plan part by part.";
  throw Error(message);
}

}  // namespace convergent
