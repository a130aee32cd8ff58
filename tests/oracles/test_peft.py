"""LoRA adapters against PEFT itself (and transformers' models of the bases).

(a) Adapters lamina trains (`lamina sft --lora-r`, B != 0) load with peft.PeftModel.from_pretrained
    over transformers' model of the base and give the logits lamina gives for the merged model;
    PEFT's merge_and_unload() weights equal lamina merge-lora's. Dense LLaMA (q, v; all with
    rslora) and tiny Mixtral with the experts as targets (PEFT's w1, w2, w3).
(b) Adapters PEFT writes (get_peft_model with r, lora_alpha, use_rslora, rank_pattern,
    alpha_pattern; random nonzero A and B; save_pretrained) merge in lamina merge-lora to the
    weights PEFT's merge_and_unload() gives.

usage: test_peft.py LAMINA        prints 'N passed, M failed'
"""
import json
import os
import sys
import tempfile

import numpy as np
import torch

from oracle_common import Report, f32_tensors, hf_model, runner, tool_versions, write_jsonl

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]))
run_quiet = runner(os.path.abspath(sys.argv[1]), echo_failures=False)



def merged_weights(model):
    """PEFT's merge_and_unload() state dict as float32 arrays under the checkpoint's names."""
    return {k: v.detach().float().numpy() for k, v in model.state_dict().items()}


def load_merged(d):
    """lamina's merged directory as arrays (one safetensors file: the tiny models are small)."""
    return f32_tensors(os.path.join(d, "model.safetensors"))


def fuse_experts(sd, lm):
    """transformers v5 Mixtral stacks the experts: lamina's split w1/w2/w3 (and router name) as
    the fused tensors in PEFT's merged state dict sd, added to lm for the comparison."""
    for n in [n for n in sd if n not in lm]:
        if n.endswith("experts.gate_up_proj"):
            pre = n[: -len("mlp.experts.gate_up_proj")] + "block_sparse_moe.experts."
            E = sd[n].shape[0]
            lm[n] = np.stack([np.concatenate([lm[f"{pre}{e}.w1.weight"], lm[f"{pre}{e}.w3.weight"]]) for e in range(E)])
        elif n.endswith("experts.down_proj"):
            pre = n[: -len("mlp.experts.down_proj")] + "block_sparse_moe.experts."
            lm[n] = np.stack([lm[f"{pre}{e}.w2.weight"] for e in range(sd[n].shape[0])])
        elif n.endswith("mlp.gate.weight"):
            lm[n] = lm[n.replace("mlp.gate.weight", "block_sparse_moe.gate.weight")]


def max_weight_err(peft_sd, lamina_sd, names):
    return max(float(np.abs(peft_sd[n] - lamina_sd[n]).max()) for n in names)


def lamina_logits(model_dir, ids, tmp):
    out = os.path.join(tmp, "logits.npy")
    p = run("score", "--model", model_dir, "--ids", ",".join(map(str, ids)), "--no-bos", "--dump-logits", out)
    assert p.returncode == 0, p.stderr
    return np.load(out)


def peft_logits(model, ids):
    with torch.no_grad():
        return model(torch.tensor([ids])).logits[0].float().numpy()


def lamina_adapter_case(tmp, name, base, data, lora_args, expect_modules, expect_ranks=None):
    """Train an adapter with lamina, load it with PEFT, compare logits and merged weights.
    expect_ranks: {module path under model.layers.: rank} the adapter must have."""
    from peft import PeftModel

    out = os.path.join(tmp, name)
    p = run("sft", "--model", base, "--data", data, "--out", out, "--seq-len", "48", "--batch-size", "4",
            "--max-steps", "4", "--lr", "2e-2", "--val-fraction", "0", *lora_args)
    if not check(f"{name}: lamina sft --lora-r trains an adapter", p.returncode == 0, p.stderr[-300:]):
        return
    ad = os.path.join(out, "checkpoint-4")
    tensors = f32_tensors(os.path.join(ad, "adapter_model.safetensors"))
    bmax = max(float(np.abs(v).max()) for k, v in tensors.items() if "lora_B" in k)
    check(f"{name}: the adapter learnt (max |B| > 0)", bmax > 1e-4, f"max |B| {bmax:.3g}")
    modules = {k.split(".lora_")[0].rsplit(".", 1)[-1] for k in tensors}
    check(f"{name}: adapted modules {sorted(expect_modules)}", modules == set(expect_modules), str(sorted(modules)))
    if expect_ranks:
        ranks = {k.split("model.layers.")[1].split(".lora_A")[0]: v.shape[0] for k, v in tensors.items() if "lora_A" in k}
        bad = {k: (ranks.get(k), r) for k, r in expect_ranks.items() if ranks.get(k) != r}
        check(f"{name}: per-module ranks from --lora-rank-pattern", not bad, f"(got, expected) {bad}" if bad else
              str(sorted(set(ranks.values()))))

    merged = os.path.join(tmp, name + "-merged")
    p = run("merge-lora", "--model", base, "--adapter", ad, "--out", merged)
    if not check(f"{name}: lamina merge-lora", p.returncode == 0, p.stderr[-300:]):
        return
    pm = PeftModel.from_pretrained(hf_model(base), ad, is_trainable=False).eval()
    ids = [1, 17, 42, 99, 7, 250, 3, 64, 128, 5, 311, 77]
    ref = peft_logits(pm, ids)
    got = lamina_logits(merged, ids, tmp)
    err = float(np.abs(ref - got).max())
    check(f"{name}: PEFT's logits (base + adapter) = lamina's (merged)", err < 2e-4, f"max |diff| {err:.2e}")
    plain = peft_logits(hf_model(base), ids)
    moved = float(np.abs(ref - plain).max())
    check(f"{name}: the adapter changes the logits", moved > 100 * max(err, 1e-6), f"max |adapter effect| {moved:.3g}")
    # PEFT's merge_and_unload() against lamina merge-lora, tensor by tensor.
    sd = merged_weights(pm.merge_and_unload())
    lm = load_merged(merged)
    fuse_experts(sd, lm)
    missing = [n for n in sd if n not in lm]
    werr = max_weight_err(sd, lm, [n for n in sd if n in lm])
    check(f"{name}: PEFT merge_and_unload() weights = lamina merge-lora's", not missing and werr < 1e-5,
          f"max |diff| {werr:.2e}" + (f", unmatched {missing[:3]}" if missing else ""))


def peft_adapter_case(tmp, name, base, cfg_kwargs, seed):
    """An adapter PEFT writes (random nonzero A and B) merged by lamina vs PEFT's merge."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(seed)
    pm = get_peft_model(hf_model(base), LoraConfig(task_type="CAUSAL_LM", **cfg_kwargs))
    with torch.no_grad():
        for n, prm in pm.named_parameters():
            if "lora_" in n:
                prm.copy_(torch.randn_like(prm) * 0.05)
    ad = os.path.join(tmp, name)
    pm.save_pretrained(ad)
    shapes = {}
    for n, prm in pm.named_parameters():
        if "lora_A" in n:
            shapes[n.split(".lora_A")[0].split("model.layers.")[1]] = prm.shape[0]
    # The reference: PEFT loading the directory it wrote, then merging.
    from peft import PeftModel

    sd = merged_weights(PeftModel.from_pretrained(hf_model(base), ad).merge_and_unload())
    merged = os.path.join(tmp, name + "-merged")
    p = run("merge-lora", "--model", base, "--adapter", ad, "--out", merged)
    if not check(f"{name}: lamina merge-lora reads PEFT's adapter", p.returncode == 0, p.stderr.strip()[-300:]):
        return
    lm = load_merged(merged)
    fuse_experts(sd, lm)
    werr = max_weight_err(sd, lm, list(sd))
    b0 = f32_tensors(os.path.join(base, "model.safetensors"))
    fuse_experts(sd, b0)
    delta = max(float(np.abs(sd[n] - b0[n]).max()) for n in sd)
    check(f"{name}: lamina merge-lora = PEFT merge_and_unload()", werr < 1e-5 and delta > 1e-3,
          f"max |diff| {werr:.2e} (largest merged delta {delta:.3g}; ranks {sorted(set(shapes.values()))})")


def resized_vocab_case(tmp, data):
    """sft --lora-r on a base without OpenChat's <|end_of_turn|>: the token is added (vocabulary
    512 -> 513); the adapter carries the grown embedding and LM head as PEFT saves them, loads in
    PEFT over the base resized as TRL users do (resize_token_embeddings), and merge-lora writes a
    complete chat model (tokenizer with the token, chat template, EOS) that generate --chat runs."""
    from peft import PeftModel
    from transformers import AutoTokenizer

    base = os.path.join(tmp, "plain")
    run("init", "--out", base, "--seed", "7")
    out = os.path.join(tmp, "grown")
    p = run("sft", "--model", base, "--data", data, "--out", out, "--seq-len", "48", "--batch-size", "4",
            "--max-steps", "4", "--lr", "2e-2", "--val-fraction", "0", "--lora-r", "4", "--template", "openchat")
    if not check("grown: sft --lora-r adds <|end_of_turn|>", p.returncode == 0 and "added tokens 1" in p.stderr,
                 p.stderr.strip()[-200:]):
        return
    ad = os.path.join(out, "checkpoint-4")
    t = f32_tensors(os.path.join(ad, "adapter_model.safetensors"))
    emb, head = t.get("base_model.model.model.embed_tokens.weight"), t.get("base_model.model.lm_head.weight")
    check("grown: the adapter holds the resized embedding and LM head (PEFT's names)",
          emb is not None and head is not None and emb.shape[0] == head.shape[0] == 513, str(None if emb is None else emb.shape))
    atok = AutoTokenizer.from_pretrained(ad, local_files_only=True)
    eot = atok.convert_tokens_to_ids("<|end_of_turn|>")
    check("grown: the adapter's tokenizer (saved next to it) has the token and the chat template",
          eot == 512 and bool(atok.chat_template), f"id {eot}")
    # PEFT over the base resized to the tokenizer, as TRL/PEFT users load it.
    hb = hf_model(base)
    hb.resize_token_embeddings(len(atok))
    pm = PeftModel.from_pretrained(hb, ad).eval()
    merged = os.path.join(tmp, "grown-merged")
    p = run("merge-lora", "--model", base, "--adapter", ad, "--out", merged)
    if not check("grown: merge-lora", p.returncode == 0, p.stderr.strip()[-300:]):
        return
    enc = atok.apply_chat_template([{"role": "user", "content": "3+4="}], add_generation_prompt=True)
    ids = list(enc["input_ids"] if hasattr(enc, "keys") else enc) + [eot, 17, eot]
    ref = peft_logits(pm, ids)
    got = lamina_logits(merged, ids, tmp)
    err = float(np.abs(ref - got).max())
    check("grown: PEFT's logits (resized base + adapter) = lamina's merged model's, the new token included",
          ref.shape == got.shape and ref.shape[1] == 513 and err < 2e-4, f"max |diff| {err:.2e}, shape {got.shape}")
    sd = merged_weights(pm.merge_and_unload())
    lm = load_merged(merged)
    werr = max_weight_err(sd, lm, list(sd))
    check("grown: PEFT merge_and_unload() weights = lamina merge-lora's (513 rows)", werr < 1e-5, f"max |diff| {werr:.2e}")
    # The merged directory is a complete chat model, for transformers and for lamina.
    mtok = AutoTokenizer.from_pretrained(merged, local_files_only=True)
    mcfg = json.load(open(os.path.join(merged, "config.json")))
    gen = json.load(open(os.path.join(merged, "generation_config.json")))
    eos = gen["eos_token_id"] if isinstance(gen["eos_token_id"], list) else [gen["eos_token_id"]]
    check("grown: merged model has the token, the chat template, vocab_size 513 and EOS <|end_of_turn|>",
          mtok.convert_tokens_to_ids("<|end_of_turn|>") == 512 and bool(mtok.chat_template) and mcfg["vocab_size"] == 513
          and 512 in eos, f"eos {eos}, vocab {mcfg['vocab_size']}")
    p = run("generate", "--model", merged, "--chat", "--prompt", "3+4=", "--max-new-tokens", "4")
    check("grown: lamina generate --chat runs on the merged model", p.returncode == 0, p.stderr.strip()[-200:])
    # An adapter without the grown rows (as lamina wrote them before) next to a 513-token
    # tokenizer: merge-lora says so instead of writing a model its tokenizer overruns.
    import shutil
    from safetensors.numpy import save_file

    old = os.path.join(tmp, "grown-old")
    shutil.copytree(ad, old)
    save_file({k: v for k, v in t.items() if "lora_" in k}, os.path.join(old, "adapter_model.safetensors"))
    p = run_quiet("merge-lora", "--model", base, "--adapter", old, "--out", os.path.join(tmp, "grown-old-merged"))
    check("grown: an adapter lacking the resized rows is an error naming them", p.returncode == 1
          and "embed_tokens" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr.strip()[:200])


def main():
    print(tool_versions("torch", "transformers", "peft"))
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "chat.jsonl")
        rows = [{"messages": [{"role": "user", "content": f"{a}+{b}="}, {"role": "assistant", "content": str(a + b)}]}
                for a in range(8) for b in range(4)]
        write_jsonl(data, rows)
        dense = os.path.join(tmp, "dense")
        run("init", "--out", dense, "--seed", "5", "--add-tokens", "<|end_of_turn|>", "--chat-template", "openchat")
        moe = os.path.join(tmp, "moe")
        run("init", "--out", moe, "--seed", "6", "--shape", "tiny-mixtral", "--add-tokens", "<|end_of_turn|>",
            "--chat-template", "openchat")

        # (a) lamina's adapters in PEFT.
        lamina_adapter_case(tmp, "dense-qv", dense, data, ["--lora-r", "4", "--lora-alpha", "8"], {"q_proj", "v_proj"})
        lamina_adapter_case(tmp, "dense-all-rslora", dense, data,
                            ["--lora-r", "8", "--lora-alpha", "4", "--lora-rslora", "--lora-targets", "all"],
                            {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"})
        lamina_adapter_case(tmp, "mixtral-experts", moe, data,
                            ["--lora-r", "4", "--lora-alpha", "8", "--lora-targets", "q,v,w1,w2,w3"],
                            {"q_proj", "v_proj", "w1", "w2", "w3"})

        # PEFT's rank_pattern / alpha_pattern as lamina training options: regex keys, suffix keys,
        # the first matching key wins (q_proj=2 before the layer-1 rule, so layer 1's q_proj is 2).
        lamina_adapter_case(tmp, "dense-patterns", dense, data,
                            ["--lora-r", "4", "--lora-alpha", "8", "--lora-targets", "all",
                             "--lora-rank-pattern", "q_proj=2", "--lora-rank-pattern", r"layers\.1\..*=6",
                             "--lora-alpha-pattern", "down_proj=3", "--lora-alpha-pattern", r"model\.layers\.0\.self_attn\.v_proj=40"],
                            {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"},
                            {"0.self_attn.q_proj": 2, "1.self_attn.q_proj": 2, "1.self_attn.k_proj": 6, "0.self_attn.k_proj": 4,
                             "1.mlp.down_proj": 6, "0.mlp.down_proj": 4, "0.self_attn.v_proj": 4})
        cfg = json.load(open(os.path.join(tmp, "dense-patterns", "checkpoint-4", "adapter_config.json")))
        check("dense-patterns: adapter_config.json keeps the patterns in order",
              list(cfg.get("rank_pattern", {}).items()) == [("q_proj", 2), (r"layers\.1\..*", 6)]
              and cfg.get("alpha_pattern") == {"down_proj": 3, r"model\.layers\.0\.self_attn\.v_proj": 40},
              json.dumps([cfg.get("rank_pattern"), cfg.get("alpha_pattern")]))
        # Bad patterns: one line naming the option, before any work.
        for args, want in [(["--lora-rank-pattern", "q_proj=2"], "needs --lora-r"),
                           (["--lora-r", "4", "--lora-rank-pattern", "q_proj"], "PATTERN=VALUE"),
                           (["--lora-r", "4", "--lora-rank-pattern", "q_proj=1.5"], "integer"),
                           (["--lora-r", "4", "--lora-alpha-pattern", "(q_proj=2"], "regular expression"),
                           (["--lora-r", "4", "--lora-rank-pattern", "gate_proj=2"], "matches none")]:
            p = run_quiet("sft", "--model", dense, "--data", data, "--out", os.path.join(tmp, "bad"), "--max-steps", "1", *args)
            check(f"bad pattern {args[-1]!r}: exit 1, one line", p.returncode == 1 and want in p.stderr
                  and len(p.stderr.strip().splitlines()) == 1, p.stderr.strip()[:200])

        resized_vocab_case(tmp, data)

        # (b) PEFT's adapters in lamina merge-lora.
        allm = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
        peft_adapter_case(tmp, "peft-plain", dense, dict(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj"]), 1)
        peft_adapter_case(tmp, "peft-rslora", dense, dict(r=8, lora_alpha=16, target_modules=allm, use_rslora=True), 2)
        # Patterns: regexes and suffixes, a specific key before a general one (PEFT writes the
        # config with sorted keys and reads it back in that order, so the first key that matches
        # in the file is the one that counts); with rslora each module's scale is its alpha /
        # sqrt(its r).
        pats = dict(rank_pattern={r"model\.layers\.0\.self_attn\.q_proj": 2, "q_proj": 5, r"layers\.1\.mlp\..*": 3,
                                  "v_proj": 6},
                    alpha_pattern={"o_proj": 3, "model.layers.0.mlp.down_proj": 20, r".*\.1\.self_attn\.k_proj": 1})
        peft_adapter_case(tmp, "peft-patterns", dense, dict(r=4, lora_alpha=8, target_modules=allm, **pats), 3)
        # Mixtral: PEFT 0.21.2 on transformers v5 adapts the fused experts (target_parameters
        # gate_up_proj with rank and alpha doubled for w1 + w3, down_proj; stacked A [E·r, in], B [out, r·E]).
        peft_adapter_case(tmp, "peft-mixtral-experts", moe, dict(r=4, lora_alpha=8, target_modules=["q_proj", "w1", "w2", "w3"]), 5)
        fused = os.path.join(tmp, "moe-fused")
        run("init", "--out", fused, "--seed", "8", "--shape", "tiny-mixtral", "--moe-layout", "fused")
        peft_adapter_case(tmp, "peft-mixtral-fused-base", fused, dict(r=2, lora_alpha=6, target_modules=["w1", "w2", "w3"]), 6)
        peft_adapter_case(tmp, "peft-patterns-rslora", dense, dict(r=4, lora_alpha=8, target_modules=allm, use_rslora=True, **pats), 4)
    report.finish()


if __name__ == "__main__":
    main()
