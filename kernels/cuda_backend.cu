// The CUDA backend: the accumulation pipeline, the other Backend operations, and the private hooks of
// host/backend/cuda_backend.hpp.
//
// Pipeline of one add(), with two slots used alternately so that batch k+1 is staged and copied while
// the product of batch k runs:
//   host:     wait copied[s]; then, in pieces of kStagingPieceBytes spread over the staging threads, fill
//             pinned staging[s] (the file's own bytes: dense blocks copied, others gathered row by row)
//             and queue each piece's copy staging[s] -> raw[s] on copy_ as soon as it is filled (after
//             copy_ waits packed[s]), so that the host copy and the host-to-device copy overlap;
//             blocks already in this device's memory (a CUDA tensor) are not staged: the kernels
//             below read them in place;                                             record copied[s]
//   pack_:    wait copied[s], done[s]; flag non-finite rows of raw[s], count kept rows (-> pinned
//             counters);                                                            record scanned[s]
//   host:     unless skipping rows, wait scanned[s] and throw on a non-finite value
//   compute_: wait scanned[s]; raw[s] -> float64 rows (decode, swap, transpose);   record packed[s];
//             each unit's exact range, its shift and power-of-two scale, the mean of the scaled values,
//             the centred float32 batch; the merge plan (exponents, factors); per chunk: product, then
//             one pass over the upper triangle of M2 adding it (the rescale riding on the first chunk,
//             the Chan term on the last);                                            record done[s]
// The wait for scanned[s] does not wait for the product of batch k-1, which runs on compute_. M2's lower
// triangle is filled by a mirror when the moments are read.
//
// Numerics (DESIGN.md): as the CPU reference, values are shifted and scaled in float64 from the file's own
// value before the one rounding to float32, and the comoment is kept scaled per unit. The CPU scales each
// 2048-row chunk, trying the first chunk's scaling to save a second pass over its input; here a batch is
// in device memory as float64, so every batch takes its own scaling (mid-range, spread exponent) from a
// range pass, and its product chunks share it: they add to M2 without a Chan term each.
#include <algorithm>
#include <cstddef>
#include <cstring>
#include <limits>
#include <numeric>
#include <string>
#include <vector>

#include "correlation.cuh"
#include "backend/cuda_backend.hpp"
#include "backend/running_moments.hpp"
#include "device_memory.cuh"
#include "eigenpairs.cuh"
#include "joint_counts.cuh"
#include "mirror.cuh"
#include "moments.cuh"
#include "pack.cuh"
#include "cpu/parallel.hpp"
#include "product.cuh"
#include "row_argmax.cuh"

namespace convergent::cuda {
namespace {

constexpr std::size_t kAlignment = 256;           // staging offsets: enough for any element type
constexpr std::size_t kReserveBytes = 512u << 20;  // left free for cuBLAS/cuSOLVER workspaces and the context
// Rows per fp32 product (the CPU backend takes 2048; larger products run nearer the cuBLAS peak, and
// 4096 rows stayed within 8e-7 of float64 on the CPU benchmark).
constexpr std::int64_t kProductRows = 4096;
// Host staging goes in pieces of this size: each piece's host-to-device copy is queued as soon as the
// piece is filled, so the first copy starts after 2 MiB rather than after the whole batch, and pieces
// spread over the staging threads.
constexpr std::size_t kStagingPieceBytes = std::size_t{2} << 20;
// More threads than this do not copy faster: a few saturate the memory bandwidth of a socket.
constexpr int kMaxStagingThreads = 8;
// float64 vectors of `units` kept on the device: BatchScaling's 5, MergeFactors' 3, RunningState's 4.
constexpr std::size_t kPerUnitDoubles = 12;

// Rows per chunk product for a batch of `rows`: fp32 keeps float32 sums to kProductRows rows (DESIGN.md,
// precision: 1e-6), in chunks of equal size; the tensor-core modes round their inputs to 10 or 7 bits,
// far above what float32 sums over a whole batch add (sqrt(65536) 6e-8 = 1.5e-5), so they take the batch
// in one product and one pass over M2.
std::int64_t chunk_rows_for(Precision precision, std::int64_t rows) {
  if (precision != Precision::fp32 || rows <= kProductRows) return rows;
  const std::int64_t chunks = (rows + kProductRows - 1) / kProductRows;
  return (rows + chunks - 1) / chunks;
}

std::size_t align_up(std::size_t n) { return (n + kAlignment - 1) / kAlignment * kAlignment; }

std::string gib(double bytes) {
  char text[32];
  std::snprintf(text, sizeof text, "%.2f GiB", bytes / double(1u << 30));
  return text;
}

// Elements spanned by the block from its first element, when all strides are >= 0 and the span holds
// exactly its elements (no gaps), as a batch sliced from a C-order, NCHW or NHWC array does; -1 when its
// rows must be gathered on the host instead (Fortran order, negative strides, gaps).
std::int64_t dense_span_elements(const ActivationBlock& b) {
  if (b.image_stride < 0 || b.unit_stride < 0 || b.y_stride < 0 || b.x_stride < 0) return -1;
  const std::int64_t count = b.images * b.units * b.height * b.width;
  if (count == 0) return 0;
  const std::int64_t last = (b.images - 1) * b.image_stride + (b.units - 1) * b.unit_stride +
                            (b.height - 1) * b.y_stride + (b.width - 1) * b.x_stride;
  return last + 1 == count ? count : -1;
}

// Where a net's block of the current batch sits in the staging buffer and how the device reads it.
struct StagedBlock {
  std::size_t offset = 0;
  std::size_t bytes = 0;
  bool gathered = false;  // staged as a row-major block of its own dtype and byte order by gather_rows
};

// One piece of staging work: bytes [offset, offset + bytes) of the staging buffer, filled either by a
// memcpy from `source` or, for a gathered net, by gathering its sample rows [first_row, first_row + rows).
struct StagingPiece {
  std::size_t net = 0;
  std::size_t offset = 0;
  std::size_t bytes = 0;
  const std::byte* source = nullptr;  // null: host-packed
  std::int64_t first_row = 0;
  std::int64_t rows = 0;
};

template <int kSize>
void gather_rows_of(const ActivationBlock& b, std::int64_t first_row, std::int64_t rows, std::byte* dst) {
  const auto* src = static_cast<const std::byte*>(b.data);
  const std::int64_t pixels = b.height * b.width;
  std::int64_t img = first_row / pixels, y = first_row % pixels / b.width, x = first_row % b.width;
  for (std::int64_t r = 0; r < rows; ++r) {
    const std::byte* first = src + (img * b.image_stride + y * b.y_stride + x * b.x_stride) * kSize;
    for (std::int64_t u = 0; u < b.units; ++u, dst += kSize) std::memcpy(dst, first + u * b.unit_stride * kSize, kSize);
    if (++x == b.width) {
      x = 0;
      if (++y == b.height) y = 0, ++img;
    }
  }
}

// The element bytes of block's sample rows [first_row, first_row + rows), in (image, y, x) order, as a
// dense row-major block of the same dtype and byte order. Bytes, not converted values: the device decodes
// every block the same way, with no rounding, and float16/float32 cost no more than in the file (packing
// into float64 on the host would cost 4 or 2 times the copy; into float32 would lose float64 digits).
void gather_rows(const ActivationBlock& b, std::int64_t first_row, std::int64_t rows, std::byte* dst) {
  switch (dtype_size(b.dtype)) {
    case 2: gather_rows_of<2>(b, first_row, rows, dst); break;
    case 4: gather_rows_of<4>(b, first_row, rows, dst); break;
    default: gather_rows_of<8>(b, first_row, rows, dst); break;
  }
}

class CudaAccumulator final : public MomentAccumulator {
 public:
  // Arguments were checked by Backend::accumulator; what is left are this backend's own limits.
  CudaAccumulator(int device, const std::vector<std::int64_t>& units_per_net, const AccumulateOptions& options,
                  Fp32Routine routine, int staging_threads)
      : MomentAccumulator(units_per_net, options),
        scope_(device),
        device_(device),
        routine_(routine),
        staging_threads_(staging_threads),
        units_(std::accumulate(units_per_net.begin(), units_per_net.end(), std::int64_t{0})) {
    checked_int(units_, "units");
    checked_int(options.max_batch_rows, "max_batch_rows");
    for (std::size_t net = 0; net <= net_units().size(); ++net)
      net_offsets_.push_back(std::accumulate(net_units().begin(), net_units().begin() + net, std::int64_t{0}));
    check_device_memory();
    allocate();
    scope_.leave();
  }

  CudaAccumulator(const CudaAccumulator&) = delete;
  CudaAccumulator& operator=(const CudaAccumulator&) = delete;

  ~CudaAccumulator() override {
    scope_.enter();
    // Let queued work finish before its buffers go; errors are ignored, nothing can be done about them here.
    cudaStreamSynchronize(copy_.handle());
    cudaStreamSynchronize(pack_.handle());
    cudaStreamSynchronize(compute_.handle());
  }

  int device() const override { return device_; }

  void do_add(const std::vector<ActivationBlock>& blocks) override {
    DeviceGuard guard(device_);
    const std::int64_t rows = blocks.front().rows();
    Slot& slot = slots_[next_slot_];

    // Host: the pinned buffer of this slot is free once its last copy finished; raw[s] once the pack
    // that read it finished (copy_ waits for that inside stage_and_copy).
    slot.copied.synchronize();
    const std::vector<StagedBlock> staged = stage_and_copy(blocks, rows, slot);
    slot.copied.record(copy_.ref());

    // Scan: row_bad[s] and counters[s] are free once the batch that last used them is merged.
    slot.copied.make_wait(pack_.ref());
    slot.done.make_wait(pack_.ref());
    launch_reset_batch(slot.row_bad.data(), rows, slot.counters.data(), pack_.ref());
    for (std::size_t net = 0; net < blocks.size(); ++net)
      launch_find_nonfinite(device_block(blocks[net], staged[net], slot, rows), units_, net_offsets_[net],
                            slot.row_bad.data(), &slot.counters.data()->first_nonfinite, pack_.ref());
    launch_count_kept(slot.row_bad.data(), rows, slot.counters.data(), pack_.ref());
    if (!options().skip_nonfinite_rows)
      copy_async(slot.counters_host.data(), slot.counters.data(), 1, cudaMemcpyDeviceToHost, pack_.ref());
    slot.scanned.record(pack_.ref());
    next_slot_ ^= 1;

    if (!options().skip_nonfinite_rows) {
      slot.scanned.synchronize();
      const unsigned long long first = slot.counters_host.data()->first_nonfinite;
      if (first != std::numeric_limits<unsigned long long>::max()) throw_nonfinite(first);
    }

    // Compute: everything below is ordered on compute_, so its single-buffered scratch needs no events.
    slot.scanned.make_wait(compute_.ref());
    for (std::size_t net = 0; net < blocks.size(); ++net)
      launch_pack(device_block(blocks[net], staged[net], slot, rows), x64_.data(), units_, net_offsets_[net],
                  compute_.ref());
    slot.packed.record(compute_.ref());  // raw[s] is read no more
    const BatchScaling scaling = batch_scaling();
    const unsigned char* row_bad = slot.row_bad.data();
    launch_column_range(x64_.data(), rows, units_, row_bad, partials_.data(), scaling, compute_.ref());
    launch_choose_scaling(units_, scaling, compute_.ref());
    launch_scaled_mean(x64_.data(), rows, units_, row_bad, slot.counters.data(), partials_.data(), scaling,
                       compute_.ref());
    __nv_bfloat16* x_bf16 = options().precision == Precision::bf16 ? x_bf16_.data() : nullptr;
    launch_scale_centre(x64_.data(), rows, units_, row_bad, scaling, x_.data(), x_bf16, compute_.ref());
    const MergeFactors factors{rescale_.data(), batch_scale_.data(), delta_.data()};
    launch_plan_merge(units_, scaling, slot.counters.data(), totals_.data(), running_state(), factors,
                      compute_.ref());
    launch_norm_sums(x64_.data(), rows, units_, row_bad, origin_.data(), net_offsets_device_.data(),
                     static_cast<int>(net_units().size()), row_norms_.data(), norm_partials_.data(),
                     unit_norm_sums_.data(), pair_norm_sums_.data(), compute_.ref());
    const auto* product_input = static_cast<const char*>(x_bf16 != nullptr ? static_cast<const void*>(x_bf16)
                                                                           : static_cast<const void*>(x_.data()));
    // float32 sums grow their rounding error with their length: an fp32 batch product is taken in chunks
    // of at most kProductRows rows, each added to M2 in float64, which keeps correlations within 1e-6.
    // All chunks share the batch's centring and scale, so each costs one pass over M2's upper triangle,
    // the rescale riding on the first one and the Chan term on the last.
    const std::int64_t row_bytes = units_ * product_element_bytes(options().precision);
    const std::int64_t chunk_rows = chunk_rows_for(options().precision, rows);
    for (std::int64_t first = 0; first < rows; first += chunk_rows) {
      batch_product(cublas_.get(), options().precision, routine_, product_input + first * row_bytes,
                    std::min(chunk_rows, rows - first), units_, product_.data());
      launch_merge_product(product_.data(), units_, /*first_chunk=*/first == 0,
                           /*last_chunk=*/first + chunk_rows >= rows, factors, totals_.data(), slot.counters.data(),
                           m2_.data(), compute_.ref());
    }
    launch_advance_totals(rows, slot.counters.data(), totals_.data(), compute_.ref());
    slot.done.record(compute_.ref());
    // Device-resident blocks are the caller's memory, read in place by the scan and the pack: the caller
    // may free or reuse it once add() returns, so their reading ends here (packed[s] follows both).
    if (std::any_of(blocks.begin(), blocks.end(), [](const ActivationBlock& b) { return b.device >= 0; }))
      slot.packed.synchronize();
  }

  Moments moments() override {
    DeviceGuard guard(device_);
    Moments result(net_units());
    const Totals totals = fetch_totals();  // synchronises all streams
    result.samples = static_cast<std::int64_t>(totals.samples);
    launch_mirror_upper(m2_.data(), units_, compute_.ref());  // merges keep the upper triangle only
    std::vector<double> origin(static_cast<std::size_t>(units_)), half_mean(origin.size());
    copy_async(origin.data(), origin_.data(), units_, cudaMemcpyDeviceToHost, compute_.ref());
    copy_async(half_mean.data(), half_mean_.data(), units_, cudaMemcpyDeviceToHost, compute_.ref());
    copy_async(result.exponent.data(), exponent_.data(), units_, cudaMemcpyDeviceToHost, compute_.ref());
    copy_async(result.min.data(), min_.data(), units_, cudaMemcpyDeviceToHost, compute_.ref());
    copy_async(result.max.data(), max_.data(), units_, cudaMemcpyDeviceToHost, compute_.ref());
    copy_async(result.comoment.data(), m2_.data(), units_ * units_, cudaMemcpyDeviceToHost, compute_.ref());
    const auto nets = static_cast<std::int64_t>(net_units().size());
    copy_async(result.unit_sqnorm_comoment.data(), unit_norm_sums_.data(), units_ * nets, cudaMemcpyDeviceToHost,
               compute_.ref());
    copy_async(result.sqnorm_comoment.data(), pair_norm_sums_.data(), nets * nets, cudaMemcpyDeviceToHost,
               compute_.ref());
    compute_.synchronize();
    // As RunningMoments::result: (origin + 2 half) / 2 lies between origin / 2 and the mean, so neither
    // step overflows.
    for (std::size_t i = 0; i < origin.size(); ++i) result.mean[i] = 2.0 * (0.5 * origin[i] + half_mean[i]);
    // The norm sums were taken about the origin: moved to the mean, as ReferenceAccumulator::moments does.
    std::vector<double> offset(origin.size());
    for (std::size_t i = 0; i < offset.size(); ++i) offset[i] = 2.0 * half_mean[i];
    detail::shift_norm_sums(result, offset, offset, result.sqnorm_comoment, result.unit_sqnorm_comoment);
    return result;
  }

  std::int64_t skipped_rows() override {
    DeviceGuard guard(device_);
    return static_cast<std::int64_t>(fetch_totals().skipped);
  }

 private:
  struct Slot {
    PinnedBuffer<std::byte> staging;
    DeviceBuffer<std::byte> raw;
    DeviceBuffer<unsigned char> row_bad;
    DeviceBuffer<BatchCounters> counters;
    PinnedBuffer<BatchCounters> counters_host;
    Event copied, packed, scanned, done;
  };

  // Device bytes that do not depend on the input dtype, plus raw staging sized for float32 input.
  std::size_t planned_device_bytes(std::int64_t batch_rows) const {
    const auto r = static_cast<std::size_t>(batch_rows);
    const auto u = static_cast<std::size_t>(units_);
    std::size_t bytes = 2 * (r                          // row_bad
                             + align_up(r * u * 4));    // raw staging, float32 input
    bytes += r * u * (sizeof(double) + sizeof(float));  // x64, x
    if (options().precision == Precision::bf16) bytes += r * u * 2;
    bytes += u * u * (sizeof(float) + sizeof(double));                             // product, M2
    bytes += u * sizeof(double) * (2 * kStatsMaxChunks + kPerUnitDoubles) + u * 2 * sizeof(int);  // vectors
    const std::size_t nets = net_units().size();
    bytes += sizeof(double) * nets * (r + kStatsMaxChunks * u + u + nets);  // norm sums and their scratch
    return bytes;
  }

  // The batch's scaling and the running state, as the kernels take them (moments.cuh).
  BatchScaling batch_scaling() const {
    return {low_.data(), high_.data(), centre_.data(), batch_exponent_.data(), multiplier_.data(), scaled_mean_.data()};
  }
  RunningState running_state() const {
    return {origin_.data(), half_mean_.data(), exponent_.data(), min_.data(), max_.data(), m2_.data()};
  }

  // A clear error instead of an out-of-memory failure halfway through the run.
  void check_device_memory() const {
    const DeviceMemoryInfo info = device_memory_info();
    const std::size_t need = planned_device_bytes(options().max_batch_rows);
    if (need + kReserveBytes <= info.free_bytes) return;
    // Largest batch that fits: the part of the footprint that grows with the batch rows is linear.
    const std::size_t fixed = planned_device_bytes(0);
    const std::size_t per_row = planned_device_bytes(1) - fixed + 2 * kAlignment;
    const std::size_t room = info.free_bytes > fixed + kReserveBytes ? info.free_bytes - fixed - kReserveBytes : 0;
    const std::size_t max_rows = room / per_row;
    std::string advice = max_rows > 0 ? "; lower the batch size (max_batch_rows) to at most " + std::to_string(max_rows)
                                      : "; the U x U moments alone do not fit: use fewer units or the CPU backend";
    throw Error("CUDA backend: accumulating " + std::to_string(units_) + " units in batches of " +
                std::to_string(options().max_batch_rows) + " rows needs " + gib(double(need + kReserveBytes)) +
                " of device memory, but only " + gib(double(info.free_bytes)) + " of " +
                gib(double(info.total_bytes)) + " are free" + advice);
  }

  void allocate() {
    const std::int64_t r = options().max_batch_rows;
    const std::int64_t raw_bytes = static_cast<std::int64_t>(staging_capacity_for(r * units_ * 4));
    for (Slot& slot : slots_) {
      slot.staging = PinnedBuffer<std::byte>(raw_bytes);
      slot.raw = DeviceBuffer<std::byte>(raw_bytes);
      slot.row_bad = DeviceBuffer<unsigned char>(r);
      slot.counters = DeviceBuffer<BatchCounters>(1);
      slot.counters_host = PinnedBuffer<BatchCounters>(1);
    }
    x64_ = DeviceBuffer<double>(r * units_);
    x_ = DeviceBuffer<float>(r * units_);
    if (options().precision == Precision::bf16) x_bf16_ = DeviceBuffer<__nv_bfloat16>(r * units_);
    product_ = DeviceBuffer<float>(units_ * units_);
    m2_ = DeviceBuffer<double>(units_ * units_);
    partials_ = DeviceBuffer<double>(2 * kStatsMaxChunks * units_);
    for (DeviceBuffer<double>* v : {&low_, &high_, &centre_, &multiplier_, &scaled_mean_, &rescale_, &batch_scale_,
                                    &delta_, &origin_, &half_mean_, &min_, &max_})
      *v = DeviceBuffer<double>(units_);
    batch_exponent_ = DeviceBuffer<int>(units_);
    exponent_ = DeviceBuffer<int>(units_);
    totals_ = DeviceBuffer<Totals>(1);
    const auto nets = static_cast<std::int64_t>(net_units().size());
    net_offsets_device_ = DeviceBuffer<std::int64_t>(nets + 1);
    row_norms_ = DeviceBuffer<double>(r * nets);
    norm_partials_ = DeviceBuffer<double>(kStatsMaxChunks * units_ * nets);
    unit_norm_sums_ = DeviceBuffer<double>(units_ * nets);
    pair_norm_sums_ = DeviceBuffer<double>(nets * nets);
    copy_async(net_offsets_device_.data(), net_offsets_.data(), nets + 1, cudaMemcpyHostToDevice, compute_.ref());
    CONVERGENT_CUDA_CHECK(cudaMemsetAsync(unit_norm_sums_.data(), 0, unit_norm_sums_.bytes(), compute_.handle()));
    CONVERGENT_CUDA_CHECK(cudaMemsetAsync(pair_norm_sums_.data(), 0, pair_norm_sums_.bytes(), compute_.handle()));

    // The state of an empty RunningMoments: origin 0 (set by the first merge), exponents 0, empty ranges.
    const std::vector<double> inf(static_cast<std::size_t>(units_), std::numeric_limits<double>::infinity());
    const std::vector<double> minus_inf(static_cast<std::size_t>(units_), -std::numeric_limits<double>::infinity());
    CONVERGENT_CUDA_CHECK(cudaMemsetAsync(m2_.data(), 0, m2_.bytes(), compute_.handle()));
    CONVERGENT_CUDA_CHECK(cudaMemsetAsync(origin_.data(), 0, origin_.bytes(), compute_.handle()));
    CONVERGENT_CUDA_CHECK(cudaMemsetAsync(half_mean_.data(), 0, half_mean_.bytes(), compute_.handle()));
    CONVERGENT_CUDA_CHECK(cudaMemsetAsync(exponent_.data(), 0, exponent_.bytes(), compute_.handle()));
    CONVERGENT_CUDA_CHECK(cudaMemsetAsync(totals_.data(), 0, totals_.bytes(), compute_.handle()));
    copy_async(min_.data(), inf.data(), units_, cudaMemcpyHostToDevice, compute_.ref());
    copy_async(max_.data(), minus_inf.data(), units_, cudaMemcpyHostToDevice, compute_.ref());
    compute_.synchronize();  // the host vectors above go out of scope
  }

  static std::size_t staging_capacity_for(std::int64_t bytes) {
    return align_up(static_cast<std::size_t>(bytes)) + kAlignment;
  }

  // Fills the slot's pinned staging buffer, growing it (and its device twin) if this batch needs more
  // room than planned, which happens for float64 input, and queues its copy to raw[s] on copy_, piece by
  // piece as the staging threads fill them. The caller records copied[s] after it.
  std::vector<StagedBlock> stage_and_copy(const std::vector<ActivationBlock>& blocks, std::int64_t rows, Slot& slot) {
    std::vector<StagedBlock> staged(blocks.size());
    std::vector<StagingPiece> pieces;
    std::size_t offset = 0;
    for (std::size_t net = 0; net < blocks.size(); ++net) {
      const ActivationBlock& b = blocks[net];
      if (b.device >= 0) continue;  // in this device's memory already (MomentAccumulator::add checked which)
      const std::int64_t span = dense_span_elements(b);
      StagedBlock& st = staged[net];
      st.gathered = span < 0;
      st.bytes = static_cast<std::size_t>(span < 0 ? rows * b.units : span) * dtype_size(b.dtype);
      st.offset = offset;
      offset = align_up(offset + st.bytes);
      if (st.gathered) {
        const std::size_t row_bytes = static_cast<std::size_t>(b.units) * dtype_size(b.dtype);
        const std::int64_t piece_rows = std::max<std::int64_t>(1, kStagingPieceBytes / row_bytes);
        for (std::int64_t r = 0; r < rows; r += piece_rows) {
          const std::int64_t n = std::min(piece_rows, rows - r);
          pieces.push_back({net, st.offset + r * row_bytes, n * row_bytes, nullptr, r, n});
        }
      } else {
        const auto* source = static_cast<const std::byte*>(b.data);
        for (std::size_t done = 0; done < st.bytes; done += kStagingPieceBytes)
          pieces.push_back({net, st.offset + done, std::min(kStagingPieceBytes, st.bytes - done), source + done, 0, 0});
      }
    }
    if (offset > slot.staging.bytes()) grow_staging(slot, offset);

    slot.packed.make_wait(copy_.ref());
    const int threads = static_cast<int>(std::min<std::size_t>(staging_threads_, pieces.size()));
    try {
      parallel_for(static_cast<std::int64_t>(pieces.size()), threads, [&](std::int64_t p) {
        const StagingPiece& piece = pieces[p];
        std::byte* dst = slot.staging.data() + piece.offset;
        if (piece.source != nullptr) {
          std::memcpy(dst, piece.source, piece.bytes);
        } else {
          gather_rows(blocks[piece.net], piece.first_row, piece.rows, dst);
        }
        // Threads of our own start on device 0; the copy belongs to this accumulator's device.
        if (threads > 1) CONVERGENT_CUDA_CHECK(cudaSetDevice(device_));
        copy_async(slot.raw.data() + piece.offset, dst, static_cast<std::int64_t>(piece.bytes), cudaMemcpyHostToDevice,
                   copy_.ref());
      });
    } catch (...) {
      // Copies already queued read staging[s], which the next batch refills once copied[s] says they are
      // done; they are not covered by copied[s], so they are waited for here.
      cudaStreamSynchronize(copy_.handle());
      throw;
    }
    return staged;
  }

  // Exception-safe: the new buffers are allocated before the old ones go, so a failure (out of memory)
  // leaves the slot with its old, smaller buffers and the accumulator usable for batches that fit them.
  void grow_staging(Slot& slot, std::size_t bytes) {
    slot.packed.synchronize();  // the device twin is no longer read (the pinned one was checked by the caller)
    const DeviceMemoryInfo info = device_memory_info();
    if (bytes + kReserveBytes > info.free_bytes)
      throw Error("CUDA backend: a batch of this input type needs " + gib(double(bytes)) +
                  " of device staging, but only " + gib(double(info.free_bytes)) +
                  " are free; lower the batch size (max_batch_rows)");
    DeviceBuffer<std::byte> raw(static_cast<std::int64_t>(bytes));
    PinnedBuffer<std::byte> staging(static_cast<std::int64_t>(bytes));
    slot.raw = std::move(raw);
    slot.staging = std::move(staging);
  }

  // How the device kernels see a staged block: the block's own strides over raw[s], or, when the host
  // gathered it, a row-major block; dtype and byte order are the file's either way. A block in device
  // memory is read where it is.
  static ActivationBlock device_block(const ActivationBlock& block, const StagedBlock& staged, const Slot& slot,
                                     std::int64_t rows) {
    if (block.device >= 0) return block;
    const void* data = slot.raw.data() + staged.offset;
    if (!staged.gathered) {
      ActivationBlock b = block;
      b.data = data;
      return b;
    }
    ActivationBlock b = row_major_block(data, block.dtype, rows, block.units);
    b.big_endian = block.big_endian;
    return b;
  }

  [[noreturn]] void throw_nonfinite(unsigned long long index) const {
    const auto row = static_cast<std::int64_t>(index / static_cast<unsigned long long>(units_));
    const auto column = static_cast<std::int64_t>(index % static_cast<unsigned long long>(units_));
    int net = 0;
    while (column >= net_offsets_[net + 1]) ++net;
    throw NonFiniteValueError(net, row, column - net_offsets_[net]);
  }

  Totals fetch_totals() {
    copy_.synchronize();
    pack_.synchronize();
    compute_.synchronize();
    copy_async(totals_host_.data(), totals_.data(), 1, cudaMemcpyDeviceToHost, compute_.ref());
    compute_.synchronize();
    return *totals_host_.data();
  }

  DeviceScope scope_;  // first: the members below are made and released with the device current
  int device_;
  Fp32Routine routine_;
  int staging_threads_;
  std::vector<std::int64_t> net_offsets_;  // nets + 1 entries
  std::int64_t units_;

  Stream copy_, pack_, compute_;
  CublasHandle cublas_{compute_.ref()};
  Slot slots_[2];
  int next_slot_ = 0;

  // Batch scratch, on compute_ only: the batch as float64 rows, then as the centred float32 product input.
  DeviceBuffer<double> x64_;
  DeviceBuffer<float> x_;
  DeviceBuffer<__nv_bfloat16> x_bf16_;
  DeviceBuffer<float> product_;
  DeviceBuffer<double> partials_;
  DeviceBuffer<double> low_, high_, centre_, multiplier_, scaled_mean_;  // BatchScaling
  DeviceBuffer<int> batch_exponent_;
  DeviceBuffer<double> rescale_, batch_scale_, delta_;  // MergeFactors
  DeviceBuffer<double> origin_, half_mean_, min_, max_, m2_;  // RunningState
  DeviceBuffer<int> exponent_;
  DeviceBuffer<Totals> totals_;
  // The norm sums of the debiased CKA about the origin (launch_norm_sums): net offsets (nets + 1), per
  // row and net squared norms, reduction partials, units x nets and nets x nets sums.
  DeviceBuffer<std::int64_t> net_offsets_device_;
  DeviceBuffer<double> row_norms_, norm_partials_, unit_norm_sums_, pair_norm_sums_;
  PinnedBuffer<Totals> totals_host_{1};
};

std::string device_summary(int device) {
  cudaDeviceProp prop{};
  CONVERGENT_CUDA_CHECK(cudaGetDeviceProperties(&prop, device));
  return std::string(prop.name) + ", sm_" + std::to_string(prop.major) + std::to_string(prop.minor) + ", " +
         gib(double(prop.totalGlobalMem));
}

class CudaBackend final : public Backend {
 public:
  explicit CudaBackend(const BackendOptions& options)
      : scope_(options.device),
        device_(options.device),
        summary_(device_summary(device_)),
        routine_(fp32_routine_from_environment()),
        staging_threads_(std::min(thread_count(options.threads), kMaxStagingThreads)) {
    scope_.leave();
  }

  ~CudaBackend() override { scope_.enter(); }

  BackendKind kind() const override { return BackendKind::cuda; }

  std::string description() const override {
    return "cuda (" + summary_ + "; fp32 product: cublasS" + to_string(routine_) + ")";
  }

 protected:
  std::unique_ptr<MomentAccumulator> do_accumulator(const std::vector<std::int64_t>& units_per_net,
                                                    const AccumulateOptions& options) override {
    return std::make_unique<CudaAccumulator>(device_, units_per_net, options, routine_, staging_threads_);
  }

  // One-hot int8 GEMM, exact (kernels/joint_counts.cu).
  std::unique_ptr<JointCounter> do_joint_counter(std::int64_t row_units, std::optional<std::int64_t> col_units,
                                                 const JointCountOptions& options) override {
    return make_cuda_joint_counter(device_, row_units, col_units, options);
  }

  // Host memory in place (the comoment's buffer gets the correlation back); the device holds both.
  void do_correlation(MatrixView<double> host, const std::vector<bool>& dead) override {
    DeviceGuard guard(device_);
    const std::int64_t u = host.rows;
    if (u == 0) return;
    const std::vector<unsigned char> dead_bytes(dead.begin(), dead.end());
    DeviceBuffer<double> m2(u * u), out(u * u), scale(u);
    DeviceBuffer<unsigned char> dead_device(u);
    copy_async(m2.data(), host.data, u * u, cudaMemcpyHostToDevice, stream_.ref());
    copy_async(dead_device.data(), dead_bytes.data(), u, cudaMemcpyHostToDevice, stream_.ref());
    launch_correlation(m2.data(), dead_device.data(), u, scale.data(), out.data(), stream_.ref());
    copy_async(host.data, out.data(), u * u, cudaMemcpyDeviceToHost, stream_.ref());
    stream_.synchronize();
  }

  std::vector<std::int64_t> do_row_argmax(MatrixView<const double> m) override {
    DeviceGuard guard(device_);
    std::vector<std::int64_t> best(static_cast<std::size_t>(m.rows), 0);
    DeviceBuffer<double> matrix(m.rows * m.cols);
    DeviceBuffer<std::int64_t> out(m.rows);
    DeviceBuffer<unsigned long long> first_nan(1);
    unsigned long long host_first_nan = 0;
    CONVERGENT_CUDA_CHECK(cudaMemsetAsync(first_nan.data(), 0xff, first_nan.bytes(), stream_.handle()));
    CONVERGENT_CUDA_CHECK(cudaMemcpy2DAsync(matrix.data(), sizeof(double) * m.cols, m.data, sizeof(double) * m.stride,
                                            sizeof(double) * m.cols, static_cast<std::size_t>(m.rows),
                                            cudaMemcpyHostToDevice, stream_.handle()));
    launch_row_argmax(matrix.data(), m.rows, m.cols, m.cols, out.data(), first_nan.data(), stream_.ref());
    copy_async(best.data(), out.data(), m.rows, cudaMemcpyDeviceToHost, stream_.ref());
    copy_async(&host_first_nan, first_nan.data(), 1, cudaMemcpyDeviceToHost, stream_.ref());
    stream_.synchronize();
    if (host_first_nan != std::numeric_limits<unsigned long long>::max()) {
      const auto cols = static_cast<unsigned long long>(m.cols);
      row_argmax_nan(static_cast<std::int64_t>(host_first_nan / cols), static_cast<std::int64_t>(host_first_nan % cols));
    }
    return best;
  }

  // cuSOLVER solves to working precision, whatever residual the caller would accept.
  Eigenpairs do_smallest_eigenpairs(MatrixView<const double> a, std::int64_t k, const EigenOptions&) override {
    DeviceGuard guard(device_);
    return smallest_eigenpairs_on_device(cusolver_.get(), stream_.ref(), a, k);
  }

  // cuSOLVER has no float32 subset solver that beats converting: the matrix is widened on the host.
  Eigenpairs do_smallest_eigenpairs(MatrixView<const float> a, std::int64_t k, const EigenOptions& options) override {
    Matrix wide(a.rows, a.cols);
    for (std::int64_t i = 0; i < a.rows; ++i) std::copy(a.row(i), a.row(i) + a.cols, wide.data() + i * a.cols);
    return do_smallest_eigenpairs(MatrixView<const double>(wide.view()), k, options);
  }

  Eigenpairs do_symmetric_eigenpairs(MatrixView<const double> a) override {
    DeviceGuard guard(device_);
    return symmetric_eigenpairs_on_device(cusolver_.get(), stream_.ref(), a);
  }

  SingularValueDecomposition do_singular_value_decomposition(MatrixView<const double> m, bool vectors) override {
    DeviceGuard guard(device_);
    return singular_value_decomposition_on_device(cusolver_.get(), stream_.ref(), m, vectors);
  }

 private:
  DeviceScope scope_;  // first: the members below are made and released with the device current
  int device_;
  std::string summary_;
  Fp32Routine routine_;  // read once from CONVERGENT_CUDA_FP32_PRODUCT, so a bad value fails at creation
  int staging_threads_;
  Stream stream_;
  CusolverHandle cusolver_;
};

// "driver supports CUDA 12.4, runtime 13.0": what to compare when the runtime refuses the driver.
std::string driver_and_runtime_versions() {
  int driver = 0, runtime = 0;
  auto text = [](int v) { return std::to_string(v / 1000) + "." + std::to_string(v % 1000 / 10); };
  const std::string driver_text = cudaDriverGetVersion(&driver) == cudaSuccess && driver > 0
                                      ? "driver supports CUDA " + text(driver)
                                      : "no CUDA driver loaded";
  cudaRuntimeGetVersion(&runtime);
  return driver_text + ", runtime " + text(runtime);
}

// Used only to ask the runtime whether this binary carries code the device can run.
__global__ void probe_kernel() {}

}  // namespace
}  // namespace convergent::cuda

namespace convergent::detail {

bool cuda_backend_compiled() { return true; }

BackendStatus cuda_backend_status(const BackendOptions& options) {
  BackendStatus status{BackendKind::cuda, true, false, ""};
  try {
    int count = 0;
    const cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) {
      cudaGetLastError();  // clear the sticky-free error so later calls start clean
      status.detail = std::string("no usable CUDA device: ") + cudaGetErrorString(err) + " (" +
                      cuda::driver_and_runtime_versions() + ")";
      return status;
    }
    if (count == 0) {
      status.detail = "no CUDA device found";
      return status;
    }
    if (options.device < 0 || options.device >= count) {
      status.detail = "CUDA device " + std::to_string(options.device) + " requested, but " + std::to_string(count) +
                      (count == 1 ? " device is" : " devices are") + " present";
      return status;
    }
    int previous = 0;
    if (cudaGetDevice(&previous) != cudaSuccess) previous = options.device;
    cudaSetDevice(options.device);
    cudaFuncAttributes attributes{};
    const cudaError_t image = cudaFuncGetAttributes(&attributes, cuda::probe_kernel);
    cudaSetDevice(previous);
    const std::string summary = cuda::device_summary(options.device);
    if (image != cudaSuccess) {
      cudaGetLastError();
      status.detail = summary + ": this build has no code for the device (" + cudaGetErrorString(image) +
                      "); rebuild with its architecture in CMAKE_CUDA_ARCHITECTURES";
      return status;
    }
    status.usable = true;
    status.detail = summary;
  } catch (const std::exception& e) {
    status.usable = false;
    status.detail = e.what();
  }
  return status;
}

std::unique_ptr<Backend> make_cuda_backend(const BackendOptions& options) {
  const BackendStatus status = cuda_backend_status(options);
  if (!status.usable) throw Error("CUDA backend not usable: " + status.detail);
  return std::make_unique<cuda::CudaBackend>(options);
}

void fail_cuda_allocation_after(int successes) { cuda::allocation_failure_countdown().store(successes); }

int cuda_device_count() {
  int count = 0;
  if (cudaGetDeviceCount(&count) != cudaSuccess) {
    cudaGetLastError();
    return 0;
  }
  return count;
}

int cuda_current_device() {
  int device = -1;
  return cudaGetDevice(&device) == cudaSuccess ? device : -1;
}

void set_cuda_current_device(int device) { CONVERGENT_CUDA_CHECK(cudaSetDevice(device)); }

std::shared_ptr<void> cuda_device_copy(const void* host, std::size_t bytes, int device) {
  cuda::DeviceGuard guard(device);
  const auto size = static_cast<std::int64_t>(std::max<std::size_t>(bytes, 1));
  auto buffer = std::make_shared<cuda::DeviceBuffer<std::byte>>(size);
  CONVERGENT_CUDA_CHECK(cudaMemcpy(buffer->data(), host, bytes, cudaMemcpyHostToDevice));
  return std::shared_ptr<void>(buffer, buffer->data());
}

}  // namespace convergent::detail
