"""lamina's quantized inference against llama.cpp's on the same GGUF files (written by
`lamina export-gguf`), the same threads, in one run; prints a Markdown table for
docs/PERFORMANCE.md with the CPU and both sides' kernels.

usage: llamacpp_compare.py BUILD_DIR [--shape tinyllama|mistral-7b] [--types q4_0,q8_0,q4_k_m]
                           [--threads 2] [--prompt 128] [--decode 32] [--repeats 3] [--work DIR]
                           [--peer-no-extra-bufts]

The peer is llama-cpp-python (scripts/llamacpp-requirements.txt, pinned), built from source by pip
for this CPU into a virtual environment under ~/.cache/lamina (XDG_CACHE_HOME honoured) on first
use. Models are random weights of the real shapes (lamina init), converted once into --work.
"""
import argparse
import json
import os
import subprocess
import sys

here = os.path.dirname(os.path.abspath(__file__))

SHAPES = {
    # TinyLlama-1.1B's widths and depth.
    "tinyllama": ["--shape", "tiny", "--hidden", "2048", "--intermediate", "5632", "--heads", "16", "--kv-heads", "4",
                  "--layers", "22", "--max-pos", "2048", "--vocab-size", "32000"],
    "mistral-7b": ["--shape", "mistral-7b"],
}


def peer_venv():
    """llama-cpp-python's venv (scripts/llamacpp-venv.sh builds it once, shared with the tests)."""
    script = os.path.join(here, "..", "scripts", "llamacpp-venv.sh")
    return subprocess.run(["bash", script], check=True, capture_output=True, text=True).stdout.strip()


def run_json(cmd, env):
    p = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if p.returncode:
        sys.exit(f"failed: {' '.join(cmd)}\n{p.stderr[-2000:]}")
    return json.loads(p.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--shape", default="tinyllama", choices=sorted(SHAPES))
    ap.add_argument("--types", default="q4_0,q8_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--work", default="/tmp/lamina-llamacpp-bench")
    ap.add_argument("--peer-no-extra-bufts", action="store_true",
                    help="llama.cpp without its repacked / AMX weight buffers (its AMX path crashed on one VM)")
    a = ap.parse_args()
    lamina = os.path.join(a.build, "lamina")
    py = peer_venv()
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, f"{a.shape}-bf16")
    if not os.path.exists(os.path.join(model, "config.json")):
        subprocess.run([lamina, "init", "--out", model, "--dtype", "bf16", *SHAPES[a.shape]], check=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    args = [str(a.prompt), str(a.decode), str(a.repeats)]
    rows = []
    for t in a.types.split(","):
        gguf = os.path.join(a.work, f"{a.shape}-{t}.gguf")
        if not os.path.exists(gguf):
            subprocess.run([lamina, "export-gguf", "--model", model, "--out", gguf, "--outtype", t], check=True)
        lam = run_json([os.path.join(a.build, "bench", "lamina_bench_forward"), gguf, *args], env)
        ref = run_json([py, os.path.join(here, "llamacpp_peer.py"), gguf, *args, str(a.threads),
                        *(["--no-extra-bufts"] if a.peer_no_extra_bufts else [])], env)
        rows.append((t, os.path.getsize(gguf), lam, ref))
    print(f"CPU: {rows[0][2]['cpu']}; {os.cpu_count()} cores; threads {a.threads}; prompt {a.prompt} tokens, decode "
          f"{a.decode} tokens, best of {a.repeats}")
    print(f"lamina kernel: {rows[0][2]['quant_kernel']}; llama.cpp: {rows[0][3]['system_info'].strip()}"
          f"{'' if rows[0][3]['extra_bufts'] else ' (extra buffer types off: no REPACK / AMX weights)'}")
    print(f"model: {a.shape} shape, random weights, GGUF files from lamina export-gguf")
    print()
    print("| type | file | lamina prompt tok/s | llama.cpp | ratio | lamina decode tok/s | llama.cpp | ratio | lamina decode GB/s |")
    print("|---|---|---|---|---|---|---|---|---|")
    for t, size, lam, ref in rows:
        lp, rp, ld, rd = lam["prompt_tokens_per_s"], ref["prompt_tokens_per_s"], lam["decode_tokens_per_s"], ref["decode_tokens_per_s"]
        print(f"| {t.upper()} | {size / 1e9:.2f} GB | {lp:.1f} | {rp:.1f} | {lp / rp:.2f}x | {ld:.2f} | {rd:.2f} | {ld / rd:.2f}x | "
              f"{ld * size / 1e9:.1f} |")


if __name__ == "__main__":
    main()
