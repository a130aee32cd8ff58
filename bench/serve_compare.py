"""`lamina serve` against llama-cpp-python's OpenAI-compatible server on the same GGUF file, the
same threads, in one run: aggregate decode tokens/s with 1, 4, 8 and 16 concurrent clients, each
sending one greedy completion request (distinct short prompts, --gen tokens). Prints a Markdown
table for docs/PERFORMANCE.md with the CPU.

usage: serve_compare.py BUILD_DIR [--types q4_0] [--threads 2] [--gen 64] [--streams 1,4,8,16]
                        [--work DIR] [--peer-no-extra-bufts]

The model is the TinyLlama-1.1B shape with random weights (as bench/llamacpp_compare.py makes it,
in --work). The peer's environment: bench/llamacpp-server-requirements.txt (pinned) in a venv under
~/.cache/lamina that sees scripts/llamacpp-venv.sh's llama-cpp-python through a .pth file.
Aggregate rate = all completion tokens / wall time from the first request sent to the last
answer (prompt processing included, as a client sees it).
"""
import argparse
import hashlib
import http.client
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

here = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, here)
from llamacpp_compare import SHAPES, peer_venv  # noqa: E402


def server_venv():
    req = os.path.join(here, "llamacpp-server-requirements.txt")
    base_py = peer_venv()
    key = hashlib.sha256(open(req, "rb").read()).hexdigest()[:12]
    cache = os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache"))
    venv = os.path.join(cache, "lamina", f"llamacpp-server-{key}")
    if not os.path.exists(os.path.join(venv, ".complete")):
        print(f"serve_compare: building {venv}", file=sys.stderr)
        subprocess.run(["rm", "-rf", venv], check=True)
        subprocess.run(["/usr/bin/python3", "-m", "venv", venv], check=True)
        pip = os.path.join(venv, "bin", "pip")
        subprocess.run([pip, "install", "-q", "--disable-pip-version-check", "pip==25.3"], check=True)
        subprocess.run([pip, "install", "-q", "--disable-pip-version-check", "--no-deps", "-r", req], check=True)
        site = subprocess.run([base_py, "-c", "import site; print(site.getsitepackages()[0])"], check=True,
                              capture_output=True, text=True).stdout.strip()
        mine = subprocess.run([os.path.join(venv, "bin", "python"), "-c", "import site; print(site.getsitepackages()[0])"],
                              check=True, capture_output=True, text=True).stdout.strip()
        open(os.path.join(mine, "llamacpp.pth"), "w").write(site + "\n")
        open(os.path.join(venv, ".complete"), "w").close()
    return os.path.join(venv, "bin", "python")


def free_port():
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    p = s.getsockname()[1]
    s.close()
    return p


def wait_ready(port, proc, timeout=300):
    t0 = time.time()
    while time.time() - t0 < timeout:
        if proc.poll() is not None:
            sys.exit(f"server exited with {proc.returncode}")
        try:
            c = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            c.request("GET", "/v1/models")
            if c.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    sys.exit("server did not come up")


def one_request(port, prompt, gen, out):
    c = http.client.HTTPConnection("127.0.0.1", port, timeout=3600)
    body = json.dumps({"prompt": prompt, "max_tokens": gen, "temperature": 0})
    c.request("POST", "/v1/completions", body, {"Content-Type": "application/json"})
    r = c.getresponse()
    data = json.loads(r.read())
    if r.status != 200:
        sys.exit(f"request failed {r.status}: {data}")
    out.append(data["usage"]["completion_tokens"])


def measure(port, streams, gen):
    prompts = [f"Report number {i}: the river and the mountain, a story of" for i in range(streams)]
    one_request(port, "warm up", 4, [])
    out = []
    ts = [threading.Thread(target=one_request, args=(port, p, gen, out)) for p in prompts]
    t0 = time.time()
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    return sum(out) / (time.time() - t0), sum(out)


def run_server(cmd, port, streams_list, gen, env):
    p = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env)
    try:
        wait_ready(port, p)
        return {s: measure(port, s, gen) for s in streams_list}
    finally:
        p.terminate()
        try:
            p.wait(timeout=20)
        except subprocess.TimeoutExpired:
            p.kill()


def cpu_model():
    for line in open("/proc/cpuinfo"):
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return "unknown"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("build")
    ap.add_argument("--types", default="q4_0")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gen", type=int, default=64)
    ap.add_argument("--streams", default="1,4,8,16")
    ap.add_argument("--work", default="/tmp/lamina-llamacpp-bench")
    ap.add_argument("--peer-no-extra-bufts", action="store_true")
    a = ap.parse_args()
    lamina = os.path.join(os.path.abspath(a.build), "lamina")
    streams = [int(s) for s in a.streams.split(",")]
    py = server_venv()
    os.makedirs(a.work, exist_ok=True)
    model = os.path.join(a.work, "tinyllama-bf16")
    if not os.path.exists(os.path.join(model, "config.json")):
        subprocess.run([lamina, "init", "--out", model, "--dtype", "bf16", *SHAPES["tinyllama"]], check=True)
    env = dict(os.environ, OMP_NUM_THREADS=str(a.threads))
    flags = sorted(set(re.findall(r"\b(avx2|avx512f|avx512_vnni|avx_vnni|avx512_bf16|amx_int8|amx_bf16)\b",
                                  open("/proc/cpuinfo").read())))
    print(f"CPU: {cpu_model()} ({' '.join(flags)}); {os.cpu_count()} cores; threads {a.threads}; "
          f"{a.gen} tokens per request, greedy; TinyLlama-1.1B shape, random weights")
    print()
    print("| type | clients | lamina serve tok/s | llama-cpp-python server | ratio | lamina vs its 1 client |")
    print("|---|---|---|---|---|---|")
    for t in a.types.split(","):
        gguf = os.path.join(a.work, f"tinyllama-{t}.gguf")
        if not os.path.exists(gguf):
            subprocess.run([lamina, "export-gguf", "--model", model, "--out", gguf, "--outtype", t], check=True)
        port = free_port()
        lam = run_server([lamina, "serve", "--model", gguf, "--tokenizer", model, "--threads", str(a.threads),
                          "--parallel", str(max(streams)), "--ctx", "512", "--port", str(port)], port, streams, a.gen, env)
        port = free_port()
        ref = run_server([py, os.path.join(here, "llamacpp_server_peer.py"), "--model", gguf, "--n_threads", str(a.threads),
                          "--n_threads_batch", str(a.threads), "--n_ctx", "2048", "--port", str(port),
                          *(["--no-extra-bufts"] if a.peer_no_extra_bufts else [])], port, streams, a.gen, env)
        for s in streams:
            print(f"| {t.upper()} | {s} | {lam[s][0]:.1f} | {ref[s][0]:.1f} | {lam[s][0] / ref[s][0]:.2f}x | "
                  f"{lam[s][0] / lam[streams[0]][0]:.2f}x |")


if __name__ == "__main__":
    main()
