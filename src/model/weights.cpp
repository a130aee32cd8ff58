#include "model/weights.h"

#include <unordered_set>

#include "core/error.h"

namespace lamina {

const char* lora_module_name(int t) {
  static const char* names[] = {"q_proj",    "k_proj",  "v_proj",   "o_proj",
                                "gate_proj", "up_proj", "down_proj"};
  return t >= 0 && t < kLoraTargets ? names[t] : "?";
}

const char* expert_lora_module_name(int t) {
  static const char* names[] = {"w1", "w2", "w3"};
  return t >= 0 && t < kExpertLoraTargets ? names[t] : "?";
}

std::vector<TensorSpec> model_tensor_specs(const ModelConfig& c, MoeLayout layout) {
  const int64_t H = c.hidden_size, I = c.intermediate_size, V = c.vocab_size,
                E = c.num_local_experts;
  const int64_t Q = c.num_attention_heads * c.head_dim, KV = c.num_key_value_heads * c.head_dim;
  std::vector<TensorSpec> s;
  s.push_back({"model.embed_tokens.weight",
               {V, H},
               false,
               [tie = c.tie_word_embeddings](ModelWeights& w, const Tensor& t) {
                 w.embed = t;
                 if (tie) w.lm_head = t;
               }});
  for (int64_t l = 0; l < c.num_hidden_layers; ++l) {
    std::string p = "model.layers." + std::to_string(l) + ".";
    auto L = [l](ModelWeights& w) -> LayerWeights& { return w.layers[l]; };
    auto add = [&](std::string name, Shape shape, Tensor LayerWeights::*m, bool norm = false) {
      s.push_back(
          {p + name, shape, norm, [L, m](ModelWeights& w, const Tensor& t) { L(w).*m = t; }});
      s.back().is_router = m == &LayerWeights::router;
    };
    add("input_layernorm.weight", {H}, &LayerWeights::attn_norm, true);
    auto bias = [&](std::string name, int64_t n, Tensor LayerWeights::*m) {
      add(name, {n}, m);
      s.back().is_bias = true;
    };
    add("self_attn.q_proj.weight", {Q, H}, &LayerWeights::wq);
    if (c.qkv_bias) bias("self_attn.q_proj.bias", Q, &LayerWeights::bq);
    add("self_attn.k_proj.weight", {KV, H}, &LayerWeights::wk);
    if (c.qkv_bias) bias("self_attn.k_proj.bias", KV, &LayerWeights::bk);
    add("self_attn.v_proj.weight", {KV, H}, &LayerWeights::wv);
    if (c.qkv_bias) bias("self_attn.v_proj.bias", KV, &LayerWeights::bv);
    add("self_attn.o_proj.weight", {H, Q}, &LayerWeights::wo);
    if (c.o_bias) bias("self_attn.o_proj.bias", H, &LayerWeights::bo);
    if (c.qk_norm) {
      add("self_attn.q_norm.weight", {c.head_dim}, &LayerWeights::q_norm, true);
      add("self_attn.k_norm.weight", {c.head_dim}, &LayerWeights::k_norm, true);
    }
    if (c.sandwich_norms) {  // Gemma: post_attention_layernorm is on the attention's output
      add("post_attention_layernorm.weight", {H}, &LayerWeights::post_attn_norm, true);
      add("pre_feedforward_layernorm.weight", {H}, &LayerWeights::mlp_norm, true);
      add("post_feedforward_layernorm.weight", {H}, &LayerWeights::post_mlp_norm, true);
    }
    if (!c.is_moe()) {
      add("mlp.gate_proj.weight", {I, H}, &LayerWeights::w_gate);
      add("mlp.up_proj.weight", {I, H}, &LayerWeights::w_up);
      add("mlp.down_proj.weight", {H, I}, &LayerWeights::w_down);
    } else if (layout == MoeLayout::Split) {
      add("block_sparse_moe.gate.weight", {E, H}, &LayerWeights::router);
      for (int64_t e = 0; e < E; ++e) {
        std::string q = p + "block_sparse_moe.experts." + std::to_string(e) + ".";
        auto expert = [L, e, E](std::vector<Tensor> LayerWeights::*m) {
          return [L, e, E, m](ModelWeights& w, const Tensor& t) {
            auto& v = L(w).*m;
            v.resize(size_t(E));
            v[size_t(e)] = t;
          };
        };
        s.push_back({q + "w1.weight", {I, H}, false, expert(&LayerWeights::e_gate)});
        s.push_back({q + "w2.weight", {H, I}, false, expert(&LayerWeights::e_down)});
        s.push_back({q + "w3.weight", {I, H}, false, expert(&LayerWeights::e_up)});
      }
    } else {
      add("mlp.gate.weight", {E, H}, &LayerWeights::router);
      // gate_up_proj[e] is [2I, H]: rows [0, I) are the gate (w1), rows [I, 2I) the up (w3)
      // projection, so both are contiguous views.
      s.push_back({p + "mlp.experts.gate_up_proj",
                   {E, 2 * I, H},
                   false,
                   [L, E, I](ModelWeights& w, const Tensor& t) {
                     auto& lw = L(w);
                     lw.e_gate.clear(), lw.e_up.clear();
                     for (int64_t e = 0; e < E; ++e) {
                       Tensor x = t.select0(e);
                       lw.e_gate.push_back(x.slice_rows(0, I));
                       lw.e_up.push_back(x.slice_rows(I, 2 * I));
                     }
                   }});
      s.push_back(
          {p + "mlp.experts.down_proj", {E, H, I}, false, [L, E](ModelWeights& w, const Tensor& t) {
             auto& lw = L(w);
             lw.e_down.clear();
             for (int64_t e = 0; e < E; ++e) lw.e_down.push_back(t.select0(e));
           }});
    }
    if (!c.sandwich_norms)
      add("post_attention_layernorm.weight", {H}, &LayerWeights::mlp_norm, true);
  }
  s.push_back(
      {"model.norm.weight", {H}, true, [](ModelWeights& w, const Tensor& t) { w.norm = t; }});
  if (!c.tie_word_embeddings)
    s.push_back(
        {"lm_head.weight", {V, H}, false, [](ModelWeights& w, const Tensor& t) { w.lm_head = t; }});
  return s;
}

MoeLayout detect_moe_layout(const ModelConfig& c, const Checkpoint& ckpt) {
  if (!c.is_moe() || c.num_hidden_layers == 0) return MoeLayout::Split;
  if (ckpt.has("model.layers.0.block_sparse_moe.gate.weight")) return MoeLayout::Split;
  if (ckpt.has("model.layers.0.mlp.gate.weight")) return MoeLayout::Fused;
  fail(ckpt.dir(),
       ": missing tensor 'model.layers.0.block_sparse_moe.gate.weight' (nor the fused "
       "'model.layers.0.mlp.gate.weight')");
}

DType inference_dtype(const TensorSpec& spec, DType stored, std::optional<DType> requested) {
  if (spec.is_vector()) return DType::F32;
  const DType want = requested.value_or(stored == DType::F16 ? DType::F32 : stored);
  if (dtype_is_quantized(want) && want != stored &&
      (spec.is_router || spec.shape.back() % dtype_block(want) != 0))
    return DType::F32;
  return want;
}

void check_no_unknown_tensors(const ModelConfig& c, const Checkpoint& ckpt,
                              const std::vector<TensorSpec>& specs) {
  std::unordered_set<std::string> known;
  for (auto& s : specs) known.insert(s.name);
  for (const std::string& n : ckpt.names()) {
    if (known.count(n)) continue;
    // Buffers older transformers saved, and a tied head some checkpoints carry anyway: both are
    // ignored by transformers too.
    const std::string inv = "rotary_emb.inv_freq";
    if (n.size() >= inv.size() && n.compare(n.size() - inv.size(), inv.size(), inv) == 0) continue;
    if (n == "lm_head.weight" && c.tie_word_embeddings) continue;
    fail(ckpt.file_of(n), ": tensor '", n, "' has no place in a ", arch_name(c.arch), " model of ",
         c.num_hidden_layers,
         " layers (config.json); a checkpoint of another architecture or size?");
  }
}

ModelWeights load_weights(const ModelConfig& c, const Checkpoint& ckpt, const LoadOptions& opt) {
  ModelWeights w;
  w.layers.resize(size_t(c.num_hidden_layers));
  if (opt.dtype && *opt.dtype == DType::F16)
    fail("--dtype f16 is a storage type only; compute in f32 or bf16");
  const auto specs = model_tensor_specs(c, detect_moe_layout(c, ckpt));
  check_no_unknown_tensors(c, ckpt, specs);
  for (auto& spec : specs) {
    const TensorInfo& info = ckpt.info(spec.name);
    if (info.shape != spec.shape)
      fail(ckpt.file_of(spec.name), ": tensor '", spec.name, "' has shape ", shape_str(info.shape),
           ", config.json implies ", shape_str(spec.shape));
    Tensor t = ckpt.get(spec.name);
    const DType want = inference_dtype(spec, t.dtype, opt.dtype);
    if (t.dtype != want) t = t.to(want);
    spec.bind(w, t);
  }
  return w;
}

}  // namespace lamina
