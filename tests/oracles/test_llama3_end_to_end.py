"""A Llama 3.x model as published, end to end: a small random-weight LlamaForCausalLM of Llama
3.2-1B's architecture (tied embeddings, rope_scaling llama3, several EOS ids) built and saved by
transformers itself, beside the real Llama 3.1 tokenizer.json and tokenizer_config.json (its
chat template), then taken through lamina's commands and compared with transformers:
  - generate --chat: the prompt rendered by the model's own template and the greedy reply equal
    transformers' apply_chat_template + generate (EOS from generation_config's list);
  - upscale (SOLAR's DUS): the deeper model keeps the tokenizer, template and rope_scaling, and
    its logits equal transformers' on the up-scaled directory;
  - sft through the model's own template, and dpo on conversational pairs: they train (the loss
    is finite and SFT's goes down) and the checkpoint chats;
  - export-gguf: llama.cpp's "gpt2" vocabulary (tokens, types, merges, llama-bpe) and Llama 3's
    rope_freqs as convert_hf_to_gguf writes them, and lamina runs the GGUF with transformers'
    logits. (llama.cpp itself, through llama-cpp-python, was run on such a file by hand: ids
    identical to tokenizers on 4482 lines, logits within 9e-6 of transformers with an F32 KV
    cache; see docs/MODELS.md.)

usage: test_llama3_end_to_end.py LAMINA ASSETS_DIR        prints 'N passed, M failed'
"""
import json
import math
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

from transformers import AutoTokenizer, GenerationConfig, LlamaConfig, LlamaForCausalLM  # noqa: E402

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]), echo_failures=False)
assets = os.path.abspath(sys.argv[2])
torch.set_num_threads(2)
EOS = [128001, 128008, 128009]


def build(d):
    unpack_tokenizer(assets, "llama3.1", d)
    cfg = LlamaConfig(hidden_size=64, intermediate_size=128, num_hidden_layers=4, num_attention_heads=4,
                      num_key_value_heads=2, head_dim=16, vocab_size=128256, max_position_embeddings=1024,
                      rope_theta=500000.0, tie_word_embeddings=True, bos_token_id=128000, eos_token_id=EOS,
                      rope_scaling={"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                    "high_freq_factor": 4.0, "original_max_position_embeddings": 64},
                      attn_implementation="eager")
    torch.manual_seed(0)
    model = LlamaForCausalLM(cfg).float().eval()
    with torch.no_grad():
        for _, p in model.named_parameters():
            p.copy_(1 + 0.1 * torch.randn_like(p) if p.dim() == 1 else 0.15 * torch.randn_like(p))
    model.generation_config = GenerationConfig(bos_token_id=128000, eos_token_id=EOS, do_sample=False)
    model.save_pretrained(d, safe_serialization=True)
    return model


def main():
    tmp = tempfile.mkdtemp(prefix="lamina-llama3-")
    try:
        d = os.path.join(tmp, "llama3")
        model = build(d)
        tok = AutoTokenizer.from_pretrained(d, local_files_only=True)

        # Chat: the same prompt ids and the same greedy reply.
        msgs = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi there 你好"}]
        ids = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=True, return_dict=False)
        if isinstance(ids, dict) or hasattr(ids, "input_ids"):
            ids = ids["input_ids"]
        with torch.no_grad():
            out = model.generate(torch.tensor([ids]), max_new_tokens=8, do_sample=False, eos_token_id=EOS,
                                 pad_token_id=EOS[0])[0, len(ids):].tolist()
        want = tok.decode(out, skip_special_tokens=True)
        mf = os.path.join(tmp, "msgs.json")
        json.dump(msgs, open(mf, "w"))
        t = run("template", "--model", d, "--messages", mf, "--generation-prompt", "--ids")
        lam_ids = json.loads(t.stdout.rsplit("\n", 2)[-2]) if t.returncode == 0 else None
        check("the prompt ids equal apply_chat_template's", lam_ids == list(ids), f"{lam_ids} vs {ids}"[:400])
        p = run("generate", "--model", d, "--chat", "--system", "Be brief.", "--prompt", "Hi there 你好",
                "--max-new-tokens", "8", "--threads", "2")
        check("generate --chat: the greedy reply equals transformers' generate", p.returncode == 0 and p.stdout.strip() == want.strip(),
              f"lamina {p.stdout!r} transformers {want!r} {p.stderr[-300:]}")

        # SOLAR's depth up-scaling: 4 layers -> 6; transformers loads the result, logits agree.
        up = os.path.join(tmp, "up")
        p = run("upscale", "--model", d, "--out", up, "--drop", "1")
        if check("upscale runs", p.returncode == 0, p.stderr[-300:]):
            c = json.load(open(os.path.join(up, "config.json")))
            rs = c.get("rope_scaling") or c.get("rope_parameters") or {}
            check("the up-scaled config keeps 6 layers and rope_scaling llama3",
                  c["num_hidden_layers"] == 6 and rs.get("rope_type") == "llama3", json.dumps(c)[:300])
            um = LlamaForCausalLM.from_pretrained(up, attn_implementation="eager").float().eval()
            x = np.random.default_rng(1).integers(0, 128000, size=40).tolist()
            npy = os.path.join(tmp, "up.npy")
            p = run("score", "--model", up, "--ids", ",".join(map(str, x)), "--dump-logits", npy, "--threads", "2")
            if check("score on the up-scaled model", p.returncode == 0, p.stderr[-300:]):
                with torch.no_grad():
                    ref = um(torch.tensor([x])).logits[0]
                err = (torch.from_numpy(np.load(npy)) - ref).abs().max().item()
                # Measured 1.7e-5 (random logits over 128k ids); bound a few times that.
                check(f"up-scaled logits equal transformers' (max abs err {err:.2e})", err <= 6e-5)
            tk = AutoTokenizer.from_pretrained(up, local_files_only=True)
            check("the up-scaled model's tokenizer and template are the model's",
                  tk.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
                  == tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False))

        # SFT through the model's own template; DPO on conversational pairs.
        check_chat_training(run, check, d, tmp, "Llama 3")

        # GGUF: llama.cpp's "gpt2" vocabulary and Llama 3's rope_freqs, as convert_hf_to_gguf
        # writes them (its rules restated here), and the file runs in lamina with the same logits.
        g = os.path.join(tmp, "x.gguf")
        p = run("export-gguf", "--model", d, "--out", g, "--outtype", "f32")
        if check("export-gguf writes the tokenizer.json model", p.returncode == 0, p.stderr[-300:]):
            meta, tensors = read_gguf(g)
            tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
            vocab = {i: t for t, i in tj["model"]["vocab"].items()}
            added = {a["id"]: a for a in tj["added_tokens"]}
            want_tokens, want_types = [], []
            for i in range(128256):
                if i in added:
                    t = added[i]["content"]
                    special = added[i]["special"] or (t.startswith("<|") and t.endswith("|>"))
                    want_tokens.append(t), want_types.append(3 if special else 4)
                elif i in vocab:
                    want_tokens.append(vocab[i]), want_types.append(1)
                else:
                    want_tokens.append(f"[PAD{i}]"), want_types.append(5)
            merges = [m if isinstance(m, str) else " ".join(m) for m in tj["model"]["merges"]]
            check("GGUF vocabulary: gpt2, llama-bpe, tokens, types and merges as convert_hf_to_gguf",
                  meta.get("tokenizer.ggml.model") == "gpt2" and meta.get("tokenizer.ggml.pre") == "llama-bpe"
                  and meta.get("tokenizer.ggml.tokens") == want_tokens
                  and meta.get("tokenizer.ggml.token_type") == want_types
                  and meta.get("tokenizer.ggml.merges") == merges
                  and meta.get("tokenizer.ggml.bos_token_id") == tok.bos_token_id
                  and meta.get("tokenizer.ggml.eos_token_id") == tok.eos_token_id
                  and "tokenizer.ggml.scores" not in meta,
                  f"{meta.get('tokenizer.ggml.model')} {meta.get('tokenizer.ggml.pre')} "
                  f"{len(meta.get('tokenizer.ggml.tokens', []))} tokens, {len(meta.get('tokenizer.ggml.merges', []))} merges")
            # rope_freqs: the divisor of each frequency (convert_hf_to_gguf's loop, in float32).
            rs = model.config.rope_parameters if hasattr(model.config, "rope_parameters") else model.config.rope_scaling
            freqs = 1.0 / (500000.0 ** (torch.arange(0, 16, 2, dtype=torch.float32) / 16))
            f, lo, hi, old = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"], rs["original_max_position_embeddings"]
            want = []
            for fr in freqs:
                wl = 2 * math.pi / fr
                if wl < old / hi:
                    want.append(1)
                elif wl > old / lo:
                    want.append(f)
                else:
                    sm = (old / wl - lo) / (hi - lo)
                    want.append(1 / ((1 - sm) / f + sm))
            want = torch.tensor(want, dtype=torch.float32).numpy()
            ne, tname, raw = tensors.get("rope_freqs.weight", ([], "", b""))
            got = np.frombuffer(raw, dtype=np.float32) if tname == "F32" else np.zeros(0)
            check("rope_freqs.weight: F32 [8], llama3's factors", ne == [8] and got.shape == want.shape
                  and np.abs(got - want).max() <= 1e-6 * np.abs(want).max(), f"{ne} {tname} {got} {want}")
            x = np.random.default_rng(2).integers(0, 128000, size=80).tolist()
            npy = os.path.join(tmp, "gguf.npy")
            p = run("score", "--model", g, "--tokenizer", d, "--ids", ",".join(map(str, x)), "--dump-logits", npy,
                    "--threads", "2")
            if check("lamina runs the GGUF (rope_freqs read back)", p.returncode == 0, p.stderr[-300:]):
                with torch.no_grad():
                    ref = model(torch.tensor([x])).logits[0]
                err = (torch.from_numpy(np.load(npy)) - ref).abs().max().item()
                # Measured 9.7e-6 at 80 positions; without rope_freqs the logits differ by ~5.
                check(f"the GGUF's logits equal transformers' (max abs err {err:.2e})", err <= 4e-5)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    report.finish()


main()
