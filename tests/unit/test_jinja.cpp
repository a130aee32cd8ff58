// The Jinja interpreter on constructs whose output jinja2 defines (checked by hand against
// jinja2 3.1 with trim_blocks and lstrip_blocks; the real templates are compared with
// transformers itself in tests/oracles/test_chat_templates.py and test_real_chat_templates.py),
// and its errors.
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
  EXPECT_NE(error_of("{% call m() %}{% endcall %}").find("unsupported tag {% call %}"),
            std::string::npos);
  EXPECT_NE(error_of("{% for x in none %}{% endfor %}").find("'NoneType' object is not iterable"),
            std::string::npos);
  EXPECT_NE(error_of("{% break %}").find("outside a loop"), std::string::npos);
  EXPECT_NE(error_of("{{ x | nosuch }}").find("unsupported filter 'nosuch'"), std::string::npos);
  EXPECT_NE(error_of("{{ 'a' + 1 }}").find("cannot add"), std::string::npos);
}

TEST(Jinja, MacrosSetBlocksAndLoopControls) {
  // A macro with a default and a keyword argument; its body sees the caller's variables.
  EXPECT_EQ(render("{% macro tag(name, v='-') %}<{{ name }}={{ v }}>{% endmacro %}"
                   "{{ tag('a') }}{{ tag('b', 1) }}{{ tag(v=2, name='c') }}"),
            "<a=-><b=1><c=2>");
  EXPECT_EQ(render("{% set x %}a{{ 1 + 1 }}b{% endset %}[{{ x }}]"), "[a2b]");
  EXPECT_EQ(render("{% for x in [1, 2, 3, 4] %}{% if x == 2 %}{% continue %}{% endif %}"
                   "{% if x == 4 %}{% break %}{% endif %}{{ x }}{% endfor %}"),
            "13");
  // Marks inside string literals do not close a tag.
  EXPECT_EQ(render("{{ \"}}\" }}{{ '%}' }}"), "}}%}");
  // The renderer's own functions are defined names.
  EXPECT_EQ(render("{{ strftime_now is defined }} {{ raise_exception is defined }}"), "True True");
}

TEST(Jinja, FiltersOverLists) {
  const std::string v =
      R"({"ms": [{"role": "user", "t": "B"}, {"role": "system"}, {"role": "user", "t": "a"}]})";
  EXPECT_EQ(render("{{ ms | selectattr('role', 'equalto', 'user') | map(attribute='t') | list }}"
                   " {{ ms | rejectattr('t', 'defined') | list | length }}"
                   " {{ none | selectattr('x') | list }}",
                   v),
            "['B', 'a'] 1 []");
  EXPECT_EQ(render("{{ [3, 1, 3, 2] | unique | list }} {{ ['b', 'A', 'c'] | sort }}"
                   " {{ ms | selectattr('t') | sort(attribute='t') | map(attribute='t') | join }}",
                   v),
            "[3, 1, 2] ['A', 'b', 'c'] aB");
  EXPECT_EQ(render("{{ [1, 0, 2] | select | list }} {{ [1, 2, 3] | reject('odd') | list }}"),
            "[1, 2] [2]");
  // Integer keys stay integers (Seed-OSS's budget table), and json.dumps writes them as strings.
  EXPECT_EQ(render("{% for k, v in {512: 'b', 0: 'a'} | dictsort %}{{ k + 1 }}{{ v }} "
                   "{% endfor %}{{ {1: 2} | tojson }} {{ {1: 2}[1] }}"),
            "1a 513b {\"1\": 2} 2");
  EXPECT_EQ(render("{{ 'a\nb\n\nc' | indent(2) }}|{{ 'x\ny' | indent(2, first=true) }}"),
            "a\n  b\n\n  c|  x\n  y");
}

TEST(Jinja, MarkupEscapesWhatIsAddedToIt) {
  // markupsafe: Markup + str escapes the str (functionary v3.1's tool list renders so).
  EXPECT_EQ(render("{{ 'a'|safe + '\"<b>\"' }} {{ '<i>' | e }} {{ 'x' ~ '<' }}"),
            "a&#34;&lt;b&gt;&#34; &lt;i&gt; x<");
}
