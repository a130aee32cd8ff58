"""What the oracle tests share: the CLI harness (Report, runner), a tiny model written by lamina and
loaded by transformers itself, and the versions of the tools each test reproduces.

These tests run under the virtual environment scripts/install-deps.sh builds from
scripts/oracles-requirements.txt (torch 2.x, transformers, PEFT, TRL, lm-eval, mergekit), offline."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import Report, f32_tensors, runner, write_jsonl  # noqa: E402,F401

import torch  # noqa: E402

torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
torch.manual_seed(0)


def tool_versions(*names):
    """'transformers 5.23.0, peft 0.21.2' for the docs and the test log."""
    from importlib.metadata import version

    return ", ".join(f"{n} {version(n)}" for n in names)


def hf_model(model_dir, dtype=torch.float32):
    """transformers' own model for a lamina-written directory, in eval mode."""
    from transformers import AutoModelForCausalLM

    m = AutoModelForCausalLM.from_pretrained(model_dir, dtype=dtype, local_files_only=True)
    return m.eval()


def hf_tokenizer(model_dir):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
