// The main job: stream the activations of several nets once, then align every pair of nets by
// correlation (semi-matching and one-to-one matching). Library form of `convergent align`.
#pragma once

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "convergent/activation.hpp"
#include "convergent/backend.hpp"
#include "convergent/lap.hpp"
#include "convergent/matrix.hpp"
#include "convergent/moments.hpp"

namespace convergent {

// Where the units sit in conv and sequence activations. channels_first: 3-D (N, C, L) as from 1-D convs, 4-D
// (N, C, H, W) (NCHW); channels_last: 3-D (N, L, C) as transformer tokens, 4-D (N, H, W, C) (NHWC). Every
// (image, position) is one sample of a C-dim vector; 2-D arrays are (samples, units) either way.
enum class Layout { channels_first, channels_last };

// What one sample is. positions (the paper's choice, the default): every (input, position) is a sample of
// a net's C units, for every analysis. images: in addition, every input is one sample of its flattened
// features (C x H x W, C x L, or the P rows per input of a 2-D file times its units), for image-level
// linear CKA alone (Study::image_cka); every other analysis still reads positions.
enum class Samples { positions, images };

struct NetSource {
  std::string name;
  std::string path;  // .npy file: 2-D (samples x units), or 3-D / 4-D activations laid out as Layout says
};

// A half-open range of inputs [begin, end). An input is the first axis of 3-D and 4-D files (an image, a
// sequence: every position of it is a sample row) and a row of 2-D files; a 2-D file beside files with P
// positions per input gives P rows per input. Inputs are what a study is sharded by.
struct InputRange {
  std::int64_t begin = 0;
  std::int64_t end = 0;
  std::int64_t size() const { return end - begin; }
};

struct StudyOptions {
  Layout layout = Layout::channels_first;
  // Only these inputs (stats shards, MPI ranks); all when empty. Error when it lies outside the files.
  std::optional<InputRange> inputs;
  std::int64_t batch_rows = 0;  // sample rows per batch; 0 picks one from the unit count
  bool skip_nonfinite_rows = false;
  // A unit is dead when it is constant (min == max), or when its std is at most this fraction of its
  // range (max - min): a unit constant but for a vanishing share of its samples. The rule looks at the
  // spread alone, so an offset never makes a unit dead; 0 keeps every unit that is not constant.
  double dead_threshold = 1e-6;
  Precision precision = Precision::fp32;
  Samples samples = Samples::positions;
  // Samples::images: the exact estimator (Moments over the flattened features) while the flattened
  // features of all nets together are at most this many (its memory grows as 20 x features^2 bytes: 335
  // MB at 4096); beyond, Nguyen et al.'s (2021) minibatch estimator over minibatches of this many inputs.
  std::int64_t image_exact_features = 4096;
  std::int64_t image_minibatch = 256;
  // Called after each batch with (rows done, rows in all); may be empty.
  std::function<void(std::int64_t, std::int64_t)> progress;
};

struct NetInfo {
  std::string name;
  std::string path;
  std::vector<std::int64_t> shape;
  DType dtype = DType::float32;
  std::int64_t units = 0;
  std::int64_t offset = 0;  // first column of this net in the concatenated units
};

// Image-level CKA statistics from the pass (Samples::images).
struct ImageCka {
  enum class Estimator { exact, minibatch };
  Estimator estimator = Estimator::exact;
  std::vector<std::int64_t> features;  // per net: flattened features of one input
  // exact: Moments over the flattened features, one sample per input (net_units = features), and their
  // dead features (StudyOptions::dead_threshold).
  Moments moments;
  std::vector<bool> dead;
  // minibatch: consecutive inputs in minibatches of minibatch_inputs (the last one shorter, used when it
  // holds at least 4 inputs); hsic (nets x nets) is the mean over the minibatches of Song et al.'s
  // unbiased HSIC of the linear kernels of the flattened features (Nguyen et al. 2021, eq. 3). A minibatch
  // holding a NaN or infinity is dropped (skip_nonfinite_rows) and counted in dropped_minibatches.
  std::int64_t minibatch_inputs = 0;
  std::int64_t minibatches = 0;
  std::int64_t last_minibatch_inputs = 0;
  std::int64_t dropped_minibatches = 0;
  Matrix hsic;
};

struct Study {
  std::vector<NetInfo> nets;
  Moments moments;
  std::vector<bool> dead;  // per concatenated unit
  Matrix correlation;      // concatenated units x concatenated units
  std::int64_t skipped_rows = 0;
  std::string backend;
  std::int64_t inputs = 0;          // inputs of the whole study (InputRange)
  std::int64_t rows_per_input = 1;  // sample rows each input adds
  InputRange range;                 // the inputs the Moments cover
  std::optional<ImageCka> image_cka;  // Samples::images only
  std::int64_t batch_rows = 0;  // sample rows per batch of the pass (StudyOptions::batch_rows or the automatic one)
};

// What a study's files say before any data is read: the nets (shape, dtype, units, offsets), the sample
// rows of each file and the rows per streaming batch that run_study will use.
struct StudyInputs {
  std::vector<NetInfo> nets;
  std::int64_t samples = 0;
  std::int64_t batch_rows = 0;
  std::int64_t rows_per_input = 1;  // sample rows of one input: batches hold whole inputs of every net
};

// Opens and checks the files as run_study does (headers only; same errors, fewer than 2 sample rows
// included), for a plan before the pass.
StudyInputs inspect_study(const std::vector<NetSource>& nets, const StudyOptions& options);

// Opens and checks every file before any work, then makes one streaming pass. Throws Error naming the
// file and the problem for bad input, and before the pass when the inputs hold fewer than 2 sample rows.
// accumulate_study and then finish_study.
Study run_study(Backend& backend, const std::vector<NetSource>& nets, const StudyOptions& options);

// The pass alone: nets, Moments and skipped rows over options.inputs (every input when empty); a range may
// hold no sample or one (a shard). Throws Error naming the file for bad input or a range outside it.
Study accumulate_study(Backend& backend, const std::vector<NetSource>& nets, const StudyOptions& options);

// What finish_study does with the U x U comoment. keep: the correlation is formed beside it (16 U^2 bytes
// held; Moments::covariance(i, j) stays readable). hand_over: the correlation is formed in its storage
// (Backend::take_correlation: 8 U^2 bytes, 8 GiB less at 32768 units; stddev() and the analyses are
// unchanged, Moments::covariance(i, j) of i != j is then an Error). `convergent align` hands it over.
enum class ComomentAfterStudy { keep, hand_over };

// From the Moments to what every analysis reads: dead units (dead_threshold, as in StudyOptions) and the
// correlation matrix. Throws Error naming the first net's file when fewer than 2 samples were kept.
void finish_study(Backend& backend, Study& study, double dead_threshold,
                  ComomentAfterStudy comoment = ComomentAfterStudy::keep);

// Sample rows per batch when StudyOptions::batch_rows is 0, for `units` concatenated units: about 16 MiB
// of float32, 2^22 / units rows in whole 2048-row product chunks, within [2048, 65536] (units < 1 counts
// as 1). Chosen by measurement (bench/RESULTS.md, "Automatic batch size").
std::int64_t automatic_batch_rows(std::int64_t units);

// The dead-unit rule of StudyOptions::dead_threshold, per concatenated unit.
std::vector<bool> dead_units(const Moments& moments, double dead_threshold);

struct PairAlignment {
  std::vector<std::int64_t> semi_match;  // for each unit of A, its most correlated unit of B
  Assignment matching;                   // one-to-one, maximising the total correlation
  double semi_mean_corr = 0.0;
  double matching_mean_corr = 0.0;
  double matching_total_corr = 0.0;
  double same_assignment_fraction = 0.0;  // share of A units whose semi-match is also their match
};

// Aligns the units of net A (rows) with those of net B (columns) of a correlation block.
PairAlignment align_pair(Backend& backend, MatrixView<const double> corr_ab, int threads = 1);

}  // namespace convergent
