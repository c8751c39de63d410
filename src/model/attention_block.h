// The attention sub-block both architectures share: fused qkv projection, head split, optional
// per-head q/k RMSNorm (Qwen3), optional RoPE (llama family), causal GQA attention, head merge and
// output projection. The norms and residual adds around it belong to the architecture files.
#pragma once
#include <vector>

#include "core/arena.h"
#include "kernels/kernels.h"
#include "kernels/qmatmul.h"

namespace distill {

struct AttentionShape {
  int B, T, C, NH, NKV, HD;
  float qk_norm_eps;  // used when the weights have q_norm/k_norm
};

struct AttentionWeights {
  const float* qkv_w;   // (NH*HD + 2*NKV*HD, C): q rows, then k rows, then v rows
  const float* qkv_b;   // (NH*HD + 2*NKV*HD) or null
  const float* o_w;     // (C, NH*HD)
  const float* o_b;     // (C) or null
  const float* q_norm;  // (HD) or null
  const float* k_norm;  // (HD) or null
  // Low-precision copies of qkv_w and o_w for inference (Model::set_weight_type), or null: f32.
  const QMatrix* qkv_q = nullptr;
  const QMatrix* o_q = nullptr;
  // Packed bf16 copies of qkv_w and o_w for a forward/backward at MatmulPrecision::BF16
  // (Bf16Copies), or none: rounded in each product.
  Bf16Weight qkv16;
  Bf16Weight o16;
};

struct AttentionGrads {
  float *qkv_w, *qkv_b, *o_w, *o_b, *q_norm, *k_norm;  // same shapes; null where weights are
};

// What forward keeps for backward, per layer.
struct AttentionActs {
  float* qkv;     // (B,T,QKV)
  float* q;       // (B,NH,T,HD) after split (before q_norm; after RoPE when there is no norm)
  float* k;       // (B,NKV,T,HD)
  float* v;       // (B,NKV,T,HD)
  float* qn;      // (B,NH,T,HD) after q_norm and RoPE (null without qk norm)
  float* kn;      // (B,NKV,T,HD)
  float* q_rstd;  // (B*NH*T)
  float* k_rstd;  // (B*NKV*T)
  float* att;     // (B,NH,T,T)
  float* y;       // (B,NH,T,HD) attention output per head
  float* ym;      // (B,T,NH*HD) merged heads
  // At MatmulPrecision::BF16, the block input and ym in bf16 (Bf16Acts), or null: the caller's
  // norm writes inp16 before attention_block_forward, which writes ym16; the forward's and the
  // backward's matmuls read them.
  uint16_t* inp16 = nullptr;
  uint16_t* ym16 = nullptr;
  void plan(BufferPlan& plan, const AttentionShape& s, bool qk_norm);
};

// bf16 copies of each layer's matmul inputs for a forward/backward at MatmulPrecision::BF16:
// the forward's matmuls round their input into them (matmul_forward's inp16) and the backward's
// dweight products read them instead of rounding the fp32 activations again.
struct Bf16Acts {
  struct Layer {
    uint16_t *attn_in, *heads, *mlp_in, *mlp_act;  // (N,C), (N,NH*HD), (N,C), (N,F)
  };
  std::vector<Layer> layers;
  uint16_t* final_norm = nullptr;  // (N,C): the LM head's input
  // (N,dmlp): the backward's gradient of the MLP activation's input, in bf16 for the matmul before
  // it (gelu_backward_bf16, swiglu_backward_bf16), shared by the layers.
  uint16_t* dmlp = nullptr;
  // One set per layer, or one set all layers share when `shared` (activation checkpointing:
  // a layer's are rewritten when its forward is recomputed, as its fp32 activations are).
  void allocate(int num_layers, size_t N, size_t C, size_t heads, size_t F, size_t dmlp,
                bool shared);
  void clear();
  size_t bytes() const { return storage.size() * sizeof(uint16_t); }

 private:
  std::vector<uint16_t> storage;
};

// Scratch for backward, shared by all layers.
struct AttentionScratch {
  float *dqkv, *dq, *dk, *dv, *dqn, *dkn, *datt, *dy, *dym;
  void plan(BufferPlan& plan, const AttentionShape& s, bool qk_norm);
};

// Activation checkpointing: every layer's activations but its input (`res`, the residual stream)
// point at layer 0's, the one set the layers share (model/gpt2.cpp, model/llama.cpp).
template <typename LayerActs>
void share_layer_acts(std::vector<LayerActs>& acts) {
  for (size_t l = 1; l < acts.size(); l++) {
    float* res = acts[l].res;
    acts[l] = acts[0];
    acts[l].res = res;
  }
}

// Rotary tables (T, HD/2) or null for no RoPE (GPT-2).
struct RopeTables {
  const float* cos = nullptr;
  const float* sin = nullptr;
};

// out (B,T,C) = attention block applied to inp (B,T,C).
void attention_block_forward(float* out, const float* inp, const AttentionWeights& w,
                             AttentionActs& a, const AttentionShape& s, const RopeTables& rope,
                             MatmulPrecision prec);
// dinp (B,T,C) = d(block)/d(inp) applied to dout (B,T,C) (overwritten); parameter gradients
// accumulate.
// extra_datt (B,NH,T,T), when given, is a further gradient w.r.t. the attention probabilities
// a.att (attention distillation), sent through the softmax to q and k as well.
void attention_block_backward(float* dinp, const float* dout, const float* inp,
                              const AttentionWeights& w, const AttentionGrads& g,
                              const AttentionActs& a, AttentionScratch& sc,
                              const AttentionShape& s, const RopeTables& rope,
                              MatmulPrecision prec, const float* extra_datt = nullptr);

// dq (B,NH,T,HD) += and dk (B,NKV,T,HD) += what a gradient datt (B,NH,T,T) w.r.t. the causal
// attention probabilities att = softmax(q k^T / sqrt(HD)) sends to q and k (GQA: query head h
// uses kv head h / (NH/NKV)). Plain loops: used by attention distillation only.
void attention_probs_backward(float* dq, float* dk, const float* datt, const float* att,
                              const float* q, const float* k, int B, int T, int NH, int NKV,
                              int HD);

// Incremental attention over a KV cache for the rows of an InferBatch (inference only).
// inp (R,C) the normed hidden rows; out (R,C). qkv_scratch (R,QKV) and y_scratch (R,NH*HD) are
// scratch. rope: tables for positions 0..max_len-1, or null tables for none. The rows' keys and
// values are written into the cache at their positions before any row attends.
struct KvCache;
struct InferBatch;
void attention_block_infer(float* out, const float* inp, const AttentionWeights& w,
                           const AttentionShape& s, const RopeTables& rope, KvCache& cache,
                           int layer, const InferBatch& batch, float* qkv_scratch,
                           float* y_scratch);

}  // namespace distill
