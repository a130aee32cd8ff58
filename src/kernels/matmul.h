// Matrix products. Every one goes through oneDNN (AVX-512/AMX brgemm kernels); this header is the
// seam where other backends (CUDA, quantized 4-bit blocks) plug in later.
#pragma once
#include <cstdint>
#include <memory>
#include <span>

#include "core/tensor.h"

namespace lamina {

// Weights repacked once into oneDNN's blocked layout (the one its kernels pick for a 128-row
// product), keyed by the weight's storage. Decoding (M = 1) runs ~3x faster from it than from
// the row-major Hugging Face layout. Owned by whoever owns the weights (the Model); the weights
// must not change while packed (training will invalidate or skip packing).
class WeightPack {
 public:
  WeightPack();
  ~WeightPack();
  struct Impl;
  Impl& impl() { return *impl_; }
  size_t bytes() const;  // memory held by packed copies

 private:
  std::unique_ptr<Impl> impl_;
};

// y[M, N] = x[M, K] · w[N, K]^T, w stored as a Hugging Face Linear weight (row-major [out, in]),
// F32 or BF16 (or Q8_0/Q4_0 blocks: kernels/quant_matmul.h). With a BF16 weight, x is rounded to
// BF16 and the product accumulates in F32.
// With accumulate, y += instead of y =. With pack, w is used (and on first use stored) packed.
void linear(const float* x, int64_t M, const Tensor& w, float* y, bool accumulate = false,
            WeightPack* pack = nullptr);

// One product of a group that multiplies the same input: y = x · w^T.
struct LinearTarget {
  const Tensor* w = nullptr;
  float* y = nullptr;
};

// linear(x, M, *t.w, t.y, false, pack) for every target t, all of the same input width K. Where
// the weights are block types whose products quantize x the same way (q, k, v; gate, up), x is
// quantized once and the threads take the rows of all of them in one parallel pass, with no join
// between the matrices (kernels/quant_matmul.h); the others one linear() each.
void linear_group(const float* x, int64_t M, std::span<const LinearTarget> targets,
                  WeightPack* pack = nullptr);

// Packs w into `pack` now when linear() would multiply it from a packed copy (F32, or BF16 where
// bf16 products are native) and returns whether it did: the caller may then let go of w's own
// memory (an inference Model releases the mapped pages of its checkpoint, so the weights are held
// once). Later linear() calls with the same pack use the copy.
bool prepack_weight(const Tensor& w, WeightPack* pack);

// General F32 product for training: C[M, N] (+)= op(A)[M, K] · op(B)[K, N], row-major with
// leading dimensions; op transposes when ta / tb. (A stored [K, M] when ta, B stored [N, K] when
// tb.)
void gemm(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const float* A, int64_t lda,
          const float* B, int64_t ldb, float* C, int64_t ldc, bool accumulate);

// The same with BF16 inputs (F32 accumulation and output): the backward products of bf16
// mixed-precision training.
void gemm_bf16(bool ta, bool tb, int64_t M, int64_t N, int64_t K, const uint16_t* A, int64_t lda,
               const uint16_t* B, int64_t ldb, float* C, int64_t ldc, bool accumulate);

// Without native bf16, decoding products (<= 4 rows) with bf16 weights go through bf16_gemv
// (kernels/bf16_gemv.h) where the CPU runs it; tests switch it off to check the slab path too.
bool bf16_gemv_disabled();
void set_bf16_gemv_disabled(bool off);

// Whether oneDNN has bf16 product kernels on this CPU (probed once; AVX-512 and newer). Without
// them linear() and gemm_bf16() widen bf16 operands to F32 slab by slab: same inputs, same F32
// accumulation. set_bf16_matmul_emulated(true) forces that path (tests run both where they can).
bool bf16_matmul_native();
void set_bf16_matmul_emulated(bool emulated);

// Number of threads the kernels use (OpenMP); 0 leaves the default.
void set_num_threads(int n);
int num_threads();

}  // namespace lamina
