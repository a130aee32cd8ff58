"""lamina pretrain end to end: loss goes down, resume is exact, accumulation normalises over the
whole step, checkpoints are complete HF models, the token cache is reused, bad data is named.

usage: test_pretrain.py LAMINA        prints 'N passed, M failed'
"""
import json
import math
import os
import shutil
import struct
import sys
import tempfile

import numpy as np

from harness import Report, f32_tensors as tensors, runner

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]))
run_quiet = runner(os.path.abspath(sys.argv[1]), echo_failures=False)

TEXT = """The river runs past the old mill and under the stone bridge.
In the morning the baker opens the shop and the smell of bread fills the street.

Children walk to school with their books, and the teacher waits at the door.
A language model reads a sequence of tokens and predicts the next one.

The cat sat on the warm window sill and watched the birds in the tree.
"""


def metrics(d):
    return [json.loads(l) for l in open(os.path.join(d, "metrics.jsonl")) if l.strip()]


def main():
    tmp = tempfile.mkdtemp()
    try:
        corpus = os.path.join(tmp, "corpus.txt")
        open(corpus, "w").write((TEXT + "\n") * 30)
        base = os.path.join(tmp, "base")
        run("init", "--out", base, "--seed", "1")
        common = ["--model", base, "--data", corpus, "--seq-len", "32", "--lr", "3e-3", "--warmup-ratio", "0.1"]

        # Loss goes down on a repetitive corpus; eval loss is logged; the plot is written.
        out = os.path.join(tmp, "run")
        p = run("pretrain", *common, "--out", out, "--batch-size", "4", "--max-steps", "60", "--eval-every", "20")
        m = metrics(out)
        train = [x["loss"] for x in m if "loss" in x]
        evals = [x["eval_loss"] for x in m if "eval_loss" in x]
        half_ln_v = 0.5 * np.log(json.load(open(os.path.join(base, "config.json")))["vocab_size"])
        check("train and eval loss fall below half of ln(vocab)", p.returncode == 0 and train[-1] < half_ln_v and evals[-1] < half_ln_v,
              f"train {train[0]:.3f} -> {train[-1]:.3f}, eval {evals[-1]:.3f}, ln(V)/2 = {half_ln_v:.3f}")
        check("eval loss logged at steps 0, 20, 40, 60 and falls", len(evals) == 4 and evals[-1] < evals[0], str(evals))
        check("loss curve plotted", open(os.path.join(out, "loss.svg")).read().startswith("<svg"))
        ck = os.path.join(out, "checkpoint-60")
        files = set(os.listdir(ck))
        check("checkpoint is a complete HF model dir plus optimizer state",
              {"config.json", "model.safetensors", "tokenizer.model", "tokenizer_config.json", "optimizer.safetensors",
               "trainer_state.json"} <= files, str(sorted(files)))
        sample = os.path.join(tmp, "sample.txt")
        open(sample, "w").write(TEXT)
        s_base = json.loads(run("score", "--model", base, "--text", sample, "--json").stdout)["perplexity"]
        s_new = json.loads(run("score", "--model", ck, "--text", sample, "--json").stdout)["perplexity"]
        check("the trained checkpoint loads and scores the corpus better", s_new < s_base / 5, f"ppl {s_base:.1f} -> {s_new:.1f}")
        check("token cache written once and reused", len(os.listdir(os.path.join(out, ".cache"))) == 1)

        # Resume: an interrupted run continued with --resume logs exactly the same losses.
        args = common + ["--batch-size", "2", "--grad-accum", "2", "--max-steps", "12", "--save-every", "4", "--eval-every", "4"]
        a, b = os.path.join(tmp, "a"), os.path.join(tmp, "b")
        run("pretrain", *args, "--out", a)
        run("pretrain", *args, "--out", b, "--halt-after", "6")
        interrupted = metrics(b)
        run("pretrain", *args, "--out", b, "--resume")
        key = lambda ms: [(x["step"], x.get("loss"), x.get("eval_loss")) for x in ms]
        check("resume gives the losses of an uninterrupted run", key(metrics(a)) == key(metrics(b))
              and max(x["step"] for x in interrupted) == 6, f"{len(metrics(a))} metric lines")
        wa = tensors(os.path.join(a, "checkpoint-12", "model.safetensors"))
        wb = tensors(os.path.join(b, "checkpoint-12", "model.safetensors"))
        check("resume gives the same final weights", all(np.array_equal(wa[k], wb[k]) for k in wa))
        check("--keep 2 keeps the newest checkpoints", sorted(d for d in os.listdir(a) if d.startswith("checkpoint-"))
              == ["checkpoint-12", "checkpoint-8"])
        p = run_quiet("pretrain", *args, "--out", a)
        check("a second run into the same --out is refused", p.returncode == 1 and "--resume" in p.stderr)

        # Accumulation: 4 sequences as 1x4 or 2x2 micro-batches give the same step (loss is
        # normalised over the step's tokens, not per micro-batch).
        one, two = os.path.join(tmp, "one"), os.path.join(tmp, "two")
        run("pretrain", *common, "--out", one, "--batch-size", "4", "--grad-accum", "1", "--max-steps", "2", "--val-fraction", "0")
        run("pretrain", *common, "--out", two, "--batch-size", "2", "--grad-accum", "2", "--max-steps", "2", "--val-fraction", "0")
        m1 = [x["loss"] for x in metrics(one)]
        m2 = [x["loss"] for x in metrics(two)]
        w1 = tensors(os.path.join(one, "checkpoint-2", "model.safetensors"))
        w2 = tensors(os.path.join(two, "checkpoint-2", "model.safetensors"))
        diff = max(np.abs(w1[k] - w2[k]).max() for k in w1)
        check("batch 4 == 2 micro-batches of 2", np.allclose(m1, m2, rtol=1e-5) and diff < 1e-5, f"losses {m1} vs {m2}, max weight diff {diff:.1e}")

        # bf16 mixed precision trains about as well as F32 on the same data and steps.
        b16 = os.path.join(tmp, "bf16")
        run("pretrain", *common, "--out", b16, "--batch-size", "4", "--max-steps", "60", "--eval-every", "60", "--precision", "bf16")
        e16 = [x["eval_loss"] for x in metrics(b16) if "eval_loss" in x][-1]
        check("--precision bf16 reaches the F32 run's eval loss (within 5%)", abs(e16 - evals[-1]) < 0.05 * evals[-1],
              f"bf16 {e16:.3f} vs f32 {evals[-1]:.3f}")

        # LoRA: adapters train on a frozen base; checkpoints are PEFT adapters; resume is exact;
        # merge-lora folds the result into a full model that scores like the training run ended.
        la, lb = os.path.join(tmp, "lora-a"), os.path.join(tmp, "lora-b")
        lora_common = [("2e-2" if prev == "--lr" else x) for prev, x in zip([""] + common, common)]  # adapters take a higher lr
        largs = lora_common + ["--batch-size", "4", "--max-steps", "40", "--save-every", "20", "--lora-r", "8", "--lora-alpha", "16",
                          "--lora-targets", "all", "--eval-every", "10"]
        run("pretrain", *largs, "--out", la)
        run("pretrain", *largs, "--out", lb, "--halt-after", "20")
        run("pretrain", *largs, "--out", lb, "--resume")
        ml = metrics(la)
        losses = [x["loss"] for x in ml if "loss" in x]
        ck = os.path.join(la, "checkpoint-40")
        check("LoRA training lowers the loss and writes PEFT adapters", losses[-1] < 0.95 * losses[0]
              and {"adapter_config.json", "adapter_model.safetensors"} <= set(os.listdir(ck))
              and "model.safetensors" not in os.listdir(ck), f"{losses[0]:.3f} -> {losses[-1]:.3f}")
        check("LoRA resume is exact", key(ml) == key(metrics(lb)))
        # LoRA dropout: deterministic masks (resume stays exact) that change the run.
        da, db = os.path.join(tmp, "drop-a"), os.path.join(tmp, "drop-b")
        dargs = [x for x in largs if x not in ("--max-steps", "40")][:] + ["--max-steps", "10", "--lora-dropout", "0.3"]
        dargs = [("5" if prev == "--save-every" else x) for prev, x in zip([""] + dargs, dargs)]
        run("pretrain", *dargs, "--out", da)
        run("pretrain", *dargs, "--out", db, "--halt-after", "5")
        run("pretrain", *dargs, "--out", db, "--resume")
        # The same run without dropout: equal first loss (B = 0, so dropout on the adapter input cannot
        # act yet), and equal second (Adam's first update is lr * sign(g), the same signs), different
        # losses from the third step on.
        dn = os.path.join(tmp, "drop-none")
        run("pretrain", *[("0" if prev == "--lora-dropout" else x) for prev, x in zip([""] + dargs, dargs)], "--out", dn)
        with_drop = [x["loss"] for x in metrics(da) if "loss" in x]
        without = [x["loss"] for x in metrics(dn) if "loss" in x]
        check("LoRA dropout: resume is exact; against the same run without dropout the losses differ from step 3 on",
              key(metrics(da)) == key(metrics(db)) and len(with_drop) == len(without) == 10
              and with_drop[0] == without[0] and all(a != b for a, b in zip(with_drop[2:], without[2:])),
              f"{with_drop[:3]} vs {without[:3]}")
        merged = os.path.join(tmp, "lora-merged")
        run("merge-lora", "--model", base, "--adapter", ck, "--out", merged)
        s_merged = json.loads(run("score", "--model", merged, "--text", sample, "--json").stdout)["perplexity"]
        check("merged LoRA model scores the corpus better than the base", s_merged < 0.75 * s_base, f"ppl {s_base:.1f} -> {s_merged:.1f}")
        # PEFT's use_rslora: the same adapter merged with scale alpha / sqrt(r) instead of alpha / r moves
        # every adapted weight sqrt(r) times as far (r = 8 here).
        rs = os.path.join(tmp, "lora-rslora-adapter")
        shutil.copytree(ck, rs)
        acfg = json.load(open(os.path.join(rs, "adapter_config.json")))
        json.dump(dict(acfg, use_rslora=True), open(os.path.join(rs, "adapter_config.json"), "w"))
        run("merge-lora", "--model", base, "--adapter", rs, "--out", os.path.join(tmp, "lora-merged-rs"))
        w0 = tensors(os.path.join(base, "model.safetensors"))
        wp = tensors(os.path.join(merged, "model.safetensors"))
        wr = tensors(os.path.join(tmp, "lora-merged-rs", "model.safetensors"))
        k = "model.layers.0.self_attn.q_proj.weight"
        ratio = float(np.abs(wr[k] - w0[k]).sum() / np.abs(wp[k] - w0[k]).sum())
        check("merge-lora honours use_rslora (alpha / sqrt(r))", abs(ratio - math.sqrt(8)) < 1e-3, f"ratio {ratio:.4f}")
        json.dump(dict(acfg, rank_pattern={"q_proj": 4}), open(os.path.join(rs, "adapter_config.json"), "w"))
        p = run_quiet("merge-lora", "--model", base, "--adapter", rs, "--out", os.path.join(tmp, "lora-merged-rp"))
        check("a rank_pattern the adapter's tensors disagree with is an error naming the module",
              p.returncode == 1 and "rank_pattern" in p.stderr and "q_proj" in p.stderr, p.stderr.strip())
        rl = os.path.join(tmp, "lora-rs-run")
        run("pretrain", *lora_common, "--batch-size", "4", "--max-steps", "2", "--lora-r", "8", "--lora-rslora", "--out", rl)
        check("--lora-rslora writes use_rslora into the PEFT adapter",
              json.load(open(os.path.join(rl, "checkpoint-2", "adapter_config.json")))["use_rslora"] is True)

        # --base-dtype: the frozen base is kept as q4_0 blocks / bf16 (never an F32 copy). LoRA over a
        # q4_0 base trains about as well as over the F32 base, resumes exactly, says in the adapter
        # what it was trained over, and merges into the full-precision base.
        qa, qb = os.path.join(tmp, "lora-q4-a"), os.path.join(tmp, "lora-q4-b")
        qargs = largs + ["--base-dtype", "q4_0"]
        run("pretrain", *qargs, "--out", qa)
        run("pretrain", *qargs, "--out", qb, "--halt-after", "20")
        run("pretrain", *qargs, "--out", qb, "--resume")
        mq = metrics(qa)
        lq = [x["loss"] for x in mq if "loss" in x]
        qck = os.path.join(qa, "checkpoint-40")
        with open(os.path.join(qck, "adapter_model.safetensors"), "rb") as f:
            meta = json.loads(f.read(struct.unpack("<Q", f.read(8))[0])).get("__metadata__", {})
        check("LoRA over a q4_0 base: the loss falls as over the F32 base (within 10%), resume is exact",
              lq[-1] < 0.95 * lq[0] and abs(lq[-1] - losses[-1]) < 0.1 * losses[-1] and key(mq) == key(metrics(qb)),
              f"{lq[0]:.3f} -> {lq[-1]:.3f} (f32 base: {losses[-1]:.3f})")
        check("the adapter records its q4_0 base (safetensors metadata and README)",
              meta.get("lamina_base_dtype") == "q4_0" and "q4_0" in open(os.path.join(qck, "README.md")).read(), str(meta))
        qm = os.path.join(tmp, "lora-q4-merged")
        run("merge-lora", "--model", base, "--adapter", qck, "--out", qm)
        s_qm = json.loads(run("score", "--model", qm, "--text", sample, "--json").stdout)["perplexity"]
        check("an adapter trained over a q4_0 base merges into the F32 base and scores better than it",
              s_qm < 0.75 * s_base, f"ppl {s_base:.1f} -> {s_qm:.1f}")
        # QLoRA: an NF4 base (bitsandbytes' layout; bytes checked in tests/reference/test_grads.py).
        nf = os.path.join(tmp, "lora-nf4")
        run("pretrain", *[("10" if prev == "--max-steps" else x) for prev, x in zip([""] + largs, largs)],
            "--base-dtype", "nf4", "--out", nf)
        ln = [x["loss"] for x in metrics(nf) if "loss" in x]
        check("QLoRA (--base-dtype nf4) trains: the loss falls", ln[-1] < ln[0] and "nf4" in open(os.path.join(nf, "checkpoint-10", "README.md")).read(),
              f"{ln[0]:.3f} -> {ln[-1]:.3f}")
        # Frozen layers kept in bf16: the saved model holds them as the base had them, rounded once.
        fz = os.path.join(tmp, "freeze-bf16")
        run("pretrain", *common, "--out", fz, "--batch-size", "4", "--max-steps", "2", "--freeze-layers", "0",
            "--base-dtype", "bf16", "--save-dtype", "f32")
        wf = tensors(os.path.join(fz, "checkpoint-2", "model.safetensors"))
        k0, k1 = "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight"
        bf16_round = lambda a: (((a.view(np.uint32).astype(np.uint64) + 0x7FFF + ((a.view(np.uint32) >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
        check("--freeze-layers 0 --base-dtype bf16: layer 0 saved as the bf16-rounded base, layer 1 trained",
              np.array_equal(wf[k0], bf16_round(w0[k0])) and not np.allclose(wf[k1], w0[k1]))
        p = run_quiet("pretrain", *common, "--out", os.path.join(tmp, "rd-no-recompute"), "--max-steps", "1",
                      "--recompute-dtype", "bf16")
        check("--recompute-dtype without --recompute is refused", p.returncode == 1 and "--recompute-dtype" in p.stderr
              and len(p.stderr.strip().splitlines()) == 1, p.stderr.strip())
        p = run_quiet("pretrain", *common, "--out", os.path.join(tmp, "bd-no-frozen"), "--max-steps", "1", "--base-dtype", "q4_0")
        check("--base-dtype without anything frozen is refused before loading", p.returncode == 1
              and "--base-dtype" in p.stderr and "--lora-r" in p.stderr and len(p.stderr.strip().splitlines()) == 1, p.stderr.strip())

        # A GGUF file as the frozen base (the file llama.cpp runs), paired with its tokenizer: LoRA
        # trains over its blocks, and the adapter merges into the HF base it was exported from.
        gg = os.path.join(tmp, "base-q8_0.gguf")
        run("export-gguf", "--model", base, "--out", gg, "--outtype", "q8_0")
        gl = os.path.join(tmp, "lora-gguf")
        gargs = [x for x in largs if x != base] + ["--model", gg, "--tokenizer", base]
        gargs = [x for i, x in enumerate(gargs) if not (x == "--model" and gargs[i + 1] == "--data")]
        run("pretrain", *[("10" if prev == "--max-steps" else x) for prev, x in zip([""] + gargs, gargs)], "--out", gl)
        lg = [x["loss"] for x in metrics(gl) if "loss" in x]
        gck = os.path.join(gl, "checkpoint-10")
        gm = os.path.join(tmp, "lora-gguf-merged")
        run("merge-lora", "--model", base, "--adapter", gck, "--out", gm)
        check("LoRA over a Q8_0 GGUF base: loss falls, the adapter records its base and merges into the HF model",
              lg[-1] < lg[0] and json.load(open(os.path.join(gck, "adapter_config.json")))["base_model_name_or_path"].endswith(".gguf")
              and "q8_0" in open(os.path.join(gck, "README.md")).read() and os.path.exists(os.path.join(gm, "model.safetensors")),
              f"{lg[0]:.3f} -> {lg[-1]:.3f}")
        other = os.path.join(tmp, "other-tok")
        run("init", "--out", other, "--seed", "3", "--vocab", "400")
        for what, extra, want in [("without --tokenizer", ["--lora-r", "4"], "--tokenizer"), ("without LoRA", ["--tokenizer", base], "--lora-r"),
                                  ("with another model's tokenizer", ["--tokenizer", other, "--lora-r", "4"], "not this model's tokenizer")]:
            p = run_quiet("pretrain", "--model", gg, "--data", corpus, "--seq-len", "32", "--max-steps", "1", *extra,
                          "--out", os.path.join(tmp, "gguf-bad"))
            check(f"a GGUF base {what} is refused in one line", p.returncode == 1 and want in p.stderr
                  and len(p.stderr.strip().splitlines()) == 1 and not os.path.exists(os.path.join(tmp, "gguf-bad", "checkpoint-1")),
                  p.stderr.strip())

        # Mixtral: --lora-targets all adapts attention and the experts (PEFT's w1, w2, w3), not the
        # router; merge-lora folds the expert adapters into their experts.
        mx = os.path.join(tmp, "mixtral")
        run("init", "--out", mx, "--shape", "tiny-mixtral", "--seed", "2")
        mxl = os.path.join(tmp, "mixtral-lora")
        run("pretrain", "--model", mx, "--data", corpus, "--seq-len", "32", "--lr", "1e-2", "--batch-size", "2",
            "--max-steps", "2", "--lora-r", "4", "--lora-targets", "all", "--base-dtype", "q8_0", "--out", mxl)
        mck = os.path.join(mxl, "checkpoint-2")
        acfg = json.load(open(os.path.join(mck, "adapter_config.json")))
        ad = tensors(os.path.join(mck, "adapter_model.safetensors"))
        e1 = "base_model.model.model.layers.1.block_sparse_moe.experts.3.w2"
        check("Mixtral LoRA 'all': q, k, v, o and the experts' w1, w2, w3 in PEFT's names, router frozen",
              acfg["target_modules"] == ["q_proj", "k_proj", "v_proj", "o_proj", "w1", "w2", "w3"]
              and e1 + ".lora_A.weight" in ad and not any("gate" in k for k in ad), str(acfg["target_modules"]))
        mxm = os.path.join(tmp, "mixtral-merged")
        run("merge-lora", "--model", mx, "--adapter", mck, "--out", mxm)
        wb, wm = tensors(os.path.join(mx, "model.safetensors")), tensors(os.path.join(mxm, "model.safetensors"))
        k = "model.layers.1.block_sparse_moe.experts.3.w2.weight"
        want = wb[k] + (acfg["lora_alpha"] / acfg["r"]) * ad[e1 + ".lora_B.weight"] @ ad[e1 + ".lora_A.weight"]
        check("merge-lora folds an expert's adapter into that expert", np.abs(wm[k] - want).max() < 1e-6
              and np.abs(wm[k] - wb[k]).max() > 1e-4)
        p = run_quiet("pretrain", *common, "--out", os.path.join(tmp, "dense-w1"), "--max-steps", "1", "--lora-r", "4",
                      "--lora-targets", "w1")
        check("an expert target on a dense model is refused naming the right modules",
              p.returncode == 1 and "gate_proj" in p.stderr, p.stderr.strip())

        # Activation recomputation gives the same run.
        rc = os.path.join(tmp, "recompute")
        run("pretrain", *common, "--out", rc, "--batch-size", "4", "--grad-accum", "1", "--max-steps", "2", "--val-fraction", "0",
            "--recompute")
        mr = [x["loss"] for x in metrics(rc)]
        check("--recompute gives the same losses", np.allclose(mr, m1, rtol=1e-6), f"{mr} vs {m1}")

        # YAML config gives the same run as flags.
        cfg = os.path.join(tmp, "pretrain.yaml")
        open(cfg, "w").write(f"model: {base}\ndata: [{corpus}]\nseq_len: 32\nlr: 3.0e-3\nwarmup_ratio: 0.1\nbatch_size: 4\n"
                             f"grad_accum: 1\nmax_steps: 2\nval_fraction: 0\n")
        y = os.path.join(tmp, "yaml")
        run("pretrain", "--config", cfg, "--model", base, "--data", corpus, "--out", y)
        check("--config YAML == flags", [x["loss"] for x in metrics(y)] == m1)

        # JSONL input, Mixtral with the load-balancing loss.
        jl = os.path.join(tmp, "c.jsonl")
        with open(jl, "w") as f:
            for para in (TEXT * 20).split("\n\n"):
                f.write(json.dumps({"text": para}) + "\n")
        mx = os.path.join(tmp, "mx")
        run("init", "--out", mx, "--shape", "tiny-mixtral", "--seed", "2")
        mo = os.path.join(tmp, "mx-run")
        p = run("pretrain", "--model", mx, "--data", jl, "--out", mo, "--seq-len", "32", "--batch-size", "2", "--max-steps", "5")
        m = metrics(mo)
        check("mixtral trains from JSONL and logs aux_loss", p.returncode == 0 and all("aux_loss" in x for x in m if "loss" in x))

        # The load-balancing loss joins the objective as transformers adds it: only when config.json's
        # output_router_logits is true (weight router_aux_loss_coef), or with --aux-loss-coef.
        def first_gnorm(model, *extra):
            out = os.path.join(tmp, "aux-" + str(len(os.listdir(tmp))))
            run("pretrain", "--model", model, "--data", jl, "--out", out, "--seq-len", "32", "--batch-size", "2",
                "--max-steps", "1", "--lr", "0", "--val-fraction", "0", *extra)
            return metrics(out)[0]["grad_norm"]
        mx_on = os.path.join(tmp, "mx-router-logits")
        shutil.copytree(mx, mx_on)
        cfg = json.load(open(os.path.join(mx_on, "config.json")))
        cfg.update(output_router_logits=True, router_aux_loss_coef=0.5)
        json.dump(cfg, open(os.path.join(mx_on, "config.json"), "w"))
        off, on, given = first_gnorm(mx), first_gnorm(mx_on), first_gnorm(mx, "--aux-loss-coef", "0.5")
        check("aux loss follows output_router_logits (off by default), --aux-loss-coef sets it",
              abs(on - off) > 1e-6 and abs(on - given) < 1e-9 * max(1.0, on), f"off {off} on {on} given {given}")

        # LLaMA-Pro: only the inserted blocks train.
        pro = os.path.join(tmp, "pro")
        run("upscale", "--model", base, "--expand-every", "1", "--out", pro)
        pro_run = os.path.join(tmp, "pro-run")
        run("pretrain", "--model", pro, "--data", corpus, "--out", pro_run, "--seq-len", "32", "--max-steps", "3",
            "--only-new-layers", "--lr", "1e-2")
        before = tensors(os.path.join(pro, "model.safetensors"))
        after = tensors(os.path.join(pro_run, "checkpoint-3", "model.safetensors"))
        changed = {k.split(".")[2] if k.startswith("model.layers.") else k for k in before if not np.array_equal(before[k], after[k])}
        check("--only-new-layers trains just the expanded blocks", changed == {"1", "3"}, str(sorted(changed)))

        # A non-finite loss stops the run with a message, before any update.
        nan_model = os.path.join(tmp, "nan-model")
        shutil.copytree(base, nan_model)
        path = os.path.join(nan_model, "model.safetensors")
        blob = bytearray(open(path, "rb").read())
        (n,) = struct.unpack("<Q", blob[:8])
        h = json.loads(blob[8 : 8 + n])
        off = 8 + n + h["model.norm.weight"]["data_offsets"][0]
        blob[off : off + 4] = struct.pack("<f", float("nan"))
        open(path, "wb").write(blob)
        p = run_quiet("pretrain", "--model", nan_model, "--data", corpus, "--out", os.path.join(tmp, "nan-run"), "--seq-len", "32")
        check("NaN loss stops with a clear message", p.returncode == 1 and "not finite" in p.stderr, p.stderr.strip()[-160:])
        blocker = os.path.join(tmp, "a-file")
        open(blocker, "w").write("not a directory\n")
        p = run_quiet("pretrain", *common, "--out", os.path.join(blocker, "sub"))
        check("unwritable output directory", p.returncode == 1 and "cannot create the output directory" in p.stderr)
        p = run_quiet("pretrain", "--model", base, "--data", corpus, "--out", os.path.join(tmp, "long"), "--seq-len", "4096")
        check("sequence longer than max_position_embeddings", p.returncode == 1 and "exceeds max_position_embeddings" in p.stderr)

        # Bad data is named with file and line.
        bad = os.path.join(tmp, "bad.jsonl")
        open(bad, "w").write('{"text": "fine"}\n{"txt": "oops"}\n')
        p = run_quiet("pretrain", "--model", base, "--data", bad, "--out", os.path.join(tmp, "bad"))
        check("malformed JSONL names file:line", p.returncode == 1 and f"{bad}:2" in p.stderr, p.stderr.strip()[-160:])
        tiny = os.path.join(tmp, "tiny.txt")
        open(tiny, "w").write("too short\n")
        p = run_quiet("pretrain", "--model", base, "--data", tiny, "--out", os.path.join(tmp, "tiny"))
        check("too little data is an error", p.returncode == 1 and "fewer than one step needs" in p.stderr, p.stderr.strip()[-160:])
    finally:
        shutil.rmtree(tmp)
    report.finish()


if __name__ == "__main__":
    main()
