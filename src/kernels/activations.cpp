// Activations: GELU (tanh approximation) and SwiGLU, forward and backward.
#include <bit>
#include <cstdint>

#include <algorithm>

#include "kernels/kernels.h"
#include "kernels/vecmath.h"

namespace distill {
namespace {

// exp(x) to ~1 ulp, written so GCC vectorizes it inside the loops below: glibc's vector expf is
// only called under -ffast-math, which we do not use, and a scalar expf per element would make
// these memory-bound kernels compute-bound. x = k ln2 + r with |r| <= ln2/2 (ln2 split in two
// for an exact k*ln2), exp(r) by its degree-7 Taylor polynomial (truncation < 6e-9 relative), and
// 2^k built in the exponent bits. Inputs are clamped to [-87, 88] so 2^k stays a normal float;
// callers only use exp inside 1/(1+exp(.)), where the clamp changes nothing at fp32 precision.
inline float exp_fast(float x) {
  x = x < -87.0f ? -87.0f : (x > 88.0f ? 88.0f : x);
  // k = round(x / ln2): adding and subtracting 1.5 * 2^23 rounds to an integer (std::floor and
  // std::nearbyint are not vectorized by GCC 12 without -ffast-math).
  const float k = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
  const float r = (x - k * 0.693359375f) - k * -2.12194440e-4f;
  float p = 1.0f / 5040.0f;
  p = p * r + 1.0f / 720.0f;
  p = p * r + 1.0f / 120.0f;
  p = p * r + 1.0f / 24.0f;
  p = p * r + 1.0f / 6.0f;
  p = p * r + 0.5f;
  p = p * r + 1.0f;
  p = p * r + 1.0f;
  const float scale = std::bit_cast<float>((int32_t(k) + 127) << 23);
  return p * scale;
}

// 0.5 (1 + tanh(u)) == sigmoid(2u): one exp and no cancellation near tanh(u) = -1.
constexpr float kGeluK = 0.7978845608028654f;  // sqrt(2/pi)
constexpr float kGeluA = 0.044715f;

}  // namespace

// out (n) = 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) = x * sigmoid(2u).
void gelu_forward(float* out, const float* inp, size_t n, uint16_t* out16) {
  // Chunks that stay in L1 between the GELU and the rounding of its output. The inner loop is a
  // plain `omp simd` loop: under `parallel for simd` GCC 12 guards its vector loop with an
  // overlap check of out and inp and runs the in-place call (the decode path's) scalar, 6x slower.
  constexpr size_t kChunk = 2048;
  const size_t chunks = (n + kChunk - 1) / kChunk;
  parallel_for_if(chunks, n > kParallelMin, [&](size_t c) {
    const size_t begin = c * kChunk, end = std::min(n, begin + kChunk);
#pragma omp simd
    for (size_t i = begin; i < end; ++i) {
      const float x = inp[i];
      const float u = kGeluK * (x + kGeluA * x * x * x);
      out[i] = x / (1.0f + exp_fast(-2.0f * u));
    }
    if (out16) bf16_round_row(out16 + begin, out + begin, end - begin);
  });
}

// dinp (n) += dout * d/dx [x s] with s = sigmoid(2u) = 1/(1+e), e = exp(-2u):
// s + x * 2 s (1 - s) * du/dx, du/dx = sqrt(2/pi) (1 + 3 * 0.044715 x^2).
namespace {
// dinp = (overwrite) or += v, for the backward kernels' optional overwrite.
template <bool kOverwrite>
inline void put(float& dst, float v) {
  if constexpr (kOverwrite)
    dst = v;
  else
    dst += v;
}

// dout * d/dx gelu(x).
inline float gelu_grad(float x, float dout) {
  const float u = kGeluK * (x + kGeluA * x * x * x);
  const float e = exp_fast(-2.0f * u);
  const float s = 1.0f / (1.0f + e);
  const float du = kGeluK * (1.0f + 3.0f * kGeluA * x * x);
  // 1 - s = e s (<= 1) avoids the cancellation in 1 - s where s rounds to 1 (large x), and is
  // formed first so that a clamped e ~ 1e38 cannot overflow (large negative x).
  const float one_minus_s = e * s;
  return dout * (s + 2.0f * x * one_minus_s * s * du);
}

template <bool kOverwrite>
void gelu_backward_impl(float* dinp, const float* inp, const float* dout, size_t n) {
#pragma omp parallel for simd schedule(static)
  for (size_t i = 0; i < n; ++i) put<kOverwrite>(dinp[i], gelu_grad(inp[i], dout[i]));
}
}  // namespace

void gelu_backward(float* dinp, const float* inp, const float* dout, size_t n, bool overwrite) {
  if (overwrite)
    gelu_backward_impl<true>(dinp, inp, dout, n);
  else
    gelu_backward_impl<false>(dinp, inp, dout, n);
}

void gelu_backward_bf16(uint16_t* dinp16, float* dbias, const float* inp, const float* dout,
                        int N, int F) {
  sum_rows_by_thread(dbias, N, F, [&](int n, float* acc) {
    const size_t row = size_t(n) * F;
#pragma omp simd
    for (int i = 0; i < F; ++i) {
      const float g = gelu_grad(inp[row + i], dout[row + i]);
      acc[i] += g;
      dinp16[row + i] = bf16_round(g);
    }
  });
}

// gate_up (N,2F) rows [gate | up]; out (N,F) = silu(gate) * up, silu(g) = g / (1 + exp(-g)).
void swiglu_forward(float* out, const float* gate_up, int N, int F, uint16_t* out16) {
  parallel_for_if(N, size_t(N) * F > kParallelMin, [&](int n) {
    const float* g = gate_up + long(n) * 2 * F;
    const float* u = g + F;
    float* o = out + long(n) * F;
#pragma omp simd
    for (int i = 0; i < F; ++i) o[i] = g[i] / (1.0f + exp_fast(-g[i])) * u[i];
    if (out16) bf16_round_row(out16 + long(n) * F, o, F);
  });
}

// dgate += dout * up * silu'(g), silu'(g) = s (1 + g (1 - s)) with s = sigmoid(g) = 1/(1+e),
// e = exp(-g); dup += dout * silu(g). dgate_up (N,2F) laid out as gate_up.
namespace {
// The gradients of silu(g) * u given dout: dg, du.
inline void swiglu_grad(float g, float u, float d, float& dg, float& du) {
  const float e = exp_fast(-g);
  const float s = 1.0f / (1.0f + e);
  const float one_minus_s = e * s;  // see gelu_grad
  dg = d * u * s * (1.0f + g * one_minus_s);
  du = d * g * s;
}

// Row n of the SwiGLU backward: store(i, dgate, dup) for each of its F elements.
template <class Store>
inline void swiglu_grad_row(const float* dout, const float* gate_up, long n, int F,
                            const Store& store) {
  const float* g = gate_up + n * 2 * F;
  const float* u = g + F;
  const float* d = dout + n * F;
#pragma omp simd
  for (int i = 0; i < F; ++i) {
    float a, b;
    swiglu_grad(g[i], u[i], d[i], a, b);
    store(i, a, b);
  }
}

template <bool kOverwrite>
void swiglu_backward_impl(float* dgate_up, const float* dout, const float* gate_up, int N, int F) {
#pragma omp parallel for schedule(static)
  for (int n = 0; n < N; ++n) {
    float* dg = dgate_up + long(n) * 2 * F;
    swiglu_grad_row(dout, gate_up, n, F, [&](int i, float a, float b) {
      put<kOverwrite>(dg[i], a);
      put<kOverwrite>(dg[F + i], b);
    });
  }
}
}  // namespace

void swiglu_backward(float* dgate_up, const float* dout, const float* gate_up, int N, int F,
                     bool overwrite) {
  if (overwrite)
    swiglu_backward_impl<true>(dgate_up, dout, gate_up, N, F);
  else
    swiglu_backward_impl<false>(dgate_up, dout, gate_up, N, F);
}

void swiglu_backward_bf16(uint16_t* dgate_up16, float* dbias, const float* dout,
                          const float* gate_up, int N, int F) {
  sum_rows_by_thread(dbias, N, 2 * F, [&](int n, float* acc) {
    uint16_t* dg = dgate_up16 + long(n) * 2 * F;
    swiglu_grad_row(dout, gate_up, n, F, [&](int i, float a, float b) {
      acc[i] += a;
      acc[F + i] += b;
      dg[i] = bf16_round(a);
      dg[F + i] = bf16_round(b);
    });
  });
}

}  // namespace distill
