// lamina tokenize: a model's tokenizer on a text, as ids (and pieces) in JSON — the tool to reach
// for when a template or a tokenizer looks wrong. Reads only the tokenizer files, not the weights.
#include <cstdio>
#include <fstream>
#include <nlohmann/json.hpp>
#include <sstream>

#include "commands.h"
#include "core/error.h"
#include "core/parse_number.h"
#include "io/mapped_file.h"
#include "tokenizer/chat_format.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

int cmd_tokenize(int argc, char** argv) {
  Args a(
      "tokenize",
      "Encode a text with a model's tokenizer (tokenizer.model, else tokenizer.json) and print\n"
      "{\"ids\", \"pieces\" (with --pieces), \"decoded\"} as JSON. Special tokens written in the\n"
      "text (\"<|im_start|>\") become their ids; the BOS / template tokens the tokenizer adds by\n"
      "default are added unless --no-special. --jsonl: every line of --file is a JSON string,\n"
      "one JSON object printed per line. --ids decodes instead. --chat FILE renders the model's\n"
      "own Jinja chat template over FILE's {\"messages\", \"tools\", \"add_generation_prompt\",\n"
      "...} (bos_token / eos_token from the tokenizer) and prints {\"text\", \"ids\"};\n"
      "--template T.jinja renders that template instead of the model's. A template with\n"
      "{% generation %} blocks also gives \"generation\": their byte ranges in the text.",
      {{"model", "DIR", "model (or tokenizer) directory", kRequired},
       {"text", "T", "the text to encode", ""},
       {"file", "F", "encode the contents of this file", ""},
       {"jsonl", "",
        "with --file: one JSON string per line; with --chat: one object of variables per line; "
        "one result per line",
        ""},
       {"ids", "I,J,...", "decode these ids instead", ""},
       {"chat", "FILE", "render the chat template over this JSON object's variables", ""},
       {"template", "T.jinja", "with --chat: this Jinja chat template instead of the model's", ""},
       {"pieces", "", "print each id's piece too", ""},
       {"no-special", "", "do not add the tokenizer's BOS / template tokens", ""},
       {"keep-special", "", "with --ids: keep special tokens in the decoded text", ""}});
  if (!a.parse(argc, argv)) return 0;
  const int sources =
      int(a.given("text")) + int(a.given("file")) + int(a.given("ids")) + int(a.given("chat"));
  if (sources != 1) fail("give exactly one of --text, --file, --ids or --chat");
  if (a.flag("jsonl") && !a.given("file") && !a.given("chat"))
    fail("--jsonl needs --file or --chat");
  if (a.given("template") && !a.given("chat")) fail("--template needs --chat");
  const Tokenizer tok = Tokenizer::load(a.str("model"));
  const bool special = !a.flag("no-special") && tok.add_bos_default();
  auto result = [&](const std::vector<int32_t>& ids, bool skip_special) {
    nlohmann::json j = {{"ids", ids}};
    if (a.flag("pieces")) {
      nlohmann::json p = nlohmann::json::array();
      for (int32_t id : ids) p.push_back(tok.piece(id));
      j["pieces"] = p;
    }
    j["decoded"] = tok.decode(ids, skip_special);
    // Pieces and decoded text may hold bytes that are not UTF-8 (a byte-level token cut in the
    // middle of a character): replaced, not refused.
    return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
  };
  if (a.given("ids")) {
    std::vector<int32_t> ids;
    std::stringstream ss(a.str("ids"));
    for (std::string t; std::getline(ss, t, ',');) {
      auto id = parse_integer(t);
      if (!id || *id < 0 || *id >= tok.size())
        fail("--ids: '", t, "' is not a token id of this tokenizer (", tok.size(), " ids)");
      ids.push_back(int32_t(*id));
    }
    std::printf("%s\n", result(ids, !a.flag("keep-special")).c_str());
    return 0;
  }
  if (a.given("chat")) {
    const std::string f = a.str("chat");
    const ChatFormat fmt =
        a.given("template")
            ? ChatFormat::from_text(read_text_file(a.str("template")), tok, {}, a.str("template"))
            : ChatFormat::own(tok, {}, a.str("model") + ": chat_template");
    // One object of variables -> {"text", "ids"}.
    auto render_one = [&](const nlohmann::ordered_json& vars, const std::string& at) {
      if (!vars.is_object()) fail(at, ": expected a JSON object of template variables");
      std::vector<std::pair<size_t, size_t>> marked;
      const std::string text = fmt.render_variables(jinja::from_json(vars), &marked);
      nlohmann::json r = {{"text", text}, {"ids", tok.encode(text, false)}};
      // {% generation %} blocks' byte ranges of text (transformers' assistant masks).
      if (!marked.empty()) r["generation"] = marked;
      return r;
    };
    auto dump = [](const nlohmann::json& j) {
      return j.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
    };
    if (!a.flag("jsonl")) {
      nlohmann::ordered_json vars;
      try {
        vars = nlohmann::ordered_json::parse(read_text_file(f));
      } catch (const nlohmann::json::exception& e) {
        fail(f, ": not JSON: ", e.what());
      }
      std::printf("%s\n", dump(render_one(vars, f)).c_str());
      return 0;
    }
    // --jsonl: one object of variables per line; a line the template refuses (raise_exception)
    // prints {"error"} and the exit status is 1 after the rest.
    std::ifstream in(f);
    if (!in) fail(f, ": cannot open");
    int64_t n = 0, failed = 0;
    for (std::string line; std::getline(in, line);) {
      const std::string at = f + ":" + std::to_string(++n);
      auto vars = nlohmann::ordered_json::parse(line, nullptr, false);
      if (vars.is_discarded()) fail(at, ": not JSON");
      try {
        std::printf("%s\n", dump(render_one(vars, at)).c_str());
      } catch (const Error& e) {
        ++failed;
        std::printf("%s\n", dump(nlohmann::json{{"error", e.what()}}).c_str());
      }
    }
    return failed ? 1 : 0;
  }
  if (a.flag("jsonl")) {
    std::ifstream in(a.str("file"));
    if (!in) fail(a.str("file"), ": cannot open");
    int64_t n = 0;
    for (std::string line; std::getline(in, line);) {
      ++n;
      nlohmann::json s = nlohmann::json::parse(line, nullptr, false);
      if (!s.is_string()) fail(a.str("file"), ":", n, ": not a JSON string");
      std::printf("%s\n", result(tok.encode(s.get<std::string>(), special), false).c_str());
    }
    return 0;
  }
  const std::string text = a.given("text") ? a.str("text") : read_text_file(a.str("file"));
  std::printf("%s\n", result(tok.encode(text, special), false).c_str());
  return 0;
}

}  // namespace lamina
