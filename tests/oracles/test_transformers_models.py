"""Models built and saved by transformers itself, run by lamina: logits against transformers' own
forward pass (float32, eager attention) on tiny random models, for the config features of the
models people bring today:
  - Llama 3.1+'s rope_scaling {"rope_type": "llama3"} as the Hub's config.json writes it
    (rope_theta and rope_scaling at the top level) and as transformers v5 writes it
    (rope_parameters holding rope_theta and the scaling);
  - linear rope_scaling; yarn (Qwen2.5 / Qwen3's long-context setting: ramped frequencies and
    the attention factor on q and k), with its defaults and with beta_fast and truncate set;
  - a plain model whose rope_theta is only inside rope_parameters (transformers v5's layout);
  - Mistral Nemo's explicit head_dim (not hidden_size / heads) with a sliding window, and tied
    embeddings (Llama 3.2 1B/3B), through MistralForCausalLM / LlamaForCausalLM;
  - Qwen2 / Qwen2.5 (q, k, v biases; tied embeddings as the small ones have), Qwen3 (per-head
    q_norm / k_norm before RoPE, explicit head_dim, with and without attention_bias) and Llama's
    attention_bias, through Qwen2ForCausalLM / Qwen3ForCausalLM / LlamaForCausalLM;
  - Gemma 2 (Gemma2ForCausalLM): soft-capped attention scores and final logits, alternating
    sliding / full layers;
  - Gemma 3's text model (Gemma3ForCausalLM): GeGLU, (1 + w) norms before and after attention and
    MLP, q/k norms, embeddings times sqrt(hidden), query_pre_attn_scalar, sliding layers with their
    own RoPE base beside full layers with linear scaling (layer_types), in both config layouts.
For the new architectures also the training step's loss and every gradient (lamina_train_probe,
the trainer's TrainGraph) against transformers' loss.backward().
original_max_position_embeddings is set small, so the scaled frequencies matter at the test's
positions; each scaled case also checks that plain RoPE would give clearly other logits.

usage: test_transformers_models.py LAMINA TRAIN_PROBE        prints 'N passed, M failed'
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import Report, runner  # noqa: E402

from transformers import (Gemma2Config, Gemma2ForCausalLM, Gemma3ForCausalLM, Gemma3TextConfig, LlamaConfig, LlamaForCausalLM,  # noqa: E402
                          MistralConfig, MistralForCausalLM, Qwen2Config, Qwen2ForCausalLM, Qwen3Config,
                          Qwen3ForCausalLM)

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]), echo_failures=False)
probe = os.path.abspath(sys.argv[2])
torch.set_num_threads(2)

LLAMA3 = {"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0,
          "original_max_position_embeddings": 16}
# Gemma 3 text: two sliding layers (window 12 < T) and a full one with linear scaling; the sliding
# layers' RoPE base differs; query_pre_attn_scalar differs from head_dim.
GEMMA3 = {"arch": "gemma3", "num_hidden_layers": 3, "query_pre_attn_scalar": 24, "sliding_window": 12,
          "layer_types": ["sliding_attention", "full_attention", "sliding_attention"],
          "rope_local_base_freq": 10000.0, "rope_scaling": {"rope_type": "linear", "factor": 4.0},
          "tie_word_embeddings": True}
# Gemma 2: alternating sliding / full layers (its default layer_types), scores and final logits
# soft-capped with small caps so that tanh bends them here.
GEMMA2 = {"arch": "gemma2", "num_hidden_layers": 3, "query_pre_attn_scalar": 24, "sliding_window": 12,
          "attn_logit_softcapping": 2.0, "final_logit_softcapping": 3.0, "tie_word_embeddings": True}
# name: (rope_scaling, rope_theta, how config.json is written, other config fields)
CASES = {
    "llama3 rope, Hub layout": (LLAMA3, 500000.0, "hub", {}),
    "llama3 rope, transformers v5 layout": (LLAMA3, 500000.0, "v5", {}),
    "linear rope": ({"rope_type": "linear", "factor": 4.0}, 10000.0, "hub", {}),
    "yarn rope, Hub layout": ({"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16},
                              1000000.0, "hub", {}),
    "yarn rope (beta_fast 16, untruncated), transformers v5 layout": (
        {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 16, "beta_fast": 16,
         "truncate": False}, 10000.0, "v5", {}),
    "plain rope, rope_theta only in rope_parameters": (None, 500000.0, "v5", {}),
    "llama, tied embeddings": (None, 10000.0, "hub", {"tie_word_embeddings": True}),
    "mistral, head_dim 32 != 64 / 4, sliding window 12": (None, 1000000.0, "hub",
                                                          {"mistral": True, "head_dim": 32, "sliding_window": 12}),
    "qwen2, q/k/v biases, tied embeddings": (None, 1000000.0, "hub",
                                             {"arch": "qwen2", "tie_word_embeddings": True, "head_dim": None}),
    "qwen3, q/k norms, head_dim 32": (None, 1000000.0, "hub", {"arch": "qwen3", "head_dim": 32}),
    "qwen3, q/k norms and attention_bias": (None, 1000000.0, "hub", {"arch": "qwen3", "attention_bias": True}),
    "llama, attention_bias": (None, 10000.0, "hub", {"attention_bias": True}),
    "gemma3, transformers v5 layout": (None, 1000000.0, "v5", GEMMA3),
    "gemma3, Hub layout": (None, 1000000.0, "gemma-hub", GEMMA3),
    "gemma2, soft-capped scores and logits": (None, 10000.0, "hub", GEMMA2),
}
ARCHS = {"llama": (LlamaConfig, LlamaForCausalLM), "mistral": (MistralConfig, MistralForCausalLM),
         "qwen2": (Qwen2Config, Qwen2ForCausalLM), "qwen3": (Qwen3Config, Qwen3ForCausalLM),
         "gemma3": (Gemma3TextConfig, Gemma3ForCausalLM), "gemma2": (Gemma2Config, Gemma2ForCausalLM)}
# The cases whose training step is checked too (the architectures' own layer parts).
GRADIENT_CASES = {"qwen2, q/k/v biases, tied embeddings", "qwen3, q/k norms, head_dim 32",
                  "qwen3, q/k norms and attention_bias", "llama, attention_bias",
                  "gemma3, transformers v5 layout", "gemma3, Hub layout",
                  "gemma2, soft-capped scores and logits", "yarn rope, Hub layout"}
T = 48
# Measured max abs logit error (logits of magnitude ~3): 3e-6 to 7.7e-6; bound a few times that,
# scaled with the largest logit where they are larger (Gemma's scaled embeddings and 1 + w gains).
TOL = 2e-5


def build(d, scaling, theta, layout, extra, seed):
    extra = dict(extra)
    arch = extra.pop("arch", "mistral" if extra.pop("mistral", False) else "llama")
    kw = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
              num_key_value_heads=2, head_dim=16, vocab_size=512, max_position_embeddings=256,
              rope_theta=theta, tie_word_embeddings=False, attn_implementation="eager")
    kw.update(extra)
    if kw["head_dim"] is None:  # derived from hidden_size / heads, as Qwen2 does
        del kw["head_dim"]
    Config, Model = ARCHS[arch]
    cfg = Config(rope_scaling=scaling, **kw) if arch == "llama" else Config(**kw)
    torch.manual_seed(seed)
    model = Model(cfg).float().eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            bias = name.endswith(".bias")
            p.copy_(0.3 * torch.randn_like(p) if bias else
                    1 + 0.1 * torch.randn_like(p) if p.dim() == 1 else 0.15 * torch.randn_like(p))
    model.save_pretrained(d, safe_serialization=True)
    path = os.path.join(d, "config.json")
    c = json.load(open(path))
    if layout == "gemma-hub":  # the Hub's Gemma 3 config.json: rope_theta, rope_local_base_freq, rope_scaling
        rp = c.pop("rope_parameters")
        full = dict(rp["full_attention"])
        c["rope_theta"] = full.pop("rope_theta")
        c["rope_local_base_freq"] = rp["sliding_attention"]["rope_theta"]
        c["rope_scaling"] = full
    elif layout == "hub":  # the Hub's Llama 3.1 config.json: rope_theta and rope_scaling on top
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


# Measured relative error of the gradients (F32 both sides): ~1e-6; bound a few times that.
GRAD_TOL = 2e-5


def check_training_step(name, d, model, ids, tmp, extra=None, what=""):
    """One TrainGraph step (mean next-token cross-entropy, every tensor trainable) against
    transformers' loss.backward() on the same model."""
    batch = {"B": 1, "T": len(ids) - 1, "tokens": ids[:-1], "targets": ids[1:], "weights": [1.0] * (len(ids) - 1),
             "aux_coef": 0.0, **(extra or {})}
    name += what
    bf = os.path.join(tmp, "batch.json")
    json.dump(batch, open(bf, "w"))
    prefix = os.path.join(tmp, "probe")
    p = subprocess.run([probe, d, bf, prefix], capture_output=True, text=True)
    if not check(f"{name}: training step runs", p.returncode == 0, p.stderr[-400:]):
        return
    got = np.load(prefix + ".grads.npy")
    meta = json.load(open(prefix + ".json"))
    model.zero_grad()
    logits = model(torch.tensor([ids[:-1]])).logits[0]
    loss = torch.nn.functional.cross_entropy(logits, torch.tensor(ids[1:]))
    loss.backward()
    check(f"{name}: training loss {meta['loss']:.6f} equals transformers' {loss.item():.6f}",
          abs(meta["loss"] - loss.item()) < 1e-5)
    params = dict(model.named_parameters())
    worst, worst_name, missing = 0.0, "", []
    names = {t["name"] for t in meta["tensors"]}
    for t in meta["tensors"]:
        ref = params[t["name"]].grad.reshape(-1).numpy()
        g = got[t["offset"]: t["offset"] + t["numel"]]
        rel = np.linalg.norm(g - ref) / max(np.linalg.norm(ref), 1e-12)
        if rel > worst:
            worst, worst_name = rel, t["name"]
    missing = [n for n in params if n not in names and not (n == "lm_head.weight" and model.config.tie_word_embeddings)]
    check(f"{name}: every gradient equals transformers' (worst relative error {worst:.2e} in {worst_name}, "
          f"tol {GRAD_TOL:g})", worst <= GRAD_TOL and not missing, f"not trained: {missing[:4]}")


def check_upscale(name, d, ids, tmp):
    """SOLAR's DUS of 3 layers (sliding, full, sliding) dropping 1: [0, 2) + [1, 3). Each output
    layer keeps its source layer's attention type (layer_types follows the layers), so
    transformers' own model of the up-scaled directory gives lamina's logits."""
    up = os.path.join(tmp, os.path.basename(d) + "-up")
    p = run("upscale", "--model", d, "--out", up, "--drop", "1")
    if not check(f"{name}: upscale runs", p.returncode == 0, p.stderr[-300:]):
        return
    c = json.load(open(os.path.join(up, "config.json")))
    types = ["sliding_attention", "full_attention", "full_attention", "sliding_attention"]
    check(f"{name}: the up-scaled layer_types follow their source layers", c.get("layer_types") == types,
          str(c.get("layer_types")))
    um = Gemma3ForCausalLM.from_pretrained(up, attn_implementation="eager").float().eval()
    out = os.path.join(tmp, "up.npy")
    p = run("score", "--model", up, "--ids", ",".join(map(str, ids)), "--dump-logits", out)
    if check(f"{name}: lamina scores the up-scaled model", p.returncode == 0, p.stderr[-300:]):
        with torch.no_grad():
            ref = um(torch.tensor([ids])).logits[0]
        err = (torch.from_numpy(np.load(out)) - ref).abs().max().item()
        tol = TOL * max(1.0, ref.abs().max().item() / 3)
        check(f"{name}: up-scaled logits equal transformers' (max abs err {err:.2e}, tol {tol:.2g})", err <= tol)


def check_gguf_round_trip(name, d, ids, want, tmp):
    """export-gguf (F32) in llama.cpp's form for the architecture (qwen2 / qwen3: NEOX RoPE, rows
    unpermuted; llama: Q/K rows and biases permuted), read back by lamina: transformers' logits."""
    g = os.path.join(tmp, os.path.basename(d) + ".gguf")
    p = run("export-gguf", "--model", d, "--out", g, "--outtype", "f32", "--force")
    if name.startswith("gemma"):  # not written yet: refused before any output exists
        check(f"{name}: export-gguf refuses it, naming why", p.returncode == 1 and "Gemma 2 / 3" in p.stderr
              and not os.path.exists(g), p.stderr[-300:])
        return
    if name.startswith("qwen3") and "attention_bias" in name:  # llama.cpp's qwen3 has no biases
        check(f"{name}: export-gguf refuses it, naming why", p.returncode == 1 and "attention_bias" in p.stderr
              and not os.path.exists(g), p.stderr[-300:])
        return
    if not check(f"{name}: export-gguf runs", p.returncode == 0, p.stderr[-300:]):
        return
    out = os.path.join(tmp, "gguf.npy")
    p = run("score", "--model", g, "--tokenizer", d, "--ids", ",".join(map(str, ids)), "--dump-logits", out)
    if not check(f"{name}: lamina scores the GGUF", p.returncode == 0, p.stderr[-300:]):
        return
    err = (torch.from_numpy(np.load(out)) - want).abs().max().item()
    tol = TOL * max(1.0, want.abs().max().item() / 3)
    check(f"{name}: the GGUF's logits equal transformers' (max abs err {err:.2e}, tol {tol:.2g})", err <= tol)


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
            tol = TOL * max(1.0, want.abs().max().item() / 3)
            check(f"{name}: logits equal transformers' (max abs err {err:.2e}, tol {tol:.2g}, "
                  f"largest logit {want.abs().max().item():.3g})",
                  got.shape == want.shape and err <= tol, f"shape {tuple(got.shape)} vs {tuple(want.shape)}")
            if name in GRADIENT_CASES:
                check_training_step(name, d, model, ids, tmp)
                if name.startswith("gemma"):  # the post-MLP norm under recomputation in row chunks
                    check_training_step(name, d, model, ids, tmp, {"recompute": True, "mlp_chunk_rows": 10},
                                        " (recompute, MLP in chunks of 10 rows)")
                check_gguf_round_trip(name, d, ids, want, tmp)
            if name.startswith("gemma3"):
                check_upscale(name, d, ids, tmp)
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
        c["rope_scaling"] = {"rope_type": "dynamic", "factor": 4.0}
        bad = os.path.join(tmp, "dynamic")
        shutil.copytree(d, bad)
        json.dump(c, open(os.path.join(bad, "config.json"), "w"))
        p = run("score", "--model", bad, "--ids", "1,2,3")
        check("rope_type dynamic is refused naming config.json and the field",
              p.returncode == 1 and "config.json" in p.stderr and "rope_scaling.rope_type 'dynamic'" in p.stderr,
              p.stderr[-300:])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.finish()


main()
