#include "kernels/quant_matmul.h"

#include <omp.h>

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include "core/error.h"
#include "kernels/cpu_features.h"
#include "kernels/kquant_dot.h"
#include "kernels/matmul.h"
#include "kernels/ops.h"
#include "kernels/quant_dot.h"
#include "quant/ggml_blocks.h"

namespace lamina {

namespace {

inline float round_bf16(float v) {
  return bf16_to_f32(f32_to_bf16(v));
}

// A k-quant (or Q5_0 / Q5_1) row expanded with dequantize_row, rounded to bf16.
inline const float* expand_row(DType q, const uint8_t* w, int64_t K) {
  thread_local std::vector<float> row;
  row.resize(size_t(K));
  convert_to_f32(w, q, row.data(), size_t(K));
  for (auto& v : row) v = round_bf16(v);
  return row.data();
}

// Decoding (<= 4 rows): every weight row expanded once and dotted with the bf16-rounded rows.
void kquant_gemv(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate) {
  const int64_t N = w.shape[0], K = w.shape[1];
  const size_t rb = dtype_bytes(w.dtype, K);
  const auto* base = static_cast<const uint8_t*>(w.data);
  thread_local std::vector<float> xr;
  xr.resize(size_t(M * K));
  for (int64_t i = 0; i < M * K; ++i) xr[size_t(i)] = round_bf16(x[i]);
  const float* xp = xr.data();  // this thread's buffer, read by all (thread_local: not by name)
#pragma omp parallel for schedule(static)
  for (int64_t n = 0; n < N; ++n) {
    const float* r = expand_row(w.dtype, base + size_t(n) * rb, K);
    for (int64_t m = 0; m < M; ++m) {
      const float* xm = xp + m * K;
      float v = 0.f;
#pragma omp simd reduction(+ : v)
      for (int64_t k = 0; k < K; ++k) v += r[k] * xm[k];
      y[m * N + n] = accumulate ? y[m * N + n] + v : v;
    }
  }
}

// Prompts: ~2 MB slabs of rows expanded to bf16 and multiplied by oneDNN.
void kquant_gemm(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate) {
  const int64_t N = w.shape[0], K = w.shape[1];
  const size_t rb = dtype_bytes(w.dtype, K);
  const int64_t slab = std::max<int64_t>(32, std::min<int64_t>(N, (int64_t(1) << 20) / K));
  thread_local std::vector<uint16_t> xb, wb;
  xb.resize(size_t(M * K));
  wb.resize(size_t(slab * K));
  to_bf16_parallel(x, xb.data(), M * K);
  const auto* base = static_cast<const uint8_t*>(w.data);
  for (int64_t n0 = 0; n0 < N; n0 += slab) {
    const int64_t nc = std::min(slab, N - n0);
    uint16_t* bp = wb.data();
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < nc; ++r) {
      const float* e = expand_row(w.dtype, base + size_t(n0 + r) * rb, K);
      for (int64_t k = 0; k < K; ++k) bp[r * K + k] = f32_to_bf16(e[k]);
    }
    gemm_bf16(false, true, M, nc, K, xb.data(), K, bp, K, y + n0, N, accumulate);
  }
}

// The weight rows of each matrix of a group in ~4 pieces per thread (multiples of 16 rows), taken
// as threads free up, matrix after matrix, each over chunks [m0, m1) of 64 activation rows (their
// int8 values stay in cache while the piece's rows stream past, and the piece's rows stay in
// cache from one chunk to the next). With a fixed half each, one core waited for the other 7-8%
// of a decode or a prompt: on a shared VM the two run at unequal speeds. 8 pieces per thread
// decoded TinyLlama slower on 2 Zen 4 cores (Q4_K_M 41.7-49.7 against 45.8-51.2 tokens/s, Q4_0
// 45.3-55.0 against 55.2-57.3, three alternations; 16: slower still). Alternating every 16
// decoded tokens in one process (docs/PERFORMANCE.md, twentieth session) put the schedules closer:
// 8 per thread 0.97 of 4, 2 per thread and static halves 1.00-1.01.
struct RowPiece {
  size_t matrix;
  int64_t n0, n1;
};
template <class Rows>
void for_row_pieces(std::span<const LinearTarget> ts, int64_t M, const Rows& rows) {
  constexpr int64_t kRowsPerChunk = 64, kRowGrain = 16, kPiecesPerThread = 4;
  const int64_t nt = omp_get_max_threads();
  thread_local std::vector<RowPiece> pieces_buf;
  std::vector<RowPiece>& pieces = pieces_buf;
  pieces.clear();
  for (size_t i = 0; i < ts.size(); ++i) {
    const int64_t N = ts[i].w->shape[0];
    const int64_t piece =
        nt == 1 ? N
                : std::max<int64_t>(kRowGrain, (N / (kPiecesPerThread * nt) + kRowGrain - 1) /
                                                   kRowGrain * kRowGrain);
    for (int64_t n0 = 0; n0 < N; n0 += piece) pieces.push_back({i, n0, std::min(N, n0 + piece)});
  }
  const RowPiece* ps = pieces.data();  // this thread's buffer, read by all (not by name)
  const int64_t np = int64_t(pieces.size());
  std::atomic<int64_t> next{0};
#pragma omp parallel
  for (int64_t i; (i = next.fetch_add(1, std::memory_order_relaxed)) < np;)
    for (int64_t m0 = 0; m0 < M; m0 += kRowsPerChunk)
      rows(ps[i].matrix, m0, std::min(M, m0 + kRowsPerChunk), ps[i].n0, ps[i].n1);
}

// How a weight type's integer products quantize their activations (M rows).
enum class ActivationCode { kNone, kQ8_0, kQ8_K };
ActivationCode activation_code(DType t, int64_t M) {
  switch (t) {
    case DType::Q8_0:
    case DType::Q4_0:
    case DType::Q4_0x8:
    case DType::Q8_0x8:
      return ActivationCode::kQ8_0;
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return M > 4 && kquant_prompts_in_bf16() ? ActivationCode::kNone : ActivationCode::kQ8_K;
    case DType::Q4_Kx8:
    case DType::Q6_Kx8:
      return ActivationCode::kQ8_K;
    default:
      return ActivationCode::kNone;
  }
}

// Q8_0 / Q4_0: activations to Q8_0 once, then the weight rows in pieces (for_row_pieces).
void int8_linear(const float* x, int64_t M, std::span<const LinearTarget> ts, bool accumulate) {
  const int64_t K = ts[0].w->shape[1];
  for (const LinearTarget& t : ts)  // here: an error thrown in the parallel region terminates
    LAMINA_CHECK(
        t.w->dtype != DType::Q4_0x8 && t.w->dtype != DType::Q8_0x8 ? true : t.w->shape[0] % 8 == 0,
        dtype_name(t.w->dtype), " weight with ", t.w->shape[0], " rows: not whole groups of 8");
  thread_local Q8Activations xa_buf;
  quantize_activations_q8_0(x, M, K, xa_buf);
  const Q8Activations& xa = xa_buf;  // this thread's buffer, read by all (not by name)
  const QuantKernel kern = default_quant_kernel();
  for_row_pieces(ts, M, [&](size_t i, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const Tensor& w = *ts[i].w;
    quant_dot_rows(kern, w.dtype, xa, m0, m1, static_cast<const uint8_t*>(w.data),
                   dtype_bytes(w.dtype, K), n0, n1, ts[i].y, w.shape[0], accumulate);
  });
}

// Q4_K / Q5_K / Q6_K: activations to Q8_K once, then as int8_linear (kernels/kquant_dot.h).
void kquant_linear(const float* x, int64_t M, std::span<const LinearTarget> ts, bool accumulate) {
  const int64_t K = ts[0].w->shape[1];
  thread_local Q8KActivations xa_buf;
  quantize_activations_q8_k(x, M, K, xa_buf);
  const Q8KActivations& xa = xa_buf;  // this thread's buffer, read by all (not by name)
  const QuantKernel kern = default_quant_kernel();
  for_row_pieces(ts, M, [&](size_t i, int64_t m0, int64_t m1, int64_t n0, int64_t n1) {
    const Tensor& w = *ts[i].w;
    kquant_dot_rows(kern, w.dtype, xa, m0, m1, static_cast<const uint8_t*>(w.data),
                    dtype_bytes(w.dtype, K), n0, n1, ts[i].y, w.shape[0], accumulate);
  });
}

void check_block_weight(const Tensor& w) {
  LAMINA_CHECK(w.shape.size() == 2 && dtype_is_quantized(w.dtype),
               "linear_quantized: expected a 2-D block-type weight, got ", dtype_name(w.dtype), " ",
               shape_str(w.shape));
}

}  // namespace

bool kquant_prompts_in_bf16() {
  static const bool bf16 = [] {
    const char* env = std::getenv("LAMINA_KQUANT_PROMPT");
    if (!env || !*env) return bf16_matmul_native() && cpu_features().amx_bf16;
    const std::string v = env;
    if (v != "int8" && v != "bf16")
      fail("LAMINA_KQUANT_PROMPT: expected int8 or bf16, got '", v, "'");
    return v == "bf16";
  }();
  return bf16;
}

void linear_quantized(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate) {
  check_block_weight(w);
  if (M == 0) return;
  const LinearTarget one[] = {{&w, y}};
  switch (activation_code(w.dtype, M)) {
    case ActivationCode::kQ8_0:
      return int8_linear(x, M, one, accumulate);
    case ActivationCode::kQ8_K:  // Q4_Kx8 / Q6_Kx8: repacked only where prompts take these
      return kquant_linear(x, M, one, accumulate);
    case ActivationCode::kNone:
      break;
  }
  switch (w.dtype) {
    case DType::Q4_K:
    case DType::Q5_K:
    case DType::Q6_K:
      return kquant_gemm(x, M, w, y, accumulate);
    case DType::Q2_K:
    case DType::Q3_K:
    case DType::Q5_0:
    case DType::Q5_1:
      return M <= 4 ? kquant_gemv(x, M, w, y, accumulate) : kquant_gemm(x, M, w, y, accumulate);
    default:
      fail("linear_quantized: ", dtype_name(w.dtype), " is not a block type");
  }
}

void linear_quantized_group(const float* x, int64_t M, std::span<const LinearTarget> targets) {
  if (targets.empty()) return;
  const int64_t K = targets[0].w->shape.size() == 2 ? targets[0].w->shape[1] : 0;
  for (const LinearTarget& t : targets) {
    check_block_weight(*t.w);
    LAMINA_CHECK(t.w->shape[1] == K, "linear_quantized_group: weights of ", K, " and ",
                 t.w->shape[1], " columns");
  }
  if (M == 0) return;
  const ActivationCode code = activation_code(targets[0].w->dtype, M);
  const bool shared = code != ActivationCode::kNone &&
                      std::all_of(targets.begin(), targets.end(), [&](const LinearTarget& t) {
                        return activation_code(t.w->dtype, M) == code;
                      });
  if (!shared) {
    for (const LinearTarget& t : targets) linear_quantized(x, M, *t.w, t.y, false);
    return;
  }
  if (code == ActivationCode::kQ8_0) return int8_linear(x, M, targets, false);
  kquant_linear(x, M, targets, false);
}

}  // namespace lamina
