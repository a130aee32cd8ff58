#include "train/dpo.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <set>

#include "core/dist.h"
#include "core/error.h"
#include "core/parse_number.h"
#include "io/fingerprint.h"
#include "io/generation_config.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"
#include "train/conversation.h"
#include "train/preference.h"
#include "train/train_graph.h"

namespace lamina {
namespace fs = std::filesystem;
using json = nlohmann::json;

DpoLossType parse_dpo_loss(const std::string& n) {
  if (n == "sigmoid") return DpoLossType::Sigmoid;
  if (n == "robust") return DpoLossType::Robust;
  if (n == "hinge") return DpoLossType::Hinge;
  if (n == "ipo") return DpoLossType::Ipo;
  fail("--loss: unknown loss '", n, "' (sigmoid, robust, hinge, ipo)");
}

namespace {

double log_sigmoid(double x) {
  return x >= 0 ? -std::log1p(std::exp(-x)) : x - std::log1p(std::exp(x));
}
double sigmoid(double x) {
  return x >= 0 ? 1 / (1 + std::exp(-x)) : std::exp(x) / (1 + std::exp(x));
}

// Summed log-probs and token counts of row r's chosen ([0]) and rejected ([1]) completions.
// Row layout: chosen tokens [0, segments[0]), rejected [segments[0], segments[0] + segments[1]);
// a token counts when it has a target and a non-zero weight (the prompt has weight 0).
struct PairLogps {
  double sum[2] = {0, 0}, count[2] = {0, 0};
};
PairLogps pair_logps(const TrainRow& row, const Batch& b, const std::vector<float>& lp, size_t r,
                     int64_t T) {
  PairLogps out;
  const int64_t lc = row.segments.at(0), lr = row.segments.at(1);
  for (int64_t i = 0; i < lc + lr; ++i) {
    const size_t k = r * size_t(T) + size_t(i);
    if (b.targets[k] < 0 || b.weights[k] == 0) continue;
    out.sum[i >= lc] += lp[k], out.count[i >= lc] += 1;
  }
  return out;
}

}  // namespace

DpoTerms dpo_loss(const DpoConfig& c, double pc, double pr, double rc, double rr) {
  const double z = (pc - pr) - (rc - rr), b = c.beta, e = c.label_smoothing;
  double L = 0, dz = 0;
  switch (c.loss) {
    case DpoLossType::Sigmoid:
      L = -log_sigmoid(b * z) * (1 - e) - log_sigmoid(-b * z) * e;
      dz = -b * (1 - e) * sigmoid(-b * z) + b * e * sigmoid(b * z);
      break;
    case DpoLossType::Robust:
      if (e >= 0.5) fail("--label-smoothing must be below 0.5 for the robust loss");
      L = (-log_sigmoid(b * z) * (1 - e) + log_sigmoid(-b * z) * e) / (1 - 2 * e);
      dz = (-b * (1 - e) * sigmoid(-b * z) - b * e * sigmoid(b * z)) / (1 - 2 * e);
      break;
    case DpoLossType::Hinge:
      L = std::max(0.0, 1 - b * z);
      dz = 1 - b * z > 0 ? -b : 0.0;
      break;
    case DpoLossType::Ipo:
      L = (z - 1 / (2 * b)) * (z - 1 / (2 * b));
      dz = 2 * (z - 1 / (2 * b));
      break;
  }
  return {L, dz, -dz};
}

StepTotals DpoObjective::totals(const MicroBatches& micro) const {
  StepTotals t;
  t.micro = double(micro.size());
  for (auto& rows : micro) {
    t.pairs += double(rows.size());
    for (auto& row : rows)  // RPO's NLL is a mean over the step's chosen completion tokens
      for (int64_t i = 0; i < row.segments.at(0); ++i)
        if (row.targets[size_t(i)] >= 0 && row.weights[size_t(i)] != 0) t.chosen_tokens += 1;
  }
  return t;
}

ObjectiveResult DpoObjective::run(TrainGraph& g, const MicroBatches& micro, int64_t T,
                                  double aux_coef, bool backward, const StepTotals& step) const {
  const double pairs = step.pairs, chosen_tokens = step.chosen_tokens;
  double nll = 0;
  ObjectiveResult res;
  double loss = 0, rch = 0, rrej = 0, acc = 0, lpc = 0, lpr = 0;
  for (auto& rows : micro) {
    Batch b = make_batch(rows, T);
    // The load-balancing loss counts the chosen and rejected tokens, not the padding: transformers'
    // load_balancing_loss_func with the attention mask of TRL's [chosen; rejected] batch.
    b.aux_mask.assign(size_t(b.B * T), 0);
    for (size_t r = 0; r < rows.size(); ++r)
      std::fill_n(b.aux_mask.begin() + long(r * size_t(T)),
                  rows[r].segments.at(0) + rows[r].segments.at(1), uint8_t(1));
    // One forward gives every token's log-probability; from them the pairs' losses and the
    // backward pass's token weights (-dL/dlogp), then one backward.
    auto reweight = [&](const std::vector<float>& lp, std::vector<float>& w) {
      for (size_t r = 0; r < rows.size(); ++r) {
        const TrainRow& row = rows[r];
        const int64_t lc = row.segments.at(0), lr = row.segments.at(1);
        const PairLogps s = pair_logps(row, b, lp, r, T);
        double pc = s.sum[0], pr = s.sum[1];
        const double nc = s.count[0], nr = s.count[1];
        nll -= pc;
        // The cached reference log-probs are F32 (TrainRow::extra); rounding the policy's the same
        // way makes policy = reference give rewards of exactly 0, as TRL's F32 tensors do.
        pc = double(float(pc)), pr = double(float(pr));
        const double rc = c_.reference_free ? 0 : row.extra.at(0),
                     rr = c_.reference_free ? 0 : row.extra.at(1);
        // IPO (TRL 1.16.0): the log-ratios averaged over each completion's tokens in the loss;
        // the rewards and logps metrics stay sums.
        const double ac = c_.loss == DpoLossType::Ipo ? std::max(nc, 1.0) : 1.0,
                     ar = c_.loss == DpoLossType::Ipo ? std::max(nr, 1.0) : 1.0;
        DpoTerms t = dpo_loss(c_, pc / ac, pr / ar, rc / ac, rr / ar);
        loss += t.loss;
        const double rewc = c_.beta * (pc - rc), rewr = c_.beta * (pr - rr);
        rch += rewc, rrej += rewr, acc += rewc > rewr, lpc += pc, lpr += pr;
        // Token weights for the backward pass: -dL/dlogp, mean over the step's pairs.
        for (int64_t i = 0; i < T; ++i) {
          const size_t k = r * size_t(T) + size_t(i);
          if (i >= lc + lr || b.targets[k] < 0 || b.weights[k] == 0) {
            w[k] = 0;
            continue;
          }
          const bool chosen = i < lc;
          double d = chosen ? t.d_chosen : t.d_rejected;
          d /= chosen ? ac : ar;
          double wk = -d / double(pairs);
          if (chosen && c_.rpo_alpha > 0) wk += c_.rpo_alpha / std::max(chosen_tokens, 1.0);
          w[k] = float(wk);
        }
      }
    };
    auto st = g.step(b, 1.0, aux_coef / step.micro, backward, reweight);
    if (backward) res.aux += st.aux_loss / step.micro;
  }
  const double n = std::max(pairs, 1.0);
  res.loss =
      loss / n + (c_.rpo_alpha > 0 ? c_.rpo_alpha * nll / std::max(chosen_tokens, 1.0) : 0.0);
  res.metrics = {{"rewards/chosen", rch / n},     {"rewards/rejected", rrej / n},
                 {"rewards/accuracies", acc / n}, {"rewards/margins", (rch - rrej) / n},
                 {"logps/chosen", lpc / n},       {"logps/rejected", lpr / n}};
  if (c_.rpo_alpha > 0) res.metrics["nll_loss"] = nll / std::max(chosen_tokens, 1.0);
  return res;
}

namespace {

// Prompt + completion ids -> one sequence with its completion mask (weight 1), truncated as TRL
// 1.16.0's DataCollatorForPreference: keep_start keeps the first max_len tokens, keep_end the last.
// max_prompt > 0 (lamina's --max-prompt-length; TRL 1.16 has none) first drops the prompt's oldest
// tokens after the first (BOS).
Example preference_sequence(std::vector<int32_t> prompt, const std::vector<int32_t>& completion,
                            int64_t max_len, int64_t max_prompt, bool keep_start) {
  if (max_prompt > 0 && int64_t(prompt.size()) > max_prompt)
    prompt.erase(prompt.begin() + 1, prompt.end() - (max_prompt - 1));
  Example ex;
  ex.ids = prompt;
  ex.ids.insert(ex.ids.end(), completion.begin(), completion.end());
  ex.weights.assign(prompt.size(), 0.0f);
  ex.weights.resize(ex.ids.size(), 1.0f);
  if (int64_t(ex.ids.size()) > max_len) {
    const long drop = long(ex.ids.size()) - long(max_len);
    if (keep_start) {
      ex.ids.resize(size_t(max_len)), ex.weights.resize(size_t(max_len));
    } else {
      ex.ids.erase(ex.ids.begin(), ex.ids.begin() + drop);
      ex.weights.erase(ex.weights.begin(), ex.weights.begin() + drop);
    }
  }
  return ex;
}

// One row [chosen | rejected | padding]. Every token of each sequence is an input, as in
// transformers' batch (the last one has no target): the MoE router sees the same positions.
TrainRow pair_row(const Example& c, const Example& r, int64_t T, int32_t pad) {
  TrainRow row;
  for (const Example* e : {&c, &r}) {
    row.tokens.insert(row.tokens.end(), e->ids.begin(), e->ids.end());
    row.targets.insert(row.targets.end(), e->ids.begin() + 1, e->ids.end());
    row.targets.push_back(-1);
    row.weights.insert(row.weights.end(), e->weights.begin() + 1, e->weights.end());
    row.weights.push_back(0.0f);
    row.segments.push_back(int32_t(e->ids.size()));
  }
  pad_row(row, T, pad);
  return row;
}

// Sequence log-probs (summed and counted over completion tokens) of every row under `p`.
void reference_logps(ParamStore& p, std::vector<TrainRow*>& rows, int64_t T, int64_t batch) {
  TrainGraph g(p);
  // Forward only: one layer's activations at a time (without this every layer's were kept: 9 GB
  // for a 7B model at 1024 tokens).
  g.set_recompute(true);
  // Data parallelism: batch k on rank k % world (the same batches as one process, so the same
  // numbers), then the results are summed over ranks (each row is non-zero on one rank only).
  const size_t world = size_t(dist::world()), rank = size_t(dist::rank());
  for (size_t i0 = 0; i0 < rows.size(); i0 += size_t(batch)) {
    if ((i0 / size_t(batch)) % world != rank) {
      for (size_t i = i0; i < std::min(rows.size(), i0 + size_t(batch)); ++i)
        rows[i]->extra = {0.f, 0.f};
      continue;
    }
    std::vector<TrainRow> part;
    for (size_t i = i0; i < std::min(rows.size(), i0 + size_t(batch)); ++i)
      part.push_back(*rows[i]);
    Batch b = make_batch(part, T);
    g.step(b, 1.0, 0.0, false);
    const auto& lp = g.token_logprobs();
    for (size_t r = 0; r < part.size(); ++r) {
      PairLogps s = pair_logps(part[r], b, lp, r, T);
      rows[i0 + r]->extra = {float(s.sum[0]), float(s.sum[1])};
    }
  }
  if (world > 1) {
    std::vector<float> all(rows.size() * 2);
    for (size_t i = 0; i < rows.size(); ++i)
      all[2 * i] = rows[i]->extra.at(0), all[2 * i + 1] = rows[i]->extra.at(1);
    dist::allreduce_sum(all.data(), all.size());
    for (size_t i = 0; i < rows.size(); ++i) rows[i]->extra = {all[2 * i], all[2 * i + 1]};
  }
}

}  // namespace

TrainResult run_dpo(const TrainOptions& o, const DpoOptions& d) {
  Tokenizer tok = Tokenizer::load(o.tokenizer_dir());
  // The chat template is needed by conversational rows only (plain text is used as it is).
  // (--template's built-in, else the model's own template rendered as transformers does).
  const std::optional<ChatFormat> chat =
      choose_chat_format(tok, o.tokenizer_dir(), d.tmpl, std::nullopt);
  const int64_t T = o.seq_len;
  const int64_t max_len = d.max_length > 0 ? d.max_length : T / 2;
  const int64_t max_prompt = d.max_prompt_length;
  if (2 * max_len > T)
    fail("--max-length ", max_len, ": a pair (chosen + rejected) must fit --seq-len ", T);
  if (max_prompt < 0 || max_prompt == 1)
    fail("--max-prompt-length ", max_prompt, ": expected 0 (no limit) or at least 2");
  const auto lock = lock_run(o);
  // Pairs (the training file, then --eval-data's if given), each a packed row.
  int64_t skipped = 0, truncated = 0;
  std::string needs_template;  // the first conversational row met without a template
  // "trl1.16": tokenised as TRL 1.16.0 (caches of the older rules are stale).
  uint64_t h =
      fnv1a("trl1.16" + (chat ? chat->identity() : std::string("none")) + std::to_string(max_len) +
            std::to_string(max_prompt) + std::to_string(d.prompt_keep_start) + std::to_string(T));
  auto load_pairs = [&](const std::string& path) {
    std::vector<TrainRow> out;
    SkippedLines skips;
    for_each_jsonl_line(path, [&](const std::string& line, int64_t n) {
      const std::string where = path + ":" + std::to_string(n);
      try {
        PreferenceRow pr = parse_preference(line, where);
        if (pr.conversational && !chat) {
          if (needs_template.empty()) needs_template = where;
          return;
        }
        PreferenceIds ids = tokenize_preference(pr, tok, chat ? &*chat : nullptr);
        // TRL drops rows whose prompt alone fills max_length under keep_start.
        if (d.prompt_keep_start && max_prompt == 0 && int64_t(ids.prompt.size()) >= max_len)
          fail(where, ": the prompt (", ids.prompt.size(),
               " tokens) fills --max-length; dropped as TRL does");
        Example c =
            preference_sequence(ids.prompt, ids.chosen, max_len, max_prompt, d.prompt_keep_start);
        Example r =
            preference_sequence(ids.prompt, ids.rejected, max_len, max_prompt, d.prompt_keep_start);
        auto weighted = [](const Example& e) {
          return std::accumulate(e.weights.begin() + 1, e.weights.end(), 0.0f);
        };
        if (c.ids.size() < 2 || r.ids.size() < 2 || weighted(c) == 0 || weighted(r) == 0)
          fail(where, ": truncation left no completion token (raise --max-length)");
        truncated +=
            int64_t(ids.prompt.size() + std::max(ids.chosen.size(), ids.rejected.size())) > max_len;
        out.push_back(pair_row(c, r, T, tok.eos_id()));
        h = fnv1a(line, h);
      } catch (const Error& e) {
        if (d.strict) throw;
        skips.add(e.what());
      }
    });
    if (!needs_template.empty())
      fail(needs_template, ": a conversational row needs a chat template, and ", o.tokenizer_dir(),
           " has none; pass --template NAME");
    if (out.empty()) skips.fail_none_usable(path, "preference pair");
    skips.print_warnings();
    skipped += skips.count();
    return out;
  };
  std::vector<TrainRow> rows = load_pairs(d.data);
  const size_t n_train_file = rows.size();
  if (!d.eval_data.empty()) {
    auto ev = load_pairs(d.eval_data);
    rows.insert(rows.end(), std::make_move_iterator(ev.begin()), std::make_move_iterator(ev.end()));
  }

  ParamStore p = load_training_store(o);
  // Reference log-probabilities, once, cached by (reference weights, data).
  std::vector<TrainRow*> all;
  for (auto& r : rows) all.push_back(&r);
  if (!d.cfg.reference_free) {
    const std::string ref_dir = d.ref_model.empty() ? o.model : d.ref_model;
    char name[64];
    std::snprintf(name, sizeof name, "ref-logps-%016llx.json",
                  (unsigned long long)fnv1a(
                      model_fingerprint(ref_dir) + "sum" +
                          // the reference as kept: a bf16/q4_0/nf4 base scores otherwise
                          (o.base_dtype ? dtype_name(*o.base_dtype) : ""),
                      h));
    const std::string cache = (o.cache_dir.empty() ? o.out + "/.cache" : o.cache_dir) + "/" + name;
    double cached = dist::is_root() && file_exists(cache) ? 1 : 0;  // one decision for all ranks
    dist::allreduce_sum(&cached, 1);
    if (cached > 0) {
      auto j = read_json_file(cache);
      if (j.size() != rows.size()) fail(cache, ": does not match the data (delete it)");
      for (size_t i = 0; i < rows.size(); ++i) rows[i].extra = j[i].get<std::vector<float>>();
      std::fprintf(stderr, "dpo: reference log-probabilities from %s\n", cache.c_str());
    } else {
      if (d.ref_model.empty()) {
        reference_logps(p, all, T, o.batch_size);
      } else {
        // The reference is frozen throughout: kept like the policy's base (--base-dtype).
        std::optional<FrozenBase> rb;
        if (o.base_dtype) rb = FrozenBase{*o.base_dtype, [](const TensorSpec&) { return true; }};
        ParamStore ref = ParamStore::load(d.ref_model, rb);
        if (ref.cfg.vocab_size != p.cfg.vocab_size)
          fail(d.ref_model, ": vocabulary differs from the policy's");
        reference_logps(ref, all, T, o.batch_size);
      }  // the reference weights are freed here: training holds only the policy
      fs::create_directories(fs::path(cache).parent_path());
      json j = json::array();
      for (auto& r : rows) j.push_back(r.extra);
      if (dist::is_root()) write_file_atomic(cache, j.dump() + "\n");
      std::fprintf(stderr,
                   "dpo: reference log-probabilities computed for %zu pairs, cached in %s\n",
                   rows.size(), cache.c_str());
    }
  }
  prepare_training(o,
                   p);  // LoRA after the reference pass: base without the adapter is the reference
  // Held-out pairs for eval metrics: --eval-data, else a seeded split of the training file.
  // A pair is identified by its tokens (chosen and rejected as tokenised, padding included).
  std::map<std::vector<int32_t>, size_t> distinct;  // tokens -> pair id
  std::vector<size_t> pair_id(rows.size());
  for (size_t i = 0; i < rows.size(); ++i)
    pair_id[i] = distinct.emplace(rows[i].tokens, distinct.size()).first->second;
  std::vector<TrainRow> tr, va;
  if (!d.eval_data.empty()) {
    std::set<size_t> trained(pair_id.begin(), pair_id.begin() + long(n_train_file));
    size_t leaked = 0;
    for (size_t i = 0; i < rows.size(); ++i) {
      leaked += i >= n_train_file && trained.count(pair_id[i]);
      (i < n_train_file ? tr : va).push_back(std::move(rows[i]));
    }
    if (leaked)
      std::fprintf(stderr, "dpo: warning: %zu of the %zu --eval-data pairs are also in --data\n",
                   leaked, va.size());
  } else {
    // Split by distinct pair, so that no held-out pair is also trained on: every copy of a pair
    // goes to the same side.
    if (distinct.size() < rows.size())
      std::fprintf(stderr,
                   "dpo: warning: %zu of %zu pairs repeat an earlier one (%zu distinct); the "
                   "held-out split is by distinct pair\n",
                   rows.size() - distinct.size(), rows.size(), distinct.size());
    std::vector<size_t> ids(distinct.size()), tr_ids, va_ids;
    std::iota(ids.begin(), ids.end(), 0);
    seeded_split(ids, o.val_fraction, o.seed, tr_ids, va_ids);
    std::vector<std::vector<size_t>> copies(distinct.size());  // pair id -> its rows
    for (size_t i = 0; i < rows.size(); ++i) copies[pair_id[i]].push_back(i);
    for (size_t id : tr_ids)
      for (size_t i : copies[id]) tr.push_back(std::move(rows[i]));
    for (size_t id : va_ids)
      for (size_t i : copies[id]) va.push_back(std::move(rows[i]));
  }
  std::fprintf(stderr,
               "dpo: %zu pairs (%zu train, %zu eval), %lld truncated, %lld malformed lines "
               "skipped; loss %s, beta %g\n",
               tr.size() + va.size(), tr.size(), va.size(), (long long)truncated,
               (long long)skipped,
               d.cfg.loss == DpoLossType::Sigmoid  ? "sigmoid"
               : d.cfg.loss == DpoLossType::Robust ? "robust"
               : d.cfg.loss == DpoLossType::Hinge  ? "hinge"
                                                   : "ipo",
               d.cfg.beta);
  char sig[32];
  std::snprintf(sig, sizeof sig, "%016llx", (unsigned long long)h);
  // Each pair one row [chosen | rejected | padding]; extra holds its reference log-probs.
  InMemoryData data(std::move(tr), std::move(va), std::string("pairs-") + sig, "preference pairs");
  DpoObjective obj(d.cfg);
  CheckpointExtras extras;
  // TRL 1.16.0's DPOTrainer adds the load-balancing loss whenever the model is a MoE, at the
  // config's router_aux_loss_coef, whatever its output_router_logits says.
  TrainOptions to = o;
  if (!to.aux_coef && p.cfg.is_moe()) to.aux_coef = p.cfg.router_aux_loss_coef;
  return train_loop(to, p, data, extras, "lamina dpo: " + fs::path(o.model).filename().string(),
                    &obj);
}

int64_t binarize_ultrafeedback(const std::string& in_path, const std::string& out_path,
                               uint64_t seed, const std::vector<std::string>& exclude) {
  std::mt19937_64 rng(seed);
  std::string out;
  int64_t written = 0, ties = 0, excluded = 0;
  for_each_jsonl_line(in_path, [&](const std::string& line, int64_t n) {
    const std::string where = in_path + ":" + std::to_string(n);
    json j = parse_json_line(line, where);
    const std::string source = j.value("source", "");
    if (std::find(exclude.begin(), exclude.end(), source) != exclude.end()) {
      ++excluded;
      return;
    }
    if (!j.contains("instruction") || !j["instruction"].is_string() || !j.contains("completions") ||
        !j["completions"].is_array())
      fail(where, ": expected \"instruction\" and a list \"completions\"");
    struct Cand {
      std::string model, response;
      double mean;
    };
    std::vector<Cand> cands;
    for (auto& c : j["completions"]) {
      if (!c.is_object() || !c.contains("response") || !c.contains("annotations"))
        fail(where, ": malformed completion");
      double sum = 0;
      int cnt = 0;
      for (auto& [aspect, a] : c["annotations"].items()) {
        if (!a.is_object() || !a.contains("Rating")) continue;
        const json& r = a["Rating"];
        double v;
        if (r.is_number())
          v = r.get<double>();
        else if (r.is_string() && r.get<std::string>() != "N/A") {
          auto x = parse_finite(r.get<std::string>());
          if (!x)
            fail(where, ": annotation '", aspect, "' has a Rating that is not a number: '",
                 r.get<std::string>().substr(0, 80), "'");
          v = *x;
        } else
          continue;
        sum += v, ++cnt;
      }
      if (cnt) cands.push_back({c.value("model", ""), c["response"].get<std::string>(), sum / cnt});
    }
    if (cands.size() < 2) return;
    size_t best = 0;
    for (size_t i = 1; i < cands.size(); ++i)
      if (cands[i].mean > cands[best].mean) best = i;
    std::vector<size_t> lower;
    for (size_t i = 0; i < cands.size(); ++i)
      if (cands[i].mean < cands[best].mean) lower.push_back(i);
    if (lower.empty()) {
      ++ties;  // every completion rated the same: no preference
      return;
    }
    const size_t rej = lower[std::uniform_int_distribution<size_t>(0, lower.size() - 1)(rng)];
    const std::string prompt = j["instruction"];
    json o = {
        {"source", source},
        {"prompt", prompt},
        {"chosen", json::array({{{"role", "user"}, {"content", prompt}},
                                {{"role", "assistant"}, {"content", cands[best].response}}})},
        {"rejected", json::array({{{"role", "user"}, {"content", prompt}},
                                  {{"role", "assistant"}, {"content", cands[rej].response}}})},
        {"chosen-rating", cands[best].mean},
        {"rejected-rating", cands[rej].mean},
        {"chosen-model", cands[best].model},
        {"rejected-model", cands[rej].model}};
    out += o.dump() + "\n";
    ++written;
  });
  write_file_atomic(out_path, out);
  std::fprintf(
      stderr,
      "binarize-ultrafeedback: %lld pairs written, %lld ties dropped, %lld excluded by source\n",
      (long long)written, (long long)ties, (long long)excluded);
  return written;
}

}  // namespace lamina
