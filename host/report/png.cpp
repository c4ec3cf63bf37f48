// PNG encoding and the correlation colour map (png.hpp).
#include "report/png.hpp"

#include <zlib.h>

#include <algorithm>
#include <cmath>

#include "convergent/error.hpp"

namespace convergent::report {
namespace {

void put_u32(std::string& out, std::uint32_t v) {
  out.push_back(static_cast<char>(v >> 24));
  out.push_back(static_cast<char>(v >> 16));
  out.push_back(static_cast<char>(v >> 8));
  out.push_back(static_cast<char>(v));
}

void put_chunk(std::string& out, const char* type, const std::string& data) {
  put_u32(out, static_cast<std::uint32_t>(data.size()));
  const std::string body = std::string(type, 4) + data;
  out += body;
  put_u32(out, static_cast<std::uint32_t>(
                   ::crc32(0L, reinterpret_cast<const Bytef*>(body.data()), static_cast<uInt>(body.size()))));
}

Rgb parse_hex(const std::string& hex) {
  const auto byte = [&](std::size_t at) { return static_cast<std::uint8_t>(std::stoi(hex.substr(at, 2), nullptr, 16)); };
  return {byte(1), byte(3), byte(5)};
}

}  // namespace

std::string encode_png(const IndexedImage& image) {
  if (image.width < 1 || image.height < 1) throw Error("encode_png: the image is empty");
  if (image.palette.empty() || image.palette.size() > 256)
    throw Error("encode_png: a palette needs 1 to 256 colours, not " + std::to_string(image.palette.size()));
  if (static_cast<std::int64_t>(image.pixels.size()) != image.width * image.height)
    throw Error("encode_png: pixel count does not match width x height");
  for (const std::uint8_t p : image.pixels)
    if (p >= image.palette.size()) throw Error("encode_png: a pixel indexes past the palette");

  std::string png("\x89PNG\r\n\x1a\n", 8);
  std::string header;
  put_u32(header, static_cast<std::uint32_t>(image.width));
  put_u32(header, static_cast<std::uint32_t>(image.height));
  header += std::string("\x08\x03\x00\x00\x00", 5);  // 8 bits, palette, deflate, adaptive filters, no interlace
  put_chunk(png, "IHDR", header);
  std::string palette;
  for (const Rgb& c : image.palette) palette.append(reinterpret_cast<const char*>(c.data()), 3);
  put_chunk(png, "PLTE", palette);

  // Filter type 0 on every row: the PNG spec's advice for palette images (their indices are not
  // magnitudes, so prediction filters rarely help).
  std::string raw;
  raw.reserve(static_cast<std::size_t>((image.width + 1) * image.height));
  for (std::int64_t y = 0; y < image.height; ++y) {
    raw.push_back('\0');
    raw.append(reinterpret_cast<const char*>(image.pixels.data() + y * image.width), static_cast<std::size_t>(image.width));
  }
  uLongf size = ::compressBound(static_cast<uLong>(raw.size()));
  std::string compressed(size, '\0');
  if (::compress2(reinterpret_cast<Bytef*>(compressed.data()), &size, reinterpret_cast<const Bytef*>(raw.data()),
                  static_cast<uLong>(raw.size()), Z_BEST_COMPRESSION) != Z_OK)
    throw Error("encode_png: zlib could not compress the image");
  compressed.resize(size);
  put_chunk(png, "IDAT", compressed);
  put_chunk(png, "IEND", "");
  return png;
}

std::string base64(std::string_view bytes) {
  static const char* alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
  std::string out;
  out.reserve((bytes.size() + 2) / 3 * 4);
  std::size_t i = 0;
  for (; i + 2 < bytes.size(); i += 3) {
    const std::uint32_t v = (std::uint32_t(std::uint8_t(bytes[i])) << 16) | (std::uint32_t(std::uint8_t(bytes[i + 1])) << 8) |
                            std::uint8_t(bytes[i + 2]);
    out += {alphabet[v >> 18], alphabet[(v >> 12) & 63], alphabet[(v >> 6) & 63], alphabet[v & 63]};
  }
  if (i < bytes.size()) {
    const bool two = i + 1 < bytes.size();
    const std::uint32_t v = (std::uint32_t(std::uint8_t(bytes[i])) << 16) | (two ? std::uint32_t(std::uint8_t(bytes[i + 1])) << 8 : 0);
    out += {alphabet[v >> 18], alphabet[(v >> 12) & 63], two ? alphabet[(v >> 6) & 63] : '=', '='};
  }
  return out;
}

const std::vector<std::string>& correlation_color_stops() {
  static const std::vector<std::string> stops = {"#053061", "#2166ac", "#4393c3", "#92c5de", "#d1e5f0", "#f7f7f7",
                                                 "#fddbc7", "#f4a582", "#d6604d", "#b2182b", "#67001f"};
  return stops;
}

std::vector<Rgb> correlation_palette() {
  std::vector<Rgb> stops;
  for (const std::string& hex : correlation_color_stops()) stops.push_back(parse_hex(hex));
  const double segments = static_cast<double>(stops.size() - 1);
  std::vector<Rgb> palette(256);
  for (int i = 0; i < 256; ++i) {
    // Same piecewise-linear RGB interpolation as a Vega linear scale with "interpolate": "rgb".
    const double t = i / 255.0 * segments;
    const auto k = std::min(static_cast<std::size_t>(t), stops.size() - 2);
    const double f = t - static_cast<double>(k);
    for (int c = 0; c < 3; ++c)
      palette[i][c] = static_cast<std::uint8_t>(std::lround(stops[k][c] + f * (stops[k + 1][c] - stops[k][c])));
  }
  return palette;
}

std::uint8_t correlation_index(double value) {
  const double clamped = std::clamp(value, -1.0, 1.0);
  return static_cast<std::uint8_t>(std::lround((clamped + 1.0) * 127.5));
}

std::int64_t reduced_extent(std::int64_t n, std::int64_t max_side) { return std::min(n, std::max<std::int64_t>(1, max_side)); }

IndexedImage correlation_image(const std::vector<double>& values, std::int64_t rows, std::int64_t cols,
                               std::int64_t max_side, BlockReduction reduction) {
  if (static_cast<std::int64_t>(values.size()) != rows * cols) throw Error("correlation_image: size mismatch");
  return correlation_image(
      rows, cols, [&](std::int64_t r, double* row) { std::copy_n(values.data() + r * cols, cols, row); }, max_side,
      reduction);
}

IndexedImage correlation_image(std::int64_t rows, std::int64_t cols, const MatrixRowSource& row, std::int64_t max_side,
                               BlockReduction reduction) {
  if (rows < 1 || cols < 1) throw Error("correlation_image: the matrix is empty");
  IndexedImage image;
  image.height = reduced_extent(rows, max_side);
  image.width = reduced_extent(cols, max_side);
  image.palette = correlation_palette();
  image.pixels.resize(static_cast<std::size_t>(image.width * image.height));
  std::vector<double> values(static_cast<std::size_t>(cols));
  std::vector<double> sum(static_cast<std::size_t>(image.width)), largest(sum.size());
  for (std::int64_t py = 0; py < image.height; ++py) {
    const std::int64_t r0 = py * rows / image.height, r1 = (py + 1) * rows / image.height;
    std::fill(sum.begin(), sum.end(), 0.0);
    std::fill(largest.begin(), largest.end(), 0.0);
    // Each pixel sums its block row by row, left to right: the order of a block read whole.
    for (std::int64_t r = r0; r < r1; ++r) {
      row(r, values.data());
      for (std::int64_t px = 0; px < image.width; ++px) {
        const std::int64_t c0 = px * cols / image.width, c1 = (px + 1) * cols / image.width;
        for (std::int64_t c = c0; c < c1; ++c) {
          const double v = values[static_cast<std::size_t>(c)];
          sum[static_cast<std::size_t>(px)] += v;
          if (std::abs(v) > std::abs(largest[static_cast<std::size_t>(px)])) largest[static_cast<std::size_t>(px)] = v;
        }
      }
    }
    for (std::int64_t px = 0; px < image.width; ++px) {
      const std::int64_t c0 = px * cols / image.width, c1 = (px + 1) * cols / image.width;
      image.pixels[static_cast<std::size_t>(py * image.width + px)] = correlation_index(
          reduction == BlockReduction::mean ? sum[static_cast<std::size_t>(px)] / static_cast<double>((r1 - r0) * (c1 - c0))
                                            : largest[static_cast<std::size_t>(px)]);
    }
  }
  return image;
}

}  // namespace convergent::report
