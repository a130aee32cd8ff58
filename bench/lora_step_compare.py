"""Speed of a LoRA fine-tuning step, lamina vs transformers + PEFT on PyTorch 2.x, same model,
same threads, one run; prints a Markdown table (docs/PERFORMANCE.md).

The model is a real shape (default: Mistral-7B's widths: hidden 4096, 32 heads of 128, 8 KV heads,
intermediate 14336, vocabulary 32000) with --layers decoder layers (default 2, so that the peer's
bf16 step takes minutes, not hours, on a 2-core machine: both sides' time per layer is what is
compared, and a full 32-layer model's tokens/s is about this one's x (layers + head) / (32 + head)).
LoRA r 16, alpha 32 on all seven projections of every layer, batch 1, one sequence of --seq tokens,
recomputation on both sides (lamina --recompute; transformers' gradient checkpointing).

lamina: `lamina sft --max-steps 2` over the frozen base as --base-dtype says (bf16 = the mapped
checkpoint; q4_0 / nf4 = quantized at load); the second step's tokens/s (the first pages the
weights in and builds oneDNN's kernels). Peer: bench/peft_lora_step.py in the oracle venv
(scripts/install-deps.sh), in bf16 (the issue's peer: bf16 weights) and f32 (PyTorch's fastest
mode on CPUs without native bf16), after a 64-token warm-up step.
Fraction of peak: useful FLOP per token 6 x (decoder Linear parameters) + 4 x (LM head) (forward,
recomputation, input gradient; the head is not recomputed), against the F32 product rate of the
same CPU measured in the same run (build/bench/lamina_bench_kernels, 1024 x 4096 x 4096).

usage: lora_step_compare.py BUILD_DIR [--work DIR] [--layers 2] [--seq 1024] [--threads 2]
       [--lamina bf16,q4_0,nf4] [--peer bf16,f32] [--shape mistral-7b]
"""
import argparse
import json
import os
import random
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))
root = os.path.dirname(here)
sys.path.insert(0, here)
from compare import cpu_name, run_json  # noqa: E402

TARGETS = "q_proj,k_proj,v_proj,o_proj,gate_proj,up_proj,down_proj"


def cpu_flags():
    for line in open("/proc/cpuinfo"):
        if line.startswith("flags"):
            have = set(line.split(":", 1)[1].split())
            return " ".join(f for f in ("avx2", "fma", "avx512f", "avx512_bf16", "avx512_vnni", "avx_vnni", "amx_bf16",
                                        "amx_int8") if f in have)
    return "?"


def oracle_python():
    venv = os.environ.get("LAMINA_ORACLES_VENV")
    if not venv:
        req = os.path.join(root, "scripts", "oracles-requirements.txt")
        import hashlib
        cache = os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache")  # install-deps.sh's rule
        venv = os.path.join(cache, "lamina", "oracles-" + hashlib.sha256(open(req, "rb").read()).hexdigest()[:12])
    py = os.path.join(venv, "bin", "python")
    if not os.path.exists(os.path.join(venv, ".complete")):
        sys.exit(f"the oracle venv {venv} is missing: run scripts/install-deps.sh")
    return py


def f32_peak(build, threads):
    out = subprocess.run([os.path.join(build, "bench", "lamina_bench_kernels"), "--benchmark_filter=BM_Linear/f32/1024/",
                          "--benchmark_format=json", "--benchmark_min_time=2"], capture_output=True, text=True,
                         env=dict(os.environ, OMP_NUM_THREADS=str(threads)), check=True).stdout
    b = json.loads(out)["benchmarks"][0]
    return 2.0 * 1024 * 4096 * 4096 / (b["real_time"] * {"ms": 1e-3, "us": 1e-6, "ns": 1e-9, "s": 1.0}[b["time_unit"]]) / 1e9


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--work", default="/tmp/lamina-lora-bench")
    ap.add_argument("--shape", default="mistral-7b")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--seq", type=int, default=1024)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lamina", default="bf16,q4_0,nf4")
    ap.add_argument("--peer", default="bf16,f32")
    a = ap.parse_args()
    build = os.path.abspath(a.build)
    lamina = os.path.join(build, "lamina")
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, f"{a.shape}-l{a.layers}-bf16")
    if not os.path.exists(os.path.join(model, "config.json")):
        subprocess.run([lamina, "init", "--shape", a.shape, "--layers", str(a.layers), "--dtype", "bf16", "--out", model,
                        "--tokenizer", os.path.join(root, "tests", "assets", "tokenizers", "llama2", "tokenizer.model")],
                       check=True, stdout=subprocess.DEVNULL)
    cfg = json.load(open(os.path.join(model, "config.json")))
    h, i, V = cfg["hidden_size"], cfg["intermediate_size"], cfg["vocab_size"]
    kv = cfg["num_key_value_heads"] * (h // cfg["num_attention_heads"])
    per_layer = h * h * 2 + h * kv * 2 + 3 * h * i
    flop_per_token = 6 * per_layer * a.layers + 4 * h * V
    random.seed(0)
    words = "the river runs past an old mill under a stone bridge while children walk to school".split()
    data = os.path.join(a.work, "sft.jsonl")
    with open(data, "w") as f:  # one conversation longer than --seq (truncated to it)
        text = lambda n: " ".join(random.choice(words) for _ in range(n))  # noqa: E731
        f.write(json.dumps({"messages": [{"role": "user", "content": text(min(200, a.seq // 8))},
                                         {"role": "assistant", "content": text(2 * a.seq)}]}) + "\n")
    peak = f32_peak(build, a.threads)
    rows = []
    for dt in [d for d in a.lamina.split(",") if d]:
        out = os.path.join(a.work, f"run-{dt}")
        subprocess.run(["rm", "-rf", out], check=True)
        subprocess.run([lamina, "sft", "--model", model, "--data", data, "--out", out, "--template", "mistral-instruct",
                        "--seq-len", str(a.seq), "--batch-size", "1", "--save-every", "0", "--max-steps", "2",
                        "--val-fraction", "0", "--lora-r", "16", "--lora-alpha", "32", "--lora-targets", "all",
                        "--recompute", "--base-dtype", dt, "--threads", str(a.threads)],
                       check=True, stdout=subprocess.DEVNULL)
        m = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl"))]
        rows.append((f"lamina, base {dt}", m[-1]["tokens_per_s"], m[-1]["peak_rss_mb"]))
    py = oracle_python()
    for mode in [d for d in a.peer.split(",") if d]:
        env = dict(os.environ, OMP_NUM_THREADS=str(a.threads), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1")
        r = run_json([py, os.path.join(here, "peft_lora_step.py"), model, str(a.seq), str(a.threads), mode, "16", "32",
                      TARGETS], env)
        rows.append((f"transformers + PEFT, {mode} (torch {r['torch']}, {r['cpu_capability']})", r["tokens_per_s"],
                     r["peak_rss_mb"]))
    print(f"CPU: {cpu_name()}; flags: {cpu_flags()}; threads {a.threads}")
    print(f"model: {a.shape} widths, {a.layers} layers, vocabulary {V}; LoRA r 16 on {TARGETS}; batch 1 x {a.seq} tokens; "
          f"recomputation on; F32 product peak (lamina_bench_kernels 1024x4096x4096) {peak:.0f} GFLOP/s")
    print()
    peer_bf16 = next((t for n, t, _ in rows if n.startswith("transformers") and ", bf16" in n), None)
    peer_f32 = next((t for n, t, _ in rows if n.startswith("transformers") and ", f32" in n), None)
    print("| run | tokens/s | peak RSS MB | useful GFLOP/s | of F32 peak | vs peer bf16 | vs peer f32 |")
    print("|---|---|---|---|---|---|---|")
    for name, tps, rss in rows:
        g = tps * flop_per_token / 1e9
        r16 = f"{tps / peer_bf16:.2f}x" if peer_bf16 else "-"
        r32 = f"{tps / peer_f32:.2f}x" if peer_f32 else "-"
        print(f"| {name} | {tps:.2f} | {rss:.0f} | {g:.1f} | {100 * g / peak:.0f}% | {r16} | {r32} |")


if __name__ == "__main__":
    main()
