"""Data parallelism over MPI: `mpirun -np 2 lamina pretrain|dpo` equals one process running the
same global batch (per-step loss, gradient norm and DPO metrics, eval metrics and DPO's reference
pass split over the ranks, final weights); only rank 0 writes; a grad-accum the ranks cannot share
is an error that stops every rank.

usage: test_mpi.py LAMINA        prints 'N passed, M failed'
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

from harness import Report, f32_tensors as weights, runner

report = Report()
check = report.check
lamina = os.path.abspath(sys.argv[1])
run = runner(lamina)
ENV = dict(os.environ, OMP_NUM_THREADS="1", OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")


def mpirun(*args):
    return subprocess.run(["mpirun", "--oversubscribe", "-np", "2", lamina, *args], capture_output=True, text=True,
                          env=ENV, timeout=300)


def single(*args):
    return subprocess.run([lamina, *args], capture_output=True, text=True, env=ENV, timeout=300)


def steps(run_dir):
    return [json.loads(l) for l in open(os.path.join(run_dir, "metrics.jsonl")) if '"loss"' in l and "eval_loss" not in l]


# Float32 sums in another order (two ranks' shares, then the reduction): measured up to 1e-7 on the
# final weights after 4 steps (5e-8 on losses and metrics); the bound is a few times that.
TOL = 5e-7


def same_run(a, b, keys, what):
    sa, sb = steps(a), steps(b)
    worst = max((abs(x[k] - y[k]) / max(1.0, abs(x[k])) for x, y in zip(sa, sb) for k in keys), default=1.0)
    wa, wb = weights(os.path.join(a, "checkpoint-4", "model.safetensors")), weights(os.path.join(b, "checkpoint-4", "model.safetensors"))
    wdiff = max(float(np.abs(wa[k] - wb[k]).max()) for k in wa)
    ea = [json.loads(l) for l in open(os.path.join(a, "metrics.jsonl")) if "eval_loss" in l]
    eb = [json.loads(l) for l in open(os.path.join(b, "metrics.jsonl")) if "eval_loss" in l]
    eworst = max((abs(x[k] - y[k]) / max(1.0, abs(x[k])) for x, y in zip(ea, eb) for k in x if k.startswith("eval_")),
                 default=1.0)
    check(f"{what}: 2 ranks = 1 process ({', '.join(keys)} per step; eval metrics split over ranks; final weights)",
          len(sa) == len(sb) == 4 and len(ea) == len(eb) >= 2 and worst < TOL and eworst < TOL and wdiff < TOL,
          f"worst relative {worst:.1e}, eval {eworst:.1e}, weights {wdiff:.1e}")


def main():
    if not shutil.which("mpirun"):
        check("mpirun is installed (scripts/install-deps.sh installs openmpi-bin)", False)
        report.finish()
    tmp = tempfile.mkdtemp()
    m = os.path.join(tmp, "m")
    run("init", "--out", m, "--shape", "tiny", "--layers", "2", "--seed", "1")
    corpus = os.path.join(tmp, "c.txt")
    open(corpus, "w").write("The river runs past the old mill and under the stone bridge. " * 200)
    args = ["--model", m, "--data", corpus, "--seq-len", "32", "--batch-size", "2", "--grad-accum", "2", "--max-steps", "4",
            "--lr", "1e-3", "--eval-every", "2"]
    p1 = single("pretrain", *args, "--out", os.path.join(tmp, "one"))
    p2 = mpirun("pretrain", *args, "--out", os.path.join(tmp, "two"))
    check("mpirun -np 2 lamina pretrain runs", p1.returncode == 0 and p2.returncode == 0, p2.stderr[-400:])
    if p2.returncode == 0:
        same_run(os.path.join(tmp, "one"), os.path.join(tmp, "two"), ["loss", "grad_norm"], "pretrain")
        check("one report: rank 0 alone prints and writes", p2.stdout.count("trained 4 steps") == 1
              and not [f for f in os.listdir(os.path.join(tmp, "two")) if ".tmp" in f])

    chat = os.path.join(tmp, "chat")
    run("init", "--out", chat, "--add-tokens", "<|end_of_turn|>", "--chat-template", "openchat", "--seed", "2", "--layers", "2")
    pairs = os.path.join(tmp, "pairs.jsonl")
    with open(pairs, "w") as f:
        for i in range(40):  # 40 distinct pairs: the held-out split (by distinct pair) is the row split
            a, b = i % 10, (i * 7) % 10
            f.write(json.dumps({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1 + i // 10)}) + "\n")
    dargs = ["--model", chat, "--data", pairs, "--seq-len", "64", "--batch-size", "2", "--grad-accum", "2", "--max-steps", "4",
             "--lr", "1e-3", "--rpo-alpha", "0.5", "--eval-every", "2", "--val-fraction", "0.25"]
    p1 = single("dpo", *dargs, "--out", os.path.join(tmp, "dpo-one"))
    p2 = mpirun("dpo", *dargs, "--out", os.path.join(tmp, "dpo-two"))
    check("mpirun -np 2 lamina dpo runs", p1.returncode == 0 and p2.returncode == 0, p2.stderr[-400:])
    if p2.returncode == 0:
        same_run(os.path.join(tmp, "dpo-one"), os.path.join(tmp, "dpo-two"),
                 ["loss", "grad_norm", "rewards/margins", "rewards/accuracies", "logps/chosen", "nll_loss"], "dpo (with RPO)")

    p = mpirun("pretrain", "--model", m, "--data", corpus, "--seq-len", "32", "--batch-size", "2", "--grad-accum", "1",
               "--max-steps", "2", "--out", os.path.join(tmp, "bad"))
    check("a grad-accum the ranks cannot share is an error, and no rank hangs", p.returncode != 0
          and "multiple of the 2 processes" in p.stderr, p.stderr[-300:])
    report.finish()


if __name__ == "__main__":
    main()
