#include <gtest/gtest.h>

#include "core/error.h"
#include "eval/dataset_rows.h"
#include "eval/evaluator.h"
#include "eval/task.h"
#include "eval/template_expr.h"

using namespace lamina;

TEST(Eval, Gsm8kAnswerExtraction) {
  const std::string re = "#### (\\-?[0-9\\.\\,]+)";
  EXPECT_EQ(extract_answer("so 2+2=4\n#### 4", re), "4");
  EXPECT_EQ(extract_answer("It is 1,000.\n#### 1,000", re), "1000");
  EXPECT_EQ(extract_answer("#### -12.", re), "-12");
  EXPECT_EQ(extract_answer("#### $5", "#### \\$?(\\-?[0-9\\.\\,]+)"), "5");
  EXPECT_EQ(extract_answer("no answer here", re), "[invalid]");
  EXPECT_EQ(extract_answer("  42 ", ""), "42");
}

TEST(Eval, TemplatesNameMissingFields) {
  nlohmann::json doc = {{"question", "Q?"}, {"n", 3}, {"list", {"a", "b"}}};
  // Jinja prints a list as Python's repr.
  EXPECT_EQ(render_template("Question: {{question}} {{ n }} {{list}}", doc, "t"),
            "Question: Q? 3 ['a', 'b']");
  EXPECT_THROW(render_template("{{nope}}", doc, "t"), Error);
  EXPECT_THROW(render_template("{{open", doc, "t"), Error);
}

TEST(Eval, FewshotSelectionAsLmEval) {
  EvalTask t;
  t.num_fewshot = 2;
  std::vector<nlohmann::json> pool = {{{"i", 0}}, {{"i", 1}}, {{"i", 2}}, {{"i", 3}}};
  auto ids = [](const std::vector<std::vector<nlohmann::json>>& shots) {
    std::vector<std::vector<int>> v;
    for (auto& s : shots) {
      v.emplace_back();
      for (auto& x : s) v.back().push_back(x["i"].get<int>());
    }
    return v;
  };
  t.fewshot_sampler = "first_n";  // FirstNSampler: never the item itself
  lamina::PythonRandom r0(1234), r1(1234), r2(7);
  EXPECT_EQ(ids(fewshot_examples(t, pool, pool, true, r0)),
            (std::vector<std::vector<int>>{{1, 2}, {0, 2}, {0, 1}, {0, 1}}));
  // The default sampler, from the scored data: CPython's
  //   r = random.Random(1234); [[x for x in r.sample(pool, 3) if x != d][:2] for d in pool]
  t.fewshot_sampler = "default";
  EXPECT_EQ(ids(fewshot_examples(t, pool, pool, true, r1)),
            (std::vector<std::vector<int>>{{3, 2}, {0, 2}, {0, 3}, {1, 0}}));
  // From a separate few-shot split: r = random.Random(7); [r.sample(pool2, 2) for d in docs]
  std::vector<nlohmann::json> pool2, docs = {{{"j", 0}}, {{"j", 1}}};
  for (int i = 0; i < 6; ++i) pool2.push_back({{"i", i}});
  EXPECT_EQ(ids(fewshot_examples(t, docs, pool2, false, r2)),
            (std::vector<std::vector<int>>{{2, 1}, {3, 0}}));
}

TEST(Eval, DatasetRowsAsTheHarnessProcessesThem) {
  // HellaSwag's utils.preprocess / process_docs (lm-eval 0.4.13).
  EXPECT_EQ(hellaswag_clean("  Roof shingle removal: A man [title] is  on a roof [step] x."),
            "Roof shingle removal: A man. is on a roof x.");  // as printed by the harness code
  EXPECT_EQ(hellaswag_clean("keep [open\n] and [x]y"), "keep [open\n] and y");
  EXPECT_EQ(python_capitalize("the MAN"), "The man");
  auto h = preprocess_row("hellaswag",
                          {{"activity_label", "Sports"},
                           {"ctx_a", "A man runs."},
                           {"ctx_b", "he JUMPS"},
                           {"endings", {" far [x].", "high"}},
                           {"label", "1"}},
                          "f:1");
  EXPECT_EQ(h["query"], "Sports: A man runs. He jumps");
  EXPECT_EQ(h["choices"], (nlohmann::json{"far .", "high"}));
  EXPECT_EQ(h["answer"], 1);
  auto a = preprocess_row("arc",
                          {{"question", "Q"},
                           {"choices", {{"text", {"x", "y"}}, {"label", {"1", "2"}}}},
                           {"answerKey", "2"}},
                          "f:2");
  EXPECT_EQ(a["answer"], 1);
  EXPECT_THROW(
      preprocess_row(
          "arc",
          {{"question", "Q"}, {"choices", {{"text", {"x"}}, {"label", {"A"}}}}, {"answerKey", "B"}},
          "f:3"),
      Error);
  auto w = preprocess_row("winogrande",
                          {{"sentence", "Tom gave _ the book ."},
                           {"option1", "Ann"},
                           {"option2", "Bo"},
                           {"answer", "2"}},
                          "f:4");
  EXPECT_EQ(w["prefix"], "Tom gave ");
  EXPECT_EQ(w["continuation"], "the book .");
  EXPECT_EQ(w["answer"], 1);
  auto m = preprocess_row("mmlu",
                          {{"question", " Why?\n"},
                           {"subject", "high_school_physics"},
                           {"choices", {"a", "b", "c", "d"}},
                           {"answer", 3}},
                          "f:5");
  EXPECT_EQ(m["question"], "Why?");
  EXPECT_EQ(m["subject"], "high school physics");
  EXPECT_EQ(m["D"], "d");
}

TEST(Eval, AnswerFiltersAsLmEval) {
  // lm-eval 0.4.13's gsm8k filters; expected values printed by the harness's own RegexFilter and
  // exact_match_hf_evaluate (tests/oracles/test_lm_eval.py checks the same strings against them).
  AnswerFilter strict{"strict-match", "#### (\\-?[0-9\\.\\,]+)", 0, "[invalid]"};
  AnswerFilter flex{"flexible-extract", "(-?[$0-9.,]{2,})|(-?[0-9]+)", -1, "[invalid]"};
  EXPECT_EQ(apply_answer_filter(strict, "so 3+4=7\n#### 1,234.\nQuestion"), "1,234.");
  EXPECT_EQ(apply_answer_filter(strict, "no answer"), "[invalid]");
  EXPECT_EQ(apply_answer_filter(flex, "it costs $12 then 7 apples"), "7");
  EXPECT_EQ(apply_answer_filter(flex, "it costs $1,200."), "$1,200.");
  ExactMatchRules rules{{",", "\\$", "(?s).*#### ", "\\.$"}, true, false};
  EXPECT_TRUE(exact_match("$1,200.", "Cost: 600*2=1200\n#### 1200", rules));
  EXPECT_FALSE(exact_match("120", "Cost\n#### 1200", rules));
  EXPECT_THROW(PyRegex("(unclosed", "t.yaml:3"), Error);
}

TEST(Eval, JinjaExpressionsOfHarnessTasks) {
  // The expressions lm-eval 0.4.13's ARC, MMLU and TruthfulQA definitions use; expected strings as
  // jinja2 renders them (tests/oracles/test_lm_eval.py runs those YAML files themselves).
  nlohmann::json arc = {{"question", " Why? "},
                        {"choices", {{"text", {"it's", "b"}}, {"label", {"A", "B"}}}},
                        {"answerKey", "B"}};
  EXPECT_EQ(evaluate_jinja("{{choices.label.index(answerKey)}}", arc, "t"), 1);
  EXPECT_EQ(evaluate_jinja("{{choices.text}}", arc, "t"), (nlohmann::json{"it's", "b"}));
  EXPECT_EQ(render_jinja("{{choices.text}}", arc, "t"), "[\"it's\", 'b']");
  EXPECT_EQ(render_jinja("{{question.strip()}}\nA. {{choices.text[0]}}", arc, "t"),
            "Why?\nA. it's");
  EXPECT_EQ(render_jinja("{% set p = 'Q: x' %}{{p + '\\n\\nQ: ' + question.strip() + '\\nA:'}}",
                         arc, "t"),
            "Q: x\n\nQ: Why?\nA:");
  EXPECT_EQ(render_jinja("{{ choices.text | join(', ') }}-{{ question | trim }}", arc, "t"),
            "it's, b-Why?");
  EXPECT_THROW(render_jinja("{{ nope }}", arc, "t"), Error);
  EXPECT_THROW(render_jinja("{% for x in y %}", arc, "t"), Error);
  EXPECT_THROW(render_jinja("{{ question.title() }}", arc, "t"), Error);
}
