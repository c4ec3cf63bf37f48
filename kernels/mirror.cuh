// Symmetric matrices kept in one triangle: the accumulator's M2 and the correlation are computed in their
// row-major upper triangle only (half the traffic, and exact symmetry by construction), then mirrored.
#pragma once

#include <cstdint>

#include "device_memory.cuh"

namespace convergent::cuda {

// m(i, j) = m(j, i) for every j < i of the row-major n x n matrix `m` (rows n apart): the strictly
// lower triangle is written from the upper one, which is only read. Tiles go through shared memory so
// that both the reads and the transposed writes are coalesced.
void launch_mirror_upper(double* m, std::int64_t n, StreamRef stream);

// The (column tile, row tile) grid over an n x n matrix in 32 x 32 tiles, for kernels that work on the
// upper triangle (blocks whose row tile is past their column tile return at once). Throws Error when n
// exceeds the launch grid.
dim3 upper_tile_grid(std::int64_t n, const char* what);
constexpr int kTileSize = 32;     // tile edge: one warp across
constexpr int kTileRowStep = 8;   // rows of threads in a block; each thread takes kTileSize / kTileRowStep rows

}  // namespace convergent::cuda
