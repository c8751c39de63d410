// Matrix multiplies through oneDNN's matmul primitive (fp32, or bf16 inputs with fp32
// accumulation). ../shared/PEERS.md: oneDNN reaches ~190 GFLOP/s per core here in fp32 and ~380
// in bf16, where Debian's OpenBLAS is held to AVX2 kernels by OPENBLAS_CORETYPE.
//
// Primitives are created once per (shape, strides, precision, beta) and cached per thread:
// creation costs ~100 us, execution of a 2048x384x384 product ~1 ms. The cache is thread_local
// because attention calls gemm from inside an OpenMP region (there oneDNN runs single-threaded).
#include <omp.h>

#include <cstdint>
#include <cstring>
#include <memory>
#include <oneapi/dnnl/dnnl.hpp>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "kernels/kernels.h"
#include "kernels/qmatmul.h"
#include "kernels/vecmath.h"

namespace distill {
namespace {

struct GemmKey {
  bool trans_a, trans_b, bf16, accumulate;
  int M, N, K, lda, ldb, ldc;
  float alpha;
  bool bias = false;  // C += bias (N) broadcast over rows, in the GEMM's epilogue
  // B in the blocked layout oneDNN picks for this product (GemmPrimitive::b_md); trans_b and ldb
  // are then unused (false, 0).
  bool packed_b = false;
  bool operator==(const GemmKey&) const = default;
};

struct GemmKeyHash {
  size_t operator()(const GemmKey& k) const {
    size_t h = (size_t(k.packed_b) << 5) | (size_t(k.bias) << 4) | (size_t(k.trans_a) << 3) |
               (size_t(k.trans_b) << 2) | (size_t(k.bf16) << 1) | size_t(k.accumulate);
    for (int v : {k.M, k.N, k.K, k.lda, k.ldb, k.ldc}) h = h * 1000003u ^ size_t(v);
    uint32_t a;
    std::memcpy(&a, &k.alpha, 4);
    return h * 31u ^ a;
  }
};

struct GemmPrimitive {
  dnnl::matmul prim;
  dnnl::memory::desc a_md, b_md, c_md, bias_md;
};

dnnl::engine& cpu_engine() {
  static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
  return engine;
}

const GemmPrimitive& gemm_primitive(const GemmKey& key) {
  thread_local std::unordered_map<GemmKey, std::unique_ptr<GemmPrimitive>, GemmKeyHash> cache;
  auto it = cache.find(key);
  if (it != cache.end()) return *it->second;
  using dt = dnnl::memory::data_type;
  using dims = dnnl::memory::dims;
  const dt in_type = key.bf16 ? dt::bf16 : dt::f32;
  // Logical A is (M,K), B is (K,N), C is (M,N); a transposed operand is the same bytes read with
  // swapped strides, so no copies are made.
  auto p = std::make_unique<GemmPrimitive>();
  p->a_md = dnnl::memory::desc(dims{key.M, key.K}, in_type,
                               key.trans_a ? dims{1, key.lda} : dims{key.lda, 1});
  p->b_md = key.packed_b ? dnnl::memory::desc(dims{key.K, key.N}, in_type,
                                               dnnl::memory::format_tag::any)
                         : dnnl::memory::desc(dims{key.K, key.N}, in_type,
                                              key.trans_b ? dims{1, key.ldb} : dims{key.ldb, 1});
  p->c_md = dnnl::memory::desc(dims{key.M, key.N}, dt::f32, dims{key.ldc, 1});
  dnnl::primitive_attr attr;
  if (key.alpha != 1.0f) attr.set_output_scales(0, {key.alpha});
  if (key.accumulate) {
    dnnl::post_ops ops;
    ops.append_sum(1.0f);
    attr.set_post_ops(ops);
  }
  if (key.bias) p->bias_md = dnnl::memory::desc(dims{1, key.N}, dt::f32, dims{key.N, 1});
  dnnl::matmul::desc desc = key.bias ? dnnl::matmul::desc(p->a_md, p->b_md, p->bias_md, p->c_md)
                                     : dnnl::matmul::desc(p->a_md, p->b_md, p->c_md);
  dnnl::matmul::primitive_desc pd(desc, attr, cpu_engine());
  if (key.packed_b) p->b_md = pd.weights_desc();
  p->prim = dnnl::matmul(pd);
  return *cache.emplace(key, std::move(p)).first->second;
}

void execute(const GemmKey& key, const void* A, const void* B, float* C,
             const float* bias = nullptr) {
  const GemmPrimitive& p = gemm_primitive(key);
  dnnl::engine& engine = cpu_engine();
  dnnl::memory a_mem(p.a_md, engine, const_cast<void*>(A));
  dnnl::memory b_mem(p.b_md, engine, const_cast<void*>(B));
  dnnl::memory c_mem(p.c_md, engine, C);
  dnnl::stream stream(engine);
  std::unordered_map<int, dnnl::memory> args{
      {DNNL_ARG_SRC, a_mem}, {DNNL_ARG_WEIGHTS, b_mem}, {DNNL_ARG_DST, c_mem}};
  if (key.bias) args.emplace(DNNL_ARG_BIAS, dnnl::memory(p.bias_md, engine, const_cast<float*>(bias)));
  p.prim.execute(stream, args);
  stream.wait();
}

// Empty products oneDNN rejects: M or N zero is a no-op, K zero makes C zero (or leaves it).
bool gemm_trivial(int M, int N, int K, float beta, float* C, int ldc) {
  DISTILL_CHECK(beta == 0.0f || beta == 1.0f);
  if (M == 0 || N == 0) return true;
  if (K != 0) return false;
  if (beta == 0.0f)
    for (int i = 0; i < M; i++) std::memset(C + size_t(i) * ldc, 0, sizeof(float) * N);
  return true;
}

// Thread-local scratch for bf16 copies, 64-byte aligned; `slot` keeps the copies of one call
// apart.
uint16_t* bf16_scratch(int slot, size_t n) {
  thread_local std::vector<uint16_t> buffers[3];
  std::vector<uint16_t>& b = buffers[slot];
  if (b.size() < n + 32) b.resize(n + 32);
  return reinterpret_cast<uint16_t*>((reinterpret_cast<uintptr_t>(b.data()) + 63) & ~uintptr_t(63));
}

// bf16 copy (dense) of a (rows, cols) matrix with row stride ld, in scratch `slot`.
const uint16_t* bf16_copy(int slot, const float* src, int rows, int cols, int ld) {
  uint16_t* dst = bf16_scratch(slot, size_t(rows) * cols);
  round_to_bf16(dst, src, rows, cols, ld);
  return dst;
}

// dst (dst_md) = src (src_md) through a oneDNN reorder: a layout change, and f32 -> bf16 rounded
// to nearest even. Reorders are made once per pair of layouts and cached per thread.
void reorder(const dnnl::memory::desc& src_md, const void* src, const dnnl::memory::desc& dst_md,
             void* dst) {
  struct Entry {
    dnnl::memory::desc src, dst;
    dnnl::reorder prim;
  };
  thread_local std::vector<Entry> cache;
  dnnl::engine& engine = cpu_engine();
  const Entry* e = nullptr;
  for (const Entry& c : cache)
    if (c.src == src_md && c.dst == dst_md) e = &c;
  if (!e) {
    dnnl::reorder::primitive_desc pd(engine, src_md, engine, dst_md);
    e = &cache.emplace_back(Entry{src_md, dst_md, dnnl::reorder(pd)});
  }
  dnnl::memory s(src_md, engine, const_cast<void*>(src)), d(dst_md, engine, dst);
  dnnl::stream stream(engine);
  e->prim.execute(stream, s, d);
  stream.wait();
}

// A weight (OC,IC) as the B operand of the forward (K=IC, N=OC, B = weight^T) or of the dinp
// product (K=OC, N=IC, B = weight), with M rows of A.
GemmKey weight_product(int M, int OC, int IC, bool for_dinp) {
  return for_dinp ? GemmKey{false, false, true, false, M, IC, OC, OC, 0, IC, 1.0f, false, true}
                  : GemmKey{false, false, true, false, M, OC, IC, IC, 0, OC, 1.0f, false, true};
}

// The layout pack_bf16_weight writes: the one oneDNN picks for the product with kPackRows rows.
// It picked the same for every row count tried (1 to 4096); a product for which it picks another
// rounds the f32 weight in the call instead (packed_weight_fits).
constexpr int kPackRows = 1024;
const dnnl::memory::desc& packed_weight_md(int OC, int IC, bool for_dinp) {
  return gemm_primitive(weight_product(kPackRows, OC, IC, for_dinp)).b_md;
}

bool packed_weight_fits(const GemmKey& key, int OC, int IC, bool for_dinp) {
  return gemm_primitive(key).b_md == packed_weight_md(OC, IC, for_dinp);
}

// out (N,OC) = a16 @ weight^T + bias at BF16: from `packed` when given and its layout fits this
// product, else from weight rounded here.
void forward_bf16(float* out, const uint16_t* a16, const float* weight, const uint16_t* packed,
                  const float* bias, int N, int IC, int OC) {
  GemmKey key = weight_product(N, OC, IC, false);
  key.bias = bias != nullptr;
  if (packed && packed_weight_fits(key, OC, IC, false)) {
    execute(key, a16, packed, out, bias);
    return;
  }
  const GemmKey plain{false, true, true, false, N, OC, IC, IC, IC, OC, 1.0f, bias != nullptr};
  execute(plain, a16, bf16_copy(1, weight, OC, IC, IC), out, bias);
}

}  // namespace

void round_to_bf16(uint16_t* dst, const float* src, int rows, int cols, int ld) {
#pragma omp parallel for schedule(static) if (!omp_in_parallel() && size_t(rows) * cols > 65536)
  for (int r = 0; r < rows; r++) bf16_round_row(dst + size_t(r) * cols, src + size_t(r) * ld, cols);
}

size_t bf16_packed_weight_size(int OC, int IC, bool for_dinp) {
  return packed_weight_md(OC, IC, for_dinp).get_size() / sizeof(uint16_t);
}

void pack_bf16_weight(uint16_t* dst, const float* weight, int OC, int IC, bool for_dinp) {
  using dims = dnnl::memory::dims;
  const dnnl::memory::desc src_md =
      for_dinp ? dnnl::memory::desc(dims{OC, IC}, dnnl::memory::data_type::f32, dims{IC, 1})
               : dnnl::memory::desc(dims{IC, OC}, dnnl::memory::data_type::f32, dims{1, IC});
  reorder(src_md, weight, packed_weight_md(OC, IC, for_dinp), dst);
}

void gemm(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const float* A, int lda,
          const float* B, int ldb, float beta, float* C, int ldc, MatmulPrecision prec) {
  if (gemm_trivial(M, N, K, beta, C, ldc)) return;
  if (prec == MatmulPrecision::BF16) {
    // Dense copies: the stored matrix of A is (M,K) or, transposed, (K,M).
    const int ar = trans_a ? K : M, ac = trans_a ? M : K;
    const int br = trans_b ? N : K, bc = trans_b ? K : N;
    const uint16_t* a16 = bf16_copy(0, A, ar, ac, lda);
    const uint16_t* b16 = bf16_copy(1, B, br, bc, ldb);
    gemm_bf16(trans_a, trans_b, M, N, K, alpha, a16, ac, b16, bc, beta, C, ldc);
    return;
  }
  execute(GemmKey{trans_a, trans_b, false, beta != 0.0f, M, N, K, lda, ldb, ldc, alpha}, A, B, C);
}

void gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, float alpha, const uint16_t* A,
               int lda, const uint16_t* B, int ldb, float beta, float* C, int ldc) {
  if (gemm_trivial(M, N, K, beta, C, ldc)) return;
  execute(GemmKey{trans_a, trans_b, true, beta != 0.0f, M, N, K, lda, ldb, ldc, alpha}, A, B, C);
}

void gemm_bf16_weights(float* out, const float* inp, const uint16_t* w, int N, int IC, int OC) {
  if (N == 0 || OC == 0) return;
  gemm_bf16(false, true, N, OC, IC, 1.0f, bf16_copy(0, inp, N, IC, IC), IC, w, IC, 0.0f, out, OC);
}

void matmul_forward(float* out, const float* inp, const float* weight, const float* bias, int N,
                    int IC, int OC, MatmulPrecision prec, Bf16Weight weight16, uint16_t* inp16) {
  if (prec == MatmulPrecision::F32 && N <= kMatmulRowsMax) {
    matmul_rows_forward(out, inp, weight, bias, N, IC, OC);
    return;
  }
  if (gemm_trivial(N, OC, IC, 0.0f, out, OC)) {
    if (N > 0 && IC == 0 && bias)
      for (int n = 0; n < N; n++) std::memcpy(out + size_t(n) * OC, bias, sizeof(float) * OC);
    return;
  }
  // One oneDNN matmul, the bias added in its epilogue (no second pass over out).
  if (prec == MatmulPrecision::F32) {
    execute(GemmKey{false, true, false, false, N, OC, IC, IC, IC, OC, 1.0f, bias != nullptr}, inp,
            weight, out, bias);
    return;
  }
  const uint16_t* a16;
  if (inp16) {
    round_to_bf16(inp16, inp, N, IC, IC);
    a16 = inp16;
  } else {
    a16 = bf16_copy(0, inp, N, IC, IC);
  }
  forward_bf16(out, a16, weight, weight16.fwd, bias, N, IC, OC);
}

void matmul_forward_bf16_input(float* out, const uint16_t* inp16, const float* weight,
                               Bf16Weight weight16, const float* bias, int N, int IC, int OC) {
  if (gemm_trivial(N, OC, IC, 0.0f, out, OC)) {
    if (N > 0 && IC == 0 && bias)
      for (int n = 0; n < N; n++) std::memcpy(out + size_t(n) * OC, bias, sizeof(float) * OC);
    return;
  }
  forward_bf16(out, inp16, weight, weight16.fwd, bias, N, IC, OC);
}

namespace {
// dbias (OC) += column sums of dout (N,OC) and, when d16 is not null, d16 = bf16(dout) in the same
// pass.
void column_sums(float* dbias, const float* dout, int N, int OC, uint16_t* d16) {
  sum_rows_by_thread(dbias, N, OC, [&](int n, float* acc) {
    const float* d = dout + size_t(n) * OC;
#pragma omp simd
    for (int c = 0; c < OC; c++) acc[c] += d[c];
    if (d16) bf16_round_row(d16 + size_t(n) * OC, d, OC);
  });
}
}  // namespace

void matmul_backward_bf16_dout(float* dinp, float* dweight, const uint16_t* d16, const float* inp,
                               const float* weight, int N, int IC, int OC, Bf16Weight weight16,
                               bool overwrite_dinp, const uint16_t* inp16) {
  const float dinp_beta = overwrite_dinp ? 0.0f : 1.0f;
  if (dinp && !gemm_trivial(N, IC, OC, dinp_beta, dinp, IC)) {
    GemmKey key = weight_product(N, OC, IC, true);
    key.accumulate = !overwrite_dinp;
    if (weight16.dinp && packed_weight_fits(key, OC, IC, true))
      execute(key, d16, weight16.dinp, dinp);
    else
      gemm_bf16(false, false, N, IC, OC, 1.0f, d16, OC, bf16_copy(1, weight, OC, IC, IC), IC,
                dinp_beta, dinp, IC);
  }
  if (dweight && !gemm_trivial(OC, IC, N, 1.0f, dweight, IC)) {
    // inp goes straight into the layout oneDNN reads B in (one pass over inp, which oneDNN
    // would otherwise repack inside the product).
    const GemmKey key{true, false, true, true, OC, IC, N, OC, 0, IC, 1.0f, false, true};
    const dnnl::memory::desc& b_md = gemm_primitive(key).b_md;
    uint16_t* b = bf16_scratch(2, b_md.get_size() / sizeof(uint16_t));
    using dims = dnnl::memory::dims;
    using dt = dnnl::memory::data_type;
    if (inp16)
      reorder(dnnl::memory::desc(dims{N, IC}, dt::bf16, dims{IC, 1}), inp16, b_md, b);
    else
      reorder(dnnl::memory::desc(dims{N, IC}, dt::f32, dims{IC, 1}), inp, b_md, b);
    execute(key, d16, b, dweight);
  }
}

void matmul_backward(float* dinp, float* dweight, float* dbias, const float* dout,
                     const float* inp, const float* weight, int N, int IC, int OC,
                     MatmulPrecision prec, Bf16Weight weight16, bool overwrite_dinp,
                     const uint16_t* inp16) {
  const float dinp_beta = overwrite_dinp ? 0.0f : 1.0f;
  if (prec == MatmulPrecision::BF16 && (dinp || dweight)) {
    // dout is rounded once for both products (in the pass that sums it for dbias); the weights
    // come packed when the model keeps a bf16 copy.
    const uint16_t* d16;
    if (dbias) {
      uint16_t* d = bf16_scratch(0, size_t(N) * OC);
      column_sums(dbias, dout, N, OC, d);
      d16 = d;
    } else {
      d16 = bf16_copy(0, dout, N, OC, OC);
    }
    matmul_backward_bf16_dout(dinp, dweight, d16, inp, weight, N, IC, OC, weight16,
                              overwrite_dinp, inp16);
    return;
  }
  if (dinp) gemm(false, false, N, IC, OC, 1.0f, dout, OC, weight, IC, dinp_beta, dinp, IC, prec);
  if (dweight) gemm(true, false, OC, IC, N, 1.0f, dout, OC, inp, IC, 1.0f, dweight, IC, prec);
  if (dbias) column_sums(dbias, dout, N, OC, nullptr);
}

}  // namespace distill
