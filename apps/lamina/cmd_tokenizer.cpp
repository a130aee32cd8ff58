// lamina tokenizer train: a SentencePiece tokenizer for a corpus (small demo models).
#include <cstdio>
#include <cstring>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "core/error.h"
#include "io/jsonl.h"
#include "io/output_dir.h"
#include "tokenizer/default_tokenizer.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_files.h"

namespace lamina {

int cmd_tokenizer(int argc, char** argv) {
  if (argc < 1 || std::strcmp(argv[0], "train") != 0) {
    if (argc >= 1 && (!std::strcmp(argv[0], "--help") || !std::strcmp(argv[0], "-h"))) {
      std::printf("usage: lamina tokenizer train [options]   (lamina tokenizer train --help)\n");
      return 0;
    }
    fail("usage: lamina tokenizer train --data FILE --vocab-size N --out DIR");
  }
  Args a("tokenizer train",
         "Train a SentencePiece tokenizer (Llama's conventions: <unk> 0, <s> 1, </s> 2, byte "
         "fallback) on text\n"
         "files (.txt lines, or .jsonl with a \"text\" field) and write DIR/tokenizer.model with\n"
         "tokenizer_config.json and special_tokens_map.json; `lamina init --tokenizer "
         "DIR/tokenizer.model` uses it.",
         {{"data", "FILE", "training text", kRequired, true},
          {"vocab-size", "N", "vocabulary size (an upper bound on little text)", "8000"},
          {"model-type", "bpe|unigram", "SentencePiece algorithm", "bpe"},
          {"add-tokens", "A,B", "added special tokens after the pieces", ""},
          {"chat-template", "NAME", "chat_template to record", ""},
          {"out", "DIR", "output directory", kRequired},
          {"force", "", "replace an existing output directory", ""}});
  if (!a.parse(argc - 1, argv + 1)) return 0;
  std::vector<std::string> lines;
  for (auto& f : a.all("data")) {
    if (!(f.size() > 6 && f.ends_with(".jsonl"))) {  // plain text: every line
      std::ifstream in(f);
      if (!in) fail(f, ": cannot open");
      for (std::string line; std::getline(in, line);) lines.push_back(line);
      continue;
    }
    for_each_jsonl_line(f, [&](const std::string& line, int64_t n) {
      std::stringstream ss(jsonl_text(line, f + ":" + std::to_string(n)));
      for (std::string l; std::getline(ss, l);) lines.push_back(l);
    });
  }
  OutputDir out(a.str("out"), a.flag("force"));
  const std::string sp = out.path() + "/.trained.model";
  train_tokenizer(lines, sp, int(a.integer("vocab-size")), a.str("model-type"));
  TokenizerFiles tf;
  tf.sentencepiece_model = sp;
  std::stringstream ss(a.str("add-tokens"));
  for (std::string t; std::getline(ss, t, ',');)
    if (!t.empty()) tf.added_tokens.push_back(t);
  if (a.given("chat-template")) tf.chat_template = jinja_chat_template(a.str("chat-template"));
  const int64_t vocab = write_tokenizer_files(out.path(), tf);
  std::remove(sp.c_str());
  out.commit();
  std::printf("wrote %s/tokenizer.model: %lld tokens (trained on %zu lines)\n",
              a.str("out").c_str(), (long long)vocab, lines.size());
  return 0;
}

}  // namespace lamina
