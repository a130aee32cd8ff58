"""DPO and its variants: loss and every gradient of lamina's DpoObjective against PyTorch autograd
over the reference model with TRL's formulas (sigmoid, conservative/label-smoothed, robust, hinge,
IPO with averaged log-probs); masking; then `lamina dpo` end to end (ln 2 at policy = reference,
reference cache reuse and invalidation) and the UltraFeedback binarizer.

usage: test_dpo.py LAMINA LAMINA_TRAIN_PROBE        prints 'N passed, M failed'
"""
import json
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

LOSSES = [("sigmoid", 0.0), ("sigmoid", 0.2), ("robust", 0.1), ("hinge", 0.0), ("ipo", 0.0), ("rpo", 0.0)]


def seq_logp(cfg, w, ids, mask, average):
    logits = reference_model.forward(cfg, w, ids[:-1])
    lp = F.log_softmax(logits, dim=-1).gather(1, torch.tensor(ids[1:])[:, None])[:, 0]
    m = torch.tensor(mask[1:], dtype=torch.float32)
    s = (lp * m).sum()
    return s / m.sum() if average else s


def trl_loss(kind, beta, eps, z):
    if kind == "sigmoid":
        return -F.logsigmoid(beta * z) * (1 - eps) - F.logsigmoid(-beta * z) * eps
    if kind == "robust":
        return (-F.logsigmoid(beta * z) * (1 - eps) + F.logsigmoid(-beta * z) * eps) / (1 - 2 * eps)
    if kind == "hinge":
        return torch.relu(1 - beta * z)
    return (z - 1 / (2 * beta)) ** 2


def main():
    lamina, probe = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    report = Report()
    run = runner(lamina)
    with tempfile.TemporaryDirectory() as tmp:
        d = os.path.join(tmp, "m")
        subprocess.run([lamina, "init", "--out", d, "--std", "0.15", "--random-norms", "--seed", "4"], check=True,
                       stdout=subprocess.DEVNULL)
        cfg, w = reference_model.load_model_dir(d)
        rng = np.random.default_rng(1)
        pairs = []
        for _ in range(3):
            prompt = rng.integers(3, 500, size=5).tolist()
            c = prompt + rng.integers(3, 500, size=4).tolist()
            r = prompt + rng.integers(3, 500, size=6).tolist()
            pairs.append({"chosen": c, "chosen_mask": [0] * 5 + [1] * 4, "rejected": r, "rejected_mask": [0] * 5 + [1] * 6,
                          "ref": [float(rng.normal(-40, 3)), float(rng.normal(-45, 3))]})
        for kind, eps in LOSSES:
            rpo = 0.5 if kind == "rpo" else 0.0  # RPO: sigmoid DPO + alpha * NLL of the chosen tokens
            kind = "sigmoid" if kind == "rpo" else kind
            beta = 0.1 if kind != "hinge" else 0.05
            avg = kind == "ipo"
            # lamina keeps summed reference log-probs; IPO averages both log-ratios in the loss (TRL 1.16.0)
            ref_pairs = [dict(p, ref=[p["ref"][0] / (4 if avg else 1), p["ref"][1] / (6 if avg else 1)]) for p in pairs]
            spec = {"B": 1, "T": 1, "tokens": [1], "targets": [-1], "weights": [0],
                    "dpo": {"loss": kind, "beta": beta, "label_smoothing": eps, "rpo_alpha": rpo, "T": 24, "pairs": pairs}}
            bf = os.path.join(tmp, f"{kind}{eps}{rpo}.json")
            json.dump(spec, open(bf, "w"))
            prefix = os.path.join(tmp, f"{kind}{eps}{rpo}")
            subprocess.run([probe, d, bf, prefix], check=True)
            got = np.load(prefix + ".grads.npy")
            meta = json.load(open(prefix + ".json"))
            params = {k: v.clone().requires_grad_(True) for k, v in w.items()}
            total = 0
            for p in ref_pairs:
                pc = seq_logp(cfg, params, p["chosen"], p["chosen_mask"], avg)
                pr = seq_logp(cfg, params, p["rejected"], p["rejected_mask"], avg)
                z = (pc - pr) - (p["ref"][0] - p["ref"][1])
                total = total + trl_loss(kind, beta, eps, z)
            loss = total / len(ref_pairs)
            if rpo:
                nll, count = 0, 0
                for p in ref_pairs:
                    nll = nll - seq_logp(cfg, params, p["chosen"], p["chosen_mask"], False)
                    count += sum(p["chosen_mask"][1:])
                loss = loss + rpo * nll / count
            loss.backward()
            worst = 0.0
            for t in meta["tensors"]:
                g = got[t["offset"] : t["offset"] + t["numel"]]
                ref = params[t["name"]].grad.reshape(-1).numpy()
                worst = max(worst, np.linalg.norm(g - ref) / max(np.linalg.norm(ref), 1e-8))
            report.check(f"{kind} (eps {eps}, rpo {rpo}): loss {meta['loss']:.6f} vs {loss.item():.6f}, worst gradient error {worst:.1e}",
                         abs(meta["loss"] - loss.item()) < 1e-4 * max(1, abs(loss.item())) and worst < 1e-3)

        # Masking: prompt positions do not count (their targets can change without effect).
        spec["dpo"]["loss"], spec["dpo"]["beta"] = "sigmoid", 0.1
        alt = json.loads(json.dumps(spec))
        for p in alt["dpo"]["pairs"]:
            t = p["chosen"][1:]
            t[1] = (t[1] + 7) % 500  # the label of a prompt position; the input tokens stay
            p["chosen_targets"] = t
        for name, s in [("a", spec), ("b", alt)]:
            json.dump(s, open(os.path.join(tmp, name + ".json"), "w"))
            subprocess.run([probe, d, os.path.join(tmp, name + ".json"), os.path.join(tmp, name)], check=True)
        la = json.load(open(os.path.join(tmp, "a.json")))
        lb = json.load(open(os.path.join(tmp, "b.json")))
        report.check("changing prompt tokens' targets leaves the completion log-probs alone",
                     la["metrics"]["logps/chosen"] == lb["metrics"]["logps/chosen"] and la["loss"] == lb["loss"])

        # Every template with the real Llama 2 tokenizer (the embedded one encodes "\n" as nothing, which
        # hid ChatML's "\n" after <|im_end|>: every pair was dropped). --strict: no pair may be skipped.
        l2 = os.path.join(os.path.dirname(__file__), "..", "assets", "tokenizers", "llama2", "tokenizer.model")
        pairs = os.path.join(tmp, "l2-pairs.jsonl")
        with open(pairs, "w") as f:
            for i in range(8):
                f.write(json.dumps({"prompt": f"What is {i} plus one?", "chosen": f"It is {i + 1}.",
                                    "rejected": f"It is {i + 2}."}) + "\n")
        for tmpl, added in [("chatml", "<|im_start|>,<|im_end|>"), ("openchat", "<|end_of_turn|>"), ("llama-2", ""),
                            ("mistral-instruct", "")]:
            md = os.path.join(tmp, "l2-" + tmpl)
            init = [lamina, "init", "--out", md, "--tokenizer", l2, "--chat-template", tmpl, "--layers", "1", "--seed", "4"]
            subprocess.run(init + (["--add-tokens", added] if added else []), check=True, stdout=subprocess.DEVNULL)
            p = run("dpo", "--model", md, "--data", pairs, "--seq-len", "128", "--batch-size", "2", "--max-steps", "1",
                    "--val-fraction", "0", "--strict", "--out", os.path.join(tmp, "l2-dpo-" + tmpl))
            report.check(f"dpo with the {tmpl} template and the real Llama 2 tokenizer keeps every pair",
                         p.returncode == 0 and "0 truncated, 0 malformed" in p.stderr, p.stderr.strip()[-200:])

        # End to end: a chat model, preference pairs in TRL's formats.
        chat = os.path.join(tmp, "chat")
        subprocess.run([lamina, "init", "--out", chat, "--add-tokens", "<|end_of_turn|>", "--chat-template", "openchat",
                        "--seed", "2"], check=True, stdout=subprocess.DEVNULL)
        data = os.path.join(tmp, "pref.jsonl")
        with open(data, "w") as f:
            for i in range(40):
                a, b = i % 10, (i * 7) % 10
                if i % 2:
                    row = {"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}
                else:
                    row = {"chosen": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}],
                           "rejected": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b + 2)}]}
                f.write(json.dumps(row) + "\n")
        out = os.path.join(tmp, "dpo")
        args = ["dpo", "--model", chat, "--data", data, "--seq-len", "96", "--batch-size", "4", "--lr", "1e-2",
                "--eval-every", "10", "--val-fraction", "0.1"]
        p = run(*args, "--out", out, "--max-steps", "20")
        m = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if l.strip()]
        first = [x for x in m if "loss" in x][0]
        last = [x for x in m if "loss" in x][-1]
        report.check("policy = reference: first loss is ln 2 and the rewards are 0",
                     abs(first["loss"] - math.log(2)) < 1e-12 and first["rewards/chosen"] == 0
                     and first["rewards/margins"] == 0 and first["rewards/accuracies"] == 0
                     and m[0]["eval_rewards/margins"] == 0, f"{first['loss']:.16f} {first['rewards/margins']}")
        report.check("training raises the reward margin (TRL's metric names, train and eval)",
                     last["rewards/margins"] > 0.1 and last["rewards/accuracies"] >= 0.5 and "eval_rewards/accuracies" in m[-1],
                     f"margin {last['rewards/margins']:.3f}, eval accuracy {m[-1]['eval_rewards/accuracies']:.2f}")
        report.check("reference log-probs computed and cached", "computed for" in p.stderr)
        p = run(*args, "--out", os.path.join(tmp, "dpo2"), "--max-steps", "1", "--cache-dir", os.path.join(out, ".cache"))
        report.check("the reference cache is reused for the same model and data", "reference log-probabilities from" in p.stderr)
        with open(data, "a") as f:
            f.write(json.dumps({"prompt": "1+1=", "chosen": "2", "rejected": "3"}) + "\n")
        p = run(*args, "--out", os.path.join(tmp, "dpo3"), "--max-steps", "1", "--cache-dir", os.path.join(out, ".cache"))
        report.check("changed data invalidates the reference cache", "computed for" in p.stderr)
        p = run(*args, "--out", os.path.join(tmp, "dpo4"), "--max-steps", "1", "--cache-dir", os.path.join(out, ".cache"),
                "--ref-model", os.path.join(out, "checkpoint-20"))
        report.check("another reference model invalidates it too", "computed for" in p.stderr)
        p = run(*args, "--out", os.path.join(tmp, "dpo5"), "--max-steps", "3", "--loss", "ipo", "--no-reference")
        report.check("ipo, reference-free, runs", p.returncode == 0)
        # The held-out split is by distinct pair: 4 pairs x 3 copies, 30% held out -> 2 distinct pairs
        # (6 rows) held out, never also trained on (a row-level split would hold out 4 rows).
        dup = os.path.join(tmp, "dup.jsonl")
        with open(dup, "w") as f:
            f.writelines(json.dumps({"prompt": f"{a}+{a}=", "chosen": str(2 * a), "rejected": str(2 * a + 1)}) + "\n"
                         for _ in range(3) for a in range(4))
        p = run("dpo", "--model", chat, "--data", dup, "--seq-len", "96", "--batch-size", "2", "--max-steps", "1",
                "--val-fraction", "0.3", "--out", os.path.join(tmp, "dpo-dup"))
        report.check("duplicate pairs: warned, and held out by distinct pair",
                     "8 of 12 pairs repeat an earlier one (4 distinct)" in p.stderr and "(6 train, 6 eval)" in p.stderr,
                     p.stderr.strip()[-300:])
        # LoRA: the reference is the base without the adapter (B = 0 at the start): loss ln 2 again.
        lo = os.path.join(tmp, "dpo-lora")
        p = run(*args, "--out", lo, "--max-steps", "3", "--lora-r", "4", "--lora-targets", "all")
        ml = [json.loads(l) for l in open(os.path.join(lo, "metrics.jsonl")) if '"loss"' in l and "eval_loss" not in l]
        report.check("LoRA DPO starts at ln 2 and saves a PEFT adapter", abs(ml[0]["loss"] - math.log(2)) < 1e-6
                     and os.path.exists(os.path.join(lo, "checkpoint-3", "adapter_model.safetensors")))
        # LoRA over a frozen base kept out of F32 (nf4), and over a q4_0 GGUF file of the model: the
        # reference is that same base, so the first loss is ln 2 again (a reference cached for the F32
        # base is not reused for it).
        lq = os.path.join(tmp, "dpo-lora-nf4")
        p = run(*args, "--out", lq, "--max-steps", "2", "--lora-r", "4", "--lora-targets", "all", "--base-dtype", "nf4",
                "--cache-dir", os.path.join(lo, ".cache"))
        mq = [json.loads(l) for l in open(os.path.join(lq, "metrics.jsonl")) if '"loss"' in l and "eval_loss" not in l]
        report.check("LoRA DPO over an nf4 base: its own reference (computed, not the F32 one), first loss ln 2",
                     "computed for" in p.stderr and abs(mq[0]["loss"] - math.log(2)) < 1e-6, f"{mq[0]['loss']:.8f}")
        gg = os.path.join(tmp, "chat-q4_0.gguf")
        run("export-gguf", "--model", chat, "--out", gg, "--outtype", "q4_0")
        lg = os.path.join(tmp, "dpo-lora-gguf")
        gargs = [gg if x == chat else x for x in args] + ["--tokenizer", chat]
        p = run(*gargs, "--out", lg, "--max-steps", "2", "--lora-r", "4", "--lora-targets", "all")
        mg = [json.loads(l) for l in open(os.path.join(lg, "metrics.jsonl")) if '"loss"' in l and "eval_loss" not in l]
        report.check("LoRA DPO over a q4_0 GGUF base (chat template from --tokenizer): first loss ln 2, adapter saved",
                     p.returncode == 0 and abs(mg[0]["loss"] - math.log(2)) < 1e-6
                     and os.path.exists(os.path.join(lg, "checkpoint-2", "adapter_model.safetensors")), p.stderr.strip()[-200:])
        # Mixtral: DPO with the router's load-balancing loss.
        mx = os.path.join(tmp, "mx")
        subprocess.run([lamina, "init", "--out", mx, "--shape", "tiny-mixtral", "--add-tokens", "<|end_of_turn|>",
                        "--chat-template", "openchat", "--seed", "3"], check=True, stdout=subprocess.DEVNULL)
        mo = os.path.join(tmp, "dpo-mx")
        p = run("dpo", "--model", mx, "--data", data, "--seq-len", "96", "--batch-size", "4", "--max-steps", "3",
                "--aux-loss-coef", "0.02", "--out", mo)
        mm = [json.loads(l) for l in open(os.path.join(mo, "metrics.jsonl")) if '"aux_loss"' in l]
        report.check("Mixtral DPO logs the router aux loss", p.returncode == 0 and len(mm) == 3 and mm[0]["aux_loss"] > 0)

        # UltraFeedback binarization.
        uf = os.path.join(tmp, "uf.jsonl")
        def comp(model, text, *ratings):
            aspects = ["helpfulness", "honesty", "instruction_following", "truthfulness"]
            return {"model": model, "response": text,
                    "annotations": {a: {"Rating": str(r)} for a, r in zip(aspects, ratings)}}
        rows = [
            {"source": "evol_instruct", "instruction": "Q1",
             "completions": [comp("m1", "good", 5, 5, 5, 5), comp("m2", "bad", 2, 3, 2, "N/A"), comp("m3", "ok", 4, 4, 4, 4)]},
            {"source": "flan", "instruction": "Q2", "completions": [comp("m1", "a", 3, 3, 3, 3), comp("m2", "b", 3, 3, 3, 3)]},
            {"source": "truthful_qa", "instruction": "Q3", "completions": [comp("m1", "x", 5, 5, 5, 5), comp("m2", "y", 1, 1, 1, 1)]},
        ]
        with open(uf, "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
        outs = []
        for seed in ["1", "1", "2"]:
            o = os.path.join(tmp, f"uf-{seed}-{len(outs)}.jsonl")
            run("data", "binarize-ultrafeedback", "--in", uf, "--out", o, "--seed", seed, "--exclude-source", "truthful_qa")
            outs.append([json.loads(l) for l in open(o)])
        pairs = outs[0]
        report.check("binarizer: chosen = highest mean, rejected rated lower, ties and excluded sources dropped",
                     len(pairs) == 1 and pairs[0]["chosen"][1]["content"] == "good" and pairs[0]["rejected"][1]["content"] in ("bad", "ok")
                     and pairs[0]["chosen-rating"] == 5.0 and pairs[0]["chosen-model"] == "m1"
                     and pairs[0]["prompt"] == "Q1", json.dumps(pairs)[:200])
        report.check("binarizer is reproducible with the seed", outs[0] == outs[1])
    report.finish()


if __name__ == "__main__":
    main()
