#include "train/params.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/safetensors.h"

namespace lamina {

// An empty store for cfg: the tensor list, offsets, zeroed buffers, everything trainable.
ParamStore ParamStore::allocate(const ModelConfig& cfg, MoeLayout layout,
                                const std::vector<bool>& outside) {
  ParamStore s;
  s.cfg = cfg;
  s.layout = layout;
  s.specs = model_tensor_specs(cfg, layout);
  s.stored.assign(s.specs.size(), Tensor{});
  s.trainable.assign(s.specs.size(), true);
  for (size_t i = 0; i < s.specs.size(); ++i) {
    if (i < outside.size() && outside[i]) {
      s.offset.push_back(kNoParam);
      s.trainable[i] = false;  // a frozen base: no master copy to update
      continue;
    }
    s.offset.push_back(s.total);
    s.total += size_t(shape_numel(s.specs[i].shape));
  }
  s.goffset = s.offset, s.gtotal = s.total;
  s.params = Tensor::zeros(DType::F32, {int64_t(s.total)});
  s.grads = Tensor::zeros(DType::F32, {int64_t(s.total)});
  return s;
}

// Binds weight, gradient and compute views of every tensor into the current buffers.
void ParamStore::bind_views() {
  weights = ModelWeights{};
  grad_views = ModelWeights{};
  weights.layers.resize(size_t(cfg.num_hidden_layers));
  grad_views.layers.resize(size_t(cfg.num_hidden_layers));
  for (size_t i = 0; i < specs.size(); ++i) {
    if (!has_param(i)) {
      specs[i].bind(weights, stored[i]);
      continue;
    }
    specs[i].bind(weights, Tensor::view_of(param(i), DType::F32, specs[i].shape, params.owner));
    if (has_grad(i))
      specs[i].bind(grad_views, Tensor::view_of(grad(i), DType::F32, specs[i].shape, grads.owner));
  }
  set_compute_dtype(compute_dtype);
}

ParamStore ParamStore::from_checkpoint(const ModelConfig& cfg, const Checkpoint& ckpt,
                                       const std::optional<FrozenBase>& base) {
  const MoeLayout layout = detect_moe_layout(cfg, ckpt);
  const auto specs = model_tensor_specs(cfg, layout);
  check_no_unknown_tensors(cfg, ckpt, specs);
  // Every shape first (before any allocation), then where each tensor is kept.
  std::vector<bool> outside(specs.size(), false);
  std::vector<DType> kept(specs.size(), DType::F32);
  for (size_t i = 0; i < specs.size(); ++i) {
    const auto& sp = specs[i];
    const TensorInfo& info = ckpt.info(sp.name);
    if (info.shape != sp.shape)
      fail(ckpt.file_of(sp.name), ": tensor '", sp.name, "' has shape ", shape_str(info.shape),
           ", config.json implies ", shape_str(sp.shape));
    if (!base || sp.is_vector() || sp.is_router || !base->frozen(sp)) continue;
    kept[i] = inference_dtype(sp, info.dtype, base->dtype);  // F32 where rows are not whole blocks
    // QLoRA quantizes the decoder's Linear layers only: the embedding, the LM head (and fused 3-D
    // expert tensors, whose NF4 statistics would span experts) stay as stored.
    if (base->dtype == DType::NF4 &&
        (sp.shape.size() != 2 || sp.name.rfind("model.layers.", 0) != 0))
      kept[i] = info.dtype;
    outside[i] = kept[i] != DType::F32;
  }
  ParamStore s = allocate(cfg, layout, outside);
  for (size_t i = 0; i < s.specs.size(); ++i) {
    const auto& sp = s.specs[i];
    Tensor src = ckpt.get(sp.name);
    if (!outside[i]) {
      convert_to_f32(src.data, src.dtype, s.param(i), size_t(src.numel()));
    } else if (src.dtype == kept[i]) {
      s.stored[i] = src;  // a view of the mapped file: nothing copied
      s.note_mapped(i);
      continue;
    } else {
      s.stored[i] = src.to(kept[i]);
    }
    ckpt.release(sp.name);  // copied: its pages need not stay resident
  }
  s.bind_views();
  return s;
}

ParamStore ParamStore::load(const std::string& dir, const std::optional<FrozenBase>& base) {
  ModelConfig cfg = ModelConfig::load(dir);
  Checkpoint ckpt(dir);
  return from_checkpoint(cfg, ckpt, base);
}

ParamStore ParamStore::from_gguf(const GgufCheckpoint& ck) {
  const auto specs = model_tensor_specs(ck.cfg, MoeLayout::Split);
  std::vector<bool> outside(specs.size(), false);
  for (size_t i = 0; i < specs.size(); ++i)
    outside[i] = !specs[i].is_vector() && !specs[i].is_router &&
                 ck.tensors.at(specs[i].name).dtype != DType::F32;
  ParamStore s = allocate(ck.cfg, MoeLayout::Split, outside);
  for (size_t i = 0; i < s.specs.size(); ++i) {
    const Tensor& t = ck.tensors.at(s.specs[i].name);
    if (outside[i]) {
      s.stored[i] = t;
      if (ck.is_view(t)) s.note_mapped(i);
    } else
      convert_to_f32(t.data, t.dtype, s.param(i), size_t(t.numel()));
  }
  s.bind_views();
  return s;
}

void ParamStore::note_mapped(size_t i) {
  const std::string& n = specs[i].name;
  if (n.rfind("model.layers.", 0) != 0) return;  // embedding, LM head: kept resident
  const size_t l = size_t(std::stoll(n.substr(13)));
  if (mapped_by_layer.size() <= l) mapped_by_layer.resize(l + 1);
  mapped_by_layer[l].push_back(i);
}

void ParamStore::release_layer_pages(int64_t layer) const {
  if (size_t(layer) >= mapped_by_layer.size()) return;
  for (size_t i : mapped_by_layer[size_t(layer)])
    release_mapped_pages(stored[i].data, stored[i].nbytes());
}

size_t ParamStore::stored_bytes() const {
  size_t n = 0;
  for (auto& t : stored)
    if (t.defined()) n += t.nbytes();
  return n;
}

void ParamStore::freeze(const std::vector<int64_t>& layers, bool freeze_embeddings) {
  for (size_t i = 0; i < specs.size(); ++i) {
    const std::string& n = specs[i].name;
    if (n.rfind("model.layers.", 0) == 0) {
      int64_t l = std::stoll(n.substr(13));
      if (std::find(layers.begin(), layers.end(), l) != layers.end()) trainable[i] = false;
    } else if (freeze_embeddings) {
      trainable[i] = false;
    }
  }
}

int64_t ParamStore::num_trainable() const {
  int64_t n = 0;
  for (size_t i = 0; i < specs.size(); ++i)
    if (trainable[i]) n += shape_numel(specs[i].shape);
  return n;
}

void ParamStore::compact_grads() {
  goffset.assign(specs.size(), kNoGrad);
  gtotal = 0;
  for (size_t i = 0; i < specs.size(); ++i) {
    LAMINA_CHECK(!trainable[i] || has_param(i), "tensor '", specs[i].name,
                 "' is kept as a frozen base but marked trainable");
    if (trainable[i]) goffset[i] = gtotal, gtotal += size_t(numel(i));
  }
  grads = Tensor::zeros(DType::F32, {int64_t(gtotal)});
  bind_views();
}

void ParamStore::append(const std::vector<TensorSpec>& extra,
                        const std::function<void(size_t, float*)>& init) {
  LAMINA_CHECK(gtotal == total, "ParamStore::append after compact_grads");
  const size_t old_total = total, first = specs.size();
  for (auto& sp : extra) {
    specs.push_back(sp);
    offset.push_back(total);
    total += size_t(shape_numel(sp.shape));
    trainable.push_back(true);
  }
  Tensor np = Tensor::zeros(DType::F32, {int64_t(total)}),
         ng = Tensor::zeros(DType::F32, {int64_t(total)});
  std::memcpy(np.data, params.data, old_total * sizeof(float));
  std::memcpy(ng.data, grads.data, old_total * sizeof(float));
  params = np;
  grads = ng;
  goffset = offset, gtotal = total;
  for (size_t i = first; i < specs.size(); ++i) init(i - first, param(i));
  bind_views();
}

void ParamStore::resize_vocab(int64_t V) {
  if (V == cfg.vocab_size) return;
  if (V < cfg.vocab_size)
    fail("resize_vocab: cannot shrink the vocabulary from ", cfg.vocab_size, " to ", V);
  LAMINA_CHECK(gtotal == total, "ParamStore::resize_vocab after compact_grads");
  for (size_t i = 0; i < specs.size(); ++i)
    if (!has_param(i) &&
        (specs[i].name == "model.embed_tokens.weight" || specs[i].name == "lm_head.weight"))
      fail("the tokenizer has ", V, " tokens and the model's embedding ", cfg.vocab_size,
           " rows: new rows cannot be added to a frozen base kept in ", dtype_name(stored[i].dtype),
           " (--base-dtype); use a template whose tokens the model "
           "has, or train without --base-dtype");
  ParamStore old = std::move(*this);
  ModelConfig c = old.cfg;
  const int64_t oldV = c.vocab_size, H = c.hidden_size;
  c.vocab_size = V;
  ParamStore& s = *this;
  std::vector<bool> outside(old.specs.size());
  for (size_t i = 0; i < old.specs.size(); ++i) outside[i] = !old.has_param(i);
  s = allocate(c, old.layout, outside);
  s.compute_dtype = old.compute_dtype;
  s.mapped_by_layer = old.mapped_by_layer;
  s.base_vocab = old.base_vocab ? old.base_vocab : oldV;
  for (size_t i = 0; i < s.specs.size(); ++i) {
    const auto& sp = s.specs[i];
    if (outside[i]) {  // a frozen base tensor other than the embedding: kept as it is
      s.stored[i] = old.stored[i];
      s.trainable[i] = old.trainable[i];
      continue;
    }
    const float* src = old.params.f32() + old.offset[i];  // same spec order and names
    float* dst = s.param(i);
    if (sp.name == "model.embed_tokens.weight" || sp.name == "lm_head.weight") {
      std::memcpy(dst, src, size_t(oldV * H) * 4);
      std::vector<double> mean(static_cast<size_t>(H), 0.0);
      for (int64_t r = 0; r < oldV; ++r)
        for (int64_t h = 0; h < H; ++h) mean[size_t(h)] += src[r * H + h];
      for (int64_t r = oldV; r < V; ++r)
        for (int64_t h = 0; h < H; ++h) dst[r * H + h] = float(mean[size_t(h)] / double(oldV));
    } else {
      std::memcpy(dst, src, size_t(s.numel(i)) * 4);
    }
  }
  s.bind_views();
}

void ParamStore::set_compute_dtype(DType t) {
  if (t != DType::F32 && t != DType::BF16) fail("--precision: training computes in f32 or bf16");
  compute_dtype = t;
  compute = ModelWeights{};
  compute.layers.resize(size_t(cfg.num_hidden_layers));
  compute_copies.assign(specs.size(), Tensor{});
  for (size_t i = 0; i < specs.size(); ++i) {
    auto& sp = specs[i];
    if (!has_param(i)) {
      sp.bind(compute, stored[i]);  // a frozen base is computed with as it is kept
    } else if (t == DType::BF16 && !sp.is_vector() && !sp.is_router) {  // the router stays F32
      compute_copies[i] = Tensor::empty(DType::BF16, sp.shape);
      sp.bind(compute, compute_copies[i]);
    } else {
      sp.bind(compute, Tensor::view_of(param(i), DType::F32, sp.shape, params.owner));
    }
  }
  refresh_compute();
}

void ParamStore::refresh_compute() {
  for (size_t i = 0; i < specs.size(); ++i)
    if (compute_copies.size() > i && compute_copies[i].defined()) {
      const int64_t n = numel(i);
      uint16_t* dst = compute_copies[i].as<uint16_t>();
      const float* src = param(i);
#pragma omp parallel for simd if (n > 65536)
      for (int64_t k = 0; k < n; ++k) dst[k] = f32_to_bf16(src[k]);
    }
}

void ParamStore::zero_grads() {
  std::memset(grads.data, 0, gtotal * sizeof(float));
}

void ParamStore::save_weights(const std::string& dir, DType dtype, uint64_t shard_bytes) const {
  std::vector<SafetensorsWriter::Planned> plan;
  for (auto& sp : specs) plan.push_back({sp.name, dtype, sp.shape});
  SafetensorsWriter w(dir, plan, shard_bytes);
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t n = size_t(shape_numel(specs[i].shape));
    if (!has_param(i) && stored[i].dtype == dtype) {  // a frozen base tensor, already in dtype
      w.write(specs[i].name, stored[i].data, stored[i].nbytes());
      continue;
    }
    Tensor wide;  // a frozen base tensor widened (one tensor at a time)
    if (!has_param(i)) wide = stored[i].to(DType::F32);
    buf.resize(n * dtype_size(dtype));
    convert_from_f32(has_param(i) ? params.f32() + offset[i] : wide.f32(), buf.data(), dtype, n);
    w.write(specs[i].name, buf.data(), buf.size());
  }
  w.finish();
}

}  // namespace lamina
