// AdamW (Loshchilov & Hutter 2019, decoupled weight decay) with the update order of
// torch.optim.AdamW, and clipping by global gradient norm (torch.nn.utils.clip_grad_norm_).
#pragma once
#include <cstdint>
#include <vector>

#include "core/arena.h"
#include "model/model.h"

namespace distill {

struct AdamWOptions {
  float beta1 = 0.9f;
  float beta2 = 0.95f;
  float eps = 1e-8f;
  float weight_decay = 0.1f;  // applied only to ParamSpec::decay tensors
};

class AdamW {
 public:
  AdamW(const Model& model, const AdamWOptions& options);
  // One update with learning rate `lr`; the step counter advances first (bias corrections use
  // t = 1 on the first call), as in PyTorch.
  // grad_scale multiplies every gradient as it is read (clip_scale's factor: clipping without
  // a pass that rewrites the gradients); the result is that of scaling them first.
  void step(Model& model, float lr, float grad_scale = 1.0f);
  // The same update of the elements in `ranges` (half-open, sorted) only: under MPI each rank
  // updates its shard and the parameters are all-gathered (core/dist.h). The moments outside
  // the ranges are left stale until gathered.
  void step(Model& model, float lr, const std::vector<std::pair<size_t, size_t>>& ranges,
            float grad_scale = 1.0f);
  int64_t steps_taken() const { return t_; }
  void set_steps_taken(int64_t t) { t_ = t; }
  FloatBuffer& m() { return m_; }  // first moments, same layout as the parameter arena
  FloatBuffer& v() { return v_; }  // second moments

 private:
  AdamWOptions opt_;
  FloatBuffer m_, v_;
  std::vector<uint8_t> decay_;  // per ParamSpec
  int64_t t_ = 0;
};

// The L2 norm of all gradients (accumulated in double, fixed order). Scales them by
// max_norm / (norm + 1e-6) when the norm exceeds max_norm (max_norm <= 0: no clipping).
// Returns the norm before clipping.
float clip_grad_norm(float* grads, size_t n, float max_norm);
// The same norm without scaling, and the factor clipping to max_norm applies to gradients of
// that norm (1 when none): clip_grad_norm is grads *= clip_scale(grad_norm(grads)).
float grad_norm(const float* grads, size_t n);
float clip_scale(float norm, float max_norm);

}  // namespace distill
