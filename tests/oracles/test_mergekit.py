"""lamina upscale --config against mergekit itself: the same passthrough YAML run by mergekit's
run_merge (CPU, offline) and by lamina must give byte-identical tensors (names, shapes, dtypes,
bytes), the same config.json fields and the same tokenizer (vocabulary, specials, chat template).
usage: test_mergekit.py LAMINA   ('N passed, M failed')
"""
import json
import os
import sys
import tempfile
import time

from oracle_common import Report, runner, tool_versions

import torch
import yaml
from safetensors import safe_open

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]))
run_quiet = runner(os.path.abspath(sys.argv[1]), echo_failures=False)

from mergekit.config import MergeConfiguration  # noqa: E402
from mergekit.merge import MergeOptions, run_merge  # noqa: E402
from transformers import AutoConfig, AutoTokenizer  # noqa: E402

print("reproducing", tool_versions("mergekit", "transformers", "torch"))

CONFIG_FIELDS = ["model_type", "num_hidden_layers", "hidden_size", "intermediate_size",
                 "num_attention_heads", "num_key_value_heads", "vocab_size", "max_position_embeddings",
                 "rms_norm_eps", "tie_word_embeddings", "dtype", "rope_parameters", "sliding_window",
                 "num_local_experts", "num_experts_per_tok", "bos_token_id", "eos_token_id"]


def tensors(d):
    """name -> (dtype, shape, bytes) over every shard, read with the safetensors package."""
    out = {}
    for fn in sorted(os.listdir(d)):
        if fn.endswith(".safetensors"):
            with safe_open(os.path.join(d, fn), "pt") as f:
                for k in f.keys():
                    t = f.get_tensor(k)
                    raw = t.contiguous().view(-1).view(dtype=torch.uint8).numpy().tobytes()
                    out[k] = (str(t.dtype), tuple(t.shape), raw)
    return out


def config_fields(d):
    c = AutoConfig.from_pretrained(d, local_files_only=True)
    return {k: str(getattr(c, k, None)) for k in CONFIG_FIELDS}


def tokenizer_facts(d):
    t = AutoTokenizer.from_pretrained(d, local_files_only=True)
    return {"vocab": sorted(t.get_vocab().items()), "specials": str(t.special_tokens_map),
            "chat_template": t.chat_template, "encode": t.encode("Hello world, merged <s> model")}


def mergekit(cfg_text, out):
    cfg = MergeConfiguration.model_validate(yaml.safe_load(cfg_text))
    run_merge(cfg, out, MergeOptions(copy_tokenizer=True, write_model_card=False, quiet=True,
                                     lazy_unpickle=False))


def compare(name, cfg_text, tmp, tokenizer=False, config=True):
    """mergekit and lamina on one recipe; every tensor byte-identical, config fields equal."""
    cfg = os.path.join(tmp, name + ".yml")
    open(cfg, "w").write(cfg_text)
    ref, out = os.path.join(tmp, name + "-mergekit"), os.path.join(tmp, name + "-lamina")
    mergekit(cfg_text, ref)
    p = run("upscale", "--config", cfg, "--out", out)
    if not check(f"{name}: lamina runs the recipe", p.returncode == 0, p.stderr.strip()[-300:]):
        return
    a, b = tensors(ref), tensors(out)
    check(f"{name}: same tensor names", sorted(a) == sorted(b),
          f"only mergekit: {sorted(set(a) - set(b))[:4]} only lamina: {sorted(set(b) - set(a))[:4]}")
    meta = [k for k in a if k in b and a[k][:2] != b[k][:2]]
    check(f"{name}: same dtypes and shapes", not meta,
          "; ".join(f"{k}: {a[k][:2]} vs {b[k][:2]}" for k in meta[:3]))
    differ = [k for k in a if k in b and a[k][:2] == b[k][:2] and a[k][2] != b[k][2]]
    check(f"{name}: byte-identical tensors ({len(a)})", not differ, f"differ: {differ[:4]}")
    if config:
        ca, cb = config_fields(ref), config_fields(out)
        bad = {k: (ca[k], cb[k]) for k in ca if ca[k] != cb[k]}
        check(f"{name}: config.json fields match", not bad, str(bad))
    if tokenizer:
        ta, tb = tokenizer_facts(ref), tokenizer_facts(out)
        bad = [k for k in ta if ta[k] != tb[k]]
        check(f"{name}: same tokenizer ({', '.join(ta)})", not bad,
              "; ".join(f"{k}: {str(ta[k])[:80]!r} vs {str(tb[k])[:80]!r}" for k in bad))


t_start = time.time()
with tempfile.TemporaryDirectory() as tmp:
    A, A2, B, C, M, MF, T, TIED, MI = (
        os.path.join(tmp, n)
        for n in ("a", "a2", "b", "c", "mixtral", "fused", "tokens", "tied", "mistral"))
    # Without base_model mergekit takes config and tokenizer from referenced_models()[0], the first
    # of a Python set (arbitrary), so recipes without base_model mix models of one config (A, A2,
    # C differ only in weights, layer count and dtype); B is named by base_model or as the
    # tokenizer source.
    for args in (["--out", A, "--seed", "1", "--layers", "6", "--random-norms"],
                 ["--out", A2, "--seed", "2", "--layers", "6"],
                 # B differs from A in config (max_position_embeddings, rms_norm_eps) and tokenizer
                 # (a chat template), so where config and tokenizer come from is visible.
                 ["--out", B, "--seed", "2", "--layers", "6", "--max-pos", "256", "--chat-template",
                  "chatml"],
                 ["--out", C, "--seed", "3", "--layers", "4", "--dtype", "bf16"],
                 ["--out", M, "--seed", "4", "--shape", "tiny-mixtral", "--layers", "3"],
                 ["--out", MF, "--seed", "5", "--shape", "tiny-mixtral", "--layers", "3",
                  "--moe-layout", "fused"],
                 # T: A's shape with two added tokens (vocab 514), as an instruct model's tokenizer.
                 ["--out", T, "--seed", "6", "--layers", "6", "--add-tokens",
                  "<|im_start|>,<|im_end|>"],
                 ["--out", TIED, "--seed", "7", "--layers", "3", "--tie-embeddings"],
                 ["--out", MI, "--seed", "8", "--shape", "tiny-mistral", "--layers", "3"]):
        assert run("init", *args).returncode == 0

    def sl(model, a, b, params=""):
        return f"  - sources:\n      - model: {model}\n        layer_range: [{a}, {b}]\n{params}"

    # SOLAR depth up-scaling (n = 6, m = 2), written in bf16.
    compare("solar", "slices:\n" + sl(A, 0, 4) + sl(A, 2, 6) + "merge_method: passthrough\n"
            "dtype: bfloat16\n", tmp, tokenizer=True)
    # Several slices of two models, stored dtype kept.
    compare("two-models", "slices:\n" + sl(A, 0, 3) + sl(A2, 2, 6) + sl(A, 5, 6) +
            "merge_method: passthrough\n", tmp)
    # Scale with filters at three levels (source over slice over global), first match wins.
    src_params = "        parameters:\n          scale:\n            - filter: o_proj\n" \
                 "              value: 0.5\n"
    compare("scale-filters", "slices:\n" + sl(A, 0, 3, src_params) +
            "    parameters:\n      scale:\n        - filter: mlp\n          value: 0.1\n"
            "        - filter: v_proj\n          value: 3\n" + sl(A2, 1, 4) +
            "merge_method: passthrough\nparameters:\n  scale:\n    - filter: up_proj\n"
            "      value: 0.7\n    - filter: self_attn\n      value: -1.3\n", tmp)
    # filter "*" matches every tensor, as mergekit's evaluate_setting says.
    compare("filter-star", "slices:\n" + sl(A, 0, 6, "    parameters:\n      scale:\n"
            "        - filter: \"*\"\n          value: 0.3\n") + "merge_method: passthrough\n", tmp)
    # Gradients: interpolated over each slice's layers (t = i / (n - 1); t = 1 for a one-layer
    # slice; t = 0 for embeddings, final norm and lm_head), filtered and not.
    compare("gradient", "slices:\n" + sl(A, 0, 5, "    parameters:\n      scale:\n"
            "        - filter: self_attn\n          value: [1, 0.5, 0.25]\n        - value: [0, 1]\n")
            + sl(A2, 3, 4, "    parameters:\n      scale: [0.2, 0.9]\n") + sl(A2, 4, 6) +
            "merge_method: passthrough\n", tmp)
    # A slice-level scale without filter reaches embeddings (first slice) and the final norm and
    # lm_head (last slice).
    compare("slice-scale-ends", "slices:\n" + sl(A, 0, 2, "    parameters:\n      scale: 2.5\n") +
            sl(A2, 0, 6, "    parameters:\n      scale: 0.25\n") + "merge_method: passthrough\n", tmp)
    # mergekit's own passthrough test (tests/test_basic_merges.py, test_passthrough_scale): the
    # models: form, o_proj zeroed.
    compare("mergekit-passthrough-scale", f"merge_method: passthrough\nmodels:\n  - model: {A}\n"
            "    parameters:\n      scale:\n        - filter: o_proj\n          value: 0\n"
            "        - value: 1\n", tmp)
    # base_model the very model being scaled: passthrough's scale is per input (PerInput), so it
    # still applies.
    compare("models-base-scaled", f"base_model: {A}\nmerge_method: passthrough\nmodels:\n"
            f"  - model: {A}\n    parameters:\n      scale: [2, -1]\n", tmp)
    # dtype (what mergekit computes in) and out_dtype (what it writes), rounding in that order.
    for name, dt in (("bf16-to-f32", "dtype: bfloat16\nout_dtype: float32\n"),
                     ("f16", "dtype: float16\n"),
                     ("f32-out-bf16", "dtype: float32\nout_dtype: bfloat16\n"),
                     ("out-f16", "out_dtype: float16\n"),
                     ("torch-prefix", "dtype: torch.float16\nout_dtype: torch.bfloat16\n")):
        # mergekit copies "torch.bfloat16" verbatim into config.json, which transformers then
        # cannot load; lamina writes "bfloat16". Only the tensors are compared there.
        compare("dtype-" + name, "slices:\n" + sl(A, 0, 6, "    parameters:\n      scale: 0.1\n") +
                sl(C, 1, 3, "    parameters:\n      scale: 1.7\n") + sl(C, 3, 4) +
                "merge_method: passthrough\n" + dt, tmp, config=name != "torch-prefix")
    got = config_fields(os.path.join(tmp, "dtype-torch-prefix-lamina"))["dtype"]
    check("dtype-torch-prefix: lamina's config.json loads, in out_dtype", got == "torch.bfloat16", got)
    # base_model: config and tokenizer come from it, not from the first slice.
    compare("base-model", f"base_model: {B}\nslices:\n" + sl(A, 0, 4) + sl(A, 2, 6) +
            "merge_method: passthrough\n", tmp, tokenizer=True)
    compare("tokenizer-source-base", f"base_model: {B}\ntokenizer_source: base\nslices:\n" +
            sl(A, 0, 6) + "merge_method: passthrough\n", tmp, tokenizer=True)
    compare("tokenizer-source-model", f"base_model: {A}\ntokenizer_source: {B}\nslices:\n" +
            sl(A, 0, 3) + sl(A2, 3, 6) + "merge_method: passthrough\n", tmp, tokenizer=True)
    # A tokenizer with tokens the models lack: embed_tokens and lm_head rebuilt in its order,
    # zero rows for the new tokens (scaled, so -0.0 where the scale is negative), vocab_size 514.
    compare("tokenizer-source-added", f"base_model: {A}\ntokenizer_source: {T}\nslices:\n" +
            sl(A, 0, 3, "    parameters:\n      scale: -0.5\n") + sl(A2, 3, 6) +
            "merge_method: passthrough\ndtype: bfloat16\n", tmp, tokenizer=True)
    compare("tokenizer-section", f"base_model: {T}\ntokenizer:\n  source: base\n"
            "  pad_to_multiple_of: 2\nslices:\n" + sl(A, 0, 6) + sl(T, 4, 6) +
            "merge_method: passthrough\n", tmp, tokenizer=True)
    # union where no model has a token the base lacks: the base's tokenizer (T's, 514 tokens;
    # A's and A2's rows for the two added tokens are zeros). `tokenizer: {}` is union too.
    compare("union", f"base_model: {T}\ntokenizer_source: union\nslices:\n" + sl(A, 0, 3) +
            sl(A2, 3, 6) + "merge_method: passthrough\n", tmp, tokenizer=True)
    compare("tokenizer-section-union", f"base_model: {A}\ntokenizer: {{}}\nslices:\n" +
            sl(A, 0, 3) + sl(A2, 3, 6) + "merge_method: passthrough\n", tmp, tokenizer=True)
    # chat_template: a template text, and "auto" (the most common among the inputs).
    tmpl = "{% for m in messages %}[{{ m['role'] }}] {{ m['content'] }}\\n{% endfor %}"
    compare("chat-template-text", f"chat_template: \"{tmpl}\"\nslices:\n" + sl(A, 0, 6) +
            "merge_method: passthrough\n", tmp, tokenizer=True)
    compare("chat-template-auto", f"base_model: {A}\nchat_template: auto\nslices:\n" + sl(B, 0, 2) + sl(A, 0, 6) +
            sl(B, 4, 6) + "merge_method: passthrough\n", tmp, tokenizer=True)
    # Mixtral: the split experts (w1, w2, w3) come out fused as transformers v5 has them (mergekit
    # converts on reading), filters apply to the fused names; a fused input stays fused.
    compare("mixtral", "slices:\n" + sl(M, 0, 2, "    parameters:\n      scale:\n"
            "        - filter: experts\n          value: 0.5\n") + sl(M, 1, 3) +
            "merge_method: passthrough\ndtype: bfloat16\n", tmp)
    compare("mixtral-fused", "slices:\n" + sl(MF, 0, 2) + sl(MF, 1, 3) +
            "merge_method: passthrough\n", tmp)

    # Tied embeddings (no lm_head tensor) and Mistral (sliding_window in the config).
    compare("tied", "slices:\n" + sl(TIED, 0, 3, "    parameters:\n      scale: 0.5\n") +
            sl(TIED, 1, 3) + "merge_method: passthrough\n", tmp)
    compare("mistral", "slices:\n" + sl(MI, 0, 2) + sl(MI, 1, 3) +
            "merge_method: passthrough\nout_dtype: bfloat16\n", tmp)

    # The recipe.yaml lamina writes beside its output is a mergekit recipe for that same output.
    for name in ("gradient", "scale-filters", "mergekit-passthrough-scale", "tokenizer-source-added",
                 "chat-template-auto", "dtype-bf16-to-f32"):
        again = os.path.join(tmp, name + "-again")
        mergekit(open(os.path.join(tmp, name + "-lamina", "recipe.yaml")).read(), again)
        a, b = tensors(again), tensors(os.path.join(tmp, name + "-lamina"))
        check(f"{name}: mergekit on lamina's recipe.yaml gives lamina's tensors", a == b,
              f"differ: {[k for k in a if a.get(k) != b.get(k)][:4]}")

    # What passthrough cannot express is refused by name, with the line, before any work.
    def refused(name, text, want):
        cfg = os.path.join(tmp, name + ".yml")
        open(cfg, "w").write(text)
        out = os.path.join(tmp, name + "-out")
        p = run_quiet("upscale", "--config", cfg, "--out", out)
        err = p.stderr.strip()
        check(f"refused: {name}", p.returncode == 1 and want in err and cfg in err and
              len(err.splitlines()) == 1 and not os.path.exists(out), err)

    refused("union-new-tokens", f"base_model: {A}\ntokenizer_source: union\nslices:\n" +
            sl(A, 0, 6) + sl(T, 5, 6) + "merge_method: passthrough\n", "tokenizer_source union")
    refused("tokenizer-tokens", "tokenizer:\n  source: base\n  tokens:\n    <x>:\n      source: "
            f"{A}\nslices:\n" + sl(A, 0, 6) + "merge_method: passthrough\n", "tokens")
    refused("two-models-form", f"models:\n  - model: {A}\n  - model: {B}\n"
            "merge_method: passthrough\n", "one model")
    refused("pad-to-multiple", f"base_model: {T}\ntokenizer:\n  source: base\n"
            "  pad_to_multiple_of: 64\nslices:\n" + sl(A, 0, 6) + "merge_method: passthrough\n",
            "pad_to_multiple_of 64")
    refused("named-template", "chat_template: alpaca\nslices:\n" + sl(A, 0, 6) +
            "merge_method: passthrough\n", "chat_template")
print(f"{time.time() - t_start:.1f} s")
report.finish()
