// The llama family: llama, mistral, qwen2 (qkv bias), qwen3 (per-head q/k RMSNorm).
// Pre-norm blocks: x += attn(rmsnorm(x)); x += down(silu(gate(rmsnorm(x))) * up(rmsnorm(x))).
#include <cstring>
#include <string>
#include <vector>

#include "infer/kv_cache.h"
#include "model/attention_block.h"
#include "model/model.h"

namespace distill {

std::vector<ParamSpec> llama_param_specs(const ModelConfig& c) {
  const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  const int64_t QD = c.q_dim(), KVD = c.kv_dim(), HD = c.head_dim;
  std::vector<ParamSpec> specs;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool decay) {
    specs.push_back(ParamSpec{std::move(name), std::move(shape), false, decay});
  };
  add("model.embed_tokens.weight", {V, C}, false);
  for (int l = 0; l < c.num_layers; l++) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    add(p + "input_layernorm.weight", {C}, false);
    // q, k, v rows adjacent: one (QD+2KVD, C) matrix for a single fused projection.
    add(p + "self_attn.q_proj.weight", {QD, C}, true);
    add(p + "self_attn.k_proj.weight", {KVD, C}, true);
    add(p + "self_attn.v_proj.weight", {KVD, C}, true);
    if (c.qkv_bias) {
      add(p + "self_attn.q_proj.bias", {QD}, false);
      add(p + "self_attn.k_proj.bias", {KVD}, false);
      add(p + "self_attn.v_proj.bias", {KVD}, false);
    }
    add(p + "self_attn.o_proj.weight", {C, QD}, true);
    if (c.o_bias) add(p + "self_attn.o_proj.bias", {C}, false);
    if (c.qk_norm) {
      add(p + "self_attn.q_norm.weight", {HD}, false);
      add(p + "self_attn.k_norm.weight", {HD}, false);
    }
    add(p + "post_attention_layernorm.weight", {C}, false);
    // gate rows then up rows: one (2F, C) projection whose output rows are [gate | up].
    add(p + "mlp.gate_proj.weight", {F, C}, true);
    add(p + "mlp.up_proj.weight", {F, C}, true);
    if (c.mlp_bias) {
      add(p + "mlp.gate_proj.bias", {F}, false);
      add(p + "mlp.up_proj.bias", {F}, false);
    }
    add(p + "mlp.down_proj.weight", {C, F}, true);
    if (c.mlp_bias) add(p + "mlp.down_proj.bias", {C}, false);
  }
  add("model.norm.weight", {C}, false);
  if (!c.tie_word_embeddings) add("lm_head.weight", {V, C}, true);
  return specs;
}

namespace {

struct LlamaLayer {
  AttentionWeights attn;
  AttentionGrads dattn;
  const float *ln1, *ln2, *gate_up_w, *gate_up_b, *down_w, *down_b;
  const QMatrix *gate_up_q = nullptr, *down_q = nullptr;  // low-precision copies, or null: f32
  Bf16Weight gate_up16, down16;  // packed bf16 copies for BF16 training
  float *dln1, *dln2, *dgate_up_w, *dgate_up_b, *ddown_w, *ddown_b;
};

struct LlamaLayerActs {
  float *res;       // (N,C) block input (residual stream)
  float *ln1;       // (N,C)
  float *ln1_rstd;  // (N)
  AttentionActs attn;
  float *res_mid;   // (N,C) after the attention residual
  float *ln2, *ln2_rstd;
  float *gate_up;   // (N,2F)
  float *swi;       // (N,F)
  uint16_t *ln2_16 = nullptr, *act16 = nullptr;  // BF16: ln2, swi in bf16 (Bf16Acts)
};

AttentionShape llama_shape(const ModelConfig& c, int B, int T) {
  return AttentionShape{B, T, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, c.norm_eps};
}

// Every buffer a forward/backward at (B,T) uses. Without checkpointing each layer has its own
// activations; with it only each layer's `res` is its own and the rest is one set the layers
// share (share_layer_acts points them at layer 0's after allocation).
struct LlamaBuffers {
  std::vector<LlamaLayerActs> acts;
  float *res_final, *lnf, *lnf_rstd;  // (N,C), (N,C), (N): final norm
  float *logits;                      // (N,V)
  float *tmp, *dx, *dres;             // (N,C) each
  float *dswi, *dgate_up;             // (N,F), (N,2F)
  AttentionScratch scratch;
  float *rope_cos, *rope_sin;         // (T, HD/2)

  // bf16: the MLP activation's gradient goes to Bf16Acts::dmlp (rounded) instead of its f32
  // buffer, which is then not allocated.
  void plan(BufferPlan& plan, const ModelConfig& c, const AttentionShape& s, bool checkpointing,
            bool bf16) {
    const size_t N = size_t(s.B) * s.T, C = c.hidden_size, F = c.intermediate_size;
    acts.assign(c.num_layers, LlamaLayerActs{});
    for (size_t l = 0; l < acts.size(); l++) {
      LlamaLayerActs& a = acts[l];
      plan.add(a.res, N * C);
      if (checkpointing && l > 0) continue;
      plan.add(a.ln1, N * C);
      plan.add(a.ln1_rstd, N);
      a.attn.plan(plan, s, c.qk_norm);
      plan.add(a.res_mid, N * C);
      plan.add(a.ln2, N * C);
      plan.add(a.ln2_rstd, N);
      plan.add(a.gate_up, N * 2 * F);
      plan.add(a.swi, N * F);
    }
    plan.add(res_final, N * C);
    plan.add(lnf, N * C);
    plan.add(lnf_rstd, N);
    plan.add(logits, N * c.vocab_size);
    plan.add(tmp, N * C);
    plan.add(dx, N * C);
    plan.add(dres, N * C);
    plan.add(dswi, N * F);
    if (bf16)
      dgate_up = nullptr;
    else
      plan.add(dgate_up, N * 2 * F);
    scratch.plan(plan, s, c.qk_norm);
    const size_t half = c.head_dim / 2;
    plan.add(rope_cos, size_t(s.T) * half);
    plan.add(rope_sin, size_t(s.T) * half);
  }
};

}  // namespace

size_t llama_training_buffer_floats(const ModelConfig& c, int B, int T, bool checkpointing,
                                    bool bf16) {
  BufferPlan plan;
  LlamaBuffers buffers;
  buffers.plan(plan, c, llama_shape(c, B, T), checkpointing, bf16);
  return plan.floats();
}

namespace {

class Llama final : public ArchImpl {
 public:
  explicit Llama(Model& m) : m_(m), c_(m.config()) {
    auto opt = [&](const std::string& name) -> std::pair<const float*, float*> {
      if (!m.find_param(name)) return {nullptr, nullptr};
      return {m.param(name), m.grad(name)};
    };
    for (int l = 0; l < c_.num_layers; l++) {
      const std::string p = "model.layers." + std::to_string(l) + ".";
      LlamaLayer L{};
      std::tie(L.attn.qkv_w, L.dattn.qkv_w) = opt(p + "self_attn.q_proj.weight");
      std::tie(L.attn.qkv_b, L.dattn.qkv_b) = opt(p + "self_attn.q_proj.bias");
      std::tie(L.attn.o_w, L.dattn.o_w) = opt(p + "self_attn.o_proj.weight");
      std::tie(L.attn.o_b, L.dattn.o_b) = opt(p + "self_attn.o_proj.bias");
      std::tie(L.attn.q_norm, L.dattn.q_norm) = opt(p + "self_attn.q_norm.weight");
      std::tie(L.attn.k_norm, L.dattn.k_norm) = opt(p + "self_attn.k_norm.weight");
      std::tie(L.ln1, L.dln1) = opt(p + "input_layernorm.weight");
      std::tie(L.ln2, L.dln2) = opt(p + "post_attention_layernorm.weight");
      std::tie(L.gate_up_w, L.dgate_up_w) = opt(p + "mlp.gate_proj.weight");
      std::tie(L.gate_up_b, L.dgate_up_b) = opt(p + "mlp.gate_proj.bias");
      std::tie(L.down_w, L.ddown_w) = opt(p + "mlp.down_proj.weight");
      std::tie(L.down_b, L.ddown_b) = opt(p + "mlp.down_proj.bias");
      layers_.push_back(L);
    }
    std::tie(wte_, dwte_) = opt("model.embed_tokens.weight");
    std::tie(norm_, dnorm_) = opt("model.norm.weight");
    if (c_.tie_word_embeddings) {
      head_ = wte_;
      dhead_ = dwte_;
    } else {
      std::tie(head_, dhead_) = opt("lm_head.weight");
    }
    inv_freq_.resize(c_.head_dim / 2);
    rope_inv_freq(inv_freq_.data(), c_.head_dim, c_.rope_theta, c_.rope_scaling);
  }

  float* forward(const int32_t* ids, int B, int T) override {
    ensure_buffers(B, T);
    ids_.assign(ids, ids + size_t(B) * T);
    const int N = B * T, C = c_.hidden_size, F = c_.intermediate_size;
    const MatmulPrecision prec = m_.precision();
    if (prec == MatmulPrecision::BF16) refresh_bf16();
    LlamaBuffers& b = buf_;
    embedding_forward(b.acts[0].res, ids, wte_, nullptr, B, T, C);
    for (int l = 0; l < c_.num_layers; l++) {
      const LlamaLayer& L = layers_[l];
      LlamaLayerActs& a = b.acts[l];
      float* next = l + 1 < c_.num_layers ? b.acts[l + 1].res : b.res_final;
      layer_forward_acts(L, a);
      if (a.act16)  // BF16: the SwiGLU rounded its output for this projection
        matmul_forward_bf16_input(b.tmp, a.act16, L.down_w, L.down16, L.down_b, N, F, C);
      else
        linear_forward(b.tmp, a.swi, L.down_w, L.down_q, L.down_b, N, F, C, prec);
      residual_forward(next, a.res_mid, b.tmp, size_t(N) * C);
    }
    rmsnorm_forward(b.lnf, b.lnf_rstd, b.res_final, norm_, N, C, c_.norm_eps, acts16_.final_norm);
    if (acts16_.final_norm)
      matmul_forward_bf16_input(b.logits, acts16_.final_norm, head_, head16_, nullptr, N, C,
                                c_.vocab_size);
    else
      linear_forward(b.logits, b.lnf, head_, head_q_, nullptr, N, C, c_.vocab_size, prec);
    return b.logits;
  }

  void backward(const float* dlogits) override {
    const int B = B_, T = T_, N = B * T, C = c_.hidden_size, F = c_.intermediate_size;
    const size_t NC = size_t(N) * C;
    const MatmulPrecision prec = m_.precision();
    LlamaBuffers& b = buf_;
    matmul_backward(b.dx, dhead_, nullptr, dlogits, b.lnf, head_, N, C, c_.vocab_size, prec,
                    head16_, true, acts16_.final_norm);
    zero_floats(b.dres, NC);
    rmsnorm_backward(b.dres, dnorm_, b.dx, b.res_final, norm_, b.lnf_rstd, N, C);
    for (int l = c_.num_layers - 1; l >= 0; l--) {
      // Hidden-state distillation's gradient at the layer's output, if any.
      if (const float* dh = m_.hidden_grad(l + 1)) residual_forward(b.dres, b.dres, dh, NC);
      const LlamaLayer& L = layers_[l];
      LlamaLayerActs& a = b.acts[l];
      // The shared activations hold the last layer's from the forward; recompute the others'.
      if (checkpointing_ && l + 1 < c_.num_layers) layer_forward_acts(L, a);
      // MLP: dres is the gradient of the block output, which also flows straight to res_mid.
      matmul_backward(b.dswi, L.ddown_w, L.ddown_b, b.dres, a.swi, L.down_w, N, F, C, prec,
                      L.down16, true, a.act16);
      if (acts16_.dmlp) {  // BF16: the SwiGLU's gradient leaves it rounded (bias summed, if any)
        swiglu_backward_bf16(acts16_.dmlp, L.dgate_up_b, b.dswi, a.gate_up, N, F);
        matmul_backward_bf16_dout(b.dx, L.dgate_up_w, acts16_.dmlp, a.ln2, L.gate_up_w, N, C,
                                  2 * F, L.gate_up16, true, a.ln2_16);
      } else {
        swiglu_backward(b.dgate_up, b.dswi, a.gate_up, N, F, true);
        matmul_backward(b.dx, L.dgate_up_w, L.dgate_up_b, b.dgate_up, a.ln2, L.gate_up_w, N, C,
                        2 * F, prec, L.gate_up16, true, a.ln2_16);
      }
      rmsnorm_backward(b.dres, L.dln2, b.dx, a.res_mid, L.ln2, a.ln2_rstd, N, C);
      // Attention: dres is now the gradient of res_mid.
      attention_block_backward(b.dx, b.dres, a.ln1, L.attn, L.dattn, a.attn, b.scratch, shape_,
                               rope_, prec, m_.attention_grad(l));
      rmsnorm_backward(b.dres, L.dln1, b.dx, a.res, L.ln1, a.ln1_rstd, N, C);
    }
    if (const float* dh = m_.hidden_grad(0)) residual_forward(b.dres, b.dres, dh, NC);
    embedding_backward(dwte_, nullptr, b.dres, ids_.data(), B, T, C);
  }

  size_t activation_floats() const override { return buffer_.size(); }

  std::vector<const QMatrix*> set_weight_type(WeightType type) override {
    qmats_.reset(type);
    auto make = [&](const float* w, int rows, int cols) { return qmats_.add(w, rows, cols); };
    const int C = c_.hidden_size, F = c_.intermediate_size;
    for (LlamaLayer& L : layers_) {
      L.attn.qkv_q = make(L.attn.qkv_w, c_.q_dim() + 2 * c_.kv_dim(), C);
      L.attn.o_q = make(L.attn.o_w, C, c_.q_dim());
      L.gate_up_q = make(L.gate_up_w, 2 * F, C);
      L.down_q = make(L.down_w, C, F);
    }
    head_q_ = make(head_, c_.vocab_size, C);
    return qmats_.all();
  }

  const float* hidden(int i) const override {
    return i < c_.num_layers ? buf_.acts[i].res : buf_.res_final;
  }

  LayerActivations layer_activations(int l) const override {
    const auto& a = buf_.acts[l];
    return LayerActivations{a.ln1, a.attn.att, a.attn.ym, a.ln2, a.swi};
  }

  float* forward_rows(const InferBatch& batch, KvCache& cache) override {
    const int R = int(batch.size()), C = c_.hidden_size, F = c_.intermediate_size;
    ensure_infer_buffers(R, cache.max_len);
    AttentionShape s{1, R, C, c_.num_heads, c_.num_kv_heads, c_.head_dim, c_.norm_eps};
    for (int r = 0; r < R; r++)
      std::memcpy(ix_ + size_t(r) * C, wte_ + size_t(batch.tokens[r]) * C, sizeof(float) * C);
    for (int l = 0; l < c_.num_layers; l++) {
      const LlamaLayer& L = layers_[l];
      rmsnorm_forward(iln_, nullptr, ix_, L.ln1, R, C, c_.norm_eps);
      attention_block_infer(itmp_, iln_, L.attn, s, infer_rope_, cache, l, batch, iqkv_, iy_);
      residual_forward(ix_, ix_, itmp_, size_t(R) * C);
      rmsnorm_forward(iln_, nullptr, ix_, L.ln2, R, C, c_.norm_eps);
      linear_forward(igu_, iln_, L.gate_up_w, L.gate_up_q, L.gate_up_b, R, C, 2 * F, kF32);
      swiglu_forward(iswi_, igu_, R, F);
      linear_forward(itmp_, iswi_, L.down_w, L.down_q, L.down_b, R, F, C, kF32);
      residual_forward(ix_, ix_, itmp_, size_t(R) * C);
    }
    int M = 0;
    for (int r = 0; r < R; r++)
      if (batch.want_logits[r])
        std::memcpy(iln_ + size_t(M++) * C, ix_ + size_t(r) * C, sizeof(float) * C);
    rmsnorm_forward(itmp_, nullptr, iln_, norm_, M, C, c_.norm_eps);
    linear_forward(ilogits_, itmp_, head_, head_q_, nullptr, M, C, c_.vocab_size, kF32);
    return ilogits_;
  }

 private:
  // Layer l's forward from a.res up to the MLP's activation a.swi: every activation its
  // backward reads. The down projection and residual that finish the layer are the caller's.
  void layer_forward_acts(const LlamaLayer& L, LlamaLayerActs& a) {
    const int N = B_ * T_, C = c_.hidden_size, F = c_.intermediate_size;
    const MatmulPrecision prec = m_.precision();
    rmsnorm_forward(a.ln1, a.ln1_rstd, a.res, L.ln1, N, C, c_.norm_eps, a.attn.inp16);
    attention_block_forward(buf_.tmp, a.ln1, L.attn, a.attn, shape_, rope_, prec);
    residual_forward(a.res_mid, a.res, buf_.tmp, size_t(N) * C);
    rmsnorm_forward(a.ln2, a.ln2_rstd, a.res_mid, L.ln2, N, C, c_.norm_eps, a.ln2_16);
    if (a.ln2_16)
      matmul_forward_bf16_input(a.gate_up, a.ln2_16, L.gate_up_w, L.gate_up16, L.gate_up_b, N, C,
                                2 * F);
    else
      linear_forward(a.gate_up, a.ln2, L.gate_up_w, L.gate_up_q, L.gate_up_b, N, C, 2 * F, prec);
    swiglu_forward(a.swi, a.gate_up, N, F, a.act16);
  }

  // The bf16 copies of every matrix (registered on the first BF16 forward), from the weights now.
  void refresh_bf16() {
    const int C = c_.hidden_size, F = c_.intermediate_size;
    if (bf16_.empty()) {
      for (LlamaLayer& L : layers_) {
        bf16_.add(L.attn.qkv_w, c_.q_dim() + 2 * c_.kv_dim(), C, &L.attn.qkv16);
        bf16_.add(L.attn.o_w, C, c_.q_dim(), &L.attn.o16);
        bf16_.add(L.gate_up_w, 2 * F, C, &L.gate_up16);
        bf16_.add(L.down_w, C, F, &L.down16);
      }
      bf16_.add(head_, c_.vocab_size, C, &head16_);
    }
    bf16_.refresh();
  }

  void ensure_buffers(int B, int T) {
    const bool checkpointing = m_.checkpointing();
    const bool bf16 = m_.precision() == MatmulPrecision::BF16;
    if (B == B_ && T == T_ && checkpointing == checkpointing_ && bf16 == bf16_acts_) return;
    B_ = B;
    T_ = T;
    checkpointing_ = checkpointing;
    bf16_acts_ = bf16;
    shape_ = llama_shape(c_, B, T);
    BufferPlan plan;
    buf_.plan(plan, c_, shape_, checkpointing, bf16);
    plan.allocate(buffer_);
    if (checkpointing) share_layer_acts(buf_.acts);
    rope_table(buf_.rope_cos, buf_.rope_sin, inv_freq_.data(), T, c_.head_dim, 0);
    rope_ = RopeTables{buf_.rope_cos, buf_.rope_sin};
    const size_t N = size_t(B) * T;
    if (bf16)
      acts16_.allocate(c_.num_layers, N, c_.hidden_size, c_.q_dim(), c_.intermediate_size,
                       2 * size_t(c_.intermediate_size), checkpointing);
    else
      acts16_.clear();
    for (size_t l = 0; l < buf_.acts.size(); l++) {
      LlamaLayerActs& a = buf_.acts[l];
      const Bf16Acts::Layer* a16 = bf16 ? &acts16_.layers[l] : nullptr;
      a.attn.inp16 = a16 ? a16->attn_in : nullptr;
      a.attn.ym16 = a16 ? a16->heads : nullptr;
      a.ln2_16 = a16 ? a16->mlp_in : nullptr;
      a.act16 = a16 ? a16->mlp_act : nullptr;
    }
  }

  void ensure_infer_buffers(int R, int max_len) {
    if (R > infer_rows_) {
      const size_t C = c_.hidden_size, F = c_.intermediate_size;
      BufferPlan plan;
      plan.add(ix_, R * C);
      plan.add(iln_, R * C);
      plan.add(itmp_, R * C);
      plan.add(iqkv_, R * size_t(c_.q_dim() + 2 * c_.kv_dim()));
      plan.add(iy_, R * size_t(c_.q_dim()));
      plan.add(igu_, R * 2 * F);
      plan.add(iswi_, R * F);
      plan.add(ilogits_, R * size_t(c_.vocab_size));
      plan.allocate(infer_buffer_);
      infer_rows_ = R;
    }
    if (max_len > rope_len_) {
      const size_t half = c_.head_dim / 2;
      rope_cos_.resize(max_len * half);
      rope_sin_.resize(max_len * half);
      rope_table(rope_cos_.data(), rope_sin_.data(), inv_freq_.data(), max_len, c_.head_dim, 0);
      infer_rope_ = RopeTables{rope_cos_.data(), rope_sin_.data()};
      rope_len_ = max_len;
    }
  }

  Model& m_;
  const ModelConfig& c_;
  std::vector<LlamaLayer> layers_;
  // Inference buffers (rows of an InferBatch).
  int infer_rows_ = 0, rope_len_ = 0;
  FloatBuffer infer_buffer_;
  float *ix_, *iln_, *itmp_, *iqkv_, *iy_, *igu_, *iswi_, *ilogits_;
  std::vector<float> rope_cos_, rope_sin_;
  RopeTables infer_rope_;
  const float *wte_ = nullptr, *norm_ = nullptr, *head_ = nullptr;
  const QMatrix* head_q_ = nullptr;
  QMatrixSet qmats_;  // set_weight_type's copies
  Bf16Copies bf16_;   // BF16 forward/backward's copies
  Bf16Weight head16_;
  static constexpr MatmulPrecision kF32 = MatmulPrecision::F32;
  float *dwte_ = nullptr, *dnorm_ = nullptr, *dhead_ = nullptr;
  std::vector<float> inv_freq_;

  int B_ = 0, T_ = 0;
  bool checkpointing_ = false;  // the layout of the last forward's buffers
  AttentionShape shape_{};
  FloatBuffer buffer_;
  LlamaBuffers buf_{};
  bool bf16_acts_ = false;  // acts16_ allocated (the last forward ran at BF16)
  Bf16Acts acts16_;
  std::vector<int32_t> ids_;
  RopeTables rope_;
};

}  // namespace

std::unique_ptr<ArchImpl> make_llama(Model& model) { return std::make_unique<Llama>(model); }

}  // namespace distill
