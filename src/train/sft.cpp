#include "train/sft.h"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <nlohmann/json.hpp>
#include <numeric>
#include <random>
#include <sstream>

#include "core/error.h"
#include "core/parse_number.h"
#include "io/generation_config.h"
#include "io/jsonl.h"
#include "io/mapped_file.h"
#include "io/output_dir.h"
#include "tokenizer/tokenizer_files.h"
#include "train/conversation.h"
#include "train/packing.h"
#include "train/params.h"

namespace lamina {
namespace fs = std::filesystem;
using json = nlohmann::json;

SftSource parse_source(const std::string& spec) {
  SftSource s;
  std::string rest = spec;
  if (auto eq = rest.find('='); eq != std::string::npos && rest.find(':') > eq) {
    s.name = rest.substr(0, eq);
    rest = rest.substr(eq + 1);
  }
  std::stringstream ss(rest);
  std::getline(ss, s.path, ':');
  for (std::string opt; std::getline(ss, opt, ':');) {
    auto eq = opt.find('=');
    std::string k = opt.substr(0, eq), v = eq == std::string::npos ? "" : opt.substr(eq + 1);
    if (k == "weight") {
      auto w = parse_finite(v);
      if (!w) fail("--source ", spec, ": weight '", v, "' is not a number");
      if (*w < 0)
        fail("--source ", spec, ": weight ", v, " must be >= 0 (1.0 expert, 0.1 sub-optimal)");
      s.weight = float(*w);
    } else if (k == "condition") {
      s.condition = v;
    } else {
      fail("--source ", spec, ": unknown option '", k, "' (weight=W, condition=C)");
    }
  }
  if (s.path.empty()) fail("--source ", spec, ": no file");
  std::error_code ec;
  if (!fs::exists(s.path, ec)) fail("--source ", spec, ": ", s.path, ": not found");
  if (fs::is_directory(s.path, ec))
    fail("--source ", spec, ": ", s.path, ": is a directory, expected a file");
  if (s.name.empty()) s.name = fs::path(s.path).stem().string();
  return s;
}

namespace {

// A conversation as a packable segment: inputs, targets and weights of equal length.
struct Segment {
  std::vector<int32_t> tokens, targets;
  std::vector<float> weights;
};

std::vector<TrainRow> pack(const std::vector<Segment>& segs, int64_t T, int32_t pad,
                           double* efficiency) {
  std::vector<int64_t> lens;
  for (auto& s : segs) lens.push_back(int64_t(s.tokens.size()));
  auto bins = pack_first_fit_decreasing(lens, T);
  std::vector<TrainRow> rows;
  int64_t used = 0;
  for (auto& bin : bins) {
    TrainRow r;
    for (int64_t i : bin) {
      const Segment& s = segs[size_t(i)];
      r.tokens.insert(r.tokens.end(), s.tokens.begin(), s.tokens.end());
      r.targets.insert(r.targets.end(), s.targets.begin(), s.targets.end());
      r.weights.insert(r.weights.end(), s.weights.begin(), s.weights.end());
      r.segments.push_back(int32_t(s.tokens.size()));
      used += int64_t(s.tokens.size());
    }
    pad_row(r, T, pad);
    rows.push_back(std::move(r));
  }
  if (efficiency) *efficiency = rows.empty() ? 0 : double(used) / double(rows.size() * size_t(T));
  return rows;
}

// Copies the model's tokenizer files to dir, adds the template's tokens the tokenizer lacks and
// records the chat template. Returns the tokens added.
std::vector<std::string> stage_tokenizer(const std::string& model, const std::string& dir,
                                         std::optional<ChatTemplate> t) {
  fs::create_directories(dir);
  copy_tokenizer_files(model, dir);
  if (!t) return {};  // the model's own template, as it is
  Tokenizer tok = Tokenizer::load(dir);
  std::vector<std::string> need;
  if (t == ChatTemplate::OpenChat) need = {"<|end_of_turn|>"};
  if (t == ChatTemplate::ChatML) need = {"<|im_start|>", "<|im_end|>"};
  std::vector<std::string> added;
  for (auto& n : need)
    if (!tok.token_id(n)) added.push_back(n);
  const std::string cfg_path = dir + "/tokenizer_config.json";
  json cfg = file_exists(cfg_path) ? read_json_file(cfg_path) : json::object();
  int64_t next = tok.size();
  for (auto& n : added)
    cfg["added_tokens_decoder"][std::to_string(next++)] = {
        {"content", n},    {"lstrip", false},      {"normalized", false},
        {"rstrip", false}, {"single_word", false}, {"special", true}};
  cfg["chat_template"] = jinja_chat_template(chat_template_name(*t));
  write_file_atomic(cfg_path, cfg.dump(2) + "\n");
  return added;
}

}  // namespace

TrainResult run_sft(const TrainOptions& o, const SftOptions& so) {
  if (so.sources.empty()) fail("give --data FILE or --source NAME=FILE:weight=W:condition=C");
  const bool crlft = so.objective == "crlft";
  if (!crlft && so.objective != "sft")
    fail("--objective: expected sft or crlft, got '", so.objective, "'");
  Tokenizer base_tok = Tokenizer::load(o.tokenizer_dir());
  // The model's own template decides (rendered by the Jinja interpreter), unless --template
  // replaces it with a built-in; a model without one gets OpenChat's (as OpenChat 3.5 was made
  // from Mistral's base model). C-RLFT needs OpenChat's conditions, so the built-in.
  ChatTemplate tmpl = ChatTemplate::OpenChat;
  std::optional<ChatFormat> own_format;
  const std::string& own = base_tok.chat_template();
  if (so.tmpl) {
    tmpl = *so.tmpl;
  } else if (!own.empty()) {
    if (crlft) {
      auto d = detect_chat_template(own);
      if (d != ChatTemplate::OpenChat)
        fail(o.tokenizer_dir(),
             ": C-RLFT needs OpenChat's conditioned template, but the model's chat_template is ",
             d ? chat_template_name(*d) : "another", "; pass --template openchat to replace it");
    } else {
      own_format = ChatFormat::own(base_tok, end_of_turn_texts(base_tok, o.tokenizer_dir()),
                                   o.tokenizer_dir() + ": chat_template");
    }
  }
  if (crlft && tmpl != ChatTemplate::OpenChat)
    fail("--objective crlft needs the openchat template (class conditions)");
  const auto lock = lock_run(o);
  // The best source's condition is the one used at inference.
  const SftSource* best = &so.sources[0];
  for (auto& s : so.sources)
    if (s.weight > best->weight) best = &s;
  const std::string inference_condition =
      !so.inference_condition.empty() ? so.inference_condition
                                      : (crlft ? best->condition : std::string("GPT4 Correct"));
  std::error_code ec;
  fs::create_directories(o.out, ec);
  if (ec || !fs::is_directory(o.out))
    fail(o.out, ": cannot create the output directory: ", ec ? ec.message() : "not a directory");
  const std::string tok_dir = o.out + "/.tokenizer";
  auto added = stage_tokenizer(o.tokenizer_dir(), tok_dir,
                               own_format ? std::nullopt : std::optional<ChatTemplate>(tmpl));
  Tokenizer tok = Tokenizer::load(tok_dir);
  ParamStore p = load_training_store(o);
  if (tok.size() > p.cfg.vocab_size) p.resize_vocab(tok.size());
  prepare_training(o, p);
  // Tokenise every conversation of every source.
  const int64_t T = o.seq_len;
  std::vector<Segment> segs;
  int64_t truncated = 0, dropped = 0, skipped = 0;
  uint64_t hash = 1469598103934665603ull;
  for (auto& src : so.sources) {
    auto file = read_conversations(src.path, so.strict);
    skipped += file.skipped;
    TemplateOptions to;
    to.tmpl = tmpl;
    if (own_format) to.own = &*own_format;
    to.train_on_prompts = so.train_on_prompts;
    to.per_message_weight = so.per_sequence_loss;  // ochat's rule, before truncation as there
    for (size_t ci = 0; ci < file.conversations.size(); ++ci) {
      const Conversation& c = file.conversations[ci];
      to.weight = crlft ? c.weight.value_or(src.weight) : 1.0f;
      to.condition = crlft ? src.condition : inference_condition;
      Conversation cc = c;
      if (!crlft) {
        cc.condition.reset();
        for (auto& t : cc.turns) t.weight.reset();
      }
      Example ex =
          tokenize_conversation(cc, tok, to, src.path + ": conversation " + std::to_string(ci + 1));
      if (int64_t(ex.ids.size()) > T + 1) {  // keep the start; what is cut is not learnt
        ex.ids.resize(size_t(T + 1));
        ex.weights.resize(size_t(T + 1));
        ++truncated;
      }
      Segment s;
      s.tokens.assign(ex.ids.begin(), ex.ids.end() - 1);
      s.targets.assign(ex.ids.begin() + 1, ex.ids.end());
      s.weights.assign(ex.weights.begin() + 1, ex.weights.end());
      double wsum = std::accumulate(s.weights.begin(), s.weights.end(), 0.0);
      if (wsum <= 0 || s.tokens.empty()) {
        ++dropped;
        continue;
      }
      for (auto id : ex.ids) hash = (hash ^ uint64_t(id)) * 1099511628211ull;
      segs.push_back(std::move(s));
    }
  }
  if (segs.empty()) fail("no conversation has a weighted token to learn from");
  // Held-out conversations for eval loss (seeded), then packing.
  std::vector<Segment> tr, va;
  seeded_split(segs, o.val_fraction, o.seed, tr, va);
  double eff_train = 0, eff_val = 0;
  auto train_rows = pack(tr, T, tok.eos_id(), &eff_train);
  auto val_rows = pack(va, T, tok.eos_id(), &eff_val);
  std::fprintf(
      stderr,
      "sft: %zu conversations (%zu train, %zu eval) from %zu source(s), template %s%s; %lld "
      "truncated, %lld "
      "without weighted tokens, %lld malformed lines skipped; packed into %zu rows of %lld tokens, "
      "efficiency %.1f%%\n",
      tr.size() + va.size(), tr.size(), va.size(), so.sources.size(),
      own_format ? own_format->name().c_str() : chat_template_name(tmpl),
      added.empty() ? "" : (", added tokens " + std::to_string(added.size())).c_str(),
      (long long)truncated, (long long)dropped, (long long)skipped, train_rows.size(), (long long)T,
      100 * eff_train);
  char sig[32];
  std::snprintf(sig, sizeof sig, "%016llx", (unsigned long long)hash);
  InMemoryData data(std::move(train_rows), std::move(val_rows), std::string("conversations-") + sig,
                    "packed rows");
  // Saved with every checkpoint: the tokenizer with the template, and how to chat with the model.
  CheckpointExtras extras;
  extras.tokenizer_dir = tok_dir;
  json gen = file_exists(o.tokenizer_dir() + "/generation_config.json")
                 ? read_json_file(o.tokenizer_dir() + "/generation_config.json")
                 : json::object();
  std::vector<int64_t> eos = p.cfg.eos_token_ids;
  if (!own_format) {
    if (tmpl == ChatTemplate::OpenChat) eos.push_back(*tok.token_id("<|end_of_turn|>"));
    if (tmpl == ChatTemplate::ChatML) eos.push_back(*tok.token_id("<|im_end|>"));
    gen["chat_template_name"] = chat_template_name(tmpl);
    if (tmpl == ChatTemplate::OpenChat) gen["chat_condition"] = inference_condition;
  } else {
    // The model's own template ends turns with its own EOS ids (generation_config's too).
    for (int32_t id : read_generation_config(o.tokenizer_dir()).eos_token_ids)
      if (std::find(eos.begin(), eos.end(), id) == eos.end()) eos.push_back(id);
  }
  gen["eos_token_id"] = eos;
  gen["lamina_training"] = {{"objective", so.objective}, {"packing_efficiency", eff_train}};
  extras.files["generation_config.json"] = gen.dump(2) + "\n";
  return train_loop(o, p, data, extras,
                    "lamina sft (" + so.objective + "): " + fs::path(o.model).filename().string());
}

}  // namespace lamina
