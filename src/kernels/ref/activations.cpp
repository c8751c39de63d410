// Reference activations, evaluated in double with the textbook formulas (tanh, exp).
#include <cmath>
#include <numbers>

#include "kernels/ref/ref.h"

namespace distill::ref {
namespace {
const double kSqrt2OverPi = std::sqrt(2.0 / std::numbers::pi);
double sigmoid(double x) { return 1.0 / (1.0 + std::exp(-x)); }
}  // namespace

// gelu(x) = 0.5 x (1 + tanh(u)), u = sqrt(2/pi) (x + 0.044715 x^3).
void gelu_forward(float* out, const float* inp, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double x = inp[i];
    const double u = kSqrt2OverPi * (x + 0.044715 * x * x * x);
    out[i] = float(0.5 * x * (1.0 + std::tanh(u)));
  }
}

// gelu'(x) = 0.5 (1 + tanh u) + 0.5 x (1 - tanh^2 u) du/dx, du/dx = sqrt(2/pi)(1 + 3*0.044715 x^2).
void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n) {
  for (size_t i = 0; i < n; ++i) {
    const double x = inp[i];
    const double u = kSqrt2OverPi * (x + 0.044715 * x * x * x);
    const double th = std::tanh(u);
    const double du = kSqrt2OverPi * (1.0 + 3.0 * 0.044715 * x * x);
    dinp[i] += float(dout[i] * (0.5 * (1.0 + th) + 0.5 * x * (1.0 - th * th) * du));
  }
}

// gate_up (N,2F) = [gate | up]; out (N,F) = silu(gate) up, silu(g) = g sigmoid(g).
void swiglu_forward(float* out, const float* gate_up, int N, int F) {
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < F; ++i) {
      const double g = gate_up[long(n) * 2 * F + i], u = gate_up[long(n) * 2 * F + F + i];
      out[long(n) * F + i] = float(g * sigmoid(g) * u);
    }
}

// silu'(g) = sigmoid(g) + g sigmoid(g) (1 - sigmoid(g)).
void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int N, int F) {
  for (int n = 0; n < N; ++n)
    for (int i = 0; i < F; ++i) {
      const double g = gate_up[long(n) * 2 * F + i], u = gate_up[long(n) * 2 * F + F + i];
      const double d = dout[long(n) * F + i], s = sigmoid(g);
      dgate_up[long(n) * 2 * F + i] += float(d * u * (s + g * s * (1.0 - s)));
      dgate_up[long(n) * 2 * F + F + i] += float(d * g * s);
    }
}

}  // namespace distill::ref
