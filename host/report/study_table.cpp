// The study table (study_table.hpp).
#include "report/study_table.hpp"

#include <algorithm>
#include <cstdio>
#include <map>

namespace convergent::report {
namespace {

std::string fixed(const char* format, double v) {
  char text[32];
  std::snprintf(text, sizeof text, format, v);
  return text;
}

std::string pad(const std::string& text, std::size_t width, bool left = false) {
  if (text.size() >= width) return text;
  return left ? text + std::string(width - text.size(), ' ') : std::string(width - text.size(), ' ') + text;
}

// " title " centred in a rule of dashes `width` wide, over the columns it names.
std::string rule_title(const std::string& title, std::size_t width) {
  const std::string text = " " + title + " ";
  if (text.size() + 2 >= width) return text;
  const std::size_t left = (width - text.size()) / 2;
  return std::string(left, '-') + text + std::string(width - text.size() - left, '-');
}

std::string figures_text(const std::optional<PairFigures>& f) {
  if (!f) return pad("-", 7) + pad("-", 7) + pad("-", 7) + pad("-", 7);
  return pad(fixed("%.3f", f->semi), 7) + pad(fixed("%.3f", f->matching), 7) + pad(fixed("%.0f%%", 100 * f->same), 7) +
         pad(f->cka ? fixed("%.3f", *f->cka) : "-", 7);
}

}  // namespace

std::vector<LayerRow> study_table(const std::vector<LayerResults>& layers) {
  std::vector<LayerRow> rows;
  for (const LayerResults& layer : layers) {
    LayerRow row;
    row.layer = layer.name;
    row.mixed_share = layer.mixed_share;
    row.clusters = layer.clusters;
    std::map<std::int64_t, std::size_t> count;
    for (const NetResult& n : layer.nets) ++count[n.units];
    std::size_t best = 0;
    for (const NetResult& n : layer.nets)  // first net's size wins ties: nets are seen in summary order
      if (count[n.units] > best) best = count[n.units], row.units = n.units;
    for (const NetResult& n : layer.nets)
      if (n.units == row.units) row.group.push_back(n.name);
    const auto in_group = [&](const std::string& name) {
      return std::find(row.group.begin(), row.group.end(), name) != row.group.end();
    };
    PairFigures sum;
    bool all_cka = true;
    for (const PairResult& p : layer.pairs) {
      if (!in_group(p.a) || !in_group(p.b)) continue;
      const auto cka = p.indices.find("linear_cka");
      const PairFigures f{p.semi_mean_corr, p.matching_mean_corr, p.same_assignment_fraction,
                          cka != p.indices.end() ? std::optional<double>(cka->second) : std::nullopt};
      if (!row.first) {
        row.first = f;
        row.first_pair = p.a + "-" + p.b;
      }
      sum.semi += f.semi;
      sum.matching += f.matching;
      sum.same += f.same;
      all_cka = all_cka && f.cka;
      if (f.cka) sum.cka = sum.cka.value_or(0) + *f.cka;
      ++row.group_pairs;
    }
    if (row.group_pairs > 0) {
      const double n = static_cast<double>(row.group_pairs);
      row.mean = PairFigures{sum.semi / n, sum.matching / n, sum.same / n,
                             all_cka && sum.cka ? std::optional<double>(*sum.cka / n) : std::nullopt};
    }
    rows.push_back(std::move(row));
  }
  return rows;
}

std::string format_study_table(const std::vector<LayerRow>& rows) {
  if (rows.empty()) return "";
  // The pair and group named in the header are those of the first layer; a layer whose differ says so.
  const LayerRow& head = rows.front();
  std::string group_names;
  for (std::size_t i = 0; i < head.group.size(); ++i) group_names += (i ? ", " : "") + head.group[i];
  std::string text;
  text += "semi: mean correlation of semi-matched units; match: of one-to-one matched units; same: share of units\n"
          "whose semi-match is their one-to-one match; CKA: linear CKA; mixed: share of live units in spectral\n"
          "clusters that mix nets. Mean over the " + std::to_string(head.group_pairs) + " pairs of the same-size nets " +
          group_names + ".\n\n";
  std::size_t name_width = 5;
  for (const LayerRow& r : rows) name_width = std::max(name_width, r.layer.size());
  const std::string first_title = head.first_pair.empty() ? "first pair" : head.first_pair;
  text += pad("", name_width, true) + pad("", 7) + "  " + rule_title(first_title, 28) + "  " +
          rule_title("mean of " + std::to_string(head.group_pairs) + " pairs", 28) + "\n";
  text += pad("layer", name_width, true) + pad("units", 7) + "  " + pad("semi", 7) + pad("match", 7) + pad("same", 7) +
          pad("CKA", 7) + "  " + pad("semi", 7) + pad("match", 7) + pad("same", 7) + pad("CKA", 7) + pad("mixed", 8) + "\n";
  for (const LayerRow& r : rows) {
    text += pad(r.layer, name_width, true) + pad(std::to_string(r.units), 7) + "  " + figures_text(r.first) + "  " +
            figures_text(r.mean) + pad(r.mixed_share ? fixed("%.0f%%", 100 * *r.mixed_share) : "-", 8);
    if (!r.first_pair.empty() && r.first_pair != head.first_pair) text += "  (first pair " + r.first_pair + ")";
    text += "\n";
  }
  return text;
}

}  // namespace convergent::report
