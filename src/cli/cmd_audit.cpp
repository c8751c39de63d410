// `distill audit`: harvest detection over a usage store (src/forensics/audit.h);
// `distill audit simulate`: synthetic traffic with ground truth (src/forensics/traffic_sim.h);
// `distill audit score`: true- and false-positive rates of audit results against that truth.
#include <fmt/format.h>

#include <algorithm>
#include <fstream>
#include <map>
#include <memory>
#include <nlohmann/json.hpp>

#include "cli/verbs.h"
#include "core/error.h"
#include "core/file.h"
#include "eval/svg.h"
#include "forensics/audit.h"
#include "forensics/traffic_sim.h"

namespace distill::cli {
namespace {

nlohmann::json read_json(const std::string& path) {
  std::ifstream in(path);
  if (!in) throw Error("{}: cannot read", path);
  try {
    return nlohmann::json::parse(in);
  } catch (const std::exception& e) {
    throw Error("{}: not JSON: {}", path, e.what());
  }
}

struct ScoreOptions {
  std::vector<std::string> truth, result;  // pairs, in order
  std::string out;                         // JSON summary ("": none)
  std::string svg;                         // bar chart of the rates ("": none)
  std::string markdown;                    // the rates and rules as Markdown tables ("": none)
};

// Min, median and max of a feature.
nlohmann::json spread(std::vector<double> v) {
  if (v.empty()) return nullptr;
  std::sort(v.begin(), v.end());
  return {{"n", v.size()}, {"min", v.front()}, {"median", v[v.size() / 2]}, {"max", v.back()}};
}

// Per harvester style: flagged/total over every run; benign: flagged/total, per subtype too.
// Accounts that sent nothing in the simulated period are not in the traffic and not counted.
int run_score(const ScoreOptions& o) {
  if (o.truth.empty() || o.truth.size() != o.result.size())
    throw Error("audit score: give one --result per --truth (got {} and {})", o.truth.size(),
                o.result.size());
  std::map<std::string, std::pair<int64_t, int64_t>> rates;       // class -> (flagged, total)
  std::map<std::string, std::map<std::string, int64_t>> by_flag;  // class -> rule -> accounts
  // Calibration view: the two tested statistics per class (accounts with the test run).
  std::map<std::string, std::vector<double>> prada_w, breadth;
  for (size_t i = 0; i < o.truth.size(); i++) {
    const auto truth = read_json(o.truth[i]);
    const auto result = read_json(o.result[i]);
    std::map<std::string, nlohmann::json> audited;
    for (const auto& a : result.at("accounts")) audited[a.at("key_id")] = a;
    for (const auto& [key, t] : truth.at("accounts").items()) {
      if (t.at("requests").get<int64_t>() == 0) continue;
      const auto it = audited.find(key);
      if (it == audited.end())
        throw Error("{}: account {} of the truth {} is not in the audit", o.result[i], key,
                    o.truth[i]);
      const nlohmann::json& a = it->second;
      const bool harvester = t.at("kind") == "harvester";
      const std::string cls = harvester ? "harvester/" + t.at("style").get<std::string>()
                                        : "benign/" + t.at("kind").get<std::string>();
      const bool flagged = a.at("flagged").get<bool>();
      for (const std::string& c : {cls, std::string(harvester ? "harvester" : "benign")}) {
        rates[c].second++;
        rates[c].first += flagged;
        for (const auto& f : a.at("flags")) by_flag[c][f.get<std::string>()]++;
        if (a.contains("prada")) prada_w[c].push_back(a["prada"]["w"].get<double>());
        if (a["breadth"]["queries"].get<int64_t>() >= 50)
          breadth[c].push_back(a["breadth"]["bits"].get<double>());
      }
    }
  }
  nlohmann::json out = nlohmann::json::object();
  std::printf("%-24s %9s %7s %8s\n", "class", "flagged", "total", "rate");
  std::vector<svg::Bar> bars;
  for (const auto& [cls, ft] : rates) {
    const double rate = ft.second ? double(ft.first) / double(ft.second) : 0.0;
    std::printf("%-24s %9lld %7lld %7.2f%%\n", cls.c_str(), (long long)ft.first,
                (long long)ft.second, 100.0 * rate);
    out["classes"][cls] = {{"flagged", ft.first}, {"total", ft.second}, {"rate", rate}};
    if (cls.find('/') != std::string::npos)
      bars.push_back({cls.substr(cls.find('/') + 1),
                      cls.rfind("benign", 0) == 0 ? "#4c78a8" : "#e45756", 100.0 * rate,
                      fmt::format("{}/{}", ft.first, ft.second)});
  }
  std::printf("\naccounts flagged by each rule (an account may be flagged by several):\n");
  for (const auto& [cls, rules] : by_flag) {
    std::string line;
    for (const auto& [rule, n] : rules) {
      line += fmt::format("  {} {}", rule, n);
      out["classes"][cls]["by_rule"][rule] = n;
    }
    std::printf("%-24s%s\n", cls.c_str(), line.c_str());
  }
  std::printf("\n%-24s %28s   %28s\n", "", "PRADA W (min median max)",
              "breadth bits (min median max)");
  for (const auto& [cls, ft] : rates) {
    const auto w = spread(prada_w[cls]), b = spread(breadth[cls]);
    out["classes"][cls]["prada_w"] = w;
    out["classes"][cls]["breadth_bits"] = b;
    auto text = [](const nlohmann::json& j) {
      return j.is_null() ? std::string("-")
                         : fmt::format("{:.3f} {:.3f} {:.3f} (n={})", j["min"].get<double>(),
                                       j["median"].get<double>(), j["max"].get<double>(),
                                       j["n"].get<int64_t>());
    };
    std::printf("%-24s %28s   %28s\n", cls.c_str(), text(w).c_str(), text(b).c_str());
  }
  out["runs"] = o.result;
  if (!o.markdown.empty()) {
    std::string md =
        "| class | flagged | accounts | rate | flagged by rule |\n|---|---:|---:|---:|---|\n";
    for (const auto& [cls, ft] : rates) {
      std::string rules;
      for (const auto& [rule, n] : by_flag[cls])
        rules += fmt::format("{}{} {}", rules.empty() ? "" : ", ", rule, n);
      md += fmt::format("| {} | {} | {} | {:.2f}% | {} |\n", cls, ft.first, ft.second,
                        ft.second ? 100.0 * double(ft.first) / double(ft.second) : 0.0,
                        rules.empty() ? "-" : rules);
    }
    write_file_atomic(o.markdown, md);
  }
  if (!o.out.empty()) {
    write_file_atomic(o.out, out.dump(1) + "\n");
  }
  if (!o.svg.empty()) {
    svg::BarChart c;
    c.title = "accounts flagged by distill audit (%)";
    c.subtitle =
        fmt::format("{} simulated runs; red: harvesters (TPR), blue: benign (FPR)", o.truth.size());
    c.bars = bars;
    c.width = 120 + 95 * int(bars.size());
    c.height = 300;
    // A standalone file: the chart's CSS classes get the report's styles inline.
    std::string chart = svg::bar_chart(c);
    chart.insert(chart.find('>') + 1,
                 "<style>.chart-bg{fill:#fff}.chart-title{font:600 14px sans-serif;fill:#1d2430}"
                 ".chart-sub{font:11.5px sans-serif;fill:#667085}.grid{stroke:#edf0f3}"
                 ".axis{stroke:#98a2b3}.tick{font:11px sans-serif;fill:#475467}"
                 ".bar-value{font:600 11px sans-serif;fill:#344054}</style>");
    write_file_atomic(o.svg, chart + "\n");
  }
  return 0;
}

}  // namespace

VerbRun add_audit(CLI::App& app) {
  auto o = std::make_shared<AuditOptions>();
  auto json_path = std::make_shared<std::string>();
  auto top = std::make_shared<int>(20);
  app.add_option("--usage", o->usage, "usage database written by distill serve --usage-db");
  app.add_option("--json", *json_path, "also write the full ranked list with every statistic");
  app.add_option("--top", *top, "rows of the text table (flagged accounts are always listed)");
  app.add_option("--min-requests", o->min_requests,
                 "successful requests an account needs before any flag");
  app.add_option("--prada-max", o->prada_max, "PRADA: latest queries per account (<= 5001)");
  app.add_option("--prada-min", o->prada_min, "PRADA: minimum distances needed for the test");
  app.add_option("--prada-delta", o->prada_delta, "PRADA: flag when Shapiro-Wilk W < delta");
  app.add_option("--mmd-window", o->mmd_window, "MMD: the account's latest queries tested");
  app.add_option("--mmd-reference", o->mmd_reference,
                 "MMD: reference queries drawn account-weighted from the other accounts");
  app.add_option("--mmd-permutations", o->mmd_permutations, "MMD: label permutations");
  app.add_option("--mmd-alpha", o->mmd_alpha,
                 "MMD: flag at p <= alpha (0: reported, never flags; see docs/audit.md)");
  app.add_option("--clusters", o->clusters, "breadth: k-means clusters of the queries");
  app.add_option("--breadth-window", o->breadth_window, "breadth: latest queries per account");
  app.add_option("--breadth-bits", o->breadth_bits,
                 "breadth: flag at this entropy (bits) over the clusters");
  app.add_option("--logprob-share", o->logprob_share,
                 "log-probabilities: flag when this share of requests asks for them ...");
  app.add_option("--logprob-topk", o->logprob_topk, "... with at least this mean top-k");
  app.add_option("--template-word-share", o->template_word_share,
                 "templates: a template word is in at least this share of an account's queries");
  app.add_option("--common-share", o->common_share,
                 "templates: words used by this share of accounts (at least 10) are language, "
                 "not template");
  app.add_option("--template-share", o->template_share,
                 "templates: flag when the template covers this share of requests ...");
  app.add_option("--template-bits", o->template_bits,
                 "... and its slot content spans at least these bits");
  app.add_option("--shared-accounts", o->shared_accounts,
                 "templates: flag when this many accounts have the same template");
  app.add_option("--volume", o->volume_per_day, "volume: flag at this many requests per day");
  app.add_option("--seed", o->seed, "seed of k-means, the reference sample and permutations");

  auto sim = std::make_shared<TrafficSimOptions>();
  CLI::App* s = app.add_subcommand("simulate", "write simulated traffic (benign and harvesters)");
  s->add_option("--out", sim->out, "usage database to create (ground truth: OUT.truth.json)")
      ->required();
  s->add_option("--benign", sim->benign, "benign accounts");
  s->add_option("--harvesters", sim->harvesters, "harvesting accounts per style");
  s->add_option("--styles", sim->styles,
                "harvester styles: template walker paraphrase stealth focused sybil")
      ->delimiter(',');
  s->add_option("--days", sim->days, "days of traffic");
  s->add_option("--seed", sim->seed, "random seed");
  s->add_option("--corpus", sim->corpus,
                "text file the corpus walker reads (default: generated topic sentences)");

  auto score = std::make_shared<ScoreOptions>();
  CLI::App* sc = app.add_subcommand("score", "TPR per harvester style and FPR on benign accounts");
  sc->add_option("--truth", score->truth, "ground truth of a simulated run (repeat per run)")
      ->required();
  sc->add_option("--result", score->result, "distill audit --json of that run (repeat per run)")
      ->required();
  sc->add_option("--out", score->out, "write the rates as JSON");
  sc->add_option("--svg", score->svg, "write a bar chart of the rates");
  sc->add_option("--markdown", score->markdown, "write the rates as a Markdown table");
  app.require_subcommand(0, 1);

  return [o, json_path, top, sim, s, score, sc]() {
    if (s->parsed()) {
      const TrafficSimSummary r = simulate_traffic(*sim);
      std::printf("wrote %lld requests of %d benign and %d harvesting accounts to %s (truth: %s)\n",
                  (long long)r.rows, r.benign, r.harvesters, sim->out.c_str(),
                  r.truth_path.c_str());
      return 0;
    }
    if (sc->parsed()) return run_score(*score);
    const AuditResult r = run_audit(*o);
    std::fputs(audit_table(r, *top).c_str(), stdout);
    if (!json_path->empty()) {
      write_file_atomic(*json_path, audit_to_json(r).dump(1) + "\n");
    }
    return 0;
  };
}

}  // namespace distill::cli
