// GPT-2: learned positions, pre-LayerNorm blocks, GELU (tanh) MLP, biases everywhere, LM head
// tied to the token embedding. HF stores its projections as Conv1D weights, (in, out); we keep
// them (out, in) like every other linear layer and transpose on load/save (hf_transposed).
#include <cstring>
#include <string>
#include <vector>

#include "infer/kv_cache.h"
#include "model/attention_block.h"
#include "model/model.h"

namespace distill {

std::vector<ParamSpec> gpt2_param_specs(const ModelConfig& c) {
  const int64_t C = c.hidden_size, F = c.intermediate_size, V = c.vocab_size;
  std::vector<ParamSpec> specs;
  auto add = [&](std::string name, std::vector<int64_t> shape, bool transposed, bool decay) {
    specs.push_back(ParamSpec{std::move(name), std::move(shape), transposed, decay});
  };
  add("transformer.wte.weight", {V, C}, false, false);
  add("transformer.wpe.weight", {c.max_position, C}, false, false);
  for (int l = 0; l < c.num_layers; l++) {
    const std::string p = "transformer.h." + std::to_string(l) + ".";
    add(p + "ln_1.weight", {C}, false, false);
    add(p + "ln_1.bias", {C}, false, false);
    add(p + "attn.c_attn.weight", {3 * C, C}, true, true);
    add(p + "attn.c_attn.bias", {3 * C}, false, false);
    add(p + "attn.c_proj.weight", {C, C}, true, true);
    add(p + "attn.c_proj.bias", {C}, false, false);
    add(p + "ln_2.weight", {C}, false, false);
    add(p + "ln_2.bias", {C}, false, false);
    add(p + "mlp.c_fc.weight", {F, C}, true, true);
    add(p + "mlp.c_fc.bias", {F}, false, false);
    add(p + "mlp.c_proj.weight", {C, F}, true, true);
    add(p + "mlp.c_proj.bias", {C}, false, false);
  }
  add("transformer.ln_f.weight", {C}, false, false);
  add("transformer.ln_f.bias", {C}, false, false);
  return specs;
}

namespace {

struct Gpt2Layer {
  AttentionWeights attn;
  AttentionGrads dattn;
  const float *ln1_w, *ln1_b, *ln2_w, *ln2_b, *fc_w, *fc_b, *proj_w, *proj_b;
  const QMatrix *fc_q = nullptr, *proj_q = nullptr;  // low-precision copies, or null: f32
  Bf16Weight fc16, proj16;  // packed bf16 copies for BF16 training
  float *dln1_w, *dln1_b, *dln2_w, *dln2_b, *dfc_w, *dfc_b, *dproj_w, *dproj_b;
};

struct Gpt2LayerActs {
  float *res;                   // (N,C) block input
  float *ln1, *ln1_mean, *ln1_rstd;
  AttentionActs attn;
  float *res_mid;               // (N,C)
  float *ln2, *ln2_mean, *ln2_rstd;
  float *fc;                    // (N,F) before GELU
  float *fc_gelu;               // (N,F)
  uint16_t *ln2_16 = nullptr, *act16 = nullptr;  // BF16: ln2, fc_gelu in bf16 (Bf16Acts)
};

AttentionShape gpt2_shape(const ModelConfig& c, int B, int T) {
  return AttentionShape{B, T, c.hidden_size, c.num_heads, c.num_kv_heads, c.head_dim, 0.0f};
}

// Every buffer a forward/backward at (B,T) uses. Without checkpointing each layer has its own
// activations; with it only each layer's `res` is its own and the rest is one set the layers
// share (share_layer_acts points them at layer 0's after allocation).
struct Gpt2Buffers {
  std::vector<Gpt2LayerActs> acts;
  float *res_final, *lnf, *lnf_mean, *lnf_rstd;  // (N,C), (N,C), (N), (N): final norm
  float *logits;                                 // (N,V)
  float *tmp, *dx, *dres;                        // (N,C) each
  float *dfc, *dfc_gelu;                         // (N,F) each
  AttentionScratch scratch;

  // bf16: the MLP activation's gradient goes to Bf16Acts::dmlp (rounded) instead of its f32
  // buffer, which is then not allocated.
  void plan(BufferPlan& plan, const ModelConfig& c, const AttentionShape& s, bool checkpointing,
            bool bf16) {
    const size_t N = size_t(s.B) * s.T, C = c.hidden_size, F = c.intermediate_size;
    acts.assign(c.num_layers, Gpt2LayerActs{});
    for (size_t l = 0; l < acts.size(); l++) {
      Gpt2LayerActs& a = acts[l];
      plan.add(a.res, N * C);
      if (checkpointing && l > 0) continue;
      plan.add(a.ln1, N * C);
      plan.add(a.ln1_mean, N);
      plan.add(a.ln1_rstd, N);
      a.attn.plan(plan, s, false);
      plan.add(a.res_mid, N * C);
      plan.add(a.ln2, N * C);
      plan.add(a.ln2_mean, N);
      plan.add(a.ln2_rstd, N);
      plan.add(a.fc, N * F);
      plan.add(a.fc_gelu, N * F);
    }
    plan.add(res_final, N * C);
    plan.add(lnf, N * C);
    plan.add(lnf_mean, N);
    plan.add(lnf_rstd, N);
    plan.add(logits, N * c.vocab_size);
    plan.add(tmp, N * C);
    plan.add(dx, N * C);
    plan.add(dres, N * C);
    if (bf16)
      dfc = nullptr;
    else
      plan.add(dfc, N * F);
    plan.add(dfc_gelu, N * F);
    scratch.plan(plan, s, false);
  }
};

}  // namespace

size_t gpt2_training_buffer_floats(const ModelConfig& c, int B, int T, bool checkpointing,
                                   bool bf16) {
  BufferPlan plan;
  Gpt2Buffers buffers;
  buffers.plan(plan, c, gpt2_shape(c, B, T), checkpointing, bf16);
  return plan.floats();
}

namespace {

class Gpt2 final : public ArchImpl {
 public:
  explicit Gpt2(Model& m) : m_(m), c_(m.config()) {
    auto get = [&](const std::string& name) -> std::pair<const float*, float*> {
      return {m.param(name), m.grad(name)};
    };
    for (int l = 0; l < c_.num_layers; l++) {
      const std::string p = "transformer.h." + std::to_string(l) + ".";
      Gpt2Layer L{};
      std::tie(L.attn.qkv_w, L.dattn.qkv_w) = get(p + "attn.c_attn.weight");
      std::tie(L.attn.qkv_b, L.dattn.qkv_b) = get(p + "attn.c_attn.bias");
      std::tie(L.attn.o_w, L.dattn.o_w) = get(p + "attn.c_proj.weight");
      std::tie(L.attn.o_b, L.dattn.o_b) = get(p + "attn.c_proj.bias");
      std::tie(L.ln1_w, L.dln1_w) = get(p + "ln_1.weight");
      std::tie(L.ln1_b, L.dln1_b) = get(p + "ln_1.bias");
      std::tie(L.ln2_w, L.dln2_w) = get(p + "ln_2.weight");
      std::tie(L.ln2_b, L.dln2_b) = get(p + "ln_2.bias");
      std::tie(L.fc_w, L.dfc_w) = get(p + "mlp.c_fc.weight");
      std::tie(L.fc_b, L.dfc_b) = get(p + "mlp.c_fc.bias");
      std::tie(L.proj_w, L.dproj_w) = get(p + "mlp.c_proj.weight");
      std::tie(L.proj_b, L.dproj_b) = get(p + "mlp.c_proj.bias");
      layers_.push_back(L);
    }
    std::tie(wte_, dwte_) = get("transformer.wte.weight");
    std::tie(wpe_, dwpe_) = get("transformer.wpe.weight");
    std::tie(lnf_w_, dlnf_w_) = get("transformer.ln_f.weight");
    std::tie(lnf_b_, dlnf_b_) = get("transformer.ln_f.bias");
  }

  float* forward(const int32_t* ids, int B, int T) override {
    ensure_buffers(B, T);
    ids_.assign(ids, ids + size_t(B) * T);
    const int N = B * T, C = c_.hidden_size, F = c_.intermediate_size;
    const MatmulPrecision prec = m_.precision();
    if (prec == MatmulPrecision::BF16) refresh_bf16();
    Gpt2Buffers& b = buf_;
    embedding_forward(b.acts[0].res, ids, wte_, wpe_, B, T, C);
    for (int l = 0; l < c_.num_layers; l++) {
      const Gpt2Layer& L = layers_[l];
      Gpt2LayerActs& a = b.acts[l];
      float* next = l + 1 < c_.num_layers ? b.acts[l + 1].res : b.res_final;
      layer_forward_acts(L, a);
      if (a.act16)  // BF16: the GELU rounded its output for this projection
        matmul_forward_bf16_input(b.tmp, a.act16, L.proj_w, L.proj16, L.proj_b, N, F, C);
      else
        linear_forward(b.tmp, a.fc_gelu, L.proj_w, L.proj_q, L.proj_b, N, F, C, prec);
      residual_forward(next, a.res_mid, b.tmp, size_t(N) * C);
    }
    layernorm_forward(b.lnf, b.lnf_mean, b.lnf_rstd, b.res_final, lnf_w_, lnf_b_, N, C,
                      c_.norm_eps, acts16_.final_norm);
    if (acts16_.final_norm)
      matmul_forward_bf16_input(b.logits, acts16_.final_norm, wte_, head16_, nullptr, N, C,
                                c_.vocab_size);
    else
      linear_forward(b.logits, b.lnf, wte_, head_q_, nullptr, N, C, c_.vocab_size, prec);
    return b.logits;
  }

  void backward(const float* dlogits) override {
    const int B = B_, T = T_, N = B * T, C = c_.hidden_size, F = c_.intermediate_size;
    const size_t NC = size_t(N) * C, NF = size_t(N) * F;
    const MatmulPrecision prec = m_.precision();
    Gpt2Buffers& b = buf_;
    matmul_backward(b.dx, dwte_, nullptr, dlogits, b.lnf, wte_, N, C, c_.vocab_size, prec,
                    head16_, true, acts16_.final_norm);
    zero_floats(b.dres, NC);
    layernorm_backward(b.dres, dlnf_w_, dlnf_b_, b.dx, b.res_final, lnf_w_, b.lnf_mean,
                       b.lnf_rstd, N, C);
    for (int l = c_.num_layers - 1; l >= 0; l--) {
      // Hidden-state distillation's gradient at the layer's output, if any.
      if (const float* dh = m_.hidden_grad(l + 1)) residual_forward(b.dres, b.dres, dh, NC);
      const Gpt2Layer& L = layers_[l];
      Gpt2LayerActs& a = b.acts[l];
      // The shared activations hold the last layer's from the forward; recompute the others'.
      if (checkpointing_ && l + 1 < c_.num_layers) layer_forward_acts(L, a);
      matmul_backward(b.dfc_gelu, L.dproj_w, L.dproj_b, b.dres, a.fc_gelu, L.proj_w, N, F, C,
                      prec, L.proj16, true, a.act16);
      if (acts16_.dmlp) {  // BF16: the GELU's gradient leaves it rounded, its bias summed
        gelu_backward_bf16(acts16_.dmlp, L.dfc_b, a.fc, b.dfc_gelu, N, F);
        matmul_backward_bf16_dout(b.dx, L.dfc_w, acts16_.dmlp, a.ln2, L.fc_w, N, C, F, L.fc16,
                                  true, a.ln2_16);
      } else {
        gelu_backward(b.dfc, a.fc, b.dfc_gelu, NF, true);
        matmul_backward(b.dx, L.dfc_w, L.dfc_b, b.dfc, a.ln2, L.fc_w, N, C, F, prec, L.fc16,
                        true, a.ln2_16);
      }
      layernorm_backward(b.dres, L.dln2_w, L.dln2_b, b.dx, a.res_mid, L.ln2_w, a.ln2_mean,
                         a.ln2_rstd, N, C);
      attention_block_backward(b.dx, b.dres, a.ln1, L.attn, L.dattn, a.attn, b.scratch, shape_,
                               RopeTables{}, prec, m_.attention_grad(l));
      layernorm_backward(b.dres, L.dln1_w, L.dln1_b, b.dx, a.res, L.ln1_w, a.ln1_mean,
                         a.ln1_rstd, N, C);
    }
    if (const float* dh = m_.hidden_grad(0)) residual_forward(b.dres, b.dres, dh, NC);
    embedding_backward(dwte_, dwpe_, b.dres, ids_.data(), B, T, C);
  }

  size_t activation_floats() const override { return buffer_.size(); }

  const float* hidden(int i) const override {
    return i < c_.num_layers ? buf_.acts[i].res : buf_.res_final;
  }

  LayerActivations layer_activations(int l) const override {
    const auto& a = buf_.acts[l];
    return LayerActivations{a.ln1, a.attn.att, a.attn.ym, a.ln2, a.fc_gelu};
  }

  std::vector<const QMatrix*> set_weight_type(WeightType type) override {
    qmats_.reset(type);
    auto make = [&](const float* w, int rows, int cols) { return qmats_.add(w, rows, cols); };
    const int C = c_.hidden_size, F = c_.intermediate_size;
    for (Gpt2Layer& L : layers_) {
      L.attn.qkv_q = make(L.attn.qkv_w, 3 * C, C);
      L.attn.o_q = make(L.attn.o_w, C, C);
      L.fc_q = make(L.fc_w, F, C);
      L.proj_q = make(L.proj_w, C, F);
    }
    head_q_ = make(wte_, c_.vocab_size, C);
    return qmats_.all();
  }

  float* forward_rows(const InferBatch& batch, KvCache& cache) override {
    const int R = int(batch.size()), C = c_.hidden_size, F = c_.intermediate_size;
    const float eps = c_.norm_eps;
    ensure_infer_buffers(R);
    AttentionShape s{1, R, C, c_.num_heads, c_.num_kv_heads, c_.head_dim, 0.0f};
    for (int r = 0; r < R; r++) {
      const float* te = wte_ + size_t(batch.tokens[r]) * C;
      const float* pe = wpe_ + size_t(batch.positions[r]) * C;
      float* x = ix_ + size_t(r) * C;
      for (int c = 0; c < C; c++) x[c] = te[c] + pe[c];
    }
    for (int l = 0; l < c_.num_layers; l++) {
      const Gpt2Layer& L = layers_[l];
      layernorm_forward(iln_, imean_, irstd_, ix_, L.ln1_w, L.ln1_b, R, C, eps);
      attention_block_infer(itmp_, iln_, L.attn, s, RopeTables{}, cache, l, batch, iqkv_, iy_);
      residual_forward(ix_, ix_, itmp_, size_t(R) * C);
      layernorm_forward(iln_, imean_, irstd_, ix_, L.ln2_w, L.ln2_b, R, C, eps);
      linear_forward(ifc_, iln_, L.fc_w, L.fc_q, L.fc_b, R, C, F, kF32);
      gelu_forward(ifc_, ifc_, size_t(R) * F);
      linear_forward(itmp_, ifc_, L.proj_w, L.proj_q, L.proj_b, R, F, C, kF32);
      residual_forward(ix_, ix_, itmp_, size_t(R) * C);
    }
    int M = 0;
    for (int r = 0; r < R; r++)
      if (batch.want_logits[r])
        std::memcpy(iln_ + size_t(M++) * C, ix_ + size_t(r) * C, sizeof(float) * C);
    layernorm_forward(itmp_, imean_, irstd_, iln_, lnf_w_, lnf_b_, M, C, eps);
    linear_forward(ilogits_, itmp_, wte_, head_q_, nullptr, M, C, c_.vocab_size, kF32);
    return ilogits_;
  }

 private:
  // Layer l's forward from a.res up to the MLP's activation a.fc_gelu: every activation its
  // backward reads. The projection and residual that finish the layer are the caller's.
  void layer_forward_acts(const Gpt2Layer& L, Gpt2LayerActs& a) {
    const int N = B_ * T_, C = c_.hidden_size, F = c_.intermediate_size;
    const MatmulPrecision prec = m_.precision();
    const float eps = c_.norm_eps;
    layernorm_forward(a.ln1, a.ln1_mean, a.ln1_rstd, a.res, L.ln1_w, L.ln1_b, N, C, eps,
                      a.attn.inp16);
    attention_block_forward(buf_.tmp, a.ln1, L.attn, a.attn, shape_, RopeTables{}, prec);
    residual_forward(a.res_mid, a.res, buf_.tmp, size_t(N) * C);
    layernorm_forward(a.ln2, a.ln2_mean, a.ln2_rstd, a.res_mid, L.ln2_w, L.ln2_b, N, C, eps,
                      a.ln2_16);
    if (a.ln2_16)
      matmul_forward_bf16_input(a.fc, a.ln2_16, L.fc_w, L.fc16, L.fc_b, N, C, F);
    else
      linear_forward(a.fc, a.ln2, L.fc_w, L.fc_q, L.fc_b, N, C, F, prec);
    gelu_forward(a.fc_gelu, a.fc, size_t(N) * F, a.act16);
  }

  // The bf16 copies of every matrix (registered on the first BF16 forward), from the weights now.
  void refresh_bf16() {
    const int C = c_.hidden_size, F = c_.intermediate_size;
    if (bf16_.empty()) {
      for (Gpt2Layer& L : layers_) {
        bf16_.add(L.attn.qkv_w, 3 * C, C, &L.attn.qkv16);
        bf16_.add(L.attn.o_w, C, C, &L.attn.o16);
        bf16_.add(L.fc_w, F, C, &L.fc16);
        bf16_.add(L.proj_w, C, F, &L.proj16);
      }
      bf16_.add(wte_, c_.vocab_size, C, &head16_);
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
    shape_ = gpt2_shape(c_, B, T);
    BufferPlan plan;
    buf_.plan(plan, c_, shape_, checkpointing, bf16);
    plan.allocate(buffer_);
    if (checkpointing) share_layer_acts(buf_.acts);
    const size_t N = size_t(B) * T, C = c_.hidden_size;
    if (bf16)
      acts16_.allocate(c_.num_layers, N, C, C, c_.intermediate_size, c_.intermediate_size,
                       checkpointing);
    else
      acts16_.clear();
    for (size_t l = 0; l < buf_.acts.size(); l++) {
      Gpt2LayerActs& a = buf_.acts[l];
      const Bf16Acts::Layer* a16 = bf16 ? &acts16_.layers[l] : nullptr;
      a.attn.inp16 = a16 ? a16->attn_in : nullptr;
      a.attn.ym16 = a16 ? a16->heads : nullptr;
      a.ln2_16 = a16 ? a16->mlp_in : nullptr;
      a.act16 = a16 ? a16->mlp_act : nullptr;
    }
  }

  void ensure_infer_buffers(int R) {
    if (R <= infer_rows_) return;
    const size_t C = c_.hidden_size, F = c_.intermediate_size;
    BufferPlan plan;
    plan.add(ix_, R * C);
    plan.add(iln_, R * C);
    plan.add(itmp_, R * C);
    plan.add(imean_, R);
    plan.add(irstd_, R);
    plan.add(iqkv_, R * 3 * C);
    plan.add(iy_, R * C);
    plan.add(ifc_, R * F);
    plan.add(ilogits_, R * size_t(c_.vocab_size));
    plan.allocate(infer_buffer_);
    infer_rows_ = R;
  }

  Model& m_;
  const ModelConfig& c_;
  std::vector<Gpt2Layer> layers_;
  int infer_rows_ = 0;
  FloatBuffer infer_buffer_;
  float *ix_, *iln_, *itmp_, *imean_, *irstd_, *iqkv_, *iy_, *ifc_, *ilogits_;
  const float *wte_, *wpe_, *lnf_w_, *lnf_b_;
  const QMatrix* head_q_ = nullptr;
  QMatrixSet qmats_;  // set_weight_type's copies
  Bf16Copies bf16_;   // BF16 forward/backward's copies
  Bf16Weight head16_;
  static constexpr MatmulPrecision kF32 = MatmulPrecision::F32;
  float *dwte_, *dwpe_, *dlnf_w_, *dlnf_b_;

  int B_ = 0, T_ = 0;
  bool checkpointing_ = false;  // the layout of the last forward's buffers
  AttentionShape shape_{};
  FloatBuffer buffer_;
  Gpt2Buffers buf_{};
  bool bf16_acts_ = false;  // acts16_ allocated (the last forward ran at BF16)
  Bf16Acts acts16_;
  std::vector<int32_t> ids_;
};

}  // namespace

std::unique_ptr<ArchImpl> make_gpt2(Model& model) { return std::make_unique<Gpt2>(model); }

}  // namespace distill
