#include "model/gguf_export.h"

#include <filesystem>
#include <functional>
#include <map>
#include <vector>

#include "core/error.h"
#include "core/progress.h"
#include "io/gguf_names.h"
#include "io/gguf_writer.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

uint32_t gguf_file_type(GgmlType t) {
  switch (t) {
    case GgmlType::F32:
      return 0;  // LLAMA_FTYPE_ALL_F32
    case GgmlType::F16:
      return 1;  // MOSTLY_F16
    case GgmlType::Q4_0:
      return 2;  // MOSTLY_Q4_0
    case GgmlType::Q8_0:
      return 7;  // MOSTLY_Q8_0
    case GgmlType::BF16:
      return 32;  // MOSTLY_BF16
    case GgmlType::Q4_K:
    case GgmlType::Q5_K:
    case GgmlType::Q6_K:
      break;  // not written by lamina (no k-quant quantizer)
  }
  return 0;
}

namespace {

// A [rows, cols] block of an HF tensor: `rows` rows starting at element `offset`.
struct Slab {
  std::string name;
  int64_t offset = 0, rows = 0, cols = 0;
  int64_t permute_heads = 0;  // > 0: Q/K rows reordered for ggml's RoPE with this many heads
};

struct Planned {
  std::string gguf_name;
  std::vector<int64_t> ne;
  GgmlType type;
  std::vector<Slab> slabs;  // concatenated in order (experts: one slab each)
};

// HF row r of a head's [head_dim] block -> GGUF row: within each head, HF's halves
// (0..hd/2, hd/2..hd) become interleaved pairs (convert_hf_to_gguf's permute:
// reshape(heads, 2, hd/2, cols).swapaxes(1, 2)).
int64_t permuted_source_row(int64_t out_row, int64_t rows, int64_t heads) {
  const int64_t hd = rows / heads, h = out_row / hd, i = out_row % hd;
  return h * hd + (i % 2) * (hd / 2) + i / 2;
}

}  // namespace

GgufExportResult write_gguf(const GgufSource& src, const std::string& out_path, GgmlType type) {
  const ModelConfig& c = src.cfg;
  const Tokenizer& tok = *src.tokenizer;
  const std::string& model_dir = src.name;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  const int64_t E = c.num_local_experts;
  GgufExportResult res;

  // Which tensors, in llama.cpp's order, with their sources and types.
  std::vector<Planned> plan;
  auto matrix_type = [&](int64_t cols) {
    if (cols % ggml_block_elems(type) == 0) return type;
    ++res.fallback_f16;
    return GgmlType::F16;
  };
  auto need = [&](const std::string& name, const Shape& shape) {
    if (src.check) src.check(name, shape);
  };
  auto vec = [&](const std::string& g, const std::string& hf, int64_t n) {
    need(hf, {n});
    plan.push_back({g, {n}, GgmlType::F32, {{hf, 0, 1, n}}});
  };
  auto mat = [&](const std::string& g, const std::string& hf, int64_t rows, int64_t cols,
                 int64_t heads = 0) {
    need(hf, {rows, cols});
    plan.push_back({g, {cols, rows}, matrix_type(cols), {{hf, 0, rows, cols, heads}}});
  };
  const bool fused = src.fused;
  // Shapes as config.json implies them; names from the table import shares (io/gguf_names.h).
  std::map<std::string, Shape> shape_of;
  for (auto& s : model_tensor_specs(c, fused ? MoeLayout::Fused : MoeLayout::Split))
    shape_of[s.name] = s.shape;
  auto add = [&](const std::string& g, const std::string& hf, int rope_heads) {
    const Shape& s = shape_of.at(hf);
    if (s.size() == 1) return vec(g, hf, s[0]);
    mat(g, hf, s[0], s[1], rope_heads == 1 ? nh : rope_heads == 2 ? nkv : 0);
  };
  add(kGgufModelTensors[0].gguf, kGgufModelTensors[0].hf, 0);  // token_embd
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string b = "blk." + std::to_string(l) + ".";
    for (auto& n : kGgufLayerTensors) add(b + n.gguf, p + n.hf, n.rope_heads);
    if (!c.is_moe()) {
      for (auto& n : kGgufDenseMlp) add(b + n.gguf, p + n.hf, 0);
      continue;
    }
    const std::string router = p + (fused ? "mlp.gate.weight" : "block_sparse_moe.gate.weight");
    need(router, {E, H});
    plan.push_back({b + kGgufRouter, {H, E}, GgmlType::F32, {{router, 0, E, H}}});
    Planned g{b + kGgufExperts[0].gguf, {H, I, E}, matrix_type(H), {}};
    Planned u{b + kGgufExperts[1].gguf, {H, I, E}, g.type, {}};
    Planned d{b + kGgufExperts[2].gguf, {I, H, E}, matrix_type(I), {}};
    if (fused) {
      const std::string gu = p + "mlp.experts.gate_up_proj", dn = p + "mlp.experts.down_proj";
      need(gu, {E, 2 * I, H});
      need(dn, {E, H, I});
      for (int64_t e = 0; e < E; ++e) {
        g.slabs.push_back({gu, e * 2 * I * H, I, H});
        u.slabs.push_back({gu, e * 2 * I * H + I * H, I, H});
        d.slabs.push_back({dn, e * H * I, H, I});
      }
    } else {
      // Per-expert matrices w1 (gate), w3 (up), w2 (down) of [rows, cols], stacked in order.
      const struct {
        Planned* t;
        const char* hf;
        int64_t rows, cols;
      } parts[] = {{&g, kGgufExperts[0].hf, I, H},
                   {&u, kGgufExperts[1].hf, I, H},
                   {&d, kGgufExperts[2].hf, H, I}};
      for (int64_t e = 0; e < E; ++e)
        for (auto& x : parts) {
          const std::string hf = p + "block_sparse_moe.experts." + std::to_string(e) + "." + x.hf;
          need(hf, {x.rows, x.cols});
          x.t->slabs.push_back({hf, 0, x.rows, x.cols});
        }
    }
    plan.push_back(std::move(g)), plan.push_back(std::move(u)), plan.push_back(std::move(d));
  }
  add(kGgufModelTensors[1].gguf, kGgufModelTensors[1].hf, 0);  // output_norm
  if (!c.tie_word_embeddings) add(kGgufModelTensors[2].gguf, kGgufModelTensors[2].hf, 0);

  // Vocabulary: the tokenizer's pieces, padded to the embedding's rows as convert_hf_to_gguf does.
  std::vector<Tokenizer::Piece> vocab = tok.vocabulary();
  if (int64_t(vocab.size()) > V)
    fail(model_dir, ": the tokenizer has ", vocab.size(), " tokens but config.json vocab_size is ",
         V);
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> kinds;
  int32_t unk = 0;
  for (int64_t i = 0; i < V; ++i) {
    Tokenizer::Piece pc;
    if (i < int64_t(vocab.size()))
      pc = vocab[size_t(i)];
    else
      pc = {"[PAD" + std::to_string(i) + "]", 0.f, Tokenizer::PieceKind::Unused};
    if (pc.kind == Tokenizer::PieceKind::Unknown) unk = int32_t(i);
    pieces.push_back(pc.text), scores.push_back(pc.score), kinds.push_back(int32_t(pc.kind));
  }

  GgufWriter w(out_path);
  w.kv("general.architecture", "llama");
  w.kv("general.name", std::filesystem::path(model_dir).filename().string());  // NOLINT
  w.kv_u32("general.file_type", gguf_file_type(type));
  if (type == GgmlType::Q8_0 || type == GgmlType::Q4_0) w.kv_u32("general.quantization_version", 2);
  w.kv_u32("llama.vocab_size", uint32_t(V));
  w.kv_u32("llama.context_length", uint32_t(c.max_position_embeddings));
  w.kv_u32("llama.embedding_length", uint32_t(H));
  w.kv_u32("llama.block_count", uint32_t(c.num_hidden_layers));
  w.kv_u32("llama.feed_forward_length", uint32_t(I));
  w.kv_u32("llama.rope.dimension_count", uint32_t(hd));
  w.kv_u32("llama.attention.head_count", uint32_t(nh));
  w.kv_u32("llama.attention.head_count_kv", uint32_t(nkv));
  if (nh * hd != H) {
    w.kv_u32("llama.attention.key_length", uint32_t(hd));
    w.kv_u32("llama.attention.value_length", uint32_t(hd));
  }
  w.kv_f32("llama.attention.layer_norm_rms_epsilon", float(c.rms_norm_eps));
  w.kv_f32("llama.rope.freq_base", float(c.rope_theta));
  if (c.is_moe()) {
    w.kv_u32("llama.expert_count", uint32_t(E));
    w.kv_u32("llama.expert_used_count", uint32_t(c.num_experts_per_tok));
  }
  w.kv("tokenizer.ggml.model", "llama");
  w.kv("tokenizer.ggml.tokens", pieces);
  w.kv("tokenizer.ggml.scores", scores);
  w.kv("tokenizer.ggml.token_type", kinds);
  w.kv_u32("tokenizer.ggml.bos_token_id", uint32_t(tok.bos_id()));
  w.kv_u32("tokenizer.ggml.eos_token_id", uint32_t(tok.eos_id()));
  w.kv_u32("tokenizer.ggml.unknown_token_id", uint32_t(unk));
  w.kv_bool("tokenizer.ggml.add_bos_token", tok.add_bos_default());
  w.kv_bool("tokenizer.ggml.add_eos_token", false);
  if (!tok.chat_template().empty()) w.kv("tokenizer.chat_template", tok.chat_template());

  for (auto& t : plan) w.add_tensor(t.gguf_name, t.ne, t.type);
  uint64_t total = 0;
  for (size_t i = 0; i < plan.size(); ++i) total += w.tensor_bytes(i);
  w.begin_data();
  Progress bar("export-gguf", int64_t(total), "B");
  std::vector<uint8_t> out;
  for (size_t ti = 0; ti < plan.size(); ++ti) {
    const Planned& t = plan[ti];
    for (const Slab& s : t.slabs) {
      const size_t rb = ggml_row_bytes(t.type, s.cols);
      out.resize(rb * size_t(s.rows));
      // Row by row (in parallel): the source row to F32, then to the block type.
#pragma omp parallel
      {
        std::vector<float> row(static_cast<size_t>(s.cols));
#pragma omp for schedule(static)
        for (int64_t r = 0; r < s.rows; ++r) {
          const int64_t from =
              s.permute_heads ? permuted_source_row(r, s.rows, s.permute_heads) : r;
          src.read(s.name, s.offset + from * s.cols, s.cols, row.data());
          quantize_row(t.type, row.data(), s.cols, out.data() + size_t(r) * rb);
        }
      }
      w.write(out.data(), out.size());
      if (src.release) src.release(s.name);
      bar.advance(int64_t(out.size()));
    }
  }
  bar.finish();
  w.finish();
  res.tensors = int64_t(plan.size());
  if (c.sliding_window && *c.sliding_window < c.max_position_embeddings)
    res.sliding_window = *c.sliding_window;
  res.bytes = std::filesystem::file_size(out_path);
  return res;
}

GgufExportResult export_gguf(const std::string& model_dir, const std::string& out_path,
                             GgmlType type) {
  const Checkpoint ck(model_dir);
  const Tokenizer tok = Tokenizer::load(model_dir);
  if (tok.is_tokenizer_json())
    fail(model_dir, ": export-gguf writes SentencePiece vocabularies only; this model's tokenizer ",
         "is a tokenizer.json (BPE merges, GGUF's \"gpt2\" tokenizer model: not supported yet)");
  GgufSource src{ModelConfig::load(model_dir), &tok, model_dir,
                 ck.has("model.layers.0.mlp.experts.gate_up_proj")};
  if (!src.cfg.rope_scaling.type.empty())
    fail(model_dir, "/config.json: rope_scaling '", src.cfg.rope_scaling.type,
         "' is not written to GGUF yet (llama.cpp's rope_freqs tensor)");
  src.check = [&](const std::string& name, const Shape& shape) {
    const TensorInfo& in = ck.info(name);  // fails naming the missing tensor
    if (in.shape != shape)
      fail(ck.file_of(name), ": tensor '", name, "' has shape ", shape_str(in.shape),
           ", config.json implies ", shape_str(shape));
  };
  src.read = [&](const std::string& name, int64_t offset, int64_t n, float* out) {
    const Tensor t = ck.get(name);  // a view of the map: cheap
    convert_to_f32(static_cast<const uint8_t*>(t.data) + dtype_bytes(t.dtype, offset), t.dtype, out,
                   size_t(n));
  };
  src.release = [&](const std::string& name) { ck.release(name); };
  return write_gguf(src, out_path, type);
}

}  // namespace lamina
