"""The peer of a lamina LoRA step: transformers + PEFT on PyTorch 2.x (the oracle venv), as a
TRL/PEFT user runs it on a CPU: the model loaded in the given dtype, LoRA on the given modules
(PEFT's LoraConfig, dropout 0), gradient checkpointing (transformers' own, use_reentrant False),
AdamW over the adapter, one sequence of SEQ tokens, loss over every position.

A short warm-up step (64 tokens) first builds PyTorch's and oneDNN's kernels; then STEPS steps of
SEQ tokens are timed (forward + backward + optimizer step each).

usage: peft_lora_step.py MODEL_DIR SEQ THREADS bf16|f32 RANK ALPHA TARGETS [STEPS]
  TARGETS: comma-separated module names (q_proj,k_proj,...)          prints one JSON line
Also prints the product rate of torch.nn.functional.linear at [SEQ, hidden] x [hidden, hidden] in
the same dtype (the peer's own matmul speed on this CPU).
"""
import json
import resource
import sys
import time

import torch
from peft import LoraConfig, get_peft_model
from transformers import AutoModelForCausalLM


def linear_rate(dtype, m, k, n, reps=3):
    x, w = torch.randn(m, k, dtype=dtype), torch.randn(n, k, dtype=dtype)
    torch.nn.functional.linear(x, w)
    t0 = time.perf_counter()
    for _ in range(reps):
        torch.nn.functional.linear(x, w)
    return 2.0 * m * k * n * reps / (time.perf_counter() - t0) / 1e9


def main():
    d, T, threads, mode = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    r, alpha, targets = int(sys.argv[5]), float(sys.argv[6]), sys.argv[7].split(",")
    steps = int(sys.argv[8]) if len(sys.argv) > 8 else 1
    torch.set_num_threads(threads)
    dtype = {"bf16": torch.bfloat16, "f32": torch.float32}[mode]
    model = AutoModelForCausalLM.from_pretrained(d, dtype=dtype)
    model.config.use_cache = False
    model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    model.enable_input_require_grads()
    model = get_peft_model(model, LoraConfig(r=r, lora_alpha=alpha, lora_dropout=0.0, target_modules=targets,
                                             bias="none", task_type="CAUSAL_LM"))
    model.train()
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-4)
    V = model.config.vocab_size

    def step(n):
        ids = torch.tensor([[(t * 104729 + 13) % V for t in range(n)]])
        t0 = time.perf_counter()
        opt.zero_grad()
        loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        return time.perf_counter() - t0, loss.item()

    step(64)
    times = [step(T)[0] for _ in range(steps)]
    hidden = model.config.hidden_size
    print(json.dumps({"tokens_per_s": T * len(times) / sum(times), "step_s": sum(times) / len(times),
                      "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1e3,
                      "trainable": sum(p.numel() for p in trainable), "threads": torch.get_num_threads(),
                      "mode": mode, "torch": torch.__version__, "cpu_capability": torch.backends.cpu.get_cpu_capability(),
                      "linear_gflops": linear_rate(dtype, T, hidden, hidden)}))


if __name__ == "__main__":
    main()
