#!/usr/bin/env python3
"""DPO, then DPO on top of DPO (Notux's set-up), in miniature, on a dense and a Mixtral model.

Task: single-digit addition "a+b=". Starting point: a small model pretrained briefly on English
text, then SFT'd on a mix of right answers and a fluent systematic mistake (off by one, a+b+1), so
on every question it is torn between the two (greedy: right about half the time).
Round 1: DPO on pairs (chosen = right answer, rejected = a+b+1), reference = the SFT model.
Round 2: DPO on new pairs (questions round 1 never saw) with the round-1 model as its own
reference. 20 of the 100 questions never appear in any DPO pair (held out); of the other 80, 40 go
to round 1 and 40 to round 2, each round holding out 6 of its distinct pairs (--eval-data) for
TRL's eval metrics, so no eval pair is trained on. Pairs are conversational rows (TRL's format for
a chat model; plain text is used as it is, without the template).
Reported per seed (model init, data split) and over 3 seeds (mean and range): TRL's held-out eval
metrics (reward accuracy / margin, chosen log-prob) at the start and end of each round, and
greedy exact match on all 100 questions and on the 20 held-out ones (lamina eval, chat template).
A last dense run repeats round 1 at 20x the learning rate (the failure mode), seed 1.

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
PRETRAIN_STEPS, SFT_STEPS, DPO_STEPS, LR, SEEDS, EVAL_PAIRS = 100, 1000, 100, "5e-6", (1, 2, 3), 6


def sh(*args):
    print("$ lamina " + " ".join(args), flush=True)
    return subprocess.run([lamina, *args], check=True, text=True, capture_output=True)


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def eval_metrics(run_dir):
    return [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if "eval_rewards/accuracies" in l]


def samples_path(model):
    """Next to the run, not inside the checkpoint (lamina refuses to write into an input model)."""
    return os.path.dirname(os.path.abspath(model)) + "-samples.jsonl"


def exact_match(model):
    res = os.path.join(out, "tmp-eval.json")
    sh("eval", "--model", model, "--task", f"{out}/addition.yaml", "--task", f"{out}/addition_heldout.yaml",
       "--output", res, "--log-samples", samples_path(model))
    r = json.load(open(res))["results"]
    return tuple(r[t]["default"]["metrics"]["exact_match"] for t in ("addition", "addition_heldout"))


def pair(a, b):
    user = [{"role": "user", "content": f"{a}+{b}="}]
    return {"prompt": user, "chosen": [{"role": "assistant", "content": str(a + b)}],
            "rejected": [{"role": "assistant", "content": str(a + b + 1)}]}


def write_data():
    rnd = random.Random(99)
    sft = []
    for _ in range(3000):
        a, b = rnd.choice(QUESTIONS)
        ans = a + b if rnd.random() < 0.5 else a + b + 1
        sft.append({"items": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(ans)}]})
    write_jsonl(f"{out}/sft.jsonl", sft)
    for task, qs in [("addition", QUESTIONS), ("addition_heldout", HELD_OUT)]:
        write_jsonl(f"{out}/{task}.jsonl", [{"question": f"{a}+{b}=", "answer": str(a + b)} for a, b in qs])
        open(f"{out}/{task}.yaml", "w").write(
            f'task: {task}\ntype: generate\ndata: {task}.jsonl\nnum_fewshot: 0\nchat: true\n'
            'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\nmax_new_tokens: 4\n'
            'answer_regex: "(-?[0-9]+)"\nmetrics: [exact_match]\n')


def write_pairs(seed):
    """Round 1 and round 2 on disjoint questions; each round's eval pairs distinct from its training pairs."""
    qs = list(DPO_QUESTIONS)
    random.Random(seed).shuffle(qs)
    files = {}
    for rnd, part in [(1, qs[:40]), (2, qs[40:])]:
        files[rnd] = (f"{out}/s{seed}-pairs{rnd}.jsonl", f"{out}/s{seed}-eval{rnd}.jsonl")
        write_jsonl(files[rnd][0], [pair(a, b) for a, b in part[EVAL_PAIRS:]])
        write_jsonl(files[rnd][1], [pair(a, b) for a, b in part[:EVAL_PAIRS]])
    return files


def dpo(model, pairs, run, lr, seed):
    sh("dpo", "--model", model, "--data", pairs[0], "--eval-data", pairs[1], "--out", run, "--seq-len", "96",
       "--batch-size", "8", "--max-steps", str(DPO_STEPS), "--lr", lr, "--beta", "0.1", "--warmup-ratio", "0.1",
       "--schedule", "linear", "--eval-every", str(DPO_STEPS // 2), "--keep", "1", "--seed", str(seed))
    m = eval_metrics(run)
    return m[0], m[-1], f"{run}/checkpoint-{DPO_STEPS}"


def main():
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    write_data()
    corpus = [a for f in sorted(os.listdir("/usr/share/common-licenses"))
              for a in ["--data", os.path.join("/usr/share/common-licenses", f)]
              if not os.path.islink(os.path.join("/usr/share/common-licenses", f))]
    rows = []  # (arch, seed, em0, start1, end1, em1, start2, end2, em2)
    for seed in SEEDS:
        files = write_pairs(seed)
        for arch, shape in [("dense (llama)", "tiny"), ("MoE (mixtral, 4 experts, top-2)", "tiny-mixtral")]:
            tag = f"{shape}-s{seed}"
            sh("init", "--out", f"{out}/{tag}-init", "--shape", shape, "--layers", "4", "--hidden", "128", "--intermediate",
               "352", "--heads", "4", "--kv-heads", "2", "--seed", str(seed))
            sh("pretrain", "--model", f"{out}/{tag}-init", "--out", f"{out}/{tag}-base", *corpus, "--seq-len", "128",
               "--batch-size", "8", "--max-steps", str(PRETRAIN_STEPS), "--lr", "2e-3", "--warmup-ratio", "0.05",
               "--keep", "1", "--seed", str(seed))
            sh("sft", "--model", f"{out}/{tag}-base/checkpoint-{PRETRAIN_STEPS}", "--data", f"{out}/sft.jsonl", "--out", f"{out}/{tag}-sft",
               "--seq-len", "128", "--batch-size", "8", "--max-steps", str(SFT_STEPS), "--lr", "2e-3", "--warmup-ratio",
               "0.05", "--keep", "1", "--seed", str(seed))
            sft_model = f"{out}/{tag}-sft/checkpoint-{SFT_STEPS}"
            em0 = exact_match(sft_model)
            start1, end1, dpo1 = dpo(sft_model, files[1], f"{out}/{tag}-dpo1", LR, seed)
            em1 = exact_match(dpo1)
            start2, end2, dpo2 = dpo(dpo1, files[2], f"{out}/{tag}-dpo2", LR, seed)
            em2 = exact_match(dpo2)
            rows.append((arch, seed, em0, start1, end1, em1, start2, end2, em2))
            print(arch, seed, em0, em1, em2, flush=True)
    # The failure mode: round 1 at 20x the learning rate (dense, seed 1).
    _, end_hi, dpo_hi = dpo(f"{out}/tiny-s1-sft/checkpoint-{SFT_STEPS}", write_pairs(1)[1], f"{out}/tiny-dpo1-lr1e-4",
                            "1e-4", 1)
    em_hi = exact_match(dpo_hi)
    pred = [json.loads(l)["prediction"] for l in open(samples_path(dpo_hi))]
    below = sum(1 for (a, b), p in zip(QUESTIONS, pred[:100]) if p == str(a + b - 1))

    fmt = lambda em: f"{em[0]:.2f} / {em[1]:.2f}"
    rm = lambda m: f"{m['eval_rewards/accuracies']:.2f} / {m['eval_rewards/margins']:.2f} / {m['eval_logps/chosen']:.2f}"
    print("\nexact match: all 100 questions / 20 held-out; eval: held-out pairs' reward accuracy / margin / logps/chosen")
    print("| model | seed | SFT exact match | round 1 eval (start -> end) | after round 1 | round 2 eval, ref = round 1 "
          "(start -> end) | after round 2 |\n|---|---|---|---|---|---|---|")
    for arch, seed, em0, s1, e1, em1, s2, e2, em2 in rows:
        print(f"| {arch} | {seed} | {fmt(em0)} | {rm(s1)} -> {rm(e1)} | {fmt(em1)} | {rm(s2)} -> {rm(e2)} | {fmt(em2)} |")

    def spread(xs):
        return f"{sum(xs) / len(xs):.2f} ({min(xs):.2f}-{max(xs):.2f})"

    print(f"\nover seeds {SEEDS}: mean (min-max)")
    print("| model | SFT exact match (all / held-out) | after round 1 | after round 2 | round 1 end eval acc / margin / "
          "logps/chosen | round 2 end eval acc / margin / logps/chosen |\n|---|---|---|---|---|---|")
    for arch in dict.fromkeys(r[0] for r in rows):
        rs = [r for r in rows if r[0] == arch]
        em = lambda i: " / ".join(spread([r[i][j] for r in rs]) for j in (0, 1))
        ev = lambda i: " / ".join(spread([r[i][k] for r in rs]) for k in
                                  ("eval_rewards/accuracies", "eval_rewards/margins", "eval_logps/chosen"))
        print(f"| {arch} | {em(2)} | {em(5)} | {em(8)} | {ev(4)} | {ev(7)} |")
    print(f"\ndense round 1 at lr 1e-4 (seed 1): eval {rm(end_hi)}, exact match {fmt(em_hi)}, "
          f"{below} of 100 greedy answers are a+b-1")


if __name__ == "__main__":
    main()
