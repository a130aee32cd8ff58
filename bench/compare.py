"""Runs lamina and the PyTorch baseline on the same model, same threads, in one run, and prints
the ratios as a Markdown table (pasted into docs/PERFORMANCE.md).

usage: compare.py BUILD_DIR [--threads 2] [--prompt 128] [--decode 32] [--repeats 3] [--quantized]

--quantized adds lamina's Q8_0 / Q4_0 weights (quantized at load), compared with PyTorch bf16 (its
fastest mode here; PyTorch has no ggml block types) measured in the same run.
"""
import argparse
import json
import os
import platform
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))


def run_json(cmd, env=None):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def cpu_name():
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--quantized", action="store_true", help="also lamina q8_0 and q4_0 vs PyTorch bf16")
    ap.add_argument("--model", default=None, help="model dir (default: a ~0.5B llama made with lamina init)")
    a = ap.parse_args()
    lamina = os.path.join(a.build, "lamina")
    model = a.model or os.path.join(a.build, "bench-model")
    if not os.path.exists(model):
        # TinyLlama's widths (hidden 2048, 16 heads of 128, 4 kv heads, intermediate 5632) with
        # 8 layers and a 32000 vocabulary: ~0.5B parameters, bf16 on disk.
        subprocess.run([lamina, "init", "--out", model, "--shape", "tiny", "--hidden", "2048", "--intermediate", "5632",
                        "--heads", "16", "--kv-heads", "4", "--layers", "8", "--max-pos", "2048", "--dtype", "bf16",
                        "--vocab-size", "32000"], check=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    args = [str(a.prompt), str(a.decode), str(a.repeats)]
    rows = []
    for dt in ["bf16", "f32"]:
        lam = run_json([os.path.join(a.build, "bench", "lamina_bench_forward"), model, *args, dt], env)
        for core in ["", "SkylakeX"]:
            e = dict(env)
            e.pop("OPENBLAS_CORETYPE", None)
            e.pop("OPENBLAS_L2_SIZE", None)
            if core:
                e["OPENBLAS_CORETYPE"] = core
            ref = run_json(["/usr/bin/python3", os.path.join(here, "torch_baseline.py"), model, *args, dt, str(a.threads)], e)
            rows.append((dt, core or "default", lam, ref))
    if a.quantized:
        torch_bf16 = rows[0][3]
        for dt in ["q8_0", "q4_0"]:
            lam = run_json([os.path.join(a.build, "bench", "lamina_bench_forward"), model, *args, dt], env)
            rows.append((f"{dt} (PyTorch: bf16)", "default", lam, torch_bf16))
    cfg = json.load(open(os.path.join(model, "config.json")))
    print(f"machine: {cpu_name()}, {os.cpu_count()} cores; threads {a.threads}; prompt {a.prompt} tokens, decode {a.decode} "
          f"tokens, best of {a.repeats}")
    print(f"model: {cfg['model_type']} hidden {cfg['hidden_size']} x {cfg['num_hidden_layers']} layers, vocab {cfg['vocab_size']}")
    print()
    print("| weights | PyTorch OpenBLAS core | lamina prompt tok/s | PyTorch prompt tok/s | ratio | lamina decode tok/s | PyTorch decode tok/s | ratio |")
    print("|---|---|---|---|---|---|---|---|")
    for dt, core, lam, ref in rows:
        print(f"| {dt} | {core} | {lam['prompt_tokens_per_s']:.1f} | {ref['prompt_tokens_per_s']:.1f} | "
              f"{lam['prompt_tokens_per_s'] / ref['prompt_tokens_per_s']:.2f}x | {lam['decode_tokens_per_s']:.1f} | "
              f"{ref['decode_tokens_per_s']:.1f} | {lam['decode_tokens_per_s'] / ref['decode_tokens_per_s']:.2f}x |")


if __name__ == "__main__":
    main()
