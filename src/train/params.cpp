#include "train/params.h"

#include <algorithm>
#include <cstring>

#include "core/error.h"
#include "io/safetensors.h"

namespace lamina {

ParamStore ParamStore::from_checkpoint(const ModelConfig& cfg, const Checkpoint& ckpt) {
  ParamStore s;
  s.cfg = cfg;
  s.layout = detect_moe_layout(cfg, ckpt);
  s.specs = model_tensor_specs(cfg, s.layout);
  for (auto& sp : s.specs) {
    s.offset.push_back(s.total);
    s.total += size_t(shape_numel(sp.shape));
  }
  s.trainable.assign(s.specs.size(), true);
  s.params = Tensor::zeros(DType::F32, {int64_t(s.total)});
  s.grads = Tensor::zeros(DType::F32, {int64_t(s.total)});
  s.weights.layers.resize(size_t(cfg.num_hidden_layers));
  s.grad_views.layers.resize(size_t(cfg.num_hidden_layers));
  for (size_t i = 0; i < s.specs.size(); ++i) {
    auto& sp = s.specs[i];
    const TensorInfo& info = ckpt.info(sp.name);
    if (info.shape != sp.shape)
      fail(ckpt.file_of(sp.name), ": tensor '", sp.name, "' has shape ", shape_str(info.shape), ", config.json implies ",
           shape_str(sp.shape));
    Tensor src = ckpt.get(sp.name);
    convert_to_f32(src.data, src.dtype, s.param(i), size_t(src.numel()));
    sp.bind(s.weights, Tensor::view_of(s.param(i), DType::F32, sp.shape, s.params.owner));
    sp.bind(s.grad_views, Tensor::view_of(s.grad(i), DType::F32, sp.shape, s.grads.owner));
  }
  return s;
}

ParamStore ParamStore::load(const std::string& dir) {
  ModelConfig cfg = ModelConfig::load(dir);
  Checkpoint ckpt(dir);
  return from_checkpoint(cfg, ckpt);
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

void ParamStore::zero_grads() { std::memset(grads.data, 0, total * sizeof(float)); }

void ParamStore::save_weights(const std::string& dir, DType dtype, uint64_t shard_bytes) const {
  std::vector<SafetensorsWriter::Planned> plan;
  for (auto& sp : specs) plan.push_back({sp.name, dtype, sp.shape});
  SafetensorsWriter w(dir, plan, shard_bytes);
  std::vector<uint8_t> buf;
  for (size_t i = 0; i < specs.size(); ++i) {
    const size_t n = size_t(shape_numel(specs[i].shape));
    buf.resize(n * dtype_size(dtype));
    convert_from_f32(params.f32() + offset[i], buf.data(), dtype, n);
    w.write(specs[i].name, buf.data(), buf.size());
  }
  w.finish();
}

}  // namespace lamina
