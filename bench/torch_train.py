"""PyTorch training baseline: forward + backward + AdamW of the reference model on one batch,
f32 or bf16 autocast (torch.autocast on CPU), as TRL/transformers would run it on CPU.

usage: torch_train.py MODEL_DIR BATCH SEQ_LEN STEPS f32|bf16 THREADS       prints one JSON line
"""
import json
import os
import resource
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
import reference_model as R  # noqa: E402


def main():
    d, B, T, steps, mode, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
    torch.set_num_threads(threads)
    cfg, w = R.load_model_dir(d)
    params = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    opt = torch.optim.AdamW(list(params.values()), lr=1e-4, betas=(0.9, 0.95), eps=1e-8, weight_decay=0.0)
    V = cfg["vocab_size"]
    rows = [[(b * 7919 + t * 104729 + 13) % V for t in range(T + 1)] for b in range(B)]
    best, total = float("inf"), 0.0
    for s in range(steps + 1):
        t0 = time.perf_counter()
        opt.zero_grad()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=(mode == "bf16")):
            loss = 0
            for r in rows:
                logits = R.forward(cfg, params, r[:-1])
                loss = loss + F.cross_entropy(logits.float(), torch.tensor(r[1:]), reduction="sum")
            loss = loss / (B * T)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(list(params.values()), 1.0)
        opt.step()
        dt = time.perf_counter() - t0
        if s:
            best, total = min(best, dt), total + dt
    print(json.dumps({"tokens_per_s": B * T * steps / total, "best_tokens_per_s": B * T / best,
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3, "threads": torch.get_num_threads(),
                      "mode": mode, "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "")}))


if __name__ == "__main__":
    main()
