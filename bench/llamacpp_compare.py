"""lamina's quantized inference against llama.cpp's on the same GGUF files (written by
`lamina export-gguf`), the same threads, in one run; prints a Markdown table for
docs/PERFORMANCE.md with the CPU and both sides' kernels.

usage: llamacpp_compare.py BUILD_DIR [--shape tinyllama|mistral-7b] [--types q4_0,q8_0,q4_k_m]
                           [--threads 2] [--prompt 128] [--decode 32] [--repeats 3] [--work DIR]
                           [--rounds 1] [--peer-no-extra-bufts]

The peer is llama-cpp-python (scripts/llamacpp-requirements.txt, pinned), built from source by pip
for this CPU into a virtual environment under ~/.cache/lamina (XDG_CACHE_HOME honoured) on first
use. Models are random weights of the real shapes (lamina init), converted once into --work.

--rounds N runs lamina and llama.cpp N times each, alternating, and reports the median of the N
per-round ratios with their range: on a shared VM the memory bandwidth moves by 2x between minutes,
so one run of each side compares two different machines.
"""
import argparse
import json
import os
import statistics
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
    ap.add_argument("--rounds", type=int, default=1, help="alternating runs of each side; the median ratio is reported")
    ap.add_argument("--peer-no-extra-bufts", action="store_true",
                    help="llama.cpp without its repacked / AMX weight buffers (its AMX path crashed on one VM)")
    a = ap.parse_args()
    if a.rounds < 1:
        ap.error(f"--rounds: expected at least 1, got {a.rounds}")
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
        lams, refs = [], []
        for _ in range(a.rounds):
            lams.append(run_json([os.path.join(a.build, "bench", "lamina_bench_forward"), gguf, *args], env))
            refs.append(run_json([py, os.path.join(here, "llamacpp_peer.py"), gguf, *args, str(a.threads),
                                  *(["--no-extra-bufts"] if a.peer_no_extra_bufts else [])], env))
        rows.append((t, os.path.getsize(gguf), lams, refs))
    lam0, ref0 = rows[0][2][0], rows[0][3][0]
    print(f"CPU: {lam0['cpu']}; {os.cpu_count()} cores; threads {a.threads}; prompt {a.prompt} tokens, decode "
          f"{a.decode} tokens, best of {a.repeats}" + (f"; {a.rounds} alternating rounds, median (range)" if a.rounds > 1 else ""))
    print(f"lamina kernel: {lam0['quant_kernel']}; llama.cpp: {ref0['system_info'].strip()}"
          f"{'' if ref0['extra_bufts'] else ' (extra buffer types off: no REPACK / AMX weights)'}")
    print(f"model: {a.shape} shape, random weights, GGUF files from lamina export-gguf")
    print()
    print("| type | file | lamina prompt tok/s | llama.cpp | ratio | lamina decode tok/s | llama.cpp | ratio | lamina decode GB/s |")
    print("|---|---|---|---|---|---|---|---|---|")

    def cell(xs, fmt, suffix=""):
        m = statistics.median(xs)
        return f"{m:{fmt}}{suffix}" + (f" ({min(xs):{fmt}}-{max(xs):{fmt}})" if len(xs) > 1 else "")

    for t, size, lams, refs in rows:
        lp = [x["prompt_tokens_per_s"] for x in lams]
        rp = [x["prompt_tokens_per_s"] for x in refs]
        ld = [x["decode_tokens_per_s"] for x in lams]
        rd = [x["decode_tokens_per_s"] for x in refs]
        pr = [x / y for x, y in zip(lp, rp)]
        dr = [x / y for x, y in zip(ld, rd)]
        print(f"| {t.upper()} | {size / 1e9:.2f} GB | {cell(lp, '.1f')} | {cell(rp, '.1f')} | {cell(pr, '.2f', 'x')} | "
              f"{cell(ld, '.2f')} | {cell(rd, '.2f')} | {cell(dr, '.2f', 'x')} | {statistics.median(ld) * size / 1e9:.1f} |")


if __name__ == "__main__":
    main()
