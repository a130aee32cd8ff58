#!/usr/bin/env python3
"""DPO, then DPO on top of DPO (Notux's set-up), in miniature, on a dense and a Mixtral model.

Task: single-digit addition "a+b=". Starting point: a small model pretrained briefly on English
text, then SFT'd on a mix of right and wrong answers (so it is right about half the time).
Round 1: DPO on pairs (chosen = right answer, rejected = a wrong one), reference = the SFT model.
Round 2: DPO on fresh pairs with the round-1 model as its own reference.
Reported: held-out reward accuracy / margin (TRL's eval metrics) after each round, and greedy
exact-match accuracy on all 100 questions (lamina eval, the model's chat template).

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


def sh(*args):
    print("$ lamina " + " ".join(args), flush=True)
    return subprocess.run([lamina, *args], check=True, text=True, capture_output=True)


def write_jsonl(path, rows):
    with open(path, "w") as f:
        for r in rows:
            f.write(json.dumps(r) + "\n")


def last_eval(run_dir):
    m = [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if "eval_rewards/accuracies" in l]
    return m[-1]


def accuracy(model, task):
    res = os.path.join(out, "tmp-eval.json")
    sh("eval", "--model", model, "--task", task, "--output", res)
    return json.load(open(res))["results"]["addition"]["default"]["metrics"]["exact_match"]


def main():
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    rnd = random.Random(99)
    conv = lambda a, b, ans: {"items": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(ans)}]}
    sft = []
    for _ in range(600):
        a, b = rnd.randint(0, 9), rnd.randint(0, 9)
        sft.append(conv(a, b, a + b if rnd.random() < 0.5 else a + b + rnd.choice([-2, -1, 1, 2])))
    write_jsonl(f"{out}/sft.jsonl", sft)
    for name, seed in [("pairs1", 1), ("pairs2", 2)]:
        r = random.Random(seed)
        rows = []
        for _ in range(400):
            a, b = r.randint(0, 9), r.randint(0, 9)
            rows.append({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + r.choice([-2, -1, 1, 2]))})
        write_jsonl(f"{out}/{name}.jsonl", rows)
    write_jsonl(f"{out}/addition.jsonl", [{"question": f"{a}+{b}=", "answer": str(a + b)} for a in range(10) for b in range(10)])
    task = f"{out}/addition.yaml"
    open(task, "w").write('task: addition\ntype: generate\ndata: addition.jsonl\nnum_fewshot: 0\nchat: true\n'
                          'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\nmax_new_tokens: 4\n'
                          'answer_regex: "(-?[0-9]+)"\nmetrics: [exact_match]\n')
    corpus = [a for f in sorted(os.listdir("/usr/share/common-licenses"))
              for a in ["--data", os.path.join("/usr/share/common-licenses", f)]
              if not os.path.islink(os.path.join("/usr/share/common-licenses", f))]
    table = []
    for arch, shape in [("dense (llama)", "tiny"), ("MoE (mixtral, 4 experts, top-2)", "tiny-mixtral")]:
        tag = shape
        sh("init", "--out", f"{out}/{tag}-init", "--shape", shape, "--layers", "4", "--hidden", "128", "--intermediate", "352",
           "--heads", "4", "--kv-heads", "2", "--seed", "1")
        sh("pretrain", "--model", f"{out}/{tag}-init", "--out", f"{out}/{tag}-base", *corpus, "--seq-len", "128",
           "--batch-size", "8", "--max-steps", "100", "--lr", "2e-3", "--warmup-ratio", "0.05", "--keep", "1")
        sh("sft", "--model", f"{out}/{tag}-base/checkpoint-100", "--data", f"{out}/sft.jsonl", "--out", f"{out}/{tag}-sft",
           "--seq-len", "128", "--batch-size", "8", "--max-steps", "300", "--lr", "2e-3", "--warmup-ratio", "0.05", "--keep", "1")
        sft_model = f"{out}/{tag}-sft/checkpoint-300"
        acc0 = accuracy(sft_model, task)
        common = ["--seq-len", "96", "--batch-size", "8", "--max-steps", "300", "--lr", "3e-4", "--beta", "0.5",
                  "--warmup-ratio", "0.1", "--schedule", "linear", "--val-fraction", "0.15", "--eval-every", "100", "--keep", "1"]
        sh("dpo", "--model", sft_model, "--data", f"{out}/pairs1.jsonl", "--out", f"{out}/{tag}-dpo1", *common)
        r1 = last_eval(f"{out}/{tag}-dpo1")
        acc1 = accuracy(f"{out}/{tag}-dpo1/checkpoint-300", task)
        sh("dpo", "--model", f"{out}/{tag}-dpo1/checkpoint-300", "--data", f"{out}/pairs2.jsonl", "--out", f"{out}/{tag}-dpo2", *common)
        r2 = last_eval(f"{out}/{tag}-dpo2")
        acc2 = accuracy(f"{out}/{tag}-dpo2/checkpoint-300", task)
        first1 = [json.loads(l) for l in open(f"{out}/{tag}-dpo1/metrics.jsonl") if "eval_rewards/accuracies" in l][0]
        table.append((arch, acc0, first1, r1, acc1, r2, acc2))
        print(arch, acc0, acc1, acc2, flush=True)
    print("\n| model | SFT exact match | round 1: eval reward acc / margin | after round 1 exact match | "
          "round 2 (ref = round 1): eval reward acc / margin | after round 2 exact match |\n|---|---|---|---|---|---|")
    for arch, acc0, f1, r1, acc1, r2, acc2 in table:
        print(f"| {arch} | {acc0:.2f} | {r1['eval_rewards/accuracies']:.2f} / {r1['eval_rewards/margins']:.2f} | {acc1:.2f} | "
              f"{r2['eval_rewards/accuracies']:.2f} / {r2['eval_rewards/margins']:.2f} | {acc2:.2f} |")


if __name__ == "__main__":
    main()
