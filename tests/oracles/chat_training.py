"""The training half of the end-to-end oracles (test_llama3_end_to_end, test_qwen3_end_to_end):
SFT through a model's own chat template and DPO on conversational pairs, as TRL users run them on
a model they brought."""
import json
import math
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import write_jsonl  # noqa: E402


def train(run, command, out, *args):
    """Runs a training command into out; -> (the process, its metrics.jsonl rows)."""
    p = run(command, "--out", out, "--val-fraction", "0", "--threads", "2", *args)
    m = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl")) if l.strip()] if p.returncode == 0 else []
    return p, m


def check_chat_training(run, check, d, tmp, family, dpo_args=()):
    """SFT through the model's own template lowers the loss and its checkpoint chats; DPO (with
    dpo_args, e.g. LoRA) on conversational pairs trains with finite losses."""
    rows = [{"messages": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}]}
            for a in range(6) for b in range(6)]
    data = os.path.join(tmp, "sft.jsonl")
    write_jsonl(data, rows)
    so = os.path.join(tmp, "sft")
    p, m = train(run, "sft", so, "--model", d, "--data", data, "--seq-len", "128", "--batch-size", "4",
                 "--max-steps", "6", "--lr", "3e-3")
    check(f"sft through {family}'s own template lowers the loss",
          p.returncode == 0 and "template the model's chat_template" in p.stderr and m and m[-1]["loss"] < m[0]["loss"],
          p.stderr[-400:])
    if p.returncode == 0:
        q = run("generate", "--model", os.path.join(so, "checkpoint-6"), "--chat", "--prompt", "2+3=",
                "--max-new-tokens", "3", "--threads", "2")
        check("the SFT checkpoint chats", q.returncode == 0, q.stderr[-300:])
    pairs = [{"prompt": [{"role": "user", "content": f"{a}+{a}="}],
              "chosen": [{"role": "assistant", "content": str(2 * a)}],
              "rejected": [{"role": "assistant", "content": str(2 * a + 1)}]} for a in range(8)]
    dd = os.path.join(tmp, "dpo.jsonl")
    write_jsonl(dd, pairs)
    p, m = train(run, "dpo", os.path.join(tmp, "dpo"), "--model", d, "--data", dd, "--seq-len", "64",
                 "--batch-size", "2", "--max-steps", "2", "--lr", "1e-3", *dpo_args)
    check(f"{'LoRA ' if '--lora-r' in dpo_args else ''}dpo on conversational pairs through {family}'s template trains",
          p.returncode == 0 and m and all(math.isfinite(r["loss"]) for r in m if "loss" in r), p.stderr[-400:])
