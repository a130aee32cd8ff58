#include "eval/evaluator.h"

#include <algorithm>
#include <cmath>
#include <regex>

#include "core/error.h"
#include "core/progress.h"
#include "core/utf8.h"
#include "eval/dataset_rows.h"
#include "generate/generate.h"
#include "kernels/ops.h"
#include "tokenizer/chat_template.h"
#include "train/packing.h"

namespace lamina {
using json = nlohmann::json;

namespace {

// lm-eval adds no BOS to a text that already starts with the BOS string (has_bos_prefix).
bool adds_bos(const Tokenizer& t, const std::string& text, bool bos) {
  return bos && !(!t.bos_text().empty() && text.rfind(t.bos_text(), 0) == 0);
}

// lm-eval's encoding of a request: context + continuation together, split at the context's length.
// bos: whether the tokenizer adds BOS (lm-eval 0.4.13: the tokenizer's own add_special_tokens
// default, not when the text already starts with the BOS string); an empty context is BOS alone.
std::pair<std::vector<int32_t>, size_t> encode_request(const Tokenizer& t, std::string ctx,
                                                       std::string cont, bool bos) {
  if (ctx.empty()) {
    std::vector<int32_t> whole = t.encode(cont, false);
    // lm-eval's prefix_token_id: BOS, or EOS for a tokenizer without one (Qwen).
    const int32_t prefix = t.bos_id() >= 0 ? t.bos_id() : t.eos_id();
    if (whole.empty() || whole[0] != prefix) whole.insert(whole.begin(), prefix);
    if (whole.size() < 2) fail("empty continuation after tokenisation: '", cont, "'");
    return {whole, 1};
  }
  while (!ctx.empty() && ctx.back() == ' ') cont.insert(cont.begin(), ' '), ctx.pop_back();
  bos = adds_bos(t, ctx, bos);
  std::vector<int32_t> whole = t.encode(ctx + cont, bos);
  const size_t n_ctx = std::max<size_t>(1, t.encode(ctx, bos).size());
  if (whole.size() <= n_ctx) fail("empty continuation after tokenisation: '", cont, "'");
  return {whole, n_ctx};
}

}  // namespace

LoglikelihoodScorer::LoglikelihoodScorer(const Model& m, const Tokenizer& t, bool bos)
    : m_(m), t_(t), bos_(bos), cache_(m.new_cache(m.config().max_position_embeddings)), logits_() {}

double LoglikelihoodScorer::score(const std::string& context, const std::string& continuation,
                                  int64_t* n_tokens) {
  // lm-eval moves the context's trailing spaces into the continuation before encoding.
  auto [whole, n_ctx] = encode_request(t_, context, continuation, bos_);
  if (int64_t(whole.size()) > cache_.capacity)
    fail("request of ", whole.size(), " tokens is longer than the context of ", cache_.capacity,
         " tokens");
  // Run only what the cache does not hold; logits are needed from position n_ctx - 1 on.
  reuse_cache_prefix(cache_, cached_, whole);
  const int64_t V = m_.config().vocab_size;
  int64_t from = std::min<int64_t>(cache_.len, int64_t(n_ctx) - 1);
  cache_.len = from;
  const int64_t T = int64_t(whole.size()) - from;
  logits_.resize(size_t(T * V));
  m_.forward(whole.data() + from, T, cache_, logits_.data(), true);
  cached_ = whole;
  double ll = 0;
  for (size_t i = n_ctx; i < whole.size(); ++i)
    ll += log_softmax_at(logits_.data() + (int64_t(i) - 1 - from) * V, V, whole[i]);
  if (n_tokens) *n_tokens = int64_t(whole.size() - n_ctx);
  return ll;
}

std::vector<double> score_requests(const Model& m, const Tokenizer& tok,
                                   const std::vector<std::pair<std::string, std::string>>& req,
                                   int64_t batch_tokens, bool bos) {
  std::vector<double> out(req.size());
  if (batch_tokens <= 0) {
    LoglikelihoodScorer s(m, tok, bos);
    for (size_t i = 0; i < req.size(); ++i) out[i] = s.score(req[i].first, req[i].second);
    return out;
  }
  std::vector<std::vector<int32_t>> ids(req.size());
  std::vector<size_t> n_ctx(req.size());
  std::vector<int64_t> lens(req.size());
  const int64_t cap = std::min(batch_tokens, m.config().max_position_embeddings);
  for (size_t i = 0; i < req.size(); ++i) {
    auto [w, n] = encode_request(tok, req[i].first, req[i].second, bos);
    if (int64_t(w.size()) > m.config().max_position_embeddings)
      fail("request of ", w.size(), " tokens is longer than the context of ",
           m.config().max_position_embeddings, " tokens");
    ids[i] = std::move(w), n_ctx[i] = n, lens[i] = int64_t(ids[i].size());
  }
  // Longest first into rows of `cap` tokens (a request longer than cap gets a row of its own).
  std::vector<std::vector<int64_t>> rows;
  std::vector<int64_t> fit_lens;
  std::vector<size_t> fit_idx, big;
  for (size_t i = 0; i < req.size(); ++i) (lens[i] <= cap ? fit_idx : big).push_back(i);
  for (size_t i : fit_idx) fit_lens.push_back(lens[i]);
  for (auto& bin : pack_first_fit_decreasing(fit_lens, cap)) {
    rows.emplace_back();
    for (int64_t k : bin) rows.back().push_back(int64_t(fit_idx[size_t(k)]));
  }
  for (size_t i : big) rows.push_back({int64_t(i)});
  const int64_t V = m.config().vocab_size;
  std::vector<float> logits;
  for (auto& row : rows) {
    std::vector<int32_t> toks;
    std::vector<int32_t> segs;
    for (int64_t i : row) {
      toks.insert(toks.end(), ids[size_t(i)].begin(), ids[size_t(i)].end());
      segs.push_back(int32_t(lens[size_t(i)]));
    }
    const int64_t T = int64_t(toks.size());
    KVCache cache = m.new_cache(T);
    logits.resize(size_t(T * V));
    m.forward(toks.data(), T, cache, logits.data(), true, &segs);
    int64_t at = 0;
    for (int64_t i : row) {
      const auto& w = ids[size_t(i)];
      double ll = 0;
      for (size_t k = n_ctx[size_t(i)]; k < w.size(); ++k)
        ll += log_softmax_at(logits.data() + (at + int64_t(k) - 1) * V, V, w[k]);
      out[size_t(i)] = ll;
      at += lens[size_t(i)];
    }
  }
  return out;
}

std::string extract_answer(const std::string& text, const std::string& regex) {
  std::string s = text;
  if (!regex.empty()) {
    std::smatch m;
    std::regex re(regex);
    if (!std::regex_search(text, m, re)) return "[invalid]";
    s = m.size() > 1 ? m[1].str() : m[0].str();
  }
  std::string out;
  for (char c : s)
    if (c != ',' && c != '$') out += c;
  out.erase(0, out.find_first_not_of(" \t\n"));
  out.erase(out.find_last_not_of(" \t\n") + 1);
  if (!out.empty() && out.back() == '.') out.pop_back();
  return out;
}

namespace {

void add_stats(TaskResult& r, const std::string& metric, const std::vector<double>& v) {
  const double n = double(v.size());
  double mean = 0;
  for (double x : v) mean += x;
  mean /= std::max(n, 1.0);
  double var = 0;
  for (double x : v) var += (x - mean) * (x - mean);
  var /= std::max(n - 1, 1.0);
  r.value[metric] = mean;
  r.stderr_[metric] = std::sqrt(var / std::max(n, 1.0));  // sample standard error, as lm-eval
}

}  // namespace

bool eval_adds_bos(const EvalTask& t, const EvalSettings& s, const Tokenizer& tok) {
  const std::string rule = s.bos != "auto" ? s.bos : t.bos;
  if (rule == "always") return true;
  if (rule == "never") return false;
  return tok.add_bos_default();
}

TaskResult evaluate_task(const Model& m, const Tokenizer& tok, const EvalTask& t,
                         const EvalSettings& s) {
  std::vector<int64_t> lines, pool_lines;
  // Rows as published (or already processed) -> the task's fields, each error at its file:line.
  auto read_rows = [&](const std::string& file, std::vector<int64_t>& ln) {
    auto rows = read_jsonl(file, &ln);
    for (size_t i = 0; i < rows.size(); ++i)
      rows[i] = preprocess_row(t.preprocess, rows[i], file + ":" + std::to_string(ln[i]));
    return rows;
  };
  auto docs = read_rows(t.data, lines);
  const bool same_pool = t.fewshot_data.empty();
  auto pool = same_pool ? docs : read_rows(t.fewshot_data, pool_lines);
  // Every item (and demonstration) is checked first, so a bad line is named before any scoring.
  auto validate = [&](const std::vector<json>& v, const std::vector<int64_t>& ln,
                      const std::string& file) {
    for (size_t i = 0; i < v.size(); ++i) try {
        if (t.type == "multiple_choice") {
          auto c = doc_choices(t, v[i]);
          json d = v[i];
          d["choice"] = c[0];
          render_template(t.doc_to_text, d, t.name);
          if (t.choice_in_context) render_template("{{continuation}}", v[i], t.name);
          for (auto& m : t.metrics) {
            if (m == "acc" || m == "acc_norm") {
              const int64_t g = doc_gold(t, v[i]);
              if (g < 0 || g >= int64_t(c.size()))
                fail("gold index ", g, " is outside the ", c.size(), " choices");
            }
            if (m == "mc2" && (!v[i].contains(t.labels_field.empty() ? "labels" : t.labels_field)))
              fail("no labels field '", t.labels_field, "'");
          }
        } else {
          render_template(t.doc_to_text, v[i], t.name);
          render_template(t.doc_to_target, v[i], t.name);
        }
      } catch (const Error& e) {
        fail(file, ":", ln[i], ": ", e.what());
      }
  };
  validate(docs, lines, t.data);
  if (!same_pool) validate(pool, pool_lines, t.fewshot_data);
  // lm-eval b281b09 (Open LLM Leaderboard v1) shuffles the items with random.Random(42) before
  // --limit and draws the demonstrations with that same generator; 0.4.13 keeps the file's order.
  const bool v1 = t.harness == "lm-eval b281b09";
  PythonRandom rnd(v1 ? 42 : t.fewshot_seed);
  if (v1) {
    auto order = rnd.shuffle(docs.size());
    std::vector<json> d2;
    std::vector<int64_t> l2;
    for (size_t i : order) d2.push_back(docs[i]), l2.push_back(lines[i]);
    docs.swap(d2), lines.swap(l2);
  }
  if (s.limit > 0 && int64_t(docs.size()) > s.limit) docs.resize(size_t(s.limit));
  if (docs.empty()) fail(t.data, ": no items");
  // The demonstrations of all items first: the sampler carries its state from item to item.
  // From the scored file itself they are drawn from the whole file, before --limit.
  const auto all_shots = fewshot_examples(t, docs, pool, same_pool, rnd);
  const bool bos = eval_adds_bos(t, s, tok);
  TaskResult r;
  r.task = t.name;
  r.setting = s.label;
  r.n = int64_t(docs.size());
  std::map<std::string, std::vector<double>> per;
  // Multiple choice: every (context, continuation) request first, scored in packed batches.
  std::vector<std::vector<double>> item_ll(size_t(r.n));
  std::vector<std::string> item_prompt(size_t(r.n));
  if (t.type == "multiple_choice") {
    std::vector<std::pair<std::string, std::string>> req;
    std::vector<int64_t> owner;
    for (int64_t i = 0; i < r.n; ++i) {
      const json& doc = docs[size_t(i)];
      const auto& shots = all_shots[size_t(i)];
      auto choices = doc_choices(t, doc);
      for (size_t c = 0; c < choices.size(); ++c) {
        std::string ctx, cont;
        if (t.choice_in_context) {
          json d = doc;
          d["choice"] = choices[c];
          ctx = build_context(t, shots, doc, render_template(t.doc_to_text, d, t.name));
          cont = t.target_delimiter + render_template("{{continuation}}", doc, t.name);
        } else {
          ctx = build_context(t, shots, doc, render_template(t.doc_to_text, doc, t.name));
          cont = t.target_delimiter + choices[c];
        }
        if (c == 0) item_prompt[size_t(i)] = ctx;
        req.push_back({ctx, cont});
        owner.push_back(i);
      }
    }
    auto lls = score_requests(m, tok, req, s.batch_tokens, bos);
    for (size_t k = 0; k < lls.size(); ++k) item_ll[size_t(owner[k])].push_back(lls[k]);
  }
  Progress bar("eval " + t.name, r.n, "items");
  for (int64_t i = 0; i < r.n; ++i) try {
      const json& doc = docs[size_t(i)];
      const auto& shots = all_shots[size_t(i)];
      json sample = {{"index", i}};
      if (t.type == "multiple_choice") {
        auto choices = doc_choices(t, doc);
        const std::vector<double>& ll = item_ll[size_t(i)];
        sample["prompt"] = item_prompt[size_t(i)];
        const int64_t pred = int64_t(std::max_element(ll.begin(), ll.end()) - ll.begin());
        sample["choices"] = choices;
        sample["loglikelihoods"] = ll;
        sample["prediction"] = pred;
        for (auto& metric : t.metrics) {
          if (metric == "acc" || metric == "acc_norm") {
            const int64_t gold = doc_gold(t, doc);
            sample["gold"] = gold;
            int64_t p = pred;
            if (metric == "acc_norm") {
              // Log-likelihood per character of the choice: lm-eval divides by len(choice), a
              // count of Unicode code points, not of UTF-8 bytes ("°C" is 2, not 3).
              double best = -INFINITY;
              for (size_t c = 0; c < ll.size(); ++c) {
                const double v = ll[c] / std::max<double>(1.0, double(utf8_length(choices[c])));
                if (v > best) best = v, p = int64_t(c);
              }
              sample["prediction_norm"] = p;
            }
            per[metric].push_back(p == gold ? 1.0 : 0.0);
          } else if (metric == "mc2") {
            auto labels = doc.at(t.labels_field.empty() ? "labels" : t.labels_field);
            double num = 0, den = 0;
            for (size_t c = 0; c < ll.size(); ++c) {
              const double pr = std::exp(ll[c]);
              den += pr;
              if (labels.at(c).get<int>() == 1) num += pr;
            }
            per[metric].push_back(den > 0 ? num / den : 0.0);
            sample["mc2"] = per[metric].back();
          }
        }
      } else {
        std::string ctx = build_context(t, shots, doc, render_template(t.doc_to_text, doc, t.name));
        std::vector<int32_t> ids;
        if (t.chat) {
          if (!s.chat)
            fail(t.name, ": chat: true but the model has no chat_template (pass --chat-template)");
          const std::string chat = s.chat->render({{"user", ctx}}, true);
          ids = tok.encode(chat, false);
          sample["chat_prompt"] = chat;
        } else {
          ids = tok.encode(ctx, adds_bos(tok, ctx, bos));
        }
        GenerateOptions go;
        go.sampling = s.sampling;
        go.max_new_tokens = t.max_new_tokens;
        go.stop_strings = t.until;
        go.stop_ids = s.stop_ids;
        KVCache cache = m.new_cache(int64_t(ids.size()) + t.max_new_tokens);
        auto g = generate(m, tok, ids, go, cache);
        const std::string target_text = render_template(t.doc_to_target, doc, t.name);
        sample["prompt"] = ctx;
        sample["generation"] = g.text;
        if (!t.filters.empty()) {  // lm-eval 0.4.x: one exact match per filter
          json filtered = json::object(), matched = json::object();
          for (auto& f : t.filters) {
            const std::string pred = apply_answer_filter(f, g.text);
            const double em = exact_match(pred, target_text, t.match_rules) ? 1.0 : 0.0;
            filtered[f.name] = pred;
            matched[f.name] = em;
            per["exact_match," + f.name].push_back(em);
          }
          sample["filtered"] = filtered;
          sample["exact_match"] = matched;
          sample["prediction"] = filtered[t.filters[0].name];
          sample["gold"] = target_text;
        } else {
          const std::string pred = extract_answer(g.text, t.answer_regex);
          std::string gold = extract_answer(target_text, t.answer_regex);
          if (gold == "[invalid]") gold = extract_answer(target_text, "");
          per["exact_match"].push_back(pred == gold ? 1.0 : 0.0);
          sample["prediction"] = pred;
          sample["gold"] = gold;
        }
      }
      r.samples.push_back(sample);
      bar.update(i + 1);
    } catch (const Error& e) {
      // Name the item: file and line of the data.
      fail(t.data, ":", lines[size_t(i)], ": ", e.what());
    }
  bar.finish();
  for (auto& [k, v] : per) add_stats(r, k, v);
  return r;
}

PerplexityResult perplexity(const Model& m, const Tokenizer& tok, const std::string& text,
                            int64_t window, int64_t stride) {
  auto ids = tok.encode(text, true);
  if (ids.size() < 2) fail("perplexity: the text has fewer than 2 tokens");
  window = std::min(window, m.config().max_position_embeddings);
  if (stride <= 0 || stride > window) stride = window;
  const int64_t V = m.config().vocab_size, N = int64_t(ids.size());
  PerplexityResult r;
  std::vector<float> logits;
  int64_t scored_to = 1;  // next position whose token still needs a score
  Progress bar("perplexity", N, "tokens");
  for (int64_t begin = 0; scored_to < N; begin += stride) {
    const int64_t end = std::min(N, begin + window), T = end - begin;
    KVCache cache = m.new_cache(T);
    logits.resize(size_t(T * V));
    m.forward(ids.data() + begin, T, cache, logits.data(), true);
    for (int64_t pos = std::max(scored_to, begin + 1); pos < end; ++pos)
      r.nll -= log_softmax_at(logits.data() + (pos - 1 - begin) * V, V, ids[size_t(pos)]);
    scored_to = end;
    bar.update(end);
  }
  bar.finish();
  r.tokens = N - 1;
  r.bytes = int64_t(text.size());
  r.perplexity = std::exp(r.nll / double(r.tokens));
  r.bits_per_byte = r.nll / (std::log(2.0) * double(r.bytes));
  return r;
}

}  // namespace lamina
