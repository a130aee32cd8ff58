#include "model/gguf_export.h"

#include <cmath>
#include <cstring>
#include <filesystem>
#include <functional>
#include <map>
#include <vector>

#include "core/error.h"
#include "core/progress.h"
#include "io/gguf_names.h"
#include "io/gguf_writer.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"
#include "io/model_config.h"
#include "io/safetensors.h"
#include "kernels/ops.h"
#include "model/rope_frequencies.h"
#include "model/weights.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

namespace {

// A [rows, cols] block of an HF tensor: `rows` rows starting at element `offset`.
struct Slab {
  std::string name;
  int64_t offset = 0, rows = 0, cols = 0;
  int64_t permute_heads = 0;  // > 0: Q/K rows reordered for ggml's RoPE with this many heads
};

// The slab name of rope_freqs.weight, computed here rather than read from the source.
const char* const kRopeFreqsSource = "\x01rope_freqs";

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

GgufExportResult write_gguf(const GgufSource& src, const std::string& out_path, const QuantMix& mix,
                            const ExportImportance* importance) {
  const ModelConfig& c = src.cfg;
  const Tokenizer& tok = *src.tokenizer;
  const std::string& model_dir = src.name;
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size;
  const int64_t nh = c.num_attention_heads, nkv = c.num_key_value_heads, hd = c.head_dim;
  const int64_t E = c.num_local_experts;
  GgufExportResult res;

  // Which tensors, in llama.cpp's order, with their sources and types.
  std::vector<Planned> plan;
  MixModel mm;
  mm.n_layer = c.num_hidden_layers;
  mm.n_gqa = nh / nkv;
  mm.n_expert = E;
  mm.is_70b =
      c.num_hidden_layers == 80 && ((c.arch == Arch::Llama && nh != nkv) || c.arch == Arch::Qwen2);
  mm.tied = c.tie_word_embeddings;
  auto matrix_type = [&](const std::string& gguf_name, int64_t cols) {
    if (cols % ggml_block_elems(mix.base) != 0) ++res.fallbacks;
    const GgmlType t = mix_tensor_type(mix, mm, gguf_name, cols);
    ++res.matrices_by_type[ggml_type_name(t)];
    return t;
  };
  auto need = [&](const std::string& name, const Shape& shape) {
    if (src.check) src.check(name, shape);
  };
  auto mat = [&](const std::string& g, const std::string& hf, int64_t rows, int64_t cols,
                 int64_t heads = 0) {
    need(hf, {rows, cols});
    plan.push_back({g, {cols, rows}, matrix_type(g, cols), {{hf, 0, rows, cols, heads}}});
  };
  const bool fused = src.fused;
  // Llama 3.1+'s rope_scaling llama3 as llama.cpp carries it: rope_freqs.weight [hd/2], F32, the
  // divisor of each frequency (ggml_rope_cache_init divides theta by it), first in the file as
  // convert_hf_to_gguf writes it: 1 for short wavelengths, factor for long ones, a blend between
  // (original_max_position_embeddings from rope_scaling, where transformers takes it;
  // convert_hf_to_gguf reads a top-level key the Llama 3.x configs lack and falls back to 8192,
  // their value).
  std::vector<float> rope_factors;
  if (c.rope_scaling.type == "llama3") {
    // The divisor is the plain frequency over the scaled one (model/rope_frequencies.h), which
    // is convert_hf_to_gguf's 1 / ((1 - smooth) / factor + smooth) between the two bands.
    const std::vector<float> plain = rope_default_inv_freq(hd, c.rope_theta);
    const std::vector<float> scaled = rope_inv_freq(c);
    for (size_t i = 0; i < plain.size(); ++i) rope_factors.push_back(plain[i] / scaled[i]);
  } else if (c.rope_scaling.type == "freq_factors") {
    rope_factors = c.rope_scaling.freq_factors;  // a GGUF's own, written back as they were
  }
  if (!rope_factors.empty())
    plan.push_back({"rope_freqs.weight",
                    {int64_t(rope_factors.size())},
                    GgmlType::F32,
                    {{kRopeFreqsSource, 0, 1, int64_t(rope_factors.size())}}});
  // Shapes as config.json implies them; names from the table import shares (io/gguf_names.h).
  std::map<std::string, Shape> shape_of;
  for (auto& s : model_tensor_specs(c, fused ? MoeLayout::Fused : MoeLayout::Split))
    shape_of[s.name] = s.shape;
  const bool permute = gguf_permutes_rope(c.arch);
  auto add = [&](const std::string& g, const std::string& hf, int rope_heads) {
    const Shape& s = shape_of.at(hf);
    const int64_t heads = !permute ? 0 : rope_heads == 1 ? nh : rope_heads == 2 ? nkv : 0;
    if (s.size() == 2) return mat(g, hf, s[0], s[1], heads);
    need(hf, s);  // a vector; a Q or K bias is permuted as a one-column matrix
    plan.push_back({g, s, GgmlType::F32, {{hf, 0, s[0], 1, heads}}});
  };
  if (c.arch == Arch::Gemma2 || c.arch == Arch::Gemma3)
    fail(model_dir,
         ": export-gguf does not write Gemma 2 / 3 yet (llama.cpp's gemma2 / gemma3: norms stored "
         "as 1 + w, and Gemma's tokenizer.json as a SentencePiece-style vocabulary)");
  // yarn as llama.cpp computes it from the factor alone: beta 32 / 1 and 1 + 0.1 ln(factor).
  if (const RopeScaling& y = c.rope_scaling; y.type == "yarn") {
    const double mscale = y.factor <= 1 ? 1.0 : 1.0 + 0.1 * std::log(y.factor);
    if (y.beta_fast != 32 || y.beta_slow != 1 || !y.truncate ||
        std::abs(y.attention_factor - mscale) > 1e-12)
      fail(model_dir,
           ": rope_scaling yarn with beta_fast, beta_slow, truncate or "
           "attention_factor other than their defaults has no GGUF form written here");
  }
  // llama.cpp's qwen3 has no attention biases: a file holding them would not load there.
  if (c.arch == Arch::Qwen3 && c.qkv_bias)
    fail(model_dir, ": a qwen3 model with attention_bias has no GGUF form llama.cpp loads");
  add(kGgufModelTensors[0].gguf, kGgufModelTensors[0].hf, 0);  // token_embd
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    const std::string p = "model.layers." + std::to_string(l) + ".";
    const std::string b = "blk." + std::to_string(l) + ".";
    for (auto& n : kGgufLayerTensors) add(b + n.gguf, p + n.hf, n.rope_heads);
    for (auto& n : kGgufAttentionExtras)
      if (shape_of.count(p + n.hf)) add(b + n.gguf, p + n.hf, n.rope_heads);
    if (!c.is_moe()) {
      for (auto& n : kGgufDenseMlp) add(b + n.gguf, p + n.hf, 0);
      continue;
    }
    const std::string router = p + (fused ? "mlp.gate.weight" : "block_sparse_moe.gate.weight");
    need(router, {E, H});
    plan.push_back({b + kGgufRouter, {H, E}, GgmlType::F32, {{router, 0, E, H}}});
    Planned g{b + kGgufExperts[0].gguf, {H, I, E}, matrix_type(b + kGgufExperts[0].gguf, H), {}};
    Planned u{b + kGgufExperts[1].gguf, {H, I, E}, matrix_type(b + kGgufExperts[1].gguf, H), {}};
    Planned d{b + kGgufExperts[2].gguf, {I, H, E}, matrix_type(b + kGgufExperts[2].gguf, I), {}};
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

  // The importance rows each matrix quantizes with, checked before anything is written. A matrix
  // the imatrix does not name is quantized without one (as llama-quantize does for k-quants).
  std::vector<const float*> importance_of(plan.size(), nullptr);
  if (importance) {
    if (ggml_block_elems(mix.base) == 1 || mix.base == GgmlType::Q8_0)
      fail("--imatrix: ", mix.name,
           " does not use an importance matrix; it serves q4_0 and the k-quant mixes");
    for (size_t i = 0; i < plan.size(); ++i) {
      auto it = importance->rows.find(plan[i].gguf_name);
      if (it == importance->rows.end() || plan[i].ne.size() < 2) continue;
      const size_t want = size_t(plan[i].ne[0]) * plan[i].slabs.size();
      if (it->second.size() != want)
        fail("--imatrix: ", plan[i].gguf_name, " has ", it->second.size(), " values; its ",
             plan[i].slabs.size() > 1 ? "experts' rows need " : "rows need ", want);
      importance_of[i] = it->second.data();
    }
  }

  // Vocabulary: the tokenizer's pieces, padded to the embedding's rows as convert_hf_to_gguf does.
  std::vector<Tokenizer::Piece> vocab = tok.vocabulary();
  if (int64_t(vocab.size()) > V)
    fail(model_dir, ": the tokenizer has ", vocab.size(), " tokens but config.json vocab_size is ",
         V);
  std::vector<std::string> pieces;
  std::vector<float> scores;
  std::vector<int32_t> kinds;
  int32_t unk = 0;
  const bool gpt2 = !src.tokenizer_pre.empty();
  // convert_hf_to_gguf's get_vocab_base for "gpt2": added tokens marked special, or that look
  // special (<|...|>, <unused...>, <pad>, <mask>), are CONTROL; other added ones USER_DEFINED
  // (with SentencePiece's U+2581 as a space); holes [PAD{i}] UNUSED.
  auto looks_special = [](const std::string& t) {
    auto ends = [&](const char* e) {
      const size_t n = std::strlen(e);
      return t.size() >= n && t.compare(t.size() - n, n, e) == 0;
    };
    return t == "<pad>" || t == "<mask>" || t == "<2mass>" || t == "[@BOS@]" ||
           (t.rfind("<|", 0) == 0 && ends("|>")) ||
           (t.rfind("\xe2\x80\xb9\xef\xbd\x9c", 0) == 0 && ends("\xef\xbd\x9c>")) ||
           (t.rfind("<unused", 0) == 0 && ends(">"));
  };
  for (int64_t i = 0; i < V; ++i) {
    Tokenizer::Piece pc;
    if (i < int64_t(vocab.size()) && !(gpt2 && vocab[size_t(i)].text.empty()))
      pc = vocab[size_t(i)];
    else
      pc = {"[PAD" + std::to_string(i) + "]", 0.f, Tokenizer::PieceKind::Unused};
    if (gpt2 && pc.kind == Tokenizer::PieceKind::UserDefined) {
      if (looks_special(pc.text)) {
        pc.kind = Tokenizer::PieceKind::Control;
      } else {
        for (size_t at; (at = pc.text.find("\xe2\x96\x81")) != std::string::npos;)
          pc.text.replace(at, 3, " ");
      }
    }
    if (pc.kind == Tokenizer::PieceKind::Unknown) unk = int32_t(i);
    pieces.push_back(pc.text), scores.push_back(pc.score), kinds.push_back(int32_t(pc.kind));
  }

  GgufWriter w(out_path);
  const std::string arch = gguf_arch(c.arch);
  w.kv("general.architecture", arch);
  w.kv("general.name", std::filesystem::path(model_dir).filename().string());  // NOLINT
  w.kv_u32("general.file_type", mix.ftype);
  if (ggml_block_elems(mix.base) > 1) w.kv_u32("general.quantization_version", 2);
  w.kv_u32(arch + ".vocab_size", uint32_t(V));
  w.kv_u32(arch + ".context_length", uint32_t(c.max_position_embeddings));
  w.kv_u32(arch + ".embedding_length", uint32_t(H));
  w.kv_u32(arch + ".block_count", uint32_t(c.num_hidden_layers));
  w.kv_u32(arch + ".feed_forward_length", uint32_t(I));
  w.kv_u32(arch + ".rope.dimension_count", uint32_t(hd));
  w.kv_u32(arch + ".attention.head_count", uint32_t(nh));
  w.kv_u32(arch + ".attention.head_count_kv", uint32_t(nkv));
  if (nh * hd != H) {
    w.kv_u32(arch + ".attention.key_length", uint32_t(hd));
    w.kv_u32(arch + ".attention.value_length", uint32_t(hd));
  }
  w.kv_f32(arch + ".attention.layer_norm_rms_epsilon", float(c.rms_norm_eps));
  w.kv_f32(arch + ".rope.freq_base", float(c.rope_theta));
  if (c.rope_scaling.type == "linear") {  // convert_hf_to_gguf's keys for linear scaling
    w.kv(arch + ".rope.scaling.type", "linear");
    w.kv_f32(arch + ".rope.scaling.factor", float(c.rope_scaling.factor));
  } else if (c.rope_scaling.type == "yarn") {  // and for yarn (llama.cpp derives the rest)
    w.kv(arch + ".rope.scaling.type", "yarn");
    w.kv_f32(arch + ".rope.scaling.factor", float(c.rope_scaling.factor));
    w.kv_u32(arch + ".rope.scaling.original_context_length",
             uint32_t(c.rope_scaling.original_max_position_embeddings));
  }
  if (c.is_moe()) {
    w.kv_u32(arch + ".expert_count", uint32_t(E));
    w.kv_u32(arch + ".expert_used_count", uint32_t(c.num_experts_per_tok));
  }
  if (gpt2) {
    // _set_vocab_gpt2: tokens, types and merges, no scores; the special ids tokenizer_config.json
    // names; add_bos_token only where it says (llama.cpp's pre-tokenizer has its own default).
    w.kv("tokenizer.ggml.model", "gpt2");
    w.kv("tokenizer.ggml.pre", src.tokenizer_pre);
    w.kv("tokenizer.ggml.tokens", pieces);
    w.kv("tokenizer.ggml.token_type", kinds);
    w.kv("tokenizer.ggml.merges", tok.bpe_merges());
    if (tok.bos_id() >= 0) w.kv_u32("tokenizer.ggml.bos_token_id", uint32_t(tok.bos_id()));
    if (tok.eos_id() >= 0) w.kv_u32("tokenizer.ggml.eos_token_id", uint32_t(tok.eos_id()));
    if (src.pad_id) w.kv_u32("tokenizer.ggml.padding_token_id", uint32_t(*src.pad_id));
    if (src.add_bos_token) w.kv_bool("tokenizer.ggml.add_bos_token", *src.add_bos_token);
  } else {
    w.kv("tokenizer.ggml.model", "llama");
    w.kv("tokenizer.ggml.tokens", pieces);
    w.kv("tokenizer.ggml.scores", scores);
    w.kv("tokenizer.ggml.token_type", kinds);
    w.kv_u32("tokenizer.ggml.bos_token_id", uint32_t(tok.bos_id()));
    w.kv_u32("tokenizer.ggml.eos_token_id", uint32_t(tok.eos_id()));
    w.kv_u32("tokenizer.ggml.unknown_token_id", uint32_t(unk));
    w.kv_bool("tokenizer.ggml.add_bos_token", tok.add_bos_default());
    w.kv_bool("tokenizer.ggml.add_eos_token", false);
  }
  if (!tok.chat_template().empty()) w.kv("tokenizer.chat_template", tok.chat_template());
  if (importance) {  // llama-quantize's record of the imatrix, after the model's own metadata
    w.kv("quantize.imatrix.file", importance->file);
    if (!importance->dataset.empty()) w.kv("quantize.imatrix.dataset", importance->dataset);
    w.kv_i32("quantize.imatrix.entries_count", int32_t(importance->rows.size()));
    if (importance->chunks > 0)
      w.kv_i32("quantize.imatrix.chunks_count", int32_t(importance->chunks));
  }

  for (auto& t : plan) w.add_tensor(t.gguf_name, t.ne, t.type);
  uint64_t total = 0;
  for (size_t i = 0; i < plan.size(); ++i) total += w.tensor_bytes(i);
  w.begin_data();
  Progress bar("export-gguf", int64_t(total), "B");
  std::vector<uint8_t> out;
  for (size_t ti = 0; ti < plan.size(); ++ti) {
    const Planned& t = plan[ti];
    for (size_t si = 0; si < t.slabs.size(); ++si) {
      const Slab& s = t.slabs[si];
      const float* qw = importance_of[ti] ? importance_of[ti] + si * size_t(s.cols) : nullptr;
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
          if (s.name == kRopeFreqsSource)
            std::copy(rope_factors.begin(), rope_factors.end(), row.begin());
          else
            src.read(s.name, s.offset + from * s.cols, s.cols, row.data());
          quantize_row(t.type, row.data(), s.cols, out.data() + size_t(r) * rb, qw);
        }
      }
      w.write(out.data(), out.size());
      if (src.release && s.name != kRopeFreqsSource) src.release(s.name);
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

std::string llama_cpp_pre_tokenizer(const std::string& model_dir) {
  // llama.cpp names a byte-level BPE's pre-tokenizer (tokenizer.ggml.pre) by the ids its
  // tokenizer gives a check text; the split regex decides those ids, so it is recognised here by
  // that regex: Llama 3's (digits in runs of up to 3) or Qwen2's (single digits).
  const std::string path = model_dir + "/tokenizer.json";
  const nlohmann::json j = read_json_file(path);
  const nlohmann::json& model = j.value("model", nlohmann::json::object());
  if (model.value("type", std::string()) != "BPE")
    fail(path, ": export-gguf writes byte-level BPE tokenizer.json files (Llama 3, Qwen2) only");
  std::vector<std::string> regexes;
  bool byte_level = false;
  std::function<void(const nlohmann::json&)> walk = [&](const nlohmann::json& p) {
    if (!p.is_object()) return;
    const std::string type = p.value("type", std::string());
    if (type == "Sequence" && p.contains("pretokenizers"))
      for (auto& q : p["pretokenizers"]) walk(q);
    if (type == "ByteLevel") byte_level = true;
    if (type == "Split" && p.contains("pattern") && p["pattern"].is_object() &&
        p["pattern"].contains("Regex"))
      regexes.push_back(p["pattern"]["Regex"].get<std::string>());
  };
  walk(j.value("pre_tokenizer", nlohmann::json()));
  const std::string letters = "(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\\r\\n\\p{L}\\p{N}]?\\p{L}+|";
  const std::string rest = "| ?[^\\s\\p{L}\\p{N}]+[\\r\\n]*|\\s*[\\r\\n]+|\\s+(?!\\S)|\\s+";
  if (byte_level && regexes.size() == 1) {
    if (regexes[0] == letters + "\\p{N}{1,3}" + rest) return "llama-bpe";
    if (regexes[0] == letters + "\\p{N}" + rest) return "qwen2";
  }
  fail(path,
       ": its pre-tokenizer is not one llama.cpp names here (Llama 3's llama-bpe, Qwen2's qwen2); "
       "export-gguf cannot say how llama.cpp should split its text");
}

ExportImportance read_export_importance(const std::string& imatrix_path) {
  const ImatrixData d = read_imatrix(imatrix_path);
  ExportImportance e;
  e.rows = importance_rows(d);
  e.file = imatrix_path;
  if (!d.datasets.empty()) e.dataset = d.datasets[0];
  e.chunks = d.chunk_count;
  return e;
}

GgufExportResult export_gguf(const std::string& model_dir, const std::string& out_path,
                             const QuantMix& mix, const ExportImportance* importance) {
  const Checkpoint ck(model_dir);
  const Tokenizer tok = Tokenizer::load(model_dir);
  GgufSource src{ModelConfig::load(model_dir), &tok, model_dir,
                 ck.has("model.layers.0.mlp.experts.gate_up_proj")};
  if (tok.is_tokenizer_json()) {
    src.tokenizer_pre = llama_cpp_pre_tokenizer(model_dir);
    const std::string cfg_path = model_dir + "/tokenizer_config.json";
    if (file_exists(cfg_path)) {
      const nlohmann::json tc = read_json_file(cfg_path);
      if (auto it = tc.find("add_bos_token"); it != tc.end() && it->is_boolean())
        src.add_bos_token = it->get<bool>();
      if (auto it = tc.find("pad_token"); it != tc.end()) {
        const std::string pad = it->is_string()   ? it->get<std::string>()
                                : it->is_object() ? it->value("content", std::string())
                                                  : std::string();
        if (!pad.empty()) src.pad_id = tok.token_id(pad);
      }
    }
  }
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
  return write_gguf(src, out_path, mix, importance);
}

}  // namespace lamina
