#include <gtest/gtest.h>

#include "core/error.h"
#include "eval/evaluator.h"
#include "eval/task.h"

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
  EXPECT_EQ(render_template("Question: {{question}} {{ n }} [{{list}}]", doc, "t"),
            "Question: Q? 3 [a, b]");
  EXPECT_THROW(render_template("{{nope}}", doc, "t"), Error);
  EXPECT_THROW(render_template("{{open", doc, "t"), Error);
}

TEST(Eval, FewshotSelection) {
  EvalTask t;
  t.num_fewshot = 2;
  std::vector<nlohmann::json> pool = {{{"i", 0}}, {{"i", 1}}, {{"i", 2}}, {{"i", 3}}};
  auto first = fewshot_examples(t, pool, 0, true);  // never the item itself
  EXPECT_EQ(first[0]["i"], 1);
  EXPECT_EQ(first[1]["i"], 2);
  t.fewshot_sampler = "random";
  auto a = fewshot_examples(t, pool, 1, true), b = fewshot_examples(t, pool, 1, true);
  EXPECT_EQ(a, b);  // seeded
  for (auto& x : a) EXPECT_NE(x["i"], 1);
}
