// llama.cpp's per-tensor type rules (llama_tensor_get_type_impl and tensor_type_fallback in
// llama-quant.cpp), for the file types lamina writes. Layer counters there count tensors in
// llama.cpp's order (by layer, then name), so the i-th attn_v or ffn_down is layer i's.
#include "quant/quant_mix.h"

#include <cctype>
#include <cstdio>

#include "core/error.h"

namespace lamina {

namespace {

// llama_ftype numbers (llama.h).
enum : uint32_t {
  kF32 = 0,
  kF16 = 1,
  kQ4_0 = 2,
  kQ8_0 = 7,
  kQ2_K = 10,
  kQ3_K_S = 11,
  kQ3_K_M = 12,
  kQ3_K_L = 13,
  kQ4_K_S = 14,
  kQ4_K_M = 15,
  kQ5_K_S = 16,
  kQ5_K_M = 17,
  kQ6_K = 18,
  kBF16 = 32
};

const QuantMix kMixes[] = {
    {"f32", kF32, GgmlType::F32, false},       {"f16", kF16, GgmlType::F16, false},
    {"bf16", kBF16, GgmlType::BF16, false},    {"q8_0", kQ8_0, GgmlType::Q8_0, false},
    {"q4_0", kQ4_0, GgmlType::Q4_0, false},    {"q2_k", kQ2_K, GgmlType::Q2_K, true},
    {"q3_k_s", kQ3_K_S, GgmlType::Q3_K, true}, {"q3_k_m", kQ3_K_M, GgmlType::Q3_K, true},
    {"q3_k_l", kQ3_K_L, GgmlType::Q3_K, true}, {"q4_k_s", kQ4_K_S, GgmlType::Q4_K, true},
    {"q4_k_m", kQ4_K_M, GgmlType::Q4_K, true}, {"q5_k_s", kQ5_K_S, GgmlType::Q5_K, true},
    {"q5_k_m", kQ5_K_M, GgmlType::Q5_K, true}, {"q6_k", kQ6_K, GgmlType::Q6_K, true},
};

bool contains(const std::string& s, const char* part) {
  return s.find(part) != std::string::npos;
}

// Half the layers, weighted to the first and last eighths (llama.cpp's use_more_bits).
bool use_more_bits(int64_t i, int64_t n) {
  return i < n / 8 || i >= 7 * n / 8 || (i - n / 8) % 3 == 2;
}

// tensor_type_fallback: a row that is not whole blocks of t takes the nearest 32-block type,
// and F16 when that does not fit either.
GgmlType fallback(GgmlType t, int64_t ncols) {
  if (ncols % ggml_block_elems(t) == 0) return t;
  GgmlType r = t;
  switch (t) {
    case GgmlType::Q2_K:
    case GgmlType::Q3_K:
      r = GgmlType::Q4_0;
      break;
    case GgmlType::Q4_K:
      r = GgmlType::Q5_0;
      break;
    case GgmlType::Q5_K:
      r = GgmlType::Q5_1;
      break;
    case GgmlType::Q6_K:
      r = GgmlType::Q8_0;
      break;
    default:
      break;
  }
  return ncols % ggml_block_elems(r) == 0 ? r : GgmlType::F16;
}

}  // namespace

std::string quant_mix_names() {
  std::string s;
  for (const QuantMix& m : kMixes) s += std::string(s.empty() ? "" : ", ") + m.name;
  return s;
}

const QuantMix& parse_quant_mix(const std::string& name) {
  std::string n = name;
  for (auto& ch : n) ch = char(std::tolower(static_cast<unsigned char>(ch)));
  for (const QuantMix& m : kMixes)
    if (n == m.name) return m;
  fail("unknown output type '", name, "' (", quant_mix_names(), ")");
}

GgmlType mix_tensor_type(const QuantMix& mix, const MixModel& model, const std::string& name,
                         int64_t ncols) {
  if (!mix.llama_rules)  // convert_hf_to_gguf (and llama-quantize --pure for q4_0)
    return ncols % ggml_block_elems(mix.base) == 0 ? mix.base : GgmlType::F16;
  const uint32_t f = mix.ftype;
  const bool moe8 = model.n_expert == 8;
  int layer = -1;
  std::sscanf(name.c_str(), "blk.%d.", &layer);
  const int64_t i = layer, n = model.n_layer;
  GgmlType t = mix.base;
  const bool output = name == "output.weight" || (model.tied && name == "token_embd.weight");
  if (output) {
    if (ncols % ggml_block_elems(t) != 0)
      t = GgmlType::Q8_0;
    else if (t != GgmlType::Q8_0)
      t = GgmlType::Q6_K;
  } else if (name == "token_embd.weight") {
    // the base type, for these mixes
  } else if (contains(name, "attn_v.weight")) {
    if (f == kQ2_K)
      t = model.n_gqa >= 4 ? GgmlType::Q4_K : GgmlType::Q3_K;
    else if (f == kQ3_K_M)
      t = i < 2 ? GgmlType::Q5_K : GgmlType::Q4_K;
    else if (f == kQ3_K_L)
      t = GgmlType::Q5_K;
    else if ((f == kQ4_K_M || f == kQ5_K_M) && use_more_bits(i, n))
      t = GgmlType::Q6_K;
    else if (f == kQ4_K_S && i < 4)
      t = GgmlType::Q5_K;
    if (model.is_70b && (t == GgmlType::Q3_K || t == GgmlType::Q4_K)) t = GgmlType::Q5_K;
    if (moe8) t = GgmlType::Q8_0;
  } else if (contains(name, "attn_k.weight")) {
    if (moe8) t = GgmlType::Q8_0;
  } else if (contains(name, "attn_q.weight")) {
    // no rule for these mixes
  } else if (contains(name, "attn_output.weight")) {
    if (moe8) {
      if (f == kQ2_K || f == kQ3_K_S || f == kQ3_K_M || f == kQ4_K_S || f == kQ4_K_M)
        t = GgmlType::Q5_K;
    } else if (f == kQ2_K) {
      t = GgmlType::Q3_K;
    } else if (f == kQ3_K_M) {
      t = GgmlType::Q4_K;
    } else if (f == kQ3_K_L) {
      t = GgmlType::Q5_K;
    }
  } else if (contains(name, "ffn_up") || contains(name, "ffn_gate")) {
    // no rule for these mixes
  } else if (contains(name, "ffn_down")) {
    if (f == kQ2_K)
      t = GgmlType::Q3_K;
    else if (f == kQ3_K_M)
      t = i < n / 16 ? GgmlType::Q5_K : GgmlType::Q4_K;
    else if (f == kQ3_K_L)
      t = GgmlType::Q5_K;
    else if (f == kQ4_K_M) {
      if (use_more_bits(i, n)) t = GgmlType::Q6_K;
    } else if (f == kQ5_K_M && use_more_bits(i, n))
      t = GgmlType::Q6_K;
    else if (f == kQ4_K_S && i < n / 8)
      t = GgmlType::Q5_K;
  }
  return fallback(t, ncols);
}

}  // namespace lamina
