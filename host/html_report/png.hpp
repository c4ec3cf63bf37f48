// Matrices as pictures for report.html: an indexed-colour PNG encoder (deflate from zlib), the colour maps
// the report's Vega legends repeat, block-mean reduction of large matrices, and base64 for data URLs.
#pragma once

#include <array>
#include <cstdint>
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

// A rows x cols matrix (row-major, `values[r * cols + c]`) reduced to at most max_side pixels a side:
// each pixel is the mean of the block of entries it covers (blocks of floor/ceil sizes, so every entry
// counts once), mapped through the correlation palette.
IndexedImage correlation_image(const std::vector<double>& values, std::int64_t rows, std::int64_t cols,
                               std::int64_t max_side);

// Reduced size along one axis: n itself when n <= max_side, else max_side.
std::int64_t reduced_extent(std::int64_t n, std::int64_t max_side);

}  // namespace convergent::report
