"""lamina upscale: tensor mapping byte for byte, identity recipes, LLaMA-Pro identity logits,
real-shape arithmetic, bad recipes. usage: test_upscale.py LAMINA SHARED_DIR   ('N passed, M failed')
"""
import json
import os
import re
import shutil
import struct
import sys
import tempfile

import numpy as np
import torch

from harness import Report, runner

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "reference"))
import reference_model  # noqa: E402

SHARED = sys.argv[2]
report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]))
run_quiet = runner(os.path.abspath(sys.argv[1]), echo_failures=False)


def raw_tensors(d):
    """name -> (dtype, shape, bytes) over all shards, read with this test's own parser."""
    idx = os.path.join(d, "model.safetensors.index.json")
    files = sorted(set(json.load(open(idx))["weight_map"].values())) if os.path.exists(idx) else ["model.safetensors"]
    out = {}
    for fn in files:
        blob = open(os.path.join(d, fn), "rb").read()
        (n,) = struct.unpack("<Q", blob[:8])
        h = json.loads(blob[8 : 8 + n])
        meta = h.pop("__metadata__", {})
        for k, v in h.items():
            b, e = v["data_offsets"]
            out[k] = (v["dtype"], v["shape"], blob[8 + n + b : 8 + n + e])
        out.setdefault("__metadata__", meta)
    return out


def logits(d, ids, tmp):
    f = os.path.join(tmp, "logits.npy")
    run("score", "--model", d, "--ids", ",".join(map(str, ids)), "--dump-logits", f)
    return np.load(f)


def write(path, text):
    with open(path, "w") as fh:
        fh.write(text)


def main():
    tmp = tempfile.mkdtemp()
    try:
        n, m = 6, 2
        base = os.path.join(tmp, "base")
        run("init", "--out", base, "--layers", str(n), "--std", "0.15", "--random-norms", "--seed", "5")
        src = raw_tensors(base)
        ids = [1, 17, 33, 90, 4, 250, 7, 8, 300, 2, 44, 12]

        # SOLAR: output layer i = source layer i (i < n-m), else i - n + 2m; byte for byte.
        solar = os.path.join(tmp, "solar")
        run("upscale", "--model", base, "--drop", str(m), "--out", solar, "--shard-size", "300KB")
        out = raw_tensors(solar)
        s = 2 * (n - m)
        ok = json.load(open(os.path.join(solar, "config.json")))["num_hidden_layers"] == s
        mismatches = []
        for name, entry in out.items():
            if name == "__metadata__":
                continue
            if name.startswith("model.layers."):
                i = int(name.split(".")[2])
                j = i if i < n - m else i - n + 2 * m
                src_name = name.replace(f"model.layers.{i}.", f"model.layers.{j}.", 1)
            else:
                src_name = name
            if src[src_name] != entry:
                mismatches.append(name)
        ok = ok and not mismatches and len(out) - 1 == len(src) - 1 + (s - n) * 9  # 9 tensors per llama layer
        check("SOLAR mapping is byte-exact, tensor by tensor", ok, f"{len(out) - 1} tensors, mismatches {mismatches[:3]}")
        check("SOLAR output is sharded with an index", os.path.exists(os.path.join(solar, "model.safetensors.index.json")))
        meta = out["__metadata__"]
        check("recipe recorded in safetensors metadata and model card",
              meta.get("format") == "pt" and "layer_range: [2, 6]" in meta.get("lamina_recipe", "")
              and "layer_range: [2, 6]" in open(os.path.join(solar, "README.md")).read())
        for f in ["tokenizer.model", "tokenizer_config.json", "generation_config.json", "special_tokens_map.json"]:
            if open(os.path.join(base, f), "rb").read() != open(os.path.join(solar, f), "rb").read():
                check(f"{f} copied", False)
        cfg_in, cfg_out = (json.load(open(os.path.join(d, "config.json"))) for d in (base, solar))
        check("config keeps every other key", {k: v for k, v in cfg_in.items() if k != "num_hidden_layers"}
              == {k: v for k, v in cfg_out.items() if k != "num_hidden_layers"})
        # The stacked model is a valid checkpoint for an independent loader: same logits.
        cfg, w = reference_model.load_model_dir(solar)
        with torch.no_grad():
            ref = reference_model.forward(cfg, w, ids).numpy()
        err = np.abs(logits(solar, ids, tmp) - ref).max()
        check("SOLAR output runs in the PyTorch reference with lamina's logits", err < 1e-4, f"max err {err:.2e}")

        # layer_range [0, n) reproduces the base byte for byte and logit for logit.
        ident = os.path.join(tmp, "ident")
        write(os.path.join(tmp, "ident.yaml"), f"slices:\n  - sources:\n      - model: {base}\n        layer_range: [0, {n}]\nmerge_method: passthrough\n")
        run("upscale", "--config", os.path.join(tmp, "ident.yaml"), "--out", ident)
        a = {k: v for k, v in raw_tensors(ident).items() if k != "__metadata__"}
        b = {k: v for k, v in src.items() if k != "__metadata__"}
        check("layer_range [0, n) is byte-identical", a == b)
        check("layer_range [0, n) gives identical logits", np.array_equal(logits(ident, ids, tmp), logits(base, ids, tmp)))

        # Scale filters and dtype conversion.
        scaled = os.path.join(tmp, "scaled")
        write(os.path.join(tmp, "scaled.yaml"), f"""slices:
  - sources:
      - model: {base}
        layer_range: [0, 2]
        parameters:
          scale:
            - filter: o_proj
              value: 0.5
            - value: 1.0
merge_method: passthrough
dtype: float32
""")
        run("upscale", "--config", os.path.join(tmp, "scaled.yaml"), "--out", scaled)
        out = raw_tensors(scaled)
        o = np.frombuffer(out["model.layers.1.self_attn.o_proj.weight"][2], "<f4")
        o0 = np.frombuffer(src["model.layers.1.self_attn.o_proj.weight"][2], "<f4")
        q = out["model.layers.1.self_attn.q_proj.weight"][2] == src["model.layers.1.self_attn.q_proj.weight"][2]
        check("scale filter: o_proj x0.5, others untouched", np.array_equal(o, o0 * np.float32(0.5)) and q)
        bf = os.path.join(tmp, "bf16")
        run("upscale", "--model", base, "--drop", "2", "--dtype", "bf16", "--out", bf)
        out = raw_tensors(bf)
        check("--dtype bf16 converts every tensor and torch_dtype",
              all(v[0] == "BF16" for k, v in out.items() if k != "__metadata__")
              and json.load(open(os.path.join(bf, "config.json")))["torch_dtype"] == "bfloat16")

        # LLaMA-Pro: the expanded model computes the same function.
        for shape, extra in [("tiny", []), ("tiny-mixtral", []), ("tiny-mixtral", ["--moe-layout", "fused"])]:
            name = shape + "".join(extra)
            b0 = os.path.join(tmp, "pro-base-" + name)
            run("init", "--out", b0, "--shape", shape, "--layers", "4", "--std", "0.15", "--random-norms", *extra)
            ex = os.path.join(tmp, "pro-" + name)
            run("upscale", "--model", b0, "--target-layers", "6", "--out", ex)
            exp = json.load(open(os.path.join(ex, "expanded_layers.json")))
            err = np.abs(logits(ex, ids, tmp) - logits(b0, ids, tmp)).max()
            layers = json.load(open(os.path.join(ex, "config.json")))["num_hidden_layers"]
            check(f"LLaMA-Pro identity ({name})", err < 1e-5 and layers == 6 and exp["new_layers"] == [2, 5],
                  f"max err {err:.2e}, new layers {exp['new_layers']}")

        # Real shapes, no weights: SOLAR on a Mistral-7B config -> 48 layers, 10.73B.
        mistral = os.path.join(tmp, "mistral-7b")
        os.makedirs(mistral)
        shutil.copy(os.path.join(SHARED, "model-configs", "mistral-7b-v0.1.json"), os.path.join(mistral, "config.json"))
        solar_cfg = os.path.join(tmp, "solar-10.7b")
        run("upscale", "--model", mistral, "--out", solar_cfg, "--config-only")
        info = run("info", "--model", solar_cfg).stdout
        j = json.loads(run("info", "--model", solar_cfg, "--json").stdout)
        check("SOLAR on Mistral 7B shape: 48 layers, 10.73B", "48 layers" in info and "10.73B" in info
              and j["parameters"] == 10731524096)

        # Streaming: peak RSS of the copy stays far below the model size (mmap pages released).
        big = os.path.join(tmp, "big")
        run("init", "--out", big, "--layers", "8", "--hidden", "768", "--intermediate", "2048", "--heads", "12",
            "--kv-heads", "4")
        in_bytes = os.path.getsize(os.path.join(big, "model.safetensors"))
        # lamina reports its own VmHWM (a child's ru_maxrss would include this Python's, from before exec).
        p = run("upscale", "--model", big, "--drop", "2", "--out", os.path.join(tmp, "big-up"))
        m = re.search(r"peak memory ([0-9.]+) (KB|MB|GB)", p.stdout)
        peak = float(m.group(1)) * {"KB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(2)] if m else float("inf")
        check("upscale streams: peak RSS well under the model size", p.returncode == 0 and peak < 100e6 and peak < in_bytes / 2,
              f"peak RSS {peak / 1e6:.0f} MB for a {in_bytes / 1e6:.0f} MB input, {in_bytes * 1.5 / 1e6:.0f} MB output")
        shutil.rmtree(os.path.join(tmp, "big-up"), ignore_errors=True)

        # Bad recipes fail before writing anything.
        def bad(name, args, want):
            outdir = os.path.join(tmp, "bad-" + name.replace(" ", "-"))
            p = run_quiet("upscale", *args, "--out", outdir)
            left = [f for f in os.listdir(tmp) if f.startswith(os.path.basename(outdir))]
            ok = p.returncode == 1 and want in p.stderr and len(p.stderr.strip().splitlines()) <= 2 and not left
            check(f"bad recipe: {name}", ok, repr(p.stderr.strip()[-200:]))

        def recipe(name, body):
            path = os.path.join(tmp, name + ".yaml")
            write(path, body)
            return path

        bad("range out of bounds", ["--config", recipe("oob", f"slices:\n  - sources:\n      - model: {base}\n        layer_range: [4, 9]\nmerge_method: passthrough\n")],
            "out of bounds")
        other = os.path.join(tmp, "other")
        run("init", "--out", other, "--hidden", "32", "--heads", "4")
        bad("mixed hidden sizes", ["--config", recipe("mixed", f"slices:\n  - sources:\n      - model: {base}\n        layer_range: [0, 2]\n"
                                                       f"  - sources:\n      - model: {other}\n        layer_range: [0, 2]\nmerge_method: passthrough\n")],
            "hidden_size")
        bad("unknown method", ["--config", recipe("slerp", f"slices:\n  - sources:\n      - model: {base}\n        layer_range: [0, 2]\nmerge_method: slerp\n")],
            "merge_method 'slerp' is not supported")
        bad("missing model", ["--config", recipe("missing", "slices:\n  - sources:\n      - model: /nonexistent/model\n        layer_range: [0, 2]\nmerge_method: passthrough\n")],
            "/nonexistent/model/config.json: not found")
        bad("malformed YAML", ["--config", recipe("broken", "slices: [\n")], "malformed YAML")
        bad("drop too large", ["--model", base, "--drop", "6"], "--drop 6")
        bad("uneven expansion", ["--model", base, "--target-layers", "10"], "cannot be split evenly")
        trunc = os.path.join(tmp, "trunc")
        shutil.copytree(base, trunc)
        with open(os.path.join(trunc, "model.safetensors"), "r+b") as fh:
            fh.truncate(1000)
        bad("truncated source", ["--model", trunc, "--drop", "2"], "truncated")
        p = run_quiet("upscale", "--model", base, "--drop", "2", "--out", solar)
        check("existing output refused without --force", p.returncode == 1 and "--force" in p.stderr)
    finally:
        shutil.rmtree(tmp)
    report.finish()


if __name__ == "__main__":
    main()
