#include "train/training_store.h"

#include <algorithm>
#include <filesystem>

#include "core/error.h"
#include "io/jsonl.h"
#include "model/gguf_model.h"
#include "tokenizer/tokenizer.h"
#include "train/lora.h"

namespace lamina {
namespace fs = std::filesystem;
using json = nlohmann::json;

namespace {
// The layers a run freezes (and whether the embeddings, LM head and final norm too), from
// --freeze-layers, --freeze-embeddings and --only-new-layers; checked against the config.
struct FreezePlan {
  std::vector<int64_t> layers;
  bool embeddings = false;
};
FreezePlan freeze_plan(const TrainOptions& o, const ModelConfig& cfg) {
  FreezePlan f{o.freeze_layers, o.freeze_embeddings};
  if (o.only_new_layers) {
    const std::string path = o.model + "/expanded_layers.json";
    if (!file_exists(path))
      fail(path,
           ": not found (--only-new-layers needs a model made by lamina upscale --expand-every)");
    json j = read_json_file(path);
    for (auto& l : j.at("original_layers")) f.layers.push_back(l.get<int64_t>());
    f.embeddings = true;
  }
  for (int64_t l : f.layers)
    if (l < 0 || l >= cfg.num_hidden_layers)
      fail("--freeze-layers: layer ", l, " is outside [0, ", cfg.num_hidden_layers, ")");
  if (o.lora && (!f.layers.empty() || f.embeddings))
    fail("--lora trains only the adapters: drop --freeze-* / --only-new-layers");
  return f;
}

// "model.layers.12.mlp.up_proj.weight" -> 12; -1 for tensors outside the layers.
int64_t layer_of(const std::string& name) {
  return name.rfind("model.layers.", 0) == 0 ? std::stoll(name.substr(13)) : -1;
}
}  // namespace

namespace {
// The tokenizer paired with a GGUF base must be the file's own: same number of pieces and the
// same piece at every id (GGUF carries its vocabulary in tokenizer.ggml.tokens).
void check_gguf_tokenizer(const GgufCheckpoint& ck, const std::string& path,
                          const std::string& tok_dir) {
  Tokenizer tok = Tokenizer::load(tok_dir);
  if (tok.size() > ck.cfg.vocab_size)
    fail("--tokenizer ", tok_dir, ": ", tok.size(), " tokens, but ", path, " has ",
         ck.cfg.vocab_size, " embedding rows: not this model's tokenizer");
  if (ck.vocab.empty()) return;
  if (int64_t(ck.vocab.size()) != tok.size())
    fail("--tokenizer ", tok_dir, ": ", tok.size(), " tokens, but ", path, " was written with ",
         ck.vocab.size(), ": not this model's tokenizer");
  for (int64_t i = 0; i < tok.size(); ++i)
    if (tok.piece(int32_t(i)) != ck.vocab[size_t(i)])
      fail("--tokenizer ", tok_dir, ": token ", i, " is '", tok.piece(int32_t(i)), "', ", path,
           " has '", ck.vocab[size_t(i)], "' there: not this model's tokenizer");
}
}  // namespace

ParamStore load_training_store(const TrainOptions& o, const std::string& dir_arg) {
  const std::string dir = dir_arg.empty() ? o.model : dir_arg;
  if (is_gguf_file(dir)) {
    // A GGUF file is a frozen base used as its blocks are: LoRA only, paired with its tokenizer.
    if (!o.lora) fail(dir, ": a GGUF file can be trained over only as a frozen base: add --lora-r");
    if (o.base_dtype)
      fail(dir, ": a GGUF base is used in the types it is stored in; drop --base-dtype");
    if (o.tokenizer.empty())
      fail(dir, ": a GGUF model needs --tokenizer DIR (the directory with its tokenizer.model)");
    GgufCheckpoint ck = read_gguf_checkpoint(dir);
    check_gguf_tokenizer(ck, dir, o.tokenizer);
    return ParamStore::from_gguf(ck);
  }
  if (!o.tokenizer.empty())
    fail("--tokenizer ", o.tokenizer, ": only with a GGUF --model (", dir,
         " carries its own tokenizer)");
  if (!o.base_dtype) return ParamStore::load(dir);
  const DType bt = *o.base_dtype;
  if (bt != DType::BF16 && bt != DType::F16 && bt != DType::Q8_0 && bt != DType::Q4_0 &&
      bt != DType::NF4)
    fail("--base-dtype: keeps the frozen base in bf16, f16, q8_0, q4_0 or nf4, not ",
         dtype_name(bt));
  const ModelConfig cfg = ModelConfig::load(dir);
  const FreezePlan f = freeze_plan(o, cfg);
  if (!o.lora && f.layers.empty() && !f.embeddings)
    fail(
        "--base-dtype keeps a frozen base out of F32: use it with --lora-r, --only-new-layers "
        "or --freeze-layers / --freeze-embeddings (every tensor is trained otherwise)");
  FrozenBase base;
  base.dtype = bt;
  base.frozen = [lora = o.lora.has_value(), f](const TensorSpec& sp) {
    if (lora) return true;  // LoRA: the whole base is frozen
    const int64_t l = layer_of(sp.name);
    return l < 0 ? f.embeddings : std::find(f.layers.begin(), f.layers.end(), l) != f.layers.end();
  };
  return ParamStore::load(dir, base);
}

void prepare_training(const TrainOptions& o, ParamStore& p) {
  if (o.seq_len < 2) fail("--seq-len must be at least 2");
  if (o.batch_size < 1 || o.grad_accum < 1) fail("--batch-size and --grad-accum must be positive");
  if (o.val_fraction < 0 || o.val_fraction >= 1) fail("--val-fraction must be in [0, 1)");
  const ModelConfig& cfg = p.cfg;
  if (o.seq_len > cfg.max_position_embeddings)
    fail("--seq-len ", o.seq_len, " exceeds max_position_embeddings ", cfg.max_position_embeddings);
  const FreezePlan f = freeze_plan(o, cfg);
  p.freeze(f.layers, f.embeddings);
  if (o.lora) add_lora(p, *o.lora);
  if (p.num_trainable() == 0) fail("every parameter is frozen: nothing to train");
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec || !fs::is_directory(o.out))
    fail(o.out, ": cannot create the output directory: ", ec ? ec.message() : "not a directory");
}

}  // namespace lamina
