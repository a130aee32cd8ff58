// Attention of prompt-length spans in blocks, as two products per block (kernels/ops.h's
// attention() takes it for spans of kBlockAttentionMinRows rows or more; decoding rows go one at
// a time there). One task is a block of a span's query rows and one kv head: the scores of all
// its query heads' rows against a block of keys are one product (oneDNN's sgemm, on the calling
// thread), the softmax runs online over the key blocks (a running maximum and sum per row, as in
// flash attention), and the values come in as a second product. One query row at a time ran a
// 256-token TinyLlama prompt's attention at ~23 GFLOP/s per Zen 4 core (8% of the prompt's time
// for 1% of its arithmetic); sgemm runs these shapes at 85-100.
#pragma once
#include <cstdint>
#include <vector>

#include "kernels/ops.h"

namespace lamina {

constexpr int64_t kBlockAttentionMinRows = 16;

// Query rows per block for a group of `group` query heads per kv head: ~256 rows (heads x
// positions) per product, so that the scores of a block of keys stay in L2.
int64_t attention_block_rows(int64_t group);

// A thread's buffers, reused from block to block.
struct AttentionBlockScratch {
  std::vector<float> q, s, o, m, l;
};

// Rows [t0, t1) of span sp, kv head kh, into out (layouts and masking as attention() in
// kernels/ops.h; scale already resolved).
void attend_block(const float* q, const float* k, const float* v, float* out,
                  const AttentionSpan& sp, int64_t t0, int64_t t1, int64_t kh, int64_t nh,
                  int64_t nkv, int64_t hd, int64_t kv_stride, int64_t head_stride, int64_t window,
                  float scale, float softcap, AttentionBlockScratch& scratch);

}  // namespace lamina
