// report.html: one self-contained page over the layers of a study (one `convergent align` output per
// layer). A study overview (the paper's table, its figure-3 curves per layer, similarity per layer), then
// per layer its combined correlation matrix in spectral-cluster order, sorted mean activations, sparse
// prediction against alpha, and per pair of nets the sorted matching correlations, the between-net
// matrix with B permuted by the matching and MI against correlation. Charts are Vega specs; matrices
// are PNG images (data URLs); Vega itself is inlined, so the file opens offline.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "report/layer_results.hpp"

namespace convergent::report {

struct ReportOptions {
  std::string title = "convergent report";
  // Matrices larger than this many units a side are drawn at this many pixels, each pixel the entry of
  // largest magnitude in the block it covers: the file stays small (a 4096-unit pair matrix is one
  // 512 x 512 8-bit image, about 80 KB in the page).
  std::int64_t max_image_side = 512;
  std::string vega_dir;  // where Vega is; "" for vega_directory()'s default
};

struct HtmlReport {
  std::string html;
  std::int64_t figures = 0;  // Vega views on the page
};

// The report over `layers` (in the order given). Charts whose data a layer lacks (an analysis that did
// not run) are left out and the page says so. Throws Error when Vega cannot be found (see require_vega)
// or a matrix file cannot be read.
HtmlReport html_report(const std::vector<LayerResults>& layers, const ReportOptions& options);

}  // namespace convergent::report
