// lamina serve: the OpenAI API over HTTP (cpp-httplib) in front of a ServeEngine (continuous
// batching over --parallel slots), and the web chat page at `/`.
//
// Threads: httplib's pool runs the handlers (parse, tokenize, submit, then wait for or stream the
// engine's output); the engine thread alone runs the model. A request's output travels through
// its Stream (text pieces and the final result under a mutex). SIGINT/SIGTERM are taken by a
// thread of their own (sigwait): new requests get 503, running ones end with an error, the
// listener stops, and the process exits.
#include <httplib.h>
#include <pthread.h>
#include <signal.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <deque>
#include <filesystem>
#include <memory>
#include <mutex>
#include <optional>
#include <span>
#include <string>
#include <thread>
#include <vector>

#include "commands.h"
#include "core/error.h"
#include "core/parse_number.h"
#include "generate/serve_engine.h"
#include "io/generation_config.h"
#include "serve/openai_api.h"
#include "serve/web_page.h"
#include "tokenizer/chat_format.h"
#include "train/lora.h"

namespace lamina {
namespace {

using nlohmann::json;

// One request's output as the engine produces it.
struct Stream {
  std::mutex mu;
  std::condition_variable cv;
  struct Piece {
    std::string text;
    std::vector<TokenLogprob> logprobs;  // of the tokens whose text this piece completes
  };
  std::deque<Piece> pieces;
  bool done = false;
  GenerateResult result;
};

struct Server {
  const Tokenizer* tok = nullptr;
  ServeEngine* engine = nullptr;
  std::optional<ChatFormat> chat;
  GenerateOptions base;
  std::string model_name, api_key;
  int64_t created = 0;
  std::atomic<bool> stopping{false};
  std::atomic<int64_t> next_id{0}, http_errors{0};
};

void send_json(httplib::Response& res, int status, const json& j) {
  res.status = status;
  res.set_content(j.dump(), "application/json");
}

void send_error(Server& s, httplib::Response& res, int status, const std::string& message,
                const std::string& param = "", const std::string& code = "") {
  ++s.http_errors;
  send_json(res, status, error_body(status, message, param, code));
}

bool authorized(Server& s, const httplib::Request& req, httplib::Response& res) {
  if (s.api_key.empty()) return true;
  const std::string h = req.get_header_value("Authorization");
  if (h == "Bearer " + s.api_key) return true;
  send_error(s, res, 401,
             h.empty() ? "no API key given: send 'Authorization: Bearer KEY'" : "wrong API key", "",
             "invalid_api_key");
  return false;
}

std::string sse(const json& j) {
  return "data: " + j.dump() + "\n\n";
}

// The text of each generated token and of its alternatives, for logprobs (those not filled yet).
void fill_token_texts(const Tokenizer& tok, CompletionOutput& out) {
  for (size_t i = out.token_texts.size(); i < out.result.logprobs.size(); ++i) {
    const TokenLogprob& t = out.result.logprobs[i];
    out.token_texts.push_back(tok.decode({t.id}, false));
    std::vector<std::string> alt;
    for (auto& [id, lp] : t.top) alt.push_back(tok.decode({id}, false));
    out.top_texts.push_back(std::move(alt));
  }
}

void handle_completion(Server& s, const httplib::Request& http, httplib::Response& res, bool chat) {
  if (!authorized(s, http, res)) return;
  if (s.stopping) return send_error(s, res, 503, "the server is shutting down");
  CompletionRequest req;
  std::vector<int32_t> ids;
  try {
    req = parse_completion_request(http.body, chat, s.base, s.model_name);
    if (chat) {
      if (!s.chat)
        throw ApiError(400, "the model has no chat template; start the server with --chat-template",
                       "messages", "no_chat_template");
      ids = s.tok->encode(s.chat->render(req.messages, true), false);
    } else if (!req.prompt_ids.empty()) {  // token ids as given
      const int64_t V = s.tok->size();
      for (int32_t id : req.prompt_ids)
        if (id >= V)
          throw ApiError(400,
                         "token id " + std::to_string(id) +
                             " in 'prompt' is outside the tokenizer's " + std::to_string(V) +
                             " ids",
                         "prompt");
      ids = req.prompt_ids;
      req.prompt = s.tok->decode(ids, false);
    } else {
      ids = s.tok->encode(req.prompt, s.tok->add_bos_default());
    }
  } catch (const ApiError& e) {
    return send_error(s, res, e.status, e.what(), e.param, e.code);
  } catch (const std::exception& e) {
    return send_error(s, res, 400, e.what(), chat ? "messages" : "prompt");
  }
  const int64_t cap = s.engine->slot_capacity(), n = int64_t(ids.size());
  if (n == 0) return send_error(s, res, 400, "the prompt has no tokens", "prompt");
  if (n >= cap)
    return send_error(s, res, 400,
                      "the prompt has " + std::to_string(n) + " tokens; this server's context is " +
                          std::to_string(cap) + " tokens (--ctx)",
                      chat ? "messages" : "prompt", "context_length_exceeded");
  if (req.opt.max_new_tokens < 0) req.opt.max_new_tokens = cap - n;
  if (n + req.opt.max_new_tokens > cap)
    return send_error(s, res, 400,
                      "the prompt (" + std::to_string(n) + " tokens) plus max_tokens (" +
                          std::to_string(req.opt.max_new_tokens) +
                          ") is beyond this server's context of " + std::to_string(cap) + " tokens",
                      "max_tokens", "context_length_exceeded");

  auto stream = std::make_shared<Stream>();
  ServeRequest sr;
  sr.prompt = ids;
  sr.opt = req.opt;
  sr.on_text = [stream](const std::string& t, std::span<const TokenLogprob> lp) {
    std::lock_guard<std::mutex> lock(stream->mu);
    stream->pieces.push_back({t, {lp.begin(), lp.end()}});
    stream->cv.notify_all();
  };
  sr.on_done = [stream](const GenerateResult& r) {
    std::lock_guard<std::mutex> lock(stream->mu);
    stream->result = r;
    stream->done = true;
    stream->cv.notify_all();
  };
  const int64_t id = s.engine->submit(std::move(sr));
  if (id < 0) {
    if (s.stopping) return send_error(s, res, 503, "the server is shutting down");
    return send_error(s, res, 429, "the request queue is full; retry later", "",
                      "rate_limit_exceeded");
  }
  auto out = std::make_shared<CompletionOutput>();
  out->id = std::string(chat ? "chatcmpl-" : "cmpl-") + std::to_string(s.created) + "-" +
            std::to_string(s.next_id++);
  out->model = s.model_name;
  out->created = int64_t(std::time(nullptr));

  if (!req.stream) {
    std::unique_lock<std::mutex> lock(stream->mu);
    stream->cv.wait(lock, [&] { return stream->done; });
    out->result = stream->result;
    lock.unlock();
    if (out->result.stop_reason == "cancelled")
      return send_error(s, res, 503, "the request was ended: the server is shutting down");
    if (out->result.stop_reason == "error")
      return send_error(s, res, 500, "generation failed (the server's log says why)");
    fill_token_texts(*s.tok, *out);
    return send_json(res, 200, completion_response(req, *out));
  }

  ServeEngine* engine = s.engine;
  const Tokenizer* tok = s.tok;
  auto first = std::make_shared<bool>(true);
  // The streamed tokens' logprobs so far (each chunk carries those of the tokens it completes,
  // as OpenAI's chunks do; text_offset counts on from the earlier ones).
  auto streamed = std::make_shared<CompletionOutput>();
  res.set_header("Cache-Control", "no-cache");
  res.set_chunked_content_provider(
      "text/event-stream",
      [stream, out, streamed, req, engine, tok, first, id](size_t, httplib::DataSink& sink) {
        std::unique_lock<std::mutex> lock(stream->mu);
        stream->cv.wait_for(lock, std::chrono::milliseconds(200),
                            [&] { return stream->done || !stream->pieces.empty(); });
        std::deque<Stream::Piece> pieces;
        pieces.swap(stream->pieces);
        const bool done = stream->done;
        if (done) out->result = stream->result;
        lock.unlock();
        std::string data;
        if (*first && req.chat) {  // the role first, as OpenAI sends it
          data += sse(stream_chunk(req, *out, "", true, ""));
          *first = false;
        }
        for (auto& p : pieces) {
          json chunk = stream_chunk(req, *out, p.text, false, "");
          if (req.opt.top_logprobs >= 0) {
            auto& lp = streamed->result.logprobs;
            const size_t from = lp.size();
            lp.insert(lp.end(), p.logprobs.begin(), p.logprobs.end());
            fill_token_texts(*tok, *streamed);
            chunk["choices"][0]["logprobs"] = logprobs_json(req, *streamed, from, lp.size());
          }
          data += sse(chunk);
        }
        if (done) {
          if (out->result.stop_reason == "cancelled") {
            data += sse(error_body(503, "the request was ended: the server is shutting down"));
          } else if (out->result.stop_reason == "error") {
            data += sse(error_body(500, "generation failed (the server's log says why)"));
          } else {
            // Every token's logprobs went with the pieces (the continuation passes the last ones
            // with its last piece, before it ends).
            data += sse(stream_chunk(req, *out, "", false, finish_reason(out->result.stop_reason)));
            if (req.include_usage) data += sse(usage_chunk(req, *out));
          }
          data += "data: [DONE]\n\n";
        } else if (data.empty()) {
          data = ": keep-alive\n\n";  // finds a client that has gone while nothing is produced
        }
        if (!sink.write(data.data(), data.size())) {
          engine->cancel(id);  // the client is gone: its slot is freed at the next step
          return false;
        }
        if (done) sink.done();
        return true;
      },
      [stream, engine, id](bool) {
        std::lock_guard<std::mutex> lock(stream->mu);
        if (!stream->done) engine->cancel(id);
      });
}

std::string metrics_text(const Server& s) {
  const ServeMetrics m = s.engine->metrics();
  std::string t;
  auto add = [&](const char* name, const char* type, const char* help, int64_t v) {
    t += std::string("# HELP lamina_") + name + " " + help + "\n# TYPE lamina_" + name + " " +
         type + "\nlamina_" + name + " " + std::to_string(v) + "\n";
  };
  add("requests_total", "counter", "completion requests accepted", m.requests);
  add("requests_rejected_total", "counter", "requests refused because the queue was full",
      m.rejected);
  add("requests_completed_total", "counter", "requests that ran to their end", m.completed);
  add("requests_cancelled_total", "counter", "requests ended early (client gone, shutdown)",
      m.cancelled);
  add("http_errors_total", "counter", "requests answered with an error", s.http_errors);
  add("prompt_tokens_total", "counter", "prompt tokens of accepted requests", m.prompt_tokens);
  add("generated_tokens_total", "counter", "tokens generated", m.generated_tokens);
  add("prefix_reused_tokens_total", "counter", "prompt tokens served from a slot's cache",
      m.prefix_reused);
  add("decode_steps_total", "counter", "batched forward passes", m.steps);
  add("queue_length", "gauge", "requests waiting for a slot", m.queued);
  add("slots_busy", "gauge", "slots running a request", m.running);
  add("slots_total", "gauge", "slots (--parallel)", m.slots);
  return t;
}

}  // namespace

int cmd_serve(int argc, char** argv) {
  Args a("serve",
         "Serve the model over the OpenAI API: POST /v1/chat/completions and /v1/completions\n"
         "(streamed with server-sent events when asked), GET /v1/models, /health, /metrics\n"
         "(Prometheus) and a chat page at /. Requests run in --parallel slots, batched in\n"
         "one forward pass per step. Sampling options below are only the defaults' source for\n"
         "EOS ids; each request carries its own settings (OpenAI's defaults otherwise).",
         join_specs(
             model_arg_specs(),
             std::vector<ArgSpec>{
                 {"host", "ADDR", "address to listen on", "127.0.0.1"},
                 {"port", "N", "port to listen on (0: any free one, printed)", "8080"},
                 {"parallel", "N", "slots: requests generated at once", "4"},
                 {"ctx", "N", "context of each slot in tokens (prompt + completion)", "2048"},
                 {"queue", "N", "requests that may wait for a slot before 429", "64"},
                 {"max-body", "BYTES", "largest request body (413 beyond)", "1048576"},
                 {"api-key", "KEY", "require 'Authorization: Bearer KEY' on /v1 and /metrics", ""},
                 {"alias", "NAME", "the model's name in the API (default: its file name)", ""},
                 {"chat-template", "NAME",
                  "llama-2, mistral-instruct, openchat or chatml (default: from the model)", ""},
                 {"condition", "TEXT", "OpenChat class condition (default: as generate)", ""},
                 {"stop-token", "ID", "a further token id that ends every completion", "", true},
                 {"lora", "ADAPTER",
                  "a PEFT LoRA adapter directory, folded into the weights at start (as merge-lora; "
                  "HF model directories only)",
                  ""}}));
  if (!a.parse(argc, argv)) return 0;
  if (a.given("api-key") && a.str("api-key").empty()) fail("--api-key: empty key");
  const std::string host = a.str("host");
  const int port = int(a.integer("port"));

  // Signals go to the thread that waits for them, not to whichever thread runs (set before any
  // thread starts, so every thread inherits the mask).
  sigset_t sigs;
  sigemptyset(&sigs);
  sigaddset(&sigs, SIGINT);
  sigaddset(&sigs, SIGTERM);
  pthread_sigmask(SIG_BLOCK, &sigs, nullptr);

  LoadedModel m;
  if (a.given("lora")) {
    // merge-lora into a temporary directory, loaded and then removed at once: the mapped files
    // stay readable until the process lets them go, and nothing is left behind.
    if (is_gguf_file(a.str("model"))) fail("--lora: needs an HF model directory, not a GGUF file");
    if (a.given("threads")) set_num_threads(int(a.integer("threads")));
    const auto tmp = std::filesystem::temp_directory_path() /
                     ("lamina-serve-lora-" + std::to_string(::getpid()));
    merge_lora(a.str("model"), a.str("lora"), tmp.string(), true, std::nullopt);
    LoadOptions opt;
    if (a.given("dtype")) opt.dtype = parse_dtype(a.str("dtype"), "--dtype", true);
    try {
      m.tokenizer = Tokenizer::load(a.str("model"));
      m.model = Model::load(tmp.string(), opt);
    } catch (...) {
      std::filesystem::remove_all(tmp);
      throw;
    }
    std::filesystem::remove_all(tmp);
  } else {
    m = load_model(a);
  }
  Server s;
  s.tok = &m.tokenizer;
  s.api_key = a.str("api-key");
  s.created = int64_t(std::time(nullptr));
  s.model_name =
      a.given("alias") ? a.str("alias") : std::filesystem::path(a.str("model")).filename().string();
  if (s.model_name.empty())
    s.model_name = std::filesystem::path(a.str("model")).parent_path().filename().string();
  s.chat = chat_format(a, m.tokenizer);
  s.base.stop_ids = stop_token_ids(a);
  const int64_t ctx =
      std::min<int64_t>(a.integer("ctx"), m.model->config().max_position_embeddings);
  ServeEngine engine(*m.model, m.tokenizer, a.integer("parallel"), ctx, a.integer("queue"));
  s.engine = &engine;

  httplib::Server svr;
  // Every streaming client holds a pool thread for its whole reply: enough for the slots, the
  // queue and the short requests beside them.
  const size_t pool = size_t(a.integer("parallel") + a.integer("queue") + 8);
  svr.new_task_queue = [pool] { return new httplib::ThreadPool(pool); };
  svr.set_payload_max_length(size_t(a.integer("max-body")));
  svr.set_error_handler([&s](const httplib::Request&, httplib::Response& res) {
    if (!res.body.empty()) return;
    const int st = res.status;
    const std::string msg = st == 413   ? "the request body is larger than --max-body"
                            : st == 404 ? "no such endpoint"
                                        : "HTTP error " + std::to_string(st);
    res.set_content(error_body(st, msg).dump(), "application/json");
  });
  svr.set_exception_handler(
      [&s](const httplib::Request&, httplib::Response& res, std::exception_ptr ep) {
        std::string msg = "internal error";
        try {
          std::rethrow_exception(ep);
        } catch (const std::exception& e) {
          msg = e.what();
        } catch (...) {
        }
        send_error(s, res, 500, msg);
      });
  svr.Post("/v1/chat/completions", [&s](const httplib::Request& q, httplib::Response& r) {
    handle_completion(s, q, r, true);
  });
  svr.Post("/v1/completions", [&s](const httplib::Request& q, httplib::Response& r) {
    handle_completion(s, q, r, false);
  });
  svr.Get("/v1/models", [&s](const httplib::Request& q, httplib::Response& r) {
    if (!authorized(s, q, r)) return;
    send_json(r, 200,
              {{"object", "list"},
               {"data", json::array({{{"id", s.model_name},
                                      {"object", "model"},
                                      {"created", s.created},
                                      {"owned_by", "lamina"}}})}});
  });
  svr.Get("/health", [&s](const httplib::Request&, httplib::Response& r) {
    if (s.stopping) return send_json(r, 503, {{"status", "shutting down"}});
    send_json(r, 200, {{"status", "ok"}});
  });
  svr.Get("/metrics", [&s](const httplib::Request& q, httplib::Response& r) {
    if (!authorized(s, q, r)) return;
    r.set_content(metrics_text(s), "text/plain; version=0.0.4");
  });
  svr.Get("/", [](const httplib::Request&, httplib::Response& r) {
    r.set_content(chat_page_html(), "text/html; charset=utf-8");
  });

  int bound = port;
  if (port == 0) {
    bound = svr.bind_to_any_port(host.c_str());
    if (bound < 0) fail("--host ", host, ": cannot listen");
  } else if (!svr.bind_to_port(host.c_str(), port)) {
    fail("--host ", host, " --port ", port, ": cannot listen (address in use?)");
  }
  std::thread waiter([&] {
    int sig = 0;
    sigwait(&sigs, &sig);
    if (sig == 0) return;
    s.stopping = true;
    std::fprintf(stderr, "lamina serve: %s, ending the running requests\n",
                 sig == SIGTERM ? "SIGTERM" : "SIGINT");
    engine.shutdown(false);
    svr.stop();
  });
  std::fprintf(stderr, "lamina serve: %s on http://%s:%d/ (%lld slots of %lld tokens)\n",
               s.model_name.c_str(), host.c_str(), bound, (long long)a.integer("parallel"),
               (long long)ctx);
  std::fflush(stderr);
  svr.listen_after_bind();
  if (!s.stopping) {  // the listener failed on its own: release the waiting thread
    s.stopping = true;
    pthread_kill(waiter.native_handle(), SIGTERM);
  }
  waiter.join();
  engine.shutdown(false);
  std::fprintf(stderr, "lamina serve: stopped\n");
  return 0;
}

}  // namespace lamina
