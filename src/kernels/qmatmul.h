// Linear layers with low-precision weights, for inference: a teacher held in bf16, f16 or q8_0
// moves 2-3.8x fewer bytes per decode step than in f32, and a decode step is bound by streaming
// the weights (see matmul_rows.cpp).
//
// Storage (QMatrix, nn.Linear layout: rows = output features, cols = input features):
//   f32   the caller's matrix, not copied (qmatmul_forward is then matmul_forward)
//   bf16  uint16 per weight, round-to-nearest-even of the f32 value
//   f16   IEEE half per weight, round-to-nearest-even
//   q8_0  blocks of 32 weights along a row: int8 q = round(w / d), d = max|w| / 127 stored as f32
//         (GGUF's q8_0 stores d as f16: the same values, as f16 -> f32 is exact). Rows are
//         padded with zeros to a multiple of 32.
//
// Kernels (qmatmul.cpp), chosen at run time among those the build and the CPU have:
//   decode, M <= 16 rows: each weight row streamed once for all rows of x (as matmul_rows.cpp),
//     bf16 with AVX512-BF16 dot products (x rounded to bf16, as llama.cpp's bf16 dot does),
//     f16 and bf16 widened to f32 and fused-multiply-added, q8_0 against x quantized to q8_0
//     per 32-block with AVX512-VNNI (or AVX2 maddubs) integer dot products;
//   prompt processing, M > 16: bf16 through oneDNN's bf16 matmul on the stored weights, q8_0
//     through the same matmul on its weights widened to bf16 for the call (AVX512-BF16 CPUs;
//     others run the row kernels); f16 the row kernels over tiles of 64 weight rows, which stay
//     in L2 across the rows.
// Each output element is summed in one fixed order whatever M (up to 16) or the thread count, so a
// sequence decoded alone or in a batch gets bit-identical logits, as in f32.
#pragma once
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <vector>

#include "kernels/kernels.h"

namespace distill {

enum class WeightType { F32, BF16, F16, Q8_0 };

const char* weight_type_name(WeightType type);  // "f32", "bf16", "f16", "q8_0"
// Parses those names; throws an Error listing them for anything else.
WeightType parse_weight_type(const std::string& name);
// Bytes per weight of a (rows, cols) matrix in `type`, scales included.
double weight_type_bytes_per_weight(WeightType type);

// The instruction set the low-precision kernels use. Auto resolves to the best one the build and
// the CPU support; tests force the others to check that every fallback gives the same answer.
enum class KernelIsa { Auto, Avx512, Avx2, Scalar };
const char* kernel_isa_name(KernelIsa isa);
// Process-wide; a request the build or CPU cannot honour falls back to the next lower one.
void set_kernel_isa(KernelIsa isa);
KernelIsa kernel_isa();  // the resolved choice (never Auto)
// The special units the kernels use on this CPU: "avx512_bf16", "avx512_vnni", "f16c".
bool cpu_has(const char* feature);

class QMatrix {
 public:
  QMatrix() = default;
  // Quantizes w (rows, cols). For F32 the matrix is referenced, not copied: it must outlive this.
  QMatrix(const float* w, int rows, int cols, WeightType type);

  WeightType type() const { return type_; }
  int rows() const { return rows_; }
  int cols() const { return cols_; }
  int ld() const { return ld_; }  // row stride in elements (q8_0: cols rounded up to 32)
  size_t bytes() const;           // storage (f32: the referenced matrix's)

  const float* f32() const { return f32_; }
  const float* source() const { return source_; }  // the f32 matrix it was made from
  const uint16_t* u16() const { return reinterpret_cast<const uint16_t*>(data_.get()); }
  const int8_t* qs() const { return reinterpret_cast<const int8_t*>(data_.get()); }
  const float* scales() const { return scales_; }  // q8_0: (rows, ld / 32)

  // Row r back in f32 (cols floats): what the kernels multiply with.
  void dequantize_row(int r, float* out) const;

 private:
  struct Free {
    void operator()(uint8_t* p) const { std::free(p); }
  };
  WeightType type_ = WeightType::F32;
  int rows_ = 0, cols_ = 0, ld_ = 0;
  const float* f32_ = nullptr;
  const float* source_ = nullptr;
  std::unique_ptr<uint8_t[], Free> data_;
  const float* scales_ = nullptr;  // inside data_, after the int8 weights
};

// The low-precision copies of a model's linear layers (ArchImpl::set_weight_type), in one type.
class QMatrixSet {
 public:
  // Drops the copies; the next add()s make them in `type`.
  void reset(WeightType type) {
    type_ = type;
    owned_.clear();
  }
  // A copy of w (rows, cols) in the set's type, or null for f32 (the layer multiplies with w).
  const QMatrix* add(const float* w, int rows, int cols) {
    if (type_ == WeightType::F32) return nullptr;
    owned_.push_back(std::make_unique<QMatrix>(w, rows, cols, type_));
    return owned_.back().get();
  }
  std::vector<const QMatrix*> all() const {
    std::vector<const QMatrix*> out;
    for (const auto& q : owned_) out.push_back(q.get());
    return out;
  }

 private:
  WeightType type_ = WeightType::F32;
  std::vector<std::unique_ptr<QMatrix>> owned_;
};

// out (M, w.rows()) = inp (M, w.cols()) @ w^T + bias (bias (w.rows()) may be null).
void qmatmul_forward(float* out, const float* inp, const QMatrix& w, const float* bias, int M);

// A linear layer of an architecture's forward: through `q` when it holds low-precision weights,
// else the f32 matmul_forward at `prec` (training and f32 inference; weight16, inp16 as there).
inline void linear_forward(float* out, const float* inp, const float* weight, const QMatrix* q,
                           const float* bias, int N, int IC, int OC, MatmulPrecision prec,
                           Bf16Weight weight16 = {}, uint16_t* inp16 = nullptr) {
  if (q && q->type() != WeightType::F32)
    qmatmul_forward(out, inp, *q, bias, N);
  else
    matmul_forward(out, inp, weight, bias, N, IC, OC, prec, weight16, inp16);
}

// bf16 x bf16 -> f32 matmul through oneDNN with the weights already in bf16:
// out (N,OC) = bf16(inp) (N,IC) @ w^T. (matmul.cpp)
void gemm_bf16_weights(float* out, const float* inp, const uint16_t* w, int N, int IC, int OC);

}  // namespace distill
