"""lamina sft: every data format trains, C-RLFT conditions and weights reach the model, template
tokens are added (vocabulary grows with mean rows), the saved model and tokenizer load back, the
chat condition is stored, bad data is reported with file:line.

usage: test_sft.py LAMINA        prints 'N passed, M failed'
"""
import json
import os
import random
import shutil
import sys
import tempfile

import numpy as np

from harness import Report, f32_tensors as tensors, runner, write_jsonl

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]))
run_quiet = runner(os.path.abspath(sys.argv[1]), echo_failures=False)



def main():
    tmp = tempfile.mkdtemp()
    try:
        rnd = random.Random(0)
        base = os.path.join(tmp, "base")
        run("init", "--out", base, "--seed", "3")
        pairs = [(rnd.randint(0, 9), rnd.randint(0, 9)) for _ in range(80)]
        gpt4 = os.path.join(tmp, "gpt4.jsonl")
        write_jsonl(gpt4, [{"items": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}]}
                           for a, b in pairs])
        gpt35 = os.path.join(tmp, "gpt35.jsonl")
        write_jsonl(gpt35, [{"messages": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b + 1)}]}
                            for a, b in pairs])
        common = ["--model", base, "--seq-len", "64", "--batch-size", "4", "--val-fraction", "0.1"]

        # C-RLFT: sources with conditions and weights; lr 0 keeps the weights, so the grown rows
        # can be checked against the mean of the old ones.
        out = os.path.join(tmp, "crlft0")
        p = run("sft", *common, "--out", out, "--objective", "crlft", "--max-steps", "1", "--lr", "0",
                "--source", f"gpt4={gpt4}:weight=1.0:condition=GPT4", "--source", f"gpt35={gpt35}:weight=0.1:condition=GPT3")
        ck = os.path.join(out, "checkpoint-1")
        cfg = json.load(open(os.path.join(ck, "config.json")))
        b = tensors(os.path.join(base, "model.safetensors"))
        c = tensors(os.path.join(ck, "model.safetensors"))
        E = b["model.embed_tokens.weight"]
        grown = c["model.embed_tokens.weight"]
        check("<|end_of_turn|> added: vocabulary 512 -> 513, the new rows are the mean of the old",
              cfg["vocab_size"] == 513 and grown.shape == (513, 64) and np.allclose(grown[512], E.mean(axis=0), atol=1e-6)
              and np.allclose(c["lm_head.weight"][512], b["lm_head.weight"].mean(axis=0), atol=1e-6), str(grown.shape))
        check("packing efficiency reported", "efficiency" in p.stderr and "260" not in p.stderr, p.stderr.strip().splitlines()[0][:160])
        gen = json.load(open(os.path.join(ck, "generation_config.json")))
        tcfg = json.load(open(os.path.join(ck, "tokenizer_config.json")))
        check("inference condition, template and EOS stored with the model",
              gen["chat_condition"] == "GPT4" and gen["chat_template_name"] == "openchat" and 512 in gen["eos_token_id"]
              and "GPT4 Correct" in tcfg["chat_template"])
        eot = os.path.join(tmp, "eot.txt")
        open(eot, "w").write("Hi<|end_of_turn|>GPT4 Assistant: 7")
        sc = json.loads(run("score", "--model", ck, "--text", eot, "--json").stdout)
        check("the saved tokenizer encodes <|end_of_turn|> as one id", 512 in sc["tokens"] and "<|end_of_turn|>" in sc["pieces"])

        # Training moves the loss on every format; the conditioned model answers through generate --chat.
        fmts = {
            "openchat": [{"items": [{"role": "user", "content": "Hi"}, {"role": "assistant", "content": "Hello there"}],
                          "condition": "GPT4", "system": "Be kind."}],
            "openai": [{"messages": [{"role": "system", "content": "S"}, {"role": "user", "content": "Hi"},
                                     {"role": "assistant", "content": "Hello there"}]}],
            "sharegpt": [{"conversations": [{"from": "human", "value": "Hi"}, {"from": "gpt", "value": "Hello there"}]}],
            "alpaca": [{"instruction": "Greet", "input": "", "output": "Hello there"}],
        }
        for name, rows in fmts.items():
            f = os.path.join(tmp, name + ".jsonl")
            write_jsonl(f, rows * 40)
            o = os.path.join(tmp, "fmt-" + name)
            p = run("sft", *common[:-2], "--data", f, "--out", o, "--max-steps", "8", "--lr", "5e-3", "--val-fraction", "0")
            m = [json.loads(l) for l in open(os.path.join(o, "metrics.jsonl")) if l.strip()]
            check(f"sft on {name} data lowers the loss", p.returncode == 0 and m[-1]["loss"] < m[0]["loss"],
                  f"{m[0]['loss']:.3f} -> {m[-1]['loss']:.3f}")
        # The model's own Jinja template (zephyr's, a real one from tests/assets/chat_templates):
        # plain SFT renders and tokenises through it, the checkpoint keeps it, generate uses it.
        zb = os.path.join(tmp, "zephyr-base")
        run("init", "--out", zb, "--seed", "3")
        tc_path = os.path.join(zb, "tokenizer_config.json")
        tc = json.load(open(tc_path))
        tc["chat_template"] = open(os.path.join(os.path.dirname(__file__), "..", "assets", "chat_templates",
                                                "HuggingFaceH4-zephyr-7b-beta.jinja"), encoding="utf-8").read()
        json.dump(tc, open(tc_path, "w"))
        zo = os.path.join(tmp, "zephyr-sft")
        p = run("sft", "--model", zb, "--seq-len", "64", "--batch-size", "4", "--data", os.path.join(tmp, "openai.jsonl"),
                "--out", zo, "--max-steps", "8", "--lr", "5e-3", "--val-fraction", "0")
        m = [json.loads(l) for l in open(os.path.join(zo, "metrics.jsonl")) if l.strip()] if p.returncode == 0 else [{}]
        check("sft through the model's own Jinja template (zephyr) lowers the loss",
              p.returncode == 0 and "template the model's chat_template" in p.stderr and m[-1]["loss"] < m[0]["loss"],
              p.stderr.strip()[-300:])
        zck = os.path.join(zo, "checkpoint-8")
        kept = json.load(open(os.path.join(zck, "tokenizer_config.json"))).get("chat_template") == tc["chat_template"] \
            if p.returncode == 0 else False
        q = run("generate", "--model", zck, "--chat", "--prompt", "Hi", "--max-new-tokens", "3")
        check("the checkpoint keeps the model's template and generate --chat renders it", kept and q.returncode == 0,
              q.stderr[-300:])
        tr = os.path.join(tmp, "crlft")
        run("sft", *common, "--out", tr, "--objective", "crlft", "--max-steps", "30", "--lr", "3e-3",
            "--source", f"gpt4={gpt4}:weight=1.0:condition=GPT4", "--source", f"gpt35={gpt35}:weight=0.1:condition=GPT3")
        p = run("generate", "--model", os.path.join(tr, "checkpoint-30"), "--chat", "--prompt", "3+4=", "--max-new-tokens", "4")
        check("generate --chat runs the C-RLFT model", p.returncode == 0)
        chat = run("chat", "--model", os.path.join(tr, "checkpoint-30"), "--max-new-tokens", "3", stdin="1+1=\n2+2=\n")
        check("chat runs the C-RLFT model (stored condition, <|end_of_turn|> as EOS)", chat.returncode == 0 and chat.stdout.count("\n") >= 2)

        # Accumulation with unequal rows: C-RLFT sources of weight 1.0 and 0.1 and answers of 1 to 12
        # tokens, so every packed row carries a different total weight. The step's loss is the global
        # weighted token mean over all its rows (OpenChat's), however they are split into micro-batches:
        # a per-micro-batch mean would differ. Losses agree to 1e-7 (bound 1e-5); weights after two AdamW
        # steps of lr 1e-3 to 1e-5 (Adam's m / sqrt(v) magnifies summation-order noise where a gradient is
        # near zero; bound 1e-4, 5% of the 2e-3 the steps can move a weight).
        var4 = os.path.join(tmp, "var-gpt4.jsonl")
        var35 = os.path.join(tmp, "var-gpt35.jsonl")
        write_jsonl(var4, [{"items": [{"role": "user", "content": f"{a}+{b}="},
                                      {"role": "assistant", "content": " ".join([str(a + b)] * (1 + (a * 3 + b) % 12))}]}
                           for a, b in pairs[:40]])
        write_jsonl(var35, [{"items": [{"role": "user", "content": f"{b}+{a}="}, {"role": "assistant", "content": str(a)}]}
                            for a, b in pairs[40:]])
        src = ["--source", f"gpt4={var4}:weight=1.0:condition=GPT4", "--source", f"gpt35={var35}:weight=0.1:condition=GPT3"]
        acc = {}
        for bs, ga in [(4, 1), (1, 4), (2, 2)]:
            o = os.path.join(tmp, f"acc-{bs}x{ga}")
            p = run("sft", "--model", base, "--seq-len", "32", "--batch-size", str(bs), "--grad-accum", str(ga),
                    "--val-fraction", "0", "--objective", "crlft", "--max-steps", "2", "--lr", "1e-3", "--out", o, *src)
            ms = [json.loads(l) for l in open(os.path.join(o, "metrics.jsonl")) if '"loss"' in l]
            acc[(bs, ga)] = ([x["loss"] for x in ms], [x["grad_norm"] for x in ms],
                             tensors(os.path.join(o, "checkpoint-2", "model.safetensors")))
        ref = acc[(4, 1)]
        worst = max(max(abs(a - b) / abs(b) for a, b in zip(v[0] + v[1], ref[0] + ref[1])) for v in acc.values())
        wdiff = max(float(np.abs(v[2][k] - ref[2][k]).max()) for v in acc.values() for k in ref[2])
        check("C-RLFT accumulation with unequal rows and weights 1.0 / 0.1: 4x1 == 1x4 == 2x2 (loss, grad norm, weights)",
              worst < 1e-5 and wdiff < 1e-4, f"worst relative {worst:.1e}, weights {wdiff:.1e}")

        # ochat's rule: an item's own weight counts whatever its role (a user item with weight 1
        # is learnt); without one a user turn is not. lr 0: the first step's loss tells them apart.
        def crlft_loss(user_w):
            f = os.path.join(tmp, f"uw{user_w}.jsonl")
            u = {"role": "user", "content": "1+2="} | ({} if user_w is None else {"weight": user_w})
            write_jsonl(f, [{"items": [u, {"role": "assistant", "content": "3", "weight": 1.0}]}] * 8)
            p = run("sft", *common[:-2], "--val-fraction", "0", "--source", f"s={f}:weight=1", "--objective", "crlft",
                    "--out", os.path.join(tmp, f"uwo{user_w}"), "--max-steps", "1", "--lr", "0")
            return float(p.stdout.split("last loss ")[1].split(",")[0])
        l_none, l_zero, l_one = crlft_loss(None), crlft_loss(0.0), crlft_loss(1.0)
        check("OpenChat items: a user item's weight counts (ochat), none or 0 leaves it unlearnt",
              l_none == l_zero and abs(l_one - l_zero) > 1e-3, f"losses {l_none:.4f} {l_zero:.4f} {l_one:.4f}")

        # Per-conversation normalisation and prompt training run; bad data is reported.
        o = os.path.join(tmp, "seq")
        p = run("sft", *common, "--data", gpt4, "--out", o, "--max-steps", "2", "--loss-norm", "sequence", "--train-on-prompts")
        check("--loss-norm sequence --train-on-prompts", p.returncode == 0)
        bad = os.path.join(tmp, "bad.jsonl")
        open(bad, "w").write(open(gpt4).read() + '{"messages": "oops"}\n')
        p = run_quiet("sft", *common, "--data", bad, "--out", os.path.join(tmp, "bad1"), "--max-steps", "1")
        check("malformed lines are skipped and counted by default", p.returncode == 0 and "1 malformed lines skipped" in p.stderr,
              p.stderr.strip()[-200:])
        p = run_quiet("sft", *common, "--data", bad, "--out", os.path.join(tmp, "bad2"), "--max-steps", "1", "--strict")
        check("--strict stops at file:line", p.returncode == 1 and f"{bad}:81" in p.stderr, p.stderr.strip()[-200:])
        p = run_quiet("sft", *common, "--out", os.path.join(tmp, "bad3"), "--source", f"x={gpt4}:wieght=1")
        check("a bad --source spec is named", p.returncode == 1 and "unknown option 'wieght'" in p.stderr)
        p = run_quiet("sft", *common, "--out", os.path.join(tmp, "bad4"), "--data", gpt4, "--objective", "crlft", "--template", "chatml")
        check("crlft needs the openchat template", p.returncode == 1 and "openchat" in p.stderr)
    finally:
        shutil.rmtree(tmp)
    report.finish()


if __name__ == "__main__":
    main()
