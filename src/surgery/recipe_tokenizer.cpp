#include "surgery/recipe_tokenizer.h"

#include <algorithm>
#include <filesystem>
#include <map>
#include <nlohmann/json.hpp>
#include <set>

#include "core/error.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"
#include "io/model_config.h"
#include "io/output_dir.h"
#include "tokenizer/tokenizer.h"
#include "tokenizer/tokenizer_files.h"

namespace lamina {
namespace {

// A model's chat template as transformers reads it: chat_template.jinja, else tokenizer_config's
// chat_template (a named list: its "default"). "" when it has none.
std::string read_chat_template(const std::string& dir) {
  if (file_exists(dir + "/chat_template.jinja"))
    return read_text_file(dir + "/chat_template.jinja");
  if (!file_exists(dir + "/tokenizer_config.json")) return "";
  auto j = nlohmann::json::parse(read_text_file(dir + "/tokenizer_config.json"), nullptr, false);
  if (!j.is_object() || !j.contains("chat_template")) return "";
  const auto& c = j["chat_template"];
  if (c.is_string()) return c.get<std::string>();
  if (c.is_array())
    for (auto& e : c)
      if (e.value("name", "") == "default") return e.value("template", "");
  return "";
}

std::string strip(const std::string& s) {
  const char* ws = " \t\n\r\f\v";
  size_t a = s.find_first_not_of(ws);
  if (a == std::string::npos) return "";
  return s.substr(a, s.find_last_not_of(ws) - a + 1);
}

}  // namespace

// The models a recipe names (base_model, every slice's), in recipe order, each once.
std::vector<std::string> referenced_models(const Recipe& r) {
  std::vector<std::string> out;
  auto add = [&](const std::string& m) {
    if (!m.empty() && std::find(out.begin(), out.end(), m) == out.end()) out.push_back(m);
  };
  add(r.base_model);
  for (auto& s : r.slices) add(s.model);
  return out;
}

VocabPlan plan_vocabulary(const Recipe& r) {
  if (r.tokenizer_source.empty()) return {r.donor(), -1, {}};
  VocabPlan plan;
  const std::string at = r.tokenizer_where.empty() ? "" : r.tokenizer_where + ": ";
  // union: mergekit's build_union_tokenizer is the base's tokenizer plus every other model's
  // tokens it lacks; lamina keeps it where there are none to add (fine-tunes of one base), and
  // then it is "base".
  const bool union_ = r.tokenizer_source == "union";
  const bool base = r.tokenizer_source == "base" || union_;
  plan.dir = base ? r.donor() : r.tokenizer_source;
  auto vocab_of = [](const std::string& m) { return ModelConfig::load(m).vocab_size; };
  // A tokenizer's pieces by id; the donor's stripped to its vocab_size, as mergekit's base.
  auto pieces = [&](const std::string& m) {
    const Tokenizer t = Tokenizer::load(m);
    int64_t n = t.size();
    if (m == r.donor()) n = std::min(n, vocab_of(m));
    std::vector<std::string> out;
    for (int32_t i = 0; i < int32_t(n); ++i) out.push_back(t.piece(i));
    return out;
  };
  const std::vector<std::string> out = pieces(plan.dir);
  plan.size = int64_t(out.size());
  if (r.pad_to_multiple_of > 0 && plan.size % r.pad_to_multiple_of)
    fail(at, "tokenizer.pad_to_multiple_of ", r.pad_to_multiple_of, ": ", plan.dir, "'s ",
         plan.size,
         " tokens are not a multiple; mergekit pads the embeddings with their mean, which "
         "lamina's passthrough does not");
  if (base && Tokenizer::load(plan.dir).size() > plan.size)
    fail(at, "tokenizer_source ", r.tokenizer_source, ": ", plan.dir,
         "'s tokenizer has more tokens than its vocab_size ", plan.size,
         "; lamina would copy the unstripped tokenizer files");
  if (union_) {
    const std::set<std::string> in_base(out.begin(), out.end());
    for (const std::string& m : referenced_models(r)) {
      const std::vector<std::string> have = pieces(m);
      const int64_t n = std::min(int64_t(have.size()), vocab_of(m));
      for (int64_t i = 0; i < n; ++i)
        if (!in_base.count(have[size_t(i)]))
          fail(at, "tokenizer_source union: ", m, " has token '", have[size_t(i)], "' (id ", i,
               ") that ", plan.dir,
               " lacks; lamina does not build new vocabularies (use base or a model's)");
    }
  }
  for (const std::string& m : referenced_models(r)) {
    const std::vector<std::string> have = m == plan.dir ? out : pieces(m);
    std::map<std::string, int64_t> id;
    for (size_t i = 0; i < have.size(); ++i) id.emplace(have[i], int64_t(i));
    const int64_t vocab = vocab_of(m);
    std::vector<int64_t> rows;
    bool identity = plan.size == vocab;
    for (int64_t i = 0; i < plan.size; ++i) {
      auto it = id.find(out[size_t(i)]);
      const int64_t row = it == id.end() ? -1 : it->second;
      if (row >= vocab)
        fail(at, "tokenizer_source ", r.tokenizer_source, ": ", m, "'s token '", out[size_t(i)],
             "' has id ", row, ", beyond its vocab_size ", vocab, " (mergekit fails there too)");
      identity = identity && row == i;
      rows.push_back(row);
    }
    if (!identity) plan.rows[m] = std::move(rows);
  }
  return plan;
}

// The tokenizer files (mergekit _copy_tokenizer's list) from `from`, then the recipe's
// chat_template: "auto" is the most common (stripped) template among the models (ties: the first
// in recipe order; mergekit's order there is a Python set's), else the text itself. It goes into
// tokenizer_config.json, and a copied chat_template.jinja (which transformers would prefer) is
// dropped.
void write_tokenizer(const Recipe& r, const std::string& from, const std::string& to) {
  copy_tokenizer_files(from, to);
  for (const char* f : {"merges.txt", "chat_template.jinja", "chat_template.json"})
    if (file_exists(from + "/" + f)) copy_file(from + "/" + f, to + "/" + f);
  if (r.chat_template.empty()) return;
  std::string tmpl = r.chat_template;
  if (tmpl == "auto") {
    std::vector<std::pair<std::string, int>> counts;
    for (const std::string& m : referenced_models(r)) {
      std::string t = strip(read_chat_template(m));
      if (t.empty()) continue;
      auto it = std::find_if(counts.begin(), counts.end(), [&](auto& c) { return c.first == t; });
      if (it == counts.end())
        counts.push_back({t, 1});
      else
        ++it->second;
    }
    if (counts.empty()) return;  // mergekit: no input has one, the tokenizer is left as it is
    tmpl = std::max_element(counts.begin(), counts.end(), [](auto& a, auto& b) {
             return a.second < b.second;
           })->first;
  }
  const std::string cfg_path = to + "/tokenizer_config.json";
  nlohmann::json j = file_exists(cfg_path) ? read_json_file(cfg_path) : nlohmann::json::object();
  j["chat_template"] = tmpl;
  write_file_atomic(cfg_path, j.dump(2) + "\n");
  std::error_code ec;
  std::filesystem::remove(to + "/chat_template.jinja", ec);
  std::filesystem::remove(to + "/chat_template.json", ec);
}

}  // namespace lamina
