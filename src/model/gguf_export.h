// A Hugging Face model directory (Llama, Mistral, Mixtral, Qwen2, Qwen3) -> one GGUF file that
// llama.cpp loads, following llama.cpp's convert_hf_to_gguf.py: architecture "llama", its tensor
// names (token_embd, blk.N.attn_q, ..., blk.N.ffn_gate_exps for Mixtral's stacked experts, output),
// Q and K rows permuted for ggml's RoPE (pairs of adjacent dimensions rotate together, where HF
// rotates dimension i with i + head_dim/2), the SentencePiece vocabulary with scores and token
// types, and the chat template. Norms and the MoE router stay F32; matrices take the types of
// the requested mix (quant/quant_mix.h: convert_hf_to_gguf's f32 / f16 / bf16 / q8_0, or one of
// llama-quantize's, q4_k_m and the rest, byte-identical to llama-quantize run on the f32 export).
// Streamed one matrix (one expert) at a time; the output appears only when complete.
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <vector>

#include "core/tensor.h"
#include "io/imatrix_file.h"
#include "io/model_config.h"
#include "quant/ggml_blocks.h"
#include "quant/quant_mix.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

struct GgufExportResult {
  int64_t tensors = 0;
  uint64_t bytes = 0;
  // Matrices whose rows are not whole blocks of the mix's type (they take a fallback type).
  int64_t fallbacks = 0;
  std::map<std::string, int64_t> matrices_by_type;  // ggml type name -> matrices of it
  // Mistral's sliding window, which llama.cpp's "llama" architecture does not represent (as with
  // its own converter): identical output only for contexts up to this many tokens.
  int64_t sliding_window = 0;
};

// An importance matrix (llama.cpp's imatrix, io/imatrix_file.h) as llama-quantize applies it:
// rows by GGUF tensor name (one value per column; Mixtral's stacked experts: one row per expert,
// concatenated), and what it records of the file in the output's metadata
// (quantize.imatrix.file, .dataset, .entries_count, .chunks_count).
struct ExportImportance {
  ImportanceMatrix rows;
  std::string file, dataset;
  int64_t chunks = 0;  // 0: not recorded
};
// The rows and the record of an imatrix file as llama-quantize --imatrix FILE reads it.
ExportImportance read_export_importance(const std::string& imatrix_path);

GgufExportResult export_gguf(const std::string& model_dir, const std::string& out_path,
                             const QuantMix& mix, const ExportImportance* importance = nullptr);

// Where write_gguf takes a model's tensors from (a checkpoint, or random values for init).
struct GgufSource {
  ModelConfig cfg;
  const Tokenizer* tokenizer = nullptr;
  std::string name;    // general.name: the directory (or shape) the model comes from
  bool fused = false;  // Mixtral's fused expert tensors (MoeLayout::Fused) instead of per expert
  // A tokenizer.json's byte-level BPE (GGUF's "gpt2" vocabulary): llama.cpp's pre-tokenizer name
  // (tokenizer.ggml.pre: "llama-bpe", "qwen2"), and tokenizer_config.json's add_bos_token and
  // pad token where it has them. Empty pre: a SentencePiece vocabulary ("llama").
  std::string tokenizer_pre;
  std::optional<bool> add_bos_token;
  std::optional<int32_t> pad_id;
  // Fails when tensor `name` is missing or not of `shape` (empty: no check).
  std::function<void(const std::string& name, const Shape& shape)> check;
  // n F32 values of tensor `name` from element `offset` on; called from several threads at once.
  std::function<void(const std::string& name, int64_t offset, int64_t n, float* out)> read;
  std::function<void(const std::string& name)> release;  // done with that tensor (may be empty)
};
GgufExportResult write_gguf(const GgufSource& src, const std::string& out_path, const QuantMix& mix,
                            const ExportImportance* importance = nullptr);

// llama.cpp's name for a byte-level BPE tokenizer.json's pre-tokenizer (tokenizer.ggml.pre:
// "llama-bpe", "qwen2"); Error naming the file for any other.
std::string llama_cpp_pre_tokenizer(const std::string& model_dir);

}  // namespace lamina
