"""lamina's GGUF files against llama.cpp itself (llama-cpp-python, built from source for this CPU,
and llama.cpp's gguf package; scripts/llamacpp-requirements.txt):

- the integer k-quant products: Q8_K activations byte-identical to ggml's, Q4_K / Q5_K / Q6_K dots
  of every kernel equal to ggml-cpu's vec_dot.
- ggml's quantizers: every block type lamina writes, without and with an importance matrix, on
  rows chosen to reach the quantizers' corners (zeros, constants, outliers, sub-normal scales),
  byte-identical to ggml_quantize_chunk; lamina's decoders equal ggml's to_float bit for bit.
- llama-quantize's mixes: `lamina export-gguf --outtype q4_k_m` (and every other mix) equals
  llama_model_quantize run on lamina's f32 export, tensor for tensor (types and bytes), on a dense
  Llama with GQA, a tied Llama whose rows are not whole k-quant blocks (fallback types), Mixtral
  with 8 experts and Qwen2.
- the gguf package reads every file lamina writes back (its own numpy dequantizers equal lamina's).
- greedy decoding of lamina on an f16 export equals llama.cpp's on the same file.
- `lamina imatrix` equals llama-imatrix's statistics read from llama.cpp's own graph (its
  evaluation callback) on the same f32 file, and `export-gguf --imatrix` equals
  llama_model_quantize given the rows.

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


def check_kquant_dots(r, probe, work):
    """lamina's Q8_K activations byte-identical to ggml's quantize_row_q8_K, and every kernel's
    Q4_K / Q5_K / Q6_K x Q8_K dot product equal to ggml-cpu's own vec_dot (its fastest for this
    CPU) on the same blocks, up to float summation order."""
    lib = ggml_lib()
    cpu = ctypes.CDLL(glob.glob(os.path.join(os.path.dirname(llama_cpp.__file__), "lib", "libggml-cpu.so*"))[0])

    class CpuTraits(ctypes.Structure):
        _fields_ = [("from_float", ctypes.c_void_p), ("vec_dot", ctypes.c_void_p), ("vec_dot_type", ctypes.c_int),
                    ("nrows", ctypes.c_int64)]

    cpu.ggml_cpu_init()  # its f16 tables
    cpu.ggml_get_type_traits_cpu.restype = ctypes.POINTER(CpuTraits)
    cpu.ggml_get_type_traits_cpu.argtypes = [ctypes.c_int]
    vec_dot_t = ctypes.CFUNCTYPE(None, ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t, ctypes.c_void_p, ctypes.c_size_t,
                                 ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int)
    from_float_t = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64)
    rng = np.random.default_rng(17)
    n = 1024
    xs = np.concatenate([rng.normal(0, 1, (5, n)), np.zeros((1, n)), rng.normal(0, 1, (1, n)) * 1e-3,
                         np.where(rng.uniform(size=(1, n)) < 0.02, rng.normal(0, 30, (1, n)), rng.normal(0, 0.1, (1, n)))]
                        ).astype(np.float32)
    xs[0, 5] = -50.0  # a negative largest element: d keeps its sign
    xs_path = os.path.join(work, "x.f32")
    xs.tofile(xs_path)
    p = subprocess.run([probe, "quantize", "q8_k", str(n), xs_path, os.path.join(work, "q8k.bin")],
                       capture_output=True, text=True)
    q8k_ref = ctypes.create_string_buffer(292 * (n // 256) * len(xs))
    quant = from_float_t(cpu.ggml_get_type_traits_cpu(15).contents.from_float)  # what llama.cpp runs
    quant(xs.ctypes.data, q8k_ref, xs.size)
    mine = open(os.path.join(work, "q8k.bin"), "rb").read() if p.returncode == 0 else b""
    # the blocks of zeros: ggml leaves bsums as they were (unset); lamina writes 0 there, so compare d and q
    blocks = [(mine[i * 292:i * 292 + 260], q8k_ref.raw[i * 292:i * 292 + 260]) for i in range(len(mine) // 292)]
    sums_ok = all(mine[i * 292 + 260:(i + 1) * 292] == q8k_ref.raw[i * 292 + 260:(i + 1) * 292]
                  for i in range(len(mine) // 292) if np.frombuffer(mine[i * 292:i * 292 + 4], np.float32)[0] != 0)
    r.check("Q8_K activations: byte-identical to ggml-cpu's quantize_row_q8_K (d, quants, sub-block sums)",
            p.returncode == 0 and len(mine) == len(q8k_ref.raw) and all(a == b for a, b in blocks) and sums_ok,
            p.stderr[-200:])
    rows = corner_rows(n, rng)
    for t in ["q4_k", "q5_k", "q6_k"]:
        tid = GGML_TYPES[t]
        w = ggml_quantize(lib, t, rows, None)
        rb = len(w) // len(rows)
        open(os.path.join(work, "w.bin"), "wb").write(w)
        p = subprocess.run([probe, "dot", t, str(n), os.path.join(work, "w.bin"), xs_path, os.path.join(work, "y.f32")],
                           capture_output=True, text=True)
        if not r.check(f"dot {t}: probe runs", p.returncode == 0, p.stderr[-300:]):
            continue
        tr = cpu.ggml_get_type_traits_cpu(tid).contents
        dot = vec_dot_t(tr.vec_dot)
        ref = np.zeros((len(xs), len(rows)), np.float32)
        out = ctypes.c_float()
        wbuf = np.frombuffer(w, np.uint8).copy()
        for m in range(len(xs)):
            xb = ctypes.addressof(q8k_ref) + m * 292 * (n // 256)
            for j in range(len(rows)):
                dot(n, ctypes.addressof(out), 0, wbuf.ctypes.data + j * rb, 0, xb, 0, 1)
                ref[m, j] = out.value
        ys = np.fromfile(os.path.join(work, "y.f32"), np.float32).reshape(-1, len(xs), len(rows))
        # float sums of the block terms in another order: the terms (the scaled quants before the
        # mins, or Q6_K's offset of 32, are taken off) exceed sum |w x| on these corner rows, so the
        # bound is on that sum: measured 6.6e-6 of it at worst, 0 to 1.5e-7 for most
        wd = ggml_dequantize(lib, t, w, rows.size).reshape(len(rows), n).astype(np.float64)
        raw = np.frombuffer(q8k_ref.raw, np.uint8).reshape(-1, 292)
        xd = (raw[:, 4:260].view(np.int8).astype(np.float64) * raw[:, :4].copy().view(np.float32)).reshape(len(xs), n)
        mag = np.abs(xd) @ np.abs(wd).T + 1e-30
        worst = [float((np.abs(y - ref) / mag).max()) for y in ys]
        r.check(f"dot {t}: each of {len(ys)} kernels equals ggml-cpu's vec_dot_{t}_q8_K "
                f"(worst {max(worst):.1e} of sum |w x|)", max(worst) < 3e-5, str(worst))


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


class GgmlTensor(ctypes.Structure):
    """ggml.h's struct ggml_tensor (GGML_MAX_DIMS 4, GGML_MAX_OP_PARAMS 64, GGML_MAX_SRC 10,
    GGML_MAX_NAME 64), read inside llama.cpp's graph-evaluation callback."""


GgmlTensor._fields_ = [("type", ctypes.c_int), ("buffer", ctypes.c_void_p), ("ne", ctypes.c_int64 * 4),
                       ("nb", ctypes.c_size_t * 4), ("op", ctypes.c_int), ("op_params", ctypes.c_int32 * 16),
                       ("flags", ctypes.c_int32), ("src", ctypes.POINTER(GgmlTensor) * 10),
                       ("view_src", ctypes.POINTER(GgmlTensor)), ("view_offs", ctypes.c_size_t),
                       ("data", ctypes.c_void_p), ("name", ctypes.c_char * 64), ("extra", ctypes.c_void_p),
                       ("padding", ctypes.c_char * 8)]


def tensor_array(t, dtype):
    """A copy of t's data as a numpy array [ne3, ne2, ne1, ne0], through its strides."""
    size = np.dtype(dtype).itemsize
    span = sum((t.ne[i] - 1) * t.nb[i] for i in range(4)) + size
    flat = np.ctypeslib.as_array((ctypes.c_uint8 * span).from_address(t.data))
    return np.array(np.lib.stride_tricks.as_strided(flat.view(dtype), shape=tuple(t.ne[i] for i in (3, 2, 1, 0)),
                                                    strides=tuple(t.nb[i] for i in (3, 2, 1, 0))))


def llamacpp_imatrix(lib, path, chunks, process_output):
    """llama-imatrix's statistics from llama.cpp's own graph: every MUL_MAT over a blk.* weight
    (>= 16 rows) and every MUL_MAT_ID (experts, routed by its ids), the sum of x^2 per column of the
    activations it multiplies and the rows summed, over chunks evaluated as fresh sequences with all
    outputs requested (tools/imatrix/imatrix.cpp's collect_imatrix and compute_imatrix)."""
    lib.ggml_op_name.restype = ctypes.c_char_p
    lib.ggml_op_name.argtypes = [ctypes.c_int]
    sums, counts = {}, {}

    def collect(ptr, ask, _):
        t = ctypes.cast(ptr, ctypes.POINTER(GgmlTensor)).contents
        op = lib.ggml_op_name(t.op).decode()
        if op not in ("MUL_MAT", "MUL_MAT_ID"):
            return not ask
        w, x = t.src[0].contents, t.src[1].contents
        name = w.name.decode()
        if ask:
            return op == "MUL_MAT_ID" or (x.ne[1] >= 16 and x.type == 0 and
                                          (name.startswith("blk.") or (process_output and name == "output.weight")))
        a = tensor_array(x, np.float32).astype(np.float64)  # [ne3, ne2, ne1, cols]
        cols = x.ne[0]
        if op == "MUL_MAT_ID":
            ids = tensor_array(t.src[2].contents, np.int32)[0, 0]  # [tokens, slots]
            n_exp = w.ne[2]
            s = sums.setdefault(name, np.zeros((n_exp, cols)))
            c = counts.setdefault(name, np.zeros(n_exp, dtype=np.int64))
            for row in range(ids.shape[0]):
                for slot in range(ids.shape[1]):
                    e = ids[row, slot]
                    v = a[0, row, slot % x.ne[1]]
                    s[e] += v * v
                    c[e] += 1
        else:
            rows = a.reshape(-1, cols)
            sums[name] = sums.get(name, 0) + (rows * rows).sum(0)[None, :]
            counts[name] = counts.get(name, 0) + np.array([rows.shape[0]])
        return True

    cb = llama_cpp.ggml_backend_sched_eval_callback(collect)
    model = llama_cpp.llama_model_load_from_file(path.encode(), llama_cpp.llama_model_default_params())
    n = len(chunks[0])
    cp = llama_cpp.llama_context_default_params()
    cp.n_ctx = cp.n_batch = cp.n_ubatch = n
    cp.n_threads = cp.n_threads_batch = 2
    # F32 keys and values, as lamina keeps them, and no flash attention: llama.cpp's CPU flash
    # attention rounds to F16 (the attention outputs then differ by ~3e-4)
    cp.type_k = cp.type_v = 0
    cp.flash_attn_type = 0
    cp.cb_eval = cb
    ctx = llama_cpp.llama_init_from_model(model, cp)
    batch = llama_cpp.llama_batch_init(n, 0, 1)
    for chunk in chunks:
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(ctx), True)
        batch.n_tokens = n
        for k, tok in enumerate(chunk):
            batch.token[k], batch.pos[k], batch.n_seq_id[k], batch.logits[k] = tok, k, 1, 1
            batch.seq_id[k][0] = 0
        assert llama_cpp.llama_decode(ctx, batch) == 0
    llama_cpp.llama_batch_free(batch)
    llama_cpp.llama_free(ctx)
    llama_cpp.llama_model_free(model)
    return sums, counts


def read_imatrix_gguf(path):
    """{name: (sums [nmat, cols], counts [nmat])} and the metadata of an imatrix GGUF, through gguf."""
    rd = gguf.GGUFReader(path)
    meta = {}
    for k in ("general.type", "imatrix.chunk_count", "imatrix.chunk_size"):
        f = rd.fields[k]
        meta[k] = f.contents()
    meta["imatrix.datasets"] = rd.fields["imatrix.datasets"].contents()
    arrays = {t.name: np.array(t.data, dtype=np.float64).reshape(int(t.shape[1]) if len(t.shape) > 1 else 1, -1)
              for t in rd.tensors}
    out = {}
    for name, a in arrays.items():
        if name.endswith(".in_sum2"):
            base = name[:-len(".in_sum2")]
            out[base] = (a, arrays[base + ".counts"].reshape(-1))
    return out, meta


def llama_quantize_imatrix(src, dst, ftype, rows):
    """llama_model_quantize with llama-quantize's --imatrix rows (mean x^2 per column)."""
    keep = {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in rows.items()}
    names = {k: ctypes.c_char_p(k.encode()) for k in keep}
    arr = (llama_cpp.llama_model_imatrix_data * (len(keep) + 1))()
    for i, (k, v) in enumerate(keep.items()):
        arr[i].name = names[k]
        arr[i].data = v.ctypes.data_as(ctypes.POINTER(ctypes.c_float))
        arr[i].size = v.size
    arr[len(keep)].name = None
    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = ftype
    params.nthread = 2
    params.imatrix = arr
    return llama_cpp.llama_model_quantize(src.encode(), dst.encode(), ctypes.byref(params)) == 0


def check_imatrix(r, run, work):
    """lamina imatrix equals llama-imatrix's statistics taken from llama.cpp's own forward on the
    same f32 GGUF (dense Llama with GQA; Mixtral, per expert); export-gguf --imatrix equals
    llama_model_quantize given those rows, for the mixes that use them."""
    lib = ggml_lib()
    rng = np.random.default_rng(11)
    words = ["the", "model", "of", "a", "stack", "layers", "token", "weights", "quantized", "merge", "expert", "depth",
             "scaling", "data", "mix", "reward", "blocks", "fast", "llama", "native"]
    text = " ".join(rng.choice(words, 900)) + "\n"
    data = os.path.join(work, "calib.txt")
    open(data, "w").write(text)
    n_ctx, n_chunks = 32, 3
    for model in ["llama-gqa", "mixtral-8"]:
        d, f32 = os.path.join(work, model), os.path.join(work, model + "-f32.gguf")
        if not os.path.exists(f32):
            r.check(f"imatrix {model}: the f32 export from check_mixes", False)
            continue
        out = os.path.join(work, model + "-imatrix.gguf")
        p = run("imatrix", "--model", d, "--data", data, "--out", out, "--ctx", str(n_ctx), "--chunks", str(n_chunks),
                "--process-output")
        if not r.check(f"imatrix {model}: lamina imatrix", p.returncode == 0, p.stderr[-300:]):
            continue
        mine, meta = read_imatrix_gguf(out)
        r.check(f"imatrix {model}: the file's metadata is llama-imatrix's",
                meta == {"general.type": "imatrix", "imatrix.chunk_count": n_chunks, "imatrix.chunk_size": n_ctx,
                         "imatrix.datasets": [data]}, str(meta))
        p = run("tokenize", "--model", d, "--file", data)
        ids = json.loads(p.stdout)["ids"]
        bos = json.load(open(os.path.join(d, "config.json")))["bos_token_id"]
        chunks = [[bos] + ids[c * n_ctx + 1:(c + 1) * n_ctx] for c in range(n_chunks)]
        ref_sums, ref_counts = llamacpp_imatrix(lib, f32, chunks, True)
        r.check(f"imatrix {model}: the same {len(ref_sums)} matrices as llama.cpp's graph multiplies",
                set(mine) == set(ref_sums), f"{sorted(set(mine) ^ set(ref_sums))[:6]}")
        worst, bad_counts = 0.0, []
        for name in set(mine) & set(ref_sums):
            s, c = mine[name]
            if not np.array_equal(c, ref_counts[name]):
                bad_counts.append((name, c.tolist(), ref_counts[name].tolist()))
            worst = max(worst, float(np.abs(s - ref_sums[name]).max() / ref_sums[name].max()))
        r.check(f"imatrix {model}: rows counted per matrix (per expert: tokens routed to it) equal llama.cpp's",
                not bad_counts, str(bad_counts[:3]))
        # lamina's F32 forward and llama.cpp's differ by float rounding only (measured 1.5e-6)
        r.check(f"imatrix {model}: sums of x^2 equal llama.cpp's activations' (worst {worst:.1e} of the largest)",
                worst < 5e-6, f"{worst:.3e}")
        rows = {k: (s / np.maximum(c, 1)[:, None]).reshape(-1) for k, (s, c) in mine.items()}
        for k, (s, c) in mine.items():  # an expert nothing was routed to: 1s, as llama-quantize fills it
            rows[k].reshape(s.shape)[c == 0] = 1.0
        for mix in ["q4_k_m", "q2_k", "q3_k_s", "q5_k_m", "q6_k"] if model == "llama-gqa" else ["q4_k_m"]:
            mine_q, ref_q = os.path.join(work, "imat-mine.gguf"), os.path.join(work, "imat-ref.gguf")
            p = run("export-gguf", "--model", d, "--out", mine_q, "--outtype", mix, "--imatrix", out, "--force")
            if not r.check(f"imatrix {model} {mix}: export-gguf --imatrix", p.returncode == 0, p.stderr[-300:]):
                continue
            if not r.check(f"imatrix {model} {mix}: llama_model_quantize with the rows",
                           llama_quantize_imatrix(f32, ref_q, FTYPES[mix], rows)):
                continue
            (a, fa), (b, fb) = tensors(mine_q), tensors(ref_q)
            plain = tensors(os.path.join(work, "plain.gguf"))[0] if run(
                "export-gguf", "--model", d, "--out", os.path.join(work, "plain.gguf"), "--outtype", mix,
                "--force").returncode == 0 else {}
            diff = sorted(k for k in b if a.get(k) != b[k])
            changed = sum(1 for k in a if k in plain and plain[k] != a[k])
            r.check(f"imatrix {model} {mix}: every tensor equals llama-quantize --imatrix's "
                    f"({changed} tensors differ from the export without it)",
                    set(a) == set(b) and not diff and fa == fb and changed > 0, f"{diff[:6]}")
    # the legacy format: llama-quantize divides its values by ncall, giving the same rows
    dat = os.path.join(work, "llama-gqa-imatrix.dat")
    p = run("imatrix", "--model", os.path.join(work, "llama-gqa"), "--data", data, "--out", dat, "--ctx", str(n_ctx),
            "--chunks", str(n_chunks), "--no-ppl")
    if r.check("imatrix: --out X.dat writes the legacy format", p.returncode == 0, p.stderr[-300:]):
        raw, at, legacy = open(dat, "rb").read(), 4, {}
        for _ in range(int(np.frombuffer(raw[:4], np.int32)[0])):
            ln = int(np.frombuffer(raw[at:at + 4], np.int32)[0])
            name = raw[at + 4:at + 4 + ln].decode()
            ncall, nval = np.frombuffer(raw[at + 4 + ln:at + 12 + ln], np.int32)
            legacy[name] = np.frombuffer(raw[at + 12 + ln:at + 12 + ln + 4 * nval], np.float32) / ncall
            at += 12 + ln + 4 * nval
        mine, _ = read_imatrix_gguf(os.path.join(work, "llama-gqa-imatrix.gguf"))
        worst = max(float(np.abs(legacy[k] - (s / c[:, None]).reshape(-1)).max() / (s / c[:, None]).max())
                    for k, (s, c) in mine.items() if k in legacy)
        r.check(f"imatrix: the .dat file's values / ncall are the GGUF's means (worst {worst:.1e})",
                set(legacy) == set(mine) - {"output.weight"} and worst < 1e-6, f"{sorted(legacy)[:3]}")


QUIET = llama_cpp.llama_log_callback(lambda *a: None)  # kept alive: llama.cpp calls it later


def main():
    lamina, probe, assets = sys.argv[1:4]
    r = Report()
    run = runner(os.path.abspath(lamina), echo_failures=False)
    print("llama-cpp-python", llama_cpp.__version__, "gguf", version("gguf"))
    llama_cpp.llama_log_set(QUIET, ctypes.c_void_p(0))
    with tempfile.TemporaryDirectory() as work:
        check_quantizers(r, probe, work)
        check_kquant_dots(r, probe, work)
        check_mixes(r, run, work)
        check_gguf_reads_back(r, run, work)
        check_imatrix(r, run, work)
        check_greedy(r, run, work, assets)
    r.finish()


if __name__ == "__main__":
    main()
