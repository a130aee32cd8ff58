"""lamina eval against an independent Python implementation of lm-evaluation-harness's rules on
log-likelihoods from the PyTorch reference model: acc, acc_norm (a crafted item where they differ),
mc2, Winogrande's partial scoring; few-shot prompts byte for byte; perplexity; eval compare.

usage: test_eval.py LAMINA        prints 'N passed, M failed'
"""
import json
import random
import math
import os
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cli"))
import reference_model  # noqa: E402
from harness import Report, runner  # noqa: E402

ROOT = os.path.join(os.path.dirname(__file__), "..", "..")


def harness_shots(pool, k, seed=1234):
    """lm-eval 0.4.13's default sampler when the examples come from the scored split itself: one
    random.Random(seed) for the task, k + 1 drawn per item in order, copies of the item dropped."""
    r = random.Random(seed)
    return [[x for x in r.sample(pool, k + 1) if x != d][:k] for d in pool]


def main():
    lamina = os.path.abspath(sys.argv[1])
    report = Report()
    run = runner(lamina)
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "m")
        run("init", "--out", d, "--std", "0.15", "--random-norms", "--seed", "9")
        cfg, w = reference_model.load_model_dir(d)

        def tokens(text):  # lamina's tokenizer (BOS first), via score --json
            f = os.path.join(tmp, "t.txt")
            open(f, "w").write(text)
            return json.loads(run("score", "--model", d, "--text", f, "--json").stdout)["tokens"]

        def ll(ctx, cont):  # lm-eval: encode together, split at the context's token length
            while ctx.endswith(" "):
                ctx, cont = ctx[:-1], " " + cont
            whole, n_ctx = tokens(ctx + cont), len(tokens(ctx))
            with torch.no_grad():
                lp = F.log_softmax(reference_model.forward(cfg, w, whole), dim=-1)
            return sum(lp[i - 1, whole[i]].item() for i in range(n_ctx, len(whole)))

        # ARC-style items; the shipped task definition with 2 shots.
        arc = [
            {"question": "Which gas do plants take in?", "choices": ["carbon dioxide", "oxygen", "helium"], "answer": "A"},
            {"question": "What melts ice?", "choices": ["heat", "cold wind blowing over the frozen lake surface"], "answer": 1},
            {"question": "How many legs has a spider?", "choices": ["eight", "six", "a great many more than two"], "answer": 0},
            {"question": "The sun is a", "choices": ["star", "x", "very very long answer about planets"], "answer": 2},
        ]
        data = os.path.join(tmp, "arc.jsonl")
        with open(data, "w") as f:
            for r in arc:
                f.write(json.dumps(r) + "\n")
        out, samples = os.path.join(tmp, "r.json"), os.path.join(tmp, "s.jsonl")
        run("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", "arc_challenge.yaml"), "--data", data,
            "--num-fewshot", "2", "--output", out, "--log-samples", samples)
        res = json.load(open(out))["results"]["arc_challenge"]["default"]
        logged = [json.loads(l) for l in open(samples)]
        acc, acc_norm, differ = [], [], 0
        for i, doc in enumerate(arc):
            shots = harness_shots(arc, 2)[i]
            letter = lambda s: s["answer"] if isinstance(s["answer"], int) else "ABCDE".index(s["answer"])
            ctx = "".join(f"Question: {s['question']}\nAnswer: {s['choices'][letter(s)]}\n\n" for s in shots)
            ctx += f"Question: {doc['question']}\nAnswer:"
            if i == 0:
                report.check("few-shot prompt is byte-identical to the expected string", logged[0]["prompt"] == ctx,
                             repr(logged[0]["prompt"][:80]))
            lls = [ll(ctx, " " + c) for c in doc["choices"]]
            gold = letter(doc)
            p = int(np.argmax(lls))
            pn = int(np.argmax([l / len(c) for l, c in zip(lls, doc["choices"])]))
            differ += p != pn
            acc.append(p == gold)
            acc_norm.append(pn == gold)
            if not np.allclose(lls, logged[i]["loglikelihoods"], atol=1e-3):
                report.check(f"item {i} log-likelihoods", False, f"{lls} vs {logged[i]['loglikelihoods']}")
        report.check("acc and acc_norm equal the Python implementation's", abs(res["metrics"]["acc"] - np.mean(acc)) < 1e-9
                     and abs(res["metrics"]["acc_norm"] - np.mean(acc_norm)) < 1e-9,
                     f"acc {res['metrics']['acc']} vs {np.mean(acc)}, acc_norm {res['metrics']['acc_norm']} vs {np.mean(acc_norm)}")
        report.check("a crafted item makes acc and acc_norm pick differently", differ >= 1, f"{differ} items differ")
        # acc_norm divides by the choice's length in characters (lm-eval's len(choice)), not UTF-8
        # bytes: non-ASCII choices, per item, and at least one item where bytes would pick otherwise.
        uni = [{"question": q, "choices": cs, "answer": 0} for q, cs in [
            ("Water boils at", ["100 °C", "212 °F", "0 K"]), ("Café in English", ["café", "coffee", "tea"]),
            ("Half of one", ["½", "0.5", "one half"]), ("A small unit", ["µm", "mm", "km"]),
            ("Greek letters", ["αβγ", "abc", "xyz"]), ("Arrows", ["→←", "<>", "^v"]),
            ("Degrees", ["°°°°", "deg", "d"]), ("Naïve", ["naïve", "naive", "plain"]),
            ("Euro sign", ["€€", "EUR", "E"]), ("Snowman", ["☃", "snow", "man"]),
            ("München", ["München", "Munich", "Monaco"]), ("Zürich", ["Zürich", "Zurich", "Geneva"])]]
        udata = os.path.join(tmp, "uni.jsonl")
        with open(udata, "w") as f:
            for r in uni:
                f.write(json.dumps(r, ensure_ascii=False) + "\n")
        usamples = os.path.join(tmp, "us.jsonl")
        run("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", "arc_challenge.yaml"), "--data", udata,
            "--num-fewshot", "0", "--log-samples", usamples)
        ulogged = [json.loads(l) for l in open(usamples, encoding="utf-8")]
        agree, flips = 0, 0
        for i, doc in enumerate(uni):
            ctx = f"Question: {doc['question']}\nAnswer:"
            lls = [ll(ctx, " " + c) for c in doc["choices"]]
            by_chars = int(np.argmax([l / len(c) for l, c in zip(lls, doc["choices"])]))
            by_bytes = int(np.argmax([l / len(c.encode()) for l, c in zip(lls, doc["choices"])]))
            flips += by_chars != by_bytes
            agree += ulogged[i]["prediction_norm"] == by_chars
        report.check("acc_norm per character on non-ASCII choices: every item's prediction equals Python's len(choice) rule",
                     agree == len(uni), f"{agree}/{len(uni)} agree")
        report.check("the non-ASCII items would be scored differently per byte (the check can fail)", flips >= 1,
                     f"{flips} items flip")
        se = math.sqrt(np.var(acc, ddof=1) / len(acc))
        report.check("standard error is the sample one", abs(res["stderr"]["acc"] - se) < 1e-9)

        # A prompt variant (--template) runs beside the task's own prompt, in shots and question.
        out_t, samples_t = os.path.join(tmp, "rt.json"), os.path.join(tmp, "st.jsonl")
        run("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", "arc_challenge.yaml"), "--data", data,
            "--num-fewshot", "2", "--template", "qa=Q: {{question}}\\nA:", "--output", out_t, "--log-samples", samples_t)
        rt = json.load(open(out_t))["results"]["arc_challenge"]
        logged_t = [json.loads(l) for l in open(samples_t) if '"template=qa"' in l]
        acc_t = []
        for i, doc in enumerate(arc):
            shots = harness_shots(arc, 2)[i]
            letter = lambda s: s["answer"] if isinstance(s["answer"], int) else "ABCDE".index(s["answer"])
            ctx = "".join(f"Q: {s['question']}\nA: {s['choices'][letter(s)]}\n\n" for s in shots) + f"Q: {doc['question']}\nA:"
            if i == 0:
                report.check("--template: the variant's few-shot prompt is byte-identical", logged_t[0]["prompt"] == ctx,
                             repr(logged_t[0]["prompt"][:60]))
            acc_t.append(int(np.argmax([ll(ctx, " " + c) for c in doc["choices"]])) == letter(doc))
        report.check("--template: the task's own prompt and the variant are both reported, the variant's acc "
                     "equals the Python implementation's",
                     set(rt) == {"default", "template=qa"} and rt["default"]["metrics"] == res["metrics"]
                     and abs(rt["template=qa"]["metrics"]["acc"] - np.mean(acc_t)) < 1e-9, f"{list(rt)}")

        # Batched (packed rows) and unbatched (one request at a time) scoring agree.
        s1 = os.path.join(tmp, "s1.jsonl")
        run("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", "arc_challenge.yaml"), "--data", data,
            "--num-fewshot", "2", "--log-samples", s1, "--batch-tokens", "0")
        one = [json.loads(l)["loglikelihoods"] for l in open(s1)]
        many = [x["loglikelihoods"] for x in logged]
        worst = max(abs(a - b) for x, y in zip(one, many) for a, b in zip(x, y))
        report.check("batched and unbatched scoring give the same log-likelihoods", worst < 1e-4, f"max diff {worst:.1e}")

        # TruthfulQA mc2 with the shipped definition (its fixed preamble).
        tq = [{"question": "Can pigs fly?", "choices": ["No.", "Yes.", "Maybe."], "labels": [1, 0, 0]},
              {"question": "Is water wet?", "choices": ["Yes.", "Often.", "No."], "labels": [1, 1, 0]}]
        tqf = os.path.join(tmp, "tq.jsonl")
        with open(tqf, "w") as f:
            for r in tq:
                f.write(json.dumps(r) + "\n")
        out = os.path.join(tmp, "tq.json")
        run("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", "truthfulqa_mc2.yaml"), "--data", tqf, "--output", out)
        pre = open(os.path.join(ROOT, "tasks", "truthfulqa_mc2.yaml")).read()
        preamble = json.loads(pre.split("description: ", 1)[1].split("\n", 1)[0])
        mc2 = []
        for doc in tq:
            p = [math.exp(ll(preamble + f"Q: {doc['question']}\nA:", " " + c)) for c in doc["choices"]]
            mc2.append(sum(x for x, l in zip(p, doc["labels"]) if l) / sum(p))
        got = json.load(open(out))["results"]["truthfulqa_mc2"]["default"]["metrics"]["mc2"]
        report.check("TruthfulQA mc2 equals sum p(true) / sum p(all)", abs(got - np.mean(mc2)) < 1e-3 * np.mean(mc2),
                     f"{got} vs {np.mean(mc2)}")

        # Winogrande partial scoring: options fill the context, the continuation is scored.
        wg = [{"prefix": "The trophy did not fit in the suitcase because the ", "continuation": "was too big.",
               "choices": ["trophy", "suitcase"], "answer": 0},
              {"prefix": "Sam gave Tom a book because ", "continuation": "had finished reading it.",
               "choices": ["Sam", "Tom"], "answer": 0}]
        wgf = os.path.join(tmp, "wg.jsonl")
        with open(wgf, "w") as f:
            for r in wg:
                f.write(json.dumps(r) + "\n")
        out = os.path.join(tmp, "wg.json")
        run("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", "winogrande.yaml"), "--data", wgf, "--num-fewshot", "1",
            "--output", out)
        accs = []
        for i, doc in enumerate(wg):
            shot = wg[1 - i]
            demo = shot["prefix"] + shot["choices"][shot["answer"]] + " " + shot["continuation"] + "\n\n"
            lls = [ll(demo + doc["prefix"] + c, " " + doc["continuation"]) for c in doc["choices"]]
            accs.append(int(np.argmax(lls)) == doc["answer"])
        got = json.load(open(out))["results"]["winogrande"]["default"]["metrics"]["acc"]
        report.check("Winogrande partial scoring equals the Python implementation", abs(got - np.mean(accs)) < 1e-9)

        # Generation task end to end (GSM8K format; a random model scores 0), with a sweep.
        g = os.path.join(tmp, "gsm.jsonl")
        with open(g, "w") as f:
            f.write(json.dumps({"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}) + "\n")
            f.write(json.dumps({"question": "What is 10*100?", "answer": "It is 1,000.\n#### 1,000"}) + "\n")
        out = os.path.join(tmp, "g.json")
        p = run("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", "gsm8k.yaml"), "--data", g, "--num-fewshot", "1",
                "--sweep", "temperature=0,0.7", "--output", out)
        r = json.load(open(out))["results"]["gsm8k"]
        report.check("generation task runs once per sweep setting", set(r) == {"temperature=0", "temperature=0.7"}
                     and all("exact_match,strict-match" in v["metrics"] for v in r.values()), str(list(r)))

        # The Open LLM Leaderboard v1 definition (lm-eval b281b09): items shuffled by Random(42),
        # demonstrations drawn from the train split by that same generator, no BOS.
        items = [{"question": f"What is {i}+{i}?", "answer": f"{i}+{i}={2 * i}\n#### {2 * i}"} for i in range(5)]
        train = [{"question": f"Train {i}?", "answer": f"#### {i}"} for i in range(6)]
        for path, rows in ((g, items), (os.path.join(tmp, "gtrain.jsonl"), train)):
            with open(path, "w") as f:
                for row in rows:
                    f.write(json.dumps(row) + "\n")
        smp, out = os.path.join(tmp, "v1.samples"), os.path.join(tmp, "v1.json")
        run("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", "gsm8k_leaderboard_v1.yaml"), "--data", g,
            "--fewshot-data", os.path.join(tmp, "gtrain.jsonl"), "--num-fewshot", "2", "--max-new-tokens", "2",
            "--log-samples", smp, "--output", out)
        rnd = random.Random(42)
        order = list(items)
        rnd.shuffle(order)
        want = ["".join(f"Question: {s['question']}\nAnswer: {s['answer']}\n\n" for s in rnd.sample(train, 2))
                + f"Question: {doc['question']}\nAnswer:" for doc in order]
        got = [json.loads(x)["prompt"] for x in open(smp)]
        settings = json.load(open(out))["results"]["gsm8k"]["default"]["settings"]
        report.check("gsm8k (Leaderboard v1, b281b09): item order, demonstrations and no BOS as that harness",
                     got == want and settings["bos"] is False, repr(got[0][:60]))

        # Chat generation ends where generation_config.json says a reply ends (OpenChat SFT adds
        # <|end_of_turn|> there, not to config.json) and uses its chat_condition. The reference model's
        # greedy first token is made an EOS id: the reply must then be empty, and not without it.
        chat = os.path.join(tmp, "chat")
        run("init", "--out", chat, "--add-tokens", "<|end_of_turn|>", "--chat-template", "openchat",
            "--std", "0.15", "--random-norms", "--seed", "5")
        ccfg, cw = reference_model.load_model_dir(chat)
        cf = os.path.join(tmp, "c.txt")
        open(cf, "w").write("GPT4 User: 2+2=<|end_of_turn|>GPT4 Assistant:")
        cids = json.loads(run("score", "--model", chat, "--text", cf, "--json").stdout)["tokens"]
        with torch.no_grad():
            first = int(reference_model.forward(ccfg, cw, cids)[-1].argmax())
        open(os.path.join(tmp, "q.jsonl"), "w").write(json.dumps({"q": "2+2=", "a": "4"}) + "\n")
        open(os.path.join(tmp, "chat.yaml"), "w").write(
            'task: chatgen\ntype: generate\ndata: q.jsonl\nchat: true\ndoc_to_text: "{{q}}"\n'
            'doc_to_target: "{{a}}"\nmax_new_tokens: 3\nmetrics: [exact_match]\n')
        gcf = os.path.join(chat, "generation_config.json")
        gc = json.load(open(gcf))
        gc["chat_condition"] = "GPT4"

        def chat_sample(eos):
            json.dump(dict(gc, eos_token_id=eos), open(gcf, "w"))
            smp = os.path.join(tmp, "cs.jsonl")
            run("eval", "--model", chat, "--task", os.path.join(tmp, "chat.yaml"), "--log-samples", smp)
            return json.loads(open(smp).readline())

        free, stopped = chat_sample([2]), chat_sample([2, first])
        report.check("chat generation uses generation_config's chat_condition",
                     stopped["chat_prompt"] == "<s>GPT4 User: 2+2=<|end_of_turn|>GPT4 Assistant:", stopped["chat_prompt"])
        report.check("chat generation stops at generation_config's EOS ids (reference greedy token)",
                     free["generation"] != "" and stopped["generation"] == "", f"{free['generation']!r} / {stopped['generation']!r}")

        # Perplexity with a sliding window equals the reference's over the same windows.
        text = "The river runs past the old mill and under the stone bridge. " * 6
        tf = os.path.join(tmp, "p.txt")
        open(tf, "w").write(text)
        p = run("eval", "--model", d, "--perplexity", tf, "--window", "32", "--stride", "16")
        ppl = float(p.stdout.split("perplexity:")[1].split()[0])
        ids = tokens(text)
        nll, scored = 0.0, 1
        for begin in range(0, len(ids), 16):
            end = min(len(ids), begin + 32)
            with torch.no_grad():
                lp = F.log_softmax(reference_model.forward(cfg, w, ids[begin:end]), dim=-1)
            for pos in range(max(scored, begin + 1), end):
                nll -= lp[pos - 1 - begin, ids[pos]].item()
            scored = end
            if scored >= len(ids):
                break
        want = math.exp(nll / (len(ids) - 1))
        report.check("sliding-window perplexity equals the reference's", abs(ppl - want) / want < 1e-3, f"{ppl} vs {want:.4f}")

        # The other shipped definitions' prompts, byte for byte.
        def prompt_of(task, rows, shots):
            f = os.path.join(tmp, task + ".jsonl")
            with open(f, "w") as fh:
                for r in rows:
                    fh.write(json.dumps(r) + "\n")
            smp = os.path.join(tmp, task + ".samples")
            run("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", task + ".yaml"), "--data", f, "--num-fewshot",
                str(shots), "--log-samples", smp, "--limit", "1")
            return json.loads(open(smp).readline())["prompt"]
        hs = [{"query": "Cooking: He cracks an egg", "choices": ["and fries it.", "x", "y", "z"], "answer": 0},
              {"query": "Sports: She runs", "choices": ["fast.", "x", "y", "z"], "answer": 0}]
        report.check("hellaswag prompt", prompt_of("hellaswag", hs, 1) == "Sports: She runs fast.\n\nCooking: He cracks an egg")
        mm = [{"subject": "astronomy", "question": "Sun?", "A": "star", "B": "planet", "C": "moon", "D": "comet", "answer": "A"}]
        with open(os.path.join(tmp, "mmlu_dev.jsonl"), "w") as fh:
            fh.write(json.dumps({"subject": "astronomy", "question": "Moon?", "A": "star", "B": "planet", "C": "moon",
                                 "D": "comet", "answer": 2}) + "\n")
        import shutil
        shutil.copy(os.path.join(ROOT, "tasks", "mmlu.yaml"), os.path.join(tmp, "mmlu.yaml"))
        f = os.path.join(tmp, "mmlu.jsonl")
        with open(f, "w") as fh:
            fh.write(json.dumps(mm[0]) + "\n")
        smp = os.path.join(tmp, "mmlu.samples")
        run("eval", "--model", d, "--task", os.path.join(tmp, "mmlu.yaml"), "--num-fewshot", "1", "--log-samples", smp)
        want = ("The following are multiple choice questions (with answers) about astronomy.\n\n"
                "Moon?\nA. star\nB. planet\nC. moon\nD. comet\nAnswer: C\n\nSun?\nA. star\nB. planet\nC. moon\nD. comet\nAnswer:")
        report.check("mmlu prompt (header, dev-split shot, letters)", json.loads(open(smp).readline())["prompt"] == want)
        gs = [{"question": "What is 2+2?", "answer": "2+2=4\n#### 4"}, {"question": "What is 3+3?", "answer": "#### 6"}]
        report.check("gsm8k prompt", prompt_of("gsm8k", gs, 1) == "Question: What is 3+3?\nAnswer: #### 6\n\nQuestion: What is 2+2?\nAnswer:")

        # Bad input names the file and line.
        bad = os.path.join(tmp, "bad.jsonl")
        open(bad, "w").write(json.dumps(arc[0]) + "\n" + json.dumps({"question": "no choices"}) + "\n")
        run_q = runner(lamina, echo_failures=False)
        p = run_q("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", "arc_challenge.yaml"), "--data", bad)
        report.check("an item without its fields is named by file:line", p.returncode == 1 and f"{bad}:2" in p.stderr, p.stderr[-150:])
        y = os.path.join(tmp, "bad.yaml")
        open(y, "w").write("task: x\ndoc_to_txt: oops\n")
        p = run_q("eval", "--model", d, "--task", y)
        report.check("an unknown task key is an error", p.returncode == 1 and "unknown key 'doc_to_txt'" in p.stderr)
        empty = os.path.join(tmp, "empty.jsonl")
        open(empty, "w").close()
        p = run_q("eval", "--model", d, "--task", os.path.join(ROOT, "tasks", "arc_challenge.yaml"), "--data", empty)
        report.check("an empty data file is an error", p.returncode == 1 and "no items" in p.stderr)

        # compare.
        p = run("eval", "compare", os.path.join(tmp, "r.json"), os.path.join(tmp, "r.json"))
        report.check("eval compare prints the side-by-side table", "| arc_challenge | default | acc |" in p.stdout and "+0.0000" in p.stdout)
    report.finish()


if __name__ == "__main__":
    main()
