// convergent._core: the Study of the Python package. Batches of every net are queued as they come (from
// forward hooks, one net at a time) and accumulated, with the GIL released, as soon as every net has one:
// the k-th batch of each net must hold the same inputs. The pure-Python layer (convergent/__init__.py)
// documents the API; this file keeps the memory of every batch alive until the accumulator is done with it.
#include <pybind11/numpy.h>
#include <pybind11/pybind11.h>
#include <pybind11/stl.h>

#include <algorithm>
#include <chrono>
#include <cstring>
#include <deque>
#include <mutex>
#include <numeric>
#include <optional>
#include <tuple>

#include "analysis/align_job.hpp"
#include "convergent/convergent.hpp"
#include "cpu/parallel.hpp"
#include "dlpack_block.hpp"
#include "report/html_report.hpp"
#include "report/study_table.hpp"
#include "report/vega_bundle.hpp"

namespace py = pybind11;

namespace convergent::python {
namespace {

constexpr const char* version = CONVERGENT_VERSION;

Layout parse_layout(const std::string& text) {
  if (text == "channels-first" || text == "nchw") return Layout::channels_first;
  if (text == "channels-last" || text == "nhwc") return Layout::channels_last;
  throw Error("layout '" + text + "': expected channels-first or channels-last (nchw, nhwc)");
}

BackendChoice parse_backend(const std::string& text) {
  if (text == "auto") return BackendChoice::automatic;
  if (text == "cpu") return BackendChoice::cpu;
  if (text == "cuda") return BackendChoice::cuda;
  throw Error("backend '" + text + "': expected auto, cpu or cuda");
}

std::string shape_string(const std::vector<std::int64_t>& shape) {
  std::string text = "(";
  for (std::size_t k = 0; k < shape.size(); ++k) text += (k ? ", " : "") + std::to_string(shape[k]);
  return text + (shape.size() == 1 ? ",)" : ")");
}

// A copy of a vector as a 1-D numpy array, or of a matrix as a 2-D one.
template <class T>
py::array_t<T> to_numpy(const std::vector<T>& v) {
  py::array_t<T> out(static_cast<py::ssize_t>(v.size()));
  std::copy(v.begin(), v.end(), out.mutable_data());
  return out;
}

// A study's batches handed in again for mutual information's further passes (bin edges, then counts):
// `replay()` returns an iterable of {net name: numpy array}, every net's batches of the moments pass in the
// same order (their sizes may differ from the first time). Each pass calls it once; the rows of each
// window are copied into host buffers, image-major with units last, in each net's dtype (native byte
// order), since windows cut across the caller's batches. Called with the GIL released; takes it to call
// Python.
class ReplaySource final : public RowSource {
 public:
  struct Net {
    std::string name;
    std::vector<std::int64_t> shape;  // of the first batch of the moments pass
    DType dtype;
    std::int64_t units, height, width;
  };

  ReplaySource(py::object replay, std::vector<Net> nets, Layout layout, std::int64_t samples)
      : replay_(std::move(replay)), nets_(std::move(nets)), layout_(layout), samples_(samples),
        queued_(nets_.size()) {}

  ~ReplaySource() override {
    py::gil_scoped_acquire gil;
    iterator_ = py::object();
  }

  std::size_t nets() const override { return nets_.size(); }
  std::int64_t pixels(std::size_t net) const override { return nets_[net].height * nets_[net].width; }
  std::int64_t samples() const override { return samples_; }

  void begin_window(std::int64_t first_row, std::int64_t rows) const override {
    py::gil_scoped_acquire gil;
    try {
      if (first_row == 0) {
        iterator_ = py::iter(replay_());
        given_ = 0;
        for (auto& q : queued_) q.clear();
      } else {
        for (std::size_t net = 0; net < nets_.size(); ++net) {  // the previous window is read
          const auto done = static_cast<std::ptrdiff_t>((first_row - window_) / pixels(net) * image_bytes(net));
          queued_[net].erase(queued_[net].begin(), queued_[net].begin() + done);
        }
      }
      window_ = first_row;
      while (!holds(rows)) {
        if (!pull())
          throw Error("mutual information: replay() gave " + std::to_string(given_) + " sample rows, but the moments "
                      "pass read " + std::to_string(samples_) + "; it must give the same batches again");
      }
      if (first_row + rows == samples_ && pull())
        throw Error("mutual information: replay() gave more than the " + std::to_string(samples_) +
                    " sample rows of the moments pass; it must give the same batches again");
    } catch (py::error_already_set& e) {
      throw Error(std::string("mutual information: replay() raised ") + e.what());
    }
  }

  ActivationBlock block(std::size_t net, std::int64_t first, std::int64_t count) const override {
    const Net& n = nets_[net];
    ActivationBlock b;
    b.data = queued_[net].data() + (first - window_ / pixels(net)) * image_bytes(net);
    b.dtype = n.dtype;
    b.images = count;
    b.units = n.units;
    b.height = n.height;
    b.width = n.width;
    b.unit_stride = 1;
    b.x_stride = n.units;
    b.y_stride = n.width * n.units;
    b.image_stride = n.height * n.width * n.units;
    return b;
  }

  [[noreturn]] void nonfinite(std::size_t net, std::int64_t row, std::int64_t unit) const override {
    throw Error("mutual information: net '" + nets_[net].name + "': NaN or infinity at sample row " +
                std::to_string(row) + " of the replayed batches, unit " + std::to_string(unit) +
                "; pass skip_nonfinite=True to drop such rows");
  }

 private:
  std::size_t image_bytes(std::size_t net) const {
    return static_cast<std::size_t>(pixels(net) * nets_[net].units * dtype_size(nets_[net].dtype));
  }

  bool holds(std::int64_t rows) const {
    for (std::size_t net = 0; net < nets_.size(); ++net)
      if (queued_[net].size() < static_cast<std::size_t>(rows / pixels(net)) * image_bytes(net)) return false;
    return true;
  }

  // Appends the next batch of every net to its queue; false when replay's batches are over.
  bool pull() const {
    if (!iterator_ || PyIter_Check(iterator_.ptr()) == 0) return false;
    PyObject* next = PyIter_Next(iterator_.ptr());
    if (next == nullptr) {
      if (PyErr_Occurred()) throw py::error_already_set();
      iterator_ = py::object();
      return false;
    }
    const py::object item = py::reinterpret_steal<py::object>(next);
    std::int64_t rows = -1;
    for (std::size_t net = 0; net < nets_.size(); ++net) {
      const Net& n = nets_[net];
      const std::string what = "mutual information: replayed batch of net '" + n.name + "'";
      const ArrayBatch batch = numpy_batch(what, item[py::str(n.name)].cast<py::array>(), layout_);
      const ActivationBlock& b = batch.block;
      if (b.dtype != n.dtype || b.units != n.units || b.height != n.height || b.width != n.width)
        throw Error(what + ": shape " + shape_string(batch.shape) + " " + dtype_name(b.dtype) +
                    ", but the moments pass had " + shape_string(n.shape) + " " + dtype_name(n.dtype));
      if (rows >= 0 && b.rows() != rows)
        throw Error(what + ": " + std::to_string(b.rows()) + " sample rows, but the other nets' batch has " +
                    std::to_string(rows));
      rows = b.rows();
      append_images(b, queued_[net]);
    }
    given_ += rows;
    return true;
  }

  // The images of `b`, image-major, then y, x, units last; bytes swapped to native order.
  static void append_images(const ActivationBlock& b, std::vector<unsigned char>& out) {
    const int size = dtype_size(b.dtype);
    const auto* src = static_cast<const unsigned char*>(b.data);
    std::size_t at = out.size();
    out.resize(at + static_cast<std::size_t>(b.rows() * b.units * size));
    for (std::int64_t i = 0; i < b.images; ++i)
      for (std::int64_t y = 0; y < b.height; ++y)
        for (std::int64_t x = 0; x < b.width; ++x)
          for (std::int64_t u = 0; u < b.units; ++u, at += static_cast<std::size_t>(size)) {
            const unsigned char* e = src + (i * b.image_stride + u * b.unit_stride + y * b.y_stride + x * b.x_stride) * size;
            if (b.big_endian) {
              std::reverse_copy(e, e + size, out.data() + at);
            } else {
              std::memcpy(out.data() + at, e, static_cast<std::size_t>(size));
            }
          }
  }

  py::object replay_;
  std::vector<Net> nets_;
  Layout layout_;
  std::int64_t samples_;
  // The rows of the current window onwards, per net; the window's first row.
  mutable std::vector<std::vector<unsigned char>> queued_;
  mutable std::int64_t window_ = 0;
  mutable py::object iterator_;
  mutable std::int64_t given_ = 0;  // sample rows replay() gave in this pass
};

class Study {
 public:
  Study(std::vector<std::string> names, const std::string& layout, const std::string& backend, int threads,
        double dead_threshold, bool skip_nonfinite, std::int64_t batch_rows, const std::string& precision)
      : names_(std::move(names)), layout_(parse_layout(layout)), threads_(threads), dead_threshold_(dead_threshold),
        batch_rows_(batch_rows), start_(std::chrono::steady_clock::now()) {
    if (names_.size() < 2) throw Error("a study needs at least two nets");
    for (std::size_t i = 0; i < names_.size(); ++i) {
      check_net_name(names_[i], "Study");
      for (std::size_t j = 0; j < i; ++j)
        if (names_[i] == names_[j]) throw Error("Study: net '" + names_[i] + "' is registered twice");
    }
    check_output_names(names_, "rename a net");
    if (!(dead_threshold >= 0.0 && dead_threshold < 1.0))
      throw Error("the dead-unit threshold must be in [0, 1), not " + std::to_string(dead_threshold));
    if (batch_rows < 0) throw Error("batch_rows must be positive (0: automatic)");
    if (threads < 0) throw Error("threads must be at least 0 (0: all cores)");
    accumulate_.precision = parse_precision(precision);
    accumulate_.skip_nonfinite_rows = skip_nonfinite;
    backend_ = make_backend(parse_backend(backend), {threads, 0});
    device_ = backend_->kind() == BackendKind::cuda ? 0 : -1;
    nets_.resize(names_.size());
    queues_.resize(names_.size());
  }

  const std::vector<std::string>& names() const { return names_; }
  std::string backend_description() const { return backend_->description(); }
  // The CUDA device the study computes on (whose tensors it reads in place), or -1 for the CPU.
  int device() const { return device_; }

  void add_numpy(const std::string& name, const py::array& array) {
    const std::size_t net = index_of(name);
    queue(net, numpy_batch(what(net), array, layout_));
  }

  void add_dlpack(const std::string& name, const py::capsule& capsule) {
    const std::size_t net = index_of(name);
    ArrayBatch batch = dlpack_batch(what(net), capsule, layout_);
    // A CUDA tensor is read in place by the CUDA accumulator on its device (no host copy); anything else
    // would need a copy the caller did not ask for.
    const int device = batch.block.device;
    if (device >= 0 && device != device_)
      throw Error(what(net) + ": a CUDA tensor on device " + std::to_string(device) + ", but the study computes on " +
                  (device_ < 0 ? backend_->description() : "CUDA device " + std::to_string(device_)) +
                  "; create the Study with backend='cuda' (CUDA device 0), or pass tensor.cpu()");
    queue(net, std::move(batch));
  }

  // Batches queued for each net, not yet matched by every other net.
  std::vector<std::int64_t> pending() const {
    std::vector<std::int64_t> counts;
    for (const auto& q : queues_) counts.push_back(static_cast<std::int64_t>(q.size()));
    return counts;
  }

  // The completed study (moments, dead units, correlation) of every batch so far. Throws Error when the
  // nets have not received the same batches.
  convergent::Study study() {
    check_usable();
    for (std::size_t net = 0; net < names_.size(); ++net)
      if (!queues_[net].empty() || nets_[net].batches != nets_.front().batches) {
        std::string counts;
        for (std::size_t k = 0; k < names_.size(); ++k)
          counts += (k ? ", " : "") + names_[k] + " " + std::to_string(nets_[k].batches + queues_[k].size()) +
                    " (" + std::to_string(nets_[k].rows + queued_rows(k)) + " sample rows)";
        throw Error("the nets were not given the same batches: " + counts +
                    "; every net needs the same inputs, batch by batch");
      }
    if (!accumulator_) throw Error("no batches were added; correlations need at least 2 samples");
    convergent::Study study;
    {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      study.moments = accumulator_->moments();
      study.skipped_rows = accumulator_->skipped_rows();
    }
    if (study.moments.samples < 2)
      throw Error(std::to_string(study.moments.samples) + " sample row(s)" +
                  (study.skipped_rows ? " free of NaN/infinity" : std::string()) + "; correlations need at least 2");
    std::int64_t offset = 0;
    for (std::size_t net = 0; net < names_.size(); ++net) {
      const NetState& s = nets_[net];
      std::vector<std::int64_t> shape = s.shape;
      shape[0] = s.inputs;
      study.nets.push_back({names_[net], "(python)", shape, s.dtype, s.units, offset});
      offset += s.units;
    }
    study.backend = backend_->description();
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);  // the backend is not shared between threads
    finish_study(*backend_, study, dead_threshold_);
    return study;
  }

  py::dict moments() {
    const convergent::Study s = study();
    const Moments& m = s.moments;
    const std::int64_t u = m.units();
    py::array_t<double> covariance({u, u});
    double* c = covariance.mutable_data();
    for (std::int64_t i = 0; i < u; ++i)
      for (std::int64_t j = 0; j < u; ++j) c[i * u + j] = m.covariance(i, j);
    py::array_t<double> correlation({u, u});
    std::copy(s.correlation.data(), s.correlation.data() + u * u, correlation.mutable_data());
    py::array_t<bool> dead(u);
    for (std::int64_t i = 0; i < u; ++i) dead.mutable_data()[i] = s.dead[static_cast<std::size_t>(i)];
    py::dict out;
    out["samples"] = m.samples;
    out["skipped_rows"] = s.skipped_rows;
    out["nets"] = names_;
    out["units"] = m.net_units;
    out["mean"] = to_numpy(m.mean);
    out["std"] = to_numpy(m.stddev());
    out["min"] = to_numpy(m.min);
    out["max"] = to_numpy(m.max);
    out["covariance"] = covariance;
    out["correlation"] = correlation;
    out["dead"] = dead;
    out["backend"] = s.backend;
    return out;
  }

  // Everything align writes, into `dir` (created; written under temporary names, renamed when complete).
  // `convergent stats`' file of the batches so far, as inputs [first_input, first_input + n) of a study of
  // total_inputs inputs (0: these batches are the whole study), so that shards of one study made by
  // several processes (or by the CLI) merge with `convergent merge`.
  void save_stats(const std::string& path, std::int64_t first_input, std::int64_t total_inputs) {
    convergent::Study s = study();
    std::int64_t whole = 1;
    for (const NetState& n : nets_) whole = std::lcm(whole, n.height * n.width);
    const std::int64_t inputs = nets_.front().rows / whole;
    if (total_inputs == 0) total_inputs = inputs;
    if (first_input < 0 || first_input + inputs > total_inputs)
      throw Error("save_stats: these batches hold " + std::to_string(inputs) + " inputs, which do not fit at input " +
                  std::to_string(first_input) + " of a study of " + std::to_string(total_inputs));
    for (std::size_t net = 0; net < nets_.size(); ++net)
      s.nets[net].shape[0] = total_inputs * whole / (nets_[net].height * nets_[net].width);
    s.inputs = total_inputs;
    s.rows_per_input = whole;
    s.range = {first_input, first_input + inputs};
    StudyOptions options;
    options.layout = layout_;
    options.skip_nonfinite_rows = accumulate_.skip_nonfinite_rows;
    options.precision = accumulate_.precision;
    py::gil_scoped_release release;
    write_stats_file(path, stats_of(s, options), version);
  }

  // With `replay` (see ReplaySource), mutual information too, as align computes it.
  void save(const std::string& dir, const AlignSettings& given, bool report, const std::string& title,
            std::int64_t max_image_side, const py::object& replay) {
    AlignSettings settings = given;
    settings.threads = threads_;
    bool run_mi = false;
    std::tie(run_mi, settings.analyses) = split_mutual_information(settings.analyses);
    check_align_settings(settings);
    const MiOptions mi = mi_options(settings);
    std::vector<SkippedAnalysis> skipped;
    if (run_mi && replay.is_none()) {
      const std::string reason =
          "mutual_information needs further passes over the activations (bin edges, then joint counts of every "
          "unit pair): pass replay, a function that gives the study's batches again";
      if (given.analyses != "all") throw Error(reason);
      skipped.push_back({"mutual_information", reason});
      run_mi = false;
    }
    std::optional<report::ReportOptions> report_options;
    const std::string layer = report::layer_name_of(dir);
    if (report) {
      report::require_vega(report::vega_directory(), "skip the report with save(..., report=False)");
      report_options.emplace();
      report_options->title = title.empty() ? "convergent report: " + layer : title;
      report_options->max_image_side = max_image_side;
      report::check_report_options(*report_options);  // now, not after the analyses
    }
    OutputDir out(dir);
    const convergent::Study s = study();
    std::optional<ReplaySource> source;
    if (run_mi) {
      std::vector<ReplaySource::Net> nets;
      for (std::size_t net = 0; net < names_.size(); ++net) {
        const NetState& n = nets_[net];
        nets.push_back({names_[net], n.shape, n.dtype, n.units, n.height, n.width});
      }
      source.emplace(replay, std::move(nets), layout_, s.moments.samples + s.skipped_rows);
    }
    // Ctrl-C while the work runs without the GIL: Python's handler only notes the signal for an interpreter
    // that is not running, so the work asks it at every phase and staged file, as align checks its own
    // flag, and leaves with the KeyboardInterrupt: staging removed, nothing written.
    const auto throw_if_interrupted = [] {
      py::gil_scoped_acquire gil;
      if (PyErr_CheckSignals() != 0) throw py::error_already_set();
    };
    const PhaseStart phase = [&](const std::string&) { throw_if_interrupted(); };
    out.set_stop_check(throw_if_interrupted);
    py::gil_scoped_release release;
    std::lock_guard<std::mutex> lock(mutex_);
    const AlignResults results = align_study(*backend_, s, settings, phase);
    std::optional<MiReport> mi_report;
    if (source)
      mi_report = align_all_pairs_by_mi(*backend_, s, results.pairs,
                                        mutual_information(*backend_, *source, s.moments, s.dead,
                                                           accumulate_.skip_nonfinite_rows, mi),
                                        mi.memory_budget_bytes, std::max(1, threads_));
    nlohmann::json run_settings = align_settings_json(settings);
    run_settings.update({{"analyses", given.analyses},
                         {"layout", layout_ == Layout::channels_last ? "channels-last" : "channels-first"},
                         {"batch_rows", piece_rows_},
                         {"from", "python"},
                         {"precision", to_string(accumulate_.precision)},
                         {"skip_nonfinite", accumulate_.skip_nonfinite_rows},
                         {"dead_threshold", dead_threshold_}});
    const double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start_).count();
    stage_align_outputs(out, s, settings, results, mi_report, skipped,
                        run_section(version, s.backend, thread_count(threads_), seconds, run_settings), layer,
                        report_options, phase);
    out.commit();
  }

 private:
  // What the study knows of one net: its first batch's shape and dtype, and what was accumulated.
  struct NetState {
    std::vector<std::int64_t> shape;  // of the first batch
    DType dtype = DType::float32;
    std::int64_t units = 0, height = 1, width = 1;
    std::int64_t batches = 0, inputs = 0, rows = 0;  // accumulated so far
  };

  std::size_t index_of(const std::string& name) const {
    for (std::size_t k = 0; k < names_.size(); ++k)
      if (names_[k] == name) return k;
    std::string known;
    for (const auto& n : names_) known += (known.empty() ? "" : ", ") + n;
    throw Error("unknown net '" + name + "'; the study's nets are " + known);
  }

  std::string what(std::size_t net) const {
    return "net '" + names_[net] + "' batch " + std::to_string(nets_[net].batches + queues_[net].size());
  }

  std::int64_t queued_rows(std::size_t net) const {
    std::int64_t rows = 0;
    for (const auto& b : queues_[net]) rows += b.block.rows();
    return rows;
  }

  void check_usable() const {
    if (!failure_.empty()) throw Error("the study stopped at an earlier error: " + failure_);
  }

  // Checks a batch against the net's earlier ones and against the other nets' batches of the same index,
  // queues it, and accumulates every batch index that all nets now have.
  void queue(std::size_t net, ArrayBatch batch) {
    check_usable();
    NetState& s = nets_[net];
    const ActivationBlock& b = batch.block;
    const auto& first = s.shape;
    if (s.batches + queues_[net].size() > 0) {
      const bool same = batch.shape.size() == first.size() &&
                        std::equal(batch.shape.begin() + 1, batch.shape.end(), first.begin() + 1);
      if (!same || b.dtype != s.dtype)
        throw Error(what(net) + ": shape " + shape_string(batch.shape) + " " + dtype_name(b.dtype) +
                    ", but its first batch was " + shape_string(first) + " " + dtype_name(s.dtype) +
                    "; batches of a net differ in the first axis alone");
    } else {
      s.shape = batch.shape;
      s.dtype = b.dtype;
      s.units = b.units;
      s.height = b.height;
      s.width = b.width;
    }
    // The batch of the same index of each other net that has one must hold the same inputs.
    const std::size_t index = queues_[net].size();
    for (std::size_t other = 0; other < names_.size(); ++other) {
      if (other == net || queues_[other].size() <= index) continue;
      const ActivationBlock& o = queues_[other][index].block;
      if (o.rows() != b.rows())
        throw Error(what(net) + ": " + std::to_string(b.rows()) + " sample rows, but " + names_[other] +
                    "'s batch of the same index has " + std::to_string(o.rows()) +
                    "; every net needs the same inputs, batch by batch");
      const std::int64_t po = o.height * o.width, pb = b.height * b.width;
      if (po > 1 && pb > 1 && o.images != b.images)
        throw Error(what(net) + ": " + std::to_string(b.images) + " inputs of " + std::to_string(pb) +
                    " positions, but " + names_[other] + "'s batch of the same index has " +
                    std::to_string(o.images) + " inputs of " + std::to_string(po) +
                    "; its rows would not be the same inputs");
    }
    queues_[net].push_back(std::move(batch));
    for (const auto& q : queues_)
      if (q.empty()) return;
    accumulate_front();
  }

  // Takes the first queued batch of every net and accumulates it with the GIL released, in pieces of at
  // most max_batch_rows rows (whole inputs of every net).
  void accumulate_front() {
    std::vector<ArrayBatch> set;
    for (auto& q : queues_) {
      set.push_back(std::move(q.front()));
      q.pop_front();
    }
    for (std::size_t net = 0; net < set.size(); ++net) {
      nets_[net].batches += 1;
      nets_[net].inputs += set[net].block.images;
      nets_[net].rows += set[net].block.rows();
    }
    std::int64_t whole = 1;
    for (const auto& b : set) whole = std::lcm(whole, b.block.height * b.block.width);
    if (!accumulator_) {
      std::vector<std::int64_t> units;
      for (const auto& s : nets_) units.push_back(s.units);
      const std::int64_t rows =
          batch_rows_ > 0 ? batch_rows_ : automatic_batch_rows(std::accumulate(units.begin(), units.end(), std::int64_t{0}));
      piece_rows_ = std::max<std::int64_t>(1, rows / whole) * whole;
      accumulate_.max_batch_rows = piece_rows_;
      accumulator_ = backend_->accumulator(units, accumulate_);
    }
    const std::int64_t piece = std::max<std::int64_t>(whole, piece_rows_ / whole * whole);
    const std::int64_t total = set.front().block.rows();
    std::vector<py::object> owners;
    for (auto& b : set) owners.push_back(std::move(b.owner));
    std::vector<std::int64_t> batch_index;  // read here, with the GIL: another thread may queue meanwhile
    for (const NetState& n : nets_) batch_index.push_back(n.batches - 1);
    try {
      py::gil_scoped_release release;
      std::lock_guard<std::mutex> lock(mutex_);
      std::vector<ActivationBlock> blocks(set.size());
      for (std::int64_t row = 0; row < total; row += piece) {
        const std::int64_t count = std::min(piece, total - row);
        for (std::size_t net = 0; net < set.size(); ++net) {
          const ActivationBlock& b = set[net].block;
          const std::int64_t pixels = b.height * b.width;
          blocks[net] = b;
          blocks[net].data = static_cast<const char*>(b.data) + row / pixels * b.image_stride * dtype_size(b.dtype);
          blocks[net].images = count / pixels;
        }
        try {
          accumulator_->add(blocks);
        } catch (const NonFiniteValueError& e) {
          const std::size_t n = static_cast<std::size_t>(e.net());
          throw Error("net '" + names_[n] + "' batch " + std::to_string(batch_index[n]) +
                      ": NaN or infinity at sample row " + std::to_string(row + e.row()) + " of the batch, unit " +
                      std::to_string(e.unit()) + "; pass skip_nonfinite=True to drop such rows");
        }
      }
      // The accumulator may read a batch until the next add() returns (GPU backends queue the work):
      // this batch's memory stays alive until then, the previous batch's is let go (with the GIL, below).
      std::swap(in_flight_, owners);
    } catch (const std::exception& e) {
      failure_ = e.what();
      throw;
    }
  }

  std::vector<std::string> names_;
  Layout layout_;
  int threads_;
  double dead_threshold_;
  std::int64_t batch_rows_;
  std::int64_t piece_rows_ = 0;
  std::chrono::steady_clock::time_point start_;  // summary.json's run.seconds: from the study's creation
  AccumulateOptions accumulate_;
  std::unique_ptr<Backend> backend_;
  int device_ = -1;  // see device()
  std::unique_ptr<MomentAccumulator> accumulator_;
  std::vector<NetState> nets_;
  std::vector<std::deque<ArrayBatch>> queues_;
  std::vector<py::object> in_flight_;
  std::mutex mutex_;  // the backend and accumulator, used with the GIL released: one thread at a time
  std::string failure_;
};

}  // namespace
}  // namespace convergent::python

PYBIND11_MODULE(_core, m) {
  using namespace convergent;
  using convergent::python::Study;
  m.doc() = "convergent's C++ core; use the convergent package";
  m.attr("__version__") = CONVERGENT_VERSION;
  py::register_exception<Error>(m, "Error", PyExc_RuntimeError);

  py::class_<AlignSettings>(m, "AlignSettings")
      .def(py::init<>())
      .def_readwrite("clusters", &AlignSettings::clusters)
      .def_readwrite("affinity", &AlignSettings::affinity)
      .def_readwrite("seed", &AlignSettings::seed)
      .def_readwrite("analyses", &AlignSettings::analyses)
      .def_readwrite("lasso_alphas", &AlignSettings::lasso_alphas)
      .def_readwrite("save_matrices", &AlignSettings::save_matrices)
      .def_readwrite("matrix_dtype", &AlignSettings::matrix_dtype)
      .def_readwrite("mi_binning", &AlignSettings::mi_binning)
      .def_readwrite("mi_bins", &AlignSettings::mi_bins)
      .def_readwrite("mi_base", &AlignSettings::mi_base)
      .def_readwrite("mi_memory_mib", &AlignSettings::mi_memory_mib);

  py::class_<Study>(m, "Study")
      .def(py::init<std::vector<std::string>, const std::string&, const std::string&, int, double, bool, std::int64_t,
                    const std::string&>(),
           py::arg("nets"), py::arg("layout"), py::arg("backend"), py::arg("threads"), py::arg("dead_threshold"),
           py::arg("skip_nonfinite"), py::arg("batch_rows"), py::arg("precision"))
      .def_property_readonly("nets", &Study::names)
      .def_property_readonly("backend", &Study::backend_description)
      .def_property_readonly("device", &Study::device)
      .def("add_numpy", &Study::add_numpy, py::arg("name"), py::arg("array"))
      .def("add_dlpack", &Study::add_dlpack, py::arg("name"), py::arg("capsule"))
      .def("pending", &Study::pending)
      .def("moments", &Study::moments)
      .def("save_stats", &Study::save_stats, py::arg("path"), py::arg("first_input"), py::arg("total_inputs"))
      .def("save", &Study::save, py::arg("dir"), py::arg("settings"), py::arg("report"), py::arg("title"),
           py::arg("max_image_side"), py::arg("replay"));

  m.def("study_table", [](const std::vector<std::string>& layers) {
    return report::format_study_table(report::study_table(report::load_study(layers)));
  }, py::arg("layers"));

  m.def("report", [](const std::vector<std::string>& layers, const std::string& out, const std::string& title,
                     std::int64_t max_image_side) {
    report::ReportOptions options;
    if (!title.empty()) options.title = title;
    options.max_image_side = max_image_side;
    py::gil_scoped_release release;
    return report::write_report(layers, out, options).path;
  }, py::arg("layers"), py::arg("out"), py::arg("title"), py::arg("max_image_side"));

  m.def("match", [](const py::array_t<double, py::array::c_style | py::array::forcecast>& corr, int threads) {
    if (corr.ndim() != 2) throw Error("match: expected a 2-D correlation matrix, not " + std::to_string(corr.ndim()) + "-D");
    const MatrixView<const double> view(corr.data(), corr.shape(0), corr.shape(1), corr.shape(1));
    check_correlation_values(view, "match");
    PairAlignment a;
    {
      py::gil_scoped_release release;
      auto backend = make_backend(BackendChoice::cpu, {threads, 0});
      a = align_pair(*backend, view, std::max(1, thread_count(threads)));
    }
    py::array_t<std::int64_t> matching({static_cast<py::ssize_t>(std::min(view.rows, view.cols)), py::ssize_t{2}});
    auto pairs = matching.mutable_unchecked<2>();
    py::ssize_t k = 0;
    for (std::int64_t r = 0; r < view.rows; ++r)
      if (a.matching.row_to_col[static_cast<std::size_t>(r)] >= 0) {
        pairs(k, 0) = r;
        pairs(k++, 1) = a.matching.row_to_col[static_cast<std::size_t>(r)];
      }
    py::dict out;
    out["semi_match"] = python::to_numpy(a.semi_match);
    out["matching"] = matching;
    out["semi_mean_corr"] = a.semi_mean_corr;
    out["matching_mean_corr"] = a.matching_mean_corr;
    out["matching_total_corr"] = a.matching_total_corr;
    out["same_assignment_fraction"] = a.same_assignment_fraction;
    return out;
  }, py::arg("corr"), py::arg("threads"));

  m.def("backends", [] {
    py::list out;
    for (const BackendStatus& s : backend_status()) {
      py::dict d;
      d["kind"] = to_string(s.kind);
      d["compiled"] = s.compiled;
      d["usable"] = s.usable;
      d["detail"] = s.detail;
      out.append(d);
    }
    return out;
  });
}
