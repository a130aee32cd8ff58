"""PyTorch baseline for the forward benchmark: the same model, eager PyTorch as transformers runs
it (Linear products, fp32 RMSNorm/softmax, a KV cache for decoding, SDPA attention).

usage: torch_baseline.py MODEL_DIR PROMPT_TOKENS DECODE_TOKENS REPEATS f32|bf16 THREADS
prints one JSON line. Set OPENBLAS_CORETYPE in the environment before starting it to compare.
"""
import json
import os
import sys
import time

import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "tests", "reference"))
import reference_model as R  # noqa: E402


class Model:
    def __init__(self, d, dtype):
        self.cfg, w = R.load_model_dir(d)
        self.dt = dtype
        self.w = {k: (v if k.endswith("norm.weight") else v.to(dtype)).contiguous() for k, v in w.items()}
        c = self.cfg
        self.nh, self.nkv = c["num_attention_heads"], c["num_key_value_heads"]
        self.hd = c.get("head_dim") or c["hidden_size"] // self.nh
        inv = 1.0 / (c.get("rope_theta", 1e4) ** (torch.arange(0, self.hd, 2).float() / self.hd))
        pos = torch.arange(c["max_position_embeddings"]).float()
        emb = torch.cat([pos[:, None] * inv] * 2, dim=-1)
        self.cos, self.sin = emb.cos().to(dtype), emb.sin().to(dtype)

    def norm(self, x, w):
        xf = x.float()
        return (w * (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.cfg["rms_norm_eps"]))).to(self.dt)

    def forward(self, ids, cache, last_only=True):
        w, T, p0 = self.w, len(ids), cache["len"]
        x = w["model.embed_tokens.weight"][ids]
        cos, sin = self.cos[p0 : p0 + T], self.sin[p0 : p0 + T]
        for l in range(self.cfg["num_hidden_layers"]):
            p = f"model.layers.{l}."
            h = self.norm(x, w[p + "input_layernorm.weight"])
            q = F.linear(h, w[p + "self_attn.q_proj.weight"]).view(T, self.nh, self.hd).transpose(0, 1)
            k = F.linear(h, w[p + "self_attn.k_proj.weight"]).view(T, self.nkv, self.hd).transpose(0, 1)
            v = F.linear(h, w[p + "self_attn.v_proj.weight"]).view(T, self.nkv, self.hd).transpose(0, 1)
            q = q * cos + R.rotate_half(q) * sin
            k = k * cos + R.rotate_half(k) * sin
            kc, vc = cache[l]
            kc[:, p0 : p0 + T] = k
            vc[:, p0 : p0 + T] = v
            rep = self.nh // self.nkv
            K = kc[:, : p0 + T].repeat_interleave(rep, 0)
            V = vc[:, : p0 + T].repeat_interleave(rep, 0)
            # Eager attention as transformers' LlamaAttention (Debian's torch 1.13 has no SDPA).
            s = (q @ K.transpose(1, 2)) / self.hd ** 0.5
            if T > 1:
                s = s + torch.full((T, p0 + T), float("-inf")).triu(p0 + 1).to(s.dtype)
            a = torch.softmax(s, dim=-1, dtype=torch.float32).to(self.dt) @ V
            x = x + F.linear(a.transpose(0, 1).reshape(T, -1), w[p + "self_attn.o_proj.weight"])
            h = self.norm(x, w[p + "post_attention_layernorm.weight"])
            g = F.silu(F.linear(h, w[p + "mlp.gate_proj.weight"])) * F.linear(h, w[p + "mlp.up_proj.weight"])
            x = x + F.linear(g, w[p + "mlp.down_proj.weight"])
        cache["len"] += T
        if last_only:
            x = x[-1:]
        return F.linear(self.norm(x, w["model.norm.weight"]), w["lm_head.weight"]).float()

    def new_cache(self, n):
        c = {"len": 0}
        for l in range(self.cfg["num_hidden_layers"]):
            c[l] = (torch.zeros(self.nkv, n, self.hd, dtype=self.dt), torch.zeros(self.nkv, n, self.hd, dtype=self.dt))
        return c


def main():
    d, T, D, reps, dt, threads = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5], int(sys.argv[6])
    torch.set_num_threads(threads)
    m = Model(d, torch.bfloat16 if dt == "bf16" else torch.float32)
    V = m.cfg["vocab_size"]
    ids = torch.tensor([(i * 7919 + 13) % V for i in range(T)])
    best_p = best_d = float("inf")
    with torch.inference_mode():
        for r in range(reps + 1):
            c = m.new_cache(T + D)
            t0 = time.perf_counter()
            logits = m.forward(ids, c)
            tp = time.perf_counter() - t0
            nxt = torch.tensor([1])
            t0 = time.perf_counter()
            for _ in range(D):
                logits = m.forward(nxt, c)
                nxt = logits[-1].argmax().view(1)
            td = time.perf_counter() - t0
            if r:
                best_p, best_d = min(best_p, tp), min(best_d, td)
    print(json.dumps({"prompt_tokens_per_s": T / best_p, "decode_tokens_per_s": D / best_d, "threads": torch.get_num_threads(),
                      "torch": torch.__version__, "openblas_coretype": os.environ.get("OPENBLAS_CORETYPE", "")}))


if __name__ == "__main__":
    main()
