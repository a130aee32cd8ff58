#!/usr/bin/env python3
"""OpenChat's C-RLFT claim in miniature: with mixed-quality data and no preference labels,
conditioning on the source and weighting its tokens (C-RLFT) beats plain SFT on the same mix.

Task: single-digit addition "a+b=" with a checkable answer. Expert source: always right. A larger
sub-optimal source: wrong 70% of the time (off by 1-3). From the same small pretrained model:
  (a) SFT on expert data only, (b) SFT on the mixed data, (c) C-RLFT on the mixed data
  (conditions GPT4 / GPT3, weights 1.0 / 0.1), then greedy exact-match accuracy on all 100 questions
  through `lamina generate --chat` (each model's stored template and condition).

usage: scripts/experiment_crlft.py [LAMINA] [OUT_DIR] [STEPS]       (standard library only)
"""
import json
import os
import random
import re
import shutil
import subprocess
import sys

lamina = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "build/lamina")
out = sys.argv[2] if len(sys.argv) > 2 else "out/experiment-crlft"
steps = sys.argv[3] if len(sys.argv) > 3 else "300"


def sh(*args, **kw):
    print("$ lamina " + " ".join(args), flush=True)
    return subprocess.run([lamina, *args], check=True, text=True, capture_output=True, **kw)


def conv(a, b, answer):
    return {"items": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(answer)}]}


def main():
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    rnd = random.Random(1234)
    expert, weak = [], []
    for _ in range(150):
        a, b = rnd.randint(0, 9), rnd.randint(0, 9)
        expert.append(conv(a, b, a + b))
    for _ in range(450):
        a, b = rnd.randint(0, 9), rnd.randint(0, 9)
        wrong = rnd.random() < 0.7
        weak.append(conv(a, b, a + b + (rnd.choice([-3, -2, -1, 1, 2, 3]) if wrong else 0)))
    paths = {}
    for name, rows in [("expert", expert), ("weak", weak), ("mixed", expert + weak)]:
        paths[name] = os.path.join(out, name + ".jsonl")
        with open(paths[name], "w") as f:
            for r in rows:
                f.write(json.dumps(r) + "\n")
    # The shared starting point: a small model pretrained briefly on English text.
    corpus = [a for f in sorted(os.listdir("/usr/share/common-licenses"))
              for a in ["--data", os.path.join("/usr/share/common-licenses", f)]
              if not os.path.islink(os.path.join("/usr/share/common-licenses", f))]
    sh("init", "--out", f"{out}/base-init", "--shape", "tiny", "--layers", "4", "--hidden", "128", "--intermediate", "352",
       "--heads", "4", "--kv-heads", "2", "--seed", "1")
    sh("pretrain", "--model", f"{out}/base-init", "--out", f"{out}/base", *corpus, "--seq-len", "128", "--batch-size", "8",
       "--max-steps", "100", "--lr", "2e-3", "--warmup-ratio", "0.05", "--keep", "1")
    base = f"{out}/base/checkpoint-100"
    common = ["--model", base, "--seq-len", "128", "--batch-size", "8", "--max-steps", steps, "--lr", "2e-3",
              "--warmup-ratio", "0.05", "--val-fraction", "0.05", "--keep", "1", "--seed", "7"]
    runs = {
        "(a) SFT, expert only": ["sft", *common, "--out", f"{out}/a-sft-expert", "--data", paths["expert"]],
        "(b) SFT, mixed": ["sft", *common, "--out", f"{out}/b-sft-mixed", "--data", paths["mixed"]],
        "(c) C-RLFT, mixed": ["sft", *common, "--out", f"{out}/c-crlft-mixed", "--objective", "crlft",
                              "--source", f"gpt4={paths['expert']}:weight=1.0:condition=GPT4",
                              "--source", f"gpt35={paths['weak']}:weight=0.1:condition=GPT3"],
    }
    results = []
    for label, args in runs.items():
        sh(*args)
        model = f"{args[args.index('--out') + 1]}/checkpoint-{steps}"
        correct = 0
        for a in range(10):
            for b in range(10):
                p = sh("generate", "--model", model, "--chat", "--prompt", f"{a}+{b}=", "--max-new-tokens", "4")
                m = re.match(r"\s*(-?\d+)", p.stdout)
                correct += bool(m) and int(m.group(1)) == a + b
        results.append((label, correct))
        print(f"{label}: {correct}/100", flush=True)
    print("\n| training | exact match (100 questions, greedy) |\n|---|---|")
    for label, c in results:
        print(f"| {label} | {c}% |")


if __name__ == "__main__":
    main()
