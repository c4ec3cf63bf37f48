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

// The range of ReportOptions::max_image_side, in pixels.
constexpr std::int64_t min_image_side = 16, max_image_side_limit = 8192;

struct ReportOptions {
  std::string title = "convergent report";
  // Matrices larger than this many units a side are drawn at this many pixels, each pixel the entry of
  // largest magnitude in the block it covers: the file stays small (a 4096-unit pair matrix is one
  // 512 x 512 8-bit image, about 80 KB in the page). In [min_image_side, max_image_side_limit].
  std::int64_t max_image_side = 512;
  std::string vega_dir;  // where Vega is; "" for vega_directory()'s default
};

// Throws Error for options html_report would refuse (max_image_side out of its range), so that a caller
// can check them before the work whose results the report shows.
void check_report_options(const ReportOptions& options);

struct HtmlReport {
  std::string html;
  std::int64_t figures = 0;  // Vega views on the page
};

// The report over `layers` (in the order given). Charts whose data a layer lacks (an analysis that did
// not run) are left out and the page says so. Throws Error when Vega cannot be found (see require_vega)
// or a matrix file cannot be read, and for a max_image_side out of its range.
HtmlReport html_report(const std::vector<LayerResults>& layers, const ReportOptions& options);

struct WrittenReport {
  std::string path;                  // the file written
  std::vector<LayerResults> layers;  // the layers on the page, in order (for study_table)
  std::int64_t bytes = 0;            // the file's size
  std::int64_t figures = 0;          // Vega views on the page
};

// `convergent report`: report.html over finished align outputs. `arguments` are the layers as load_study
// takes them, in page order: output directories ([NAME=]DIR, a bare DIR named by its last component) and
// study manifests. `out_path` is the HTML file to write; "" puts it beside a single argument (DIR/report.html,
// or report.html in a manifest's directory) and is an error for several. The file is written under a
// temporary name beside it and renamed when whole (its directory is created), so a failure leaves no file
// and an earlier one untouched. Throws Error, before anything is written: when no argument is given; when
// Vega is missing (require_vega on vega_directory(options.vega_dir), checked first); naming an argument
// that is neither an output directory nor a manifest, or a directory without an align run's summary.json;
// for several arguments without `out_path`; as html_report does; and naming `out_path` when it cannot be
// written.
WrittenReport write_report(const std::vector<std::string>& arguments, const std::string& out_path,
                           const ReportOptions& options);

}  // namespace convergent::report
