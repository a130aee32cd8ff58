// The Jinja interpreter on constructs whose output jinja2 defines (checked by hand against
// jinja2 3.1 with trim_blocks and lstrip_blocks; the real templates are compared with
// transformers itself in tests/oracles/test_chat_templates.py), and its errors.
#include <gtest/gtest.h>

#include <nlohmann/json.hpp>

#include "core/error.h"
#include "tokenizer/jinja.h"

using namespace lamina;

namespace {

std::string render(const std::string& t, const std::string& vars = "{}") {
  return jinja::render(t, jinja::from_json(nlohmann::ordered_json::parse(vars)), "t");
}

std::string error_of(const std::string& t, const std::string& vars = "{}") {
  try {
    render(t, vars);
  } catch (const Error& e) {
    return e.what();
  }
  return "";
}

}  // namespace

TEST(Jinja, WhitespaceControlTrimAndLstripBlocks) {
  // trim_blocks drops the newline after a tag; lstrip_blocks the indentation before one.
  EXPECT_EQ(render("{% if true %}\n  a\n  {% endif %}\nb"), "  a\nb");
  EXPECT_EQ(render("x  {%- if true -%}  y  {%- endif %}"), "xy");
  EXPECT_EQ(render("{{ 'a' }}\n{{ 'b' }}"), "a\nb");  // not after {{ }}
  EXPECT_EQ(render("a {#- note -#} b"), "ab");
}

TEST(Jinja, LoopsScopesAndNamespaces) {
  const std::string v = R"({"xs": [3, 1, 2]})";
  EXPECT_EQ(render("{% for x in xs %}{{ loop.index0 }}{{ x }}{% if not loop.last %},{% endif %}"
                   "{% endfor %}",
                   v),
            "03,11,22");
  // set inside a loop does not leak; a namespace carries values out.
  EXPECT_EQ(render("{% set n = 0 %}{% set ns = namespace(m=0) %}{% for x in xs %}{% set n = x %}"
                   "{% set ns.m = ns.m + x %}{% endfor %}{{ n }} {{ ns.m }}",
                   v),
            "0 6");
  EXPECT_EQ(render("{% for x in xs if x > 1 %}{{ x }}{% else %}none{% endfor %}", v), "32");
  EXPECT_EQ(render("{% for x in [] %}{{ x }}{% else %}none{% endfor %}"), "none");
}

TEST(Jinja, ExpressionsAsPython) {
  EXPECT_EQ(render("{{ xs[::-1] }} {{ xs[1:] }} {{ xs[-1] }} {{ xs | length - 1 }}",
                   R"({"xs": [1, 2, 3]})"),
            "[3, 2, 1] [2, 3] 3 2");
  EXPECT_EQ(
      render("{{ -7 // 2 }} {{ -7 % 3 }} {{ 7 / 2 }} {{ 'a' ~ 1 }} {{ 'x' if none else 'y' }}"),
      "-4 2 3.5 a1 y");
  EXPECT_EQ(
      render("{{ ' a b '.strip() }}|{{ 'a</t>b'.split('</t>')[-1] }}|{{ 'ab'.startswith('a') }}"),
      "a b|b|True");
  EXPECT_EQ(render("{{ d | tojson }} {{ d.k is defined }} {{ d.z is not defined }} {{ d['k'] }}",
                   R"({"d": {"k": "é", "n": [1, null, true]}})"),
            R"({"k": "é", "n": [1, null, true]} True True é)");
  EXPECT_EQ(render("{{ x | default('d') }} {{ 'Hello' | upper }} {{ ['a','b'] | join('-') }}"),
            "d HELLO a-b");
}

TEST(Jinja, ErrorsNameTheLine) {
  EXPECT_NE(error_of("a\n{{ raise_exception('roles must alternate') }}")
                .find("t: line 2: raise_exception: roles must alternate"),
            std::string::npos);
  EXPECT_NE(error_of("{% if x %}a").find("{% if %} without {% endif %}"), std::string::npos);
  EXPECT_NE(error_of("{% macro m() %}{% endmacro %}").find("unsupported tag {% macro %}"),
            std::string::npos);
  EXPECT_NE(error_of("{{ x | nosuch }}").find("unsupported filter 'nosuch'"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a' + 1 }}").find("cannot add"), std::string::npos);
}
