"""Independent PyTorch reference for Llama / Mistral / Mixtral causal LMs.

Written from the semantics of transformers' modeling_llama / modeling_mistral / modeling_mixtral
(eager attention path), not from lamina's code. Weights are read from the safetensors files with a
small parser of its own (json + numpy), so nothing of lamina's I/O is reused either.
"""
import json
import os
import struct

import numpy as np
import torch
import torch.nn.functional as F


def read_safetensors(path):
    with open(path, "rb") as f:
        data = f.read()
    (n,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + n])
    base = 8 + n
    out = {}
    for name, e in header.items():
        if name == "__metadata__":
            continue
        b, end = e["data_offsets"]
        raw = data[base + b : base + end]
        shape = e["shape"]
        if e["dtype"] == "F32":
            arr = np.frombuffer(raw, dtype="<f4").astype(np.float32)
        elif e["dtype"] == "F16":
            arr = np.frombuffer(raw, dtype="<f2").astype(np.float32)
        elif e["dtype"] == "BF16":
            arr = (np.frombuffer(raw, dtype="<u2").astype(np.uint32) << 16).view(np.float32)
        else:
            raise ValueError(f"{path}: dtype {e['dtype']}")
        out[name] = torch.from_numpy(arr.reshape(shape).copy())
    return out


def load_model_dir(d):
    with open(os.path.join(d, "config.json")) as f:
        cfg = json.load(f)
    idx = os.path.join(d, "model.safetensors.index.json")
    weights = {}
    if os.path.exists(idx):
        with open(idx) as f:
            files = sorted(set(json.load(f)["weight_map"].values()))
    else:
        files = ["model.safetensors"]
    for fn in files:
        weights.update(read_safetensors(os.path.join(d, fn)))
    return cfg, weights


# When set, both operands of every matrix product are rounded to bf16 first, with products
# accumulated in f32: the semantics of a bf16 oneDNN matmul (lamina's bf16 inference and its
# mixed-precision training). ROUTER_F32 exempts Mixtral's router (lamina's training keeps it F32).
# The rounding passes gradients straight through, as a cast does in autograd.
ROUND_ACTIVATIONS_BF16 = False
ROUTER_F32 = False


# Weights (by id()) whose products quantize the activations per block of 32 to ggml's Q8_0 first
# (quantize_row_q8_0_ref: d = max|x| / 127 stored as f16, q = roundf(x / d)): llama.cpp's CPU
# semantics for Q8_0 / Q4_0 weights, and lamina's.
Q8_0_ACTIVATIONS_FOR = set()


def q8_0_roundtrip(x):
    """x [.., K] (K a multiple of 32) -> the values of its Q8_0 blocks."""
    b = x.detach().float().numpy().reshape(-1, 32)
    d = (np.abs(b).max(axis=1) / np.float32(127)).astype(np.float32)
    idv = np.where(d != 0, np.float32(1) / np.where(d != 0, d, 1), 0).astype(np.float32)
    v = (b * idv[:, None]).astype(np.float32).astype(np.float64)
    q = np.sign(v) * np.floor(np.abs(v) + 0.5)  # roundf: half away from zero
    dh = d.astype(np.float16).astype(np.float32)
    return torch.from_numpy((q * dh[:, None]).astype(np.float32).reshape(x.shape))


# Weights (by id()) whose products quantize the activations per block of 256 to ggml's Q8_K first
# (quantize_row_q8_K_ref: the element of largest |x| sets iscale = -127 / max, q = nearest_int
# (half to even) of iscale * x, at most 127, d = 1 / iscale kept F32): llama.cpp's CPU semantics
# for Q4_K / Q5_K / Q6_K weights, and lamina's.
Q8_K_ACTIVATIONS_FOR = set()


def q8_k_roundtrip(x):
    """x [.., K] (K a multiple of 256) -> the values of its Q8_K blocks."""
    b = x.detach().float().numpy().reshape(-1, 256)
    mx = b[np.arange(len(b)), np.abs(b).argmax(axis=1)]  # the first element of largest |x|
    nz = mx != 0
    iscale = np.where(nz, np.float32(-127) / np.where(nz, mx, 1), 0).astype(np.float32)
    q = np.minimum(127, np.rint((b * iscale[:, None]).astype(np.float32)))
    d = np.where(nz, np.float32(1) / np.where(nz, iscale, 1), 0).astype(np.float32)
    return torch.from_numpy((q * d[:, None]).astype(np.float32).reshape(x.shape))


def mm(x, w, router=False):
    """x @ w.T, the Linear of transformers."""
    if id(w) in Q8_0_ACTIVATIONS_FOR:
        x = q8_0_roundtrip(x)
    if id(w) in Q8_K_ACTIVATIONS_FOR:
        x = q8_k_roundtrip(x)
    if ROUND_ACTIVATIONS_BF16 and not (router and ROUTER_F32):
        x = x.to(torch.bfloat16).float()
        w = w.to(torch.bfloat16).float()
    return x @ w.T


# LoRA adapters: base weight name prefix (e.g. "model.layers.0.self_attn.q_proj") -> (A [r, in],
# B [out, r], scale); proj() adds scale * (x A^T) B^T, as PEFT's LoRA Linear does.
LORA = {}


def proj(x, w, name):
    y = mm(x, w[name + ".weight"])
    if name in LORA:
        A, B, scale = LORA[name]
        y = y + scale * mm(mm(x, A), B)
    return y


def rms_norm(x, w, eps):
    # LlamaRMSNorm: variance in fp32, weight * normalized (cast back)
    xf = x.float()
    var = xf.pow(2).mean(-1, keepdim=True)
    return w * (xf * torch.rsqrt(var + eps)).to(x.dtype)


def rotate_half(x):
    x1 = x[..., : x.shape[-1] // 2]
    x2 = x[..., x.shape[-1] // 2 :]
    return torch.cat((-x2, x1), dim=-1)


def rope_cos_sin(positions, dim, theta):
    inv_freq = 1.0 / (theta ** (torch.arange(0, dim, 2, dtype=torch.int64).float() / dim))
    freqs = positions.float()[:, None] * inv_freq[None, :]
    emb = torch.cat((freqs, freqs), dim=-1)
    return emb.cos(), emb.sin()


def attention(cfg, w, p, x, positions):
    T = x.shape[0]
    nh, nkv = cfg["num_attention_heads"], cfg.get("num_key_value_heads", cfg["num_attention_heads"])
    hd = cfg.get("head_dim") or cfg["hidden_size"] // nh
    q = proj(x, w, p + "self_attn.q_proj").view(T, nh, hd).transpose(0, 1)
    k = proj(x, w, p + "self_attn.k_proj").view(T, nkv, hd).transpose(0, 1)
    v = proj(x, w, p + "self_attn.v_proj").view(T, nkv, hd).transpose(0, 1)
    cos, sin = rope_cos_sin(positions, hd, cfg.get("rope_theta", 10000.0))
    q = q * cos + rotate_half(q) * sin
    k = k * cos + rotate_half(k) * sin
    rep = nh // nkv  # repeat_kv: kv head j serves query heads j*rep .. j*rep+rep-1
    k = k.repeat_interleave(rep, dim=0)
    v = v.repeat_interleave(rep, dim=0)
    scores = (q @ k.transpose(1, 2)) / (hd ** 0.5)
    i = positions[:, None]
    j = positions[None, :]
    allowed = j <= i
    window = cfg.get("sliding_window") if cfg["model_type"] != "llama" else None
    if window:
        allowed = allowed & (i - j < window)
    scores = scores.masked_fill(~allowed, float("-inf"))
    probs = F.softmax(scores, dim=-1, dtype=torch.float32).to(q.dtype)
    out = (probs @ v).transpose(0, 1).reshape(T, nh * hd)
    return proj(out, w, p + "self_attn.o_proj")


def swiglu(x, gate, up, down):
    return mm(F.silu(mm(x, gate)) * mm(x, up), down)


def moe(cfg, w, p, x, router_log=None):
    E, K = cfg["num_local_experts"], cfg["num_experts_per_tok"]
    fused = (p + "mlp.gate.weight") in w
    router = w[p + ("mlp.gate.weight" if fused else "block_sparse_moe.gate.weight")]
    logits = mm(x, router, router=True)
    if router_log is not None:
        router_log.append(logits)
    probs = F.softmax(logits, dim=1, dtype=torch.float)
    topw, topi = torch.topk(probs, K, dim=-1)
    topw = topw / topw.sum(dim=-1, keepdim=True)
    out = torch.zeros_like(x)
    I = cfg["intermediate_size"]
    for e in range(E):
        if fused:
            gu = w[p + "mlp.experts.gate_up_proj"][e]
            g, u, d = gu[:I], gu[I:], w[p + "mlp.experts.down_proj"][e]
        else:
            q = p + f"block_sparse_moe.experts.{e}."
            g, u, d = w[q + "w1.weight"], w[q + "w3.weight"], w[q + "w2.weight"]
        tok, slot = torch.where(topi == e)
        if tok.numel() == 0:
            continue
        if fused:
            y = swiglu(x[tok], g, u, d)
        else:  # through proj(), so LoRA adapters on w1 / w2 / w3 (PEFT's names) apply
            xs = x[tok]
            y = proj(F.silu(proj(xs, w, q + "w1")) * proj(xs, w, q + "w3"), w, q + "w2")
        y = y * topw[tok, slot, None]
        out.index_add_(0, tok, y)
    return out


def forward(cfg, w, ids, router_log=None):
    """logits [T, V] for one sequence of token ids. router_log, if a list, receives each Mixtral
    layer's router logits [T, E] (for the load-balancing loss)."""
    ids = torch.tensor(ids, dtype=torch.long)
    positions = torch.arange(len(ids))
    eps = cfg.get("rms_norm_eps", 1e-6)
    x = w["model.embed_tokens.weight"][ids]
    for l in range(cfg["num_hidden_layers"]):
        p = f"model.layers.{l}."
        x = x + attention(cfg, w, p, rms_norm(x, w[p + "input_layernorm.weight"], eps), positions)
        h = rms_norm(x, w[p + "post_attention_layernorm.weight"], eps)
        if cfg["model_type"] == "mixtral":
            x = x + moe(cfg, w, p, h, router_log)
        else:
            g = F.silu(proj(h, w, p + "mlp.gate_proj")) * proj(h, w, p + "mlp.up_proj")
            x = x + proj(g, w, p + "mlp.down_proj")
    x = rms_norm(x, w["model.norm.weight"], eps)
    head = w["model.embed_tokens.weight"] if cfg.get("tie_word_embeddings") else w["lm_head.weight"]
    return mm(x, head)


def load_balancing_loss(router_logits, num_experts, top_k):
    """transformers' load_balancing_loss_func without an attention mask: router logits of all
    layers concatenated; E * sum(mean(one_hot(top-k)) * mean(softmax))."""
    logits = torch.cat(router_logits, dim=0)
    probs = F.softmax(logits, dim=-1)
    _, sel = torch.topk(probs, top_k, dim=-1)
    mask = F.one_hot(sel, num_experts).float()
    tokens_per_expert = mask.mean(dim=0)
    router_prob_per_expert = probs.mean(dim=0)
    return (tokens_per_expert * router_prob_per_expert.unsqueeze(0)).sum() * num_experts
