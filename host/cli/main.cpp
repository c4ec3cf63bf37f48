// The `convergent` command line: align (the main job), report (report.html over finished align outputs),
// match (a correlation matrix the user has) and --version. The only place where an error becomes an exit code.
#include <unistd.h>

#include <CLI/CLI.hpp>
#include <atomic>
#include <cerrno>
#include <cmath>
#include <csignal>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <iostream>
#include <map>
#include <optional>
#include <regex>
#include <semaphore.h>
#include <thread>
#include <tuple>

#include "cli/command_line.hpp"
#include "convergent/convergent.hpp"
#include "report/html_report.hpp"
#include "report/study_table.hpp"
#include "report/vega_bundle.hpp"
#include "cpu/parallel.hpp"
#include "backend/cuda_backend.hpp"
#include "io/mapped_files.hpp"
#include "io/outputs.hpp"
#include "mpi/world.hpp"
#include "io/resident_memory.hpp"
#include "io/study_outputs.hpp"
#include "analysis/align_job.hpp"

namespace {

using namespace convergent;

constexpr const char* version = CONVERGENT_VERSION;

// Ctrl-C, SIGTERM or SIGHUP (a closed terminal): the job checks `interrupted` at every batch of a pass, every
// phase, every output file and every row of a large matrix, and throws Interrupted, so that the staged
// outputs are removed on the way out and nothing is put in place. A step that runs long without checking
// (one LAP, one eigensolve, one batch product of a huge layer) is cut short by the watchdog instead: it
// removes the staged outputs and ends the process interruption_grace_seconds after the signal.
std::atomic<bool> interrupted{false};
sem_t interruption_signalled;  // posted once, by the first signal (sem_post is async-signal-safe)
constexpr int interruption_grace_seconds = 2;
extern "C" void on_interrupt(int) {
  if (!interrupted.exchange(true)) sem_post(&interruption_signalled);
}
// A mapped input that shrinks while it is read (truncated, or rewritten in place by another program)
// raises SIGBUS on its vanished pages. Nothing can continue from there: the handler names the file,
// removes the (still empty: outputs are written after every read) staging directory, and exits 1.
void write_stderr(const char* text) {
  std::size_t n = 0;
  while (text[n] != '\0') ++n;
  while (n > 0) {
    const ssize_t written = ::write(STDERR_FILENO, text, n);
    if (written <= 0) return;
    text += written;
    n -= static_cast<std::size_t>(written);
  }
}
extern "C" void on_bus_error(int, siginfo_t* info, void*) {
  const char* path = mapping_path_at(info->si_addr);
  if (path == nullptr) {  // not an input's page: a fault of another kind, which crashes as it always did
    ::signal(SIGBUS, SIG_DFL);
    return;
  }
  write_stderr("\nconvergent: error: ");
  write_stderr(path);
  write_stderr(": the file shrank or vanished while it was read (truncated or rewritten by another program); "
               "nothing was written\n");
  if (const char* staging = OutputDir::staging_for_signal_handler(); staging[0] != '\0') ::rmdir(staging);
  ::_exit(1);
}

// Tests hold the process at a named point (CONVERGENT_TEST_STOP_AT=pass: after the first batch; write:
// before the outputs are written; commit: before they are put in place): it stops itself there once
// (SIGSTOP) and the test injects its fault before SIGCONT (tests/test_faults.cpp). With
// CONVERGENT_TEST_STOP_AT=stall-pass it stops there too and then never returns from that batch, as a step
// that never checks for an interruption, to show that the watchdog ends it. Unset in normal use.
void stop_for_test(const std::string& point) {
  static const char* wanted = std::getenv("CONVERGENT_TEST_STOP_AT");
  static bool stopped = false;
  if (wanted == nullptr || stopped) return;
  const bool stall = "stall-" + point == wanted;
  if (point != wanted && !stall) return;
  stopped = true;
  std::raise(SIGSTOP);
  if (stall) std::this_thread::sleep_for(std::chrono::minutes(10));  // resumes sleeping after a signal
}

struct Interrupted : Error {
  Interrupted() : Error("interrupted; nothing was written") {}
};

void throw_if_interrupted() {
  if (interrupted) throw Interrupted();
}

// The watchdog: a thread that waits for the first interruption, gives the job interruption_grace_seconds
// to stop by itself, and then removes its staged outputs and ends the process (exit 130), unless the
// outputs were already put in place (the job is then finishing).
void start_interruption_watchdog() {
  sem_init(&interruption_signalled, 0, 0);
  std::thread([] {
    while (sem_wait(&interruption_signalled) != 0) {
    }
    std::this_thread::sleep_for(std::chrono::seconds(interruption_grace_seconds));
    if (!abandon_outputs_in_progress()) return;
    const std::string message = "\nconvergent: interrupted; nothing was written (the job was stopped " +
                                std::to_string(interruption_grace_seconds) +
                                " s after the signal, inside a step that does not check for one)\n";
    write_stderr(message.c_str());
    ::_exit(130);
  }).detach();
}

// --seed: a whole number in [0, 2^64). CLI11 alone would take "-1" as 2^64 - 1 and a number past 2^64 as
// 2^64 - 1, silently.
std::string check_seed(std::string& text) {
  const std::string refusal = "expected a whole number from 0 to 18446744073709551615, not '" + text + "'";
  if (text.empty() || text.find_first_not_of("0123456789") != std::string::npos) return refusal;
  errno = 0;
  std::strtoull(text.c_str(), nullptr, 10);
  return errno == ERANGE ? refusal : std::string();
}

// "NAME=PATH" names a net; a bare PATH is named by its file stem. Text before the first '=' is a name
// only when it holds no '/', so paths that contain '=' still work.
std::vector<NetSource> parse_net_arguments(const std::vector<std::string>& arguments) {
  std::vector<NetSource> nets;
  std::map<std::string, std::string> seen;  // name -> path
  for (const std::string& argument : arguments) {
    NetSource net;
    const auto equals = argument.find('=');
    const bool named = equals != std::string::npos && argument.substr(0, equals).find('/') == std::string::npos;
    if (named) {
      net.name = argument.substr(0, equals);
      net.path = argument.substr(equals + 1);
    } else {
      net.path = argument;
      net.name = std::filesystem::path(argument).stem().string();
    }
    try {
      check_net_name(net.name, net.path);
    } catch (const Error& e) {
      if (named) throw;
      throw Error(std::string(e.what()) + "; name the net with NAME=PATH, e.g. net1=" + net.path);
    }
    if (const auto it = seen.find(net.name); it != seen.end())
      throw Error("two nets are named '" + net.name + "' (" + it->second + " and " + net.path +
                  "); name them apart with NAME=PATH, e.g. net1=" + it->second);
    seen[net.name] = net.path;
    nets.push_back(net);
  }
  std::vector<std::string> names;
  for (const auto& net : nets) names.push_back(net.name);
  check_output_names(names, "rename a net with NAME=PATH");
  return nets;
}

// A one-line progress bar on stderr, drawn only when stderr is a terminal.
class ProgressBar {
 public:
  ProgressBar() : enabled_(::isatty(STDERR_FILENO) == 1), start_(std::chrono::steady_clock::now()) {}
  void update(std::int64_t done, std::int64_t total) {
    if (!enabled_) return;
    const double fraction = total > 0 ? static_cast<double>(done) / static_cast<double>(total) : 1.0;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    const int width = 30, filled = static_cast<int>(fraction * width);
    std::fprintf(stderr, "\r[%s%s] %5.1f%%  %lld/%lld rows  %.3g rows/s ", std::string(filled, '#').c_str(),
                 std::string(width - filled, '.').c_str(), 100.0 * fraction, static_cast<long long>(done),
                 static_cast<long long>(total), seconds > 0 ? static_cast<double>(done) / seconds : 0.0);
    if (done >= total) std::fputc('\n', stderr);
    std::fflush(stderr);
  }

 private:
  bool enabled_;
  std::chrono::steady_clock::time_point start_;
};

double seconds_since(std::chrono::steady_clock::time_point start) {
  return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
}

void print_version() {
  std::cout << "convergent " << version << "\nbackends:\n";
  for (const BackendStatus& status : backend_status()) {
    std::cout << "  " << to_string(status.kind) << ": " << (status.compiled ? "compiled" : "not compiled") << ", "
              << (status.usable ? "usable" : "not usable") << " (" << status.detail << ")\n";
  }
  std::cout << "mpi: " << mpi::description() << "\n";
}

struct CommonOptions {
  std::string out_dir;
  int threads = 0;
  // Parse and check the command line, then stop before touching any file (CliMode::check_only).
  bool check_only = false;
};

// Wall time of each phase of align and the peak resident memory so far at its end, printed when align is
// done (bench/RESULTS.md keeps them for large layers). The peak is the kernel's high-water mark (VmHWM),
// never reset, so that the process's own peak (getrusage) stays whole.
class PhaseLog {
 public:
  // Throws Interrupted after a signal: every phase begins with that check.
  void start(const std::string& name) {
    throw_if_interrupted();
    finish();
    name_ = name;
    start_ = std::chrono::steady_clock::now();
  }
  void finish() {
    if (name_.empty()) return;
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    char text[96];
    std::snprintf(text, sizeof text, "%s%s %.1f s (%.0f MiB)", text_.empty() ? "" : ", ", name_.c_str(), seconds,
                  detail::status_mib("VmHWM"));
    text_ += text;
    name_.clear();
  }
  const std::string& text() const { return text_; }

 private:
  std::string name_, text_;
  std::chrono::steady_clock::time_point start_;
};

// report.html: whether align writes it, and how it draws matrices.
struct ReportArguments {
  bool skip = false;  // --no-report
  std::string title;
  std::int64_t max_image_side = 512;
};

// Backend choice as given by --backend.
BackendChoice backend_choice(const std::string& name) {
  return name == "cpu" ? BackendChoice::cpu : name == "cuda" ? BackendChoice::cuda : BackendChoice::automatic;
}

// "BEGIN:END" as given by --rows.
InputRange parse_input_range(const std::string& text) {
  static const std::regex pattern("([0-9]{1,18}):([0-9]{1,18})");
  std::smatch m;
  if (!std::regex_match(text, m, pattern))
    throw Error("--rows '" + text + "': expected BEGIN:END, inputs counted from 0, END excluded (e.g. 0:25000)");
  return {std::stoll(m[1]), std::stoll(m[2])};
}

// `convergent stats`: the Moments of a range of inputs, saved for merge and align --from-stats.
int run_stats(const std::vector<std::string>& net_arguments, const CommonOptions& common, StudyOptions options,
              const std::string& backend_name, const std::string& precision, const std::string& rows,
              const std::string& out_path) {
  const std::vector<NetSource> nets = parse_net_arguments(net_arguments);
  if (nets.size() < 2) throw Error("stats needs at least two nets");
  options.precision = parse_precision(precision);
  if (!rows.empty()) options.inputs = parse_input_range(rows);
  if (common.check_only) return 0;
  check_file_output(out_path);  // now, not after the pass
  auto backend = make_backend(backend_choice(backend_name), {common.threads, 0});
  ProgressBar progress;
  options.progress = [&](std::int64_t done, std::int64_t total) {
    throw_if_interrupted();
    stop_for_test("pass");
    progress.update(done, total);
  };
  const Study study = accumulate_study(*backend, nets, options);
  throw_if_interrupted();
  write_stats_file(out_path, stats_of(study, options), version);
  std::cout << "wrote " << out_path << " (inputs " << study.range.begin << ":" << study.range.end << " of "
            << study.inputs << ", " << study.moments.samples << " samples, " << study.backend << ")\n";
  return 0;
}

// `convergent merge`: shards into one stats file, in the order of their ranges.
int run_merge(const std::vector<std::string>& paths, const std::string& out_path) {
  check_file_output(out_path);
  std::vector<StatsFile> shards;
  for (const std::string& path : paths) shards.push_back(read_stats_file(path));
  const StatsFile merged = merge_stats(std::move(shards), paths);
  throw_if_interrupted();
  write_stats_file(out_path, merged, version);
  std::cout << "wrote " << out_path << " (inputs " << merged.range.begin << ":" << merged.range.end << " of "
            << merged.study.inputs << ", " << merged.moments.samples << " samples from " << paths.size()
            << " files)\n";
  return 0;
}

// Thrown in a rank's pass when another rank failed: the failed rank's message is the one reported.
struct StoppedByOtherRank : Error {
  StoppedByOtherRank() : Error("stopped: another rank failed") {}
};

// Under mpirun: each rank streams its share of the inputs, [r N / K, (r + 1) N / K) for rank r of K.
Study pass_of_rank(const mpi::World& world, Backend& backend, const std::vector<NetSource>& nets, StudyOptions options) {
  StudyOptions probe = options;
  probe.inputs = InputRange{0, 0};  // an empty range opens and checks the files, and counts their inputs
  const std::int64_t n = accumulate_study(backend, nets, probe).inputs, r = world.rank(), k = world.size();
  options.inputs = InputRange{r * n / k, (r + 1) * n / k};
  return accumulate_study(backend, nets, options);
}

// Rank 0 merges every rank's Moments in rank order (the ranges' order, as convergent merge does: the same
// float64 operations whichever rank finishes first) and gets the whole study; the others send theirs.
Study merge_ranks(const mpi::World& world, const Study& part, const StudyOptions& options) {
  StatsFile merged = stats_of(part, options);
  world.gather_in_rank_order(world.rank() == 0 ? "" : stats_bytes(merged, version), [&](int from, std::string bytes) {
    const std::string name = "rank " + std::to_string(from);
    merged = merge_stats({std::move(merged), parse_stats(name, bytes)}, {"ranks 0 to " + std::to_string(from - 1), name});
  });
  if (world.rank() != 0) return part;
  Study whole = study_of(merged, "the ranks' Moments");
  whole.batch_rows = part.batch_rows;  // every rank batches alike
  return whole;
}

int run_align(const mpi::World& world, const std::vector<std::string>& net_arguments, const std::string& from_stats,
              const CommonOptions& common, StudyOptions options, AlignSettings settings,
              const std::string& backend_name, std::string precision,
              const ReportArguments& report_arguments, bool plan_only) {
  const auto start = std::chrono::steady_clock::now();
  const std::string analyses_given = settings.analyses;
  bool run_mi = false;
  MiOptions mi;
  std::vector<SkippedAnalysis> skipped;
  std::optional<OutputDir> out;  // rank 0's
  std::unique_ptr<Backend> backend;
  Study study;
  ProgressBar progress;
  PhaseLog phases;
  MemoryPlan plan;
  std::string failure;
  // Everything up to the end of the pass may fail on one rank alone: under mpirun the ranks then agree on
  // the first failure (first_failure) and all stop with its message before anything is written.
  try {
    const std::vector<NetSource> nets = parse_net_arguments(net_arguments);
    if (from_stats.empty() && nets.size() < 2) throw Error("align needs at least two nets (or --from-stats FILE)");
    if (!from_stats.empty() && !nets.empty()) throw Error("align takes nets or --from-stats FILE, not both");
    if (!from_stats.empty() && world.size() > 1) throw Error("align --from-stats runs as one process, not under mpirun");
    if (options.samples == Samples::images && world.size() > 1)
      throw Error("--samples images runs as one process, not under mpirun (its minibatches span the ranks' inputs)");
    options.precision = parse_precision(precision);
    const bool mi_named = settings.analyses != "all";
    std::tie(run_mi, settings.analyses) = split_mutual_information(settings.analyses);
    if (run_mi && !from_stats.empty()) {
      const std::string reason =
          "mutual_information needs a second pass over the activations (bin edges from the Moments, then joint "
          "counts of every unit pair); a stats file holds the Moments alone: run align on the .npy files";
      if (mi_named) throw Error("--from-stats: " + reason);
      skipped.push_back({"mutual_information", reason});
      run_mi = false;
    }
    settings.threads = common.threads;
    mi = mi_options(settings);  // bad MI options fail now too
    check_align_settings(settings);  // a bad list fails now, not after the long pass
    const AnalysisSelection selection = parse_analyses(settings.analyses);
    if (common.check_only) return 0;
    if (!report_arguments.skip) report::require_vega(report::vega_directory(), "skip the report with --no-report");  // before the long pass
    // One GPU per rank on a node (local rank modulo the devices); without a GPU the CPU.
    const int device = world.local_rank() % std::max(1, detail::cuda_device_count());
    backend = make_backend(backend_choice(backend_name), {common.threads, device});
    const MatrixOutputs matrices = matrix_outputs(settings);
    if (from_stats.empty()) {
      // The memory plan, from the files' headers alone: a job that cannot fit stops here, before any data is read.
      const StudyInputs inputs = inspect_study(nets, options);
      MemoryJob job;
      for (const NetInfo& net : inputs.nets) {
        job.units_per_net.push_back(net.units);
        job.input_row_bytes += net.units * dtype_size(net.dtype);
      }
      job.samples = inputs.samples;
      job.batch_rows = inputs.batch_rows;
      job.rows_per_input = inputs.rows_per_input;
      if (options.samples == Samples::images) {
        for (const NetInfo& net : inputs.nets) job.image_features.push_back(net.units * inputs.rows_per_input);
        job.image_exact_features = options.image_exact_features;
        job.image_minibatch = options.image_minibatch;
      }
      job.cuda = backend->kind() == BackendKind::cuda;
      job.clustering = settings.clusters != "none";
      if (job.clustering && settings.clusters != "auto")
        job.eigenpairs = std::max<std::int64_t>(1, std::atoll(settings.clusters.c_str()));
      job.sparse_prediction = selection.sparse_prediction;
      job.threads = thread_count(common.threads);
      job.similarity_indices =
          selection.linear_cka || selection.cca || selection.svcca || selection.pwcca || selection.procrustes;
      job.mutual_information = run_mi;
      job.mi_quantile = mi.binning == MiBinning::quantile;
      job.mi_slots = job.mi_quantile ? mi.bins + 1 : mi.bins;
      job.mi_memory_budget_bytes = mi.memory_budget_bytes;
      job.report = !report_arguments.skip;
      job.save_matrices = matrices.save;
      job.matrices_float32 = matrices.float32;
      const double resident_mib = detail::status_mib("VmRSS");  // with the backend's libraries loaded; NaN off Linux
      if (std::isfinite(resident_mib)) job.resident_bytes = static_cast<std::int64_t>(resident_mib * 1048576.0);
      plan = plan_memory(job);
      const AvailableMemory available = available_host_memory();
      if (plan_only) {
        std::cout << format_plan(plan, available);
        return 0;
      }
      check_plan_fits(job, plan, available);
    } else if (plan_only) {
      throw Error("--plan works on .npy files, not --from-stats");
    }
    if (world.rank() == 0) {
      out.emplace(common.out_dir);  // fails now, not after the long pass, if DIR is unwritable
      out->set_stop_check(throw_if_interrupted);
    }
    phases.start("streaming");
    options.progress = [&](std::int64_t done, std::int64_t total) {
      throw_if_interrupted();
      if (world.stop_requested()) throw StoppedByOtherRank();
      stop_for_test("pass");
      progress.update(done, total);
    };
    if (!from_stats.empty()) {
      const StatsFile stats = read_stats_file(from_stats);
      study = study_of(stats, from_stats);
      precision = to_string(stats.study.precision);
    } else {
      study = world.size() == 1 ? accumulate_study(*backend, nets, options) : pass_of_rank(world, *backend, nets, options);
    }
  } catch (const StoppedByOtherRank&) {
  } catch (const std::exception& e) {
    if (world.size() == 1) throw;
    failure = e.what();
  }
  if (world.size() > 1) {
    if (const std::string first = world.first_failure(failure); !first.empty()) throw Error(first);
    study = merge_ranks(world, study, options);
    if (world.rank() != 0) return 0;
  }
  phases.start("correlation");
  // The correlation in the comoment's storage: one U x U float64 from here on (the memory plan counts one).
  finish_study(*backend, study, options.dead_threshold, ComomentAfterStudy::hand_over);
  const auto phase = [&phases](const std::string& name) { phases.start(name); };
  const AlignResults results = align_study(*backend, study, settings, phase);
  const auto& pairs = results.pairs;
  const auto& spectral = results.spectral;
  std::optional<MiReport> mi_report;
  if (run_mi) {
    phases.start("mutual information");
    ProgressBar mi_progress;
    mi.progress = [&](const std::string&, std::int64_t done, std::int64_t total) {
      throw_if_interrupted();
      mi_progress.update(done, total);
    };
    mi_report = align_all_pairs_by_mi(*backend, study, pairs, mutual_information(*backend, study, options, mi),
                                      mi.memory_budget_bytes, std::max(1, common.threads));
  }
  nlohmann::json run_settings = align_settings_json(settings);
  run_settings.update({{"layout", options.layout == Layout::channels_last ? "channels-last" : "channels-first"},
                       {"samples", options.samples == Samples::images ? "images" : "positions"},
                       {"batch_rows", study.batch_rows},
                       {"ranks", world.size()},
                       {"from_stats", from_stats},
                       {"precision", precision},
                       {"skip_nonfinite", options.skip_nonfinite_rows},
                       {"dead_threshold", options.dead_threshold},
                       {"analyses", analyses_given}});
  const nlohmann::json run =
      run_section(version, study.backend, thread_count(common.threads), seconds_since(start), run_settings);
  const std::string layer = report::layer_name_of(common.out_dir);
  std::optional<report::ReportOptions> report_options;
  if (!report_arguments.skip) {
    report_options.emplace();
    report_options->title = report_arguments.title.empty() ? "convergent report: " + layer : report_arguments.title;
    report_options->max_image_side = report_arguments.max_image_side;
  }
  stop_for_test("write");
  stage_align_outputs(*out, study, settings, results, mi_report, skipped, run, layer, report_options, phase);
  stop_for_test("commit");
  out->commit();  // throws Interrupted after a signal while the outputs were written: none is put in place
  phases.finish();
  for (const PairReport& pair : pairs)
    std::cout << study.nets[pair.a].name << " vs " << study.nets[pair.b].name
              << ": semi-matching mean corr " << pair.alignment.semi_mean_corr << ", matching mean corr "
              << pair.alignment.matching_mean_corr << "\n";
  if (mi_report)
    for (std::size_t k = 0; k < pairs.size(); ++k)
      std::cout << study.nets[pairs[k].a].name << " vs " << study.nets[pairs[k].b].name << ": MI matching mean "
                << mi_report->pairs[k].alignment.matching_mean_corr << " " << to_string(mi.base) << ", "
                << 100.0 * mi_report->pairs[k].same_matching_as_correlation << "% of matches as by correlation\n";
  if (spectral)
    std::cout << "spectral clustering: k = " << spectral->result.k << " (" << to_string(spectral->result.k_rule)
              << "), normalised cut " << spectral->result.normalized_cut << ", "
              << 100.0 * spectral->result.mixed_share << "% of live units in mixed clusters\n";
  std::cout << "wrote " << common.out_dir << "/summary.json (" << study.moments.samples << " samples, "
            << study.backend << ")\n";
  for (const SkippedAnalysis& s : skipped) std::cout << "skipped " << s.name << ": " << s.reason << "\n";
  if (!report_arguments.skip) std::cout << "report: " << common.out_dir << "/report.html\n";
  std::cout << "phases (wall time, peak resident so far): " << phases.text();
  if (plan.peak_host_bytes > 0) std::cout << "; planned peak " << format_bytes(plan.peak_host_bytes);
  std::cout << "\n";
  return 0;
}

// `convergent report`: report.html over finished align outputs (one directory per layer, or manifests),
// and the paper's table on stdout.
int run_report(const std::vector<std::string>& inputs, const std::string& out_path, const ReportArguments& arguments) {
  report::ReportOptions options;
  if (!arguments.title.empty()) options.title = arguments.title;
  options.max_image_side = arguments.max_image_side;
  const report::WrittenReport written = report::write_report(inputs, out_path, options);
  std::cout << report::format_study_table(report::study_table(written.layers)) << "\nreport: " << written.path
            << " (" << (written.bytes + 512) / 1024 << " KiB, " << written.figures << " figures, "
            << written.layers.size() << (written.layers.size() == 1 ? " layer" : " layers") << ")\n";
  return 0;
}

int run_match(const std::string& corr_path, const CommonOptions& common, const std::string& name_a,
              const std::string& name_b) {
  check_net_name(name_a, "--name-a");
  check_net_name(name_b, "--name-b");
  if (name_a == name_b) throw Error("--name-a and --name-b are both '" + name_a + "'; the two nets need two names");
  if (common.check_only) return 0;
  const auto start = std::chrono::steady_clock::now();
  OutputDir out(common.out_dir);
  out.set_stop_check(throw_if_interrupted);
  const Matrix corr = read_correlation_npy(corr_path);
  auto backend = make_backend(BackendChoice::cpu, {common.threads, 0});
  const PairAlignment alignment = align_pair(*backend, corr.view(), std::max(1, common.threads));
  stage_match_outputs(out, corr_path, name_a, name_b, corr.view(), alignment,
                      run_section(version, backend->description(), thread_count(common.threads), seconds_since(start),
                                  {{"name_a", name_a}, {"name_b", name_b}}));
  out.commit();
  std::cout << "semi-matching mean corr " << alignment.semi_mean_corr << ", matching mean corr "
            << alignment.matching_mean_corr << "\nwrote " << common.out_dir << "/summary.json\n";
  return 0;
}

}  // namespace

int convergent::cli::run_command_line(int argc, char** argv, CliMode mode) {
  CLI::App app{"convergent: do different neural networks learn the same features?"};
  app.require_subcommand(0, 1);
  bool show_version = false;
  app.add_flag("--version", show_version, "List the compiled and usable backends");

  CommonOptions common;
  common.check_only = mode == CliMode::check_only;
  std::vector<std::string> net_arguments;
  StudyOptions study_options;
  std::string backend_name = "auto", precision = "fp32", layout = "channels-first";
  // The options of a pass over the activations, shared by align and stats; returns those that only a pass
  // reads (align --from-stats excludes them: the stats file records what its pass used).
  auto add_pass_options = [&](CLI::App* command) {
    auto* nets = command->add_option("nets", net_arguments, "[NAME=]PATH of each net's activations (.npy, 2-D, 3-D or 4-D)")
                     ->expected(1, -1);  // fewer than 2: align's and stats's own message, which names --from-stats
    auto* layout_option =
        command
            ->add_option("--layout", layout,
                         "Where the units sit in 3-D and 4-D activations: channels-first, (N, C, L) or (N, C, H, W); "
                         "channels-last, (N, L, C) or (N, H, W, C). nchw and nhwc are aliases")
            ->check(CLI::IsMember({"channels-first", "channels-last", "nchw", "nhwc"}))
            ->capture_default_str();
    auto* batch_rows = command->add_option("--batch-rows", study_options.batch_rows, "Sample rows per batch (0: automatic)")
                           ->check(CLI::Range(std::int64_t{0}, std::int64_t{1} << 40));
    command->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
    command->add_option("--backend", backend_name, "Compute backend")->check(CLI::IsMember({"auto", "cpu", "cuda"}));
    auto* precision_option = command->add_option("--precision", precision, "Batch product precision (tf32/bf16 need CUDA)")
                                 ->check(CLI::IsMember({"fp32", "tf32", "bf16"}));
    auto* skip = command->add_flag("--skip-nonfinite", study_options.skip_nonfinite_rows,
                                   "Drop sample rows holding NaN or infinity instead of failing (the count is reported)");
    return std::vector<CLI::Option*>{nets, layout_option, batch_rows, precision_option, skip};
  };
  auto* align = app.add_subcommand("align", "Correlate the units of two or more nets and match them, all pairs");
  const auto pass_options = add_pass_options(align);
  align->add_option("--out", common.out_dir, "Output directory")->required();
  std::string from_stats;
  auto* from_stats_option = align->add_option(
      "--from-stats", from_stats,
      "Analyse the Moments of a stats file (convergent stats / merge) instead of activations; mutual information "
      "needs the activations and is skipped (an error when named in --analyses)");
  for (CLI::Option* option : pass_options) from_stats_option->excludes(option);
  std::string samples = "positions";
  from_stats_option->excludes(
      align->add_option("--samples", samples,
                        "What a sample is: positions (every (input, y, x); the paper's choice, for every analysis) "
                        "or images (in addition, image-level linear CKA on each input's flattened features: exact "
                        "up to 4096 features in all, else Nguyen et al.'s minibatch estimator over 256 inputs)")
          ->check(CLI::IsMember({"positions", "images"}))
          ->capture_default_str());

  AlignSettings settings;
  align->add_option("--clusters", settings.clusters,
                    "Spectral clustering of all units: K clusters, auto (largest eigengap) or none")
      ->capture_default_str();
  align->add_option("--affinity", settings.affinity, "Affinity from correlation: abs, positive or shifted")
      ->check(CLI::IsMember({"abs", "positive", "shifted"}))
      ->capture_default_str();
  align->add_option("--seed", settings.seed, "k-means++ seed (same seed, same clusters)")
      ->check(CLI::Validator(check_seed, ""))
      ->capture_default_str();
  align->add_option("--dead-threshold", study_options.dead_threshold,
                    "A unit is dead when constant, or when std <= this x (max - min); 0 keeps every unit that varies")
      ->check(CLI::Range(0.0, 1.0));
  align->add_option("--analyses", settings.analyses,
                    "Analyses to run: all, none, or a comma-separated list of " + analysis_names() + ",mutual_information")
      ->capture_default_str();
  align->add_option("--mi-binning", settings.mi_binning,
                    "Mutual information bins per unit: quantile (percentiles of the non-zero values, exact zeros "
                    "in a bin of their own) or equal-width (numpy.histogram's)")
      ->check(CLI::IsMember({"quantile", "equal-width"}))
      ->capture_default_str();
  align->add_option("--mi-bins", settings.mi_bins, "Mutual information bins per unit, B in [2, 255]")
      ->check(CLI::Range(2, 255))
      ->capture_default_str();
  align->add_option("--mi-base", settings.mi_base, "Mutual information in bits (2) or nats (e)")
      ->check(CLI::IsMember({"2", "e"}))
      ->capture_default_str();
  align->add_option("--mi-memory", settings.mi_memory_mib,
                    "MiB for the joint counts, 8 (units x bins)^2 bytes; above it the unit pairs are counted in "
                    "blocks, one pass each")
      ->check(CLI::Range(std::int64_t{1}, std::int64_t{1000000000}))
      ->capture_default_str();
  align->add_option("--lasso-alpha", settings.lasso_alphas,
                    "L1 penalties of sparse prediction, comma-separated (nearly dense to very sparse)")
      ->capture_default_str();

  ReportArguments report_arguments;
  align->add_flag("--no-report", report_arguments.skip, "Do not write report.html (it needs Vega: Debian's libjs-vega)");
  bool plan_only = false;
  align->add_flag("--plan", plan_only,
                  "Print the memory plan (peak per phase, passes over the data, available memory) and stop; reads "
                  "only the files' headers");
  align->add_option("--save-matrices", settings.save_matrices,
                    "Which .npy matrices to write: all; pairs (only the between-net blocks corr_A_B.npy and "
                    "mi_*_A_B.npy); none (summary.json and the CSV tables only)")
      ->check(CLI::IsMember({"all", "pairs", "none"}))
      ->capture_default_str();
  align->add_option("--matrix-dtype", settings.matrix_dtype, "dtype of the .npy matrices written")
      ->check(CLI::IsMember({"float64", "float32"}))
      ->capture_default_str();

  std::vector<std::string> report_inputs;
  std::string report_out;
  auto* report_command = app.add_subcommand(
      "report", "report.html and the paper's table over finished align outputs (one directory per layer)");
  report_command
      ->add_option("inputs", report_inputs,
                   "[NAME=]DIR of each layer's align output (named by its directory unless NAME= is given), or a "
                   "study manifest: {\"layers\": [{\"name\": ..., \"dir\": ...}]}, directories relative to it")
      ->required()
      ->expected(1, -1);
  report_command->add_option("--out", report_out,
                             "The HTML file to write (default: report.html beside a single input; needed for several)");
  report_command->add_option("--title", report_arguments.title, "Title of the page");
  report_command
      ->add_option("--max-image-side", report_arguments.max_image_side,
                   "Matrices with more units are drawn at this many pixels a side, each pixel the strongest entry of its block")
      ->check(CLI::Range(report::min_image_side, report::max_image_side_limit))
      ->capture_default_str();

  std::string rows, stats_out;
  auto* stats = app.add_subcommand("stats", "Save the Moments of a range of inputs, for merge and align --from-stats");
  add_pass_options(stats);
  stats->add_option("--out", stats_out, "The stats file to write (.npz; numpy.load reads it)")->required();
  stats->add_option("--rows", rows,
                    "Inputs BEGIN:END (END excluded): images of 3-D/4-D files, rows of 2-D ones; all when absent");

  std::vector<std::string> merge_inputs;
  std::string merge_out;
  auto* merge_command = app.add_subcommand("merge", "Merge stats files of one study's shards into one (exact, any order)");
  merge_command->add_option("files", merge_inputs, "Stats files of contiguous, non-overlapping input ranges")
      ->required()
      ->expected(1, -1);
  merge_command->add_option("--out", merge_out, "The merged stats file to write")->required();

  std::string corr_path, name_a = "a", name_b = "b";
  auto* match = app.add_subcommand("match", "One-to-one and semi-matching of a correlation matrix you already have");
  match->add_option("corr", corr_path, "CORR.npy: rows = units of net A, columns = units of net B")->required();
  match->add_option("--out", common.out_dir, "Output directory")->required();
  match->add_option("--threads", common.threads, "CPU threads (0: all cores)")->check(CLI::Range(0, 4096));
  match->add_option("--name-a", name_a, "Name of the rows' net in file names");
  match->add_option("--name-b", name_b, "Name of the columns' net in file names");

  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError& e) {
    // --help prints and exits 0; every mistake on the command line exits 1, like any other bad input.
    return app.exit(e) == 0 ? 0 : 1;
  }
  if (!common.check_only) {
    std::signal(SIGINT, on_interrupt);
    std::signal(SIGTERM, on_interrupt);
    std::signal(SIGHUP, on_interrupt);
    struct sigaction bus_error {};
    bus_error.sa_sigaction = on_bus_error;
    bus_error.sa_flags = SA_SIGINFO;
    sigaction(SIGBUS, &bus_error, nullptr);
    static const bool watchdog = (start_interruption_watchdog(), true);
    (void)watchdog;
  }
  std::optional<mpi::World> world;  // under mpirun only rank 0 reports errors: every rank has the same one
  try {
    world.emplace(argc, argv);
    if (world->size() > 1 && !align->parsed())
      throw Error("only align runs under mpirun; stats shards take --rows instead (README, Sharded studies)");
    if (show_version) {
      if (!common.check_only) print_version();
      return 0;
    }
    study_options.layout =
        layout == "channels-last" || layout == "nhwc" ? Layout::channels_last : Layout::channels_first;
    study_options.samples = samples == "images" ? Samples::images : Samples::positions;
    if (align->parsed()) {
      return run_align(*world, net_arguments, from_stats, common, study_options, settings, backend_name,
                       precision, report_arguments, plan_only);
    }
    if (stats->parsed()) return run_stats(net_arguments, common, study_options, backend_name, precision, rows, stats_out);
    // merge and report check nothing before they read their input files.
    if (merge_command->parsed()) return common.check_only ? 0 : run_merge(merge_inputs, merge_out);
    if (report_command->parsed()) return common.check_only ? 0 : run_report(report_inputs, report_out, report_arguments);
    if (match->parsed()) return run_match(corr_path, common, name_a, name_b);
    std::cout << app.help();
    return 0;
  } catch (const Interrupted& e) {
    std::cerr << "\nconvergent: " << e.what() << "\n";
    return 130;
  } catch (const std::exception& e) {
    if (!world || world->rank() == 0) std::cerr << "convergent: error: " << e.what() << "\n";
    return 1;
  }
}

#ifndef CONVERGENT_CLI_NO_MAIN  // defined by the command-line fuzz target, which has libFuzzer's main
int main(int argc, char** argv) {
  return convergent::cli::run_command_line(argc, argv, convergent::cli::CliMode::run);
}
#endif
