// Per-account features and tests of the harvest audit (see audit.h): query vectors, volume,
// log-probabilities, duplicates, templates, breadth (k-means), PRADA and MMD.
#include <omp.h>

#include <algorithm>
#include <cmath>
#include <map>
#include <unordered_map>
#include <unordered_set>

#include "core/error.h"
#include "core/rng.h"
#include "forensics/audit.h"
#include "forensics/audit_tests.h"
#include "forensics/normality.h"
#include "forensics/prompt_sketch.h"

namespace distill {

namespace {

struct Query {
  const serve::UsageRecord* row;
  std::vector<int32_t> terms;  // distinct term ids
  SparseVec vec;
};

struct Account {
  std::string key;
  std::vector<const serve::UsageRecord*> all;
  std::vector<const serve::UsageRecord*> ok_rows;  // status 200, in time order
  std::vector<Query> ok;  // those with a prompt sketch (the vector-based features and tests)
  // The latest breadth_window queries' content (content_vectors), for the breadth of topics.
  std::vector<SparseVec> content;
};

double entropy_bits(const std::vector<int64_t>& counts) {
  int64_t n = 0;
  for (int64_t c : counts) n += c;
  double h = 0.0;
  for (int64_t c : counts)
    if (c > 0) h -= double(c) / double(n) * std::log2(double(c) / double(n));
  return h;
}

// The content of an account's latest `window` queries: tf-idf weights times ln(n / c), c the
// number of the window's n queries that contain the word, renormalized. The words of the
// account's templates and habits (c near n) fade, so what varies between its queries -- a template
// sweep's slot, a user's subject -- decides the cluster. A query with nothing but such words
// stays empty.
void content_vectors(Account& a, int window) {
  const size_t from = a.ok.size() > size_t(window) ? a.ok.size() - size_t(window) : 0;
  std::unordered_map<int32_t, int64_t> in;
  for (size_t i = from; i < a.ok.size(); i++)
    for (int32_t t : a.ok[i].vec.ids) in[t]++;
  const double n = double(a.ok.size() - from);
  for (size_t i = from; i < a.ok.size(); i++) {
    SparseVec v;
    double norm = 0.0;
    const SparseVec& q = a.ok[i].vec;
    for (size_t j = 0; j < q.ids.size(); j++) {
      const double w = q.w[j] * std::log(n / double(in[q.ids[j]]));
      if (w <= 0.0) continue;
      v.ids.push_back(q.ids[j]);
      v.w.push_back(w);
      norm += w * w;
    }
    for (double& w : v.w) w /= std::sqrt(norm);
    a.content.push_back(std::move(v));
  }
}

// Spherical k-means over a sample of the queries (each account contributes at most `per_account`,
// so a high-volume account cannot own the clusters). Returns unit centroids, dense over terms.
std::vector<std::vector<float>> fit_clusters(const std::vector<Account>& accounts, int k,
                                             int64_t terms, Rng& rng) {
  std::vector<const SparseVec*> sample;
  const size_t per_account = 20;
  for (const Account& a : accounts) {
    for (size_t i = 0; i < std::min(per_account, a.content.size()); i++) {
      const SparseVec& v = a.content[rng.below(a.content.size())];
      if (!v.ids.empty()) sample.push_back(&v);
    }
  }
  if (sample.empty() || k < 1) return {};
  k = std::min<int>(k, int(sample.size()));
  auto dot = [](const SparseVec& v, const std::vector<float>& c) {
    double s = 0.0;
    for (size_t i = 0; i < v.ids.size(); i++) s += double(v.w[i]) * double(c[size_t(v.ids[i])]);
    return s;
  };
  std::vector<std::vector<float>> cent;
  // k-means++ seeding with the squared distance 2 - 2 cos.
  std::vector<double> best(sample.size(), 4.0);
  size_t next = rng.below(sample.size());
  for (int c = 0; c < k; c++) {
    std::vector<float> cv(size_t(terms), 0.0f);
    for (size_t i = 0; i < sample[next]->ids.size(); i++)
      cv[size_t(sample[next]->ids[i])] = sample[next]->w[i];
    double total = 0.0;
    for (size_t i = 0; i < sample.size(); i++) {
      best[i] = std::min(best[i], std::max(0.0, 2.0 - 2.0 * dot(*sample[i], cv)));
      total += best[i];
    }
    cent.push_back(std::move(cv));
    if (total <= 0.0) break;
    double u = rng.uniform() * total;
    for (next = 0; next + 1 < sample.size() && u >= best[next]; next++) u -= best[next];
  }
  std::vector<int> assign(sample.size(), 0);
  for (int iter = 0; iter < 15; iter++) {
    for (size_t i = 0; i < sample.size(); i++) {
      double top = -1.0;
      for (size_t c = 0; c < cent.size(); c++) {
        const double d = dot(*sample[i], cent[c]);
        if (d > top) top = d, assign[i] = int(c);
      }
    }
    for (size_t c = 0; c < cent.size(); c++) {
      std::vector<float> sum(size_t(terms), 0.0f);
      bool any = false;
      for (size_t i = 0; i < sample.size(); i++)
        if (assign[i] == int(c)) {
          any = true;
          for (size_t j = 0; j < sample[i]->ids.size(); j++)
            sum[size_t(sample[i]->ids[j])] += sample[i]->w[j];
        }
      if (!any) continue;  // an empty cluster keeps its centroid
      double norm = 0.0;
      for (float v : sum) norm += double(v) * double(v);
      norm = std::sqrt(norm);
      if (norm > 0)
        for (float& v : sum) v = float(v / norm);
      cent[c] = std::move(sum);
    }
  }
  return cent;
}

}  // namespace

void audit_features(const std::vector<serve::UsageRecord>& rows, const AuditOptions& o,
                    AuditResult& out) {
  // Accounts in order of first appearance; requests without a key are not an account.
  std::vector<Account> accounts;
  std::unordered_map<std::string, size_t> index;
  std::unordered_map<uint32_t, int32_t> term_of;
  for (const serve::UsageRecord& r : rows) {
    if (!r.prompt_sketch.empty()) out.rows_with_sketch++;
    if (r.key_id.empty()) continue;
    auto [it, fresh] = index.try_emplace(r.key_id, accounts.size());
    if (fresh) accounts.push_back({r.key_id, {}, {}, {}, {}});
    Account& a = accounts[it->second];
    a.all.push_back(&r);
    if (r.status != 200) continue;
    a.ok_rows.push_back(&r);
    if (r.prompt_sketch.empty()) continue;  // before serve stored sketches, or no words
    Query q;
    q.row = &r;
    for (uint32_t h : sketch_from_blob(r.prompt_sketch, out.source)) {
      auto [t, added] = term_of.try_emplace(h, int32_t(term_of.size()));
      q.terms.push_back(t->second);
    }
    a.ok.push_back(std::move(q));
  }
  const int64_t terms = int64_t(term_of.size());
  const double A = double(accounts.size());

  // Account frequency of every term, and tf-idf vectors with idf = ln((A + 1) / (df + 1)) + 1.
  std::vector<int32_t> df(size_t(terms), 0);
  for (Account& a : accounts) {
    std::unordered_set<int32_t> seen;
    for (const Query& q : a.ok) seen.insert(q.terms.begin(), q.terms.end());
    for (int32_t t : seen) df[size_t(t)]++;
  }
  for (Account& a : accounts)
    for (Query& q : a.ok) {
      std::map<int32_t, int> tf;
      for (int32_t t : q.terms) tf[t]++;
      q.terms.clear();
      double norm = 0.0;
      for (auto [t, c] : tf) {
        const double w =
            (1.0 + std::log(double(c))) * (std::log((A + 1.0) / (df[size_t(t)] + 1.0)) + 1.0);
        q.terms.push_back(t);
        q.vec.ids.push_back(t);
        q.vec.w.push_back(w);
        norm += w * w;
      }
      for (double& w : q.vec.w) w /= std::sqrt(norm);
    }

  for (Account& a : accounts) content_vectors(a, o.breadth_window);
  Rng rng(o.seed);
  const auto centroids = fit_clusters(accounts, o.clusters, terms, rng);

  // Reference pool for MMD: account-weighted draws (a random account, then one of its queries).
  std::vector<std::pair<size_t, const SparseVec*>> pool;
  std::vector<size_t> with_queries;
  for (size_t i = 0; i < accounts.size(); i++)
    if (!accounts[i].ok.empty()) with_queries.push_back(i);
  if (with_queries.size() > 1)
    for (int i = 0; i < 2 * o.mmd_reference; i++) {
      const size_t a = with_queries[rng.below(with_queries.size())];
      pool.push_back({a, &accounts[a].ok[rng.below(accounts[a].ok.size())].vec});
    }
  out.reference_size = int64_t(pool.size());

  // Template word sets, first pass (the shared-template count needs all of them).
  const double common = std::max(10.0, o.common_share * A);
  std::vector<std::vector<int32_t>> templates(accounts.size());
  for (size_t ai = 0; ai < accounts.size(); ai++) {
    const Account& a = accounts[ai];
    if (a.ok.empty()) continue;
    std::unordered_map<int32_t, int64_t> in;
    const size_t from = a.ok.size() > 2000 ? a.ok.size() - 2000 : 0;
    for (size_t i = from; i < a.ok.size(); i++)
      for (int32_t t : a.ok[i].terms) in[t]++;
    for (auto [t, c] : in)
      if (double(c) >= o.template_word_share * double(a.ok.size() - from) && df[size_t(t)] < common)
        templates[ai].push_back(t);
    if (templates[ai].size() < 2) templates[ai].clear();
    std::sort(templates[ai].begin(), templates[ai].end());
  }
  std::map<std::vector<int32_t>, int> template_count;
  for (const auto& t : templates)
    if (!t.empty()) template_count[t]++;

  out.accounts.assign(accounts.size(), {});
#pragma omp parallel for schedule(dynamic, 1)
  for (size_t ai = 0; ai < accounts.size(); ai++) {
    const Account& a = accounts[ai];
    AccountAudit& f = out.accounts[ai];
    f.key_id = a.key;
    f.requests = int64_t(a.all.size());
    f.ok = int64_t(a.ok_rows.size());
    f.sketched = int64_t(a.ok.size());
    if (a.all.empty()) continue;
    // Volume and timing.
    f.days = std::max(1.0, (a.all.back()->time - a.all.front()->time) / 86400.0);
    int64_t tokens = 0;
    for (const serve::UsageRecord* q : a.ok_rows) tokens += q->tokens_in + q->tokens_out;
    f.requests_per_day = double(f.ok) / f.days;
    f.tokens_per_day = double(tokens) / f.days;
    std::vector<int64_t> hours(24, 0);
    for (size_t i = 0, j = 0; i < a.all.size(); i++) {
      while (a.all[i]->time - a.all[j]->time >= 3600.0) j++;
      f.peak_per_hour = std::max<int64_t>(f.peak_per_hour, int64_t(i - j + 1));
      hours[size_t(std::fmod(std::floor(a.all[i]->time / 3600.0), 24.0))]++;
    }
    f.hour_entropy_bits = entropy_bits(hours);
    // Log-probabilities and duplicates.
    int64_t topk = 0;
    std::unordered_set<std::string> seen;
    for (const serve::UsageRecord* q : a.ok_rows) {
      if (q->logprobs >= 0) f.logprob_requests++, topk += q->logprobs;
      if (!q->prompt_sha256.empty() && !seen.insert(q->prompt_sha256).second) f.duplicates++;
    }
    if (f.logprob_requests) f.mean_topk = double(topk) / double(f.logprob_requests);
    // Template.
    if (!templates[ai].empty()) {
      f.template_words = int(templates[ai].size());
      f.template_accounts = template_count.at(templates[ai]);
      for (const Query& q : a.ok)
        if (std::all_of(templates[ai].begin(), templates[ai].end(), [&](int32_t t) {
              return std::binary_search(q.vec.ids.begin(), q.vec.ids.end(), t);
            }))
          f.template_requests++;
    }
    if (a.ok.empty()) continue;
    // Breadth: entropy over the nearest clusters of the latest queries.
    if (!centroids.empty()) {
      std::vector<int64_t> counts(centroids.size(), 0);
      for (const SparseVec& v : a.content) {
        double top = -1.0;
        size_t arg = 0;
        for (size_t c = 0; c < centroids.size(); c++) {
          double d = 0.0;
          for (size_t j = 0; j < v.ids.size(); j++)
            d += double(v.w[j]) * centroids[c][size_t(v.ids[j])];
          if (d > top) top = d, arg = c;
        }
        counts[arg]++;
      }
      f.breadth_n = int64_t(a.content.size());
      f.breadth_bits = entropy_bits(counts);
    }
    // PRADA on the latest prada_max queries.
    {
      std::vector<const SparseVec*> qs;
      const size_t from = a.ok.size() > size_t(o.prada_max) ? a.ok.size() - size_t(o.prada_max) : 0;
      for (size_t i = from; i < a.ok.size(); i++) qs.push_back(&a.ok[i].vec);
      const std::vector<double> d = prada_min_distances(qs);
      if (int64_t(d.size()) >= o.prada_min) {
        f.prada_n = int64_t(d.size());
        double s = 0.0;
        for (double v : d) s += v;
        f.prada_mean = s / double(d.size());
        const bool constant = std::all_of(d.begin(), d.end(), [&](double v) { return v == d[0]; });
        if (constant) {
          f.prada_w = 0.0;  // every distance equal: as far from a natural stream as it gets
          f.prada_p = 0.0;
        } else {
          const ShapiroWilk sw = shapiro_wilk(d);
          f.prada_w = sw.w;
          f.prada_p = sw.p_value;
        }
      }
    }
    // MMD of the latest window against the reference (other accounts' queries only).
    if (int64_t(a.ok.size()) >= std::max<int64_t>(2, o.mmd_window / 2) && !pool.empty()) {
      std::vector<const SparseVec*> pts;
      const size_t from =
          a.ok.size() > size_t(o.mmd_window) ? a.ok.size() - size_t(o.mmd_window) : 0;
      for (size_t i = from; i < a.ok.size(); i++) pts.push_back(&a.ok[i].vec);
      const int64_t nx = int64_t(pts.size());
      for (const auto& [owner, v] : pool)
        if (owner != ai && int64_t(pts.size()) < nx + o.mmd_reference) pts.push_back(v);
      const size_t n = pts.size();
      if (int64_t(n) > nx + 1) {
        std::vector<double> dist(n * n, 0.0);
        for (size_t i = 0; i < n; i++)
          for (size_t j = i + 1; j < n; j++)
            dist[i * n + j] = dist[j * n + i] = sparse_distance(*pts[i], *pts[j]);
        const MmdResult m =
            mmd_permutation_test(dist, nx, o.mmd_permutations, o.seed * 1000003ull + ai);
        f.mmd_tested = true;
        f.mmd2 = m.mmd2;
        f.mmd_p = m.p_value;
        f.mmd_bandwidth = m.bandwidth;
        f.mmd_permutations = m.permutations;
        f.mmd_window = m.nx;
        f.mmd_reference = m.ny;
      }
    }
  }
}

}  // namespace distill
