// Statistics files: the Moments of a range of a study's inputs, saved so that shards computed on other
// processes or machines merge exactly (Chan merge in float64), and analysed later without the activations.
// The format is a numpy .npz (README, "Sharded studies"): header.json plus one float64 .npy per array.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "convergent/moments.hpp"
#include "convergent/study.hpp"

namespace convergent {

// The version written into header.json; a reader refuses other versions.
constexpr int stats_format_version = 1;

// What identifies a study, so that only shards of one study merge: nets (name, shape, dtype, units; paths
// may differ between machines and are not compared), layout, inputs, and the options that change the
// statistics (skip-nonfinite, precision).
struct StatsStudy {
  std::vector<NetInfo> nets;
  Layout layout = Layout::channels_first;
  std::int64_t inputs = 0;          // inputs of the whole study (InputRange counts these)
  std::int64_t rows_per_input = 1;  // sample rows (positions) each input adds to the 2-D view
  bool skip_nonfinite_rows = false;
  Precision precision = Precision::fp32;
};

struct StatsFile {
  StatsStudy study;
  InputRange range;  // the inputs [begin, end) these Moments cover
  std::int64_t skipped_rows = 0;
  std::string backend;  // what computed them (several, comma-separated, after a merge)
  Moments moments;
};

// The stats of a finished pass (accumulate_study) and the options it ran with.
StatsFile stats_of(const Study& study, const StudyOptions& options);

// The file's bytes and back (also how MPI ranks send their Moments: the CRC-32s check the transfer).
// parse_stats throws Error naming `path` for bytes that are not a stats file, are truncated or damaged (a
// CRC-32 mismatch), carry another format version, or whose arrays do not have the recorded shapes.
std::string stats_bytes(const StatsFile& stats, const std::string& version);
StatsFile parse_stats(const std::string& path, const std::string& bytes);

// Writes stats_bytes to `path` under a temporary name, renamed when complete (no partial file). Throws
// Error for an unwritable directory.
void write_stats_file(const std::string& path, const StatsFile& stats, const std::string& version);

// Reads a stats file (parse_stats over its bytes).
StatsFile read_stats_file(const std::string& path);

// Merges shards of one study into one: sorted by range (so the result does not depend on the order of
// the arguments), checked to be contiguous and not overlapping, then folded left to right with merge().
// `paths` name the shards in errors. Throws Error naming the files for shards of different studies,
// overlapping ranges, or a gap between them.
StatsFile merge_stats(std::vector<StatsFile> shards, std::vector<std::string> paths);

// A Study over saved Moments, ready for finish_study: every input must be covered (Error naming `path`
// and the missing inputs otherwise).
Study study_of(const StatsFile& stats, const std::string& path);

}  // namespace convergent
