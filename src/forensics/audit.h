// `distill audit`: which API accounts look like they are harvesting a model's outputs, from the
// usage store `distill serve` writes (src/serve/usage_store.h). Per account: the plain signals
// providers describe (volume, template repetition, breadth of topics, log-probability requests,
// templates shared across accounts, exact duplicates) and two tests on the query stream (PRADA's
// Shapiro-Wilk on minimum distances; a windowed MMD against the rest of the traffic,
// src/forensics/audit_tests.h). Each rule that fires is a flag with a reason that carries its
// counts, test, statistic and p-value; accounts are ranked by their flags. docs/audit.md says how
// the thresholds were chosen (on one simulator seed, evaluated on others).
#pragma once
#include <cstdint>
#include <nlohmann/json.hpp>
#include <string>
#include <vector>

#include "serve/usage_store.h"

namespace distill {

struct AuditOptions {
  std::string usage;  // usage database of distill serve
  // Accounts with fewer successful requests are listed but get no flags.
  int min_requests = 20;
  // PRADA: most recent queries per account, distances needed, and the flag threshold on W.
  int prada_max = 1000;
  int prada_min = 50;
  double prada_delta = 0.70;
  // MMD: window of the account's latest queries, reference sample drawn account-weighted from
  // the other accounts, permutations, and the level at which it flags (0: the test is reported
  // but never flags -- against pooled traffic it rejects every topic-focused benign user too,
  // docs/audit.md).
  int mmd_window = 100;
  int mmd_reference = 100;
  int mmd_permutations = 199;
  double mmd_alpha = 0.0;
  // Breadth of topics: spherical k-means clusters of all queries; flag at this entropy (bits)
  // of an account's latest `breadth_window` queries over the clusters.
  int clusters = 32;
  int breadth_window = 400;
  double breadth_bits = 3.7;
  // Log-probabilities: flag when at least this share of requests asks for at least this many.
  double logprob_share = 0.5;
  int logprob_topk = 10;
  // Templates: words in >= template_word_share of an account's queries that fewer than
  // common_share of accounts use; a template has >= 2 of them; flag when a template covers
  // template_share of the queries of an account whose slot content is broad (the breadth of its
  // queries without the template words >= template_bits), or when >= shared_accounts accounts
  // have the same template. Breadth is always measured on the queries without the words that are
  // in template_word_share of the account's queries (template words or not).
  double template_word_share = 0.5;
  double common_share = 0.10;
  double template_share = 0.5;
  double template_bits = 2.5;
  int shared_accounts = 3;
  // Volume: flag at this many successful requests per day.
  double volume_per_day = 1000.0;
  uint64_t seed = 1;  // k-means, reference sample and permutations
};

struct AccountAudit {
  std::string key_id;
  int64_t requests = 0, ok = 0;  // all rows; status 200
  int64_t sketched = 0;          // status 200 with a prompt sketch (vector features)
  double days = 0.0;             // first to last request, at least 1
  double requests_per_day = 0.0, tokens_per_day = 0.0;
  int64_t peak_per_hour = 0;       // most requests in any 3600 s window
  double hour_entropy_bits = 0.0;  // of the UTC hour of day (uniform: 4.58)
  int64_t logprob_requests = 0;    // asking for log-probabilities
  double mean_topk = 0.0;          // over those
  int64_t duplicates = 0;          // prompt hash seen before in this account
  int template_words = 0;          // 0 when no template (fewer than 2 words)
  int64_t template_requests = 0;   // sketched requests containing every template word
  int template_accounts = 0;       // accounts with the same template word set
  int64_t breadth_n = 0;           // queries clustered
  double breadth_bits = 0.0;       // entropy over clusters
  int64_t prada_n = 0;             // distances tested (0: not tested)
  double prada_w = 1.0, prada_p = 1.0;
  double prada_mean = 0.0;  // mean minimum distance
  bool mmd_tested = false;
  double mmd2 = 0.0, mmd_p = 1.0, mmd_bandwidth = 0.0;
  int mmd_permutations = 0;
  int64_t mmd_window = 0, mmd_reference = 0;
  std::vector<std::string> flags;    // rule names: prada, mmd, logprobs, breadth, template, ...
  std::vector<std::string> reasons;  // one line per flag, with its numbers
  double score = 0.0;                // ranking: flags first, then the strength of the evidence
};

struct AuditResult {
  std::string source;
  int64_t rows = 0;
  int64_t rows_with_sketch = 0;
  int64_t reference_size = 0;
  std::vector<AccountAudit> accounts;  // ranked, most suspicious first
  AuditOptions options;
};

AuditResult audit_records(const std::vector<serve::UsageRecord>& rows, const AuditOptions& o,
                          const std::string& source);
// Reads o.usage (read_usage) and audits it.
AuditResult run_audit(const AuditOptions& o);

nlohmann::json audit_to_json(const AuditResult& r);
// The ranked list as a text table: the top `limit` accounts (all flagged ones at least).
std::string audit_table(const AuditResult& r, int limit);

// Internal: features and tests per account, before the decision (audit_features.cpp).
void audit_features(const std::vector<serve::UsageRecord>& rows, const AuditOptions& o,
                    AuditResult& out);

}  // namespace distill
