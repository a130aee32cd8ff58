#include "tokenizer/jinja_syntax.h"

#include <algorithm>
#include <cctype>
#include <cstring>

#include "core/error.h"

namespace lamina::jinja::syntax {

std::vector<Segment> segments(const std::string& t, const std::string& where) {
  std::vector<Segment> out;
  size_t i = 0;
  int line = 1;
  bool trim_next = false, block_before = false;
  auto count_lines = [&](size_t a, size_t b) {
    for (size_t k = a; k < b; ++k) line += t[k] == '\n';
  };
  while (i < t.size()) {
    size_t open = t.find('{', i);
    while (open != std::string::npos && open + 1 < t.size() && t[open + 1] != '{' &&
           t[open + 1] != '%' && t[open + 1] != '#')
      open = t.find('{', open + 1);
    if (open + 1 >= t.size()) open = std::string::npos;
    std::string text = t.substr(i, open == std::string::npos ? std::string::npos : open - i);
    const int text_line = line;
    count_lines(i, open == std::string::npos ? t.size() : open);
    if (trim_next) {
      size_t k = 0;
      while (k < text.size() && std::isspace(static_cast<unsigned char>(text[k]))) ++k;
      text.erase(0, k);
    } else if (block_before && !text.empty() && text[0] == '\n') {
      text.erase(0, 1);  // trim_blocks
    }
    trim_next = block_before = false;
    if (open == std::string::npos) {
      if (!text.empty()) out.push_back({Segment::Text, text, text_line});
      break;
    }
    const char kind = t[open + 1];
    const std::string close = kind == '{' ? "}}" : kind == '%' ? "%}" : "#}";
    // The closing mark outside string literals ({{ "}}" }} is an expression printing "}}").
    size_t end = std::string::npos;
    if (kind == '#') {
      end = t.find(close, open + 2);
    } else {
      for (size_t k = open + 2; k + 1 < t.size(); ++k) {
        if (t[k] == '"' || t[k] == '\'') {
          const char q = t[k];
          for (++k; k < t.size() && t[k] != q; ++k)
            if (t[k] == '\\') ++k;
          continue;
        }
        if (t[k] == close[0] && t[k + 1] == close[1]) {
          end = k;
          break;
        }
      }
    }
    if (end == std::string::npos) fail(where, ": line ", line, ": '{", kind, "' is never closed");
    size_t b = open + 2, e = end;
    const bool strip_left = b < e && t[b] == '-';
    const bool keep_left = b < e && t[b] == '+';
    if (strip_left || keep_left) ++b;
    const bool strip_right = e > b && t[e - 1] == '-';
    if (strip_right) --e;
    if (strip_left) {
      size_t k = text.size();
      while (k > 0 && std::isspace(static_cast<unsigned char>(text[k - 1]))) --k;
      text.erase(k);
    } else if (kind != '{' && !keep_left) {
      // lstrip_blocks: the spaces and tabs before the tag go when only they stand between it and
      // the start of its line (in the source).
      size_t j = open;
      while (j > 0 && (t[j - 1] == ' ' || t[j - 1] == '\t')) --j;
      if (j == 0 || t[j - 1] == '\n') {
        size_t k = text.size(), n = open - j;
        while (n > 0 && k > 0 && (text[k - 1] == ' ' || text[k - 1] == '\t')) --k, --n;
        text.erase(k);
      }
    }
    if (!text.empty()) out.push_back({Segment::Text, text, text_line});
    const int tag_line = line;
    count_lines(open, end + 2);
    if (kind != '#')
      out.push_back({kind == '{' ? Segment::Expr : Segment::Stmt, t.substr(b, e - b), tag_line});
    trim_next = strip_right;
    block_before = kind != '{';
    i = end + 2;
  }
  return out;
}

namespace {

// ---------- template segments ----------

// ---------- expressions ----------

struct Tok {
  enum Type { Name, Str, Int, Float, Op, End } type;
  std::string text;
};

std::vector<Tok> lex(const std::string& s, const std::string& where, int line) {
  std::vector<Tok> out;
  size_t i = 0;
  auto bad = [&](const std::string& why) {
    fail(where, ": line ", line, ": ", why, " in '", s.substr(0, 60), "'");
  };
  while (i < s.size()) {
    const char c = s[i];
    if (std::isspace(static_cast<unsigned char>(c))) {
      ++i;
      continue;
    }
    if (std::isalpha(static_cast<unsigned char>(c)) || c == '_') {
      size_t j = i;
      while (j < s.size() && (std::isalnum(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      out.push_back({Tok::Name, s.substr(i, j - i)});
      i = j;
      continue;
    }
    if (std::isdigit(static_cast<unsigned char>(c))) {
      size_t j = i;
      while (j < s.size() && (std::isdigit(static_cast<unsigned char>(s[j])) || s[j] == '_')) ++j;
      bool fl = false;
      if (j + 1 < s.size() && s[j] == '.' && std::isdigit(static_cast<unsigned char>(s[j + 1]))) {
        fl = true;
        ++j;
        while (j < s.size() && std::isdigit(static_cast<unsigned char>(s[j]))) ++j;
      }
      std::string num = s.substr(i, j - i);
      num.erase(std::remove(num.begin(), num.end(), '_'), num.end());
      out.push_back({fl ? Tok::Float : Tok::Int, num});
      i = j;
      continue;
    }
    if (c == '\'' || c == '"') {
      std::string v;
      size_t j = i + 1;
      for (; j < s.size() && s[j] != c; ++j) {
        if (s[j] == '\\' && j + 1 < s.size()) {
          const char e = s[++j];
          v += e == 'n' ? '\n' : e == 't' ? '\t' : e == 'r' ? '\r' : e == '0' ? '\0' : e;
        } else {
          v += s[j];
        }
      }
      if (j >= s.size()) bad("unterminated string");
      out.push_back({Tok::Str, v});
      i = j + 1;
      continue;
    }
    static const char* ops[] = {"**", "//", "==", "!=", "<=", ">=", "+", "-", "*",
                                "/",  "%",  "~",  "<",  ">",  "(",  ")", "[", "]",
                                "{",  "}",  ",",  ".",  ":",  "|",  "="};
    bool found = false;
    for (const char* op : ops) {
      const size_t n = std::strlen(op);
      if (s.compare(i, n, op) == 0) {
        out.push_back({Tok::Op, op});
        i += n;
        found = true;
        break;
      }
    }
    if (!found) bad(std::string("unexpected character '") + c + "'");
  }
  out.push_back({Tok::End, ""});
  return out;
}

NodeP node(Node::Op op, std::vector<NodeP> kids = {}, std::string name = "") {
  auto n = std::make_shared<Node>();
  n->op = op;
  n->kids = std::move(kids);
  n->name = std::move(name);
  return n;
}

class Parser {
 public:
  Parser(std::vector<Tok> t, std::string where, int line)
      : t_(std::move(t)), where_(std::move(where)), line_(line) {}

  NodeP expression() {  // x if c else y
    NodeP x = or_expr();
    if (peek_name("if")) {
      ++p_;
      NodeP c = or_expr();
      NodeP y = nullptr;
      if (peek_name("else")) ++p_, y = expression();
      if (!y) y = node(Node::Lit);  // undefined
      return node(Node::Cond, {c, x, y});
    }
    return x;
  }
  bool peek_name(const char* n) const { return t_[p_].type == Tok::Name && t_[p_].text == n; }
  bool peek_op(const char* o) const { return t_[p_].type == Tok::Op && t_[p_].text == o; }
  bool at_end() const { return t_[p_].type == Tok::End; }
  std::string take_name() {
    if (t_[p_].type != Tok::Name) error("expected a name");
    return t_[p_++].text;
  }
  void expect(const char* o) {
    if (!peek_op(o)) error(std::string("expected '") + o + "'");
    ++p_;
  }
  void expect_end() {
    if (!at_end()) error("unexpected '" + t_[p_].text + "'");
  }
  [[noreturn]] void error(const std::string& why) const {
    fail(where_, ": line ", line_, ": ", why,
         t_[p_].type == Tok::End ? " at the end" : " near '" + t_[p_].text + "'");
  }
  // An expression without the ternary (a for loop's iterable and its "if" filter).
  NodeP or_expr() {
    NodeP x = and_expr();
    while (peek_name("or")) ++p_, x = node(Node::Or, {x, and_expr()});
    return x;
  }

 private:
  NodeP and_expr() {
    NodeP x = not_expr();
    while (peek_name("and")) ++p_, x = node(Node::And, {x, not_expr()});
    return x;
  }
  NodeP not_expr() {
    if (peek_name("not")) {
      ++p_;
      return node(Node::Not, {not_expr()});
    }
    return compare();
  }
  NodeP compare() {
    NodeP x = math1();
    for (;;) {
      static const char* cmp[] = {"==", "!=", "<", ">", "<=", ">="};
      bool done = true;
      for (const char* c : cmp)
        if (peek_op(c)) {
          ++p_;
          x = node(Node::Bin, {x, math1()}, c);
          done = false;
          break;
        }
      if (!done) continue;
      if (peek_name("in")) {
        ++p_;
        x = node(Node::Bin, {x, math1()}, "in");
      } else if (peek_name("not") && t_[p_ + 1].type == Tok::Name && t_[p_ + 1].text == "in") {
        p_ += 2;
        x = node(Node::Bin, {x, math1()}, "not in");
      } else {
        return x;
      }
    }
  }
  NodeP math1() {
    NodeP x = concat();
    while (peek_op("+") || peek_op("-")) {
      const std::string o = t_[p_++].text;
      x = node(Node::Bin, {x, concat()}, o);
    }
    return x;
  }
  NodeP concat() {
    NodeP x = math2();
    while (peek_op("~")) ++p_, x = node(Node::Bin, {x, math2()}, "~");
    return x;
  }
  NodeP math2() {
    NodeP x = power();
    while (peek_op("*") || peek_op("/") || peek_op("//") || peek_op("%")) {
      const std::string o = t_[p_++].text;
      x = node(Node::Bin, {x, power()}, o);
    }
    return x;
  }
  NodeP power() {
    NodeP x = unary();
    while (peek_op("**")) ++p_, x = node(Node::Bin, {x, unary()}, "**");
    return x;
  }
  NodeP unary() {
    if (peek_op("-")) {
      ++p_;
      return node(Node::Neg, {unary()});
    }
    if (peek_op("+")) ++p_;
    NodeP x = postfix(primary());
    // Filters and tests bind to the postfix expression: a | f(x) | g; a is [not] test(args).
    for (;;) {
      if (peek_op("|")) {
        ++p_;
        NodeP f = node(Node::Filter, {x}, take_name());
        if (peek_op("(")) call_args(*f);
        x = postfix(f);
      } else if (peek_name("is")) {
        ++p_;
        NodeP te = node(Node::Test, {x});
        if (peek_name("not")) ++p_, te->negated = true;
        te->name = take_name();
        if (peek_op("("))
          call_args(*te);
        else if (!at_end() && (t_[p_].type == Tok::Str || t_[p_].type == Tok::Int))
          te->kids.push_back(primary());  // "is divisibleby 3", "is sameas none"
        x = te;
      } else {
        return x;
      }
    }
  }
  void call_args(Node& n) {
    expect("(");
    while (!peek_op(")")) {
      if (t_[p_].type == Tok::Name && t_[p_ + 1].type == Tok::Op && t_[p_ + 1].text == "=") {
        const std::string k = t_[p_].text;
        p_ += 2;
        n.kwargs.emplace_back(k, expression());
      } else {
        n.kids.push_back(expression());
      }
      if (!peek_op(",")) break;
      ++p_;
    }
    expect(")");
  }
  NodeP postfix(NodeP x) {
    for (;;) {
      if (peek_op(".")) {
        ++p_;
        if (t_[p_].type == Tok::Int)
          x = node(Node::Item, {x, lit(Value::integer(std::stoll(t_[p_++].text)))});
        else
          x = node(Node::Attr, {x}, take_name());
      } else if (peek_op("[")) {
        ++p_;
        NodeP a = nullptr, b = nullptr, c = nullptr;
        bool slice = false;
        if (!peek_op(":")) a = expression();
        if (peek_op(":")) {
          slice = true;
          ++p_;
          if (!peek_op(":") && !peek_op("]")) b = expression();
          if (peek_op(":")) {
            ++p_;
            if (!peek_op("]")) c = expression();
          }
        }
        expect("]");
        if (slice) {
          auto none = [](NodeP n) { return n ? n : node(Node::Lit); };
          x = node(Node::Slice, {x, none(a), none(b), none(c)});
        } else {
          x = node(Node::Item, {x, a});
        }
      } else if (peek_op("(")) {
        NodeP c = node(Node::Call, {x});
        call_args(*c);
        x = c;
      } else {
        return x;
      }
    }
  }
  static NodeP lit(Value v) {
    NodeP n = node(Node::Lit);
    n->lit = std::move(v);
    return n;
  }
  NodeP primary() {
    const Tok& k = t_[p_];
    if (k.type == Tok::Str) {
      std::string v = t_[p_++].text;
      while (t_[p_].type == Tok::Str) v += t_[p_++].text;  // adjacent literals join
      return lit(Value::string(v));
    }
    if (k.type == Tok::Int) return ++p_, lit(Value::integer(std::stoll(k.text)));
    if (k.type == Tok::Float) return ++p_, lit(Value::number(std::stod(k.text)));
    if (k.type == Tok::Name) {
      ++p_;
      if (k.text == "true" || k.text == "True") return lit(Value::boolean(true));
      if (k.text == "false" || k.text == "False") return lit(Value::boolean(false));
      if (k.text == "none" || k.text == "None") return lit(Value::none());
      return node(Node::Name, {}, k.text);
    }
    if (peek_op("(")) {
      ++p_;
      NodeP x = expression();
      if (peek_op(",")) {  // a tuple: a list here
        NodeP l = node(Node::ListLit, {x});
        while (peek_op(",")) {
          ++p_;
          if (peek_op(")")) break;
          l->kids.push_back(expression());
        }
        x = l;
      }
      expect(")");
      return x;
    }
    if (peek_op("[")) {
      ++p_;
      NodeP l = node(Node::ListLit);
      while (!peek_op("]")) {
        l->kids.push_back(expression());
        if (!peek_op(",")) break;
        ++p_;
      }
      expect("]");
      return l;
    }
    if (peek_op("{")) {
      ++p_;
      NodeP d = node(Node::DictLit);
      while (!peek_op("}")) {
        d->kids.push_back(expression());
        expect(":");
        d->kids.push_back(expression());
        if (!peek_op(",")) break;
        ++p_;
      }
      expect("}");
      return d;
    }
    error("expected a value");
  }

  std::vector<Tok> t_;
  size_t p_ = 0;
  std::string where_;
  int line_;
};

// ---------- statements ----------

class TreeBuilder {
 public:
  TreeBuilder(const std::vector<Segment>& s, std::string where) : s_(s), where_(std::move(where)) {}
  Body parse_all() {
    std::string end;
    Body b = parse_until({}, end);
    return b;
  }

 private:
  // Parses statements until one of the tags in `ends` (its name goes to `end`).
  Body parse_until(const std::vector<std::string>& ends, std::string& end) {
    Body out;
    while (k_ < s_.size()) {
      const Segment& g = s_[k_];
      if (g.type == Segment::Text) {
        out.push_back({Stmt::Text, g.line, g.body});
        ++k_;
        continue;
      }
      Parser p(lex(g.body, where_, g.line), where_, g.line);
      if (g.type == Segment::Expr) {
        Stmt st{Stmt::Output, g.line};
        st.expr = p.expression();
        p.expect_end();
        out.push_back(std::move(st));
        ++k_;
        continue;
      }
      const std::string tag = p.at_end() ? "" : p.take_name();
      if (std::find(ends.begin(), ends.end(), tag) != ends.end()) {
        end = tag;
        cur_ = std::make_unique<Parser>(std::move(p));
        ++k_;
        return out;
      }
      ++k_;
      if (tag == "if") {
        Stmt st{Stmt::If, g.line};
        NodeP cond = p.expression();
        p.expect_end();
        for (;;) {
          std::string e;
          Body b = parse_until({"elif", "else", "endif"}, e);
          if (e.empty()) fail(where_, ": line ", g.line, ": {% if %} without {% endif %}");
          st.branches.emplace_back(cond, std::move(b));
          if (e == "endif") break;
          if (e == "else") {
            cond = nullptr;
            cur_->expect_end();
          } else {
            cond = cur_->expression();
            cur_->expect_end();
          }
          if (!cond) {
            std::string e2;
            Body eb = parse_until({"endif"}, e2);
            if (e2.empty()) fail(where_, ": line ", g.line, ": {% if %} without {% endif %}");
            st.branches.emplace_back(nullptr, std::move(eb));
            break;
          }
        }
        out.push_back(std::move(st));
      } else if (tag == "for") {
        Stmt st{Stmt::For, g.line};
        st.targets.push_back(p.take_name());
        while (p.peek_op(",")) {
          p.expect(",");
          st.targets.push_back(p.take_name());
        }
        if (!p.peek_name("in")) p.error("expected 'in'");
        p.take_name();
        st.expr = p.or_expr();
        if (p.peek_name("if")) {
          p.take_name();
          st.filter = p.or_expr();
        }
        if (p.peek_name("recursive")) p.error("recursive loops are not supported");
        p.expect_end();
        std::string e;
        st.body = parse_until({"else", "endfor"}, e);
        if (e.empty()) fail(where_, ": line ", g.line, ": {% for %} without {% endfor %}");
        if (e == "else") {
          cur_->expect_end();
          st.else_body = parse_until({"endfor"}, e);
          if (e != "endfor") fail(where_, ": line ", g.line, ": {% for %} without {% endfor %}");
        }
        out.push_back(std::move(st));
      } else if (tag == "set") {
        Stmt st{Stmt::Set, g.line};
        st.targets.push_back(p.take_name());
        if (p.peek_op(".")) {
          p.expect(".");
          st.targets.push_back(p.take_name());
        }
        if (p.at_end()) {
          // {% set name %}...{% endset %}: the rendered body becomes the value.
          st.type = Stmt::SetBlock;
          std::string e;
          st.body = parse_until({"endset"}, e);
          if (e.empty()) fail(where_, ": line ", g.line, ": {% set %} without {% endset %}");
          cur_->expect_end();
        } else {
          p.expect("=");
          st.expr = p.expression();
          p.expect_end();
        }
        out.push_back(std::move(st));
      } else if (tag == "macro") {
        // {% macro name(a, b=default) %}...{% endmacro %}: a callable returning its rendering.
        Stmt st{Stmt::Macro, g.line};
        st.text = p.take_name();
        p.expect("(");
        while (!p.peek_op(")")) {
          st.targets.push_back(p.take_name());
          NodeP d;
          if (p.peek_op("=")) p.expect("="), d = p.expression();
          st.defaults.push_back(d);
          if (!p.peek_op(",")) break;
          p.expect(",");
        }
        p.expect(")");
        p.expect_end();
        std::string e;
        st.body = parse_until({"endmacro"}, e);
        if (e.empty()) fail(where_, ": line ", g.line, ": {% macro %} without {% endmacro %}");
        out.push_back(std::move(st));
      } else if (tag == "break" || tag == "continue") {
        // The loopcontrols extension transformers enables.
        p.expect_end();
        out.push_back({tag == "break" ? Stmt::Break : Stmt::Continue, g.line});
      } else if (tag == "generation") {
        // transformers' {% generation %} block: rendered as is, its output span recorded (the
        // assistant tokens of return_assistant_tokens_mask).
        p.expect_end();
        Stmt st{Stmt::Generation, g.line};
        std::string e;
        st.body = parse_until({"endgeneration"}, e);
        if (e.empty())
          fail(where_, ": line ", g.line, ": {% generation %} without {% endgeneration %}");
        cur_->expect_end();
        out.push_back(std::move(st));
      } else {
        fail(where_, ": line ", g.line, ": unsupported tag {% ", tag, " %}");
      }
    }
    if (!ends.empty()) end.clear();
    return out;
  }

  const std::vector<Segment>& s_;
  size_t k_ = 0;
  std::string where_;
  std::unique_ptr<Parser> cur_;  // the parser of the closing tag just met (for elif's condition)
};

}  // namespace

Body parse(const std::string& tmpl, const std::string& where) {
  const std::vector<Segment> segs = segments(tmpl, where);
  return TreeBuilder(segs, where).parse_all();
}

}  // namespace lamina::jinja::syntax
