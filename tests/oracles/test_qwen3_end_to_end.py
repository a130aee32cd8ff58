"""A Qwen3 model as published, end to end: a small random-weight Qwen3ForCausalLM of Qwen3-0.6B's
architecture (per-head q/k norms, explicit head_dim, tied embeddings, no BOS, a vocabulary padded
beyond the tokenizer's ids, two EOS ids) built and saved by transformers itself, beside the real
Qwen3 tokenizer.json and tokenizer_config.json (its chat template, with thinking), then taken
through lamina's commands and compared with transformers:
  - template --ids and generate --chat: the prompt the model's own template renders and the greedy
    reply equal transformers' apply_chat_template + generate;
  - upscale (SOLAR's DUS): the deeper model keeps q/k norms, tokenizer and template, and its
    logits equal transformers' on the up-scaled directory;
  - sft through the model's own template lowers the loss and the checkpoint chats; dpo on
    conversational pairs trains (DPO on a Qwen instruct model, as TRL users run it);
  - export-gguf: llama.cpp's qwen3 architecture (NEOX RoPE: rows unpermuted, attn_q_norm /
    attn_k_norm) with the "gpt2" vocabulary and the qwen2 pre-tokenizer, run by lamina with
    transformers' logits. (llama.cpp itself ran such files by hand: docs/MODELS.md.)

usage: test_qwen3_end_to_end.py LAMINA ASSETS_DIR        prints 'N passed, M failed'
"""
import json
import os
import shutil
import sys
import tempfile

import numpy as np
import torch

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import Report, runner, unpack_tokenizer  # noqa: E402

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from chat_training import check_chat_training  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "reference"))
from test_gguf import read_gguf  # noqa: E402

from transformers import AutoTokenizer, GenerationConfig, Qwen3Config, Qwen3ForCausalLM  # noqa: E402

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]), echo_failures=False)
assets = os.path.abspath(sys.argv[2])
torch.set_num_threads(2)
EOS = [151645, 151643]  # <|im_end|>, <|endoftext|> (Qwen3's generation_config.json)


def build(d):
    unpack_tokenizer(assets, "qwen3", d)
    cfg = Qwen3Config(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=32, vocab_size=151936, max_position_embeddings=1024,
                      rope_theta=1000000.0, tie_word_embeddings=True, bos_token_id=151643, eos_token_id=EOS,
                      attn_implementation="eager")
    torch.manual_seed(0)
    model = Qwen3ForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if p.dim() == 1 else 0.15 * torch.randn_like(p))
    model.generation_config = GenerationConfig(bos_token_id=151643, eos_token_id=EOS, do_sample=False)
    model.save_pretrained(d, safe_serialization=True)
    return model


def logits_check(name, d, ids, ref_model, tmp, tol, *extra):
    npy = os.path.join(tmp, "logits.npy")
    p = run("score", "--model", d, *extra, "--ids", ",".join(map(str, ids)), "--dump-logits", npy, "--threads", "2")
    if not check(f"{name}: lamina scores it", p.returncode == 0, p.stderr[-300:]):
        return
    with torch.no_grad():
        ref = ref_model(torch.tensor([ids])).logits[0]
    err = (torch.from_numpy(np.load(npy)) - ref).abs().max().item()
    check(f"{name}: logits equal transformers' (max abs err {err:.2e}, tol {tol:g})", err <= tol)


def main():
    tmp = tempfile.mkdtemp(prefix="lamina-qwen3-")
    try:
        d = os.path.join(tmp, "qwen3")
        model = build(d)
        tok = AutoTokenizer.from_pretrained(d, local_files_only=True)

        # Chat: the same prompt ids (no BOS) and the same greedy reply.
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there 你好"}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=EOS,
                                 pad_token_id=EOS[1])[0, len(ids):].tolist()
        want = tok.decode(out, skip_special_tokens=True)
        mf = os.path.join(tmp, "msgs.json")
        json.dump(msgs, open(mf, "w"))
        t = run("template", "--model", d, "--messages", mf, "--generation-prompt", "--ids")
        lam_ids = json.loads(t.stdout.rsplit("\n", 2)[-2]) if t.returncode == 0 else None
        check("the prompt ids equal apply_chat_template's (no BOS)", lam_ids == list(ids), f"{lam_ids} vs {ids}"[:400])
        p = run("generate", "--model", d, "--chat", "--system", "Be brief.", "--prompt", "Hi there 你好",
                "--max-new-tokens", "8", "--threads", "2")
        check("generate --chat: the greedy reply equals transformers' generate",
              p.returncode == 0 and p.stdout.strip() == want.strip(),
              f"lamina {p.stdout!r} transformers {want!r} {p.stderr[-300:]}")

        # SOLAR's depth up-scaling: 4 layers -> 6, q/k norms carried; transformers loads the result.
        up = os.path.join(tmp, "up")
        p = run("upscale", "--model", d, "--out", up, "--drop", "1")
        if check("upscale runs", p.returncode == 0, p.stderr[-300:]):
            c = json.load(open(os.path.join(up, "config.json")))
            check("the up-scaled config is a 6-layer qwen3", c["num_hidden_layers"] == 6 and c["model_type"] == "qwen3",
                  json.dumps(c)[:300])
            um = Qwen3ForCausalLM.from_pretrained(up, attn_implementation="eager").float().eval()
            x = np.random.default_rng(1).integers(0, 151643, size=40).tolist()
            # Random logits over 152k ids: measured ~1e-5; bound a few times that.
            logits_check("the up-scaled model", up, x, um, tmp, 6e-5)
            tk = AutoTokenizer.from_pretrained(up, local_files_only=True)
            check("the up-scaled model's tokenizer and template are the model's",
                  tk.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                  == tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))

        # SFT through the model's own template; DPO on conversational pairs.
        check_chat_training(run, check, d, tmp, "Qwen3", ("--lora-r", "4"))

        # GGUF: llama.cpp's qwen3 (q/k norms, rows as transformers has them) with the qwen2 pre-tokenizer.
        g = os.path.join(tmp, "x.gguf")
        p = run("export-gguf", "--model", d, "--out", g, "--outtype", "f32")
        if check("export-gguf writes the qwen3 model", p.returncode == 0, p.stderr[-300:]):
            meta, tensors = read_gguf(g)
            check("GGUF: architecture qwen3, gpt2 vocabulary, qwen2 pre-tokenizer, q/k norm tensors",
                  meta.get("general.architecture") == "qwen3" and meta.get("tokenizer.ggml.model") == "gpt2"
                  and meta.get("tokenizer.ggml.pre") == "qwen2" and "blk.0.attn_q_norm.weight" in tensors
                  and "blk.3.attn_k_norm.weight" in tensors and "qwen3.attention.key_length" in meta,
                  f"{meta.get('general.architecture')} {meta.get('tokenizer.ggml.pre')}")
            x = np.random.default_rng(2).integers(0, 151643, size=60).tolist()
            logits_check("the GGUF", g, x, model, tmp, 6e-5, "--tokenizer", d)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.finish()


main()
