#include "model/attention_block.h"

#include <algorithm>
#include <cmath>
#include <cstring>
#include <vector>

#include "infer/kv_cache.h"
#include "kernels/vecmath.h"

namespace distill {
namespace {
size_t qkv_width(const AttentionShape& s) { return size_t(s.NH + 2 * s.NKV) * s.HD; }
void zero(float* p, size_t n) { zero_floats(p, n); }
}  // namespace

void AttentionActs::plan(BufferPlan& plan, const AttentionShape& s, bool qk_norm) {
  const size_t N = size_t(s.B) * s.T;
  plan.add(qkv, N * qkv_width(s));
  plan.add(q, N * s.NH * s.HD);
  plan.add(k, N * s.NKV * s.HD);
  plan.add(v, N * s.NKV * s.HD);
  if (qk_norm) {
    plan.add(qn, N * s.NH * s.HD);
    plan.add(kn, N * s.NKV * s.HD);
    plan.add(q_rstd, N * s.NH);
    plan.add(k_rstd, N * s.NKV);
  } else {
    qn = kn = q_rstd = k_rstd = nullptr;
  }
  plan.add(att, size_t(s.B) * s.NH * s.T * s.T);
  plan.add(y, N * s.NH * s.HD);
  plan.add(ym, N * s.NH * s.HD);
}

void Bf16Acts::allocate(int num_layers, size_t N, size_t C, size_t heads, size_t F,
                        size_t dmlp_cols, bool shared) {
  const size_t per_layer = N * (2 * C + heads + F);
  const size_t sets = shared ? 1 : size_t(num_layers);
  storage.assign(sets * per_layer + N * C + N * dmlp_cols, 0);
  layers.resize(size_t(num_layers));
  for (size_t l = 0; l < layers.size(); l++) {
    uint16_t* p = storage.data() + (shared ? 0 : l) * per_layer;
    layers[l] = Layer{p, p + N * C, p + N * (C + heads), p + N * (2 * C + heads)};
  }
  final_norm = storage.data() + sets * per_layer;
  dmlp = final_norm + N * C;
}

void Bf16Acts::clear() {
  storage = {};
  layers.clear();
  final_norm = nullptr;
  dmlp = nullptr;
}

void AttentionScratch::plan(BufferPlan& plan, const AttentionShape& s, bool qk_norm) {
  const size_t N = size_t(s.B) * s.T;
  plan.add(dqkv, N * qkv_width(s));
  plan.add(dq, N * s.NH * s.HD);
  plan.add(dk, N * s.NKV * s.HD);
  plan.add(dv, N * s.NKV * s.HD);
  if (qk_norm) {
    plan.add(dqn, N * s.NH * s.HD);
    plan.add(dkn, N * s.NKV * s.HD);
  } else {
    dqn = dkn = nullptr;
  }
  plan.add(datt, size_t(s.B) * s.NH * s.T * s.T);
  plan.add(dy, N * s.NH * s.HD);
  plan.add(dym, N * s.NH * s.HD);
}

void attention_block_forward(float* out, const float* inp, const AttentionWeights& w,
                             AttentionActs& a, const AttentionShape& s, const RopeTables& rope,
                             MatmulPrecision prec) {
  const int N = s.B * s.T;
  if (a.inp16)  // BF16: the caller's norm rounded inp
    matmul_forward_bf16_input(a.qkv, a.inp16, w.qkv_w, w.qkv16, w.qkv_b, N, s.C,
                              int(qkv_width(s)));
  else
    linear_forward(a.qkv, inp, w.qkv_w, w.qkv_q, w.qkv_b, N, s.C, int(qkv_width(s)), prec);
  split_heads_forward(a.q, a.k, a.v, a.qkv, s.B, s.T, s.NH, s.NKV, s.HD);
  float* q = a.q;
  float* k = a.k;
  if (w.q_norm) {
    rmsnorm_forward(a.qn, a.q_rstd, a.q, w.q_norm, N * s.NH, s.HD, s.qk_norm_eps);
    rmsnorm_forward(a.kn, a.k_rstd, a.k, w.k_norm, N * s.NKV, s.HD, s.qk_norm_eps);
    q = a.qn;
    k = a.kn;
  }
  if (rope.cos) {
    rope_forward(q, rope.cos, rope.sin, s.B, s.NH, s.T, s.HD);
    rope_forward(k, rope.cos, rope.sin, s.B, s.NKV, s.T, s.HD);
  }
  attention_forward(a.y, a.att, q, k, a.v, s.B, s.T, s.NH, s.NKV, s.HD, prec);
  merge_heads_forward(a.ym, a.y, s.B, s.T, s.NH, s.HD, a.ym16);
  if (a.ym16)
    matmul_forward_bf16_input(out, a.ym16, w.o_w, w.o16, w.o_b, N, s.NH * s.HD, s.C);
  else
    linear_forward(out, a.ym, w.o_w, w.o_q, w.o_b, N, s.NH * s.HD, s.C, prec);
}

void attention_block_backward(float* dinp, const float* dout, const float* inp,
                              const AttentionWeights& w, const AttentionGrads& g,
                              const AttentionActs& a, AttentionScratch& sc,
                              const AttentionShape& s, const RopeTables& rope,
                              MatmulPrecision prec, const float* extra_datt) {
  const int N = s.B * s.T;
  const size_t nq = size_t(N) * s.NH * s.HD, nkv = size_t(N) * s.NKV * s.HD;
  matmul_backward(sc.dym, g.o_w, g.o_b, dout, a.ym, w.o_w, N, s.NH * s.HD, s.C, prec, w.o16,
                  true, a.ym16);
  merge_heads_backward(sc.dy, sc.dym, s.B, s.T, s.NH, s.HD, true);
  // Gradients w.r.t. the q/k that attention saw: after norm and RoPE.
  const bool norm = w.q_norm != nullptr;
  float* dq_att = norm ? sc.dqn : sc.dq;
  float* dk_att = norm ? sc.dkn : sc.dk;
  zero(dq_att, nq);
  zero(dk_att, nkv);
  zero(sc.dv, nkv);
  const float* q = norm ? a.qn : a.q;
  const float* k = norm ? a.kn : a.k;
  attention_backward(dq_att, dk_att, sc.dv, sc.datt, sc.dy, a.att, q, k, a.v, s.B, s.T, s.NH,
                     s.NKV, s.HD, prec);
  if (extra_datt)
    attention_probs_backward(dq_att, dk_att, extra_datt, a.att, q, k, s.B, s.T, s.NH, s.NKV, s.HD);
  if (rope.cos) {
    rope_backward(dq_att, rope.cos, rope.sin, s.B, s.NH, s.T, s.HD);
    rope_backward(dk_att, rope.cos, rope.sin, s.B, s.NKV, s.T, s.HD);
  }
  if (norm) {
    zero(sc.dq, nq);
    zero(sc.dk, nkv);
    rmsnorm_backward(sc.dq, g.q_norm, sc.dqn, a.q, w.q_norm, a.q_rstd, N * s.NH, s.HD);
    rmsnorm_backward(sc.dk, g.k_norm, sc.dkn, a.k, w.k_norm, a.k_rstd, N * s.NKV, s.HD);
  }
  split_heads_backward(sc.dqkv, sc.dq, sc.dk, sc.dv, s.B, s.T, s.NH, s.NKV, s.HD, true);
  matmul_backward(dinp, g.qkv_w, g.qkv_b, sc.dqkv, inp, w.qkv_w, N, s.C, int(qkv_width(s)), prec,
                  w.qkv16, true, a.inp16);
}

}  // namespace distill

namespace distill {

void attention_block_infer(float* out, const float* inp, const AttentionWeights& w,
                           const AttentionShape& s, const RopeTables& rope, KvCache& cache,
                           int layer, const InferBatch& batch, float* qkv, float* y) {
  const int R = int(batch.size());
  const int QKV = int(qkv_width(s)), HD = s.HD, half = HD / 2, group = s.NH / s.NKV;
  const float scale = 1.0f / std::sqrt(float(HD));
  linear_forward(qkv, inp, w.qkv_w, w.qkv_q, w.qkv_b, R, s.C, QKV, MatmulPrecision::F32);
  // Blocks for the rows' positions come from the pool first (serially: the pool is not
  // thread-safe, and layer 0 is the first to write a position).
  if (layer == 0)
    for (int r = 0; r < R; r++) cache.ensure(batch.slots[r], batch.positions[r] + 1);
  // Per row: q/k norm, RoPE at the row's position, then store k and v in the cache (converted to
  // its type). A decode step's few rows are less work than waking the thread team.
  parallel_for_if(R, size_t(R) * QKV > kParallelMin, [&](int r) {
    float* q = qkv + size_t(r) * QKV;
    float* k = q + size_t(s.NH) * HD;
    const float* v = k + size_t(s.NKV) * HD;
    const int pos = batch.positions[r], slot = batch.slots[r];
    if (w.q_norm) {
      rmsnorm_forward(q, nullptr, q, w.q_norm, s.NH, HD, s.qk_norm_eps);
      rmsnorm_forward(k, nullptr, k, w.k_norm, s.NKV, HD, s.qk_norm_eps);
    }
    if (rope.cos) {
      rope_forward(q, rope.cos + size_t(pos) * half, rope.sin + size_t(pos) * half, 1, s.NH, 1, HD);
      rope_forward(k, rope.cos + size_t(pos) * half, rope.sin + size_t(pos) * half, 1, s.NKV, 1,
                   HD);
    }
    // Keys go in as a column of the block's transposed (HD, block_size) matrix, values as a row
    // of its (block_size, HD) matrix (infer/kv_type.h).
    const int block = cache.table(slot)[size_t(pos / cache.block_size)], j = pos % cache.block_size;
    const size_t elem = kv_type_bytes(cache.type);
    for (int g = 0; g < s.NKV; g++) {
      kv_store_strided(static_cast<uint8_t*>(cache.k_block(layer, block, g)) + size_t(j) * elem,
                       cache.type, k + size_t(g) * HD, HD, cache.block_size);
      kv_store(static_cast<uint8_t*>(cache.v_block(layer, block, g)) + size_t(j) * HD * elem,
               cache.type, v + size_t(g) * HD, HD);
    }
  });
  // Each (row, head) attends to its slot's positions 0..pos, block by block (the table says where
  // each block is; within a block, keys and values are contiguous).
  // Each block's keys (or values) fill whole pages that a new step finds in L3 or memory, and the
  // hardware prefetchers stop at page boundaries: the next block's keys, and the values, are asked
  // for while a block's keys are scored.
  const size_t block_bytes = size_t(cache.block_size) * HD * kv_type_bytes(cache.type);
  auto prefetch = [block_bytes](const void* p) {
    for (size_t i = 0; i < block_bytes; i += 64) __builtin_prefetch(static_cast<const char*>(p) + i);
  };
  parallel_for_if(R * s.NH, true, [&](int rh) {
    // Per-thread scores, kept between calls (no allocation per layer and step).
    thread_local std::vector<float> scores;
    if (scores.size() < size_t(cache.max_len)) scores.resize(cache.max_len);
    const int r = rh / s.NH, h = rh % s.NH, g = h / group;
    const int n = batch.positions[r] + 1, bs = cache.block_size;
    const std::vector<int>& table = cache.table(batch.slots[r]);
    const float* q = qkv + size_t(r) * QKV + size_t(h) * HD;
    for (int j = 0; j < n; j += bs) {
      const int b = j / bs;
      if (j + bs < n) prefetch(cache.k_block(layer, table[size_t(b + 1)], g));
      prefetch(cache.v_block(layer, table[size_t(b)], g));
      kv_key_scores(scores.data() + j, q, cache.k_block(layer, table[size_t(b)], g), cache.type,
                    std::min(bs, n - j), bs, HD, scale);
    }
    float mx = -INFINITY;
    for (int j = 0; j < n; j++) mx = std::max(mx, scores[j]);
    float sum = 0.0f;
    for (int j = 0; j < n; j++) sum += scores[j] = fast_exp(scores[j] - mx);
    const float inv = 1.0f / sum;
    for (int j = 0; j < n; j++) scores[j] *= inv;
    float* yo = y + size_t(r) * s.NH * HD + size_t(h) * HD;
    std::fill(yo, yo + HD, 0.0f);
    for (int j = 0; j < n; j += bs)
      kv_value_accumulate(yo, scores.data() + j, cache.v_block(layer, table[size_t(j / bs)], g),
                          cache.type, std::min(bs, n - j), HD);
  });
  linear_forward(out, y, w.o_w, w.o_q, w.o_b, R, s.NH * HD, s.C, MatmulPrecision::F32);
}

void attention_probs_backward(float* dq, float* dk, const float* datt, const float* att,
                              const float* q, const float* k, int B, int T, int NH, int NKV,
                              int HD) {
  const int group = NH / NKV;
  const float scale = 1.0f / std::sqrt(float(HD));
  const size_t head = size_t(T) * HD, square = size_t(T) * T;
  // One task per kv head (its query heads accumulate into the same dk): race-free, ordered.
#pragma omp parallel for schedule(static)
  for (int bkv = 0; bkv < B * NKV; bkv++) {
    const int b = bkv / NKV, kvh = bkv % NKV;
    const float* kh = k + size_t(bkv) * head;
    float* dkh = dk + size_t(bkv) * head;
    std::vector<float> dpre(T);
    for (int h = kvh * group; h < (kvh + 1) * group; h++) {
      const size_t bh = size_t(b) * NH + h;
      for (int i = 0; i < T; i++) {
        const float* arow = att + bh * square + size_t(i) * T;
        const float* grow = datt + bh * square + size_t(i) * T;
        double dot = 0.0;
        for (int j = 0; j <= i; j++) dot += double(grow[j]) * arow[j];
        for (int j = 0; j <= i; j++) dpre[j] = float(arow[j] * (grow[j] - dot)) * scale;
        const float* qi = q + bh * head + size_t(i) * HD;
        float* dqi = dq + bh * head + size_t(i) * HD;
        for (int j = 0; j <= i; j++) {
          const float* kj = kh + size_t(j) * HD;
          float* dkj = dkh + size_t(j) * HD;
          for (int d = 0; d < HD; d++) {
            dqi[d] += dpre[j] * kj[d];
            dkj[d] += dpre[j] * qi[d];
          }
        }
      }
    }
  }
}

}  // namespace distill
