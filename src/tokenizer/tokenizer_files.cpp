#include "tokenizer/tokenizer_files.h"

#include <sentencepiece_processor.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"
#include "tokenizer/chat_template.h"

namespace lamina {
using json = nlohmann::json;

std::string jinja_chat_template(const std::string& name) {
  switch (parse_chat_template(name)) {
    case ChatTemplate::Llama2:
      return "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
             "system_message = "
             "messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
             "system_message = false %}{% endif %}"
             "{% for message in loop_messages %}{% if loop.index0 == 0 and system_message != false "
             "%}{% set content = "
             "'<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}{% else "
             "%}{% set content = "
             "message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + "
             "'[INST] ' + content.strip() + "
             "' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' "
             "' + eos_token }}{% endif %}{% endfor %}";
    case ChatTemplate::MistralInstruct:
      return "{{ bos_token }}{% for message in messages %}{% if message['role'] == 'user' %}{{ "
             "'[INST] ' + message['content'] "
             "+ ' [/INST]' }}{% elif message['role'] == 'assistant' %}{{ message['content'] + "
             "eos_token}}{% endif %}{% endfor %}";
    case ChatTemplate::OpenChat:
      return "{{ bos_token }}{% for message in messages %}{{ 'GPT4 Correct ' + "
             "message['role'].title() + ': ' + "
             "message['content'] + '<|end_of_turn|>'}}{% endfor %}{% if add_generation_prompt %}{{ "
             "'GPT4 Correct Assistant:' }}{% endif %}";
    case ChatTemplate::ChatML:
      return "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + "
             "message['content'] + '<|im_end|>' + "
             "'\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% "
             "endif %}";
  }
  return "";
}

void copy_tokenizer_files(const std::string& from, const std::string& to) {
  for (const char* f : {"tokenizer.model", "tokenizer.json", "tokenizer_config.json",
                        "special_tokens_map.json", "added_tokens.json", "generation_config.json"})
    if (file_exists(from + "/" + f)) copy_file(from + "/" + f, to + "/" + f);
}

int64_t write_tokenizer_files(const std::string& dir, const TokenizerFiles& t) {
  sentencepiece::SentencePieceProcessor sp;
  auto st = sp.Load(t.sentencepiece_model);
  if (!st.ok()) fail(t.sentencepiece_model, ": cannot load SentencePiece model: ", st.ToString());
  copy_file(t.sentencepiece_model, dir + "/tokenizer.model");
  const int64_t base = sp.GetPieceSize();
  json decoder = json::object();
  auto entry = [](const std::string& c, bool special) {
    return json{{"content", c},    {"lstrip", false},      {"normalized", false},
                {"rstrip", false}, {"single_word", false}, {"special", special}};
  };
  for (int id : {sp.unk_id(), sp.bos_id(), sp.eos_id()})
    if (id >= 0) decoder[std::to_string(id)] = entry(sp.IdToPiece(id), true);
  for (size_t i = 0; i < t.added_tokens.size(); ++i) {
    if (sp.PieceToId(t.added_tokens[i]) != sp.unk_id())
      fail("--add-tokens: '", t.added_tokens[i], "' is already in the vocabulary");
    decoder[std::to_string(base + int64_t(i))] = entry(t.added_tokens[i], true);
  }
  json cfg = {{"add_bos_token", true},
              {"add_eos_token", false},
              {"added_tokens_decoder", decoder},
              {"bos_token", t.bos},
              {"eos_token", t.eos},
              {"unk_token", t.unk},
              {"pad_token", nullptr},
              {"clean_up_tokenization_spaces", false},
              {"legacy", true},
              {"model_max_length", t.max_length},
              {"sp_model_kwargs", json::object()},
              {"tokenizer_class", "LlamaTokenizer"}};
  if (!t.added_tokens.empty()) cfg["additional_special_tokens"] = t.added_tokens;
  if (!t.chat_template.empty()) cfg["chat_template"] = t.chat_template;
  write_file_atomic(dir + "/tokenizer_config.json", cfg.dump(2) + "\n");
  json stm = {{"bos_token", t.bos}, {"eos_token", t.eos}, {"unk_token", t.unk}};
  if (!t.added_tokens.empty()) stm["additional_special_tokens"] = t.added_tokens;
  write_file_atomic(dir + "/special_tokens_map.json", stm.dump(2) + "\n");
  return base + int64_t(t.added_tokens.size());
}

}  // namespace lamina
