#!/usr/bin/env python3
"""DPO, then DPO on top of DPO (Notux's set-up), in miniature, on a dense and a Mixtral model.

Task: single-digit addition "a+b=". Starting point: a small model pretrained briefly on English
text, then SFT'd on a mix of right answers and a fluent systematic mistake (off by one, a+b+1), so
on every question it is torn between the two (greedy: right about half the time).
Round 1: DPO on pairs (chosen = right answer, rejected = a+b+1), reference = the SFT model.
Round 2: DPO on fresh pairs (a new sample, same source) with the round-1 model as its own reference.
20 of the 100 questions never appear in any DPO pair (held out).
Reported: TRL's held-out eval metrics (reward accuracy / margin, chosen log-prob) after each round,
and greedy exact match on all 100 questions and on the 20 held-out ones (lamina eval, chat
template). A last dense run repeats round 1 at 20x the learning rate (the failure mode).

usage: scripts/experiment_dpo.py [LAMINA] [OUT_DIR]       (standard library only)
"""
import json
import os
import random
import shutil
import subprocess
import sys

lamina = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/lamina")
out = sys.argv[2] if len(sys.argv) > 2 else "out/experiment-dpo"
QUESTIONS = [(a, b) for a in range(10) for b in range(10)]
HELD_OUT = [q for i, q in enumerate(QUESTIONS) if i % 5 == 2]  # 20 questions, no DPO pair
DPO_QUESTIONS = [q for q in QUESTIONS if q not in HELD_OUT]
SFT_STEPS, DPO_STEPS, LR = 1000, 100, "5e-6"


def sh(*args):
    print("$ lamina " + " ".join(args), flush=True)
    return subprocess.run([lamina, *args], check=True, text=True, capture_output=True)


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def eval_metrics(run_dir):
    return [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if "eval_rewards/accuracies" in l]


def exact_match(model):
    res = os.path.join(out, "tmp-eval.json")
    sh("eval", "--model", model, "--task", f"{out}/addition.yaml", "--task", f"{out}/addition_heldout.yaml",
       "--output", res, "--log-samples", os.path.join(model, "samples.jsonl"))
    r = json.load(open(res))["results"]
    return tuple(r[t]["default"]["metrics"]["exact_match"] for t in ("addition", "addition_heldout"))


def write_data():
    rnd = random.Random(99)
    sft = []
    for _ in range(3000):
        a, b = rnd.choice(QUESTIONS)
        ans = a + b if rnd.random() < 0.5 else a + b + 1
        sft.append({"items": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(ans)}]})
    write_jsonl(f"{out}/sft.jsonl", sft)
    for name, seed in [("pairs1", 1), ("pairs2", 2)]:
        r = random.Random(seed)
        rows = []
        for _ in range(400):
            a, b = r.choice(DPO_QUESTIONS)
            rows.append({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)})
        write_jsonl(f"{out}/{name}.jsonl", rows)
    for task, qs in [("addition", QUESTIONS), ("addition_heldout", HELD_OUT)]:
        write_jsonl(f"{out}/{task}.jsonl", [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in qs])
        open(f"{out}/{task}.yaml", "w").write(
            f'task: {task}\ntype: generate\ndata: {task}.jsonl\nnum_fewshot: 0\nchat: true\n'
            'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\nmax_new_tokens: 4\n'
            'answer_regex: "(-?[0-9]+)"\nmetrics: [exact_match]\n')


def dpo(model, pairs, run, lr):
    sh("dpo", "--model", model, "--data", pairs, "--out", run, "--seq-len", "96", "--batch-size", "8",
       "--max-steps", str(DPO_STEPS), "--lr", lr, "--beta", "0.1", "--warmup-ratio", "0.1", "--schedule", "linear",
       "--val-fraction", "0.15", "--eval-every", str(DPO_STEPS // 2), "--keep", "1")
    m = eval_metrics(run)
    return m[0], m[-1], f"{run}/checkpoint-{DPO_STEPS}"


def main():
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    write_data()
    corpus = [a for f in sorted(os.listdir("/usr/share/common-licenses"))
              for a in ["--data", os.path.join("/usr/share/common-licenses", f)]
              if not os.path.islink(os.path.join("/usr/share/common-licenses", f))]
    rows = []
    for arch, shape in [("dense (llama)", "tiny"), ("MoE (mixtral, 4 experts, top-2)", "tiny-mixtral")]:
        tag = shape
        sh("init", "--out", f"{out}/{tag}-init", "--shape", shape, "--layers", "4", "--hidden", "128", "--intermediate", "352",
           "--heads", "4", "--kv-heads", "2", "--seed", "1")
        sh("pretrain", "--model", f"{out}/{tag}-init", "--out", f"{out}/{tag}-base", *corpus, "--seq-len", "128",
           "--batch-size", "8", "--max-steps", "100", "--lr", "2e-3", "--warmup-ratio", "0.05", "--keep", "1")
        sh("sft", "--model", f"{out}/{tag}-base/checkpoint-100", "--data", f"{out}/sft.jsonl", "--out", f"{out}/{tag}-sft",
           "--seq-len", "128", "--batch-size", "8", "--max-steps", str(SFT_STEPS), "--lr", "2e-3", "--warmup-ratio", "0.05",
           "--keep", "1")
        sft_model = f"{out}/{tag}-sft/checkpoint-{SFT_STEPS}"
        em0 = exact_match(sft_model)
        start1, end1, dpo1 = dpo(sft_model, f"{out}/pairs1.jsonl", f"{out}/{tag}-dpo1", LR)
        em1 = exact_match(dpo1)
        start2, end2, dpo2 = dpo(dpo1, f"{out}/pairs2.jsonl", f"{out}/{tag}-dpo2", LR)
        em2 = exact_match(dpo2)
        rows.append((arch, em0, start1, end1, em1, start2, end2, em2))
        print(arch, em0, em1, em2, flush=True)
    # The failure mode: round 1 at 20x the learning rate (dense).
    _, end_hi, dpo_hi = dpo(f"{out}/tiny-sft/checkpoint-{SFT_STEPS}", f"{out}/pairs1.jsonl", f"{out}/tiny-dpo1-lr1e-4", "1e-4")
    em_hi = exact_match(dpo_hi)
    pred = [json.loads(l)["prediction"] for l in open(os.path.join(dpo_hi, "samples.jsonl"))]
    below = sum(1 for (a, b), p in zip(QUESTIONS, pred[:100]) if p == str(a + b - 1))

    fmt = lambda em: f"{em[0]:.2f} / {em[1]:.2f}"
    rm = lambda m: f"{m['eval_rewards/accuracies']:.2f} / {m['eval_rewards/margins']:.2f} / {m['eval_logps/chosen']:.2f}"
    print("\nexact match: all 100 questions / 20 held-out; eval: held-out pairs' reward accuracy / margin / logps/chosen")
    print("| model | SFT exact match | round 1 eval (start -> end) | after round 1 | round 2 eval, ref = round 1 (start -> end) "
          "| after round 2 |\n|---|---|---|---|---|---|")
    for arch, em0, s1, e1, em1, s2, e2, em2 in rows:
        print(f"| {arch} | {fmt(em0)} | {rm(s1)} -> {rm(e1)} | {fmt(em1)} | {rm(s2)} -> {rm(e2)} | {fmt(em2)} |")
    print(f"\ndense round 1 at lr 1e-4: eval {rm(end_hi)}, exact match {fmt(em_hi)}, "
          f"{below} of 100 greedy answers are a+b-1")


if __name__ == "__main__":
    main()
