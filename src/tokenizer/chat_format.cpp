#include "tokenizer/chat_format.h"

#include <algorithm>

#include "core/error.h"
#include "io/generation_config.h"
#include "tokenizer/jinja.h"
#include "tokenizer/tokenizer.h"

namespace lamina {

namespace {

size_t common_prefix(const std::vector<int32_t>& a, const std::vector<int32_t>& b) {
  size_t n = 0;
  while (n < a.size() && n < b.size() && a[n] == b[n]) ++n;
  return n;
}

// An end-of-turn text counts for an assistant message only this close after its content: the
// templates put it right there ("</s>", " </s>", "<|im_end|>", "<end_of_turn>", "<|end|>"), and a
// template that writes none must not borrow the next turn's.
constexpr size_t kEndTextReach = 16;

// {"messages": [{"role", "content"}...], "add_generation_prompt"}: a Jinja template's variables.
jinja::Value message_variables(const std::vector<ChatMessage>& messages, bool gen) {
  jinja::List msgs;
  for (auto& m : messages)
    msgs.push_back(jinja::Value::of_dict(
        {{"role", jinja::Value::string(m.role)}, {"content", jinja::Value::string(m.content)}}));
  jinja::Value vars = jinja::Value::of_dict();
  vars.set("messages", jinja::Value::of_list(std::move(msgs)));
  vars.set("add_generation_prompt", jinja::Value::boolean(gen));
  return vars;
}

}  // namespace

ChatFormat ChatFormat::builtin(ChatTemplate t, ChatTokens k) {
  ChatFormat f;
  f.builtin_ = t;
  f.tokens_ = std::move(k);
  f.end_texts_ = {f.tokens_.eos};
  if (t == ChatTemplate::OpenChat) f.end_texts_.push_back(f.tokens_.end_of_turn);
  if (t == ChatTemplate::ChatML) f.end_texts_.push_back("<|im_end|>");
  return f;
}

ChatFormat ChatFormat::own(const Tokenizer& tok, std::vector<std::string> end_texts,
                           const std::string& where) {
  if (tok.chat_template().empty()) fail(where, ": the tokenizer has no chat_template");
  return from_text(tok.chat_template(), tok, std::move(end_texts), where);
}

ChatFormat ChatFormat::from_text(std::string jinja, const Tokenizer& tok,
                                 std::vector<std::string> end_texts, const std::string& where) {
  if (jinja.empty()) fail(where, ": empty chat template");
  ChatFormat f;
  f.template_ = jinja::Template(jinja, where);  // parsed once: errors before any work
  f.jinja_ = std::move(jinja);
  f.where_ = where;
  f.generation_blocks_ = jinja::has_generation_blocks(f.jinja_);
  if (tok.bos_id() >= 0) f.bos_ = tok.bos_text();
  if (tok.eos_id() >= 0) f.eos_ = tok.eos_text();
  if (!f.eos_.empty()) end_texts.push_back(f.eos_);
  std::sort(end_texts.begin(), end_texts.end());
  end_texts.erase(std::unique(end_texts.begin(), end_texts.end()), end_texts.end());
  end_texts.erase(std::remove(end_texts.begin(), end_texts.end(), std::string()), end_texts.end());
  f.end_texts_ = std::move(end_texts);
  return f;
}

std::string ChatFormat::name() const {
  return builtin_ ? chat_template_name(*builtin_) : "the model's chat_template";
}

std::string ChatFormat::render(const std::vector<ChatMessage>& messages, bool gen) const {
  if (builtin_) return render_chat(*builtin_, messages, gen, tokens_);
  return render_variables(message_variables(messages, gen));
}

std::string ChatFormat::render_variables(
    jinja::Value v, std::vector<std::pair<size_t, size_t>>* generation_spans) const {
  if (builtin_) fail("the built-in ", name(), " template renders messages' role and content only");
  using Kind = jinja::Value::Kind;
  if (v.kind != Kind::Dict) fail(where_, ": the template variables must be an object");
  // transformers' apply_chat_template: the special tokens' text (absent ones left undefined, as
  // it leaves out None values), tools and documents (None when not given), and
  // add_generation_prompt false by default.
  if (v.get("bos_token").kind == Kind::Undefined && !bos_.empty())
    v.set("bos_token", jinja::Value::string(bos_));
  if (v.get("eos_token").kind == Kind::Undefined && !eos_.empty())
    v.set("eos_token", jinja::Value::string(eos_));
  for (const char* k : {"tools", "documents"})
    if (v.get(k).kind == Kind::Undefined) v.set(k, jinja::Value::none());
  if (v.get("add_generation_prompt").kind == Kind::Undefined)
    v.set("add_generation_prompt", jinja::Value::boolean(false));
  alias_reasoning_fields(v);
  return template_.render(v, generation_spans);
}

std::string ChatFormat::identity() const {
  if (!builtin_) return "jinja:" + jinja_;
  return std::string("builtin:") + chat_template_name(*builtin_) + "|" + tokens_.bos + "|" +
         tokens_.eos + "|" + tokens_.condition;
}

ChatFormat::Tokenised ChatFormat::tokenise_for_training(const std::vector<ChatMessage>& msgs,
                                                        const std::vector<bool>& need,
                                                        const Tokenizer& tok,
                                                        const std::string& where) const {
  // The template's own assistant marks, when it has them.
  std::vector<std::pair<size_t, size_t>> marked;
  std::string full;
  if (generation_blocks_) {
    full = render_variables(message_variables(msgs, false), &marked);
    const size_t n = size_t(std::count_if(
        msgs.begin(), msgs.end(), [](const ChatMessage& m) { return m.role == "assistant"; }));
    if (marked.size() != n)
      fail(where, ": ", name(), " marks ", marked.size(), " {% generation %} spans for ", n,
           " assistant messages");
  } else {
    full = render(msgs, false);
  }
  size_t next_marked = 0;
  Tokenised out;
  out.ids = tok.encode(full, false);
  // Characters -> tokens: how many leading ids the text up to `chars` shares with the whole.
  auto tokens_upto = [&](size_t chars) -> size_t {
    if (chars == 0) return 0;
    if (chars >= full.size()) return out.ids.size();
    return common_prefix(tok.encode(full.substr(0, chars), false), out.ids);
  };
  // The content as rendered: as written, else stripped of surrounding whitespace (templates that
  // | trim it).
  auto find_content = [&](const std::string& c, size_t from, size_t& len) {
    len = c.size();
    size_t p = full.find(c, from);
    if (p != std::string::npos) return p;
    const size_t a = c.find_first_not_of(" \t\r\n"), b = c.find_last_not_of(" \t\r\n");
    if (a == std::string::npos) return from;
    len = b - a + 1;
    return full.find(c.substr(a, len), from);
  };
  size_t cursor = 0;
  for (size_t i = 0; i < msgs.size(); ++i) {
    const ChatMessage& m = msgs[i];
    if (m.role == "assistant" && generation_blocks_) {
      const auto [b, e] = marked[next_marked++];
      out.spans.push_back({int(i), tokens_upto(b), tokens_upto(e)});
      cursor = e;
    } else if (m.role == "assistant") {
      const std::vector<ChatMessage> before(msgs.begin(), msgs.begin() + long(i));
      const std::string prompt = render(before, true);
      if (prompt.size() < cursor || full.compare(0, prompt.size(), prompt) != 0)
        fail(where, ": ", name(), " renders the prompt before message ", i + 1,
             " differently from the whole conversation, so its reply cannot be located; pass "
             "--template NAME to train in a built-in template");
      size_t len = 0;
      const size_t c =
          m.content.empty() ? prompt.size() : find_content(m.content, prompt.size(), len);
      if (c == std::string::npos)
        fail(where, ": message ", i + 1, " (assistant): ", name(),
             " does not render its content as written, so its tokens cannot be located");
      size_t end = c + len, best = std::string::npos;
      for (auto& e : end_texts_) {
        const size_t p = full.find(e, c + len);
        if (p != std::string::npos && p <= c + len + kEndTextReach &&
            (best == std::string::npos || p + e.size() < best))
          best = p + e.size();
      }
      if (best != std::string::npos) end = best;
      out.spans.push_back({int(i), tokens_upto(prompt.size()), tokens_upto(end)});
      cursor = end;
    } else if (i < need.size() && need[i] && !m.content.empty()) {
      size_t len = 0;
      const size_t c = find_content(m.content, cursor, len);
      if (c == std::string::npos)
        fail(where, ": message ", i + 1, " (", m.role, ") has a loss weight, but ", name(),
             " does not render its content as written");
      out.spans.push_back({int(i), tokens_upto(c), tokens_upto(c + len)});
      cursor = c + len;
    }
  }
  return out;
}

std::optional<ChatFormat> choose_chat_format(const Tokenizer& tok, const std::string& dir,
                                             std::optional<ChatTemplate> named,
                                             const std::optional<std::string>& condition) {
  const GenerationConfig gen = read_generation_config(dir);
  ChatTokens k;
  k.bos = tok.bos_id() >= 0 ? tok.bos_text() : "";
  k.eos = tok.eos_text();
  k.condition = condition.value_or(gen.chat_condition.value_or("GPT4 Correct"));
  if (named) {
    if (condition && *named != ChatTemplate::OpenChat)
      fail("--condition applies to the openchat template, not ", chat_template_name(*named));
    return ChatFormat::builtin(*named, k);
  }
  if (tok.chat_template().empty()) {
    if (condition) fail("--condition: ", dir, " has no chat template to apply it to");
    return std::nullopt;
  }
  const bool openchat = detect_chat_template(tok.chat_template()) == ChatTemplate::OpenChat;
  if ((condition || gen.chat_condition) && openchat)
    return ChatFormat::builtin(ChatTemplate::OpenChat, k);
  if (condition)
    fail("--condition applies to OpenChat 3.5's template; ", dir,
         " has its own chat_template (pass --chat-template openchat to use OpenChat's)");
  return ChatFormat::own(tok, end_of_turn_texts(tok, dir), dir + ": chat_template");
}

void alias_reasoning_fields(jinja::Value& vars) {
  using jinja::Value;
  Value msgs = vars.get("messages");
  if (msgs.kind != Value::Kind::List) return;
  for (Value& m : *msgs.list) {
    if (m.kind != Value::Kind::Dict) continue;
    Value r;
    for (const char* k : {"reasoning_content", "thinking", "reasoning"}) {
      Value x = m.get(k);
      if (x.kind != Value::Kind::Undefined && x.kind != Value::Kind::None) {
        r = x;
        break;
      }
    }
    if (r.kind == Value::Kind::Undefined) continue;
    // {"thinking": r, **message, "reasoning_content": r}: "thinking" comes first, with the
    // message's own value if it has one; a new dict (the caller's message is not changed).
    jinja::Dict d = {{"thinking", r}};
    for (auto& [k, v] : *m.dict) {
      if (k == "thinking")
        d[0].second = v;
      else
        d.emplace_back(k, v);
    }
    Value copy = Value::of_dict(std::move(d));
    copy.set("reasoning_content", r);
    m = copy;
  }
}

std::vector<std::string> end_of_turn_texts(const Tokenizer& tok, const std::string& dir) {
  std::vector<std::string> out;
  if (tok.eos_id() >= 0) out.push_back(tok.eos_text());
  for (int32_t id : read_generation_config(dir).eos_token_ids)
    if (id >= 0 && id < tok.size()) out.push_back(tok.piece(id));
  return out;
}

}  // namespace lamina
