// The memory plan of an align job: its peak host (and device) memory worked out from the unit counts, the
// analyses and the options before any data is read, phase by phase, and held against what the machine
// has, so that a job that cannot fit is refused with the options that would make it fit instead of
// being killed by the kernel hours later.
#pragma once

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace convergent {

// Which .npy matrices align writes. all: every one (corr_<net>.npy, corr_<a>_<b>.npy, corr_clustered.npy
// and the MI matrices); pairs: only the between-net blocks (corr_<a>_<b>.npy and mi_*_<a>_<b>.npy), what
// matching reads; none: no matrix (summary.json and the CSV tables hold every result).
enum class SaveMatrices { all, pairs, none };
SaveMatrices parse_save_matrices(const std::string& text);  // "all", "pairs", "none"; Error otherwise
const char* to_string(SaveMatrices s);

// The job as the plan sees it: what decides its memory, nothing of its data. Sizes in units and rows.
struct MemoryJob {
  std::vector<std::int64_t> units_per_net;  // units of each net (the concatenation has their sum, U)
  std::int64_t samples = 0;                 // sample rows of every file
  std::int64_t batch_rows = 0;              // rows per streaming batch, as run_study picks them
  std::int64_t input_row_bytes = 0;         // bytes of one sample row over all input files (mapped pages)
  bool cuda = false;                        // the CUDA backend holds the comoment and batch on the device
  bool clustering = true;                   // spectral clustering of all U units
  std::int64_t eigenpairs = 65;             // eigenpairs it asks for (k, or max_k + 1 for the eigengap rule)
  bool sparse_prediction = true;
  std::int64_t threads = 1;        // CPU threads of the analyses (sparse prediction keeps a solver per thread)
  bool similarity_indices = true;  // any of linear CKA, CCA, SVCCA, PWCCA, Procrustes
  bool mutual_information = true;
  std::int64_t mi_slots = 11;                           // bin slots per unit (bins, + 1 for the zero bin)
  bool mi_quantile = true;                              // quantile bins take one more pass for their edges
  std::int64_t mi_memory_budget_bytes = std::int64_t{2} << 30;  // --mi-memory
  bool report = true;                                   // report.html (reads the written matrices back)
  SaveMatrices save_matrices = SaveMatrices::all;
  bool matrices_float32 = false;  // --matrix-dtype float32
  // --samples images (image-level CKA in the same pass, host/analysis/image_cka.cpp): each net's flattened
  // features (units x rows_per_input), empty for --samples positions. Exact Moments of the features up to
  // image_exact_features in all, else minibatches of image_minibatch inputs (batches in whole minibatches).
  std::vector<std::int64_t> image_features;
  std::int64_t rows_per_input = 1;  // sample rows of one input (the pixels of 3-D and 4-D files)
  std::int64_t image_exact_features = 4096;
  std::int64_t image_minibatch = 256;
  // Resident bytes of the process when the plan is made (code and loaded libraries: the CUDA libraries
  // alone are about 200 MiB resident once loaded, even without a device); 0 when not measured.
  std::int64_t resident_bytes = 0;
};

// One allocation that is live during a phase, in bytes.
struct MemoryPart {
  std::string name;
  std::int64_t bytes = 0;
};

// A step of the job and what is resident while it runs (held from earlier steps, and its own working set).
struct MemoryPhase {
  std::string name;  // streaming, correlation, matching, clustering, analyses, mutual information, writing, report
  std::vector<MemoryPart> parts;
  std::int64_t bytes() const;  // sum of the parts
};

// The plan: host phases in the order they run, the device's share (CUDA), and their peaks. Bytes.
struct MemoryPlan {
  std::vector<MemoryPhase> host;
  std::vector<MemoryPhase> device;  // empty without CUDA
  std::int64_t peak_host_bytes = 0;
  std::string peak_host_phase;
  std::int64_t peak_device_bytes = 0;
  // Passes over the input files: the moments pass, and with MI the quantile pass and one per block of counts.
  std::int64_t data_passes = 1;
};

// Works out the plan of a job; pure arithmetic, no allocation of the job's size. Every part is an
// upper bound of what the code allocates (matrices of all units, dead or live), so that the measured peak
// resident size stays below the plan (tests/test_memory_plan.cpp holds them within 15%).
MemoryPlan plan_memory(const MemoryJob& job);

// What the machine has for this job, in bytes.
struct AvailableMemory {
  std::int64_t host_bytes = 0;
  std::string host_source;  // where host_bytes came from: "MemAvailable", "cgroup memory.max", or the override
  std::optional<std::int64_t> device_bytes;  // free device memory, when a CUDA device is used
};

// Host memory available now: the smaller of /proc/meminfo's MemAvailable and the room left under the
// cgroup's memory.max (cgroup v2) when one is set. The environment variable CONVERGENT_AVAILABLE_MEMORY
// (bytes, or a number with a K/M/G/T suffix, powers of 1024) replaces it: for tests, and for users who
// share a machine and want to stay within a part of it.
AvailableMemory available_host_memory();

// A change of options and the peak it leaves.
struct MemoryFix {
  std::string options;  // command-line options, e.g. "--save-matrices none --no-report"
  std::int64_t peak_host_bytes = 0;
};

// Option changes, each one cumulative over the previous (the cheapest losses first: fewer matrices
// written, no report, no mutual information, no similarity indices, no sparse prediction, no
// clustering), with the peak of each; steps that lower nothing are left out, and the list stops at the
// first that fits `available_bytes`.
std::vector<MemoryFix> memory_fixes(const MemoryJob& job, std::int64_t available_bytes);

// The plan as text: one line per phase with its parts in MiB, the peak, the passes over the data, and the
// available memory against it.
std::string format_plan(const MemoryPlan& plan, const AvailableMemory& available);

// Throws Error when the plan's host peak exceeds the available memory (or its device peak the free device
// memory): the message gives both figures, the phase of the peak, and the options that would fit
// (memory_fixes), or says that none would.
void check_plan_fits(const MemoryJob& job, const MemoryPlan& plan, const AvailableMemory& available);

// "1.50 GiB", "512.0 MiB": a byte count for people.
std::string format_bytes(std::int64_t bytes);

}  // namespace convergent
