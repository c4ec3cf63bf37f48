// Matrices as pictures for report.html: an indexed-colour PNG encoder (deflate from zlib), the colour maps
// the report's Vega legends repeat, block-mean reduction of large matrices, and base64 for data URLs.
#pragma once

#include <array>
#include <cstdint>
#include <functional>
#include <string>
#include <string_view>
#include <vector>

namespace convergent::report {

using Rgb = std::array<std::uint8_t, 3>;

// An 8-bit palette image: one palette index per pixel, rows top to bottom.
struct IndexedImage {
  std::int64_t width = 0;
  std::int64_t height = 0;
  std::vector<std::uint8_t> pixels;  // width * height indices into palette
  std::vector<Rgb> palette;          // at most 256 colours
};

// The PNG file (colour type 3, bit depth 8) of `image`. Throws Error on an empty image, a palette of more
// than 256 colours or an index outside it.
std::string encode_png(const IndexedImage& image);

// Standard base64 (RFC 4648, with padding), as data: URLs need.
std::string base64(std::string_view bytes);

// The diverging colour map of correlations: ColorBrewer RdBu reversed (blue -1, white 0, red +1), as
// `stops` evenly spaced colours on [-1, 1]. The report's Vega legends use the same stops with RGB
// interpolation, so the legend and the picture agree.
const std::vector<std::string>& correlation_color_stops();  // "#rrggbb", low to high
// 256 colours: index i stands for the correlation -1 + 2 i / 255.
std::vector<Rgb> correlation_palette();
// The palette index of correlation `value` (clamped to [-1, 1]).
std::uint8_t correlation_index(double value);

// How a block of entries becomes one pixel when a matrix is larger than the picture.
enum class BlockReduction {
  // The entry of largest magnitude, with its sign: a few strong correlations in a block of noise (the
  // matched diagonal of a 4096-unit pair drawn at 512 pixels) stay visible; a mean would fade them by the
  // block's area. This is the report's choice, and its captions say so.
  largest_magnitude,
  mean,  // the block's mean: faithful for broad structure, fades isolated entries
};

// A rows x cols matrix (row-major, `values[r * cols + c]`) reduced to at most max_side pixels a side:
// each pixel covers a block of entries (blocks of floor/ceil sizes, so every entry falls in exactly one)
// reduced as `reduction` says, then mapped through the correlation palette.
IndexedImage correlation_image(const std::vector<double>& values, std::int64_t rows, std::int64_t cols,
                               std::int64_t max_side, BlockReduction reduction = BlockReduction::largest_magnitude);
// The same picture from a row source: row(r, values) fills row r (cols values); rows are asked for in
// order, once each, and only one is held, so a matrix larger than memory is drawn from its file.
using MatrixRowSource = std::function<void(std::int64_t row, double* values)>;
IndexedImage correlation_image(std::int64_t rows, std::int64_t cols, const MatrixRowSource& row, std::int64_t max_side,
                               BlockReduction reduction = BlockReduction::largest_magnitude);

// Reduced size along one axis: n itself when n <= max_side, else max_side.
std::int64_t reduced_extent(std::int64_t n, std::int64_t max_side);

}  // namespace convergent::report
