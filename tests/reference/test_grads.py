"""Gradient check: TrainGraph's loss and every parameter gradient against PyTorch autograd over the
independent reference model (tests/reference/reference_model.py), on tiny llama, mistral (window
shorter than the sequence) and mixtral (4 experts top-2, with the load-balancing loss) models.

usage: test_grads.py LAMINA LAMINA_TRAIN_PROBE        prints 'N passed, M failed'
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(__file__))
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "cli"))
import reference_model  # noqa: E402
from harness import Report  # noqa: E402

# name: (init args, aux coefficient[, precision, tolerance]). bf16 cases compare lamina's
# mixed-precision gradients (bf16 products, F32 accumulation) with F32 autograd, so the bound is
# bf16's: ~2^-8 relative per rounded operand (measured 6.5e-3). F32 cases: measured up to 4.2e-6 here
# (7e-6 on another machine); the bound is a few times that.
CASES = {
    "llama": (["--shape", "tiny"], 0.0),
    "llama-tied-gqa4": (["--shape", "tiny", "--heads", "8", "--kv-heads", "2", "--tie-embeddings"], 0.0),
    "mistral-window": (["--shape", "tiny-mistral", "--sliding-window", "5"], 0.0),
    "mixtral-aux": (["--shape", "tiny-mixtral"], 0.02),
    "mixtral-fused-aux": (["--shape", "tiny-mixtral", "--moe-layout", "fused"], 0.5),
    "llama-recompute": (["--shape", "tiny"], 0.0, "f32", 3e-5, True),
    "mixtral-recompute": (["--shape", "tiny-mixtral", "--moe-layout", "fused"], 0.1, "f32", 3e-5, True),
    # Layer inputs kept in bf16 for the rerun (--recompute-dtype bf16): the forward and the loss are
    # F32-exact; the gradients are taken at inputs rounded to bf16 (2^-9 relative): measured 5.0e-3
    # on these deliberately large random weights (std 0.15, random norm gains).
    "llama-recompute-bf16": (["--shape", "tiny"], 0.0, "f32", 1.5e-2, True, True),
    # The dense MLP's backward recomputed in chunks of 5 of the 24 rows (the last one shorter).
    "llama-recompute-chunked": (["--shape", "tiny"], 0.0, "f32", 3e-5, True, False, {"mlp_chunk_rows": 5}),
    "llama-bf16": (["--shape", "tiny"], 0.0, "bf16", 2e-2),
    "mixtral-bf16": (["--shape", "tiny-mixtral"], 0.02, "bf16", 2e-2),
}


def reference_loss(cfg, w, batch, aux_coef):
    B, T = batch["B"], batch["T"]
    toks = torch.tensor(batch["tokens"]).view(B, T)
    tg = torch.tensor(batch["targets"]).view(B, T)
    wt = torch.tensor(batch["weights"]).view(B, T)
    router_log = []
    ce_sum = torch.zeros(())
    for b in range(B):
        logits = reference_model.forward(cfg, w, toks[b].tolist(), router_log)
        logp = F.log_softmax(logits, dim=-1)
        keep = tg[b] >= 0
        ce_sum = ce_sum - (wt[b][keep] * logp[keep, tg[b][keep]]).sum()
    loss = ce_sum / wt[tg >= 0].sum()
    aux = torch.zeros(())
    if cfg["model_type"] == "mixtral":
        aux = reference_model.load_balancing_loss(router_log, cfg["num_local_experts"], cfg["num_experts_per_tok"])
    return loss, aux


def run_case(report, lamina, probe, name, tmp):
    init_args, aux_coef, *rest = CASES[name]
    defaults = ["f32", 3e-5, False, False, {}]
    precision, tol, recompute, recompute_bf16, extra = list(rest) + defaults[len(rest):]
    d = os.path.join(tmp, name)
    subprocess.run([lamina, "init", "--out", d, "--std", "0.15", "--random-norms", "--seed", "11"] + init_args,
                   check=True, stdout=subprocess.DEVNULL)
    cfg, w = reference_model.load_model_dir(d)
    rng = np.random.default_rng(3)
    B, T = 2, 12
    tokens = rng.integers(0, cfg["vocab_size"], size=B * T).tolist()
    targets = rng.integers(0, cfg["vocab_size"], size=B * T)
    targets[[0, 5, 17]] = -1  # unscored rows
    weights = rng.uniform(0.1, 1.0, size=B * T).round(3)
    batch = {"B": B, "T": T, "tokens": tokens, "targets": targets.tolist(), "weights": weights.tolist(), "aux_coef": aux_coef,
             "precision": precision, "recompute": recompute, "recompute_bf16": recompute_bf16, **extra}
    bf = os.path.join(tmp, name + ".batch.json")
    json.dump(batch, open(bf, "w"))
    prefix = os.path.join(tmp, name)
    subprocess.run([probe, d, bf, prefix], check=True)
    got = np.load(prefix + ".grads.npy")
    meta = json.load(open(prefix + ".json"))
    params = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    # bf16: the reference rounds the same operands lamina rounds (forward products; router F32), so
    # routing decisions agree; the remaining difference is the backward products' bf16 rounding.
    reference_model.ROUND_ACTIVATIONS_BF16 = reference_model.ROUTER_F32 = precision == "bf16"
    loss, aux = reference_loss(cfg, params, batch, aux_coef)
    reference_model.ROUND_ACTIVATIONS_BF16 = reference_model.ROUTER_F32 = False
    (loss + aux_coef * aux).backward()
    ltol = 1e-5 if precision == "f32" else 1e-3
    ok_loss = abs(meta["loss"] - loss.item()) < ltol and abs(meta["aux_loss"] - aux.item()) < ltol
    report.check(f"{name}: loss {meta['loss']:.6f} vs {loss.item():.6f}, aux {meta['aux_loss']:.6f} vs {aux.item():.6f}", ok_loss)
    worst, worst_name = 0.0, ""
    for t in meta["tensors"]:
        g = got[t["offset"] : t["offset"] + t["numel"]]
        ref = params[t["name"]].grad
        ref = np.zeros(t["numel"], np.float32) if ref is None else ref.reshape(-1).numpy()
        denom = max(np.linalg.norm(ref), 1e-6)
        rel = np.linalg.norm(g - ref) / denom
        if rel > worst:
            worst, worst_name = rel, t["name"]
    report.check(f"{name}: every gradient (worst relative error {worst:.2e} in {worst_name}, tol {tol:g})", worst <= tol)
    return worst


def check_adamw(report, lamina, probe, tmp):
    """Three full training steps (clip + AdamW with weight decay on matrices only) against
    torch.optim.AdamW with the same two parameter groups and clip_grad_norm_."""
    d = os.path.join(tmp, "llama")
    cfg, w = reference_model.load_model_dir(d)
    batch = json.load(open(os.path.join(tmp, "llama.batch.json")))
    batch["precision"] = "f32"
    hp = {"lr": 1e-2, "beta1": 0.9, "beta2": 0.95, "eps": 1e-5, "weight_decay": 0.1, "clip": 0.5, "steps": 3}
    batch["adamw"] = hp
    bf = os.path.join(tmp, "adamw.batch.json")
    json.dump(batch, open(bf, "w"))
    prefix = os.path.join(tmp, "adamw")
    subprocess.run([probe, d, bf, prefix], check=True)
    got = np.load(prefix + ".params.npy")
    meta = json.load(open(prefix + ".json"))
    params = {k: v.clone().requires_grad_(True) for k, v in w.items()}
    names = [t["name"] for t in meta["tensors"]]
    decay = [params[n] for n in names if params[n].dim() >= 2]
    no_decay = [params[n] for n in names if params[n].dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": hp["weight_decay"]}, {"params": no_decay, "weight_decay": 0.0}],
                            lr=hp["lr"], betas=(hp["beta1"], hp["beta2"]), eps=hp["eps"])
    norms = []
    for _ in range(hp["steps"]):
        opt.zero_grad()
        loss, _ = reference_loss(cfg, params, batch, 0.0)
        loss.backward()
        norms.append(torch.nn.utils.clip_grad_norm_(list(params.values()), hp["clip"]).item())
        opt.step()
    worst = 0.0
    for t in meta["tensors"]:
        mine = got[t["offset"] : t["offset"] + t["numel"]]
        ref = params[t["name"]].detach().reshape(-1).numpy()
        worst = max(worst, np.abs(mine - ref).max())
    norm_err = max(abs(a - b) / b for a, b in zip(meta["grad_norms"], norms))
    report.check(f"3 steps of clip + AdamW match torch.optim.AdamW (max param diff {worst:.2e}, grad-norm rel err {norm_err:.1e})",
                 worst < 5e-5 and norm_err < 1e-4)  # updates total ~3e-2 per parameter


def lora_reference_loss(cfg, w, batch, aux_coef, lora, r, alpha):
    """Loss and aux loss of the reference model with lamina's adapters (name -> (tensor, meta))
    bound as PEFT's LoRA Linear; loss + aux_coef * aux is backpropagated into the adapters."""
    reference_model.LORA = {}
    for name, (val, t) in lora.items():
        if name.endswith("lora_A.weight"):
            stem = name[len("base_model.model."):-len(".lora_A.weight")]
            Bv, _ = lora[name.replace("lora_A", "lora_B")]
            reference_model.LORA[stem] = (val.view(r, -1), Bv.view(-1, r), alpha / r)
    loss, aux = reference_loss(cfg, w, batch, aux_coef)
    (loss + aux_coef * aux).backward()
    reference_model.LORA = {}
    return loss, aux


def worst_lora_error(lora, grads):
    """The largest relative error of lamina's adapter gradients against autograd's."""
    worst = 0.0
    for name, (val, t) in lora.items():
        g = grads[t["offset"] : t["offset"] + t["numel"]]
        ref = val.grad.numpy()
        worst = max(worst, np.linalg.norm(g - ref) / max(np.linalg.norm(ref), 1e-6))
    return worst


def check_lora(report, lamina, probe, tmp):
    """LoRA on all seven projections of a llama: adapter gradients against autograd over the
    reference with PEFT's LoRA Linear; then the saved adapter's names/config are PEFT's, and
    lamina merge-lora gives the logits of base + adapter."""
    d = os.path.join(tmp, "llama")
    cfg, w = reference_model.load_model_dir(d)
    batch = json.load(open(os.path.join(tmp, "llama.batch.json")))
    batch["precision"] = "f32"
    adapter = os.path.join(tmp, "adapter")
    os.makedirs(adapter, exist_ok=True)
    r, alpha = 4, 8.0
    targets = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    batch["lora"] = {"r": r, "alpha": alpha, "targets": targets, "b_std": 0.2, "save": adapter}
    bf = os.path.join(tmp, "lora.batch.json")
    json.dump(batch, open(bf, "w"))
    prefix = os.path.join(tmp, "lora")
    subprocess.run([probe, d, bf, prefix], check=True)
    grads, params_flat = np.load(prefix + ".grads.npy"), np.load(prefix + ".params.npy")
    meta = json.load(open(prefix + ".json"))
    lora = {}
    for t in meta["tensors"]:
        if t["name"].startswith("base_model.model."):
            lora[t["name"]] = (torch.from_numpy(params_flat[t["offset"] : t["offset"] + t["numel"]].copy()).requires_grad_(True), t)
    lora_reference_loss(cfg, w, batch, 0.0, lora, r, alpha)
    worst = worst_lora_error(lora, grads)
    report.check(f"LoRA (r {r}, 7 projections): adapter gradients match autograd (worst relative error {worst:.2e})",
                 len(lora) == 2 * 7 * cfg["num_hidden_layers"] and worst <= 3e-5)  # measured 2.4e-6
    # PEFT's format.
    acfg = json.load(open(os.path.join(adapter, "adapter_config.json")))
    names = set(reference_model.read_safetensors(os.path.join(adapter, "adapter_model.safetensors")))
    want_keys = {"peft_type", "task_type", "r", "lora_alpha", "lora_dropout", "target_modules", "bias",
                 "base_model_name_or_path", "fan_in_fan_out", "inference_mode"}
    report.check("adapter_config.json and tensor names are PEFT's",
                 want_keys <= set(acfg) and acfg["peft_type"] == "LORA" and acfg["r"] == r
                 and "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight" in names
                 and "base_model.model.model.layers.1.mlp.down_proj.lora_B.weight" in names and len(names) == len(lora))
    # merge-lora == base + adapter.
    merged = os.path.join(tmp, "merged")
    subprocess.run([lamina, "merge-lora", "--model", d, "--adapter", adapter, "--out", merged], check=True, stdout=subprocess.DEVNULL)
    ids = batch["tokens"][:12]
    out = os.path.join(tmp, "merged.npy")
    subprocess.run([lamina, "score", "--model", merged, "--ids", ",".join(map(str, ids)), "--dump-logits", out], check=True,
                   stdout=subprocess.DEVNULL)
    ad = reference_model.read_safetensors(os.path.join(adapter, "adapter_model.safetensors"))
    reference_model.LORA = {n[len("base_model.model."):-len(".lora_A.weight")]:
                            (ad[n], ad[n.replace("lora_A", "lora_B")], alpha / r) for n in ad if n.endswith("lora_A.weight")}
    with torch.no_grad():
        want = reference_model.forward(cfg, w, ids).numpy()
    reference_model.LORA = {}
    err = np.abs(np.load(out) - want).max()
    report.check(f"merge-lora gives the logits of base + adapter (max err {err:.1e})", err < 1e-4)


NF4_OFFSETS = {}  # tensor name -> the absmax mean lamina used (see check_nf4_bytes)


def check_nf4_bytes(report, prefix, w):
    """Every NF4 tensor lamina keeps equals bitsandbytes' quantize_4bit(nf4, blocksize 64,
    compress_statistics) byte for byte (the numpy port tests/reference/bnb_nf4_ref.py): packed
    nibbles, absmax codes, nested scales. The one free value is the absmax mean, whose last bit
    depends on torch's reduction order: lamina's is checked within 2 ulp of the port's, then used."""
    import bnb_nf4_ref  # noqa: E402
    bad, n, worst_ulp = [], 0, 0
    for name, t in w.items():
        path = prefix + ".stored." + name
        if not os.path.exists(path):
            continue
        raw = open(path, "rb").read()
        x = t.numpy().astype(np.float32)
        m = x.size
        nb, nn = m // 64, -(-(m // 64) // 256)
        codes_at = m // 2
        scales_at = (codes_at + nb + 3) // 4 * 4
        mean = np.frombuffer(raw[scales_at + 4 * nn:scales_at + 4 * nn + 4], np.float32)[0]
        ref_mean = bnb_nf4_ref.torch_mean_f32(np.abs(x.reshape(-1, 64)).max(axis=1).astype(np.float32))
        worst_ulp = max(worst_ulp, abs(int(np.float32(mean).view(np.int32)) - int(np.float32(ref_mean).view(np.int32))))
        NF4_OFFSETS[name] = mean
        st = bnb_nf4_ref.quantize_nf4(x, offset=mean)
        want = (st["packed"].tobytes() + st["absmax_q"].tobytes() + bytes(scales_at - codes_at - nb)
                + st["nested_absmax"].astype(np.float32).tobytes() + np.float32(mean).tobytes())
        n += 1
        if raw != want:
            bad.append(name)
    report.check(f"NF4: {n} tensors byte for byte bitsandbytes' quantize_4bit (nf4, double quantisation; mean within "
                 f"{worst_ulp} ulp of torch's)", n > 0 and not bad and worst_ulp <= 2, str(bad[:3]))


def frozen_base_weights(w, base_dtype):
    """The base as --base-dtype keeps it, widened back to F32: bf16 rounding, or ggml's Q8_0 / Q4_0
    blocks (numpy ports of ggml's reference quantizers, tests/reference/test_gguf.py). Norms and
    MoE routers stay F32, as do matrices whose rows are not whole blocks."""
    import test_gguf  # noqa: E402
    out = {}
    for name, t in w.items():
        if t.dim() < 2 or name.endswith("block_sparse_moe.gate.weight"):
            out[name] = t
        elif base_dtype == "f32":
            out[name] = t
        elif base_dtype == "bf16":
            out[name] = t.to(torch.bfloat16).float()
        elif base_dtype == "nf4":
            # QLoRA: the decoder's Linear layers only; embedding and LM head stay as stored.
            if not name.startswith("model.layers.") or t.shape[-1] % 64:  # (rows of whole blocks)
                out[name] = t
            else:
                import bnb_nf4_ref  # noqa: E402
                st = bnb_nf4_ref.quantize_nf4(t.numpy(), offset=NF4_OFFSETS.get(name))
                out[name] = torch.tensor(bnb_nf4_ref.dequantize_nf4(st).copy())
        elif t.shape[-1] % 32 == 0:
            tn = base_dtype.upper()
            raw = test_gguf.quant_ref(t.numpy(), tn)
            out[name] = torch.tensor(test_gguf.dequant(list(reversed(t.shape)), tn, raw).copy())
        else:
            out[name] = t
    return out


def run_lora_probe(probe, tmp, model, tag, targets, extra):
    """One LoRA step of the train probe on `model` (r 4, alpha 8, random B) with batch fields
    `extra` added; returns the reference config and weights, the batch and the probe's outputs."""
    d = os.path.join(tmp, model)
    cfg, w = reference_model.load_model_dir(d)
    batch = json.load(open(os.path.join(tmp, model + ".batch.json")))
    batch["precision"] = "f32"
    batch["lora"] = {"r": 4, "alpha": 8.0, "targets": targets, "b_std": 0.2}
    batch.update(extra)
    bf = os.path.join(tmp, f"{model}-{tag}.batch.json")
    json.dump(batch, open(bf, "w"))
    prefix = os.path.join(tmp, f"{model}-{tag}")
    subprocess.run([probe, d, bf, prefix], check=True)
    outs = np.load(prefix + ".grads.npy"), np.load(prefix + ".params.npy"), json.load(open(prefix + ".json"))
    return cfg, w, batch, prefix, outs


def check_lora_frozen_base(report, probe, tmp, model, base_dtype, targets, fields=None):
    """LoRA over a frozen base kept as bf16 / q8_0 / q4_0 blocks (never an F32 copy): the adapters'
    gradients equal autograd over the reference model whose base weights are the dequantized ones
    (F32 products over the widened weights, so the F32 bound applies). fields: more batch fields
    (recomputation settings)."""
    extra = {"dump_stored": base_dtype == "nf4", **(fields or {})}
    if base_dtype != "f32":
        extra["base_dtype"] = base_dtype
    tag = base_dtype + ("-" + "-".join(f"{k}{v}" for k, v in fields.items()) if fields else "")
    cfg, w, batch, prefix, (grads, params_flat, meta) = run_lora_probe(probe, tmp, model, tag, targets, extra)
    aux_coef, r, alpha = batch["aux_coef"], 4, 8.0
    if base_dtype == "nf4":
        check_nf4_bytes(report, prefix, w)
    # Every matrix (all of them have whole-block rows here) is kept outside the F32 buffer.
    outside = [t["name"] for t in meta["tensors"] if t["offset"] < 0]
    want_outside = [n for n, t in w.items() if t.dim() >= 2 and not n.endswith("block_sparse_moe.gate.weight")
                    and base_dtype != "f32" and (base_dtype != "nf4" or (n.startswith("model.layers.") and t.shape[-1] % 64 == 0))]
    lora = {}
    for t in meta["tensors"]:
        if t["name"].startswith("base_model.model."):
            lora[t["name"]] = (torch.from_numpy(params_flat[t["offset"] : t["offset"] + t["numel"]].copy()).requires_grad_(True), t)
    loss, aux = lora_reference_loss(cfg, frozen_base_weights(w, base_dtype), batch, aux_coef, lora, r, alpha)
    worst = worst_lora_error(lora, grads)
    ok = sorted(outside) == sorted(want_outside) and abs(meta["loss"] - loss.item()) < 1e-5
    per_layer = sum(cfg.get("num_local_experts", 1) if t in ("w1", "w2", "w3") else 1 for t in targets)
    n_adapters = 2 * per_layer * cfg["num_hidden_layers"]
    report.check(f"LoRA on {','.join(t.replace('_proj', '') for t in targets)} over a frozen {base_dtype} base "
                 f"({model}, {len(outside)} matrices kept {base_dtype}{', ' + tag if fields else ''}): loss "
                 f"{meta['loss']:.6f} vs {loss.item():.6f}, adapter gradients worst relative error {worst:.2e}",
                 ok and len(lora) == n_adapters and worst <= 3e-5)


def check_lora_dropout_recompute(report, probe, tmp, targets):
    """LoRA dropout draws the same masks when the layer is recomputed and its MLP backward runs in
    row chunks (the mask is keyed by the element's index in the whole tensor): the adapters'
    gradients equal those of the plain step, and differ from the step without dropout."""
    runs = {}
    for tag, fields in {"drop": {"lora_dropout": 0.3}, "drop-chunked": {"lora_dropout": 0.3, "recompute": True, "mlp_chunk_rows": 5},
                        "nodrop": {}}.items():
        _, _, _, _, (grads, _, meta) = run_lora_probe(probe, tmp, "llama-tied-gqa4", "q4_0-" + tag, targets,
                                                      {"base_dtype": "q4_0", **fields})
        idx = np.concatenate([np.arange(t["offset"], t["offset"] + t["numel"]) for t in meta["tensors"] if t["offset"] >= 0])
        runs[tag] = (grads[idx], meta["loss"])
    rel = lambda a, b: float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-12))
    same, moved = rel(runs["drop-chunked"][0], runs["drop"][0]), rel(runs["nodrop"][0], runs["drop"][0])
    report.check(f"LoRA dropout under recomputation with MLP chunks: same gradients as without ({same:.1e}), "
                 f"dropout moves them ({moved:.2f})", same < 1e-6 and moved > 1e-2 and abs(runs["drop"][1] - runs["drop-chunked"][1]) < 1e-6)


def check_lora_gguf_base(report, lamina, probe, tmp, model, outtype, targets):
    """LoRA over a GGUF file (lamina export-gguf, llama.cpp's layout: permuted Q/K rows, stacked
    experts) as the frozen base, its blocks used as stored: the adapters' gradients equal autograd
    over the reference whose base weights are the file's, dequantized (numpy ports of ggml's
    quantizers applied to the HF weights)."""
    import test_gguf  # noqa: E402
    d = os.path.join(tmp, model)
    gguf = os.path.join(tmp, f"{model}-{outtype}.gguf")
    subprocess.run([lamina, "export-gguf", "--model", d, "--out", gguf, "--outtype", outtype], check=True,
                   stdout=subprocess.DEVNULL)
    cfg, w, batch, prefix, (grads, params_flat, meta) = run_lora_probe(probe, tmp, model, f"gguf-{outtype}", targets,
                                                                        {"gguf": gguf})
    aux_coef, r, alpha = batch["aux_coef"], 4, 8.0
    base, lora, types = {}, {}, set()
    for t in meta["tensors"]:
        name = t["name"]
        if name.startswith("base_model.model."):
            lora[name] = (torch.from_numpy(params_flat[t["offset"] : t["offset"] + t["numel"]].copy()).requires_grad_(True), t)
        elif t["offset"] >= 0:  # norms, router: the file's values in F32
            base[name] = torch.from_numpy(params_flat[t["offset"] : t["offset"] + t["numel"]].copy()).view(w[name].shape)
        else:
            types.add(t["dtype"])
            x = w[name]
            if t["dtype"] in ("Q8_0", "Q4_0"):
                raw = test_gguf.quant_ref(x.numpy(), t["dtype"])
                base[name] = torch.tensor(test_gguf.dequant(list(reversed(x.shape)), t["dtype"], raw).copy())
            elif t["dtype"] == "F16":
                base[name] = x.half().float()
            else:
                base[name] = x
    if "lm_head.weight" not in base and "lm_head.weight" in w:
        base["lm_head.weight"] = base["model.embed_tokens.weight"]
    loss, aux = lora_reference_loss(cfg, base, batch, aux_coef, lora, r, alpha)
    worst = worst_lora_error(lora, grads)
    report.check(f"LoRA over a {outtype} GGUF file as the base ({model}; file types {sorted(types)}): loss {meta['loss']:.6f} "
                 f"vs {loss.item():.6f}, adapter gradients worst relative error {worst:.2e}",
                 abs(meta["loss"] - loss.item()) < 1e-5 and len(lora) > 0 and worst <= 3e-5 and outtype.upper() in types)


def main():
    lamina, probe = os.path.abspath(sys.argv[1]), os.path.abspath(sys.argv[2])
    torch.manual_seed(0)
    report = Report()
    with tempfile.TemporaryDirectory() as tmp:
        worst = {name: run_case(report, lamina, probe, name, tmp) for name in CASES}
        # The bf16 inputs are really used: the rerun from rounded inputs moves the gradients by far
        # more than F32 recomputation does (which matches autograd to ~1e-6).
        report.check(f"--recompute-dtype bf16 reruns layers from rounded inputs ({worst['llama-recompute-bf16']:.2e} "
                     f"vs {worst['llama-recompute']:.2e} in F32)",
                     worst["llama-recompute-bf16"] > 100 * worst["llama-recompute"])
        check_adamw(report, lamina, probe, tmp)
        check_lora(report, lamina, probe, tmp)
        all7 = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        for base_dtype in ["bf16", "q8_0", "q4_0", "nf4"]:
            check_lora_frozen_base(report, probe, tmp, "llama-tied-gqa4", base_dtype, all7)
        # Recomputation with the dense MLP's backward in chunks of 5 rows over a q4_0 base.
        chunked = {"recompute": True, "mlp_chunk_rows": 5}
        check_lora_frozen_base(report, probe, tmp, "llama-tied-gqa4", "q4_0", all7, chunked)
        check_lora_dropout_recompute(report, probe, tmp, all7)
        # Mixtral: LoRA on the experts (PEFT's w1, w2, w3) too, router frozen, aux loss added.
        moe_targets = ["q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3"]
        for base_dtype in ["f32", "q4_0", "nf4"]:
            check_lora_frozen_base(report, probe, tmp, "mixtral-aux", base_dtype, moe_targets)
        # A checkpoint stored in bf16: the frozen base is the mapped file itself (views whose pages
        # are released after each layer's pass and faulted back in the next one).
        b16 = os.path.join(tmp, "llama-bf16-stored")
        subprocess.run([lamina, "init", "--out", b16, "--std", "0.15", "--random-norms", "--seed", "11", "--shape", "tiny",
                        "--dtype", "bf16"], check=True, stdout=subprocess.DEVNULL)
        shutil.copy(os.path.join(tmp, "llama.batch.json"), os.path.join(tmp, "llama-bf16-stored.batch.json"))
        check_lora_frozen_base(report, probe, tmp, "llama-bf16-stored", "bf16", all7)
        # NF4 bytes on wider matrices: thousands of blocks, several nested groups of 256.
        wide = os.path.join(tmp, "llama-wide")
        subprocess.run([lamina, "init", "--out", wide, "--shape", "tiny", "--hidden", "256", "--intermediate", "1024",
                        "--std", "0.05", "--seed", "4"], check=True, stdout=subprocess.DEVNULL)
        wb = json.load(open(os.path.join(tmp, "llama.batch.json")))
        wb.update({"precision": "f32", "base_dtype": "nf4", "dump_stored": True,
                   "lora": {"r": 2, "alpha": 4.0, "targets": ["q_proj"], "b_std": 0.1}})
        json.dump(wb, open(os.path.join(tmp, "wide.batch.json"), "w"))
        subprocess.run([probe, wide, os.path.join(tmp, "wide.batch.json"), os.path.join(tmp, "wide")], check=True)
        check_nf4_bytes(report, os.path.join(tmp, "wide"), reference_model.load_model_dir(wide)[1])
        check_lora_gguf_base(report, lamina, probe, tmp, "llama-tied-gqa4", "q4_0", all7)
        check_lora_gguf_base(report, lamina, probe, tmp, "llama", "q8_0", all7)
        check_lora_gguf_base(report, lamina, probe, tmp, "mixtral-aux", "q4_0", moe_targets)
    report.finish()


if __name__ == "__main__":
    main()
