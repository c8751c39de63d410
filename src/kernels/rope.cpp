// Rotary position embedding (HF "rotate_half" convention), with linear and llama3 scaling.
#include <cmath>
#include <numbers>

#include "core/error.h"
#include "kernels/kernels.h"

namespace distill {

// inv_freq (HD/2) = theta^(-2i/HD), adjusted as transformers' rope_init_fns do
// (_compute_linear_scaling_rope_parameters, _compute_llama3_parameters). Computed in double and
// stored as float.
void rope_inv_freq(float* inv_freq, int HD, float theta, const RopeScaling& scaling) {
  if (HD <= 0 || HD % 2 != 0) throw Error("[rope_inv_freq] head_dim must be even and > 0, got {}", HD);
  if (!(theta > 0.0f)) throw Error("[rope_inv_freq] rope_theta must be > 0, got {}", theta);
  using Type = RopeScaling::Type;
  if (scaling.type != Type::None && !(scaling.factor > 0.0f))
    throw Error("[rope_inv_freq] rope_scaling.factor must be > 0, got {}", scaling.factor);
  if (scaling.type == Type::Llama3 &&
      (scaling.original_max_position <= 0 || !(scaling.low_freq_factor > 0.0f) ||
       !(scaling.high_freq_factor > scaling.low_freq_factor)))
    throw Error(
        "[rope_inv_freq] llama3 scaling needs original_max_position_embeddings > 0 and "
        "high_freq_factor > low_freq_factor > 0, got {}, {}, {}",
        scaling.original_max_position, scaling.high_freq_factor, scaling.low_freq_factor);
  const double factor = scaling.factor;
  const double old_ctx = scaling.original_max_position;
  const double lo = scaling.low_freq_factor, hi = scaling.high_freq_factor;
  const double low_freq_wavelen = old_ctx / lo, high_freq_wavelen = old_ctx / hi;
  for (int i = 0; i < HD / 2; ++i) {
    double f = 1.0 / std::pow(double(theta), double(2 * i) / double(HD));
    if (scaling.type == Type::Linear) {
      f /= factor;
    } else if (scaling.type == Type::Llama3) {
      const double wavelen = 2.0 * std::numbers::pi / f;
      if (wavelen > low_freq_wavelen) {
        f /= factor;  // low frequencies: fully interpolated
      } else if (!(wavelen < high_freq_wavelen)) {
        // medium frequencies: blend between interpolated and original
        const double smooth = (old_ctx / wavelen - lo) / (hi - lo);
        f = (1.0 - smooth) * f / factor + smooth * f;
      }  // high frequencies: unchanged
    }
    inv_freq[i] = float(f);
  }
}

// cos, sin (T,HD/2) for positions pos0 .. pos0+T-1. The angle is formed in fp32 as transformers
// does (inv_freq.float() @ position_ids.float()), so long positions round the same way; cos/sin of
// that fp32 angle are evaluated in double and rounded once.
void rope_table(float* cos, float* sin, const float* inv_freq, int T, int HD, int pos0) {
  const int half = HD / 2;
#pragma omp parallel for schedule(static)
  for (int t = 0; t < T; ++t) {
    const float pos = float(pos0 + t);
    for (int i = 0; i < half; ++i) {
      const float angle = pos * inv_freq[i];
      cos[long(t) * half + i] = float(std::cos(double(angle)));
      sin[long(t) * half + i] = float(std::sin(double(angle)));
    }
  }
}

// x (B,H,T,HD) in place: for i < HD/2 with (c, s) = table[t][i],
//   x[i] <- x[i] c - x[i+HD/2] s,  x[i+HD/2] <- x[i+HD/2] c + x[i] s.
void rope_forward(float* x, const float* cos, const float* sin, int B, int H, int T, int HD) {
  DISTILL_CHECK(HD % 2 == 0);
  const int half = HD / 2;
  const long rows = long(B) * H * T;
  parallel_for_if(rows, size_t(rows) * HD > kParallelMin, [&](long r) {
    float* a = x + r * HD;
    float* b = a + half;
    const float* c = cos + (r % T) * half;
    const float* s = sin + (r % T) * half;
#pragma omp simd
    for (int i = 0; i < half; ++i) {
      const float x1 = a[i], x2 = b[i];
      a[i] = x1 * c[i] - x2 * s[i];
      b[i] = x2 * c[i] + x1 * s[i];
    }
  });
}

// dx (B,H,T,HD) in place with the transposed rotation (angle -> -angle).
void rope_backward(float* dx, const float* cos, const float* sin, int B, int H, int T, int HD) {
  DISTILL_CHECK(HD % 2 == 0);
  const int half = HD / 2;
  const long rows = long(B) * H * T;
#pragma omp parallel for schedule(static)
  for (long r = 0; r < rows; ++r) {
    float* a = dx + r * HD;
    float* b = a + half;
    const float* c = cos + (r % T) * half;
    const float* s = sin + (r % T) * half;
#pragma omp simd
    for (int i = 0; i < half; ++i) {
      const float d1 = a[i], d2 = b[i];
      a[i] = d1 * c[i] + d2 * s[i];
      b[i] = d2 * c[i] - d1 * s[i];
    }
  }
}

}  // namespace distill
