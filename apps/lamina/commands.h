// One function per `lamina` command (one file each), and the options several of them share.
#pragma once
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "args.h"
#include "generate/generate.h"
#include "model/model.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

int cmd_init(int argc, char** argv);
int cmd_info(int argc, char** argv);
int cmd_generate(int argc, char** argv);
int cmd_chat(int argc, char** argv);
int cmd_serve(int argc, char** argv);
int cmd_score(int argc, char** argv);
int cmd_tokenize(int argc, char** argv);
int cmd_template(int argc, char** argv);
int cmd_upscale(int argc, char** argv);
int cmd_pretrain(int argc, char** argv);
int cmd_plot(int argc, char** argv);
int cmd_merge_lora(int argc, char** argv);
int cmd_export_gguf(int argc, char** argv);
int cmd_imatrix(int argc, char** argv);
int cmd_recipe(int argc, char** argv);
// Runs a command by name in this process (errors propagate as lamina::Error).
int run_command(const std::string& name, int argc, char** argv);
int cmd_tokenizer(int argc, char** argv);
int cmd_sft(int argc, char** argv);
int cmd_dpo(int argc, char** argv);
int cmd_data(int argc, char** argv);
int cmd_eval(int argc, char** argv);
int cmd_bench(int argc, char** argv);

// --model, --dtype, --threads
std::vector<ArgSpec> model_arg_specs();
// generation options shared by generate and chat
std::vector<ArgSpec> sampling_arg_specs();

struct LoadedModel {
  std::unique_ptr<Model> model;
  Tokenizer tokenizer;
};
// Applies --threads and loads --model (weights + tokenizer), checking the two agree.
// --model's path: there, and a GGUF file or a directory with config.json (named before any
// other file of it is read, so the first complaint is about the path itself).
void check_model_path(const std::string& path);
LoadedModel load_model(const Args& a);

GenerateOptions generate_options(const Args& a);
// --stop-token ids, then generation_config.json's further EOS ids.
std::vector<int32_t> stop_token_ids(const Args& a);
// The chat format of --chat-template / --condition, else recognised from the model; nullopt when
// the model has none.
std::optional<ChatFormat> chat_format(const Args& a, const Tokenizer& tok);
// The template for --chat: --chat-template, else recognised from tokenizer_config.json.
std::string render_chat_prompt(const Args& a, const Tokenizer& tok, const std::string& system,
                               const std::vector<std::pair<std::string, std::string>>& turns);

// Options of the training commands (pretrain, sft), declared once.
struct TrainOptions;
struct TrainResult;
std::vector<ArgSpec> training_arg_specs();
TrainOptions training_options(const Args& a);
void print_training_result(const TrainResult& r);

template <class... Lists>
std::vector<ArgSpec> join_specs(std::vector<ArgSpec> first, const Lists&... rest) {
  (first.insert(first.end(), rest.begin(), rest.end()), ...);
  return first;
}

}  // namespace lamina
