#include "option_rules.h"

#include <cctype>
#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <vector>

#include "core/error.h"
#include "core/parse_number.h"

namespace lamina {
namespace {

enum class Kind { Integer, Number };

// value must lie in [lo, hi] (or the open ends); NaN and infinities never pass.
struct Rule {
  Kind kind;
  double lo, hi;
  bool lo_open = false, hi_open = false;
  const char* meaning = "";  // why the range, shown in the message
};

constexpr double kInf = std::numeric_limits<double>::infinity();

Rule integer_at_least(double lo, const char* why = "") {
  return {Kind::Integer, lo, kInf, false, true, why};
}
Rule number(double lo, double hi, bool lo_open, bool hi_open, const char* why = "") {
  return {Kind::Number, lo, hi, lo_open, hi_open, why};
}

const std::map<std::string, Rule>& rules() {
  static const std::map<std::string, Rule> r = {
      // Sizes and counts: at least one.
      {"threads", integer_at_least(1)},
      {"parallel", integer_at_least(1)},
      {"queue", integer_at_least(1)},
      {"max-body", integer_at_least(1)},
      {"port", {Kind::Integer, 0, 65535, false, false, "0 = any free port"}},
      {"batch-size", integer_at_least(1)},
      {"grad-accum", integer_at_least(1)},
      {"seq-len", integer_at_least(2, "a sequence needs a token and its target")},
      {"epochs", integer_at_least(1)},
      {"layers", integer_at_least(1)},
      {"hidden", integer_at_least(1)},
      {"heads", integer_at_least(1)},
      {"kv-heads", integer_at_least(1)},
      {"intermediate", integer_at_least(1)},
      {"vocab", integer_at_least(1)},
      {"vocab-size", integer_at_least(1)},
      {"experts", integer_at_least(1)},
      {"experts-per-tok", integer_at_least(1)},
      {"max-pos", integer_at_least(1)},
      {"context", integer_at_least(1)},
      {"ctx", integer_at_least(2, "a chunk needs a token and its target")},
      {"window", integer_at_least(2, "a window needs a token and its target")},
      {"lora-r", integer_at_least(1)},
      {"expand-every", integer_at_least(1)},
      {"target-layers", integer_at_least(1)},
      {"keep", integer_at_least(1)},
      // Counts where 0 means "off", "all" or "the default".
      {"max-new-tokens", integer_at_least(0)},
      {"n-prompt", integer_at_least(0)},
      {"n-gen", integer_at_least(0)},
      {"repetitions", integer_at_least(1)},
      {"max-steps", integer_at_least(0, "0 = run the epochs")},
      {"save-every", integer_at_least(0, "0 = only at the end")},
      {"eval-every", integer_at_least(0, "0 = never")},
      {"eval-batches", integer_at_least(0, "0 = all")},
      {"halt-after", integer_at_least(0)},
      {"top-k", integer_at_least(0, "0 = off")},
      {"limit", integer_at_least(0, "0 = all")},
      {"chunks", integer_at_least(0, "0 = all")},
      {"stride", integer_at_least(0, "0 = the window")},
      {"num-fewshot", integer_at_least(0)},
      {"batch-tokens", integer_at_least(0)},
      {"max-length", integer_at_least(0)},
      {"max-prompt-length", integer_at_least(0)},
      {"sliding-window", integer_at_least(0, "0 = none")},
      {"drop", integer_at_least(0)},
      {"seed", integer_at_least(0)},
      // Optimisation.
      {"lr", number(0, kInf, false, true)},
      {"beta1", number(0, 1, false, true)},
      {"beta2", number(0, 1, false, true)},
      {"eps", number(0, kInf, true, true)},
      {"weight-decay", number(0, kInf, false, true)},
      {"clip", number(0, kInf, false, true, "0 = off")},
      {"warmup-ratio", number(0, 1, false, false)},
      {"min-lr-ratio", number(0, 1, false, false)},
      {"val-fraction", number(0, 1, false, true)},
      {"aux-loss-coef", number(0, kInf, false, true)},
      {"lora-alpha", number(0, kInf, true, true)},
      {"lora-dropout", number(0, 1, false, true)},
      {"std", number(0, kInf, true, true)},
      // Preference optimisation (TRL's ranges).
      {"beta", number(0, kInf, true, true)},
      {"label-smoothing", number(0, 0.5, false, false)},
      {"rpo-alpha", number(0, kInf, false, true)},
      // Sampling.
      {"temperature", number(0, kInf, false, true, "0 = greedy")},
      {"top-p", number(0, 1, true, false)},
      {"repetition-penalty", number(0, kInf, true, true)},
      {"min-p", number(0, 1, false, false)},
      {"presence-penalty", number(-2, 2, false, false)},
      {"frequency-penalty", number(-2, 2, false, false)},
      // Plotting.
      {"x-scale", number(0, kInf, true, true)},
  };
  return r;
}

// Options that take one of a few words (the same words in every command that has them).
const std::map<std::string, std::vector<std::string>>& choices() {
  static const std::map<std::string, std::vector<std::string>> c = {
      {"schedule", {"constant", "linear", "cosine"}},
      {"precision", {"f32", "bf16"}},
      {"recompute-dtype", {"f32", "bf16"}},
      {"base-dtype", {"bf16", "f16", "q8_0", "q4_0", "nf4"}},
      {"save-dtype", {"f32", "bf16", "f16"}},
      {"objective", {"sft", "crlft"}},
      {"loss-norm", {"token", "sequence"}},
      {"truncation-mode", {"keep_end", "keep_start"}},
      {"moe-layout", {"split", "fused"}},
      {"model-type", {"bpe", "unigram"}},
      {"loss", {"sigmoid", "robust", "hinge", "ipo"}},
      {"outtype",
       {"f32", "f16", "bf16", "q8_0", "q4_0", "q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s",
        "q4_k_m", "q5_k_s", "q5_k_m", "q6_k"}},
      {"bos", {"auto", "always", "never"}},
      {"output-format", {"gguf", "dat"}},
  };
  return c;
}

std::string bound_text(const Rule& r) {
  auto num = [](double v) {
    if (std::isinf(v)) return std::string("inf");
    std::string s = std::to_string(v);
    s.erase(s.find_last_not_of('0') + 1);
    if (!s.empty() && s.back() == '.') s.pop_back();
    return s;
  };
  if (std::isinf(r.hi)) return std::string(r.lo_open ? "> " : ">= ") + num(r.lo);
  return std::string(r.lo_open ? "in (" : "in [") + num(r.lo) + ", " + num(r.hi) +
         (r.hi_open ? ")" : "]");
}

}  // namespace

void check_option_value(const std::string& command, const std::string& name,
                        const std::string& value) {
  if (auto c = choices().find(name); c != choices().end()) {
    std::string v = value;  // file types in either case, as llama-quantize's Q4_K_M
    if (name == "outtype")
      for (auto& ch : v) ch = char(std::tolower(static_cast<unsigned char>(ch)));
    for (auto& w : c->second)
      if (v == w) return;
    std::string list;
    for (auto& w : c->second) list += (list.empty() ? "" : ", ") + w;
    fail("--", name, ": expected one of ", list, "; got '", value.substr(0, 80), "'");
  }
  auto it = rules().find(name);
  if (it == rules().end()) return;
  const Rule& r = it->second;
  const std::string range = bound_text(r) + (*r.meaning ? std::string("; ") + r.meaning : "");
  double v = 0;
  if (r.kind == Kind::Integer) {
    auto x = parse_integer(value);
    if (!x) fail("--", name, " expects an integer ", range, ", got '", value, "'");
    v = double(*x);
  } else {
    auto x = parse_finite(value);
    if (!x) fail("--", name, " expects a finite number ", range, ", got '", value, "'");
    v = *x;
  }
  const bool below = r.lo_open ? v <= r.lo : v < r.lo;
  const bool above = r.hi_open ? v >= r.hi : v > r.hi;
  if (below || above) fail("--", name, " must be ", range, ", got ", value);
}

}  // namespace lamina
