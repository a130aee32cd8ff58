"""`lamina dpo` against TRL's DPOTrainer itself: the same preference rows, the same tiny models
(written by `lamina init` with the real Llama 2 SentencePiece tokenizer, loaded by transformers), one
step at learning rate 0, and the step-1 metrics compared: loss, rewards/chosen, rewards/rejected,
rewards/accuracies, rewards/margins, logps/chosen, logps/rejected, the gradient norm, and for a
tiny Mixtral the load-balancing aux_loss (transformers' load_balancing_loss_func with the batch's
attention mask, padding left out).

Rows: conversational (message lists through the llama-2 chat template), TRL's standard plain text
(used as they are, EOS appended), implicit prompts in plain text (hh-rlhf style) and as message
lists whose content is a list of text parts (TRL is given the same text as strings: the llama-2
Jinja template calls .strip() on content and takes strings only). The reference is another model,
so the rewards are not zero. Losses: sigmoid, ipo, hinge, robust (label smoothing 0.1); two cases truncated (max_length 24, keep_start and keep_end).

usage: test_trl.py LAMINA        prints 'N passed, M failed'
"""
import json
import os
import subprocess
import sys
import tempfile

for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE"):
    os.environ[k] = "1"
os.environ["WANDB_DISABLED"] = "true"
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from oracle_common import Report, hf_model, hf_tokenizer, runner, tool_versions  # noqa: E402

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from trl import DPOConfig, DPOTrainer  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
LLAMA2 = os.path.join(HERE, "..", "assets", "tokenizers", "llama2", "tokenizer.model")
METRICS = ["loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "logps/chosen", "logps/rejected"]


def parts(text):
    """A message content as text parts, split in two so the joining is tested."""
    h = len(text) // 2
    return [{"type": "text", "text": text[:h]}, {"type": "text", "text": text[h:]}]


def cases():
    conv = [{"prompt": [{"role": "system", "content": "Answer briefly."}, {"role": "user", "content": f"What is {i} plus one?"}],
             "chosen": [{"role": "assistant", "content": f"It is {i + 1}."}],
             "rejected": [{"role": "assistant", "content": f"I think it is {i + 2}, maybe."}]} for i in range(4)]
    plain = [{"prompt": f"Question: what is {i} times two?\nAnswer:", "chosen": f" {2 * i}.", "rejected": f" Perhaps {2 * i + 1}."}
             for i in range(4)]
    hh = [{"chosen": f"\n\nHuman: name a colour number {i}.\n\nAssistant: Blue, number {i}.",
           "rejected": f"\n\nHuman: name a colour number {i}.\n\nAssistant: I would rather not say."} for i in range(4)]
    implicit = []
    for i in range(4):
        q = [{"role": "user", "content": f"Spell the number {i}."}]
        implicit.append({"chosen": q + [{"role": "assistant", "content": ["zero", "one", "two", "three"][i]}],
                         "rejected": q + [{"role": "assistant", "content": f"It is spelled {i}{i}."}]})
    implicit_parts = [{k: [dict(m, content=parts(m["content"])) for m in v] for k, v in row.items()} for row in implicit]
    # name, model, lamina rows, TRL rows, loss, label smoothing, max_length (the hh rows are 23-30
    # tokens: 24 cuts the completions, keep_start; negative: keep_end, cutting the prompts' start)
    return [("conversational, llama-2 template, sigmoid", "llama", conv, conv, "sigmoid", 0.0, 64),
            ("standard plain text, ipo", "llama", plain, plain, "ipo", 0.0, 64),
            ("implicit prompt, plain text (hh-rlhf), hinge, max_length 24", "llama", hh, hh, "hinge", 0.0, 24),
            ("implicit prompt, plain text (hh-rlhf), sigmoid, max_length 24 keep_end", "llama", hh, hh, "sigmoid", 0.0, -24),
            ("implicit prompt, message lists of text parts, robust", "llama", implicit_parts, implicit, "robust", 0.1, 64),
            ("tiny-mixtral, standard plain text, sigmoid with aux loss", "mixtral", plain, plain, "sigmoid", 0.0, 64)]


def trl_step(policy, ref, rows, loss, eps, max_length, out):
    """TRL's metrics of one DPO step at learning rate 0 over all rows in one batch."""
    tok = hf_tokenizer(policy)
    if "mixtral" in policy:
        # AutoTokenizer of transformers 5.23 gives a lamina-written Mixtral directory (tokenizer.model,
        # tokenizer_class LlamaTokenizer) a generic TokenizersBackend without the SentencePiece
        # prefix space ("Question" -> 16492, not 894); the Llama tokenizer the class names is what
        # real Mixtral checkpoints load.
        from transformers import LlamaTokenizer

        tok = LlamaTokenizer.from_pretrained(policy, local_files_only=True)
    mode = "keep_end" if max_length < 0 else "keep_start"
    cfg = DPOConfig(output_dir=out, truncation_mode=mode, learning_rate=0.0, max_steps=1, per_device_train_batch_size=len(rows), beta=0.1,
                    loss_type=[loss], label_smoothing=eps, max_length=abs(max_length), report_to="none", use_cpu=True,
                    logging_steps=1, save_strategy="no", seed=0, disable_tqdm=True,
                    bf16=False)  # TRL defaults to bf16 autocast, on CPU too; lamina computes in F32
    tr = DPOTrainer(model=hf_model(policy).train(), ref_model=hf_model(ref), args=cfg,
                    train_dataset=Dataset.from_list(rows), processing_class=tok)
    tr.train()
    return tr.state.log_history[0], tr.router_aux_loss_coef


def main():
    lamina = os.path.abspath(sys.argv[1])
    report = Report()
    run = runner(lamina)
    print("reproducing", tool_versions("trl", "transformers", "torch"))
    with tempfile.TemporaryDirectory() as tmp:
        models = {}
        for name, shape in [("llama", "tiny"), ("mixtral", "tiny-mixtral")]:
            pair = []
            for seed in (4, 5):  # policy, reference
                d = os.path.join(tmp, f"{name}-{seed}")
                subprocess.run([lamina, "init", "--out", d, "--shape", shape, "--tokenizer", LLAMA2, "--chat-template", "llama-2",
                                "--layers", "2", "--seed", str(seed)], check=True, stdout=subprocess.DEVNULL)
                pair.append(d)
            models[name] = pair
        for i, (name, model, lam_rows, trl_rows, loss, eps, max_length) in enumerate(cases()):
            policy, ref = models[model]
            data = os.path.join(tmp, f"pairs{i}.jsonl")
            with open(data, "w") as f:
                f.writelines(json.dumps(r) + "\n" for r in lam_rows)
            out = os.path.join(tmp, f"lamina{i}")
            p = run("dpo", "--model", policy, "--ref-model", ref, "--data", data, "--loss", loss, "--beta", "0.1",
                    "--label-smoothing", str(eps), "--seq-len", "128", "--batch-size", str(len(lam_rows)), "--max-steps", "1",
                    "--lr", "0", "--val-fraction", "0", "--max-length", str(abs(max_length)), "--truncation-mode",
                    "keep_end" if max_length < 0 else "keep_start", "--strict", "--out", out)
            if p.returncode != 0:
                report.check(f"{name}: lamina dpo runs", False, p.stderr.strip()[-300:])
                continue
            got = [json.loads(line) for line in open(os.path.join(out, "metrics.jsonl")) if '"loss"' in line][0]
            want, coef = trl_step(policy, ref, trl_rows, loss, eps, max_length, os.path.join(tmp, f"trl{i}"))
            if model == "mixtral":  # TRL's loss includes coef * aux_loss; lamina logs them apart
                got["loss"] += coef * got["aux_loss"]
                err = abs(got["aux_loss"] - want["aux_loss"])
                report.check(f"{name}: aux_loss {got['aux_loss']:.8f} vs TRL {want['aux_loss']:.8f} (error {err:.1e})",
                             err < 1e-6, "")
            worst, detail = 0.0, []
            for m in METRICS:
                e = abs(got[m] - want[m]) / max(1.0, abs(want[m]))
                worst = max(worst, e)
                detail.append(f"{m} {got[m]:.6f}/{want[m]:.6f}")
            report.check(f"{name}: metrics match TRL (worst relative error {worst:.1e})", worst < 5e-6, "; ".join(detail))
            report.check(f"{name}: rewards/accuracies {got['rewards/accuracies']} vs TRL {want['rewards/accuracies']}",
                         abs(got["rewards/accuracies"] - want["rewards/accuracies"]) < 1e-9)
            if "text parts" in name:
                # The UltraFeedback-binarized layout (a "prompt" string and message lists that hold it,
                # which TRL itself cannot take) reads as these implicit-prompt rows.
                h4 = os.path.join(tmp, "h4.jsonl")
                with open(h4, "w") as f:
                    f.writelines(json.dumps(dict(r, prompt=r["chosen"][0]["content"])) + "\n" for r in trl_rows)
                p = run("dpo", "--model", policy, "--ref-model", ref, "--data", h4, "--loss", loss, "--label-smoothing",
                        str(eps), "--seq-len", "128", "--batch-size", str(len(lam_rows)), "--max-steps", "1", "--lr", "0",
                        "--val-fraction", "0", "--strict", "--out", out + "-h4")
                h = [json.loads(line) for line in open(os.path.join(out + "-h4", "metrics.jsonl")) if '"loss"' in line][0]
                report.check(f"{name}: the UltraFeedback-binarized layout gives the same metrics",
                             all(h[m] == got[m] for m in METRICS), f"logps/chosen {h['logps/chosen']:.6f}")
            ge = abs(got["grad_norm"] - want["grad_norm"]) / want["grad_norm"]
            report.check(f"{name}: gradient norm {got['grad_norm']:.6f} vs TRL {want['grad_norm']:.6f} (relative error {ge:.1e})",
                         ge < 1e-4)
    report.finish()


if __name__ == "__main__":
    main()
