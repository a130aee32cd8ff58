"""llama.cpp (llama-cpp-python) prompt and decode throughput on a GGUF file, the way
lamina_bench_forward measures lamina: the same prompt ids ((i * 7919 + 13) % V), greedy decode,
best of REPEATS after one warm-up round. Prints one JSON line. Runs in the venv of
scripts/llamacpp-requirements.txt (scripts/llamacpp-venv.sh makes it).

usage: llamacpp_peer.py FILE.gguf PROMPT_TOKENS DECODE_TOKENS REPEATS THREADS [--no-extra-bufts]

--no-extra-bufts: llama.cpp's plain CPU buffers (no REPACK, no AMX): its AMX path crashed in
llama_decode on a Sapphire Rapids VM (llama-cpp-python 0.3.36), so that machine needs it.
"""
import json
import sys
import time

import numpy as np
from llama_cpp import Llama, llama_cpp


def disable_extra_bufts():
    """Every model llama-cpp-python loads from now on uses llama.cpp's plain CPU buffers."""
    default = llama_cpp.llama_model_default_params

    def params():
        p = default()
        p.use_extra_bufts = False
        return p

    llama_cpp.llama_model_default_params = params


def main():
    path, T, D, R, threads = sys.argv[1], *map(int, sys.argv[2:6])
    if "--no-extra-bufts" in sys.argv:  # without llama.cpp's repacked / AMX weight buffers
        disable_extra_bufts()
    llm = Llama(model_path=path, n_ctx=T + D + 8, n_batch=T, n_ubatch=T, n_threads=threads, n_threads_batch=threads,
                verbose=False, use_mmap=True)
    V = llm.n_vocab()
    ids = [(i * 7919 + 13) % V for i in range(T)]
    best_p = best_d = float("inf")
    for r in range(R + 1):
        llm.reset()  # eval() then drops the cache from position 0 on
        t0 = time.perf_counter()
        llm.eval(ids)
        p = time.perf_counter() - t0
        nxt = 1
        t0 = time.perf_counter()
        for _ in range(D):
            llm.eval([nxt])
            # the last position's logits (eval() no longer copies them into llm.scores)
            nxt = int(np.argmax(np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(V,))))
        d = time.perf_counter() - t0
        if r > 0:
            best_p, best_d = min(best_p, p), min(best_d, d)
    print(json.dumps({"prompt_tokens_per_s": T / best_p, "decode_tokens_per_s": D / best_d, "threads": threads,
                      "system_info": llama_cpp.llama_print_system_info().decode(),
                      "extra_bufts": "--no-extra-bufts" not in sys.argv}))


if __name__ == "__main__":
    main()
