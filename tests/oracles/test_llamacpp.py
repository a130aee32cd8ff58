"""lamina's GGUF files against llama.cpp itself (llama-cpp-python, built from source for this CPU,
and llama.cpp's gguf package; scripts/llamacpp-requirements.txt):

- ggml's quantizers: every block type lamina writes, without and with an importance matrix, on
  rows chosen to reach the quantizers' corners (zeros, constants, outliers, sub-normal scales),
  byte-identical to ggml_quantize_chunk; lamina's decoders equal ggml's to_float bit for bit.
- llama-quantize's mixes: `lamina export-gguf --outtype q4_k_m` (and every other mix) equals
  llama_model_quantize run on lamina's f32 export, tensor for tensor (types and bytes), on a dense
  Llama with GQA, a tied Llama whose rows are not whole k-quant blocks (fallback types), Mixtral
  with 8 experts and Qwen2.
- the gguf package reads every file lamina writes back (its own numpy dequantizers equal lamina's).
- greedy decoding of lamina on an f16 export equals llama.cpp's on the same file.

usage: test_llamacpp.py LAMINA QUANT_PROBE ASSETS_DIR     prints 'N passed, M failed'
"""
import ctypes
import glob
import json
import os
import subprocess
import sys
import tempfile
from importlib.metadata import version

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import Report, runner, unpack_tokenizer  # noqa: E402

import gguf  # noqa: E402
import llama_cpp  # noqa: E402

GGML_TYPES = {"f32": 0, "f16": 1, "q4_0": 2, "q5_0": 6, "q5_1": 7, "q8_0": 8, "q2_k": 10, "q3_k": 11,
              "q4_k": 12, "q5_k": 13, "q6_k": 14, "bf16": 30}
# llama_ftype of each mix export-gguf writes (llama.h).
FTYPES = {"q4_0": 2, "q8_0": 7, "q2_k": 10, "q3_k_s": 11, "q3_k_m": 12, "q3_k_l": 13, "q4_k_s": 14,
          "q4_k_m": 15, "q5_k_s": 16, "q5_k_m": 17, "q6_k": 18}


def ggml_lib():
    lib = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-base.so*"))[0])
    lib.ggml_quantize_chunk.restype = ctypes.c_size_t
    lib.ggml_quantize_chunk.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                                        ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    lib.ggml_row_size.restype = ctypes.c_size_t
    lib.ggml_row_size.argtypes = [ctypes.c_int, ctypes.c_int64]

    class Traits(ctypes.Structure):
        _fields_ = [("type_name", ctypes.c_char_p), ("blck_size", ctypes.c_int64),
                    ("blck_size_interleave", ctypes.c_int64), ("type_size", ctypes.c_size_t),
                    ("is_quantized", ctypes.c_bool), ("to_float", ctypes.c_void_p),
                    ("from_float_ref", ctypes.c_void_p)]

    lib.ggml_get_type_traits.restype = ctypes.POINTER(Traits)
    lib.ggml_get_type_traits.argtypes = [ctypes.c_int]
    return lib


def ggml_quantize(lib, t, rows, imatrix):
    rows = np.ascontiguousarray(rows, dtype=np.float32)
    nrows, n = rows.shape
    out = np.zeros(lib.ggml_row_size(GGML_TYPES[t], n) * nrows, dtype=np.uint8)
    qw = None if imatrix is None else np.ascontiguousarray(imatrix, dtype=np.float32)
    lib.ggml_quantize_chunk(GGML_TYPES[t], rows.ctypes.data, out.ctypes.data, 0, nrows, n,
                            None if qw is None else qw.ctypes.data)
    return out.tobytes()


def ggml_dequantize(lib, t, blocks, n):
    traits = lib.ggml_get_type_traits(GGML_TYPES[t]).contents
    to_float = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)(traits.to_float)
    src = np.frombuffer(blocks, dtype=np.uint8).copy()
    y = np.zeros(n, dtype=np.float32)
    to_float(src.ctypes.data, y.ctypes.data, n)
    return y


def corner_rows(n, rng):
    """Rows that reach the quantizers' branches: Gaussian, heavy-tailed with outliers, all zero,
    constant, one non-zero value, tiny magnitudes, all positive / all negative, mixed block scales."""
    rows = [rng.standard_normal(n), rng.standard_t(2, n) * 0.05, np.zeros(n), np.full(n, 0.37),
            np.where(np.arange(n) == n // 3, -2.5, 0.0), rng.standard_normal(n) * 1e-12,
            np.abs(rng.standard_normal(n)) + 0.1, -np.abs(rng.standard_normal(n)),
            rng.standard_normal(n) * np.repeat(10.0 ** rng.uniform(-4, 2, n // 16), 16),
            np.round(rng.standard_normal(n) * 4) / 4]
    return np.stack(rows).astype(np.float32)


def check_quantizers(r, probe, work):
    lib = ggml_lib()
    rng = np.random.default_rng(7)
    n = 512
    rows = corner_rows(n, rng)
    rows_path = os.path.join(work, "rows.f32")
    rows.tofile(rows_path)
    imatrices = {"none": None, "random": rng.uniform(0.0, 3.0, n).astype(np.float32),
                 "sparse": np.where(rng.uniform(size=n) < 0.3, 0.0, rng.exponential(1.0, n)).astype(np.float32)}
    for t in ["q8_0", "q4_0", "q5_0", "q5_1", "q2_k", "q3_k", "q4_k", "q5_k", "q6_k"]:
        for name, qw in imatrices.items():
            args = [probe, "quantize", t, str(n), rows_path, os.path.join(work, "mine.bin")]
            if qw is not None:
                qw.tofile(os.path.join(work, "qw.f32"))
                args.append(os.path.join(work, "qw.f32"))
            p = subprocess.run(args, capture_output=True, text=True)
            if not r.check(f"quantize {t} imatrix={name} runs", p.returncode == 0, p.stderr[-300:]):
                continue
            mine = open(os.path.join(work, "mine.bin"), "rb").read()
            # ggml quantizes row by row with its imatrix (one row of n values for the tensor)
            ref = b"".join(ggml_quantize(lib, t, rows[i:i + 1], qw) for i in range(len(rows)))
            rb = len(ref) // len(rows)
            bad = [i for i in range(len(rows)) if mine[i * rb:(i + 1) * rb] != ref[i * rb:(i + 1) * rb]]
            r.check(f"quantize {t} imatrix={name}: byte-identical to ggml_quantize_chunk", len(mine) == len(ref)
                    and not bad, f"rows differing: {bad}")
        # decoding: lamina's dequantize_row against ggml's to_float, on ggml's blocks
        ref = ggml_quantize(lib, t, rows, None)
        open(os.path.join(work, "blocks.bin"), "wb").write(ref)
        p = subprocess.run([probe, "dequantize", t, str(n), os.path.join(work, "blocks.bin"),
                            os.path.join(work, "deq.f32")], capture_output=True, text=True)
        mine = np.fromfile(os.path.join(work, "deq.f32"), dtype=np.float32) if p.returncode == 0 else None
        want = ggml_dequantize(lib, t, ref, rows.size)
        r.check(f"dequantize {t}: equals ggml's to_float bit for bit", mine is not None and
                np.array_equal(mine.view(np.uint32), want.view(np.uint32)), p.stderr[-300:])


def tensors(path):
    """{name: (ggml type id, raw bytes)} and general.file_type, through llama.cpp's gguf reader."""
    rd = gguf.GGUFReader(path)
    ft = rd.fields["general.file_type"]
    return ({t.name: (int(t.tensor_type), t.data.tobytes()) for t in rd.tensors},
            int(ft.parts[ft.data[0]][0]))


def llama_quantize(src, dst, ftype, pure=False):
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    params.pure = pure
    return llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)) == 0


MODELS = {
    # GQA 4 (Q2_K's attn_v rule), 12 layers (every use_more_bits / n/8 / n/16 branch, blk.10 after blk.9)
    "llama-gqa": ["--shape", "tiny", "--hidden", "256", "--intermediate", "512", "--layers", "12",
                  "--heads", "8", "--kv-heads", "2"],
    # tied output (token_embd takes the output rule) and rows of 64 / 160: every fallback type
    "llama-tied-small": ["--shape", "tiny", "--layers", "3", "--tie-embeddings"],
    # 8 experts: llama.cpp's Mixtral rules (attn_v / attn_k Q8_0, attn_output Q5_K)
    "mixtral-8": ["--shape", "tiny-mixtral", "--hidden", "256", "--intermediate", "256", "--experts", "8",
                  "--experts-per-tok", "2", "--layers", "2"],
    "qwen2": ["--shape", "tiny-qwen2", "--hidden", "256", "--intermediate", "768", "--layers", "4"],
}


def check_mixes(r, run, work):
    for model, shape in MODELS.items():
        d = os.path.join(work, model)
        p = run("init", "--out", d, *shape, "--dtype", "f32", "--seed", "3", "--std", "0.05", "--random-norms")
        if not r.check(f"{model}: init", p.returncode == 0, p.stderr[-300:]):
            continue
        f32 = os.path.join(work, model + "-f32.gguf")
        p = run("export-gguf", "--model", d, "--out", f32, "--outtype", "f32")
        if not r.check(f"{model}: export-gguf f32", p.returncode == 0, p.stderr[-300:]):
            continue
        for mix, ftype in FTYPES.items():
            mine, ref = os.path.join(work, "mine.gguf"), os.path.join(work, "ref.gguf")
            p = run("export-gguf", "--model", d, "--out", mine, "--outtype", mix.upper(), "--force")
            if not r.check(f"{model} {mix}: export-gguf", p.returncode == 0, p.stderr[-300:]):
                continue
            # lamina's q4_0 is llama-quantize --pure Q4_0 (every matrix Q4_0, the output too)
            if not r.check(f"{model} {mix}: llama_model_quantize", llama_quantize(f32, ref, ftype, pure=mix == "q4_0")):
                continue
            (a, fa), (b, fb) = tensors(mine), tensors(ref)
            types_a = {k: v[0] for k, v in a.items()}
            types_b = {k: v[0] for k, v in b.items()}
            diff_types = sorted(k for k in types_b if types_a.get(k) != types_b[k])
            diff_bytes = sorted(k for k in b if k in a and a[k][0] == b[k][0] and a[k][1] != b[k][1])
            r.check(f"{model} {mix}: every tensor's type and bytes equal llama-quantize's (file_type {fb})",
                    set(a) == set(b) and not diff_types and not diff_bytes and fa == fb,
                    f"types {[(k, types_a.get(k), types_b[k]) for k in diff_types[:6]]} bytes {diff_bytes[:6]} "
                    f"file_type {fa} vs {fb}")
            if model == "llama-gqa":  # lamina runs the file it wrote (every block type it reads)
                p = run("generate", "--model", mine, "--tokenizer", d, "--prompt", "hello", "--max-new-tokens", "3")
                r.check(f"{model} {mix}: lamina generate runs on it", p.returncode == 0 and p.stdout.strip(),
                        p.stderr[-300:])


def check_gguf_reads_back(r, run, work):
    """gguf's own reader and numpy dequantizers on files of every block type lamina writes: each
    tensor comes back near its f32 export, within a bound for its type (worst |error| over the
    tensor's largest |value|: about half a quantization step of the coarsest block; Q4_0 clamps
    the side opposite its largest value at 7/8 of it, an error up to 1/8)."""
    bound = {"F32": 0, "BF16": 4e-3, "F16": 5e-4, "Q8_0": 5e-3, "Q6_K": 2e-2, "Q5_K": 5e-2, "Q5_1": 5e-2,
             "Q5_0": 5e-2, "Q4_K": 0.1, "Q4_0": 0.13, "Q3_K": 0.2, "Q2_K": 0.4}
    for model in ["llama-gqa", "llama-tied-small"]:
        d = os.path.join(work, model)
        exact = {t.name: np.array(t.data) for t in gguf.GGUFReader(os.path.join(work, model + "-f32.gguf")).tensors}
        for mix in ["q2_k", "q3_k_m", "q4_k_m", "q5_k_m", "q6_k", "q8_0", "q4_0", "bf16", "f16"]:
            out = os.path.join(work, f"back-{model}-{mix}.gguf")
            p = run("export-gguf", "--model", d, "--out", out, "--outtype", mix)
            if not r.check(f"gguf reads {model} {mix}: export", p.returncode == 0, p.stderr[-300:]):
                continue
            worst, bad = {}, []
            for t in gguf.GGUFReader(out).tensors:
                x = exact[t.name]
                y = gguf.quants.dequantize(t.data, t.tensor_type).reshape(x.shape)
                e = float(np.abs(y - x).max() / (np.abs(x).max() + 1e-30))
                k = t.tensor_type.name
                worst[k] = max(worst.get(k, 0.0), e)
                if e > bound[k]:
                    bad.append((t.name, k, e))
            r.check(f"gguf reads {model} {mix} and dequantizes each tensor within its type's bound", not bad,
                    " ".join(f"{k} {v:.2g}" for k, v in sorted(worst.items())) + (f" over: {bad[:4]}" if bad else ""))


def check_greedy(r, run, work, assets):
    """lamina and llama.cpp decode the same f16 GGUF (a Llama 3.1 tokenizer) greedily alike."""
    d = os.path.join(work, "llama3")
    p = run("init", "--out", d, "--shape", "tiny", "--hidden", "256", "--intermediate", "512", "--layers", "4",
            "--heads", "4", "--kv-heads", "2", "--vocab-size", "128256", "--dtype", "f32", "--seed", "5",
            "--std", "0.08", "--random-norms")
    if not r.check("greedy: init", p.returncode == 0, p.stderr[-300:]):
        return
    for f in os.listdir(d):
        if f.startswith("tokenizer") or f == "special_tokens_map.json":
            os.remove(os.path.join(d, f))
    tok_dir = unpack_tokenizer(assets, "llama3.1", os.path.join(work, "llama3-tok"))
    for f in os.listdir(tok_dir):
        os.rename(os.path.join(tok_dir, f), os.path.join(d, f))
    cfg_path = os.path.join(d, "config.json")
    cfg = json.load(open(cfg_path))
    cfg.update(bos_token_id=128000, eos_token_id=128009, rope_theta=500000.0)
    json.dump(cfg, open(cfg_path, "w"))
    os.remove(os.path.join(d, "generation_config.json"))
    f16 = os.path.join(work, "llama3-f16.gguf")
    p = run("export-gguf", "--model", d, "--out", f16, "--outtype", "f16")
    if not r.check("greedy: export-gguf f16", p.returncode == 0, p.stderr[-300:]):
        return
    # the KV cache in F32 (llama.cpp's default is F16, lamina's F32): what remains is llama.cpp's
    # rounding of the activations to f16 before its f16 products
    llm = llama_cpp.Llama(model_path=f16, n_ctx=256, n_threads=2, n_batch=64, verbose=False, type_k=0, type_v=0)

    def piece(t):  # llama-cpp-python's detokenize drops pieces over 32 bytes
        buf = ctypes.create_string_buffer(256)
        n = llama_cpp.llama_token_to_piece(llm._model.vocab, t, buf, 256, 0, False)
        return buf.raw[:n]

    for prompt in ["The quick brown fox", "Tokens: 12345, naïve café — 你好"]:
        ids = llm.tokenize(prompt.encode(), add_bos=True, special=False)
        p = run("tokenize", "--model", d, "--text", prompt)
        mine_ids = json.loads(p.stdout)["ids"] if p.returncode == 0 else None
        r.check(f"greedy {prompt!r}: the GGUF's vocabulary tokenizes as the model's tokenizer.json", mine_ids == ids,
                f"{mine_ids} vs {ids}")
        llm.reset()
        llm.eval(ids)
        out, margin = [], []
        for _ in range(24):
            logits = np.ctypeslib.as_array(llm._ctx.get_logits(), shape=(llm.n_vocab(),))
            nxt = int(np.argmax(logits))
            top2 = np.partition(logits, -2)[-2:]
            out.append(nxt)
            margin.append(float(top2[1] - top2[0]))
            llm.eval([nxt])
        want = b"".join(piece(t) for t in out).decode("utf-8", errors="replace")
        print(f"  llama.cpp's smallest top-2 logit margin over the 24 steps: {min(margin):.2e}")
        p = run("generate", "--model", f16, "--tokenizer", d, "--prompt", prompt, "--max-new-tokens", "24",
                "--threads", "2")
        r.check(f"greedy {prompt!r}: lamina generate on the f16 GGUF equals llama.cpp's 24 tokens",
                p.returncode == 0 and p.stdout.rstrip("\n") == want, f"{p.stdout!r} vs {want!r}")


QUIET = llama_cpp.llama_log_callback(lambda *a: None)  # kept alive: llama.cpp calls it later


def main():
    lamina, probe, assets = sys.argv[1:4]
    r = Report()
    run = runner(os.path.abspath(lamina), echo_failures=False)
    print("llama-cpp-python", llama_cpp.__version__, "gguf", version("gguf"))
    llama_cpp.llama_log_set(QUIET, ctypes.c_void_p(0))
    with tempfile.TemporaryDirectory() as work:
        check_quantizers(r, probe, work)
        check_mixes(r, run, work)
        check_gguf_reads_back(r, run, work)
        check_greedy(r, run, work, assets)
    r.finish()


if __name__ == "__main__":
    main()
