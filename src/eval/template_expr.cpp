#include "eval/template_expr.h"

#include <charconv>
#include <cstdio>

#include "core/error.h"
#include "eval/dataset_rows.h"

namespace lamina {
using json = nlohmann::json;

namespace {

bool is_space(char c) {
  return c == ' ' || c == '\t' || c == '\n' || c == '\r';
}
bool is_name_start(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}
bool is_name_char(char c) {
  return is_name_start(c) || (c >= '0' && c <= '9');
}

std::string to_text(const json& v) {  // Jinja's str(value)
  return v.is_string() ? v.get<std::string>() : python_repr(v);
}

// Evaluates one expression over `vars` while parsing it (templates have no control flow beyond
// `set`, so there is nothing to build a tree for).
class Expr {
 public:
  Expr(const std::string& s, const json& vars, const std::string& where)
      : s_(s), vars_(vars), where_(where) {}

  json parse_all() {
    json v = additive();
    skip();
    if (i_ != s_.size()) bad("unexpected '" + s_.substr(i_, 10) + "'");
    return v;
  }

 private:
  [[noreturn]] void bad(const std::string& why) const {
    fail(where_, ": template expression '", s_.substr(0, 80), "': ", why);
  }
  void skip() {
    while (i_ < s_.size() && is_space(s_[i_])) ++i_;
  }
  bool eat(char c) {
    skip();
    if (i_ < s_.size() && s_[i_] == c) return ++i_, true;
    return false;
  }
  std::string name() {
    skip();
    if (i_ >= s_.size() || !is_name_start(s_[i_])) bad("expected a name");
    size_t a = i_;
    while (i_ < s_.size() && is_name_char(s_[i_])) ++i_;
    return s_.substr(a, i_ - a);
  }

  json additive() {
    json v = filtered();
    while (eat('+')) {
      json r = filtered();
      if (v.is_string() && r.is_string())
        v = v.get<std::string>() + r.get<std::string>();
      else if (v.is_number_integer() && r.is_number_integer())
        v = v.get<int64_t>() + r.get<int64_t>();
      else if (v.is_number() && r.is_number())
        v = v.get<double>() + r.get<double>();
      else if (v.is_array() && r.is_array())
        v.insert(v.end(), r.begin(), r.end());
      else
        bad("'+' between " + std::string(v.type_name()) + " and " + r.type_name());
    }
    return v;
  }

  json filtered() {
    json v = postfix();
    while (true) {
      skip();
      if (i_ < s_.size() && s_[i_] == '|') {
        ++i_;
        const std::string f = name();
        std::vector<json> args = eat('(') ? arguments() : std::vector<json>{};
        v = apply_filter(f, v, args);
      } else {
        return v;
      }
    }
  }

  std::vector<json> arguments() {  // after '(' up to ')'
    std::vector<json> args;
    if (eat(')')) return args;
    do args.push_back(additive());
    while (eat(','));
    if (!eat(')')) bad("expected ')'");
    return args;
  }

  json postfix() {
    json v = primary();
    while (true) {
      if (eat('.')) {
        const std::string n = name();
        if (eat('(')) {
          v = call_method(v, n, arguments());
        } else if (v.is_object() && v.contains(n)) {
          v = v[n];
        } else {
          bad("no field '" + n + "'");
        }
      } else if (eat('[')) {
        json k = additive();
        if (!eat(']')) bad("expected ']'");
        v = subscript(v, k);
      } else {
        return v;
      }
    }
  }

  json subscript(const json& v, const json& k) {
    if (v.is_object() && k.is_string()) {
      auto it = v.find(k.get<std::string>());
      if (it == v.end()) bad("no field '" + k.get<std::string>() + "'");
      return *it;
    }
    if ((v.is_array() || v.is_string()) && k.is_number_integer()) {
      const int64_t n = v.is_array() ? int64_t(v.size()) : int64_t(v.get<std::string>().size());
      int64_t j = k.get<int64_t>();
      if (j < 0) j += n;
      if (j < 0 || j >= n) bad("index " + k.dump() + " out of range");
      if (v.is_array()) return v[size_t(j)];
      return std::string(1, v.get<std::string>()[size_t(j)]);
    }
    bad("cannot index " + std::string(v.type_name()) + " with " + k.type_name());
  }

  json primary() {
    skip();
    if (i_ >= s_.size()) bad("expression ends early");
    const char c = s_[i_];
    if (c == '(') {
      ++i_;
      json v = additive();
      if (!eat(')')) bad("expected ')'");
      return v;
    }
    if (c == '[') {
      ++i_;
      json list = json::array();
      if (eat(']')) return list;
      do list.push_back(additive());
      while (eat(','));
      if (!eat(']')) bad("expected ']'");
      return list;
    }
    if (c == '\'' || c == '"') return string_literal();
    if ((c >= '0' && c <= '9') || c == '-') {
      size_t a = i_++;
      while (i_ < s_.size() && s_[i_] >= '0' && s_[i_] <= '9') ++i_;
      int64_t x = 0;
      auto r = std::from_chars(s_.data() + a, s_.data() + i_, x);
      if (r.ec != std::errc()) bad("bad number");
      return x;
    }
    const std::string n = name();
    if (n == "true" || n == "True") return true;
    if (n == "false" || n == "False") return false;
    if (n == "none" || n == "None") return nullptr;
    auto it = vars_.find(n);
    if (it == vars_.end()) bad("the document has no field '" + n + "'");
    return *it;
  }

  json string_literal() {
    const char q = s_[i_++];
    std::string out;
    while (i_ < s_.size() && s_[i_] != q) {
      char c = s_[i_++];
      if (c == '\\' && i_ < s_.size()) {
        const char e = s_[i_++];
        c = e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e;
      }
      out += c;
    }
    if (i_ >= s_.size()) bad("unclosed string");
    ++i_;
    return out;
  }

  std::string str_arg(const std::vector<json>& a, size_t k, const std::string& m) {
    if (a.size() <= k || !a[k].is_string()) bad(m + "() expects a string argument");
    return a[k].get<std::string>();
  }

  json call_method(const json& v, const std::string& m, const std::vector<json>& a) {
    if (v.is_string()) {
      const std::string s = v.get<std::string>();
      if ((m == "strip" || m == "lstrip" || m == "rstrip") && a.empty()) {
        auto py_space = [](char ch) {
          return ch == ' ' || (ch >= '\t' && ch <= '\r') || (ch >= '\x1c' && ch <= '\x1f');
        };
        size_t lo = 0, hi = s.size();
        if (m != "rstrip")
          while (lo < hi && py_space(s[lo])) ++lo;
        if (m != "lstrip")
          while (hi > lo && py_space(s[hi - 1])) --hi;
        return s.substr(lo, hi - lo);
      }
      if (m == "upper" || m == "lower") {
        std::string t = s;
        for (char& ch : t)
          if (m == "upper" && ch >= 'a' && ch <= 'z')
            ch = char(ch - 32);
          else if (m == "lower" && ch >= 'A' && ch <= 'Z')
            ch = char(ch + 32);
        return t;
      }
      if (m == "replace") {
        const std::string from = str_arg(a, 0, m), to = str_arg(a, 1, m);
        if (from.empty()) bad("replace() of an empty string");
        std::string out;
        size_t p = 0;
        for (size_t q; (q = s.find(from, p)) != std::string::npos; p = q + from.size())
          out += s.substr(p, q - p) + to;
        return out + s.substr(p);
      }
      if (m == "startswith") return s.rfind(str_arg(a, 0, m), 0) == 0;
      if (m == "endswith") {
        const std::string x = str_arg(a, 0, m);
        return s.size() >= x.size() && s.compare(s.size() - x.size(), x.size(), x) == 0;
      }
      if (m == "split") {
        json out = json::array();
        if (a.empty()) {  // whitespace runs, no empty parts
          std::string cur;
          for (char ch : s + " ")
            if (is_space(ch)) {
              if (!cur.empty()) out.push_back(cur), cur.clear();
            } else {
              cur += ch;
            }
          return out;
        }
        const std::string sep = str_arg(a, 0, m);
        if (sep.empty()) bad("split() with an empty separator");
        size_t p = 0;
        for (size_t q; (q = s.find(sep, p)) != std::string::npos; p = q + sep.size())
          out.push_back(s.substr(p, q - p));
        out.push_back(s.substr(p));
        return out;
      }
    }
    if (v.is_array() && m == "index" && a.size() == 1) {
      for (size_t k = 0; k < v.size(); ++k)
        if (v[k] == a[0]) return int64_t(k);
      bad(python_repr(a[0]) + " is not in the list");
    }
    bad("method " + m + "() on " + v.type_name() + " is not supported");
  }

  json apply_filter(const std::string& f, const json& v, const std::vector<json>& a) {
    if (f == "join" && v.is_array()) {
      const std::string sep = a.empty() ? "" : str_arg(a, 0, f);
      std::string out;
      for (size_t k = 0; k < v.size(); ++k) out += (k ? sep : "") + to_text(v[k]);
      return out;
    }
    if (f == "trim" && v.is_string()) return python_strip(v.get<std::string>());
    if ((f == "lower" || f == "upper") && v.is_string()) return call_method(v, f, {});
    if (f == "length" && (v.is_array() || v.is_string() || v.is_object()))
      return int64_t(v.is_string() ? v.get<std::string>().size() : v.size());
    bad("filter | " + f + " on " + v.type_name() + " is not supported");
  }

  const std::string& s_;
  const json& vars_;
  const std::string& where_;
  size_t i_ = 0;
};

}  // namespace

std::string python_repr(const json& v) {
  if (v.is_string()) {
    const std::string s = v.get<std::string>();
    const char q =
        s.find('\'') != std::string::npos && s.find('"') == std::string::npos ? '"' : '\'';
    std::string out(1, q);
    for (unsigned char c : s) {
      if (c == '\\' || c == static_cast<unsigned char>(q))
        out += '\\', out += char(c);
      else if (c == '\n')
        out += "\\n";
      else if (c == '\r')
        out += "\\r";
      else if (c == '\t')
        out += "\\t";
      else if (c < 0x20 || c == 0x7f) {
        char buf[8];
        std::snprintf(buf, sizeof buf, "\\x%02x", c);
        out += buf;
      } else {
        out += char(c);
      }
    }
    return out + q;
  }
  if (v.is_boolean()) return v.get<bool>() ? "True" : "False";
  if (v.is_null()) return "None";
  if (v.is_array()) {
    std::string out = "[";
    for (size_t k = 0; k < v.size(); ++k) out += (k ? ", " : "") + python_repr(v[k]);
    return out + "]";
  }
  if (v.is_number_float()) {  // shortest round trip, as Python's float repr
    char buf[32];
    auto r = std::to_chars(buf, buf + sizeof buf, v.get<double>());
    std::string s(buf, r.ptr);
    if (s.find_first_of(".en") == std::string::npos) s += ".0";
    return s;
  }
  if (v.is_object()) {
    std::string out = "{";
    bool first = true;
    for (auto& [k, x] : v.items())
      out += (first ? "" : ", ") + python_repr(k) + ": " + python_repr(x), first = false;
    return out + "}";
  }
  return v.dump();  // integers
}

std::string render_jinja(const std::string& tmpl, const json& doc, const std::string& where) {
  json vars = doc;
  std::string out;
  size_t i = 0;
  while (i < tmpl.size()) {
    const size_t a = tmpl.find('{', i);
    if (a == std::string::npos || a + 1 >= tmpl.size()) {
      out += tmpl.substr(i);
      break;
    }
    const char kind = tmpl[a + 1];
    if (kind != '{' && kind != '%') {
      out += tmpl.substr(i, a + 1 - i);
      i = a + 1;
      continue;
    }
    const std::string close = kind == '{' ? "}}" : "%}";
    size_t b = tmpl.find(close, a + 2);
    if (b == std::string::npos)
      fail(where, ": unclosed ", std::string(1, '{') + kind, " in template");
    std::string body = tmpl.substr(a + 2, b - a - 2);
    std::string text = tmpl.substr(i, a - i);
    // Whitespace control: '{%-' / '{{-' trims before, '-%}' / '-}}' after.
    if (!body.empty() && body[0] == '-') {
      body.erase(0, 1);
      while (!text.empty() && is_space(text.back())) text.pop_back();
    }
    bool trim_after = false;
    if (!body.empty() && body.back() == '-') body.pop_back(), trim_after = true;
    out += text;
    if (kind == '{') {
      out += to_text(Expr(body, vars, where).parse_all());
    } else {
      const std::string stmt = python_strip(body);
      if (stmt.rfind("set ", 0) != 0)
        fail(where, ": template statement '{% ", stmt.substr(0, 40),
             " %}' is not supported (only {% set name = expression %})");
      const size_t eq = stmt.find('=');
      if (eq == std::string::npos) fail(where, ": {% set %} without '='");
      const std::string name = python_strip(stmt.substr(4, eq - 4));
      if (name.empty() || !is_name_start(name[0])) fail(where, ": {% set %} needs a name");
      vars[name] = Expr(stmt.substr(eq + 1), vars, where).parse_all();
    }
    i = b + 2;
    if (trim_after)
      while (i < tmpl.size() && is_space(tmpl[i])) ++i;
  }
  return out;
}

json evaluate_jinja(const std::string& tmpl, const json& doc, const std::string& where) {
  const std::string t = python_strip(tmpl);
  if (t.size() > 4 && t.rfind("{{", 0) == 0 && t.compare(t.size() - 2, 2, "}}") == 0 &&
      t.find("{{", 2) == std::string::npos && t.find("{%") == std::string::npos)
    return Expr(t.substr(2, t.size() - 4), doc, where).parse_all();
  return render_jinja(tmpl, doc, where);
}

}  // namespace lamina
