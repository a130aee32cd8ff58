"""lamina serve through the clients users point at it, on a tiny random model:
  - the official OpenAI Python client: chat and completions, streamed and not, usage, logprobs,
    stop sequences; greedy text equal to `lamina generate` for the same request;
  - errors in OpenAI's shape (400 bad values / unknown model / beyond the context, 401, 413,
    429), the server still serving after each;
  - a load test: 16 concurrent clients, 64 requests of mixed lengths, some cancelled mid-stream;
    every other one's greedy text equal to `lamina generate`, the server's memory bounded;
  - the chat page in Debian's chromium (Playwright), a streamed reply, a screenshot kept;
  - SIGTERM with a request running: the stream ends and the process exits within seconds;
  - --lora: a PEFT adapter folded in at start, greedy text equal to generate on merge-lora's.
usage: test_serve.py LAMINA ARTEFACT_DIR"""
import http.client
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time

import openai

sys.path.insert(0, os.path.dirname(__file__))
from harness import Report, runner  # noqa: E402

lamina = os.path.abspath(sys.argv[1])
artefacts = os.path.abspath(sys.argv[2])
report = Report()
check = report.check
run = runner(lamina)


class Server:
    def __init__(self, model, *args):
        self.p = subprocess.Popen([lamina, "serve", "--model", model, "--port", "0", *args],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        line = self.p.stderr.readline()
        m = re.search(r"http://127\.0\.0\.1:(\d+)/", line)
        if not m:
            raise SystemExit(f"lamina serve did not start: {line}{self.p.stderr.read()}")
        self.port = int(m.group(1))
        self.url = f"http://127.0.0.1:{self.port}"

    def client(self, key="none"):
        return openai.OpenAI(base_url=self.url + "/v1", api_key=key, max_retries=0, timeout=120)

    def raw(self, method, path, body=None, headers=None):
        c = http.client.HTTPConnection("127.0.0.1", self.port, timeout=60)
        c.request(method, path, body=body, headers=headers or {})
        r = c.getresponse()
        data = r.read()
        c.close()
        return r.status, data

    def rss_kb(self):
        for line in open(f"/proc/{self.p.pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    def stop(self):
        self.p.send_signal(signal.SIGTERM)
        try:
            self.p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.p.kill()
            return None
        return self.p.returncode


def generate(model, prompt, n, chat=False):
    args = ["generate", "--model", model, "--prompt", prompt, "--max-new-tokens", str(n)]
    p = run(*(args + (["--chat"] if chat else [])))
    assert p.returncode == 0, p.stderr
    return p.stdout[:-1]  # generate ends with a newline


def is_error(e, status, param=None):
    body = getattr(e, "body", None) or {}
    return e.status_code == status and (param is None or body.get("param") == param)


def api_checks(srv, model):
    c = srv.client()
    models = c.models.list()
    check("GET /v1/models names the model", [m.id for m in models.data] == ["tiny"])
    st, body = srv.raw("GET", "/health")
    check("GET /health", st == 200 and json.loads(body)["status"] == "ok")

    # Chat, greedy: the same text as generate --chat; usage counts.
    want = generate(model, "Tell me about rivers.", 24, chat=True)
    r = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Tell me about rivers."}],
                                  max_tokens=24, temperature=0)
    got = r.choices[0].message.content
    check("chat completion equals lamina generate --chat (greedy)", got == want, f"{got!r} vs {want!r}")
    check("chat usage", r.usage.completion_tokens <= 24 and r.usage.prompt_tokens > 5 and
          r.usage.total_tokens == r.usage.prompt_tokens + r.usage.completion_tokens, str(r.usage))
    check("chat finish_reason", r.choices[0].finish_reason in ("stop", "length") and r.object == "chat.completion")

    # Streamed: the deltas add up to the same text; the role first; usage in its own chunk; [DONE]
    # ends it (the client stops there).
    chunks = list(c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Tell me about rivers."}],
                                            max_tokens=24, temperature=0, stream=True,
                                            stream_options={"include_usage": True}))
    text = "".join(ch.choices[0].delta.content or "" for ch in chunks if ch.choices)
    check("streamed chat equals the whole one", text == want, f"{text!r}")
    check("stream: role first, finish_reason last, usage chunk",
          chunks[0].choices[0].delta.role == "assistant" and
          [ch for ch in chunks if ch.choices][-1].choices[0].finish_reason == r.choices[0].finish_reason and
          chunks[-1].choices == [] and chunks[-1].usage.completion_tokens == r.usage.completion_tokens)

    # Completions: the prompt continued as generate does (BOS as the tokenizer adds it).
    want_c = generate(model, "The river", 20)
    rc = c.completions.create(model="tiny", prompt="The river", max_tokens=20, temperature=0)
    check("completion equals lamina generate (greedy)", rc.choices[0].text == want_c, f"{rc.choices[0].text!r} vs {want_c!r}")
    st = "".join(ch.choices[0].text for ch in c.completions.create(model="tiny", prompt="The river", max_tokens=20,
                                                                    temperature=0, stream=True))
    check("streamed completion equals the whole one", st == want_c)
    re_echo = c.completions.create(model="tiny", prompt="The river", max_tokens=20, temperature=0, echo=True)
    check("completion echo", re_echo.choices[0].text == "The river" + want_c)
    # The same prompt as token ids (lamina tokenize: with the BOS the text prompt gets), taken as
    # given: the same continuation; ids outside the vocabulary are a 400 naming 'prompt'.
    tk = run("tokenize", "--model", model, "--text", "The river")
    ids = json.loads(tk.stdout)["ids"]
    ri = c.completions.create(model="tiny", prompt=ids, max_tokens=20, temperature=0)
    check("completion of token ids equals the text's", ri.choices[0].text == want_c and
          ri.usage.prompt_tokens == len(ids), f"{ri.choices[0].text!r} {ids}")
    try:
        c.completions.create(model="tiny", prompt=[1, 10**9], max_tokens=2)
        check("token id beyond the vocabulary refused", False)
    except openai.BadRequestError as e:
        check("token id beyond the vocabulary refused", is_error(e, 400, "prompt"), str(e))

    # A stop string cuts the text before it (taken from the greedy text itself).
    if len(want_c) >= 8:
        stop = want_c[5:8]
        rs = c.completions.create(model="tiny", prompt="The river", max_tokens=20, temperature=0, stop=[stop])
        check("stop sequence", rs.choices[0].text == want_c[:want_c.index(stop)] and
              rs.choices[0].finish_reason == "stop", f"{rs.choices[0].text!r} stop {stop!r}")
    r0 = c.completions.create(model="tiny", prompt="The river", max_tokens=0, temperature=0)
    check("max_tokens 0: empty, length", r0.choices[0].text == "" and r0.choices[0].finish_reason == "length")

    # logprobs: the chosen token's is the greedy maximum, top_logprobs sorted and normalised.
    rl = c.chat.completions.create(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8,
                                   temperature=0, logprobs=True, top_logprobs=3)
    content = rl.choices[0].logprobs.content
    ok = len(content) == rl.usage.completion_tokens and all(
        len(t.top_logprobs) == 3 and abs(t.top_logprobs[0].logprob - t.logprob) < 1e-6 and
        t.top_logprobs[0].logprob >= t.top_logprobs[1].logprob >= t.top_logprobs[2].logprob and
        t.logprob <= 0 and sum(2.718281828 ** x.logprob for x in t.top_logprobs) <= 1 + 1e-5
        for t in content)
    check("chat logprobs / top_logprobs", ok)
    check("logprob tokens spell the reply", "".join(t.token for t in content) == rl.choices[0].message.content
          or rl.choices[0].finish_reason == "stop")
    rcl = c.completions.create(model="tiny", prompt="The river", max_tokens=5, temperature=0, logprobs=2)
    lp = rcl.choices[0].logprobs
    check("completion logprobs", len(lp.tokens) == 5 and len(lp.token_logprobs) == 5 and
          all(len(d) <= 2 for d in lp.top_logprobs) and lp.text_offset[0] == 0)
    # Streamed, each chunk carries the logprobs of the tokens it completes (as OpenAI's do): the
    # chunks' entries are the whole response's, spread over the chunks, not all in the last one.
    chunks = [ch for ch in c.chat.completions.create(
        model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=8, temperature=0,
        logprobs=True, top_logprobs=3, stream=True) if ch.choices]
    sl = [t for ch in chunks if ch.choices[0].logprobs for t in ch.choices[0].logprobs.content]
    check("streamed chat logprobs equal the whole response's",
          [(t.token, t.logprob, [a.logprob for a in t.top_logprobs]) for t in sl] ==
          [(t.token, t.logprob, [a.logprob for a in t.top_logprobs]) for t in content])
    check("streamed chat logprobs come with their chunks",
          len(content) < 2 or sum(1 for ch in chunks if ch.choices[0].logprobs) >= 2)
    cchunks = list(c.completions.create(model="tiny", prompt="The river", max_tokens=5, temperature=0,
                                        logprobs=2, stream=True))
    toks = [t for ch in cchunks if ch.choices[0].logprobs for t in ch.choices[0].logprobs.tokens]
    offs = [o for ch in cchunks if ch.choices[0].logprobs for o in ch.choices[0].logprobs.text_offset]
    check("streamed completion logprobs equal the whole response's",
          toks == lp.tokens and offs == lp.text_offset, f"{toks} {offs} vs {lp.tokens} {lp.text_offset}")

    # Sampling with a seed is reproducible; different seeds differ somewhere.
    s1 = [c.completions.create(model="tiny", prompt="The river", max_tokens=16, temperature=1.0, seed=s).choices[0].text
          for s in (7, 7, 8)]
    check("seeded sampling reproducible", s1[0] == s1[1] and s1[0] != s1[2])

    # Errors, in OpenAI's shape; the server keeps serving after each.
    errs = []
    for kw, status, param in [
        (dict(temperature=5), 400, "temperature"),
        (dict(top_logprobs=3), 400, "top_logprobs"),
        (dict(max_tokens=10 ** 6), 400, "max_tokens"),
        (dict(model="gpt-4"), 400, "model"),
    ]:
        args = dict(model="tiny", messages=[{"role": "user", "content": "Hi"}], max_tokens=4)
        args.update(kw)
        try:
            c.chat.completions.create(**args)
            errs.append(f"{kw}: no error")
        except openai.APIStatusError as e:
            if not is_error(e, status, param):
                errs.append(f"{kw}: {e.status_code} {e.body}")
    check("bad values answered 400 naming the parameter", not errs, "; ".join(errs))
    for body, what in [(b"{not json", "malformed JSON"), (b'{"model": "tiny", "messages": "hi"}', "messages not a list"),
                       (b'{"model": "tiny", "messages": [{"role": "wizard", "content": "x"}]}', "unknown role"),
                       (b'[1, 2]', "not an object")]:
        code, data = srv.raw("POST", "/v1/chat/completions", body, {"Content-Type": "application/json"})
        e = json.loads(data).get("error", {})
        check(f"400 for {what}", code == 400 and e.get("type") == "invalid_request_error" and e.get("message"))
    code, data = srv.raw("POST", "/v1/completions", b'{"prompt": "' + b"x" * 70000 + b'"}')
    check("413 for a body over --max-body", code == 413 and "error" in json.loads(data))
    code, data = srv.raw("GET", "/v1/nothing")
    check("404 in OpenAI's shape", code == 404 and "error" in json.loads(data))
    r = c.completions.create(model="tiny", prompt="The river", max_tokens=20, temperature=0)
    check("still serving after the errors", r.choices[0].text == want_c)

    st, body = srv.raw("GET", "/metrics")
    text = body.decode()
    m = dict(re.findall(r"^(lamina_\w+) (\d+)$", text, re.M))
    check("GET /metrics (Prometheus text)", "# TYPE lamina_requests_total counter" in text and
          int(m.get("lamina_generated_tokens_total", 0)) > 50 and m.get("lamina_slots_total") == "4" and
          int(m.get("lamina_http_errors_total", 0)) >= 8, str(m))


def load_test(srv, model):
    """16 clients, 64 requests: prompts and lengths mixed, one in four streamed and cancelled after
    two chunks; the rest must each get exactly their own greedy text."""
    prompts = ["The river", "Once upon a time", "Mountains are", "In the city of", "A small dog",
               "Rain fell on", "She opened the door", "Numbers like"]
    lengths = [6, 30]
    want = {(p, n): generate(model, p, n) for p in prompts for n in lengths}
    rng = random.Random(0)
    jobs = [(rng.choice(prompts), rng.choice(lengths), i % 4 == 3, i % 2 == 0) for i in range(64)]
    rss0 = srv.rss_kb()
    results, lock = [], threading.Lock()
    queue = list(enumerate(jobs))

    def worker():
        c = srv.client()
        while True:
            with lock:
                if not queue:
                    return
                i, (p, n, cancel, stream) = queue.pop()
            try:
                if cancel:
                    s = c.completions.create(model="tiny", prompt=p, max_tokens=n, temperature=0, stream=True)
                    got = 0
                    for _ in s:
                        got += 1
                        if got == 2:
                            break
                    s.close()
                    out = ("cancelled", None)
                elif stream:
                    text = "".join(ch.choices[0].text for ch in
                                   c.completions.create(model="tiny", prompt=p, max_tokens=n, temperature=0, stream=True))
                    out = ("done", text)
                else:
                    out = ("done", c.completions.create(model="tiny", prompt=p, max_tokens=n, temperature=0).choices[0].text)
            except Exception as e:  # noqa: BLE001
                out = ("error", repr(e))
            with lock:
                results.append((i, p, n, out))

    t0 = time.time()
    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    elapsed = time.time() - t0
    wrong = [(i, p, n, out) for i, p, n, out in results if out[0] == "error" or
             (out[0] == "done" and out[1] != want[(p, n)])]
    check("load test: 64 requests from 16 clients, each its own greedy text",
          len(results) == 64 and not wrong, f"{len(results)} results, wrong: {wrong[:3]}; {elapsed:.1f} s")
    check("load test: cancelled streams counted", sum(out[0] == "cancelled" for *_, out in results) == 16)
    time.sleep(0.5)
    st, body = srv.raw("GET", "/metrics")
    m = dict(re.findall(r"^(lamina_\w+) (\d+)$", body.decode(), re.M))
    check("after the load: no slot busy, nothing queued", m.get("lamina_slots_busy") == "0" and
          m.get("lamina_queue_length") == "0", str(m))
    rss1 = srv.rss_kb()
    check("server memory bounded under load", rss1 < rss0 + 200 * 1024, f"{rss0} -> {rss1} kB")


def queue_full(model):
    """One slot, a queue of one: of several concurrent long requests some are answered 429."""
    srv = Server(model, "--parallel", "1", "--queue", "1", "--alias", "tiny")
    codes, lock = [], threading.Lock()

    def one():
        body = json.dumps({"prompt": "The river", "max_tokens": 200, "temperature": 0}).encode()
        code, data = srv.raw("POST", "/v1/completions", body)
        with lock:
            codes.append((code, json.loads(data)))

    ts = [threading.Thread(target=one) for _ in range(5)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    full = [d for c, d in codes if c == 429]
    # At least one is served; whether a second one was queued or refused depends on whether the
    # slot took the first out of the queue before the others arrived (a race, not a defect).
    check("429 when the queue is full, in OpenAI's shape", len(full) >= 1 and
          all(d["error"]["type"] == "rate_limit_error" for d in full) and
          sum(c == 200 for c, _ in codes) >= 1 and all(c in (200, 429) for c, _ in codes),
          str([c for c, _ in codes]))
    check("queue-full server exits on SIGTERM", srv.stop() == 0)


def api_key(model):
    srv = Server(model, "--api-key", "sekret", "--alias", "tiny")
    try:
        srv.client("wrong").models.list()
        check("401 for a wrong API key", False)
    except openai.AuthenticationError as e:
        check("401 for a wrong API key", e.status_code == 401)
    code, _ = srv.raw("POST", "/v1/completions", b'{"prompt": "x"}')
    check("401 without a key", code == 401)
    r = srv.client("sekret").completions.create(model="tiny", prompt="The river", max_tokens=3, temperature=0)
    check("the right key is served", len(r.choices[0].text) > 0)
    check("health needs no key", srv.raw("GET", "/health")[0] == 200)
    srv.stop()


def browser(srv):
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or "/usr/bin/chromium"
    os.makedirs(artefacts, exist_ok=True)
    shot = os.path.join(artefacts, "serve-chat-page.png")
    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=chromium, args=["--no-sandbox", "--disable-gpu"])
        page = b.new_page()
        page.goto(srv.url + "/")
        page.wait_for_function("document.getElementById('model').textContent === 'tiny'", timeout=20000)
        page.fill("#system", "Be brief.")
        page.fill("#temperature", "0")
        page.fill("#max_tokens", "24")
        page.fill("#input", "Tell me about rivers.")
        page.click("#send")
        page.wait_for_selector(".msg.assistant", timeout=20000)
        page.wait_for_function("!document.getElementById('send').disabled", timeout=60000)
        reply = page.inner_text(".msg.assistant")
        stats = page.inner_text("#stats")
        page.screenshot(path=shot)
        b.close()
    c = srv.client()
    want = c.chat.completions.create(model="tiny", messages=[{"role": "system", "content": "Be brief."},
                                                             {"role": "user", "content": "Tell me about rivers."}],
                                     max_tokens=24, temperature=0).choices[0].message.content
    check("chat page in chromium: the streamed reply as the API gives it", reply.strip() == want.strip() and "tokens" in stats,
          f"{reply!r} vs {want!r}")
    check("chat page screenshot kept", os.path.getsize(shot) > 1000, shot)


def sigterm(model):
    srv = Server(model, "--alias", "tiny")
    c = srv.client()
    s = c.completions.create(model="tiny", prompt="The river", max_tokens=400, temperature=0, stream=True)
    it = iter(s)
    next(it)
    t0 = time.time()
    srv.p.send_signal(signal.SIGTERM)
    ended = False
    try:
        for _ in it:
            pass
        ended = True
    except Exception:  # noqa: BLE001 - an error event or a closed connection both end it
        ended = True
    rc = srv.p.wait(timeout=10)
    check("SIGTERM: the running stream ends, the server exits 0 within seconds",
          ended and rc == 0 and time.time() - t0 < 8, f"rc {rc}, {time.time() - t0:.1f} s")


def lora(model, tmp):
    """--lora folds a PEFT adapter in at start: greedy text equals generate on merge-lora's output."""
    corpus = os.path.join(tmp, "corpus.txt")
    open(corpus, "w").write("the river runs to the sea and the sea is wide. " * 200)
    run_dir = os.path.join(tmp, "lora-run")
    p = run("pretrain", "--model", model, "--data", corpus, "--seq-len", "32", "--batch-size", "4", "--lr", "3e-2",
            "--max-steps", "6", "--save-every", "6", "--lora-r", "4", "--lora-alpha", "8", "--out", run_dir)
    adapter = os.path.join(run_dir, "checkpoint-6")
    merged = os.path.join(tmp, "merged")
    q = run("merge-lora", "--model", model, "--adapter", adapter, "--out", merged)
    if not check("LoRA adapter trained and merged", p.returncode == 0 and q.returncode == 0):
        return
    want = generate(merged, "The river", 16)
    srv = Server(model, "--lora", adapter, "--alias", "tiny")
    r = srv.client().completions.create(model="tiny", prompt="The river", max_tokens=16, temperature=0)
    base = generate(model, "The river", 16)
    check("--lora: greedy text equals generate on the merged model", r.choices[0].text == want and want != base,
          f"{r.choices[0].text!r} vs {want!r} (base {base!r})")
    srv.stop()
    check("--lora leaves no temporary directory", not [d for d in os.listdir(tempfile.gettempdir())
                                                       if d.startswith(f"lamina-serve-lora-{srv.p.pid}")])


def main():
    tmp = tempfile.mkdtemp(prefix="lamina-serve-")
    try:
        model = os.path.join(tmp, "tiny")
        p = run("init", "--out", model, "--chat-template", "chatml", "--random-norms", "--std", "0.2")
        if not check("init the tiny model", p.returncode == 0):
            report.finish()
        srv = Server(model, "--parallel", "4", "--queue", "32", "--max-body", "65536", "--alias", "tiny")
        try:
            api_checks(srv, model)
            load_test(srv, model)
            browser(srv)
        finally:
            check("server exits 0 on SIGTERM", srv.stop() == 0)
        queue_full(model)
        api_key(model)
        sigterm(model)
        lora(model, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.finish()


if __name__ == "__main__":
    main()
