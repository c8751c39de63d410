// The harvest audit's decision rules, ranking and output (features: audit_features.cpp).
#include "forensics/audit.h"

#include <fmt/format.h>

#include <algorithm>
#include <cmath>

#include "core/error.h"

namespace distill {

namespace {

void validate(const AuditOptions& o) {
  if (o.prada_max < 3 || o.prada_max > 5001)
    throw Error(
        "audit: --prada-max must be in [3, 5001] (Shapiro-Wilk takes 3..5000 values), got {}",
        o.prada_max);
  if (o.prada_min < 3) throw Error("audit: --prada-min must be at least 3, got {}", o.prada_min);
  if (o.mmd_window < 4 || o.mmd_reference < 2 || o.mmd_permutations < 1)
    throw Error(
        "audit: --mmd-window >= 4, --mmd-reference >= 2 and --mmd-permutations >= 1 "
        "needed");
  if (o.clusters < 1 || o.breadth_window < 1)
    throw Error("audit: --clusters and --breadth-window must be positive");
}

double pct(int64_t part, int64_t whole) {
  return whole ? 100.0 * double(part) / double(whole) : 0.0;
}

// Applies every rule to one account's features.
void decide(AccountAudit& f, const AuditOptions& o) {
  auto flag = [&](const char* name, std::string reason, double strength) {
    f.flags.push_back(name);
    f.reasons.push_back(fmt::format("{}: {}", name, reason));
    f.score += 1.0 + std::clamp(strength, 0.0, 0.99);
  };
  if (f.ok < o.min_requests) return;
  if (f.prada_n > 0 && f.prada_w < o.prada_delta)
    flag("prada",
         fmt::format("Shapiro-Wilk W={:.4f} < delta {:.2f} over {} minimum distances (p={:.3g}, "
                     "mean distance {:.3f})",
                     f.prada_w, o.prada_delta, f.prada_n, f.prada_p, f.prada_mean),
         o.prada_delta - f.prada_w);
  if (o.mmd_alpha > 0.0 && f.mmd_tested && f.mmd_p <= o.mmd_alpha)
    flag("mmd",
         fmt::format("MMD^2={:.4f}, p={:.4f} <= {:.3g} ({} permutations, window {} vs {} "
                     "reference queries, sigma {:.3f})",
                     f.mmd2, f.mmd_p, o.mmd_alpha, f.mmd_permutations, f.mmd_window,
                     f.mmd_reference, f.mmd_bandwidth),
         f.mmd2);
  if (double(f.logprob_requests) >= o.logprob_share * double(f.ok) && f.mean_topk >= o.logprob_topk)
    flag("logprobs",
         fmt::format("asks top-{:.1f} log-probabilities (mean) on {:.1f}% of {} requests ({})",
                     f.mean_topk, pct(f.logprob_requests, f.ok), f.ok, f.logprob_requests),
         double(f.logprob_requests) / double(f.ok) - o.logprob_share);
  if (f.breadth_n >= 50 && f.breadth_bits >= o.breadth_bits)
    flag("breadth",
         fmt::format("entropy of its {} latest queries over {} topic clusters (k-means) "
                     "{:.2f} bits >= {:.2f}",
                     f.breadth_n, o.clusters, f.breadth_bits, o.breadth_bits),
         (f.breadth_bits - o.breadth_bits) / 2.0);
  if (f.template_words > 0 &&
      double(f.template_requests) >= o.template_share * double(f.sketched) &&
      f.breadth_bits >= o.template_bits)
    flag("template",
         fmt::format("{} of {} requests ({:.1f}%) share a {}-word template, its slot content "
                     "over {:.2f} bits of topics >= {:.2f}",
                     f.template_requests, f.sketched, pct(f.template_requests, f.sketched),
                     f.template_words, f.breadth_bits, o.template_bits),
         double(f.template_requests) / double(f.sketched) - o.template_share);
  if (f.template_words > 0 && f.template_accounts >= o.shared_accounts)
    flag("shared-template",
         fmt::format("its {}-word template is the template of {} accounts (>= {})",
                     f.template_words, f.template_accounts, o.shared_accounts),
         double(f.template_accounts) / 100.0);
  if (f.requests_per_day >= o.volume_per_day)
    flag("volume",
         fmt::format("{:.0f} requests/day >= {:.0f} ({} over {:.1f} days, peak {}/hour)",
                     f.requests_per_day, o.volume_per_day, f.ok, f.days, f.peak_per_hour),
         f.requests_per_day / o.volume_per_day / 100.0);
}

}  // namespace

AuditResult audit_records(const std::vector<serve::UsageRecord>& rows, const AuditOptions& o,
                          const std::string& source) {
  validate(o);
  AuditResult r;
  r.source = source;
  r.options = o;
  r.rows = int64_t(rows.size());
  audit_features(rows, o, r);
  for (AccountAudit& f : r.accounts) decide(f, o);
  std::stable_sort(r.accounts.begin(), r.accounts.end(),
                   [](const AccountAudit& a, const AccountAudit& b) {
                     if (a.score != b.score) return a.score > b.score;
                     return a.key_id < b.key_id;
                   });
  return r;
}

AuditResult run_audit(const AuditOptions& o) {
  if (o.usage.empty()) throw Error("audit: no usage database given (--usage)");
  validate(o);
  const std::vector<serve::UsageRecord> rows = serve::read_usage(o.usage);
  AuditResult r = audit_records(rows, o, o.usage);
  if (r.rows > 0 && r.rows_with_sketch == 0)
    r.source +=
        " (no prompt sketches: written before distill serve stored them; PRADA, MMD, "
        "templates and breadth have nothing to test)";
  return r;
}

nlohmann::json audit_to_json(const AuditResult& r) {
  using nlohmann::json;
  const AuditOptions& o = r.options;
  json accounts = json::array();
  int64_t flagged = 0;
  for (size_t i = 0; i < r.accounts.size(); i++) {
    const AccountAudit& f = r.accounts[i];
    if (!f.flags.empty()) flagged++;
    json a = {{"rank", i + 1},
              {"key_id", f.key_id},
              {"flagged", !f.flags.empty()},
              {"flags", f.flags},
              {"reasons", f.reasons},
              {"score", f.score},
              {"requests", f.requests},
              {"ok_requests", f.ok},
              {"sketched_requests", f.sketched},
              {"days", f.days},
              {"requests_per_day", f.requests_per_day},
              {"tokens_per_day", f.tokens_per_day},
              {"peak_per_hour", f.peak_per_hour},
              {"hour_entropy_bits", f.hour_entropy_bits},
              {"logprob_requests", f.logprob_requests},
              {"mean_topk", f.mean_topk},
              {"duplicates", f.duplicates},
              {"template",
               {{"words", f.template_words},
                {"requests", f.template_requests},
                {"accounts", f.template_accounts}}},
              {"breadth",
               {{"bits", f.breadth_bits}, {"queries", f.breadth_n}, {"clusters", o.clusters}}}};
    if (f.prada_n > 0)
      a["prada"] = {{"test", "Shapiro-Wilk (Royston 1995) on minimum query distances"},
                    {"n", f.prada_n},
                    {"w", f.prada_w},
                    {"p_value", f.prada_p},
                    {"mean_distance", f.prada_mean},
                    {"delta", o.prada_delta}};
    if (f.mmd_tested)
      a["mmd"] = {{"test", "MMD^2 (Gaussian kernel, median bandwidth) permutation test"},
                  {"mmd2", f.mmd2},
                  {"p_value", f.mmd_p},
                  {"permutations", f.mmd_permutations},
                  {"window", f.mmd_window},
                  {"reference", f.mmd_reference},
                  {"bandwidth", f.mmd_bandwidth}};
    accounts.push_back(a);
  }
  json opts = {{"min_requests", o.min_requests},
               {"prada_max", o.prada_max},
               {"prada_min", o.prada_min},
               {"prada_delta", o.prada_delta},
               {"mmd_window", o.mmd_window},
               {"mmd_reference", o.mmd_reference},
               {"mmd_permutations", o.mmd_permutations},
               {"mmd_alpha", o.mmd_alpha},
               {"clusters", o.clusters},
               {"breadth_window", o.breadth_window},
               {"breadth_bits", o.breadth_bits},
               {"logprob_share", o.logprob_share},
               {"logprob_topk", o.logprob_topk},
               {"template_word_share", o.template_word_share},
               {"common_share", o.common_share},
               {"template_share", o.template_share},
               {"template_bits", o.template_bits},
               {"shared_accounts", o.shared_accounts},
               {"volume_per_day", o.volume_per_day},
               {"seed", o.seed}};
  return {{"source", r.source},
          {"rows", r.rows},
          {"rows_with_sketch", r.rows_with_sketch},
          {"accounts_total", r.accounts.size()},
          {"accounts_flagged", flagged},
          {"reference_size", r.reference_size},
          {"options", opts},
          {"accounts", accounts}};
}

std::string audit_table(const AuditResult& r, int limit) {
  int64_t flagged = 0;
  for (const AccountAudit& f : r.accounts) flagged += f.flags.empty() ? 0 : 1;
  std::string s = fmt::format("{}: {} rows, {} accounts, {} flagged\n", r.source, r.rows,
                              r.accounts.size(), flagged);
  s += fmt::format("{:>4}  {:<20} {:>8} {:>8} {:>6} {:>6} {:>7} {:>8} {:>6}  {}\n", "rank", "key",
                   "requests", "req/day", "lp%", "topic", "PRADA W", "MMD p", "tmpl", "flags");
  for (size_t i = 0; i < r.accounts.size(); i++) {
    const AccountAudit& f = r.accounts[i];
    if (int(i) >= limit && f.flags.empty()) break;
    std::string flags;
    for (const auto& x : f.flags) flags += (flags.empty() ? "" : ",") + x;
    s += fmt::format(
        "{:>4}  {:<20} {:>8} {:>8.1f} {:>6.1f} {:>6.2f} {:>7} {:>8} {:>6}  {}\n", i + 1,
        f.key_id.substr(0, 20), f.requests, f.requests_per_day, pct(f.logprob_requests, f.ok),
        f.breadth_bits, f.prada_n ? fmt::format("{:.3f}", f.prada_w) : "-",
        f.mmd_tested ? fmt::format("{:.4f}", f.mmd_p) : "-",
        f.template_words ? fmt::format("{}x{}", f.template_words, f.template_accounts) : "-",
        flags.empty() ? "-" : flags);
    for (const auto& reason : f.reasons) s += fmt::format("{:>6}{}\n", "", reason);
  }
  return s;
}

}  // namespace distill
