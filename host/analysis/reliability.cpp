// Reliably learned units: partners of every unit in every other net, and cycle-consistent matches.
#include "convergent/reliability.hpp"

#include <algorithm>
#include <cmath>
#include <string>

#include "analysis/live_units.hpp"
#include "convergent/error.hpp"

namespace convergent {

Reliability reliability(const Study& study, const std::vector<PairAlignment>& matchings,
                        const ReliabilityOptions& options) {
  const int nets = static_cast<int>(study.nets.size());
  if (nets < 2) throw Error("reliability: a study needs at least two nets");
  const std::size_t pairs = static_cast<std::size_t>(nets) * static_cast<std::size_t>(nets - 1) / 2;
  if (matchings.size() != pairs)
    throw Error("reliability: " + std::to_string(matchings.size()) + " matchings for " + std::to_string(nets) +
                " nets; expected one per pair, " + std::to_string(pairs));
  for (const double t : options.thresholds)
    if (!std::isfinite(t)) throw Error("reliability: thresholds must be finite");

  // match[i][j][u]: the one-to-one partner in net j of unit u of net i (-1: none).
  std::vector<std::vector<std::vector<std::int64_t>>> match(static_cast<std::size_t>(nets),
                                                            std::vector<std::vector<std::int64_t>>(static_cast<std::size_t>(nets)));
  std::size_t k = 0;
  for (int a = 0; a < nets; ++a)
    for (int b = a + 1; b < nets; ++b, ++k) {
      const Assignment& m = matchings[k].matching;
      const NetInfo& na = study.nets[static_cast<std::size_t>(a)];
      const NetInfo& nb = study.nets[static_cast<std::size_t>(b)];
      if (static_cast<std::int64_t>(m.row_to_col.size()) != na.units || static_cast<std::int64_t>(m.col_to_row.size()) != nb.units)
        throw Error("reliability: matching " + std::to_string(k) + " is " + std::to_string(m.row_to_col.size()) + " x " +
                    std::to_string(m.col_to_row.size()) + ", but nets " + na.name + " and " + nb.name + " have " +
                    std::to_string(na.units) + " and " + std::to_string(nb.units) + " units");
      match[static_cast<std::size_t>(a)][static_cast<std::size_t>(b)] = m.row_to_col;
      match[static_cast<std::size_t>(b)][static_cast<std::size_t>(a)] = m.col_to_row;
    }

  auto is_dead = [&](int net, std::int64_t u) {
    return study.dead[static_cast<std::size_t>(study.nets[static_cast<std::size_t>(net)].offset + u)];
  };
  auto corr = [&](int i, std::int64_t u, int j, std::int64_t v) {
    return study.correlation(study.nets[static_cast<std::size_t>(i)].offset + u, study.nets[static_cast<std::size_t>(j)].offset + v);
  };

  std::vector<std::vector<std::int64_t>> live(static_cast<std::size_t>(nets));
  for (int j = 0; j < nets; ++j) live[static_cast<std::size_t>(j)] = detail::live_units(study, j);

  Reliability result;
  result.thresholds = options.thresholds;
  const std::size_t thresholds = options.thresholds.size();
  for (int i = 0; i < nets; ++i) {
    const NetInfo& info = study.nets[static_cast<std::size_t>(i)];
    NetReliability net;
    net.learned_by_all.assign(thresholds, 0);
    net.best_partner_in_all.assign(thresholds, 0);
    net.learned_by_all_consistent.assign(thresholds, 0);
    for (std::int64_t u = 0; u < info.units; ++u) {
      UnitReliability unit;
      unit.dead = is_dead(i, u);
      bool first = true;
      unit.consistent = !unit.dead;
      for (int j = 0; j < nets; ++j) {
        if (j == i) continue;
        UnitPartner p;
        p.net = j;
        if (!unit.dead) {
          for (const std::int64_t v : live[static_cast<std::size_t>(j)])
            if (p.semi < 0 || corr(i, u, j, v) > p.semi_corr) p.semi = v, p.semi_corr = corr(i, u, j, v);
          p.match = match[static_cast<std::size_t>(i)][static_cast<std::size_t>(j)][static_cast<std::size_t>(u)];
          const bool live_match = p.match >= 0 && !is_dead(j, p.match);
          p.match_corr = live_match ? corr(i, u, j, p.match) : 0.0;
          unit.consistent = unit.consistent && live_match;
          unit.min_semi_corr = first ? p.semi_corr : std::min(unit.min_semi_corr, p.semi_corr);
          unit.min_match_corr = first ? p.match_corr : std::min(unit.min_match_corr, p.match_corr);
          first = false;
        }
        unit.partners.push_back(p);
      }
      // Every path through the other nets lands where the direct match does.
      for (const UnitPartner& pj : unit.partners)
        for (const UnitPartner& pk : unit.partners) {
          if (!unit.consistent) break;
          if (pj.net == pk.net) continue;
          const std::int64_t via = match[static_cast<std::size_t>(pj.net)][static_cast<std::size_t>(pk.net)][static_cast<std::size_t>(pj.match)];
          unit.consistent = via == pk.match;
        }
      if (!unit.dead) {
        ++net.live;
        net.consistent += unit.consistent;
        for (std::size_t t = 0; t < thresholds; ++t) {
          const bool learned = unit.min_match_corr >= options.thresholds[t];
          net.learned_by_all[t] += learned;
          net.best_partner_in_all[t] += unit.min_semi_corr >= options.thresholds[t];
          net.learned_by_all_consistent[t] += learned && unit.consistent;
        }
      }
      net.units.push_back(std::move(unit));
    }
    result.nets.push_back(std::move(net));
  }
  return result;
}

}  // namespace convergent
