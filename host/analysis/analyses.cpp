// The --analyses list, running the selected analyses on a study, and staging their outputs.
#include "analysis/analyses.hpp"

#include <cmath>
#include <cstdio>
#include <sstream>

#include "convergent/error.hpp"

namespace convergent {
namespace {

using nlohmann::json;

// Every selectable analysis: its name (the summary.json key and the --analyses entry) and its switch.
struct Named {
  const char* name;
  bool AnalysisSelection::*flag;
};
constexpr Named analyses[] = {
    {"sparse_prediction", &AnalysisSelection::sparse_prediction},
    {"reliability", &AnalysisSelection::reliability},
    {"mean_distributions", &AnalysisSelection::mean_distributions},
    {"linear_cka", &AnalysisSelection::linear_cka},
    {"cca", &AnalysisSelection::cca},
    {"svcca", &AnalysisSelection::svcca},
    {"pwcca", &AnalysisSelection::pwcca},
    {"procrustes", &AnalysisSelection::procrustes},
};

// Strongest predictors listed per unit in sparse_<a>_<b>.csv.
constexpr std::size_t top_predictors = 3;

std::vector<std::string> split_list(const std::string& list) {
  std::vector<std::string> items;
  std::stringstream in(list);
  std::string item;
  while (std::getline(in, item, ',')) items.push_back(item);  // an empty entry is kept, for the caller to refuse
  return items;
}

// Shortest text that reads back as the same double (json's number format).
std::string number(double v) { return json(v).dump(); }

std::string threshold_key(double t) {
  char text[32];
  std::snprintf(text, sizeof text, "%g", t);
  return text;
}

json counts_by_threshold(const std::vector<double>& thresholds, const std::vector<std::int64_t>& counts) {
  json j = json::object();
  for (std::size_t t = 0; t < thresholds.size(); ++t) j[threshold_key(thresholds[t])] = counts[t];
  return j;
}

void stage_sparse(OutputDir& out, const Study& study, const std::vector<SparsePrediction>& directions,
                  const LassoOptions& lasso, json& summary) {
  json list = json::array();
  for (const SparsePrediction& s : directions) {
    const std::string& from = study.nets[static_cast<std::size_t>(s.from_net)].name;
    const std::string& to = study.nets[static_cast<std::size_t>(s.to_net)].name;
    std::string csv = "alpha,unit,loss,nnz";
    for (std::size_t k = 1; k <= top_predictors; ++k)
      csv += ",predictor_" + std::to_string(k) + ",weight_" + std::to_string(k);
    csv += "\n";
    json path = json::array();
    for (const SparsePredictionPoint& point : s.path) {
      path.push_back({{"alpha", point.alpha},
                      {"mean_loss", point.mean_loss},
                      {"mean_nonzeros", point.mean_nonzeros},
                      {"not_converged", point.not_converged}});
      for (std::size_t t = 0; t < point.fits.size(); ++t) {
        const LassoFit& fit = point.fits[t];
        csv += number(point.alpha) + "," + std::to_string(s.targets[t]) + "," + number(fit.loss) + "," +
               std::to_string(fit.predictors.size());
        for (std::size_t k = 0; k < top_predictors; ++k)
          csv += k < fit.predictors.size() ? "," + std::to_string(fit.predictors[k]) + "," + number(fit.weights[k]) : ",,";
        csv += "\n";
      }
    }
    write_text_file(out.stage("sparse_" + from + "_" + to + ".csv"), csv);
    list.push_back({{"from", from},
                    {"to", to},
                    {"predictors", s.predictors},
                    {"targets", s.targets.size()},
                    {"dead_targets_left_out", s.dead_targets},
                    {"path", path}});
  }
  summary["sparse_prediction"] = {{"objective", "1/2 E[(z_b - w.z_a)^2] + alpha ||w||_1 on standardised units"},
                                  {"alphas", lasso.alphas},
                                  {"relative_duality_gap", lasso.tolerance},
                                  {"directions", list}};
}

void stage_reliability(OutputDir& out, const Study& study, const Reliability& r, json& summary) {
  const std::vector<double> sd = study.moments.stddev();
  json nets = json::array();
  for (std::size_t i = 0; i < study.nets.size(); ++i) {
    const NetInfo& info = study.nets[i];
    const NetReliability& net = r.nets[i];
    std::string csv = "unit,mean,std,dead";
    for (std::size_t j = 0; j < study.nets.size(); ++j) {
      if (j == i) continue;
      const std::string& o = study.nets[j].name;
      csv += ",semi_" + o + ",semi_corr_" + o + ",match_" + o + ",match_corr_" + o;
    }
    csv += ",min_semi_corr,min_match_corr,consistent\n";
    for (std::int64_t u = 0; u < info.units; ++u) {
      const UnitReliability& unit = net.units[static_cast<std::size_t>(u)];
      const auto g = static_cast<std::size_t>(info.offset + u);
      csv += std::to_string(u) + "," + number(study.moments.mean[g]) + "," + number(sd[g]) + "," +
             (unit.dead ? "true" : "false");
      for (const UnitPartner& p : unit.partners)
        csv += "," + std::to_string(p.semi) + "," + number(p.semi_corr) + "," + std::to_string(p.match) + "," +
               number(p.match_corr);
      csv += "," + number(unit.min_semi_corr) + "," + number(unit.min_match_corr) + "," +
             (unit.consistent ? "true" : "false") + "\n";
    }
    write_text_file(out.stage("units_" + info.name + ".csv"), csv);
    nets.push_back({{"name", info.name},
                    {"live_units", net.live},
                    {"consistent", net.consistent},
                    {"learned_by_all", counts_by_threshold(r.thresholds, net.learned_by_all)},
                    {"learned_by_all_consistent", counts_by_threshold(r.thresholds, net.learned_by_all_consistent)},
                    {"best_partner_in_all", counts_by_threshold(r.thresholds, net.best_partner_in_all)}});
  }
  summary["reliability"] = {{"thresholds", r.thresholds}, {"nets", nets}};
}

void stage_means(const Study& study, const MeanDistributions& m, const MeanDistributionOptions& options, json& summary) {
  json nets = json::array();
  for (std::size_t i = 0; i < m.nets.size(); ++i)
    nets.push_back({{"name", study.nets[i].name},
                    {"live_units", m.nets[i].sorted_means.size()},
                    {"dead_units_left_out", m.nets[i].dead},
                    {"sorted_means", m.nets[i].sorted_means},
                    {"within_net_ks", {{"mean", m.nets[i].within_ks_mean}, {"std", m.nets[i].within_ks_std}}}});
  json pairs = json::array();
  for (const MeanPair& p : m.pairs)
    pairs.push_back({{"a", study.nets[static_cast<std::size_t>(p.a)].name},
                     {"b", study.nets[static_cast<std::size_t>(p.b)].name},
                     {"ks_statistic", p.ks.statistic},
                     {"ks_pvalue", p.ks.pvalue},
                     {"ks_exact", p.ks.exact},
                     {"wasserstein", p.wasserstein}});
  summary["mean_distributions"] = {{"splits", options.splits}, {"seed", options.seed}, {"nets", nets}, {"pairs", pairs}};
}

json canonical_json(const CanonicalCorrelations& c) { return {{"mean", c.mean}, {"correlations", c.correlations}}; }

void stage_similarity(const Study& study, const std::vector<PairSimilarity>& pairs, const AnalysisSelection& sel,
                      const SimilarityOptions& options, json& summary) {
  json cka = json::array(), cca = json::array(), svcca = json::array(), pwcca = json::array(), procrustes = json::array();
  for (const PairSimilarity& s : pairs) {
    const std::string& a = study.nets[static_cast<std::size_t>(s.a)].name;
    const std::string& b = study.nets[static_cast<std::size_t>(s.b)].name;
    // What every index entry starts with: the pair and the units it used.
    auto entry = [&](json fields) {
      json e = {{"a", a}, {"b", b}, {"live_units", {{a, s.live_a}, {b, s.live_b}}},
                {"dead_units_left_out", {{a, s.dead_a}, {b, s.dead_b}}}};
      if (s.live_a == 0 || s.live_b == 0) e["skipped"] = "a net without live units";
      e.update(fields);
      return e;
    };
    if (sel.linear_cka) {
      json fields = s.linear_cka ? json{{"value", *s.linear_cka}} : json::object();
      if (s.debiased_linear_cka) fields["debiased"] = *s.debiased_linear_cka;
      cka.push_back(entry(fields));
    }
    if (sel.cca) cca.push_back(entry(s.cca ? canonical_json(*s.cca) : json::object()));
    if (sel.svcca)
      svcca.push_back(entry(s.svcca ? json{{"mean", s.svcca->cca.mean},
                                           {"dims", {{a, s.svcca->dims_a}, {b, s.svcca->dims_b}}},
                                           {"correlations", s.svcca->cca.correlations}}
                                    : json::object()));
    if (sel.pwcca)
      pwcca.push_back(entry(s.pwcca ? json{{"value", s.pwcca->value},
                                           {"weighted_net", study.nets[static_cast<std::size_t>(s.pwcca->weighted_net)].name}}
                                    : json::object()));
    if (sel.procrustes)
      procrustes.push_back(entry(s.procrustes ? json{{"distance", s.procrustes->distance},
                                                     {"angle", s.procrustes->angle},
                                                     {"similarity", s.procrustes->similarity}}
                                              : json::object()));
  }
  if (sel.linear_cka) summary["linear_cka"] = cka;
  if (sel.cca) summary["cca"] = {{"ridge", options.ridge}, {"pairs", cca}};
  if (sel.svcca) summary["svcca"] = {{"variance_kept", options.svcca_variance}, {"ridge", options.ridge}, {"pairs", svcca}};
  if (sel.pwcca) summary["pwcca"] = {{"ridge", options.ridge}, {"pairs", pwcca}};
  if (sel.procrustes) summary["procrustes"] = procrustes;
}

// image_cka: which estimator, over what, and the pairs (value only from the exact estimator).
void stage_image_cka(const Study& study, const std::vector<PairSimilarity>& pairs, json& summary) {
  const ImageCka& image = *study.image_cka;
  const bool exact = image.estimator == ImageCka::Estimator::exact;
  json features = json::object(), entries = json::array();
  for (std::size_t k = 0; k < study.nets.size(); ++k) features[study.nets[k].name] = image.features[k];
  for (const PairSimilarity& s : pairs) {
    const std::string& a = study.nets[static_cast<std::size_t>(s.a)].name;
    const std::string& b = study.nets[static_cast<std::size_t>(s.b)].name;
    json e = {{"a", a}, {"b", b}};
    if (exact) {
      e["live_features"] = {{a, s.live_a}, {b, s.live_b}};
      e["dead_features_left_out"] = {{a, s.dead_a}, {b, s.dead_b}};
    }
    if (s.linear_cka) e["value"] = *s.linear_cka;
    if (s.debiased_linear_cka) e["debiased"] = *s.debiased_linear_cka;
    entries.push_back(e);
  }
  json section = {{"samples", "images"}, {"features", features}, {"estimator", exact ? "exact" : "minibatch"}};
  if (exact) {
    section["inputs"] = image.moments.samples;
  } else {
    section["minibatch_inputs"] = image.minibatch_inputs;
    section["minibatches"] = image.minibatches;
    section["last_minibatch_inputs"] = image.last_minibatch_inputs;
    section["dropped_minibatches"] = image.dropped_minibatches;
  }
  section["pairs"] = entries;
  summary["image_cka"] = section;
}

}  // namespace

std::string analysis_names() {
  std::string names;
  for (const Named& a : analyses) names += (names.empty() ? "" : ",") + std::string(a.name);
  return names;
}

AnalysisSelection parse_analyses(const std::string& list) {
  AnalysisSelection selection;
  if (list == "all") return selection;
  for (const Named& a : analyses) selection.*a.flag = false;
  if (list == "none") return selection;
  for (const std::string& item : split_list(list)) {
    bool known = false;
    for (const Named& a : analyses)
      if (item == a.name) selection.*a.flag = known = true;
    if (!known)
      throw Error("--analyses: unknown analysis '" + item + "'; expected all, none or a comma-separated list of " +
                  analysis_names() + ",mutual_information");
  }
  return selection;
}

std::vector<double> parse_alphas(const std::string& list) {
  std::vector<double> alphas;
  for (const std::string& item : split_list(list)) {
    std::size_t used = 0;
    double alpha = 0.0;
    try {
      alpha = std::stod(item, &used);
    } catch (const std::exception&) {
      used = 0;
    }
    if (used != item.size() || !(alpha > 0.0) || !std::isfinite(alpha))
      throw Error("--lasso-alpha: '" + item + "' is not a positive number");
    alphas.push_back(alpha);
  }
  if (alphas.empty()) throw Error("--lasso-alpha: no penalty given");
  return alphas;
}

AnalysisResults run_analyses(Backend& backend, const Study& study, const std::vector<PairAlignment>& matchings,
                             const AnalysisOptions& options) {
  const AnalysisSelection& sel = options.selection;
  AnalysisResults results;
  results.options = options;
  const int nets = static_cast<int>(study.nets.size());
  if (sel.sparse_prediction)
    for (int a = 0; a < nets; ++a)
      for (int b = a + 1; b < nets; ++b) {
        results.sparse.push_back(sparse_prediction(study, a, b, options.lasso));
        results.sparse.push_back(sparse_prediction(study, b, a, options.lasso));
      }
  if (sel.reliability) results.reliability = reliability(study, matchings, options.reliability);
  if (sel.mean_distributions) results.means = mean_distributions(study, options.means);
  SimilarityOptions similarity = options.similarity;
  similarity.linear_cka = sel.linear_cka;
  similarity.cca = sel.cca;
  similarity.svcca = sel.svcca;
  similarity.pwcca = sel.pwcca;
  similarity.procrustes = sel.procrustes;
  if (sel.linear_cka || sel.cca || sel.svcca || sel.pwcca || sel.procrustes)
    results.similarity = similarity_indices(backend, study, similarity);
  if (sel.linear_cka && study.image_cka) results.image_cka = image_cka_indices(backend, *study.image_cka);
  return results;
}

void stage_analysis_outputs(OutputDir& out, const Study& study, const AnalysisResults& results, json& summary) {
  const AnalysisOptions& o = results.options;
  if (o.selection.sparse_prediction) stage_sparse(out, study, results.sparse, o.lasso, summary);
  if (results.reliability) stage_reliability(out, study, *results.reliability, summary);
  if (results.means) stage_means(study, *results.means, o.means, summary);
  stage_similarity(study, results.similarity, o.selection, o.similarity, summary);
  if (study.image_cka && !results.image_cka.empty()) stage_image_cka(study, results.image_cka, summary);
}

}  // namespace convergent
