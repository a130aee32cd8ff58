#!/usr/bin/env python3
"""SOLAR's fine-tuning half at its real size on one 2-core, 24 GB machine: QLoRA SFT, merge, QLoRA
DPO over the 10.7B shape (the depth up-scaled Mistral-7B shape, 48 layers), a few steps each.

The weights are random (`lamina init --shape mistral-7b`, then `lamina upscale --drop 8`): what is
shown is that every step of the recipe runs at this size within the memory stated, and that the
losses go down on real text, not that the model learns anything useful.

Data (real text, from the machine): paragraphs of the licence texts in /usr/share/common-licenses.
SFT: "Quote the paragraph of the <licence> that begins: <first words>" -> the paragraph.
DPO: the same prompts, chosen = the paragraph, rejected = the paragraph with its words in reverse
order (the same tokens, so only their order tells the two apart).
Both runs repeat a small set (--epochs), so that a few steps show the loss on data seen before.

  1. lamina sft  --base-dtype q4_0 --lora-r 16 (all projections) --recompute on the 10.7B model
  2. lamina merge-lora (the adapter folded into the bf16 base: 21.5 GB written at 10.7B)
  3. lamina dpo  --base-dtype q4_0 --lora-r 16 on the merged model; the reference = the merged
     model without the new adapter (its log-probabilities computed once and cached)
Each command runs under /usr/bin/time -v (peak RSS, wall time); the losses come from metrics.jsonl.

usage: scripts/experiment_solar_qlora.py LAMINA SOLAR_DIR WORK_DIR [--sft-steps 4] [--dpo-steps 3]
       [--seq 256] [--base-dtype q4_0]                      (standard library only)
SOLAR_DIR: a SOLAR-shaped bf16 model directory (bench/finetune_memory.sh solar-... makes one).
"""
import argparse
import json
import os
import re
import subprocess
import sys


def paragraphs(limit):
    out = []
    d = "/usr/share/common-licenses"
    for name in ("GPL-3", "Apache-2.0", "MPL-2.0", "LGPL-3", "GFDL-1.3"):
        text = open(os.path.join(d, name), encoding="utf-8", errors="replace").read()
        for p in re.split(r"\n\s*\n", text):
            p = " ".join(p.split())
            if 300 <= len(p) <= 900:
                out.append((name, p))
            if len(out) >= limit:
                return out
    return out


def timed(cmd, log):
    """Runs cmd under /usr/bin/time -v; returns (peak RSS GiB, wall seconds)."""
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "w") as f:
        p = subprocess.run(["/usr/bin/time", "-v", *cmd], stdout=f, stderr=subprocess.STDOUT)
    text = open(log).read()
    if p.returncode:
        sys.exit(f"failed (see {log}):\n{text[-2000:]}")
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", text).group(1)) / 2**20
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): ([\d:.]+)", text).group(1)
    secs = 0.0
    for part in wall.split(":"):
        secs = secs * 60 + float(part)
    return rss, secs


def losses(run):
    return [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl")) if '"loss"' in line]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("lamina")
    ap.add_argument("solar")
    ap.add_argument("work")
    ap.add_argument("--sft-steps", type=int, default=4)
    ap.add_argument("--dpo-steps", type=int, default=3)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--base-dtype", default="q4_0")
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args()
    lam, work = os.path.abspath(a.lamina), os.path.abspath(a.work)
    os.makedirs(work, exist_ok=True)
    paras = paragraphs(2)
    sft, dpo = os.path.join(work, "sft.jsonl"), os.path.join(work, "dpo.jsonl")
    with open(sft, "w") as f, open(dpo, "w") as g:
        for name, p in paras:
            prompt = f"Quote the paragraph of the {name} licence that begins: {' '.join(p.split()[:6])}"
            f.write(json.dumps({"messages": [{"role": "user", "content": prompt},
                                             {"role": "assistant", "content": p}]}) + "\n")
            g.write(json.dumps({"prompt": [{"role": "user", "content": prompt}],
                                "chosen": [{"role": "assistant", "content": p}],
                                "rejected": [{"role": "assistant", "content": " ".join(reversed(p.split()))}]}) + "\n")
    common = ["--batch-size", "1", "--save-every", "0", "--val-fraction", "0", "--lora-r", "16", "--lora-alpha", "32",
              "--lora-targets", "all", "--recompute", "--base-dtype", a.base_dtype, "--threads", str(a.threads),
              "--template", "mistral-instruct"]
    rows = []
    sft_out = os.path.join(work, "sft")
    subprocess.run(["rm", "-rf", sft_out], check=True)
    r = timed([lam, "sft", "--model", a.solar, "--data", sft, "--out", sft_out, "--seq-len", str(a.seq),
               "--max-steps", str(a.sft_steps), "--epochs", str(a.sft_steps), "--lr", "1e-3", "--warmup-ratio", "0",
               "--schedule", "constant", *common], os.path.join(work, "sft.log"))
    rows.append(("QLoRA SFT", r, losses(sft_out)))
    merged = os.path.join(work, "merged")
    subprocess.run(["rm", "-rf", merged], check=True)
    adapter = os.path.join(sft_out, f"checkpoint-{a.sft_steps}")
    r = timed([lam, "merge-lora", "--model", a.solar, "--adapter", adapter, "--out", merged],
              os.path.join(work, "merge.log"))
    size = sum(os.path.getsize(os.path.join(merged, n)) for n in os.listdir(merged))
    rows.append((f"merge-lora ({size / 1e9:.1f} GB written)", r, []))
    dpo_out = os.path.join(work, "dpo")
    subprocess.run(["rm", "-rf", dpo_out], check=True)
    r = timed([lam, "dpo", "--model", merged, "--data", dpo, "--out", dpo_out, "--seq-len", str(2 * a.seq),
               "--max-steps", str(a.dpo_steps), "--epochs", str(a.dpo_steps), "--lr", "5e-4", "--warmup-ratio", "0",
               "--schedule", "constant", "--beta", "0.1", *common], os.path.join(work, "dpo.log"))
    rows.append(("QLoRA DPO", r, losses(dpo_out)))
    with open("/proc/cpuinfo") as f:
        cpu = next((line.split(":", 1)[1].strip() for line in f if line.startswith("model name")), "?")
    print(f"\nCPU: {cpu}, {os.cpu_count()} cores, threads {a.threads}; base {a.base_dtype}; "
          f"SFT {a.seq} tokens a step, DPO pairs of 2 x {a.seq}\n")
    print("| step | peak RSS | wall time | losses (step 1 -> last) | seconds per step |")
    print("|---|---|---|---|---|")
    for name, (rss, secs), m in rows:
        ls = " -> ".join(f"{x['loss']:.4f}" for x in m) if m else "-"
        per = " / ".join(f"{x['tokens_per_s'] and (a.seq * (2 if 'DPO' in name else 1)) / x['tokens_per_s']:.0f}"
                         for x in m) if m else "-"
        print(f"| {name} | {rss:.2f} GiB | {secs:.0f} s | {ls} | {per} |")
        if "DPO" in name and m:
            print("|  | | | rewards/margins: " + " -> ".join(f"{x.get('rewards/margins', 0):.4f}" for x in m) +
                  " | |")


if __name__ == "__main__":
    main()
