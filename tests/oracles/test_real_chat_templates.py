"""Real models' chat templates (tests/assets/chat_templates, 53 of them: Llama 2/3.x, Mistral
v0.1-v0.3 / Nemo / Mixtral / Small / Large, SOLAR-Instruct, OpenChat 3.5, zephyr, ChatML,
Qwen1.5-Qwen3, QwQ, gemma 1-3, Phi-3/3.5/4, DeepSeek, command-r, granite, functionary, Hermes,
gpt-oss ...; provenance in that directory's README) rendered by lamina's Jinja interpreter against
transformers' own renderer (render_jinja_template, the function apply_chat_template calls), over
conversations with and without a system message, one and several turns, non-alternating roles,
tools with a tool call and its result, reasoning_content, and the generation prompt.
`lamina tokenize --chat CASES.jsonl --jsonl --template T.jinja` must give transformers' text byte
for byte for every case, and refuse (an {"error"} line) exactly the cases transformers refuses.

usage: test_real_chat_templates.py LAMINA ASSETS_DIR        prints 'N passed, M failed'
"""
import json
import os
import shutil
import sys
import tempfile

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import Report, runner  # noqa: E402

from transformers.utils.chat_template_utils import render_jinja_template  # noqa: E402

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]), echo_failures=False)
assets = os.path.abspath(sys.argv[2])
templates = os.path.join(assets, "chat_templates")

SYS = {"role": "system", "content": "You are terse.  Answer in one line."}
U1 = {"role": "user", "content": "  What is 2+2? \n"}
A1 = {"role": "assistant", "content": "4 — as usual. 😀"}
U2 = {"role": "user", "content": "Und auf Deutsch? 你好"}
A2 = {"role": "assistant", "content": "vier"}
TOOLS = [{"type": "function", "function": {"name": "get_weather", "description": "Weather of a city",
          "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}]
CALL = {"role": "assistant", "content": "", "tool_calls": [
    {"type": "function", "id": "call_0", "function": {"name": "get_weather", "arguments": {"city": "Paris"}}}]}
RESULT = {"role": "tool", "tool_call_id": "call_0", "name": "get_weather", "content": "{\"temp\": 21}"}

CASES = [
    ("user + prompt", {"messages": [U1], "add_generation_prompt": True}),
    ("system + three turns + prompt", {"messages": [SYS, U1, A1, U2], "add_generation_prompt": True}),
    ("two full turns", {"messages": [U1, A1, U2, A2]}),
    ("system + one turn", {"messages": [SYS, U1, A1]}),
    ("not alternating", {"messages": [U1, U2], "add_generation_prompt": True}),
    ("reasoning_content", {"messages": [U1, dict(A1, reasoning_content="easy"), U2],
                           "add_generation_prompt": True}),
]
TOOL_CASES = [
    ("tools + call + result", {"messages": [U1, CALL, RESULT], "tools": TOOLS, "add_generation_prompt": True}),
    ("tools + system", {"messages": [SYS, U1], "tools": TOOLS, "add_generation_prompt": True}),
]


def hf_render(tmpl, case, bos, eos):
    kw = {k: v for k, v in case.items() if k not in ("messages", "tools")}
    if bos is not None:
        kw["bos_token"] = bos
    if eos is not None:
        kw["eos_token"] = eos
    try:
        out, _ = render_jinja_template(conversations=[case["messages"]], tools=case.get("tools"),
                                       chat_template=tmpl, **kw)
        return out[0]
    except Exception as e:  # a template's raise_exception, or a jinja2 error on these messages
        return ("error", f"{type(e).__name__}: {str(e)[:80]}")


def main():
    index = json.load(open(os.path.join(templates, "index.json"), encoding="utf-8"))
    check("at least 30 real templates", len(index) >= 30, str(len(index)))
    work = tempfile.mkdtemp(prefix="lamina-real-chat-")
    try:
        # Any tokenizer will do: the template's special tokens come in the variables.
        tok_dir = os.path.join(work, "tok")
        p = run("init", "--shape", "tiny", "--out", tok_dir, "--tokenizer",
                os.path.join(assets, "tokenizers", "llama2", "tokenizer.model"))
        if not check("init a tokenizer directory", p.returncode == 0, p.stderr[-300:]):
            report.finish()
        n = refused = 0
        for entry in index:
            name = entry["file"]
            path = os.path.join(templates, name)
            tmpl = open(path, encoding="utf-8").read()
            cases = CASES + (TOOL_CASES if "tool" in tmpl else [])
            bos, eos = entry.get("bos_token"), entry.get("eos_token")
            lines = []
            for _, case in cases:
                v = dict(case)
                v.setdefault("tools", None)
                # A model without a BOS (Qwen) has none in transformers' variables: left out.
                if bos is not None:
                    v["bos_token"] = bos
                if eos is not None:
                    v["eos_token"] = eos
                lines.append(json.dumps(v, ensure_ascii=False))
            f = os.path.join(work, "cases.jsonl")
            with open(f, "w", encoding="utf-8") as out:
                out.write("\n".join(lines) + "\n")
            p = run("tokenize", "--model", tok_dir, "--chat", f, "--jsonl", "--template", path)
            got = [json.loads(x) for x in p.stdout.split("\n") if x]
            if not check(f"{name}: one result per case", len(got) == len(cases),
                         f"rc {p.returncode}: {p.stderr[-400:]}"):
                continue
            for (label, case), g in zip(cases, got):
                want = hf_render(tmpl, case, bos, eos)
                n += 1
                if isinstance(want, tuple):
                    refused += 1
                    check(f"{name}: {label}: refused as transformers does", "error" in g,
                          f"transformers: {want[1]!r}; lamina: {str(g)[:200]!r}")
                    continue
                text = g.get("text")
                if "{% generation %}" in tmpl and text == want:
                    # The assistant marks: transformers' generation_indices (characters) as bytes.
                    _, idx = render_jinja_template(conversations=[case["messages"]], tools=case.get("tools"),
                                                   chat_template=tmpl, return_assistant_tokens_mask=True,
                                                   **{k: v for k, v in case.items() if k not in ("messages", "tools")},
                                                   **({"bos_token": bos} if bos is not None else {}),
                                                   **({"eos_token": eos} if eos is not None else {}))
                    b = lambda c: len(want[:c].encode("utf-8"))  # noqa: E731
                    spans = [[b(s), b(e)] for s, e in idx[0]]
                    check(f"{name}: {label}: {{% generation %}} spans", g.get("generation", []) == spans,
                          f"lamina {g.get('generation')} transformers {spans}")
                check(f"{name}: {label}", text == want,
                      f"\n  lamina:       {(text if text is not None else g)!r}\n  transformers: {want!r}"[:1800]
                      if text != want else "")
        print(f"{n} renderings over {len(index)} real templates ({refused} refused by both)")
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.finish()


main()
