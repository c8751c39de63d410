// Reference RoPE: the transformers formulas written out one frequency at a time.
#include <cmath>
#include <numbers>

#include "kernels/ref/ref.h"

namespace distill::ref {

// HF _compute_default_rope_parameters, then _compute_linear_scaling_rope_parameters
// (inv_freq / factor) or _compute_llama3_parameters (below), in double.
void rope_inv_freq(float* inv_freq, int HD, float theta, const RopeScaling& scaling) {
  for (int i = 0; i < HD / 2; ++i) {
    const double base = 1.0 / std::pow(double(theta), double(2 * i) / HD);
    double f = base;
    if (scaling.type == RopeScaling::Type::Linear) f = base / scaling.factor;
    if (scaling.type == RopeScaling::Type::Llama3) {
      const double old_ctx = scaling.original_max_position;
      const double low_freq_wavelen = old_ctx / scaling.low_freq_factor;
      const double high_freq_wavelen = old_ctx / scaling.high_freq_factor;
      const double wavelen = 2.0 * std::numbers::pi / base;
      const double scaled = wavelen > low_freq_wavelen ? base / scaling.factor : base;
      const double smooth = (old_ctx / wavelen - scaling.low_freq_factor) /
                            (scaling.high_freq_factor - scaling.low_freq_factor);
      const double smoothed = (1.0 - smooth) * scaled / scaling.factor + smooth * scaled;
      const bool medium = !(wavelen < high_freq_wavelen) && !(wavelen > low_freq_wavelen);
      f = medium ? smoothed : scaled;
    }
    inv_freq[i] = float(f);
  }
}

// Angle = float(position) * inv_freq in fp32, as transformers forms it; cos/sin in double.
void rope_table(float* cos, float* sin, const float* inv_freq, int T, int HD, int pos0) {
  for (int t = 0; t < T; ++t)
    for (int i = 0; i < HD / 2; ++i) {
      const float angle = float(pos0 + t) * inv_freq[i];
      cos[long(t) * (HD / 2) + i] = float(std::cos(double(angle)));
      sin[long(t) * (HD / 2) + i] = float(std::sin(double(angle)));
    }
}

// x (B,H,T,HD): x * cos + rotate_half(x) * sin, rotate_half(x) = [-x2, x1], cos/sin repeated
// over both halves (HF apply_rotary_pos_emb).
void rope_forward(float* x, const float* cos, const float* sin, int B, int H, int T, int HD) {
  const int half = HD / 2;
  for (long r = 0; r < long(B) * H * T; ++r) {
    const long t = r % T;
    float* row = x + r * HD;
    for (int i = 0; i < half; ++i) {
      const double c = cos[t * half + i], s = sin[t * half + i];
      const double x1 = row[i], x2 = row[i + half];
      row[i] = float(x1 * c - x2 * s);
      row[i + half] = float(x2 * c + x1 * s);
    }
  }
}

// The transpose of the 2x2 rotation [[c, -s], [s, c]] is [[c, s], [-s, c]].
void rope_backward(float* dx, const float* cos, const float* sin, int B, int H, int T, int HD) {
  const int half = HD / 2;
  for (long r = 0; r < long(B) * H * T; ++r) {
    const long t = r % T;
    float* row = dx + r * HD;
    for (int i = 0; i < half; ++i) {
      const double c = cos[t * half + i], s = sin[t * half + i];
      const double d1 = row[i], d2 = row[i + half];
      row[i] = float(c * d1 + s * d2);
      row[i + half] = float(-s * d1 + c * d2);
    }
  }
}

}  // namespace distill::ref
