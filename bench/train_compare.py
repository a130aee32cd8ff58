"""Training throughput, lamina vs PyTorch, same model and threads, one run; prints a Markdown table.

usage: train_compare.py BUILD_DIR [--threads 2] [--batch 4] [--seq 256] [--steps 3]
Model: llama, 8 layers, hidden 512 (8 heads), intermediate 1408, vocab 32000 (made with lamina init).
"""
import argparse
import json
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from compare import cpu_name, run_json  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--steps", type=int, default=3)
    a = ap.parse_args()
    model = os.path.join(a.build, "bench-train-model")
    if not os.path.exists(model):
        subprocess.run([os.path.join(a.build, "lamina"), "init", "--out", model, "--hidden", "512", "--intermediate", "1408",
                        "--heads", "8", "--kv-heads", "8", "--layers", "8", "--vocab-size", "32000", "--max-pos", "1024"], check=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    args = [model, str(a.batch), str(a.seq), str(a.steps)]
    lam = run_json([os.path.join(a.build, "bench", "lamina_bench_train"), *args, "f32"], env)
    lam16 = run_json([os.path.join(a.build, "bench", "lamina_bench_train"), *args, "bf16"], env)
    rows = []
    for mode, core in [("f32", ""), ("f32", "SkylakeX"), ("bf16", "")]:
        e = dict(env)
        e.pop("OPENBLAS_CORETYPE", None)
        e.pop("OPENBLAS_L2_SIZE", None)
        if core:
            e["OPENBLAS_CORETYPE"] = core
        ref = run_json(["/usr/bin/python3", os.path.join(here, "torch_train.py"), *args, mode, str(a.threads)], e)
        rows.append((mode, core or "default", ref))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; threads {a.threads}; batch {a.batch} x {a.seq} tokens; "
          f"mean of {a.steps} steps after a warm-up step")
    print()
    print(f"lamina: f32 {lam['tokens_per_s']:.1f} tok/s (peak RSS {lam['peak_rss_mb']:.0f} MB), "
          f"bf16 mixed precision {lam16['tokens_per_s']:.1f} tok/s (peak RSS {lam16['peak_rss_mb']:.0f} MB)")
    print()
    print("| PyTorch mode | OpenBLAS core | PyTorch tok/s | PyTorch peak RSS | lamina f32 / PyTorch | lamina bf16 / PyTorch |")
    print("|---|---|---|---|---|---|")
    for mode, core, ref in rows:
        print(f"| {mode} | {core} | {ref['tokens_per_s']:.1f} | {ref['peak_rss_mb']:.0f} MB | "
              f"{lam['tokens_per_s'] / ref['tokens_per_s']:.2f}x | {lam16['tokens_per_s'] / ref['tokens_per_s']:.2f}x |")


if __name__ == "__main__":
    main()
