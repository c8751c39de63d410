// A transformer language model: its config, its parameters and gradients (one flat arena each, in
// the order of param_specs()), and the forward/backward passes of its architecture
// (model/gpt2.cpp, model/llama.cpp).
#pragma once
#include <cstdint>
#include <memory>
#include <string>
#include <unordered_map>
#include <vector>

#include "core/arena.h"
#include "kernels/qmatmul.h"
#include "model/config.h"

namespace distill {

// One parameter tensor. `shape` is the layout the kernels use; Hugging Face names it `name` and,
// when `hf_transposed` (GPT-2's Conv1D weights), stores it transposed.
struct ParamSpec {
  std::string name;            // Hugging Face tensor name, e.g. "model.layers.0.mlp.up_proj.weight"
  std::vector<int64_t> shape;  // our layout (rows, cols) or (n)
  bool hf_transposed = false;  // HF stores the (cols, rows) transpose
  bool decay = true;           // AdamW weight decay applies (matrices other than embeddings)
  size_t offset = 0;           // into the parameter / gradient arenas, in floats
  size_t numel = 0;
  std::vector<int64_t> hf_shape() const {
    return hf_transposed ? std::vector<int64_t>{shape[1], shape[0]} : shape;
  }
};

struct InferBatch;
struct KvCache;

// One layer's internal activations after a training forward without activation checkpointing
// (N = B*T rows): what pruning measures importance on and attention distillation compares.
struct LayerActivations {
  const float* attn_in = nullptr;    // (N,C) the attention sub-block's normed input
  const float* attention = nullptr;  // (B,NH,T,T) attention probabilities (causal)
  const float* heads = nullptr;      // (N,NH*HD) per-head attention outputs, before o_proj
  const float* mlp_in = nullptr;     // (N,C) the MLP's normed input
  const float* mlp_act = nullptr;    // (N,F) the down projection's input (after the activation)
};

// bf16 copies of the matrices a forward at MatmulPrecision::BF16 multiplies with, refreshed from
// the f32 master weights at each forward (the weights change only between forwards, in the
// optimizer): each matrix is rounded and packed once per step, in the two layouts its products
// read (Bf16Weight: the forward's, also used by the recomputation under checkpointing, and the
// backward's dinp), instead of in each product.
class Bf16Copies {
 public:
  bool empty() const { return sources_.empty(); }
  // Registers w (rows, cols); each refresh() packs it and stores its copies' addresses in *copy
  // (the layer's bf16 weights).
  void add(const float* w, int rows, int cols, Bf16Weight* copy);
  void refresh();  // (re)packs every registered matrix; allocates on the first call
  size_t bytes() const { return data_.size() * sizeof(float); }

 private:
  struct Source {
    const float* w;
    int rows, cols;
    size_t fwd, dinp;  // offsets of the two copies in data_, in uint16 elements
    Bf16Weight* copy;
  };
  std::vector<Source> sources_;
  size_t size_ = 0;  // uint16 elements in use
  FloatBuffer data_;
};

// The per-architecture forward/backward (see model/gpt2.cpp, model/llama.cpp).
class ArchImpl {
 public:
  virtual ~ArchImpl() = default;
  // ids (B,T) in [0,V). Returns logits (B,T,V), a buffer the caller may overwrite (e.g. with
  // dlogits in place) until the next forward.
  virtual float* forward(const int32_t* ids, int B, int T) = 0;
  // dlogits (B,T,V) of the last forward; accumulates into the gradient arena.
  virtual void backward(const float* dlogits) = 0;
  // Inference: runs the rows of `batch` against `cache` (see infer/kv_cache.h) and returns the
  // logits (M,V) of the M rows that want them, in row order; valid until the next call.
  virtual float* forward_rows(const InferBatch& batch, KvCache& cache) = 0;
  // Floats of the training buffers the last forward allocated (0 before any).
  virtual size_t activation_floats() const = 0;
  // Builds (or, for F32, drops) the low-precision copies of every linear layer's weights;
  // returns them (each knows its rows and cols; the f32 source is the parameter it copies).
  virtual std::vector<const QMatrix*> set_weight_type(WeightType type) = 0;
  // After forward(): the residual stream at layer boundary i, (B*T, C); see Model::hidden.
  virtual const float* hidden(int i) const = 0;
  // After forward() without checkpointing: layer l's activations.
  virtual LayerActivations layer_activations(int l) const = 0;
};

class Model {
 public:
  // A trainable model has a gradient arena; an inference-only one (load_model_dir: teachers,
  // serving, evaluation) has none, which saves 4 bytes per parameter: grads() and grad() are
  // null and backward() is an error.
  explicit Model(const ModelConfig& config, bool trainable = true);
  Model(const Model&) = delete;
  Model& operator=(const Model&) = delete;

  const ModelConfig& config() const { return config_; }
  const std::vector<ParamSpec>& param_specs() const { return specs_; }
  // The spec named `name`, or nullptr.
  const ParamSpec* find_param(const std::string& name) const;
  size_t num_params() const { return params_.size(); }
  float* params() { return params_.data(); }
  const float* params() const { return params_.data(); }
  bool trainable() const { return trainable_; }
  float* grads() { return trainable_ ? grads_.data() : nullptr; }
  float* param(const std::string& name);  // throws if unknown
  float* grad(const std::string& name);

  // GPT-2-style initialisation: N(0, 0.02) for matrices and embeddings, residual output
  // projections scaled by 1/sqrt(2L), norm weights 1, biases 0. Deterministic in `seed`.
  void init_weights(uint64_t seed);
  void zero_grad() { grads_.zero(); }  // no-op without gradients

  float* forward(const int32_t* ids, int B, int T);  // see ArchImpl::forward
  void backward(const float* dlogits);                 // see ArchImpl::backward

  // Hidden states of the last forward(): the residual stream at layer boundary i in
  // [0, num_layers], (B*T, C): 0 is the embeddings, i < L layer i's input, L the last layer's
  // output before the final norm. Valid until the next forward.
  const float* hidden(int i) const;
  // Layer l's activations of the last forward(), which must have run without checkpointing
  // (with it, only the last layer's are still there).
  LayerActivations layer_activations(int l) const;
  // Hidden-state distillation: the next backward() also adds d(loss)/d(hidden(i)) = dh (B*T, C)
  // to the residual-stream gradient at boundary i. dh must stay valid until that backward, which
  // consumes every registered gradient.
  void add_hidden_grad(int i, const float* dh);
  const float* hidden_grad(int i) const {  // registered for boundary i, or null
    return size_t(i) < hidden_grads_.size() ? hidden_grads_[i] : nullptr;
  }
  // Attention distillation: the next backward() also sends datt (B,NH,T,T), a gradient w.r.t.
  // layer l's attention probabilities (layer_activations(l).attention), through its softmax.
  // Consumed by that backward, like add_hidden_grad.
  void add_attention_grad(int l, const float* datt);
  const float* attention_grad(int l) const {  // registered for layer l, or null
    return size_t(l) < attention_grads_.size() ? attention_grads_[l] : nullptr;
  }
  float* forward_rows(const InferBatch& batch, KvCache& cache);  // see ArchImpl::forward_rows
  // A cache for `slots` sequences of up to max_len positions.
  std::unique_ptr<KvCache> make_cache(int slots, int max_len) const;

  // Inference with low-precision weights (kernels/qmatmul.h): every linear layer (attention,
  // MLP, the head) then multiplies with a bf16, f16 or q8_0 copy of its weights, in forward()
  // and forward_rows(); embeddings, norms and biases stay f32. Only for an inference-only model
  // (the copies are not refreshed by training). F32 drops the copies.
  // Unless keep_f32, the f32 values the copies replace are released (their memory pages given
  // back: a bf16 teacher then holds ~2 bytes per weight, not 6) and params() no longer holds
  // them: such a model can only run forward, not be saved or changed back.
  void set_weight_type(WeightType type, bool keep_f32 = false);
  bool f32_released() const { return released_floats_ > 0; }
  WeightType weight_type() const { return weight_type_; }
  // Bytes of the weights the forward streams: the linear layers in their type, the rest f32.
  size_t weight_bytes() const;

  MatmulPrecision precision() const { return precision_; }
  void set_precision(MatmulPrecision p) { precision_ = p; }

  // Activation (gradient) checkpointing: forward keeps only each layer's input (N*C floats per
  // layer) and one shared set of layer activations; backward recomputes each layer's forward from
  // its input into that set just before the layer's backward. Gradients are bit-identical to
  // those without it (same kernels, same order) for about one more forward of compute.
  // Takes effect at the next forward.
  bool checkpointing() const { return checkpointing_; }
  void set_checkpointing(bool on) { checkpointing_ = on; }
  // Floats of the training buffers (activations, logits, backward scratch) the last forward
  // allocated; training_buffer_floats() predicts it.
  size_t activation_floats() const { return impl_->activation_floats(); }

 private:
  ModelConfig config_;
  std::vector<ParamSpec> specs_;
  std::unordered_map<std::string, size_t> index_;
  FloatBuffer params_, grads_;
  MatmulPrecision precision_ = MatmulPrecision::F32;
  WeightType weight_type_ = WeightType::F32;
  size_t released_floats_ = 0;  // f32 parameter floats given back by set_weight_type
  size_t qweight_bytes_ = 0;    // bytes of the low-precision copies
  bool trainable_ = true;
  bool checkpointing_ = false;
  bool forwarded_ = false;                   // a training forward has run
  bool last_checkpointing_ = false;          // the last forward's checkpointing
  std::vector<const float*> hidden_grads_;   // per boundary, null: none (add_hidden_grad)
  std::vector<const float*> attention_grads_;  // per layer, null: none (add_attention_grad)
  std::unique_ptr<ArchImpl> impl_;
};

// Parameter lists in arena order (tensors a kernel uses together are adjacent: q/k/v, gate/up).
std::vector<ParamSpec> gpt2_param_specs(const ModelConfig& config);
std::vector<ParamSpec> llama_param_specs(const ModelConfig& config);
std::unique_ptr<ArchImpl> make_gpt2(Model& model);
std::unique_ptr<ArchImpl> make_llama(Model& model);

// The floats a forward/backward at (B,T) allocates for training (Model::activation_floats()),
// from the same buffer plan the architecture allocates with, without allocating; bf16: at
// MatmulPrecision::BF16 (an f32 gradient buffer the bf16 path does not use is left out).
size_t training_buffer_floats(const ModelConfig& config, int B, int T, bool checkpointing,
                              bool bf16 = false);
size_t gpt2_training_buffer_floats(const ModelConfig& config, int B, int T, bool checkpointing,
                                   bool bf16);
size_t llama_training_buffer_floats(const ModelConfig& config, int B, int T, bool checkpointing,
                                    bool bf16);

}  // namespace distill
