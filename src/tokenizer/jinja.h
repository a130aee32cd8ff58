// The subset of Jinja that models' chat templates use, rendered as transformers renders them
// (jinja2's ImmutableSandboxedEnvironment with trim_blocks and lstrip_blocks; tojson as
// json.dumps(ensure_ascii=False); raise_exception, strftime_now, namespace). There is no Jinja
// library for C++ in Debian; this covers text, {{ }}, {% if / elif / else / for (loop.*, else,
// "if" filter, break, continue) / set (names, namespace attributes, {% set %} blocks) / macro %},
// comments and the - / + whitespace
// marks; expressions with Python's operators, literals (strings, numbers, lists, dicts),
// attribute / item / slice access, calls of the string and dict methods templates use, filters
// and tests. Checked byte for byte against jinja2 + transformers (tests/oracles).
#pragma once
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <nlohmann/json_fwd.hpp>
#include <string>
#include <utility>
#include <vector>

namespace lamina::jinja {

struct Value;
using List = std::vector<Value>;
// Insertion-ordered, as Python's dict. Keys are strings; an integer key (a template's {0: 1}
// literal) is stored as "\x01" + its digits (dict_key / key_value in jinja.cpp).
using Dict = std::vector<std::pair<std::string, Value>>;
using Func = std::function<Value(const std::vector<Value>& args,
                                 const std::vector<std::pair<std::string, Value>>& kwargs)>;

struct Value {
  enum class Kind { Undefined, None, Bool, Int, Float, String, List, Dict, Func };
  Kind kind = Kind::Undefined;
  bool b = false;
  int64_t i = 0;
  double f = 0;
  std::string s;
  std::shared_ptr<List> list;  // shared, as Python's (namespace() is a Dict that set mutates)
  std::shared_ptr<Dict> dict;
  std::shared_ptr<Func> func;
  bool is_namespace = false;
  bool markup = false;  // a String marked safe (|safe, |escape: markupsafe.Markup)

  static Value none() { return make(Kind::None); }
  static Value boolean(bool v) {
    Value x = make(Kind::Bool);
    x.b = v;
    return x;
  }
  static Value integer(int64_t v) {
    Value x = make(Kind::Int);
    x.i = v;
    return x;
  }
  static Value number(double v) {
    Value x = make(Kind::Float);
    x.f = v;
    return x;
  }
  static Value string(std::string v) {
    Value x = make(Kind::String);
    x.s = std::move(v);
    return x;
  }
  static Value of_list(List v = {}) {
    Value x = make(Kind::List);
    x.list = std::make_shared<List>(std::move(v));
    return x;
  }
  static Value of_dict(Dict v = {}) {
    Value x = make(Kind::Dict);
    x.dict = std::make_shared<Dict>(std::move(v));
    return x;
  }
  static Value function(Func fn) {
    Value x = make(Kind::Func);
    x.func = std::make_shared<Func>(std::move(fn));
    return x;
  }
  // The value under key of a dict (Undefined when absent or not a dict).
  Value get(const std::string& key) const;
  void set(const std::string& key, Value v);  // a dict's key, added or replaced

 private:
  static Value make(Kind k) {
    Value x;
    x.kind = k;
    return x;
  }
};

// JSON values as Jinja values (ordered_json objects keep their key order).
Value from_json(const nlohmann::json& j);
Value from_json(const nlohmann::ordered_json& j);

// Renders the template with the given variables (a Dict: messages, add_generation_prompt,
// bos_token, ...). Errors — a syntax error, raise_exception(), an unsupported construct — throw
// lamina::Error naming `where` and the line.
// generation_spans, when given, receives the byte ranges of the output that
// {% generation %} ... {% endgeneration %} blocks produced (transformers' assistant masks).
std::string render(const std::string& tmpl, const Value& vars, const std::string& where,
                   std::vector<std::pair<size_t, size_t>>* generation_spans = nullptr);
// A template parsed once and rendered many times (a chat format renders every conversation of a
// training set, twice per reply for its prefix): render() as above without the parse. Copies
// share the parsed statements.
class Template {
 public:
  Template() = default;
  Template(const std::string& tmpl, const std::string& where);  // parses; throws as render would
  std::string render(const Value& vars,
                     std::vector<std::pair<size_t, size_t>>* generation_spans = nullptr) const;
  bool empty() const { return !parsed_; }

 private:
  struct Parsed;
  std::shared_ptr<const Parsed> parsed_;
};
// Whether the template marks its assistant text with {% generation %} blocks.
bool has_generation_blocks(const std::string& tmpl);
// Parses only: a syntax error or an unsupported tag throws as render would, before any work.
void check(const std::string& tmpl, const std::string& where);

}  // namespace lamina::jinja
