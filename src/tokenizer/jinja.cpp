#include "tokenizer/jinja.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <ctime>
#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/jinja_syntax.h"
#include "tokenizer/unicode_text.h"

namespace lamina::jinja {
namespace {

using Kind = Value::Kind;

// ---------- values ----------

bool truthy(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None:
      return false;
    case Kind::Bool:
      return v.b;
    case Kind::Int:
      return v.i != 0;
    case Kind::Float:
      return v.f != 0;
    case Kind::String:
      return !v.s.empty();
    case Kind::List:
      return !v.list->empty();
    case Kind::Dict:
      return !v.dict->empty();
    case Kind::Func:
      return true;
  }
  return false;
}

std::string py_float(double d) {
  if (std::isinf(d)) return d > 0 ? "inf" : "-inf";
  if (std::isnan(d)) return "nan";
  char buf[64];
  for (int prec = 1; prec <= 17; ++prec) {  // Python's repr: the shortest that round-trips
    std::snprintf(buf, sizeof buf, "%.*g", prec, d);
    if (std::strtod(buf, nullptr) == d) break;
  }
  std::string s = buf;
  if (s.find_first_of(".en") == std::string::npos) s += ".0";
  return s;
}

std::string repr(const Value& v);
std::string str(const Value& v);

// Dict keys: strings as they are, integers marked (Python keeps 0 and "0" apart).
std::string dict_key(const Value& k) {
  if (k.kind == Kind::Int) return "\x01" + std::to_string(k.i);
  return str(k);
}
Value key_value(const std::string& k) {
  if (!k.empty() && k[0] == '\x01') return Value::integer(std::stoll(k.substr(1)));
  return Value::string(k);
}

// markupsafe.escape.
std::string html_escape(const std::string& s) {
  std::string o;
  for (char c : s) {
    switch (c) {
      case '&':
        o += "&amp;";
        break;
      case '<':
        o += "&lt;";
        break;
      case '>':
        o += "&gt;";
        break;
      case '"':
        o += "&#34;";
        break;
      case '\'':
        o += "&#39;";
        break;
      default:
        o += c;
    }
  }
  return o;
}

// Python's str() of a value (what {{ }} prints).
std::string str(const Value& v) {
  switch (v.kind) {
    case Kind::Undefined:
      return "";
    case Kind::None:
      return "None";
    case Kind::Bool:
      return v.b ? "True" : "False";
    case Kind::Int:
      return std::to_string(v.i);
    case Kind::Float:
      return py_float(v.f);
    case Kind::String:
      return v.s;
    default:
      return repr(v);
  }
}

std::string repr(const Value& v) {
  switch (v.kind) {
    case Kind::String: {
      const char q =
          v.s.find('\'') != std::string::npos && v.s.find('"') == std::string::npos ? '"' : '\'';
      std::string o(1, q);
      for (char c : v.s) {
        if (c == q || c == '\\')
          o += '\\', o += c;
        else if (c == '\n')
          o += "\\n";
        else if (c == '\t')
          o += "\\t";
        else if (c == '\r')
          o += "\\r";
        else
          o += c;
      }
      return o + q;
    }
    case Kind::List: {
      std::string o = "[";
      for (size_t k = 0; k < v.list->size(); ++k) o += (k ? ", " : "") + repr((*v.list)[k]);
      return o + "]";
    }
    case Kind::Dict: {
      std::string o = "{";
      size_t k = 0;
      for (auto& [key, val] : *v.dict)
        o += (k++ ? ", " : "") + repr(key_value(key)) + ": " + repr(val);
      return o + "}";
    }
    case Kind::Func:
      return "<function>";
    default:
      return str(v);
  }
}

// json.dumps(v, ensure_ascii=False, indent=indent) with Python's separators.
void to_json(const Value& v, std::string& o, int indent, int depth) {
  auto nl = [&](int d) {
    if (indent < 0) return;
    o += '\n';
    o.append(size_t(indent * d), ' ');
  };
  switch (v.kind) {
    case Kind::Undefined:
    case Kind::None:
      o += "null";
      return;
    case Kind::Bool:
      o += v.b ? "true" : "false";
      return;
    case Kind::Int:
      o += std::to_string(v.i);
      return;
    case Kind::Float:
      o += py_float(v.f);
      return;
    case Kind::String:
      o += nlohmann::json(v.s).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
      return;
    case Kind::List: {
      if (v.list->empty()) {
        o += "[]";
        return;
      }
      o += '[';
      for (size_t k = 0; k < v.list->size(); ++k) {
        if (k) o += indent < 0 ? ", " : ",";
        nl(depth + 1);
        to_json((*v.list)[k], o, indent, depth + 1);
      }
      nl(depth);
      o += ']';
      return;
    }
    case Kind::Dict: {
      if (v.dict->empty()) {
        o += "{}";
        return;
      }
      o += '{';
      size_t k = 0;
      for (auto& [key, val] : *v.dict) {
        if (k++) o += indent < 0 ? ", " : ",";
        nl(depth + 1);
        to_json(Value::string(str(key_value(key))), o, indent, depth + 1);  // json: "0" for 0
        o += ": ";
        to_json(val, o, indent, depth + 1);
      }
      nl(depth);
      o += '}';
      return;
    }
    case Kind::Func:
      o += "null";
      return;
  }
}

bool equal(const Value& a, const Value& b) {
  const bool an = a.kind == Kind::Int || a.kind == Kind::Float || a.kind == Kind::Bool;
  const bool bn = b.kind == Kind::Int || b.kind == Kind::Float || b.kind == Kind::Bool;
  auto num = [](const Value& v) {
    return v.kind == Kind::Float ? v.f : v.kind == Kind::Bool ? double(v.b) : double(v.i);
  };
  if (an && bn) return num(a) == num(b);
  if (a.kind != b.kind) return false;
  switch (a.kind) {
    case Kind::Undefined:
    case Kind::None:
      return true;
    case Kind::String:
      return a.s == b.s;
    case Kind::List:
      if (a.list->size() != b.list->size()) return false;
      for (size_t k = 0; k < a.list->size(); ++k)
        if (!equal((*a.list)[k], (*b.list)[k])) return false;
      return true;
    case Kind::Dict:
      if (a.dict->size() != b.dict->size()) return false;
      for (auto& [k, v] : *a.dict)
        if (!equal(v, b.get(k))) return false;
      return true;
    default:
      return a.func == b.func;
  }
}

}  // namespace

Value Value::get(const std::string& key) const {
  if (kind != Kind::Dict) return Value();
  for (auto& [k, v] : *dict)
    if (k == key) return v;
  return Value();
}

void Value::set(const std::string& key, Value v) {
  for (auto& [k, old] : *dict)
    if (k == key) {
      old = std::move(v);
      return;
    }
  dict->emplace_back(key, std::move(v));
}

Value from_json(const nlohmann::json& j) {
  switch (j.type()) {
    case nlohmann::json::value_t::null:
      return Value::none();
    case nlohmann::json::value_t::boolean:
      return Value::boolean(j.get<bool>());
    case nlohmann::json::value_t::number_integer:
    case nlohmann::json::value_t::number_unsigned:
      return Value::integer(j.get<int64_t>());
    case nlohmann::json::value_t::number_float:
      return Value::number(j.get<double>());
    case nlohmann::json::value_t::string:
      return Value::string(j.get<std::string>());
    case nlohmann::json::value_t::array: {
      List l;
      for (auto& e : j) l.push_back(from_json(e));
      return Value::of_list(std::move(l));
    }
    case nlohmann::json::value_t::object: {
      Dict d;
      for (auto it = j.begin(); it != j.end(); ++it) d.emplace_back(it.key(), from_json(*it));
      return Value::of_dict(std::move(d));
    }
    default:
      return Value();
  }
}

Value from_json(const nlohmann::ordered_json& j) {
  if (j.is_object()) {
    Dict d;
    for (auto it = j.begin(); it != j.end(); ++it) d.emplace_back(it.key(), from_json(*it));
    return Value::of_dict(std::move(d));
  }
  if (j.is_array()) {
    List l;
    for (auto& e : j) l.push_back(from_json(e));
    return Value::of_list(std::move(l));
  }
  return from_json(nlohmann::json::parse(j.dump()));
}

namespace {

using syntax::Body;
using syntax::Node;
using syntax::Segment;
using syntax::Stmt;

// ---------- evaluation ----------

class Renderer {
 public:
  Renderer(std::string where) : where_(std::move(where)) {}
  std::vector<std::map<std::string, Value>> scopes;
  int line = 0;

  [[noreturn]] void error(const std::string& why) const {
    fail(where_, ": line ", line, ": ", why);
  }

  Value lookup(const std::string& n) const {
    for (size_t k = scopes.size(); k-- > 0;)
      if (auto it = scopes[k].find(n); it != scopes[k].end()) return it->second;
    return Value();
  }

  const std::string* top_ = nullptr;  // the template's output (generation spans are offsets in it)
  std::vector<std::pair<size_t, size_t>>* generation = nullptr;

  // Set by {% break %} / {% continue %}; the enclosing loop clears it.
  enum class Jump { None, Break, Continue } jump = Jump::None;

  void assign(const Stmt& st, Value v) {
    if (st.targets.size() == 1) {
      scopes.back()[st.targets[0]] = std::move(v);
      return;
    }
    Value ns = lookup(st.targets[0]);
    if (ns.kind != Kind::Dict || !ns.is_namespace)
      error("'" + st.targets[0] + "' is not a namespace(): cannot set its attribute");
    ns.set(st.targets[1], std::move(v));
  }

  // A macro as a function: binds its parameters (positional, keyword, defaults) in a new scope
  // over the caller's and renders its body. The Stmt outlives every call (one render).
  Value macro(const Stmt* st) {
    return Value::function([this, st](const std::vector<Value>& a,
                                      const std::vector<std::pair<std::string, Value>>& kw) {
      if (a.size() > st->targets.size())
        error("macro '" + st->text + "' takes " + std::to_string(st->targets.size()) +
              " arguments, got " + std::to_string(a.size()));
      std::map<std::string, Value> frame;
      for (size_t k = 0; k < st->targets.size(); ++k) {
        if (k < a.size())
          frame[st->targets[k]] = a[k];
        else if (st->defaults[k])
          frame[st->targets[k]] = eval(*st->defaults[k]);
        else
          frame[st->targets[k]] = Value();
      }
      for (auto& [k, v] : kw) {
        if (std::find(st->targets.begin(), st->targets.end(), k) == st->targets.end())
          error("macro '" + st->text + "' has no parameter '" + k + "'");
        frame[k] = v;
      }
      const int saved_line = line;
      scopes.push_back(std::move(frame));
      std::string out;
      run(st->body, out);
      scopes.pop_back();
      line = saved_line;
      jump = Jump::None;
      return Value::string(std::move(out));
    });
  }

  void run(const Body& body, std::string& out) {
    for (const Stmt& st : body) {
      if (jump != Jump::None) return;
      line = st.line;
      switch (st.type) {
        case Stmt::Text:
          out += st.text;
          break;
        case Stmt::Output:
          out += str(eval(*st.expr));
          break;
        case Stmt::If:
          for (auto& [cond, b] : st.branches)
            if (!cond || truthy(eval(*cond))) {
              run(b, out);
              break;
            }
          break;
        case Stmt::Set:
          assign(st, eval(*st.expr));
          break;
        case Stmt::SetBlock: {
          std::string v;
          run(st.body, v);
          assign(st, Value::string(std::move(v)));
          break;
        }
        case Stmt::Macro:
          scopes.back()[st.text] = macro(&st);
          break;
        case Stmt::Generation: {
          const size_t start = out.size();
          run(st.body, out);
          // Only spans of the template's own output count (not of a macro's or a set block's).
          if (&out == top_ && generation && out.size() > start)
            generation->emplace_back(start, out.size());
          break;
        }
        case Stmt::Break:
          if (loops_ == 0) error("{% break %} outside a loop");
          jump = Jump::Break;
          return;
        case Stmt::Continue:
          if (loops_ == 0) error("{% continue %} outside a loop");
          jump = Jump::Continue;
          return;
        case Stmt::For:
          run_for(st, out);
          break;
      }
    }
  }

  // What a for loop or a filter iterates: a list's items, a dict's keys, a string's characters;
  // nothing for an undefined value (jinja2's Undefined); None and the rest are errors, as in
  // Python ('NoneType' object is not iterable).
  List iterate(const Value& it, const std::string& what) {
    if (it.kind == Kind::List) return *it.list;
    List items;
    if (it.kind == Kind::Dict)
      for (auto& [k, v] : *it.dict) items.push_back(key_value(k));
    else if (it.kind == Kind::String)
      items = chars(it.s);
    else if (it.kind == Kind::None)
      error(what + ": 'NoneType' object is not iterable");
    else if (it.kind != Kind::Undefined)
      error(what + ": cannot iterate over " + repr(it));
    return items;
  }

  bool less(const Value& a, const Value& b) { return truthy(binary("<", a, b)); }

  // jinja2's attribute lookup by name for filters: dotted paths ("function.name"), digits index
  // lists; undefined where absent.
  Value attribute(const Value& x, const std::string& path) {
    Value cur = x;
    size_t start = 0;
    for (;;) {
      const size_t dot = path.find('.', start);
      const std::string part = path.substr(start, dot == std::string::npos ? dot : dot - start);
      const bool digits = !part.empty() && std::all_of(part.begin(), part.end(), ::isdigit);
      if (cur.kind == Kind::Dict)
        cur = cur.get(part);
      else if (cur.kind == Kind::List && digits && std::stoull(part) < cur.list->size())
        cur = (*cur.list)[std::stoull(part)];
      else
        cur = Value();
      if (dot == std::string::npos) return cur;
      start = dot + 1;
    }
  }

  void run_for(const Stmt& st, std::string& out) {
    List items = iterate(eval(*st.expr), "for");
    scopes.emplace_back();
    auto bind = [&](const Value& v) {
      if (st.targets.size() == 1) {
        scopes.back()[st.targets[0]] = v;
        return;
      }
      if (v.kind != Kind::List || v.list->size() != st.targets.size())
        error("cannot unpack " + repr(v) + " into " + std::to_string(st.targets.size()) + " names");
      for (size_t k = 0; k < st.targets.size(); ++k) scopes.back()[st.targets[k]] = (*v.list)[k];
    };
    if (st.filter) {
      List kept;
      for (const Value& v : items) {
        bind(v);
        if (truthy(eval(*st.filter))) kept.push_back(v);
      }
      items = std::move(kept);
    }
    const int64_t n = int64_t(items.size());
    for (int64_t k = 0; k < n; ++k) {
      bind(items[size_t(k)]);
      Value loop = Value::of_dict();
      loop.set("index", Value::integer(k + 1));
      loop.set("index0", Value::integer(k));
      loop.set("revindex", Value::integer(n - k));
      loop.set("revindex0", Value::integer(n - k - 1));
      loop.set("first", Value::boolean(k == 0));
      loop.set("last", Value::boolean(k == n - 1));
      loop.set("length", Value::integer(n));
      loop.set("previtem", k > 0 ? items[size_t(k - 1)] : Value());
      loop.set("nextitem", k + 1 < n ? items[size_t(k + 1)] : Value());
      scopes.back()["loop"] = loop;
      ++loops_;
      run(st.body, out);
      --loops_;
      const Jump j = jump;
      jump = Jump::None;
      if (j == Jump::Break) break;
    }
    if (n == 0) run(st.else_body, out);
    scopes.pop_back();
  }

  static List chars(const std::string& s) {
    List l;
    for (size_t k = 0; k < s.size();) {
      size_t len = utf8_char_length(static_cast<unsigned char>(s[k]));
      l.push_back(Value::string(s.substr(k, len)));
      k += len;
    }
    return l;
  }

  int64_t as_int(const Value& v, const char* what) const {
    if (v.kind == Kind::Int) return v.i;
    if (v.kind == Kind::Bool) return v.b;
    error(std::string(what) + " must be an integer, not " + repr(v));
  }

  Value eval(const Node& n) {
    switch (n.op) {
      case Node::Lit:
        return n.lit;
      case Node::Name:
        return lookup(n.name);
      case Node::Attr: {
        Value o = eval(*n.kids[0]);
        if (o.kind == Kind::Dict) return o.get(n.name);
        if (o.kind == Kind::Undefined) error("'" + n.name + "' of an undefined value");
        return Value();  // strings' and lists' attributes are methods (see Call)
      }
      case Node::Item:
        return item(eval(*n.kids[0]), eval(*n.kids[1]));
      case Node::Slice:
        return slice(eval(*n.kids[0]), eval(*n.kids[1]), eval(*n.kids[2]), eval(*n.kids[3]));
      case Node::Call:
        return call(n);
      case Node::Filter:
        return filter(n);
      case Node::Test: {
        const bool r = test(n);
        return Value::boolean(n.negated ? !r : r);
      }
      case Node::Not:
        return Value::boolean(!truthy(eval(*n.kids[0])));
      case Node::Neg: {
        Value v = eval(*n.kids[0]);
        if (v.kind == Kind::Int) return Value::integer(-v.i);
        if (v.kind == Kind::Float) return Value::number(-v.f);
        error("cannot negate " + repr(v));
      }
      case Node::And: {
        Value a = eval(*n.kids[0]);
        return truthy(a) ? eval(*n.kids[1]) : a;
      }
      case Node::Or: {
        Value a = eval(*n.kids[0]);
        return truthy(a) ? a : eval(*n.kids[1]);
      }
      case Node::Cond:
        return truthy(eval(*n.kids[0])) ? eval(*n.kids[1]) : eval(*n.kids[2]);
      case Node::ListLit: {
        List l;
        for (auto& k : n.kids) l.push_back(eval(*k));
        return Value::of_list(std::move(l));
      }
      case Node::DictLit: {
        Value d = Value::of_dict();
        for (size_t k = 0; k + 1 < n.kids.size(); k += 2)
          d.set(dict_key(eval(*n.kids[k])), eval(*n.kids[k + 1]));
        return d;
      }
      case Node::Bin:
        return binary(n.name, eval(*n.kids[0]), eval(*n.kids[1]));
    }
    return Value();
  }

  Value item(const Value& o, const Value& k) {
    if (o.kind == Kind::Dict) return o.get(dict_key(k));
    if (o.kind == Kind::List || o.kind == Kind::String) {
      if (k.kind != Kind::Int) return Value();
      const List l = o.kind == Kind::List ? *o.list : chars(o.s);
      int64_t i = k.i < 0 ? k.i + int64_t(l.size()) : k.i;
      if (i < 0 || i >= int64_t(l.size())) return Value();
      return l[size_t(i)];
    }
    if (o.kind == Kind::Undefined) error("indexing an undefined value with " + repr(k));
    return Value();
  }

  Value slice(const Value& o, const Value& a, const Value& b, const Value& c) {
    const bool is_str = o.kind == Kind::String;
    if (o.kind != Kind::List && !is_str) error("cannot slice " + repr(o));
    const List l = is_str ? chars(o.s) : *o.list;
    const int64_t n = int64_t(l.size());
    const int64_t step = c.kind == Kind::Int ? c.i : 1;
    if (step == 0) error("slice step cannot be zero");
    auto clampi = [&](const Value& v, int64_t dflt, bool hi) {
      if (v.kind != Kind::Int) return dflt;
      int64_t x = v.i < 0 ? v.i + n : v.i;
      if (step > 0) return std::clamp<int64_t>(x, 0, n);
      return std::clamp<int64_t>(x, -1, n - 1) + (hi ? 0 : 0);
    };
    int64_t start = clampi(a, step > 0 ? 0 : n - 1, false),
            stop = clampi(b, step > 0 ? n : -1, true);
    List r;
    for (int64_t i = start; step > 0 ? i < stop : i > stop; i += step) r.push_back(l[size_t(i)]);
    if (!is_str) return Value::of_list(std::move(r));
    std::string s;
    for (auto& v : r) s += v.s;
    return Value::string(s);
  }

  Value binary(const std::string& op, const Value& a, const Value& b) {
    if (op == "==") return Value::boolean(equal(a, b));
    if (op == "!=") return Value::boolean(!equal(a, b));
    if (op == "~") return Value::string(str(a) + str(b));
    if (op == "in" || op == "not in") {
      bool r = false;
      if (b.kind == Kind::String)
        r = b.s.find(str(a)) != std::string::npos;
      else if (b.kind == Kind::List)
        r = std::any_of(b.list->begin(), b.list->end(),
                        [&](const Value& x) { return equal(x, a); });
      else if (b.kind == Kind::Dict)
        r = b.get(dict_key(a)).kind != Kind::Undefined;
      else if (b.kind != Kind::Undefined)  // jinja2's Undefined iterates as empty
        error("argument of type " + repr(b).substr(0, 40) + " is not iterable");
      return Value::boolean(op == "in" ? r : !r);
    }
    const bool num = (a.kind == Kind::Int || a.kind == Kind::Float || a.kind == Kind::Bool) &&
                     (b.kind == Kind::Int || b.kind == Kind::Float || b.kind == Kind::Bool);
    auto d = [](const Value& v) {
      return v.kind == Kind::Float ? v.f : v.kind == Kind::Bool ? double(v.b) : double(v.i);
    };
    const bool ints = num && a.kind != Kind::Float && b.kind != Kind::Float;
    if (op == "<" || op == ">" || op == "<=" || op == ">=") {
      int c = 0;
      if (num)
        c = d(a) < d(b) ? -1 : d(a) > d(b) ? 1 : 0;
      else if (a.kind == Kind::String && b.kind == Kind::String)
        c = a.s.compare(b.s) < 0 ? -1 : a.s == b.s ? 0 : 1;
      else
        error("cannot compare " + repr(a) + " and " + repr(b));
      return Value::boolean(op == "<" ? c < 0 : op == ">" ? c > 0 : op == "<=" ? c <= 0 : c >= 0);
    }
    if (op == "+") {
      if (num) return ints ? Value::integer(a.i + b.i) : Value::number(d(a) + d(b));
      if (a.kind == Kind::String && b.kind == Kind::String) {
        if (!a.markup && !b.markup) return Value::string(a.s + b.s);
        // Markup + str escapes the str (markupsafe), and the sum is Markup.
        Value r = Value::string((a.markup ? a.s : html_escape(a.s)) +
                                (b.markup ? b.s : html_escape(b.s)));
        r.markup = true;
        return r;
      }
      if (a.kind == Kind::List && b.kind == Kind::List) {
        List l = *a.list;
        l.insert(l.end(), b.list->begin(), b.list->end());
        return Value::of_list(std::move(l));
      }
      error("cannot add " + repr(a) + " and " + repr(b));
    }
    if (op == "*" && a.kind == Kind::String && b.kind == Kind::Int) {
      std::string s;
      for (int64_t k = 0; k < b.i; ++k) s += a.s;
      return Value::string(s);
    }
    if (!num) error("unsupported operand types for " + op + ": " + repr(a) + " and " + repr(b));
    if (op == "-") return ints ? Value::integer(a.i - b.i) : Value::number(d(a) - d(b));
    if (op == "*") return ints ? Value::integer(a.i * b.i) : Value::number(d(a) * d(b));
    if (op == "/") {
      if (d(b) == 0) error("division by zero");
      return Value::number(d(a) / d(b));
    }
    if (op == "//" || op == "%") {
      if (d(b) == 0) error("division by zero");
      if (ints) {
        int64_t q = a.i / b.i, r = a.i % b.i;
        if (r != 0 && ((r < 0) != (b.i < 0))) --q, r += b.i;  // Python floors
        return Value::integer(op == "//" ? q : r);
      }
      const double q = std::floor(d(a) / d(b));
      return Value::number(op == "//" ? q : d(a) - q * d(b));
    }
    if (op == "**")
      return ints && b.i >= 0 ? Value::integer(int64_t(std::llround(std::pow(d(a), d(b)))))
                              : Value::number(std::pow(d(a), d(b)));
    error("unknown operator " + op);
  }

  std::vector<Value> args_of(const Node& n, size_t from) {
    std::vector<Value> a;
    for (size_t k = from; k < n.kids.size(); ++k) a.push_back(eval(*n.kids[k]));
    return a;
  }
  std::vector<std::pair<std::string, Value>> kwargs_of(const Node& n) {
    std::vector<std::pair<std::string, Value>> kw;
    for (auto& [k, v] : n.kwargs) kw.emplace_back(k, eval(*v));
    return kw;
  }

  static std::string strip_chars(const std::string& s, const Value& chars, bool left, bool right) {
    const std::string set = chars.kind == Kind::String ? chars.s : std::string(" \t\n\r\f\v");
    size_t b = 0, e = s.size();
    while (left && b < e && set.find(s[b]) != std::string::npos) ++b;
    while (right && e > b && set.find(s[e - 1]) != std::string::npos) --e;
    return s.substr(b, e - b);
  }

  Value method(const Value& o, const std::string& m, const std::vector<Value>& a) {
    auto arg = [&](size_t k) { return k < a.size() ? a[k] : Value(); };
    if (o.kind == Kind::String) {
      const std::string& s = o.s;
      if (m == "strip") return Value::string(strip_chars(s, arg(0), true, true));
      if (m == "lstrip") return Value::string(strip_chars(s, arg(0), true, false));
      if (m == "rstrip") return Value::string(strip_chars(s, arg(0), false, true));
      if (m == "startswith" || m == "endswith") {
        const std::string p = str(arg(0));
        const bool r = m == "startswith" ? s.compare(0, p.size(), p) == 0
                                         : s.size() >= p.size() &&
                                               s.compare(s.size() - p.size(), p.size(), p) == 0;
        return Value::boolean(r);
      }
      if (m == "split") {
        List parts;
        const int64_t maxsplit = arg(1).kind == Kind::Int ? arg(1).i : -1;
        if (arg(0).kind != Kind::String) {  // on runs of white space
          size_t i = 0;
          int64_t splits = 0;
          while (i < s.size()) {
            while (i < s.size() && std::isspace(static_cast<unsigned char>(s[i]))) ++i;
            if (i >= s.size()) break;
            if (maxsplit >= 0 && splits == maxsplit) {
              parts.push_back(Value::string(s.substr(i)));
              break;
            }
            size_t j = i;
            while (j < s.size() && !std::isspace(static_cast<unsigned char>(s[j]))) ++j;
            parts.push_back(Value::string(s.substr(i, j - i)));
            ++splits;
            i = j;
          }
          return Value::of_list(std::move(parts));
        }
        const std::string sep = arg(0).s;
        if (sep.empty()) error("split: empty separator");
        size_t i = 0;
        int64_t splits = 0;
        for (size_t j;
             (maxsplit < 0 || splits < maxsplit) && (j = s.find(sep, i)) != std::string::npos;
             ++splits) {
          parts.push_back(Value::string(s.substr(i, j - i)));
          i = j + sep.size();
        }
        parts.push_back(Value::string(s.substr(i)));
        return Value::of_list(std::move(parts));
      }
      if (m == "lower" || m == "upper") {
        std::string r = s;
        for (char& c : r)
          c = char(m == "lower" ? std::tolower(static_cast<unsigned char>(c))
                                : std::toupper(static_cast<unsigned char>(c)));
        return Value::string(r);
      }
      if (m == "replace") {
        const std::string from = str(arg(0)), to = str(arg(1));
        if (from.empty()) return o;
        std::string r;
        size_t i = 0;
        for (size_t j; (j = s.find(from, i)) != std::string::npos; i = j + from.size())
          r += s.substr(i, j - i) + to;
        return Value::string(r + s.substr(i));
      }
      if (m == "title" || m == "capitalize") return filter_named(m, o, {}, {});
    }
    if (o.kind == Kind::Dict) {
      if (m == "items" || m == "keys" || m == "values") {
        List l;
        for (auto& [k, v] : *o.dict)
          l.push_back(m == "items"  ? Value::of_list({key_value(k), v})
                      : m == "keys" ? key_value(k)
                                    : v);
        return Value::of_list(std::move(l));
      }
      if (m == "get") {
        Value v = o.get(dict_key(arg(0)));
        return v.kind == Kind::Undefined ? (a.size() > 1 ? a[1] : Value::none()) : v;
      }
    }
    if (o.kind == Kind::List && m == "append") {
      o.list->push_back(arg(0));
      return Value::none();
    }
    error("unsupported method ." + m + "() of " + repr(o).substr(0, 40));
  }

  Value call(const Node& n) {
    const Node& f = *n.kids[0];
    std::vector<Value> a = args_of(n, 1);
    auto kw = kwargs_of(n);
    if (f.op == Node::Attr) {
      Value o = eval(*f.kids[0]);
      if (o.kind == Kind::Dict) {
        Value fn = o.get(f.name);
        if (fn.kind == Kind::Func) return (*fn.func)(a, kw);
      }
      return method(o, f.name, a);
    }
    if (f.op == Node::Name) {
      const std::string& name = f.name;
      Value fn = lookup(name);
      if (fn.kind == Kind::Func) return (*fn.func)(a, kw);
      if (name == "raise_exception")
        error("raise_exception: " + (a.empty() ? std::string() : str(a[0])));
      if (name == "namespace") {
        Value ns = Value::of_dict();
        ns.is_namespace = true;
        for (auto& [k, v] : kw) ns.set(k, v);
        return ns;
      }
      if (name == "range") {
        int64_t lo = 0, hi = 0, step = 1;
        if (a.size() == 1)
          hi = as_int(a[0], "range");
        else if (a.size() >= 2)
          lo = as_int(a[0], "range"), hi = as_int(a[1], "range");
        if (a.size() >= 3) step = as_int(a[2], "range");
        if (step == 0) error("range step cannot be zero");
        List l;
        for (int64_t i = lo; step > 0 ? i < hi : i > hi; i += step) l.push_back(Value::integer(i));
        return Value::of_list(std::move(l));
      }
      if (name == "strftime_now") {
        std::time_t now = std::time(nullptr);
        std::tm tm{};
        localtime_r(&now, &tm);
        char buf[256];
        const size_t len =
            std::strftime(buf, sizeof buf, str(a.empty() ? Value() : a[0]).c_str(), &tm);
        return Value::string(std::string(buf, len));
      }
      if (name == "dict") {
        Value d = Value::of_dict();
        for (auto& [k, v] : kw) d.set(k, v);
        return d;
      }
      error("'" + name + "' is undefined or not callable");
    }
    error("this value is not callable");
  }

  Value filter(const Node& n) {
    return filter_named(n.name, eval(*n.kids[0]), args_of(n, 1), kwargs_of(n));
  }

  Value filter_named(const std::string& f, const Value& v, const std::vector<Value>& a,
                     const std::vector<std::pair<std::string, Value>>& kw) {
    auto kwarg = [&](const char* k, size_t pos) -> Value {
      for (auto& [name, val] : kw)
        if (name == k) return val;
      return pos < a.size() ? a[pos] : Value();
    };
    if (f == "trim") return Value::string(strip_chars(str(v), kwarg("chars", 0), true, true));
    if (f == "length" || f == "count") {
      if (v.kind == Kind::List) return Value::integer(int64_t(v.list->size()));
      if (v.kind == Kind::Dict) return Value::integer(int64_t(v.dict->size()));
      if (v.kind == Kind::String) return Value::integer(int64_t(chars(v.s).size()));
      error("length of " + repr(v));
    }
    if (f == "tojson") {
      Value ind = kwarg("indent", 0);
      std::string o;
      to_json(v, o, ind.kind == Kind::Int ? int(ind.i) : -1, 0);
      return Value::string(o);
    }
    if (f == "string") return Value::string(str(v));
    if (f == "safe") {
      Value r = Value::string(str(v));
      r.markup = true;
      return r;
    }
    if (f == "upper" || f == "lower") return method(Value::string(str(v)), f, {});
    if (f == "capitalize" || f == "title") {
      std::string s = str(v);
      bool start = true;
      for (char& c : s) {
        const unsigned char u = static_cast<unsigned char>(c);
        if (f == "capitalize")
          c = char(start ? std::toupper(u) : std::tolower(u)), start = false;
        else {
          c = char(start ? std::toupper(u) : std::tolower(u));
          start = !std::isalnum(u);
        }
      }
      return Value::string(s);
    }
    if (f == "default" || f == "d") {
      const bool boolean = truthy(kwarg("boolean", 1));
      if (v.kind == Kind::Undefined || (boolean && !truthy(v))) return kwarg("default_value", 0);
      return v;
    }
    if (f == "first" || f == "last") {
      List l = v.kind == Kind::List ? *v.list : v.kind == Kind::String ? chars(v.s) : List{};
      if (l.empty()) return Value();
      return f == "first" ? l.front() : l.back();
    }
    if (f == "join") {
      const std::string sep = str(kwarg("d", 0));
      std::string o;
      if (v.kind == Kind::List)
        for (size_t k = 0; k < v.list->size(); ++k) o += (k ? sep : "") + str((*v.list)[k]);
      return Value::string(o);
    }
    if (f == "list") {
      if (v.kind == Kind::List) return v;
      if (v.kind == Kind::String) return Value::of_list(chars(v.s));
      if (v.kind == Kind::Dict) return method(v, "keys", {});
      error("list of " + repr(v));
    }
    if (f == "reverse") {
      if (v.kind == Kind::String) {
        List l = chars(v.s);
        std::string o;
        for (size_t k = l.size(); k-- > 0;) o += l[k].s;
        return Value::string(o);
      }
      if (v.kind == Kind::List) return Value::of_list(List(v.list->rbegin(), v.list->rend()));
    }
    if (f == "items") return method(v, "items", {});
    if (f == "int") {
      if (v.kind == Kind::Int) return v;
      if (v.kind == Kind::Float) return Value::integer(int64_t(v.f));
      try {
        return Value::integer(std::stoll(str(v)));
      } catch (...) {
        return Value::integer(0);
      }
    }
    // select / reject (a test on each item, truthiness without one), selectattr / rejectattr
    // (the same on an attribute), as jinja2's; their result is a generator, used as a list.
    if (f == "select" || f == "reject" || f == "selectattr" || f == "rejectattr") {
      const bool attr = f == "selectattr" || f == "rejectattr";
      const bool keep = f == "select" || f == "selectattr";
      if (attr && a.empty()) error(f + " needs an attribute name");
      const size_t t0 = attr ? 1 : 0;
      List out;
      if (!truthy(v)) return Value::of_list();  // jinja2: `if seq:` first (None gives nothing)
      for (const Value& x : iterate(v, f)) {
        Value subject = attr ? attribute(x, str(a[0])) : x;
        bool r;
        if (a.size() > t0)
          r = test_named(str(a[t0]), subject,
                         std::vector<Value>(a.begin() + long(t0) + 1, a.end()));
        else
          r = truthy(subject);
        if (r == keep) out.push_back(x);
      }
      return Value::of_list(std::move(out));
    }
    if (f == "map") {
      // map(attribute="x"[, default=...]) or map("filter", args...).
      List out;
      if (!truthy(v)) return Value::of_list();
      Value at = kwarg("attribute", size_t(-1));
      for (const Value& x : iterate(v, f)) {
        if (at.kind != Kind::Undefined) {
          Value y = attribute(x, str(at));
          if (y.kind == Kind::Undefined) y = kwarg("default", size_t(-1));
          out.push_back(y);
        } else {
          if (a.empty()) error("map needs a filter name or attribute=");
          out.push_back(filter_named(str(a[0]), x, std::vector<Value>(a.begin() + 1, a.end()), {}));
        }
      }
      return Value::of_list(std::move(out));
    }
    if (f == "unique") {
      List out;
      for (const Value& x : iterate(v, f))
        if (std::none_of(out.begin(), out.end(), [&](const Value& y) { return equal(x, y); }))
          out.push_back(x);
      return Value::of_list(std::move(out));
    }
    if (f == "sort" || f == "dictsort") {
      // sort(reverse=False, case_sensitive=False, attribute=None); dictsort(case_sensitive=False,
      // by="key", reverse=False) -> [(key, value)] pairs. Strings compare case-folded by default.
      List items;
      if (f == "dictsort") {
        if (v.kind != Kind::Dict) error("dictsort of " + repr(v));
        for (auto& [k, x] : *v.dict) items.push_back(Value::of_list({key_value(k), x}));
      } else {
        items = iterate(v, f);
      }
      const bool rev = truthy(kwarg("reverse", f == "sort" ? 0 : 2));
      const bool cs = truthy(kwarg("case_sensitive", f == "sort" ? 1 : 0));
      const Value at = f == "sort" ? kwarg("attribute", 2) : Value();
      const bool by_value = f == "dictsort" && str(kwarg("by", 1)) == "value";
      auto key = [&](const Value& x) {
        Value k = f == "dictsort"              ? (*x.list)[by_value ? 1 : 0]
                  : at.kind != Kind::Undefined ? attribute(x, str(at))
                                               : x;
        if (!cs && k.kind == Kind::String) k = method(k, "lower", {});
        return k;
      };
      std::stable_sort(items.begin(), items.end(), [&](const Value& x, const Value& y) {
        return rev ? less(key(y), key(x)) : less(key(x), key(y));
      });
      return Value::of_list(std::move(items));
    }
    if (f == "indent") {
      // indent(width=4, first=False, blank=False): every line after the first (and the first
      // with first=True) gets width spaces; blank lines only with blank=True.
      Value w = kwarg("width", 0);
      const std::string pad =
          w.kind == Kind::String ? w.s : std::string(size_t(w.kind == Kind::Int ? w.i : 4), ' ');
      const bool first = truthy(kwarg("first", 1)), blank = truthy(kwarg("blank", 2));
      const std::string s = str(v);
      std::string o;
      size_t start = 0;
      bool is_first = true;
      for (;;) {
        const size_t nl = s.find('\n', start);
        const std::string line =
            s.substr(start, nl == std::string::npos ? std::string::npos : nl - start);
        if ((!is_first || first) && (blank || !line.empty())) o += pad;
        o += line;
        if (nl == std::string::npos) break;
        o += '\n';
        start = nl + 1;
        is_first = false;
      }
      return Value::string(o);
    }
    if (f == "replace") return method(Value::string(str(v)), "replace", a);
    if (f == "escape" || f == "e") {
      if (v.kind == Kind::String && v.markup) return v;
      Value r = Value::string(html_escape(str(v)));
      r.markup = true;
      return r;
    }
    if (f == "float") {
      if (v.kind == Kind::Float) return v;
      if (v.kind == Kind::Int || v.kind == Kind::Bool)
        return Value::number(double(v.kind == Kind::Int ? v.i : v.b));
      try {
        return Value::number(std::stod(str(v)));
      } catch (...) {
        return Value::number(0);
      }
    }
    if (f == "abs" && (v.kind == Kind::Int || v.kind == Kind::Float))
      return v.kind == Kind::Int ? Value::integer(std::llabs(v.i)) : Value::number(std::fabs(v.f));
    error("unsupported filter '" + f + "'");
  }

  bool test(const Node& n) {
    const std::string& t = n.name;
    // Names of the renderer's own callables are defined (`strftime_now is defined`).
    if (t == "defined" && n.kids[0]->op == Node::Name && is_builtin(n.kids[0]->name) &&
        lookup(n.kids[0]->name).kind == Kind::Undefined)
      return true;
    Value v = eval(*n.kids[0]);
    std::vector<Value> args;
    for (size_t k = 1; k < n.kids.size(); ++k) args.push_back(eval(*n.kids[k]));
    return test_named(t, v, args);
  }

  static bool is_builtin(const std::string& name) {
    return name == "raise_exception" || name == "namespace" || name == "range" ||
           name == "strftime_now" || name == "dict";
  }

  // A test by name on a value (`x is t(args)`, and select / reject / selectattr's tests).
  bool test_named(const std::string& t, const Value& v, const std::vector<Value>& args) {
    auto arg = [&](size_t k) -> const Value& {
      if (k >= args.size()) error("test '" + t + "' needs an argument");
      return args[k];
    };
    if (t == "defined") return v.kind != Kind::Undefined;
    if (t == "undefined") return v.kind == Kind::Undefined;
    if (t == "none") return v.kind == Kind::None;
    if (t == "string") return v.kind == Kind::String;
    if (t == "number") return v.kind == Kind::Int || v.kind == Kind::Float;
    if (t == "integer") return v.kind == Kind::Int;
    if (t == "float") return v.kind == Kind::Float;
    if (t == "boolean") return v.kind == Kind::Bool;
    if (t == "true") return v.kind == Kind::Bool && v.b;
    if (t == "false") return v.kind == Kind::Bool && !v.b;
    if (t == "mapping") return v.kind == Kind::Dict;
    if (t == "iterable")
      return v.kind == Kind::List || v.kind == Kind::Dict || v.kind == Kind::String;
    if (t == "sequence")
      return v.kind == Kind::List || v.kind == Kind::String || v.kind == Kind::Dict;
    if (t == "callable") return v.kind == Kind::Func;
    if (t == "even" || t == "odd") return (as_int(v, "even/odd") % 2 == 0) == (t == "even");
    if (t == "divisibleby") {
      const int64_t d = as_int(arg(0), "divisibleby");
      return d != 0 && as_int(v, "divisibleby") % d == 0;
    }
    if (t == "eq" || t == "equalto" || t == "sameas" || t == "==") return equal(v, arg(0));
    if (t == "ne" || t == "!=") return !equal(v, arg(0));
    if (t == "in") return truthy(binary("in", v, arg(0)));
    error("unsupported test '" + t + "'");
  }

 private:
  std::string where_;
  int loops_ = 0;  // loops being run (break / continue outside one is an error)
};

}  // namespace

void check(const std::string& tmpl, const std::string& where) {
  syntax::parse(tmpl, where);
}

namespace {

std::string run_template(const Body& body, const Value& vars, const std::string& where,
                         std::vector<std::pair<size_t, size_t>>* generation_spans) {
  Renderer r(where);
  r.scopes.emplace_back();
  if (vars.kind == Kind::Dict)
    for (auto& [k, v] : *vars.dict) r.scopes.back()[k] = v;
  r.scopes.emplace_back();  // the template's own top-level sets
  std::string out;
  r.top_ = &out;
  r.generation = generation_spans;
  r.run(body, out);
  return out;
}

}  // namespace

std::string render(const std::string& tmpl, const Value& vars, const std::string& where,
                   std::vector<std::pair<size_t, size_t>>* generation_spans) {
  return run_template(syntax::parse(tmpl, where), vars, where, generation_spans);
}

struct Template::Parsed {
  Body body;
  std::string where;
};

Template::Template(const std::string& tmpl, const std::string& where)
    : parsed_(std::make_shared<const Parsed>(Parsed{syntax::parse(tmpl, where), where})) {}

std::string Template::render(const Value& vars,
                             std::vector<std::pair<size_t, size_t>>* generation_spans) const {
  if (!parsed_) fail("jinja: rendering an empty template");
  return run_template(parsed_->body, vars, parsed_->where, generation_spans);
}

bool has_generation_blocks(const std::string& tmpl) {
  const std::vector<Segment> segs = syntax::segments(tmpl, "template");
  for (const Segment& g : segs) {
    if (g.type != Segment::Stmt) continue;
    size_t a = g.body.find_first_not_of(" \t\n\r");
    if (a != std::string::npos && g.body.compare(a, 10, "generation") == 0 &&
        (a + 10 == g.body.size() || !std::isalnum(static_cast<unsigned char>(g.body[a + 10]))))
      return true;
  }
  return false;
}

}  // namespace lamina::jinja
