"""Chat templates rendered by lamina's Jinja interpreter against transformers' apply_chat_template.

The models' own templates: the real tokenizer_config.json chat_template of Llama 3.1, Qwen3 and
Gemma 3 (tests/assets/tokenizers, gzipped), and the Jinja text lamina writes for its built-in
templates (llama-2, mistral-instruct, openchat, chatml: `lamina init --chat-template`). Each is
rendered over conversations with and without a system message, one and several turns, with and
without the generation prompt, white space and non-ASCII in the contents, Gemma's list-form
content, Qwen3's tools / tool calls / tool results / <think> reasoning and enable_thinking=False.
`lamina tokenize --chat FILE` (and `lamina template --messages FILE`) must give transformers' text
byte for byte, or fail where transformers raises (a template's raise_exception).

usage: test_chat_templates.py LAMINA ASSETS_DIR        prints 'N passed, M failed'
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import Report, runner, unpack_tokenizer  # noqa: E402

from transformers import AutoTokenizer  # noqa: E402

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]), echo_failures=False)
assets = os.path.abspath(sys.argv[2])

SYS = {"role": "system", "content": "You are terse.  Answer in one line."}
U1 = {"role": "user", "content": "  What is 2+2? \n"}
A1 = {"role": "assistant", "content": "4 — as usual. 😀"}
U2 = {"role": "user", "content": "Und auf Deutsch? 你好"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
RESULT = {"role": "tool", "content": "{\"temp\": 21}"}

CASES = [
    ("one turn", {"messages": [U1]}),
    ("one turn + prompt", {"messages": [U1], "add_generation_prompt": True}),
    ("system + three turns + prompt", {"messages": [SYS, U1, A1, U2], "add_generation_prompt": True}),
    ("no system, two turns", {"messages": [U1, A1, U2, dict(A1, content="vier")]}),
    ("not alternating", {"messages": [U1, U2]}),
]
QWEN = [
    ("tools + call + result", {"messages": [SYS, U1, CALL, RESULT], "tools": TOOLS, "add_generation_prompt": True}),
    ("tools, string arguments", {"messages": [U1, {"role": "assistant", "content": "Let me check.", "tool_calls": [
        {"function": {"name": "get_weather", "arguments": "{\"city\": \"Rome\"}"}}]}, RESULT, RESULT], "tools": TOOLS}),
    ("think in history", {"messages": [U1, dict(A1, content="<think>\nadd them\n</think>\n\n4"), U2],
                          "add_generation_prompt": True}),
    ("reasoning_content", {"messages": [U1, dict(A1, reasoning_content="easy")], "add_generation_prompt": False}),
    ("enable_thinking false", {"messages": [U1], "add_generation_prompt": True, "enable_thinking": False}),
]
GEMMA = [
    ("list content", {"messages": [{"role": "system", "content": [{"type": "text", "text": "Be kind."}]},
                                   {"role": "user", "content": [{"type": "text", "text": " hi "}, {"type": "image"}]}],
                      "add_generation_prompt": True}),
]


def hf_render(tok, case):
    kw = {k: v for k, v in case.items() if k not in ("messages",)}
    tools = kw.pop("tools", None)
    try:
        return tok.apply_chat_template(case["messages"], tools=tools, tokenize=False, **kw)
    except Exception as e:  # a template's raise_exception (jinja2 TemplateError)
        return ("error", str(e)[:80])


def main():
    work = tempfile.mkdtemp(prefix="lamina-chat-")
    try:
        dirs = []
        for name in ("llama3.1", "qwen3", "gemma3"):
            d = unpack_tokenizer(assets, name, os.path.join(work, name))
            dirs.append((name, d))
        for t in ("llama-2", "mistral-instruct", "openchat", "chatml"):
            d = os.path.join(work, "builtin-" + t)
            p = run("init", "--shape", "tiny", "--out", d, "--chat-template", t, "--tokenizer",
                    os.path.join(assets, "tokenizers", "llama2", "tokenizer.model"),
                    *(["--add-tokens", "<|end_of_turn|>"] if t == "openchat" else
                      ["--add-tokens", "<|im_start|>,<|im_end|>"] if t == "chatml" else []))
            if check(f"init with the {t} template", p.returncode == 0, p.stderr[-300:]):
                dirs.append(("builtin " + t, d))
        n = 0
        for name, d in dirs:
            tok = AutoTokenizer.from_pretrained(d, local_files_only=True)
            cases = CASES + (QWEN if name == "qwen3" else []) + (GEMMA if name == "gemma3" else [])
            for label, case in cases:
                want = hf_render(tok, case)
                f = os.path.join(work, "case.json")
                with open(f, "w", encoding="utf-8") as out:
                    json.dump(case, out, ensure_ascii=False)
                p = run("tokenize", "--model", d, "--chat", f)
                n += 1
                if isinstance(want, tuple):
                    check(f"{name}: {label}: fails as transformers does", p.returncode != 0,
                          f"transformers: {want[1]!r}; lamina rc {p.returncode}")
                    continue
                got = json.loads(p.stdout)["text"] if p.returncode == 0 else None
                check(f"{name}: {label}", got == want,
                      f"\n  lamina:       {got!r}\n  transformers: {want!r}\n  {p.stderr[-300:]}"[:1500] if got != want else "")
                if label == "system + three turns + prompt" or label == "tools + call + result":
                    # `lamina template` prints the same text (the user's tool for it).
                    t = run("template", "--model", d, "--messages", f)
                    check(f"{name}: {label}: lamina template prints it", t.returncode == 0 and t.stdout == want,
                          f"{t.stdout[:300]!r} {t.stderr[-300:]}")
        print(f"{n} renderings over {len(dirs)} templates")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.finish()


main()
