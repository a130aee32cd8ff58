// lamina init: a new randomly initialised HF model directory (the embedded default model).
#include <algorithm>
#include <cstdio>
#include <sstream>

#include "commands.h"
#include "core/error.h"
#include "core/progress.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"
#include "model/init_model.h"
#include "quant/ggml_blocks.h"
#include "tokenizer/default_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_files.h"

namespace lamina {

int cmd_init(int argc, char** argv) {
  std::string shapes;
  for (auto& n : preset_names()) shapes += (shapes.empty() ? "" : ", ") + n;
  Args a(
      "init",
      "Write a new HF model directory with random weights: config.json, safetensors, tokenizer "
      "files.",
      {{"out", "DIR",
        "output model directory, or X.gguf: one GGUF file (tokenizer in X-tokenizer/)", kRequired},
       {"outtype", "TYPE", "with --out X.gguf: the file type, as for export-gguf", "f16"},
       {"shape", "NAME", "preset shape: " + shapes, "tiny"},
       {"layers", "N", "override num_hidden_layers", ""},
       {"hidden", "N", "override hidden_size", ""},
       {"intermediate", "N", "override intermediate_size", ""},
       {"heads", "N", "override num_attention_heads", ""},
       {"kv-heads", "N", "override num_key_value_heads", ""},
       {"experts", "N", "override num_local_experts (mixtral)", ""},
       {"experts-per-tok", "K", "override num_experts_per_tok (mixtral)", ""},
       {"sliding-window", "N", "override sliding_window (mistral/mixtral; 0 = none)", ""},
       {"max-pos", "N", "override max_position_embeddings", ""},
       {"tie-embeddings", "", "tie lm_head to the embedding", ""},
       {"dtype", "f32|bf16|f16", "storage dtype (default: the shape's torch_dtype)", ""},
       {"seed", "S", "random seed", "0"},
       {"std", "X", "standard deviation of the weights", "0.02"},
       {"random-norms", "", "draw norm gains from U(0.5, 1.5) instead of 1 (for tests)", ""},
       {"moe-layout", "split|fused",
        "mixtral tensor layout: per-expert w1/w2/w3 or transformers v5 fused", "split"},
       {"tokenizer", "FILE",
        "SentencePiece tokenizer.model to use (default: train a small one on embedded text)", ""},
       {"vocab", "N", "vocabulary size of the trained default tokenizer (upper bound)", "512"},
       {"vocab-size", "N",
        "config vocab_size (>= the tokenizer's size; rows beyond it are padding)", ""},
       {"add-tokens", "A,B", "append added special tokens, e.g. '<|end_of_turn|>,<|pad_0|>'", ""},
       {"chat-template", "NAME",
        "write this chat_template: llama-2, mistral-instruct, openchat, chatml", ""},
       {"shard-size", "SIZE", "largest safetensors shard, e.g. 5GB", "5GB"},
       {"force", "", "replace an existing output directory", ""}});
  if (!a.parse(argc, argv)) return 0;
  nlohmann::json j = preset_config(a.str("shape"));
  auto over = [&](const char* opt, const char* key) {
    if (a.given(opt)) j[key] = a.integer(opt);
  };
  over("layers", "num_hidden_layers");
  over("hidden", "hidden_size");
  over("intermediate", "intermediate_size");
  over("heads", "num_attention_heads");
  over("kv-heads", "num_key_value_heads");
  over("experts", "num_local_experts");
  over("experts-per-tok", "num_experts_per_tok");
  over("max-pos", "max_position_embeddings");
  if (a.given("sliding-window")) {
    int64_t w = a.integer("sliding-window");
    j["sliding_window"] = w > 0 ? nlohmann::json(w) : nlohmann::json(nullptr);
  }
  if (a.flag("tie-embeddings")) j["tie_word_embeddings"] = true;
  InitOptions opt;
  opt.dtype = a.given("dtype") ? parse_dtype(a.str("dtype"), "--dtype")
                               : parse_dtype(j["torch_dtype"].get<std::string>(), "torch_dtype");
  j["torch_dtype"] = torch_dtype_name(opt.dtype);
  opt.seed = uint64_t(a.integer("seed"));
  opt.std = float(a.number("std"));
  opt.random_norms = a.flag("random-norms");
  std::string layout = a.str("moe-layout");
  if (layout != "split" && layout != "fused")
    fail("--moe-layout: expected split or fused, got '", layout, "'");
  opt.layout = layout == "fused" ? MoeLayout::Fused : MoeLayout::Split;
  opt.shard_bytes = parse_byte_size(a.str("shard-size"), "--shard-size");

  // --out X.gguf: the weights go into one GGUF file, the tokenizer files (and config.json) into
  // X-tokenizer/, the directory training and inference take as --tokenizer.
  std::string out_arg = a.str("out"), gguf_path;
  const bool to_gguf = out_arg.size() > 5 && out_arg.compare(out_arg.size() - 5, 5, ".gguf") == 0;
  if (to_gguf) {
    gguf_path = out_arg;
    out_arg = out_arg.substr(0, out_arg.size() - 5) + "-tokenizer";
    if (file_exists(gguf_path) && !a.flag("force"))
      fail(gguf_path, ": already exists (use --force to replace it)");
  } else if (a.given("outtype")) {
    fail("--outtype is for --out X.gguf (a directory is written as safetensors in --dtype)");
  }
  OutputDir out(out_arg, a.flag("force"));
  // Tokenizer first: its size fixes vocab_size.
  TokenizerFiles tf;
  std::stringstream ss(a.str("add-tokens"));
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) tf.added_tokens.push_back(t);
  // OpenChat's convention: <|end_of_turn|> ends every turn and is the EOS token.
  auto eot = std::find(tf.added_tokens.begin(), tf.added_tokens.end(), "<|end_of_turn|>");
  if (eot != tf.added_tokens.end()) tf.eos = *eot;
  if (a.given("chat-template")) tf.chat_template = jinja_chat_template(a.str("chat-template"));
  tf.max_length = int(j["max_position_embeddings"].get<int64_t>());
  if (a.given("tokenizer")) {
    tf.sentencepiece_model = a.str("tokenizer");
  } else {
    tf.sentencepiece_model = out.path() + "/.default-tokenizer.model";
    train_default_tokenizer(tf.sentencepiece_model, int(a.integer("vocab")));
  }
  int64_t vocab = write_tokenizer_files(out.path(), tf);
  if (!a.given("tokenizer")) std::remove(tf.sentencepiece_model.c_str());
  // Real shapes keep their vocabulary size (the tokenizer must fit in it); tiny ones take the
  // tokenizer's.
  if (a.str("shape").rfind("tiny", 0) == 0)
    j["vocab_size"] = vocab;
  else if (vocab > j["vocab_size"].get<int64_t>())
    fail("--tokenizer: ", vocab, " tokens do not fit the shape's vocab_size ",
         j["vocab_size"].get<int64_t>());
  if (a.given("vocab-size")) {
    if (a.integer("vocab-size") < vocab)
      fail("--vocab-size ", a.integer("vocab-size"), " is smaller than the tokenizer's ", vocab,
           " tokens");
    j["vocab_size"] = a.integer("vocab-size");
  }
  if (eot != tf.added_tokens.end())
    j["eos_token_id"] = vocab - int64_t(tf.added_tokens.size()) + (eot - tf.added_tokens.begin());
  ModelConfig cfg = ModelConfig::from_json(j, "--shape " + a.str("shape"));
  cfg.save(out.path() + "/config.json");
  nlohmann::json gen = {{"bos_token_id", cfg.bos_token_id},
                        {"eos_token_id", cfg.eos_token_ids[0]},
                        {"_from_model_config", true}};
  write_file_atomic(out.path() + "/generation_config.json", gen.dump(2) + "\n");
  if (to_gguf) {
    const Tokenizer tok = Tokenizer::load(out.path());
    write_random_gguf(cfg, tok, gguf_path, opt, parse_quant_mix(a.str("outtype")));
  } else {
    write_random_weights(cfg, out.path(), opt);
  }
  out.commit();
  std::printf("wrote %s: %s, %lld layers, hidden %lld, vocab %lld, %s parameters (%s)\n",
              out.final_path().c_str(), arch_name(cfg.arch), (long long)cfg.num_hidden_layers,
              (long long)cfg.hidden_size, (long long)cfg.vocab_size,
              format_count(double(cfg.param_count())).c_str(),
              to_gguf ? a.str("outtype").c_str() : torch_dtype_name(opt.dtype));
  if (to_gguf)
    std::printf("  weights:   %s\n  tokenizer: %s (pass it as --tokenizer)\n", gguf_path.c_str(),
                out.final_path().c_str());
  return 0;
}

}  // namespace lamina
