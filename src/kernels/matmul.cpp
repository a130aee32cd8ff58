#include "kernels/matmul.h"

#include <omp.h>

#include <algorithm>
#include <dnnl.hpp>
#include <map>
#include <mutex>
#include <tuple>
#include <unordered_map>
#include <vector>

#include "core/error.h"
#include "kernels/bf16_gemv.h"
#include "kernels/ops.h"
#include "kernels/quant_matmul.h"

namespace lamina {
namespace {

using md = dnnl::memory::desc;

struct Dnnl {
  dnnl::engine eng{dnnl::engine::kind::cpu, 0};
  dnnl::stream strm{eng};
  std::mutex mu;
  // (M, K, N, weight dtype, accumulate, packed) -> primitive. Decode (M = 1) and prompt shapes
  // repeat, so creation cost is paid once per shape.
  std::map<std::tuple<int64_t, int64_t, int64_t, int, bool, bool>, dnnl::matmul> cache;
};

Dnnl& dnnl_state() {
  static Dnnl d;
  return d;
}

dnnl::memory::data_type dt_of(DType t) {
  return t == DType::BF16 ? dnnl::memory::data_type::bf16 : dnnl::memory::data_type::f32;
}

// The primitive for these descriptors, created once per key (creation is far slower than a small
// product); accumulate adds a sum post-op (C += A·B).
template <class Key>
dnnl::matmul cached_matmul(std::map<Key, dnnl::matmul>& cache, const Key& key, const md& a,
                           const md& b, const md& c, bool accumulate) {
  auto& d = dnnl_state();
  std::lock_guard<std::mutex> lock(d.mu);
  auto it = cache.find(key);
  if (it == cache.end()) {
    dnnl::primitive_attr attr;
    if (accumulate) {
      dnnl::post_ops po;
      po.append_sum(1.0f);
      attr.set_post_ops(po);
    }
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), attr, d.eng);
    it = cache.emplace(key, dnnl::matmul(pd)).first;
  }
  return it->second;
}

// The weight as the [K, N] matrix W^T: strides (1, K) over the row-major [N, K] storage.
md plain_weight_md(int64_t K, int64_t N, DType t) {
  return md({K, N}, dt_of(t), {1, K});
}

// The blocked layout oneDNN prefers for this weight (asked for with M = 128).
md packed_weight_md(int64_t K, int64_t N, DType t) {
  auto& d = dnnl_state();
  md src({128, K}, dt_of(t), {K, 1}), wany({K, N}, dt_of(t), dnnl::memory::format_tag::any);
  md dst({128, N}, dnnl::memory::data_type::f32, {N, 1});
  dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(src, wany, dst), d.eng);
  return pd.weights_desc();
}

// oneDNN 2.6 (Debian 12) has bf16 matmul kernels only from AVX-512 (avx512_core) on; on an
// AVX2-only CPU the bf16 primitive does not exist. There bf16 products run as F32 products over
// bf16 values widened slab by slab: the same numbers (bf16 inputs, F32 accumulation) without a
// full-size F32 copy of the weights. Probed once at run time, never assumed from the build.
bool probe_bf16_native() {
  try {
    auto& d = dnnl_state();
    md a({4, 32}, dnnl::memory::data_type::bf16, {32, 1});
    md b({32, 8}, dnnl::memory::data_type::bf16, {1, 32});
    md c({4, 8}, dnnl::memory::data_type::f32, {8, 1});
    dnnl::matmul::primitive_desc pd(dnnl::matmul::desc(a, b, c), d.eng);
    return true;
  } catch (const dnnl::error&) {
    return false;
  }
}

int& bf16_mode() {  // -1 unprobed, 0 emulated, 1 native
  static int mode = -1;
  return mode;
}

// Widens rows x cols bf16 values (leading dimension ld) to F32 with the same layout.
void widen_bf16(const uint16_t* src, int64_t rows, int64_t cols, int64_t ld, float* dst) {
#pragma omp parallel for schedule(static) if (rows * cols > (1 << 16))
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cols; ++c) dst[r * ld + c] = bf16_to_f32(src[r * ld + c]);
}

// linear() with a BF16 weight where oneDNN has no bf16 kernel: x rounded to bf16 once, weight
// rows widened to F32 a slab at a time (~1 MB, so it stays in cache for the product).
void linear_bf16_emulated(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate) {
  const int64_t N = w.shape[0], K = w.shape[1];
  thread_local std::vector<float> xr, slab;
  xr.resize(size_t(M * K));
  for (int64_t i = 0; i < M * K; ++i) xr[size_t(i)] = bf16_to_f32(f32_to_bf16(x[i]));
  const int64_t rows = std::clamp<int64_t>((int64_t(1) << 18) / std::max<int64_t>(K, 1), 16, N);
  slab.resize(size_t(rows * K));
  const auto* wb = static_cast<const uint16_t*>(w.data);
  for (int64_t n0 = 0; n0 < N; n0 += rows) {
    const int64_t nc = std::min(rows, N - n0);
    widen_bf16(wb + n0 * K, nc, K, K, slab.data());
    gemm(false, true, M, nc, K, xr.data(), K, slab.data(), K, y + n0, N, accumulate);
  }
}

}  // namespace

namespace {
bool& bf16_gemv_off() {
  static bool off = false;
  return off;
}
}  // namespace
bool bf16_gemv_disabled() {
  return bf16_gemv_off();
}
void set_bf16_gemv_disabled(bool off) {
  bf16_gemv_off() = off;
}

bool bf16_matmul_native() {
  if (bf16_mode() < 0) bf16_mode() = probe_bf16_native() ? 1 : 0;
  return bf16_mode() == 1;
}

void set_bf16_matmul_emulated(bool emulated) {
  bf16_mode() = emulated ? 0 : (probe_bf16_native() ? 1 : 0);
}

struct WeightPack::Impl {
  std::mutex mu;
  struct Entry {
    Shape shape;
    DType dtype;
    dnnl::memory mem;
  };
  std::unordered_map<const void*, Entry> packed;
  size_t bytes = 0;

  const dnnl::memory& get(const Tensor& w) {
    std::lock_guard<std::mutex> lock(mu);
    auto it = packed.find(w.data);
    if (it != packed.end() && it->second.shape == w.shape && it->second.dtype == w.dtype)
      return it->second.mem;
    auto& d = dnnl_state();
    const int64_t N = w.shape[0], K = w.shape[1];
    md plain = plain_weight_md(K, N, w.dtype), target = packed_weight_md(K, N, w.dtype);
    dnnl::memory src(plain, d.eng, w.data), dst(target, d.eng);
    dnnl::reorder(src, dst).execute(d.strm, src, dst);
    d.strm.wait();
    bytes += target.get_size();
    return packed[w.data] = Entry{w.shape, w.dtype, dst}, packed[w.data].mem;
  }
};

WeightPack::WeightPack() : impl_(std::make_unique<Impl>()) {}
WeightPack::~WeightPack() = default;
size_t WeightPack::bytes() const {
  return impl_->bytes;
}

bool prepack_weight(const Tensor& w, WeightPack* pack) {
  if (!pack || w.shape.size() != 2 || dtype_is_quantized(w.dtype)) return false;
  if (w.dtype != DType::F32 && !(w.dtype == DType::BF16 && bf16_matmul_native())) return false;
  pack->impl().get(w);
  return true;
}

void linear(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate,
            WeightPack* pack) {
  LAMINA_CHECK(w.shape.size() == 2, "linear: weight must be 2-D, got ", shape_str(w.shape));
  if (dtype_is_quantized(w.dtype)) return linear_quantized(x, M, w, y, accumulate);
  LAMINA_CHECK(w.dtype == DType::F32 || w.dtype == DType::BF16, "linear: weight dtype ",
               dtype_name(w.dtype), " not supported");
  const int64_t N = w.shape[0], K = w.shape[1];
  if (M == 0) return;
  if (w.dtype == DType::BF16 && !bf16_matmul_native()) {
    // Decoding: rows read in place and widened in registers; prompts: F32 slabs (oneDNN).
    if (M <= 4 && bf16_gemv_runnable() && !bf16_gemv_disabled())
      return bf16_gemv(x, M, w.as<uint16_t>(), N, K, y, accumulate);
    return linear_bf16_emulated(x, M, w, y, accumulate);
  }
  auto& d = dnnl_state();
  const auto wt = dt_of(w.dtype);
  md src_md({M, K}, wt, {K, 1}), dst_md({M, N}, dnnl::memory::data_type::f32, {N, 1});
  dnnl::memory wmem;
  if (pack) wmem = pack->impl().get(w);
  md wei_md = pack ? wmem.get_desc() : plain_weight_md(K, N, w.dtype);
  dnnl::matmul prim =
      cached_matmul(d.cache, std::make_tuple(M, K, N, int(w.dtype), accumulate, pack != nullptr),
                    src_md, wei_md, dst_md, accumulate);
  thread_local std::vector<uint16_t> xb;
  void* src = const_cast<float*>(x);
  if (w.dtype == DType::BF16) {
    xb.resize(size_t(M * K));
    to_bf16_parallel(x, xb.data(), M * K);
    src = xb.data();
  }
  if (!pack) wmem = dnnl::memory(wei_md, d.eng, w.data);
  dnnl::memory s(src_md, d.eng, src), dm(dst_md, d.eng, y);
  prim.execute(d.strm, {{DNNL_ARG_SRC, s}, {DNNL_ARG_WEIGHTS, wmem}, {DNNL_ARG_DST, dm}});
  d.strm.wait();
}

void linear_group(const float* x, int64_t M, std::span<const LinearTarget> targets,
                  WeightPack* pack) {
  const bool quantized = std::all_of(targets.begin(), targets.end(), [](const LinearTarget& t) {
    return t.w->shape.size() == 2 && dtype_is_quantized(t.w->dtype);
  });
  if (quantized) return linear_quantized_group(x, M, targets);
  for (const LinearTarget& t : targets) linear(x, M, *t.w, t.y, false, pack);
}

namespace {

// C[M, N] (+)= op(A) · op(B) with A and B of type `in` (F32 or BF16), C in F32.
void gemm_any(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const void* A, int64_t lda,
              const void* B, int64_t ldb, float* C, int64_t ldc, bool accumulate, DType in) {
  if (M == 0 || N == 0) return;
  if (K == 0) {
    if (!accumulate)
      for (int64_t i = 0; i < M; ++i) std::fill(C + i * ldc, C + i * ldc + N, 0.f);
    return;
  }
  auto& d = dnnl_state();
  const auto it_dt = dt_of(in);
  md a_md({M, K}, it_dt, ta ? dnnl::memory::dims{1, lda} : dnnl::memory::dims{lda, 1});
  md b_md({K, N}, it_dt, tb ? dnnl::memory::dims{1, ldb} : dnnl::memory::dims{ldb, 1});
  md c_md({M, N}, dnnl::memory::data_type::f32, {ldc, 1});
  using Key =
      std::tuple<bool, bool, int64_t, int64_t, int64_t, int64_t, int64_t, int64_t, bool, int>;
  static std::map<Key, dnnl::matmul> cache;
  dnnl::matmul prim = cached_matmul(cache, Key{ta, tb, M, N, K, lda, ldb, ldc, accumulate, int(in)},
                                    a_md, b_md, c_md, accumulate);
  dnnl::memory am(a_md, d.eng, const_cast<void*>(A)), bm(b_md, d.eng, const_cast<void*>(B)),
      cm(c_md, d.eng, C);
  prim.execute(d.strm, {{DNNL_ARG_SRC, am}, {DNNL_ARG_WEIGHTS, bm}, {DNNL_ARG_DST, cm}});
  d.strm.wait();
}

}  // namespace

void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  gemm_any(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, DType::F32);
}

void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate) {
  if (!bf16_matmul_native() && M > 0 && N > 0 && K > 0) {
    // Stored extents: A is [M, K] (or [K, M] when ta), B is [K, N] (or [N, K] when tb).
    const int64_t ar = ta ? K : M, ac = ta ? M : K, br = tb ? N : K, bc = tb ? K : N;
    std::vector<float> af(size_t((ar - 1) * lda + ac)), bf(size_t((br - 1) * ldb + bc));
    widen_bf16(A, ar, ac, lda, af.data());
    widen_bf16(B, br, bc, ldb, bf.data());
    return gemm(ta, tb, M, N, K, af.data(), lda, bf.data(), ldb, C, ldc, accumulate);
  }
  gemm_any(ta, tb, M, N, K, A, lda, B, ldb, C, ldc, accumulate, DType::BF16);
}

void set_num_threads(int n) {
  if (n > 0) omp_set_num_threads(n);
}
int num_threads() {
  return omp_get_max_threads();
}

}  // namespace lamina
