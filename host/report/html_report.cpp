// Building report.html (html_report.hpp). Each chart is a Vega spec built here as JSON; the page parses
// them all and reports, in a status element, how many views rendered and with what size, so that a
// headless browser can check the page.
#include "report/html_report.hpp"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <optional>

#include "convergent/error.hpp"
#include "io/outputs.hpp"
#include "io/study_outputs.hpp"

#include "report/png.hpp"
#include "report/study_table.hpp"
#include "report/vega_bundle.hpp"

namespace convergent::report {
namespace {

using nlohmann::json;

// Tableau 10, Vega's default categorical scheme, spelled out so that the net strip image under the
// clustered matrix and the chart legends use the same colours.
const std::vector<std::string> net_colors = {"#4c78a8", "#f58518", "#e45756", "#72b7b2", "#54a24b",
                                             "#eeca3b", "#b279a2", "#ff9da6", "#9d755d", "#bab0ac"};
// The paper's figure 3: semi-matching in light green, one-to-one matching in dark green.
const char* semi_color = "#8fd175";
const char* matching_color = "#1b7a1b";

std::string escape(const std::string& text) {
  std::string out;
  for (const char c : text) {
    switch (c) {
      case '&': out += "&amp;"; break;
      case '<': out += "&lt;"; break;
      case '>': out += "&gt;"; break;
      case '"': out += "&quot;"; break;
      default: out += c;
    }
  }
  return out;
}

std::string fixed(double v, int digits = 3) {
  char text[32];
  std::snprintf(text, sizeof text, "%.*f", digits, v);
  return text;
}

std::string percent(double v) { return fixed(100 * v, 0) + "%"; }

std::string anchor(const std::string& text) {
  std::string id;
  for (const char c : text) id += std::isalnum(static_cast<unsigned char>(c)) ? c : '-';
  return id;
}

// Numbers in chart data are rounded to 5 significant digits: the charts cannot show more, and the page
// stays small.
double chart_value(double v) {
  if (v == 0 || !std::isfinite(v)) return 0;
  const double scale = std::pow(10.0, 4 - std::floor(std::log10(std::abs(v))));
  return std::round(v * scale) / scale;
}

// Indices of at most max_points evenly spaced entries of n, the first and last included. A chart a few
// hundred pixels wide cannot show more points of a sorted curve, and 4096-unit layers keep the page small.
constexpr std::size_t curve_points = 300;
constexpr std::size_t scatter_points = 1500;
std::vector<std::size_t> thin(std::size_t n, std::size_t max_points) {
  std::vector<std::size_t> kept;
  if (n <= max_points) {
    for (std::size_t i = 0; i < n; ++i) kept.push_back(i);
    return kept;
  }
  for (std::size_t i = 0; i < max_points; ++i) kept.push_back(i * (n - 1) / (max_points - 1));
  return kept;
}

json color_scale_stops() {
  const auto& stops = correlation_color_stops();
  json domain = json::array();
  for (std::size_t i = 0; i < stops.size(); ++i)
    domain.push_back(-1.0 + 2.0 * static_cast<double>(i) / static_cast<double>(stops.size() - 1));
  return {{"name", "color"}, {"type", "linear"}, {"domain", domain}, {"range", stops}, {"interpolate", "rgb"}};
}

json net_color_scale(const std::vector<std::string>& names) {
  json range = json::array();
  for (std::size_t i = 0; i < names.size(); ++i) range.push_back(net_colors[i % net_colors.size()]);
  return {{"name", "net"}, {"type", "ordinal"}, {"domain", names}, {"range", range}};
}

json line_marks(const std::string& data, const std::string& series, const std::string& x, const std::string& y,
                const std::string& color_scale, bool points) {
  json line = {{"type", "line"},
               {"from", {{"data", "series"}}},
               {"encode",
                {{"enter",
                  {{"x", {{"scale", "x"}, {"field", x}}},
                   {"y", {{"scale", "y"}, {"field", y}}},
                   {"stroke", {{"scale", color_scale}, {"field", series}}},
                   {"strokeWidth", {{"value", 2}}}}}}}};
  json marks = json::array({line});
  if (points)
    marks.push_back({{"type", "symbol"},
                     {"from", {{"data", "series"}}},
                     {"encode",
                      {{"enter",
                        {{"x", {{"scale", "x"}, {"field", x}}},
                         {"y", {{"scale", "y"}, {"field", y}}},
                         {"fill", {{"scale", color_scale}, {"field", series}}},
                         {"size", {{"value", 30}}},
                         {"tooltip", {{"signal", "datum"}}}}}}}});
  return {{"type", "group"}, {"from", {{"facet", {{"name", "series"}, {"data", data}, {"groupby", series}}}}}, {"marks", marks}};
}

json axis(const std::string& orient, const std::string& scale, const std::string& title, bool grid = false) {
  return {{"orient", orient}, {"scale", scale}, {"title", title}, {"grid", grid}, {"labelFlush", true}, {"tickCount", 6}};
}

// Sorted correlations of the matched units of one pair, both assignments, as figure 3 of the paper.
json sorted_curve_values(const PairResult& pair, const std::string& layer, int layer_index) {
  json values = json::array();
  const auto add = [&](std::vector<double> corr, const char* kind) {
    std::sort(corr.begin(), corr.end(), std::greater<>());
    for (const std::size_t r : thin(corr.size(), curve_points))
      values.push_back({{"layer", layer}, {"li", layer_index}, {"rank", r}, {"corr", chart_value(corr[r])}, {"kind", kind}});
  };
  add(pair.semi_corr, "semi-matching");
  add(pair.match_corr, "one-to-one");
  return values;
}

double lowest(const json& values, const char* field) {
  double low = 0;
  for (const json& v : values) low = std::min(low, v[field].get<double>());
  return low;
}

json curve_color_scale() {
  return {{"name", "kind"}, {"type", "ordinal"}, {"domain", {"semi-matching", "one-to-one"}},
          {"range", {semi_color, matching_color}}};
}

json sorted_curves_spec(const PairResult& pair) {
  const json values = sorted_curve_values(pair, "", 0);
  return {{"width", 240},
          {"height", 170},
          {"padding", 5},
          {"data", {{{"name", "curves"}, {"values", values}}}},
          {"scales",
           {{{"name", "x"}, {"type", "linear"}, {"domain", {{"data", "curves"}, {"field", "rank"}}}, {"range", "width"}, {"nice", false}},
            {{"name", "y"}, {"type", "linear"}, {"domain", {std::floor(lowest(values, "corr") * 10) / 10, 1.0}}, {"range", "height"}},
            curve_color_scale()}},
          {"axes", {axis("bottom", "x", pair.a + " unit, sorted by correlation"), axis("left", "y", "correlation", true)}},
          {"legends", {{{"stroke", "kind"}, {"orient", "bottom-left"}, {"direction", "vertical"}}}},
          {"marks", {line_marks("curves", "kind", "rank", "corr", "kind", false)}}};
}

// The paper's figure 3 for every layer: one panel per layer, first same-size pair.
json figure3_spec(const std::vector<LayerResults>& layers, const std::vector<LayerRow>& rows) {
  json values = json::array();
  for (std::size_t l = 0; l < layers.size(); ++l)
    for (const PairResult& p : layers[l].pairs)
      if (p.a + "-" + p.b == rows[l].first_pair) {
        for (const json& v : sorted_curve_values(p, layers[l].name + " (" + p.a + " vs " + p.b + ")", static_cast<int>(l)))
          values.push_back(v);
        break;
      }
  const json cell_scales = {
      {{"name", "x"}, {"type", "linear"}, {"domain", {{"data", "cell"}, {"field", "rank"}}}, {"range", {0, 210}}, {"nice", false}},
      {{"name", "y"}, {"type", "linear"}, {"domain", {std::floor(lowest(values, "corr") * 10) / 10, 1.0}}, {"range", {150, 0}}}};
  return {{"padding", 5},
          {"data", {{{"name", "curves"}, {"values", values}}}},
          {"scales", {curve_color_scale()}},
          {"layout", {{"columns", std::min<std::size_t>(layers.size(), 4)}, {"padding", 24}, {"bounds", "full"}, {"align", "all"}}},
          {"legends", {{{"stroke", "kind"}, {"orient", "right"}, {"title", "assignment"}}}},
          {"marks",
           {{{"type", "group"},
             {"from", {{"facet", {{"name", "cell"}, {"data", "curves"}, {"groupby", {"li", "layer"}}}}}},
             {"sort", {{"field", "datum.li"}}},
             {"title", {{"text", {{"signal", "parent.layer"}}}, {"fontSize", 12}}},
             {"encode", {{"update", {{"width", {{"value", 210}}}, {"height", {{"value", 150}}}}}}},
             {"scales", cell_scales},
             {"axes", {axis("bottom", "x", "unit, sorted by correlation"), axis("left", "y", "correlation", true)}},
             {"marks", {line_marks("cell", "kind", "rank", "corr", "kind", false)}}}}}};
}

// Per layer, the mean over same-size pairs of every index present, with the two matchings' mean
// correlations, which are always there.
json indices_per_layer_spec(const std::vector<LayerResults>& layers, const std::vector<LayerRow>& rows, bool& any_index) {
  static const std::vector<std::pair<std::string, std::string>> names = {
      {"linear_cka", "linear CKA"}, {"cca", "mean CCA"}, {"svcca", "SVCCA"}, {"pwcca", "PWCCA"}, {"procrustes", "Procrustes similarity"}};
  json values = json::array();
  any_index = false;
  for (std::size_t l = 0; l < layers.size(); ++l) {
    const auto in_group = [&](const std::string& n) {
      return std::find(rows[l].group.begin(), rows[l].group.end(), n) != rows[l].group.end();
    };
    std::map<std::string, std::pair<double, int>> sums;
    for (const PairResult& p : layers[l].pairs) {
      if (!in_group(p.a) || !in_group(p.b)) continue;
      auto& semi = sums["semi-matching mean corr"];
      semi.first += p.semi_mean_corr, ++semi.second;
      auto& match = sums["one-to-one mean corr"];
      match.first += p.matching_mean_corr, ++match.second;
      for (const auto& [key, label] : names)
        if (const auto it = p.indices.find(key); it != p.indices.end()) {
          auto& s = sums[label];
          s.first += it->second, ++s.second;
          any_index = true;
        }
    }
    for (const auto& [label, sum] : sums)
      values.push_back({{"layer", layers[l].name}, {"li", l}, {"measure", label}, {"value", chart_value(sum.first / sum.second)}});
  }
  // The matchings in figure 3's greens, the indices in other colours, in a fixed order.
  json domain = json::array(), range = json::array();
  const std::vector<std::string> others = {"#4c78a8", "#f58518", "#e45756", "#b279a2", "#9d755d"};
  std::vector<std::pair<std::string, std::string>> order = {{"semi-matching mean corr", semi_color},
                                                            {"one-to-one mean corr", matching_color}};
  for (std::size_t i = 0; i < names.size(); ++i) order.emplace_back(names[i].second, others[i]);
  for (const auto& entry : order)  // not a structured binding: C++17 lambdas cannot capture one (clang refuses)
    if (std::any_of(values.begin(), values.end(), [&](const json& v) { return v["measure"] == entry.first; })) {
      domain.push_back(entry.first);
      range.push_back(entry.second);
    }
  return {{"width", std::min<std::size_t>(360, 140 + 70 * layers.size())},
          {"height", 220},
          {"padding", 5},
          {"data", {{{"name", "indices"}, {"values", values}}}},
          {"scales",
           {{{"name", "x"}, {"type", "point"}, {"domain", {{"data", "indices"}, {"field", "layer"}, {"sort", {{"field", "li"}, {"op", "min"}}}}},
             {"range", "width"}, {"padding", 0.3}},
            {{"name", "y"}, {"type", "linear"}, {"domain", {std::min(0.0, lowest(values, "value")), 1.0}}, {"range", "height"}},
            {{"name", "measure"}, {"type", "ordinal"}, {"domain", domain}, {"range", range}}}},
          {"axes", {axis("bottom", "x", "layer"), axis("left", "y", "mean over same-size pairs", true)}},
          {"legends", {{{"stroke", "measure"}, {"fill", "measure"}, {"title", "measure"}}}},
          {"marks", {line_marks("indices", "measure", "layer", "value", "measure", true)}}};
}

// A matrix drawn as one image: unit-index axes, the correlation colour legend, optionally a strip of
// net colours above it and cluster boundaries.
struct MatrixPicture {
  std::string data_url;
  std::int64_t rows = 0, cols = 0;
  std::string x_title, y_title;
  std::string strip_url;                // 1-pixel-high image of each column's net colour
  std::vector<std::string> strip_nets;  // legend of the strip
  std::vector<std::int64_t> boundaries; // unit positions where a new cluster starts
};

json matrix_spec(const MatrixPicture& m) {
  const double side = 260;
  double width = side, height = side;
  if (m.cols >= m.rows) height = std::max(40.0, side * static_cast<double>(m.rows) / static_cast<double>(m.cols));
  else width = std::max(40.0, side * static_cast<double>(m.cols) / static_cast<double>(m.rows));
  const auto image = [](const std::string& url, json y, json h) {
    return json{{"type", "image"},
                {"encode",
                 {{"enter",
                   {{"url", {{"value", url}}},
                    {"x", {{"value", 0}}},
                    {"y", y},
                    {"width", {{"signal", "width"}}},
                    {"height", h},
                    {"aspect", {{"value", false}}},
                    {"smooth", {{"value", false}}}}}}}};
  };
  json marks = json::array({image(m.data_url, {{"value", 0}}, {{"signal", "height"}})});
  json scales = {{{"name", "x"}, {"type", "linear"}, {"domain", {0, m.cols}}, {"range", "width"}, {"nice", false}, {"zero", true}},
                 {{"name", "y"}, {"type", "linear"}, {"domain", {0, m.rows}}, {"range", {0, height}}, {"nice", false}, {"zero", true}},
                 color_scale_stops()};
  json legends = {{{"fill", "color"}, {"type", "gradient"}, {"title", "corr"}, {"gradientLength", std::max(40.0, height - 20)},
                   {"values", {-1, -0.5, 0, 0.5, 1}}}};
  if (!m.strip_url.empty()) {
    marks.push_back(image(m.strip_url, {{"value", -9}}, {{"value", 6}}));
    scales.push_back(net_color_scale(m.strip_nets));
    legends.push_back({{"fill", "net"}, {"title", "net"}, {"symbolType", "square"}});
  }
  json data = json::array();
  if (!m.boundaries.empty()) {
    json positions = json::array();
    for (const std::int64_t b : m.boundaries) positions.push_back({{"p", b}});
    data.push_back({{"name", "bounds"}, {"values", positions}});
    const json rule_style = {{"stroke", {{"value", "#222"}}}, {"strokeOpacity", {{"value", 0.35}}}, {"strokeWidth", {{"value", 0.6}}}};
    json vertical = rule_style, horizontal = rule_style;
    vertical.update({{"x", {{"scale", "x"}, {"field", "p"}}}, {"y", {{"value", 0}}}, {"y2", {{"signal", "height"}}}});
    horizontal.update({{"y", {{"scale", "y"}, {"field", "p"}}}, {"x", {{"value", 0}}}, {"x2", {{"signal", "width"}}}});
    marks.push_back({{"type", "rule"}, {"from", {{"data", "bounds"}}}, {"encode", {{"enter", vertical}}}});
    marks.push_back({{"type", "rule"}, {"from", {{"data", "bounds"}}}, {"encode", {{"enter", horizontal}}}});
  }
  return {{"width", width},
          {"height", height},
          {"padding", 5},
          {"data", data},
          {"scales", scales},
          {"axes", {axis("bottom", "x", m.x_title), axis("left", "y", m.y_title)}},
          {"legends", legends},
          {"marks", marks}};
}

std::string png_url(const IndexedImage& image) { return "data:image/png;base64," + base64(encode_png(image)); }

// A's units ordered by the correlation of their one-to-one match (best first, then unmatched units);
// B's units in the order of their partners, then B's unmatched units: the assigned pairs lie on the
// diagonal, brightest at the top left.
std::optional<MatrixPicture> permuted_pair_matrix(const LayerResults& layer, const PairResult& pair, std::int64_t max_side) {
  const std::unique_ptr<NpyMatrixRows> corr =
      pair.match_a.empty() ? nullptr : open_matrix(layer, "corr_" + pair.a + "_" + pair.b + ".npy");
  if (!corr) return std::nullopt;
  const std::int64_t rows = corr->rows(), cols = corr->cols();
  std::vector<std::size_t> by_corr(pair.match_a.size());
  std::iota(by_corr.begin(), by_corr.end(), 0);
  std::stable_sort(by_corr.begin(), by_corr.end(), [&](std::size_t i, std::size_t j) { return pair.match_corr[i] > pair.match_corr[j]; });
  std::vector<std::int64_t> row_order, col_order;
  std::vector<bool> row_used(static_cast<std::size_t>(rows)), col_used(static_cast<std::size_t>(cols));
  for (const std::size_t i : by_corr) {
    if (pair.match_a[i] >= rows || pair.match_b[i] >= cols) return std::nullopt;  // tables of another run
    row_order.push_back(pair.match_a[i]);
    col_order.push_back(pair.match_b[i]);
    row_used[static_cast<std::size_t>(pair.match_a[i])] = col_used[static_cast<std::size_t>(pair.match_b[i])] = true;
  }
  for (std::int64_t r = 0; r < rows; ++r)
    if (!row_used[static_cast<std::size_t>(r)]) row_order.push_back(r);
  for (std::int64_t c = 0; c < cols; ++c)
    if (!col_used[static_cast<std::size_t>(c)]) col_order.push_back(c);
  // The permuted matrix, one row at a time from the file.
  std::vector<double> source(static_cast<std::size_t>(cols));
  const MatrixRowSource permuted = [&](std::int64_t r, double* values) {
    corr->row(row_order[static_cast<std::size_t>(r)], source.data());
    for (std::int64_t c = 0; c < cols; ++c) values[c] = source[static_cast<std::size_t>(col_order[static_cast<std::size_t>(c)])];
  };
  MatrixPicture m;
  m.data_url = png_url(correlation_image(rows, cols, permuted, max_side));
  m.rows = rows;
  m.cols = cols;
  m.x_title = pair.b + " unit, permuted by the matching";
  m.y_title = pair.a + " unit, by matched correlation";
  return m;
}

std::optional<MatrixPicture> clustered_matrix(const LayerResults& layer, std::int64_t max_side) {
  const std::unique_ptr<NpyMatrixRows> corr = open_matrix(layer, "corr_clustered.npy");
  if (!corr) return std::nullopt;
  const std::int64_t rows = corr->rows(), cols = corr->cols();
  MatrixPicture m;
  m.data_url = png_url(correlation_image(
      rows, cols, [&](std::int64_t r, double* values) { corr->row(r, values); }, max_side));
  m.rows = rows;
  m.cols = cols;
  m.x_title = m.y_title = "unit of any net, in spectral cluster order";
  const std::vector<ClusterRow> clusters = load_clusters(layer);
  if (static_cast<std::int64_t>(clusters.size()) == cols) {
    for (const NetResult& n : layer.nets) m.strip_nets.push_back(n.name);
    IndexedImage strip;
    strip.width = reduced_extent(cols, max_side);
    strip.height = 1;
    for (std::size_t i = 0; i < m.strip_nets.size(); ++i) {
      const std::string& hex = net_colors[i % net_colors.size()];
      strip.palette.push_back({static_cast<std::uint8_t>(std::stoi(hex.substr(1, 2), nullptr, 16)),
                               static_cast<std::uint8_t>(std::stoi(hex.substr(3, 2), nullptr, 16)),
                               static_cast<std::uint8_t>(std::stoi(hex.substr(5, 2), nullptr, 16))});
    }
    for (std::int64_t px = 0; px < strip.width; ++px) {
      // A pixel covering several units shows the net of its first unit.
      const ClusterRow& row = clusters[static_cast<std::size_t>(px * cols / strip.width)];
      const auto net = std::find(m.strip_nets.begin(), m.strip_nets.end(), row.net);
      strip.pixels.push_back(static_cast<std::uint8_t>(net == m.strip_nets.end() ? 0 : (net - m.strip_nets.begin()) % 10));
    }
    if (!strip.palette.empty()) m.strip_url = png_url(strip);
    // Rules at cluster starts, unless there are so many that they would hide the picture.
    std::vector<std::int64_t> starts;
    for (std::size_t i = 1; i < clusters.size(); ++i)
      if (clusters[i].cluster != clusters[i - 1].cluster) starts.push_back(static_cast<std::int64_t>(i));
    if (starts.size() <= 60) m.boundaries = starts;
  }
  return m;
}

json mean_activation_spec(const LayerResults& layer) {
  json values = json::array();
  std::vector<std::string> names;
  for (const NetResult& n : layer.nets) {
    std::vector<double> sorted = n.mean;
    std::sort(sorted.begin(), sorted.end(), std::greater<>());
    for (const std::size_t r : thin(sorted.size(), curve_points))
      values.push_back({{"net", n.name}, {"rank", r}, {"mean", chart_value(sorted[r])}});
    names.push_back(n.name);
  }
  return {{"width", 300},
          {"height", 190},
          {"padding", 5},
          {"data", {{{"name", "means"}, {"values", values}}}},
          {"scales",
           {{{"name", "x"}, {"type", "linear"}, {"domain", {{"data", "means"}, {"field", "rank"}}}, {"range", "width"}, {"nice", false}},
            {{"name", "y"}, {"type", "linear"}, {"domain", {{"data", "means"}, {"field", "mean"}}}, {"range", "height"}, {"zero", true}},
            net_color_scale(names)}},
          {"axes", {axis("bottom", "x", "unit, sorted by mean activation"), axis("left", "y", "mean activation", true)}},
          {"legends", {{{"stroke", "net"}, {"title", "net"}}}},
          {"marks", {line_marks("means", "net", "rank", "mean", "net", false)}}};
}

json sparse_spec(const LayerResults& layer, const char* field, const std::string& title) {
  json values = json::array();
  std::vector<double> alphas;  // ticks at the penalties that were fitted: a log axis's own ticks crowd
  for (const SparseDirection& d : layer.sparse)
    for (const AlphaPoint& p : d.path)
      if (std::find(alphas.begin(), alphas.end(), p.alpha) == alphas.end()) alphas.push_back(p.alpha);
  for (const SparseDirection& d : layer.sparse)
    for (const AlphaPoint& p : d.path)
      values.push_back({{"direction", d.from + " \u2192 " + d.to},
                        {"alpha", p.alpha},
                        {"value", chart_value(std::string(field) == "loss" ? p.mean_loss : p.mean_nonzeros)}});
  json alpha_axis = axis("bottom", "x", "alpha (L1 penalty)");
  alpha_axis["values"] = alphas;
  alpha_axis["format"] = "~g";
  return {{"width", 280},
          {"height", 190},
          {"padding", 5},
          {"data", {{{"name", "path"}, {"values", values}}}},
          {"scales",
           {{{"name", "x"}, {"type", "log"}, {"domain", {{"data", "path"}, {"field", "alpha"}}}, {"range", "width"}, {"nice", false},
             {"padding", 8}},
            {{"name", "y"}, {"type", "linear"}, {"domain", {{"data", "path"}, {"field", "value"}}}, {"range", "height"}, {"zero", true}},
            {{"name", "direction"}, {"type", "ordinal"}, {"domain", {{"data", "path"}, {"field", "direction"}}}, {"range", {{"scheme", "category20"}}}}}},
          {"axes", {alpha_axis, axis("left", "y", title, true)}},
          {"legends", {{{"stroke", "direction"}, {"title", "predictors \u2192 targets"}, {"columns", layer.sparse.size() > 12 ? 2 : 1}}}},
          {"marks", {line_marks("path", "direction", "alpha", "value", "direction", true)}}};
}

json mi_spec(const PairResult& pair) {
  json values = json::array();
  for (const std::size_t i : thin(std::min(pair.match_mi.size(), pair.match_corr.size()), scatter_points))
    values.push_back({{"corr", chart_value(pair.match_corr[i])}, {"mi", chart_value(pair.match_mi[i])},
                      {"unit_a", pair.match_a[i]}, {"unit_b", pair.match_b[i]}});
  return {{"width", 240},
          {"height", 170},
          {"padding", 5},
          {"data", {{{"name", "pairs"}, {"values", values}}}},
          {"scales",
           {{{"name", "x"}, {"type", "linear"}, {"domain", {{"data", "pairs"}, {"field", "corr"}}}, {"range", "width"}, {"zero", true}},
            {{"name", "y"}, {"type", "linear"}, {"domain", {{"data", "pairs"}, {"field", "mi"}}}, {"range", "height"}, {"zero", true}}}},
          {"axes", {axis("bottom", "x", "correlation of matched pair"), axis("left", "y", "mutual information (" + pair.mi_unit + ")", true)}},
          {"marks",
           {{{"type", "symbol"},
             {"from", {{"data", "pairs"}}},
             {"encode",
              {{"enter",
                {{"x", {{"scale", "x"}, {"field", "corr"}}},
                 {"y", {{"scale", "y"}, {"field", "mi"}}},
                 {"fill", {{"value", matching_color}}},
                 {"fillOpacity", {{"value", 0.6}}},
                 {"size", {{"value", 24}}},
                 {"tooltip", {{"signal", "datum"}}}}}}}}}}};
}

// The page under construction: HTML text and the Vega specs its figures refer to.
class Page {
 public:
  void html(const std::string& text) { html_ += text; }
  void figure(const json& spec, const std::string& caption) {
    html_ += "<figure><div class=\"view\" data-spec=\"" + std::to_string(specs_.size()) + "\"></div><figcaption>" + caption +
             "</figcaption></figure>\n";
    specs_.push_back(spec);
  }
  std::int64_t figures() const { return static_cast<std::int64_t>(specs_.size()); }
  std::string body() const { return html_; }
  std::string specs_json() const {
    std::string text = specs_.dump();
    // Inside a <script> element "</" must not appear; "<\/" reads back as the same JSON string.
    for (std::size_t at = text.find("</"); at != std::string::npos; at = text.find("</", at + 3)) text.insert(at + 1, "\\");
    return text;
  }

 private:
  std::string html_;
  json specs_ = json::array();
};

std::string figures_cells(const std::optional<PairFigures>& f) {
  if (!f) return "<td>-</td><td>-</td><td>-</td><td>-</td>";
  return "<td>" + fixed(f->semi) + "</td><td>" + fixed(f->matching) + "</td><td>" + percent(f->same) + "</td><td>" +
         (f->cka ? fixed(*f->cka) : std::string("-")) + "</td>";
}

void overview(Page& page, const std::vector<LayerResults>& layers, const std::vector<LayerRow>& rows) {
  const LayerRow& head = rows.front();
  std::string group;
  for (std::size_t i = 0; i < head.group.size(); ++i) group += (i ? ", " : "") + head.group[i];
  page.html("<section id=\"overview\"><h2>Study overview</h2>\n<p>" + std::to_string(layers.size()) +
            " layer(s). As in table 1 of Li et al. (2016): mean correlation of units paired by semi-matching (each "
            "unit's best partner) and by one-to-one matching; <i>same</i> is the share of units whose semi-match "
            "is their one-to-one match; <i>mixed</i> the share of live units in spectral clusters holding units of "
            "more than one net. Averages over the pairs of the same-size nets (" + escape(group) + ").</p>\n");
  page.html("<table><thead><tr><th rowspan=\"2\">layer</th><th rowspan=\"2\">units</th><th colspan=\"4\">" +
            escape(head.first_pair.empty() ? "first pair" : head.first_pair) + "</th><th colspan=\"4\">mean of " +
            std::to_string(head.group_pairs) + " same-size pairs</th><th rowspan=\"2\">mixed</th></tr>\n<tr>");
  for (int i = 0; i < 2; ++i) page.html("<th>semi</th><th>match</th><th>same</th><th>CKA</th>");
  page.html("</tr></thead><tbody>\n");
  for (const LayerRow& r : rows)
    page.html("<tr><td><a href=\"#layer-" + anchor(r.layer) + "\">" + escape(r.layer) + "</a></td><td>" +
              std::to_string(r.units) + "</td>" + figures_cells(r.first) + figures_cells(r.mean) + "<td>" +
              (r.mixed_share ? percent(*r.mixed_share) : std::string("-")) + "</td></tr>\n");
  page.html("</tbody></table>\n<div class=\"row\">\n");
  page.figure(figure3_spec(layers, rows),
              "Correlations of paired units, sorted, per layer (the paper's figure 3): semi-matching (light green) "
              "and one-to-one matching (dark green), first same-size pair.");
  bool any_index = false;
  const json indices = indices_per_layer_spec(layers, rows, any_index);
  page.figure(indices, std::string("Similarity per layer, mean over same-size pairs") +
                           (any_index ? "." : " (no similarity indices in these runs: only the matchings' mean correlations)."));
  page.html("</div></section>\n");
}

void layer_section(Page& page, const LayerResults& layer, const ReportOptions& options) {
  page.html("<section id=\"layer-" + anchor(layer.name) + "\"><h2>Layer " + escape(layer.name) + "</h2>\n<p>" +
            std::to_string(layer.samples) + " samples; nets: ");
  for (std::size_t i = 0; i < layer.nets.size(); ++i)
    page.html((i ? ", " : "") + escape(layer.nets[i].name) + " (" + std::to_string(layer.nets[i].units) + " units" +
              (layer.nets[i].dead_units ? ", " + std::to_string(layer.nets[i].dead_units) + " dead" : std::string()) + ")");
  if (layer.clusters)
    page.html("; spectral clustering: " + std::to_string(*layer.clusters) + " clusters" +
              (layer.mixed_share ? ", " + percent(*layer.mixed_share) + " of live units in mixed clusters" : std::string()));
  page.html(".</p>\n");

  // The pairs' figures, with whichever indices the run computed.
  static const std::vector<std::pair<std::string, std::string>> index_names = {
      {"linear_cka", "CKA"}, {"cca", "CCA"}, {"svcca", "SVCCA"}, {"pwcca", "PWCCA"}, {"procrustes", "Procrustes"}};
  std::vector<std::pair<std::string, std::string>> present;
  for (const auto& index : index_names)
    if (std::any_of(layer.pairs.begin(), layer.pairs.end(), [&](const PairResult& p) { return p.indices.count(index.first) > 0; }))
      present.push_back(index);
  page.html("<table><thead><tr><th>pair</th><th>semi</th><th>match</th><th>same</th>");
  for (const auto& index : present) page.html("<th>" + index.second + "</th>");
  page.html("</tr></thead><tbody>\n");
  for (const PairResult& p : layer.pairs) {
    page.html("<tr><td><a href=\"#pair-" + anchor(layer.name + "-" + p.a + "-" + p.b) + "\">" + escape(p.a + " vs " + p.b) +
              "</a></td><td>" + fixed(p.semi_mean_corr) + "</td><td>" + fixed(p.matching_mean_corr) + "</td><td>" +
              percent(p.same_assignment_fraction) + "</td>");
    for (const auto& index : present) {
      const auto it = p.indices.find(index.first);
      page.html("<td>" + (it != p.indices.end() ? fixed(it->second) : std::string("-")) + "</td>");
    }
    page.html("</tr>\n");
  }
  page.html("</tbody></table>\n<div class=\"row\">\n");

  std::vector<std::string> absent;
  if (const auto m = clustered_matrix(layer, options.max_image_side))
    page.figure(matrix_spec(*m), "Correlation of all units of all nets, rows and columns in spectral cluster order "
                                 "(lines: cluster starts; strip: each unit's net)" +
                                     std::string(m->cols > options.max_image_side ? "; each pixel shows the strongest correlation (largest magnitude) of the block of units it covers" : "") + ".");
  else
    absent.push_back("the clustered matrix (run without --clusters none)");
  if (std::any_of(layer.nets.begin(), layer.nets.end(), [](const NetResult& n) { return !n.mean.empty(); }))
    page.figure(mean_activation_spec(layer), "Mean activation of every unit, sorted, one line per net (the paper's "
                                             "mean-activation distributions).");
  if (!layer.sparse.empty()) {
    page.figure(sparse_spec(layer, "loss", "mean prediction loss (1 - R\u00b2)"),
                "Sparse prediction: normalised loss of predicting each unit of one net from all units of another, "
                "against the L1 penalty alpha.");
    page.figure(sparse_spec(layer, "nnz", "mean number of predictors"),
                "Sparse prediction: predictors used per target unit against alpha.");
  } else {
    absent.push_back("sparse prediction (--analyses)");
  }
  page.html("</div>\n");
  if (std::none_of(layer.pairs.begin(), layer.pairs.end(), [](const PairResult& p) { return !p.match_mi.empty(); }))
    absent.push_back("mutual information");
  if (!absent.empty()) {
    std::string text;
    for (std::size_t i = 0; i < absent.size(); ++i) text += (i ? "; " : "") + absent[i];
    page.html("<p class=\"note\">Not in this run's outputs: " + escape(text) + ".</p>\n");
  }

  for (const PairResult& p : layer.pairs) {
    page.html("<h3 id=\"pair-" + anchor(layer.name + "-" + p.a + "-" + p.b) + "\">" + escape(layer.name) + ": " +
              escape(p.a + " vs " + p.b) + "</h3>\n<div class=\"row\">\n");
    page.figure(sorted_curves_spec(p), "Sorted correlations of paired units: semi-matching mean " + fixed(p.semi_mean_corr) +
                                           ", one-to-one mean " + fixed(p.matching_mean_corr) + ".");
    if (const auto m = permuted_pair_matrix(layer, p, options.max_image_side))
      page.figure(matrix_spec(*m), "Between-net correlation, " + escape(p.b) + "'s units permuted by the one-to-one matching "
                                   "(assigned pairs on the diagonal, best first)" +
                                       std::string(std::max(m->rows, m->cols) > options.max_image_side ? "; each pixel shows the strongest correlation (largest magnitude) of the block of units it covers" : "") + ".");
    if (!p.match_mi.empty())
      page.figure(mi_spec(p), "Mutual information against correlation for the one-to-one matched pairs" +
                                  std::string(p.match_mi.size() > scatter_points ? " (" + std::to_string(scatter_points) +
                                                                                       " of them, evenly spread)" : "") + ".");
    page.html("</div>\n");
  }
  page.html("</section>\n");
}

// Renders every view, then writes into #status how many rendered and the smallest size, or what went
// wrong: the headless-browser test reads it from the dumped DOM.
const char* page_script = R"js(
(function () {
  var status = document.getElementById('status');
  var problems = [];
  function show(state, text) { status.setAttribute('data-state', state); status.textContent = text; }
  window.addEventListener('error', function (e) { problems.push('error: ' + e.message); show('error', problems.join('; ')); });
  var consoleError = console.error, consoleWarn = console.warn;
  console.error = function () { problems.push('console.error: ' + Array.prototype.join.call(arguments, ' ')); consoleError.apply(console, arguments); };
  console.warn = function () { problems.push('console.warn: ' + Array.prototype.join.call(arguments, ' ')); consoleWarn.apply(console, arguments); };
  try {
    var specs = JSON.parse(document.getElementById('specs').textContent);
    var holders = Array.prototype.slice.call(document.querySelectorAll('[data-spec]'));
    Promise.all(holders.map(function (el) {
      var view = new vega.View(vega.parse(specs[+el.getAttribute('data-spec')]),
                               {renderer: 'canvas', container: el, hover: true, logLevel: vega.Warn});
      return view.runAsync();
    })).then(function () {
      var smallest = null, zero = 0;
      holders.forEach(function (el) {
        var canvas = el.querySelector('canvas');
        var box = canvas ? canvas.getBoundingClientRect() : {width: 0, height: 0};
        if (!(box.width > 0 && box.height > 0)) zero++;
        var area = box.width * box.height;
        if (smallest === null || area < smallest.area) smallest = {area: area, w: box.width, h: box.height};
      });
      var text = holders.length + ' figures rendered, ' + zero + ' of zero size, smallest ' +
                 (smallest ? Math.round(smallest.w) + 'x' + Math.round(smallest.h) : 'none') + ' px';
      if (problems.length || zero) show('error', text + '; ' + problems.join('; '));
      else show('ok', text);
    }).catch(function (e) { problems.push('render: ' + e); show('error', problems.join('; ')); });
  } catch (e) { problems.push('setup: ' + e); show('error', problems.join('; ')); }
})();
)js";

const char* page_style = R"css(
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 2em 3em; color: #222; max-width: 1500px; }
h1 { font-size: 1.5em; margin: 0.8em 0 0.2em; } h2 { border-bottom: 1px solid #ccc; margin-top: 1.6em; } h3 { margin: 1.2em 0 0.3em; font-size: 1.05em; }
table { border-collapse: collapse; margin: 0.6em 0; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ddd; padding: 2px 8px; text-align: right; } th { background: #f4f4f4; text-align: center; } td:first-child { text-align: left; }
.row { display: flex; flex-wrap: wrap; gap: 1em 2em; align-items: flex-start; }
figure { margin: 0.4em 0; width: min-content; } figcaption { min-width: 200px; font-size: 12px; color: #555; }
.note { color: #666; font-size: 12px; } nav a { margin-right: 1em; }
#status { font-size: 11px; color: #888; }
)css";

}  // namespace

void check_report_options(const ReportOptions& options) {
  if (options.max_image_side < min_image_side || options.max_image_side > max_image_side_limit)
    throw Error("max_image_side " + std::to_string(options.max_image_side) + ": expected " +
                std::to_string(min_image_side) + " to " + std::to_string(max_image_side_limit) + " pixels");
}

HtmlReport html_report(const std::vector<LayerResults>& layers, const ReportOptions& options) {
  if (layers.empty()) throw Error("the report needs at least one layer");
  check_report_options(options);
  const std::string vega = vega_scripts(vega_directory(options.vega_dir));
  const std::vector<LayerRow> rows = study_table(layers);
  Page page;
  page.html("<h1>" + escape(options.title) + "</h1>\n<p>Do different neural networks learn the same features? "
            "Units of separately trained nets compared as in Li, Yosinski, Clune, Lipson and Hopcroft, "
            "&ldquo;Convergent Learning&rdquo; (ICLR 2016). Written by <code>convergent</code>.</p>\n<nav>Layers: ");
  for (const LayerResults& layer : layers)
    page.html("<a href=\"#layer-" + anchor(layer.name) + "\">" + escape(layer.name) + "</a>");
  page.html("</nav>\n");
  overview(page, layers, rows);
  for (const LayerResults& layer : layers) layer_section(page, layer, options);

  HtmlReport report;
  report.figures = page.figures();
  report.html = "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">\n<title>" + escape(options.title) +
                "</title>\n<style>" + page_style + "</style>\n" + vega + "</head>\n<body>\n" + page.body() +
                "<p id=\"status\" data-state=\"pending\">rendering " + std::to_string(report.figures) +
                " figures&hellip;</p>\n<script type=\"application/json\" id=\"specs\">" + page.specs_json() +
                "</script>\n<script>" + page_script + "</script>\n</body></html>\n";
  return report;
}

WrittenReport write_report(const std::vector<std::string>& arguments, const std::string& out_path,
                           const ReportOptions& options) {
  if (arguments.empty()) throw Error("report: no layers given (align output directories or study manifests)");
  require_vega(vega_directory(options.vega_dir));
  WrittenReport written;
  written.layers = load_study(arguments);
  written.path = out_path;
  if (written.path.empty()) {
    // One directory or one manifest: the report goes beside it; several inputs have no obvious home.
    if (arguments.size() != 1) throw Error("report over several inputs: say where it goes with --out FILE");
    const std::filesystem::path input = split_layer_argument(arguments.front()).second;
    written.path = ((std::filesystem::is_directory(input) ? input : input.parent_path()) / "report.html").string();
  }
  check_file_output(written.path);  // before the pictures are drawn
  const HtmlReport html = html_report(written.layers, options);
  write_file_atomically(written.path, html.html);
  written.bytes = static_cast<std::int64_t>(html.html.size());
  written.figures = html.figures;
  return written;
}

}  // namespace convergent::report
