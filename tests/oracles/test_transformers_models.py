"""Models built and saved by transformers itself, run by lamina: logits against transformers' own
forward pass (float32, eager attention) on tiny random models, for the config features of the
models people bring today:
  - Llama 3.1+'s rope_scaling {"rope_type": "llama3"} as the Hub's config.json writes it
    (rope_theta and rope_scaling at the top level) and as transformers v5 writes it
    (rope_parameters holding rope_theta and the scaling);
  - linear rope_scaling;
  - a plain model whose rope_theta is only inside rope_parameters (transformers v5's layout);
  - Mistral Nemo's explicit head_dim (not hidden_size / heads) with a sliding window, and tied
    embeddings (Llama 3.2 1B/3B), through MistralForCausalLM / LlamaForCausalLM.
original_max_position_embeddings is set small, so the scaled frequencies matter at the test's
positions; each scaled case also checks that plain RoPE would give clearly other logits.

usage: test_transformers_models.py LAMINA        prints 'N passed, M failed'
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import Report, runner  # noqa: E402

from transformers import LlamaConfig, LlamaForCausalLM, MistralConfig, MistralForCausalLM  # noqa: E402

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]), echo_failures=False)
torch.set_num_threads(2)

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
# name: (rope_scaling, rope_theta, how config.json is written, other config fields)
CASES = {
    "llama3 rope, Hub layout": (LLAMA3, 500000.0, "hub", {}),
    "llama3 rope, transformers v5 layout": (LLAMA3, 500000.0, "v5", {}),
    "linear rope": ({"rope_type": "linear", "factor": 4.0}, 10000.0, "hub", {}),
    "plain rope, rope_theta only in rope_parameters": (None, 500000.0, "v5", {}),
    "llama, tied embeddings": (None, 10000.0, "hub", {"tie_word_embeddings": True}),
    "mistral, head_dim 32 != 64 / 4, sliding window 12": (None, 1000000.0, "hub",
                                                          {"mistral": True, "head_dim": 32, "sliding_window": 12}),
}
T = 48
# Measured max abs logit error (logits of magnitude ~3): 4.3e-6 to 7.7e-6; bound a few times that.
TOL = 2e-5


def build(d, scaling, theta, layout, extra, seed):
    extra = dict(extra)
    mistral = extra.pop("mistral", False)
    kw = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=256,
              rope_theta=theta, tie_word_embeddings=False, attn_implementation="eager")
    kw.update(extra)
    if mistral:
        cfg = MistralConfig(**kw)
    else:
        cfg = LlamaConfig(rope_scaling=scaling, **kw)
    torch.manual_seed(seed)
    model = (MistralForCausalLM if mistral else LlamaForCausalLM)(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if p.dim() == 1 else 0.15 * torch.randn_like(p))
    model.save_pretrained(d, safe_serialization=True)
    path = os.path.join(d, "config.json")
    c = json.load(open(path))
    if layout == "hub":  # the Hub's Llama 3.1 config.json: rope_theta and rope_scaling on top
        rp = c.pop("rope_parameters", None) or {}
        c["rope_theta"] = rp.get("rope_theta", theta)
        if scaling is not None:
            c["rope_scaling"] = {k: v for k, v in rp.items() if k != "rope_theta"}
    else:
        c.pop("rope_theta", None)
        c.pop("rope_scaling", None)
        check(f"transformers wrote rope_parameters ({layout})", "rope_parameters" in c, json.dumps(c)[:200])
    json.dump(c, open(path, "w"), indent=2)
    return model


def main():
    tmp = tempfile.mkdtemp(prefix="lamina-hf-models-")
    try:
        for k, (name, (scaling, theta, layout, extra)) in enumerate(CASES.items()):
            d = os.path.join(tmp, f"m{k}")
            # lamina init for the tokenizer files (512 ids); the weights and config come from transformers.
            p = run("init", "--shape", "tiny", "--out", d)
            if not check(f"{name}: init", p.returncode == 0, p.stderr[-200:]):
                continue
            os.remove(os.path.join(d, "config.json"))
            os.remove(os.path.join(d, "model.safetensors"))
            model = build(d, scaling, theta, layout, extra, seed=k)
            ids = np.random.default_rng(k).integers(0, 512, size=T).tolist()
            out = os.path.join(tmp, f"m{k}.npy")
            p = run("score", "--model", d, "--ids", ",".join(map(str, ids)), "--dump-logits", out, "--threads", "2")
            if not check(f"{name}: lamina score runs", p.returncode == 0, p.stderr[-400:]):
                continue
            got = torch.from_numpy(np.load(out))
            with torch.no_grad():
                want = model(torch.tensor([ids])).logits[0]
            err = (got - want).abs().max().item()
            check(f"{name}: logits equal transformers' (max abs err {err:.2e}, tol {TOL:g})",
                  got.shape == want.shape and err <= TOL, f"shape {tuple(got.shape)} vs {tuple(want.shape)}")
            if scaling is not None:
                plain = LlamaForCausalLM(LlamaConfig(**{**model.config.to_dict(), "rope_scaling": None,
                                                        "rope_parameters": {"rope_type": "default",
                                                                            "rope_theta": theta}}))
                plain.load_state_dict(model.state_dict())
                with torch.no_grad():
                    other = (plain.float().eval()(torch.tensor([ids])).logits[0] - want).abs().max().item()
                check(f"{name}: the scaling matters here (plain RoPE differs by {other:.2e})", other > 100 * TOL)
        # A rope type lamina does not compute is refused naming the field.
        d = os.path.join(tmp, "m0")
        c = json.load(open(os.path.join(d, "config.json")))
        c["rope_scaling"] = {"rope_type": "yarn", "factor": 4.0}
        bad = os.path.join(tmp, "yarn")
        shutil.copytree(d, bad)
        json.dump(c, open(os.path.join(bad, "config.json"), "w"))
        p = run("score", "--model", bad, "--ids", "1,2,3")
        check("rope_type yarn is refused naming config.json and the field",
              p.returncode == 1 and "config.json" in p.stderr and "rope_scaling.rope_type 'yarn'" in p.stderr,
              p.stderr[-300:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.finish()


main()
