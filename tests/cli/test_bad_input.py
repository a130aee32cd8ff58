"""Bad input gives a one-line error naming the file/tensor/field and a non-zero exit, never a crash.

usage: test_bad_input.py LAMINA_BINARY        (no torch needed; prints 'N passed, M failed')
"""
import hashlib
import json
import os
import signal
import subprocess
import time
import shutil
import struct
import sys
import tempfile

from harness import Report, runner

LAMINA = os.path.abspath(sys.argv[1])
report = Report()
lamina = runner(LAMINA, echo_failures=False)


def run(*args):
    p = lamina(*args)
    return p.returncode, p.stdout, p.stderr


WORK = None  # the temporary tree every check compares before and after


def snapshot(root):
    """{relative path: (size, sha1)} of every file and directory under root."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs:
            out[os.path.relpath(os.path.join(d, n), root) + "/"] = None
        for n in files:
            f = os.path.join(d, n)
            if os.path.islink(f):
                out[os.path.relpath(f, root)] = ("link", os.readlink(f))
                continue
            h = hashlib.sha1()
            with open(f, "rb") as fh:
                h.update(fh.read())
            out[os.path.relpath(f, root)] = (os.path.getsize(f), h.hexdigest())
    return out


def tree_diff(before, after):
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in before if k in after and before[k] != after[k])
    return added, removed, changed


def check(name, args, want_in_stderr, code=1):
    """Exit code 1, exactly one stderr line with every fragment, and the whole work tree unchanged:
    no input modified or removed, no output, lock or temporary left behind."""
    before = snapshot(WORK)
    rc, out, err = run(*args)
    after = snapshot(WORK)
    lines = [l for l in err.strip().splitlines() if l]
    added, removed, changed = tree_diff(before, after)
    ok = (rc == code and len(lines) == 1 and all(w in lines[0] for w in want_in_stderr) and "error" in lines[0]
          and len(lines[0]) < 400 and not (added or removed or changed))
    detail = f": exit {rc}; {err.strip()[:300]!r}"
    if added or removed or changed:
        detail += f" tree changed: added {added[:4]} removed {removed[:4]} changed {changed[:4]}"
    report.check(name, ok, detail)


def write_safetensors(path, tensors, raw_header=None, data=None):
    """tensors: {name: (dtype, shape, bytes)}"""
    if raw_header is None:
        header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
        for name, (dt, shape, blob) in tensors.items():
            header[name] = {"dtype": dt, "shape": shape, "data_offsets": [off, off + len(blob)]}
            blobs.append(blob)
            off += len(blob)
        raw_header = json.dumps(header).encode()
        data = b"".join(blobs)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(raw_header)) + raw_header + data)


def main():
    global WORK
    tmp = tempfile.mkdtemp()
    WORK = tmp
    try:
        good = os.path.join(tmp, "good")
        rc, _, err = run("init", "--out", good, "--seed", "1")
        assert rc == 0, err

        def copy(name):
            d = os.path.join(tmp, name)
            shutil.copytree(good, d)
            return d

        st = lambda d: os.path.join(d, "model.safetensors")

        d = copy("truncated")
        size = os.path.getsize(st(d))
        with open(st(d), "r+b") as f:
            f.truncate(size - 100)
        check("truncated safetensors", ["score", "--model", d, "--ids", "1,2,3"], [st(d), "truncated"])

        d = copy("corrupt")
        with open(st(d), "r+b") as f:
            f.seek(8)
            f.write(b"{{{{")
        check("corrupt header", ["score", "--model", d, "--ids", "1,2,3"], [st(d), "malformed safetensors header JSON"])

        d = copy("huge-header")
        with open(st(d), "r+b") as f:
            f.write(struct.pack("<Q", 1 << 40))
        check("header length over the cap", ["generate", "--model", d, "--prompt", "x"], [st(d), "100 MB limit"])

        # Rewrite the checkpoint without one tensor / with a wrong shape / with an int8 tensor.

        def read_raw(path):
            with open(path, "rb") as f:
                blob = f.read()
            (n,) = struct.unpack("<Q", blob[:8])
            h = json.loads(blob[8 : 8 + n])
            h.pop("__metadata__", None)
            return {k: (v["dtype"], v["shape"], blob[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]]) for k, v in h.items()}

        tensors = read_raw(st(good))
        d = copy("missing")
        t = dict(tensors)
        del t["model.layers.1.mlp.up_proj.weight"]
        write_safetensors(st(d), t)
        check("missing tensor", ["score", "--model", d, "--ids", "1,2,3"], ["missing tensor 'model.layers.1.mlp.up_proj.weight'"])

        d = copy("wrong-shape")
        t = dict(tensors)
        dt, shape, blob = t["model.norm.weight"]
        t["model.norm.weight"] = (dt, [shape[0] // 2, 2], blob)
        write_safetensors(st(d), t)
        check("wrong shape", ["score", "--model", d, "--ids", "1,2,3"], ["model.norm.weight", "has shape [32, 2]", "[64]"])

        d = copy("int8")
        t = dict(tensors)
        dt, shape, blob = t["model.norm.weight"]
        t["model.norm.weight"] = ("I8", [len(blob)], blob)
        write_safetensors(st(d), t)
        check("unsupported dtype", ["score", "--model", d, "--ids", "1,2,3"], [st(d), "model.norm.weight", "unsupported dtype I8"])

        d = copy("gpt2")
        cfg = json.load(open(os.path.join(d, "config.json")))
        cfg["model_type"] = "gpt2"
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        check("unknown model_type", ["info", "--model", d], ["config.json", "unsupported model_type 'gpt2'"])

        d = copy("no-tokenizer")
        os.remove(os.path.join(d, "tokenizer.model"))
        check("missing tokenizer", ["generate", "--model", d, "--prompt", "hi"], ["no tokenizer", "tokenizer.model", "tokenizer.json"])

        check("missing model dir", ["info", "--model", os.path.join(tmp, "nope")], ["config.json", "not found"])
        check("empty prompt", ["generate", "--model", good, "--prompt", ""], ["empty prompt"])
        long_prompt = "word " * 2000
        check("prompt longer than the context", ["generate", "--model", good, "--prompt", long_prompt],
              ["longer than the context of 512 tokens"])
        long_file = os.path.join(tmp, "long.txt")
        open(long_file, "w").write(long_prompt)
        check("score text longer than the context", ["score", "--model", good, "--text", long_file], ["longer than the context"])
        empty_file = os.path.join(tmp, "empty.txt")
        open(empty_file, "w").close()
        check("empty text to score", ["score", "--model", good, "--text", empty_file], [empty_file, "empty text"])
        check("out-of-vocabulary id", ["score", "--model", good, "--ids", "1,99999"], ["99999", "outside the vocabulary"])
        check("bad dtype option", ["score", "--model", good, "--ids", "1,2", "--dtype", "int4"], ["--dtype", "int4"])
        check("existing output", ["init", "--out", good], [good, "already exists", "--force"])
        check("unknown option", ["info", "--model", good, "--frobnicate"], ["unknown option --frobnicate"])
        check("missing required option", ["score", "--ids", "1,2"], ["missing required option --model"])
        check("unknown shape", ["init", "--out", os.path.join(tmp, "x"), "--shape", "gpt-5"], ["unknown shape 'gpt-5'"])
        check("unknown chat template", ["generate", "--model", good, "--prompt", "hi", "--chat", "--chat-template", "vicuna"],
              ["unknown template 'vicuna'"])
        check("chat without a template", ["generate", "--model", good, "--prompt", "hi", "--chat"], ["--chat-template"])
        check("bad top-p", ["generate", "--model", good, "--prompt", "hi", "--temperature", "1", "--top-p", "0"], ["--top-p"])
        # Nothing half-written: a failed init leaves no output directory and no temporary one.
        bad_out = os.path.join(tmp, "failed-init")
        check("failed init", ["init", "--out", bad_out, "--tokenizer", os.path.join(tmp, "nope.model")], ["nope.model"])
        leftovers = [n for n in os.listdir(tmp) if n.startswith("failed-init")]
        report.check("failed init leaves nothing behind", not leftovers, str(leftovers))
        option_cases(tmp, good)
        file_cases(tmp, good, copy, tensors)
        data_cases(tmp, good)
        safety_cases(tmp, good)
    finally:
        shutil.rmtree(tmp)
    report.finish()


def write(path, text):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return path


def write_jsonl(path, rows):
    return write(path, "".join((r if isinstance(r, str) else json.dumps(r)) + "\n" for r in rows))


def option_cases(tmp, good):
    """Every numeric option's kind and range, checked before any work (NaN included)."""
    corpus = write(os.path.join(tmp, "in", "corpus.txt"), "The river runs past the old mill.\n\n" * 50)
    gen = ["generate", "--model", good, "--prompt", "hi"]
    for opt, val, frag in [("--temperature", "nan", "finite"), ("--temperature", "-1", ">= 0"),
                           ("--top-p", "1.5", "(0, 1]"), ("--top-k", "-1", ">= 0"),
                           ("--repetition-penalty", "0", "> 0"), ("--max-new-tokens", "-5", ">= 0"),
                           ("--max-new-tokens", "1.5", "integer"), ("--threads", "0", ">= 1"),
                           ("--threads", "-1", ">= 1"), ("--threads", "two", "integer"), ("--seed", "-3", ">= 0"),
                           ("--temperature", "1e999", "finite"), ("--top-p", "0.5x", "number")]:
        check(f"generate {opt} {val}", gen + [opt, val], [opt, val, frag])
    check("chat --context -1", ["chat", "--model", good, "--context", "-1"], ["--context", ">= 1", "-1"])
    check("chat --context 0", ["chat", "--model", good, "--context", "0"], ["--context", ">= 1"])
    check("score --threads 0", ["score", "--model", good, "--ids", "1,2", "--threads", "0"], ["--threads"])
    ev = ["eval", "--model", good, "--perplexity", corpus]
    check("eval --window -5", ev + ["--window", "-5"], ["--window", ">= 2", "-5"])
    check("eval --window 0", ev + ["--window", "0"], ["--window", ">= 2"])
    check("eval --stride -1", ev + ["--stride", "-1"], ["--stride", ">= 0"])
    check("eval --limit -1", ev + ["--limit", "-1"], ["--limit"])
    check("eval --num-fewshot -2", ev + ["--num-fewshot", "-2"], ["--num-fewshot"])
    pt = ["pretrain", "--model", good, "--data", corpus, "--out", os.path.join(tmp, "run-x")]
    for opt, val, frag in [("--lr", "-1", ">= 0"), ("--lr", "nan", "finite"), ("--lr", "inf", "finite"),
                           ("--beta1", "1.5", "[0, 1)"), ("--beta2", "-0.1", "[0, 1)"), ("--beta2", "1", "[0, 1)"),
                           ("--eps", "0", "> 0"), ("--weight-decay", "-1", ">= 0"), ("--max-steps", "-1", ">= 0"),
                           ("--batch-size", "0", ">= 1"), ("--grad-accum", "0", ">= 1"), ("--seq-len", "1", ">= 2"),
                           ("--warmup-ratio", "2", "[0, 1]"), ("--min-lr-ratio", "-0.5", "[0, 1]"),
                           ("--clip", "-1", ">= 0"), ("--val-fraction", "1", "[0, 1)"), ("--epochs", "0", ">= 1"),
                           ("--lora-r", "0", ">= 1"), ("--lora-dropout", "1", "[0, 1)"), ("--lora-alpha", "0", "> 0"),
                           ("--keep", "0", ">= 1"), ("--save-every", "-1", ">= 0"), ("--eval-every", "-2", ">= 0"),
                           ("--aux-loss-coef", "-1", ">= 0"), ("--seed", "x", "integer")]:
        check(f"pretrain {opt} {val}", pt + [opt, val], [opt, frag])
    dpo = ["dpo", "--model", good, "--data", corpus, "--out", os.path.join(tmp, "dpo-x")]
    for opt, val, frag in [("--label-smoothing", "-0.1", "[0, 0.5]"), ("--label-smoothing", "0.6", "[0, 0.5]"),
                           ("--rpo-alpha", "-1", ">= 0"), ("--beta", "0", "> 0"), ("--beta", "nan", "finite"),
                           ("--max-length", "-4", ">= 0")]:
        check(f"dpo {opt} {val}", dpo + [opt, val], [opt, frag])
    ini = ["init", "--out", os.path.join(tmp, "init-x")]
    for opt, val, frag in [("--layers", "0", ">= 1"), ("--vocab", "0", ">= 1"), ("--std", "0", "> 0"),
                           ("--heads", "0", ">= 1"), ("--hidden", "-64", ">= 1")]:
        check(f"init {opt} {val}", ini + [opt, val], [opt, frag])
    check("init --hidden 10^9 names the field", ini + ["--hidden", "1000000000"], ["hidden_size", "1000000000", "at most"])
    check("init --experts 10^9 names the field", ini + ["--shape", "tiny-mixtral", "--experts", "1000000000"],
          ["num_local_experts", "at most"])
    check("plot --x-scale 0", ["plot", "--run", os.path.join(tmp, "in", "corpus.txt"), "--out",
                               os.path.join(tmp, "p.svg"), "--x-scale", "0"], ["--x-scale", "> 0"])
    check("upscale --drop -1", ["upscale", "--model", good, "--out", os.path.join(tmp, "up-x"), "--drop", "-1"],
          ["--drop", ">= 0"])
    check("upscale --expand-every 0", ["upscale", "--model", good, "--out", os.path.join(tmp, "up-x"),
                                       "--expand-every", "0"], ["--expand-every", ">= 1"])
    check("tokenizer train --vocab-size 0", ["tokenizer", "train", "--data", corpus, "--out", os.path.join(tmp, "tok-x"),
                                             "--vocab-size", "0"], ["--vocab-size", ">= 1"])
    check("binarize --seed -1", ["data", "binarize-ultrafeedback", "--in", corpus, "--out", os.path.join(tmp, "b.jsonl"),
                                 "--seed", "-1"], ["--seed", ">= 0"])
    for opt, val in [("--schedule", "bogus"), ("--precision", "f16"), ("--save-dtype", "q4_0")]:
        check(f"pretrain {opt} {val} (a word from a fixed list)", pt + [opt, val], [opt, "expected one of", val])
    check("export-gguf --outtype q3_k", ["export-gguf", "--model", good, "--out", os.path.join(tmp, "o.gguf"),
                                         "--outtype", "q3_k"], ["--outtype", "expected one of", "q3_k"])
    check("dpo --loss bogus", dpo + ["--loss", "bogus"], ["--loss", "expected one of"])
    sft = ["sft", "--model", good, "--out", os.path.join(tmp, "sft-x")]
    check("sft --source weight below 0", sft + ["--source", f"a={corpus}:weight=-1"], ["--source", "weight -1", ">= 0"])
    check("sft --source weight not a number", sft + ["--source", f"a={corpus}:weight=x"], ["--source", "weight 'x'"])
    check("sft --source file missing", sft + ["--source", f"a={tmp}/none.jsonl"], ["--source", "none.jsonl", "not found"])
    check("score --ids beyond int32", ["score", "--model", good, "--ids", "99999999999,3"], ["--ids", "99999999999"])
    check("generate --stop-token -1", gen + ["--stop-token", "-1"], ["--stop-token", "-1"])
    for cmd in [["generate", "--prompt", "x"], ["serve"], ["bench"]]:  # a path not there is named
        check(f"{cmd[0]} --model missing", cmd + ["--model", os.path.join(tmp, "no-such-model")],
              ["no-such-model", "no such file or directory"])
    check("generate --model a directory without config.json", ["generate", "--model", os.path.join(tmp, "in"),
                                                               "--prompt", "x"], ["config.json"])
    weird = os.path.join(tmp, "in", "weird-template")
    shutil.copytree(good, weird)
    tc = json.load(open(os.path.join(weird, "tokenizer_config.json")))
    tc["chat_template"] = "{% for m in messages %}<<{{ m['role'] }}>>\n{% call x() %}{% endcall %}{% endfor %}"
    json.dump(tc, open(os.path.join(weird, "tokenizer_config.json"), "w"))
    chats = write_jsonl(os.path.join(tmp, "in", "chats.jsonl"),
                        [{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}])
    check("sft on a model whose chat template lamina cannot render", ["sft", "--model", weird, "--data", chats, "--out",
                                                                      os.path.join(tmp, "sft-w")], [weird, "chat_template", "line 2", "unsupported tag"])
    cml = os.path.join(tmp, "in", "chatml-model")
    rc, _, err = run("init", "--out", cml, "--chat-template", "chatml", "--add-tokens", "<|im_start|>,<|im_end|>")
    assert rc == 0, err
    check("sft --objective crlft on a ChatML model", ["sft", "--model", cml, "--objective", "crlft", "--source",
                                                      f"a={chats}:weight=1:condition=GPT4", "--out", os.path.join(tmp, "sft-c")],
          [cml, "C-RLFT", "chatml", "--template openchat"])
    check("sft --template vicuna names --template", ["sft", "--model", good, "--data", corpus, "--out",
                                                     os.path.join(tmp, "sft-x"), "--template", "vicuna"],
          ["--template", "unknown template 'vicuna'"])
    d = os.path.join(tmp, "in", "adir")
    os.makedirs(d, exist_ok=True)
    check("--prompt-file a directory", ["generate", "--model", good, "--prompt-file", d], ["--prompt-file", d, "is a directory"])
    check("--data a directory", ["pretrain", "--model", good, "--data", d, "--out", os.path.join(tmp, "r")],
          ["--data", "is a directory"])
    check("--text missing", ["score", "--model", good, "--text", os.path.join(tmp, "none.txt")], ["--text", "not found"])
    check("--task missing", ["eval", "--model", good, "--task", os.path.join(tmp, "none.yaml")], ["--task", "not found"])
    check("--config missing", pt + ["--config", os.path.join(tmp, "none.yaml")], ["--config", "not found"])
    check("--in missing", ["data", "binarize-ultrafeedback", "--in", os.path.join(tmp, "none.jsonl"), "--out",
                           os.path.join(tmp, "b.jsonl")], ["--in", "not found"])
    check("init --tokenizer a directory", ini + ["--tokenizer", d], ["--tokenizer", "is a directory"])


def file_cases(tmp, good, copy, tensors):
    """Malformed model files: the file and the field or tensor named."""
    def with_config(name, edit):
        d = copy(name)
        cfg = json.load(open(os.path.join(d, "config.json")))
        cfg = edit(cfg)
        json.dump(cfg, open(os.path.join(d, "config.json"), "w"))
        return d

    def cfg_case(name, edit, frags, cmd="info"):
        d = with_config(name, edit)
        args = ["info", "--model", d] if cmd == "info" else ["generate", "--model", d, "--prompt", "hi"]
        check(name, args, [os.path.join(d, "config.json")] + frags)

    cfg_case("config num_hidden_layers 0", lambda c: dict(c, num_hidden_layers=0), ["num_hidden_layers"], "generate")
    cfg_case("config hidden_act gelu", lambda c: dict(c, hidden_act="gelu"), ["hidden_act 'gelu'"], "generate")
    cfg_case("config hidden_size 10^9", lambda c: dict(c, hidden_size=10**9), ["hidden_size", "at most"])
    cfg_case("config rope_theta -1", lambda c: dict(c, rope_theta=-1), ["rope_theta"])
    cfg_case("config rms_norm_eps 0", lambda c: dict(c, rms_norm_eps=0), ["rms_norm_eps"])
    cfg_case("config vocab_size a string", lambda c: dict(c, vocab_size="512"), ["vocab_size", "integer"])
    cfg_case("config heads not a multiple of kv heads", lambda c: dict(c, num_key_value_heads=3), ["num_key_value_heads"])
    cfg_case("config rope_scaling dynamic", lambda c: dict(c, rope_scaling={"rope_type": "dynamic", "factor": 2.0}), ["rope_scaling.rope_type", "dynamic"])
    cfg_case("config rope_scaling llama3 without its fields", lambda c: dict(c, rope_scaling={"rope_type": "llama3", "factor": 8.0}), ["rope_scaling.low_freq_factor", "missing"])
    cfg_case("config mlp_bias", lambda c: dict(c, mlp_bias=True), ["mlp_bias", "not supported"])
    cfg_case("config attention_bias not a bool", lambda c: dict(c, attention_bias="yes"), ["attention_bias", "true or false"])
    cfg_case("config qwen2 use_sliding_window", lambda c: dict(c, model_type="qwen2", use_sliding_window=True),
             ["use_sliding_window", "not supported"])
    cfg_case("config experts 10^9", lambda c: dict(c, model_type="mixtral", num_local_experts=10**9, num_experts_per_tok=2),
             ["num_local_experts", "at most"])
    cfg_case("config a JSON array", lambda c: [c], ["not a JSON object"])
    d = copy("config-malformed")
    write(os.path.join(d, "config.json"), "{\"model_type\": \"llama\",")
    check("config malformed JSON", ["info", "--model", d], [os.path.join(d, "config.json"), "malformed JSON"])

    def tok_case(name, text, frags):
        d = copy(name)
        write(os.path.join(d, "tokenizer_config.json"), text)
        check(name, ["generate", "--model", d, "--prompt", "hi"], [os.path.join(d, "tokenizer_config.json")] + frags)

    tok_case("tokenizer_config a JSON array", "[1, 2]", ["expected a JSON object"])
    tok_case("tokenizer_config malformed", "{\"bos_token\": ", ["malformed JSON"])
    tok_case("tokenizer_config content a number",
             json.dumps({"added_tokens_decoder": {"512": {"content": 7}}}), ["added_tokens_decoder['512']", "content"])
    tok_case("tokenizer_config special not a boolean",
             json.dumps({"added_tokens_decoder": {"512": {"content": "<x>", "special": "yes"}}}), ["special"])
    tok_case("tokenizer_config bos_token unknown", json.dumps({"bos_token": "<nope>"}), ["bos_token '<nope>'"])
    d = copy("tok-dir")
    os.remove(os.path.join(d, "tokenizer.model"))
    os.makedirs(os.path.join(d, "tokenizer.model"))
    check("tokenizer.model a directory", ["generate", "--model", d, "--prompt", "hi"], ["tokenizer.model", "is a directory"])
    d = copy("tok-garbage")
    write(os.path.join(d, "tokenizer.model"), "not a protobuf at all" * 10)
    check("tokenizer.model garbage", ["generate", "--model", d, "--prompt", "hi"], ["tokenizer.model", "SentencePiece"])

    d = copy("extra-tensor")
    t = dict(tensors)
    t["model.layers.7.mlp.up_proj.weight"] = t["model.layers.1.mlp.up_proj.weight"]
    write_safetensors(os.path.join(d, "model.safetensors"), t)
    check("unknown tensor in a checkpoint", ["score", "--model", d, "--ids", "1,2,3"],
          ["model.layers.7.mlp.up_proj.weight", "no place"])
    check("unknown tensor in a checkpoint (training)", ["pretrain", "--model", d, "--data",
          os.path.join(tmp, "in", "corpus.txt"), "--out", os.path.join(tmp, "r-extra")], ["model.layers.7.mlp.up_proj.weight"])

    gg = os.path.join(tmp, "in", "bad-magic.gguf")
    write(gg, "GGML" + "\0" * 60)
    check("GGUF with a bad magic", ["generate", "--model", gg, "--tokenizer", good, "--prompt", "hi"],
          [gg, "not a GGUF file"])
    rc, _, err = run("export-gguf", "--model", good, "--out", os.path.join(tmp, "in", "good.gguf"), "--outtype", "q8_0")
    assert rc == 0, err
    blob = open(os.path.join(tmp, "in", "good.gguf"), "rb").read()
    tr = os.path.join(tmp, "in", "truncated.gguf")
    open(tr, "wb").write(blob[: len(blob) // 2])
    check("truncated GGUF", ["generate", "--model", tr, "--tokenizer", good, "--prompt", "hi"], [tr])
    check("GGUF without --tokenizer", ["generate", "--model", os.path.join(tmp, "in", "good.gguf"), "--prompt", "hi"],
          ["--tokenizer"])

    # Importance matrices: too little text, a file that is not one, one of another model.
    calib = os.path.join(tmp, "in", "calib.txt")
    write(calib, " ".join(["the stack of layers merges the experts"] * 60))
    imx = os.path.join(tmp, "in", "good-imatrix.gguf")
    rc, _, err = run("imatrix", "--model", good, "--data", calib, "--out", imx, "--ctx", "32", "--no-ppl")
    assert rc == 0, err
    short = os.path.join(tmp, "in", "short.txt")
    write(short, "too short a text")
    check("imatrix on too little text", ["imatrix", "--model", good, "--data", short, "--out", os.path.join(tmp, "i.gguf")],
          ["imatrix", "tokens", "at least 1024"])
    check("imatrix --output-format bogus", ["imatrix", "--model", good, "--data", calib, "--out",
                                            os.path.join(tmp, "i.gguf"), "--output-format", "bogus"],
          ["--output-format", "expected one of"])
    check("imatrix over an existing file", ["imatrix", "--model", good, "--data", calib, "--out", imx],
          [imx, "exists", "--force"])
    out = os.path.join(tmp, "o.gguf")
    check("export-gguf --imatrix with f16", ["export-gguf", "--model", good, "--out", out, "--outtype", "f16",
                                             "--imatrix", imx], ["--imatrix", "f16", "does not use an importance matrix"])
    check("export-gguf --imatrix a model GGUF", ["export-gguf", "--model", good, "--out", out, "--outtype", "q4_k_m",
                                                 "--imatrix", os.path.join(tmp, "in", "good.gguf")],
          ["good.gguf", "not an imatrix file"])
    cut = os.path.join(tmp, "in", "cut-imatrix.dat")
    rc, _, err = run("imatrix", "--model", good, "--data", calib, "--out", os.path.join(tmp, "in", "good-imatrix.dat"),
                     "--ctx", "32", "--no-ppl")
    assert rc == 0, err
    open(cut, "wb").write(open(os.path.join(tmp, "in", "good-imatrix.dat"), "rb").read()[:50])
    check("export-gguf --imatrix a truncated .dat", ["export-gguf", "--model", good, "--out", out, "--outtype", "q4_k_m",
                                                     "--imatrix", cut], [cut, "truncated"])
    wide = os.path.join(tmp, "in", "wide")
    rc, _, err = run("init", "--out", wide, "--hidden", "128", "--seed", "2")
    assert rc == 0, err
    check("export-gguf --imatrix of another model", ["export-gguf", "--model", wide, "--out", out, "--outtype",
                                                     "q4_k_m", "--imatrix", imx],
          ["--imatrix", "blk.0.attn_q.weight", "values"])


def data_cases(tmp, good):
    """JSONL and YAML inputs: the file, the line and the field; long lines never echoed whole."""
    ind = os.path.join(tmp, "in")
    chat = os.path.join(ind, "chat")
    rc, _, err = run("init", "--out", chat, "--chat-template", "openchat", "--add-tokens", "<|end_of_turn|>")
    assert rc == 0, err
    c = write_jsonl(os.path.join(ind, "c1.jsonl"), [{"text": "a fine line"}, "{\"text\": ", {"text": "more"}])
    check("corpus JSONL malformed line", ["pretrain", "--model", good, "--data", c, "--out", os.path.join(tmp, "r1")],
          [c + ":2", "malformed JSON"])
    c = write_jsonl(os.path.join(ind, "c2.jsonl"), [{"text": 5}])
    check("corpus JSONL text not a string", ["pretrain", "--model", good, "--data", c, "--out", os.path.join(tmp, "r2")],
          [c + ":1", "text"])
    huge = write(os.path.join(ind, "huge.jsonl"), "{\"text\": \"" + "x" * 5_000_000 + "\n")
    check("a 5 MB malformed line is not echoed", ["pretrain", "--model", good, "--data", huge, "--out",
                                                  os.path.join(tmp, "r3")], [huge + ":1", "malformed JSON"])
    sft = ["sft", "--model", good, "--out", os.path.join(tmp, "s1"), "--seq-len", "64"]
    c = write_jsonl(os.path.join(ind, "s-role.jsonl"), [{"messages": [{"role": 3, "content": "hi"}]}])
    check("sft role not a string", sft + ["--data", c], [c + ":1"])
    c = write_jsonl(os.path.join(ind, "s-none.jsonl"), [{"conversation": "x"}])
    check("sft line without messages", sft + ["--data", c], [c + ":1"])
    c = write_jsonl(os.path.join(ind, "s-malformed.jsonl"), ["[1, 2"])
    check("sft malformed line", sft + ["--data", c], [c + ":1", "malformed JSON"])
    dpo = ["dpo", "--model", chat, "--out", os.path.join(tmp, "d1"), "--seq-len", "64"]
    c = write_jsonl(os.path.join(ind, "p-norej.jsonl"), [{"prompt": "hi", "chosen": "a"}])
    check("dpo pair without rejected", dpo + ["--data", c, "--strict"], [c + ":1", "rejected"])
    c = write_jsonl(os.path.join(ind, "p-empty.jsonl"), [{"prompt": "hi", "chosen": "", "rejected": "b"}])
    check("dpo --strict empty chosen", dpo + ["--data", c, "--strict"], [c + ":1", "empty \"chosen\""])
    c = write_jsonl(os.path.join(ind, "p-long.jsonl"),
                    [{"prompt": "word " * 40, "chosen": "fine answer", "rejected": "bad answer"}] * 5)
    check("dpo --max-length too small names --max-length", dpo + ["--data", c, "--max-length", "4",
                                                                  "--max-prompt-length", "4"], ["--max-length"])
    c = write_jsonl(os.path.join(ind, "p-image.jsonl"), [{"prompt": [{"role": "user", "content": [
        {"type": "image", "url": "x.png"}]}], "chosen": [{"role": "assistant", "content": "a"}],
        "rejected": [{"role": "assistant", "content": "b"}]}])
    check("dpo refuses a non-text content part by name", dpo + ["--data", c, "--strict"],
          [c + ":1", "\"prompt\" message 0 content part 0", "image"])
    c = write_jsonl(os.path.join(ind, "p-mixed.jsonl"), [{"chosen": "a", "rejected": [{"role": "assistant", "content": "b"}]}])
    check("dpo refuses chosen text with rejected messages", dpo + ["--data", c, "--strict"], [c + ":1", "both"])
    c = write_jsonl(os.path.join(ind, "p-noshare.jsonl"), [{"chosen": "abc", "rejected": "xyz"}])
    check("dpo implicit prompt with nothing shared", dpo + ["--data", c, "--strict"], [c + ":1", "share no prompt"])
    c = write_jsonl(os.path.join(ind, "p-conv.jsonl"), [{"prompt": [{"role": "user", "content": "q"}],
        "chosen": [{"role": "assistant", "content": "a"}], "rejected": [{"role": "assistant", "content": "b"}]}])
    check("dpo conversational rows on a model without a chat template", ["dpo", "--model", good, "--data", c, "--out",
          os.path.join(tmp, "d2"), "--seq-len", "64"], [c + ":1", "chat template", "--template"])
    check("dpo --max-prompt-length 1", dpo + ["--data", c, "--max-prompt-length", "1"], ["--max-prompt-length"])
    uf = write_jsonl(os.path.join(ind, "uf.jsonl"), [{"source": "x", "instruction": "Q", "completions": [
        {"model": "m1", "response": "a", "annotations": {"helpfulness": {"Rating": "abc"}}},
        {"model": "m2", "response": "b", "annotations": {"helpfulness": {"Rating": "2"}}}]}])
    check("binarize a rating that is not a number", ["data", "binarize-ultrafeedback", "--in", uf, "--out",
                                                     os.path.join(tmp, "b.jsonl")], [uf + ":1", "Rating", "abc"])
    items = write_jsonl(os.path.join(ind, "items.jsonl"), [{"question": "q", "choices": ["a", "b"], "answer": 0}])
    t = write(os.path.join(ind, "t-malformed.yaml"), "task: x\ntype: [multiple_choice\n")
    check("task malformed YAML", ["eval", "--model", good, "--task", t, "--data", items], [t, "malformed YAML"])
    t = write(os.path.join(ind, "t-key.yaml"), "task: x\ntype: multiple_choice\ndoc_to_text: q\nfrobnicate: 1\n")
    check("task unknown key", ["eval", "--model", good, "--task", t, "--data", items], [t, "frobnicate"])
    t = write(os.path.join(ind, "t-type.yaml"), "task: x\ntype: multiple_choice\ndoc_to_text: q\nnum_fewshot: many\n")
    check("task num_fewshot not an integer", ["eval", "--model", good, "--task", t, "--data", items],
          [t + ":4", "num_fewshot", "integer", "many"])
    t = write(os.path.join(ind, "t-regex.yaml"), "task: x\ntype: generate\ndoc_to_text: q\nfilter_list:\n"
              "  - name: strict\n    filter:\n      - function: regex\n        regex_pattern: '(bad'\n")
    check("task filter regex that does not compile", ["eval", "--model", good, "--task", t, "--data", items],
          [t, "filter strict", "(bad", "parenthesis"])
    t = write(os.path.join(ind, "t-hook.yaml"), "task: x\noutput_type: multiple_choice\ndoc_to_text: q\n"
              "process_docs: !function mine.process\n")
    check("task with a Python hook lamina cannot run", ["eval", "--model", good, "--task", t, "--data", items],
          [t + ":4", "!function mine.process"])
    t = write(os.path.join(ind, "t-jinja.yaml"), "task: x\ntype: multiple_choice\ndoc_to_text: '{% for c in choices %}{{c}}{% endfor %}'\n")
    check("task template with an unsupported Jinja statement", ["eval", "--model", good, "--task", t, "--data", items],
          ["{% for c in choices", "not supported"])
    corpus = os.path.join(ind, "corpus.txt")
    pt = ["pretrain", "--model", good, "--data", corpus, "--out", os.path.join(tmp, "r4")]
    y = write(os.path.join(ind, "cfg-unknown.yaml"), "lr: 1e-3\nfrobnicate: 2\n")
    check("--config unknown option", pt + ["--config", y], [y + ":2", "frobnicate"])
    y = write(os.path.join(ind, "cfg-range.yaml"), "lr: -1\n")
    check("--config value out of range", pt + ["--config", y], [y, "--lr", ">= 0"])
    y = write(os.path.join(ind, "cfg-bool.yaml"), "recompute: maybe\n")
    check("--config flag not a boolean", pt + ["--config", y], [y + ":1", "recompute", "boolean"])
    y = write(os.path.join(ind, "cfg-list.yaml"), "lr: [1, 2]\n")
    check("--config a list for a single option", pt + ["--config", y], [y + ":1", "lr"])
    mk = write(os.path.join(ind, "mk.yaml"), f"slices:\n  - sources:\n    - model: {good}\n      layer_range: [0, x]\n"
               "merge_method: passthrough\n")
    check("mergekit layer_range not an integer", ["upscale", "--config", mk, "--out", os.path.join(tmp, "up-y")],
          [mk, "layer_range", "integer"])
    mk = write(os.path.join(ind, "mk2.yaml"), f"slices:\n  - sources:\n    - model: {good}\n      layer_range: [0, 1]\n"
               "merge_method: slerp\n")
    check("mergekit merge_method not passthrough", ["upscale", "--config", mk, "--out", os.path.join(tmp, "up-y")],
          [mk, "slerp"])
    mk = write(os.path.join(ind, "mk3.yaml"), f"slices:\n  - sources:\n    - model: {good}\n      layer_range: [0, 1]\n"
               "      parameters:\n        scale: [0, x]\nmerge_method: passthrough\n")
    check("mergekit gradient value not a number", ["upscale", "--config", mk, "--out", os.path.join(tmp, "up-y")],
          [mk + ":6", "scale gradient value", "number"])
    mk = write(os.path.join(ind, "mk4.yaml"), f"models:\n  - model: {good}\nmerge_method: passthrough\n"
               "tokenizer:\n  source: base\n  tokens: {}\n")
    check("mergekit tokenizer tokens", ["upscale", "--config", mk, "--out", os.path.join(tmp, "up-y")],
          [mk + ":6", "tokenizer key 'tokens'"])
    rout = os.path.join(tmp, "recipe-out")
    r = write(os.path.join(ind, "r-bad2.yaml"), f"model: {good}\nout: {rout}\nsteps:\n"
              f"  - pretrain: {{data: [{corpus}], seq-len: 32, max-steps: 1}}\n  - sft: {{data: {corpus}, lr: -1}}\n")
    check("recipe: step 2's bad option stops it before step 1 runs", ["recipe", "--recipe", r],
          [r, "step 2 (sft)", "--lr"])
    r = write(os.path.join(ind, "r-cmd.yaml"), f"model: {good}\nout: {rout}\nsteps:\n  - frobnicate: {{}}\n")
    check("recipe: unknown command", ["recipe", "--recipe", r], [r, "step 1", "frobnicate"])
    r = write(os.path.join(ind, "r-data.yaml"), f"model: {good}\nout: {rout}\nsteps:\n"
              f"  - pretrain: {{data: [{ind}/missing.txt], seq-len: 32}}\n")
    check("recipe --dry-run: a data file that does not exist", ["recipe", "--recipe", r, "--dry-run"],
          [r, "step 1 (pretrain)", "missing.txt", "not found"])


def safety_cases(tmp, good):
    """Outputs never destroy inputs; one writer per output; temporaries never outlive a run."""
    m = os.path.join(tmp, "m")
    shutil.copytree(good, m)
    check("upscale --out M/. --force", ["upscale", "--model", m, "--out", m + "/.", "--force"], ["--out", "is the input --model"])
    check("upscale --out M --force", ["upscale", "--model", m, "--out", m, "--force"], ["--out", "is the input --model"])
    check("export-gguf --out M/model.safetensors --force",
          ["export-gguf", "--model", m, "--out", os.path.join(m, "model.safetensors"), "--force"],
          ["--out", "lies inside the input --model"])
    check("upscale --out the parent of the input", ["upscale", "--model", m, "--out", tmp, "--force"],
          ["--out", "contains the input --model"])
    link = os.path.join(tmp, "m-link")
    os.symlink(m, link)
    check("upscale --out a symlink to the input", ["upscale", "--model", m, "--out", link, "--force"], ["--out", "is the input"])
    os.remove(link)
    check("eval --output inside the model", ["eval", "--model", m, "--perplexity", os.path.join(tmp, "in", "corpus.txt"),
                                             "--output", os.path.join(m, "r.json")], ["--output", "lies inside the input --model"])
    check("score --dump-logits into the model", ["score", "--model", m, "--ids", "1,2", "--dump-logits",
                                                 os.path.join(m, "l.npy")], ["--dump-logits", "inside the input --model"])
    check("merge-lora --out the adapter", ["merge-lora", "--model", good, "--adapter", m, "--out", m, "--force"],
          ["--out", "is the input --adapter"])
    check("pretrain --out the model", ["pretrain", "--model", m, "--data", os.path.join(tmp, "in", "corpus.txt"),
                                       "--out", m], ["--out", "is the input --model"])
    c = os.path.join(tmp, "in", "corpus.txt")
    check("binarize --out the input", ["data", "binarize-ultrafeedback", "--in", c, "--out", c], ["--out", "is the input --in"])
    check("tokenizer train --out containing the data", ["tokenizer", "train", "--data", c, "--out", os.path.join(tmp, "in"),
                                                        "--force"], ["--out", "contains the input --data"])

    # An atomic write whose final rename fails (the name is taken by a directory) removes its temporary.
    taken = os.path.join(tmp, "taken")
    os.makedirs(os.path.join(taken, "sub"))
    check("score --dump-logits onto a directory", ["score", "--model", good, "--ids", "1,2", "--dump-logits", taken],
          [taken])
    uf = write_jsonl(os.path.join(tmp, "in", "uf-good.jsonl"), [{"source": "x", "instruction": "Q", "completions": [
        {"model": "m1", "response": "a", "annotations": {"helpfulness": {"Rating": "5"}}},
        {"model": "m2", "response": "b", "annotations": {"helpfulness": {"Rating": "2"}}}]}])
    check("binarize --out onto a directory", ["data", "binarize-ultrafeedback", "--in", uf, "--out", taken], [taken])

    corpus = write(os.path.join(tmp, "safety", "corpus.txt"), "The river runs past the old mill and the sea.\n\n" * 400)
    run_dir = os.path.join(tmp, "safety", "run")
    slow = ["pretrain", "--model", good, "--data", corpus, "--seq-len", "32", "--batch-size", "2", "--max-steps", "100000",
            "--val-fraction", "0", "--save-every", "1", "--keep", "1"]
    # Two writers: the second fails at once, naming the first one's pid; the first's run is untouched.
    first = subprocess.Popen([LAMINA, *slow, "--out", run_dir], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 60
    while time.time() < deadline and not any(n.startswith("checkpoint-") and ".tmp" not in n and not n.endswith(".lock")
                                             for n in (os.listdir(run_dir) if os.path.isdir(run_dir) else [])):
        time.sleep(0.05)
    rc, _, err = run(*slow, "--out", run_dir)
    report.check("a second writer of the same run fails at once, naming the first's pid",
                 rc == 1 and f"pid {first.pid}" in err and len(err.strip().splitlines()) == 1, err.strip()[:200])
    # kill -9 mid-run, then --resume: the dead run's temporaries are removed and training goes on.
    os.kill(first.pid, signal.SIGKILL)
    first.wait()
    stale = os.path.join(run_dir, f"checkpoint-999.tmp-{first.pid}")
    os.makedirs(stale, exist_ok=True)
    write(os.path.join(stale, "model.safetensors.tmp"), "half")
    # The lock file of a checkpoint the dead run was writing (nobody holds its flock any more).
    write(os.path.join(run_dir, "checkpoint-998.lock"), f"{first.pid}\n")
    rc, _, err = run(*[a if a != "100000" else "3" for a in slow], "--out", run_dir, "--resume")
    leftovers = [n for n in os.listdir(run_dir) if ".tmp" in n or n.endswith(".lock") and n != ".lamina.lock"]
    report.check("after kill -9, --resume removes the dead run's temporaries and finishes", rc == 0 and not leftovers,
                 f"rc {rc} {leftovers} {err.strip()[-200:]}")
    # A metrics.jsonl line that is not JSON (edited by hand, a disk that filled): --resume names it.
    metrics_path = os.path.join(run_dir, "metrics.jsonl")
    with open(metrics_path) as f:
        n_lines = sum(1 for line in f if line.strip())
    with open(metrics_path, "a") as f:
        f.write('{"step": 2, "loss": \n')
    rc, _, err = run(*[a if a != "100000" else "4" for a in slow], "--out", run_dir, "--resume")
    report.check("--resume over a metrics.jsonl line that is not JSON names the file and line",
                 rc == 1 and f"metrics.jsonl:{n_lines + 1}: malformed JSON" in err and len(err.strip().splitlines()) == 1,
                 err.strip()[:200])

    # SIGINT / SIGTERM while writing: nothing is left under the output's name or as a temporary.
    sig_dir = os.path.join(tmp, "signals")
    os.makedirs(sig_dir)
    for sig, args in [(signal.SIGINT, ["init", "--out", os.path.join(sig_dir, "big"), "--hidden", "1024", "--layers", "24",
                                       "--intermediate", "4096"]),
                      (signal.SIGTERM, ["export-gguf", "--model", good, "--out", os.path.join(sig_dir, "x.gguf")])]:
        if args[0] == "export-gguf":
            rc, _, err = run("init", "--out", os.path.join(sig_dir, "src"), "--hidden", "1024", "--layers", "12",
                             "--intermediate", "4096")
            assert rc == 0, err
            args = ["export-gguf", "--model", os.path.join(sig_dir, "src"), "--out", os.path.join(sig_dir, "x.gguf"),
                    "--outtype", "q4_0"]
        before = set(os.listdir(sig_dir))
        p = subprocess.Popen([LAMINA, *args], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        # Signal it while its temporary output exists (mid-write).
        deadline = time.time() + 30
        while time.time() < deadline and p.poll() is None and not any(".tmp-" in n for n in os.listdir(sig_dir)):
            time.sleep(0.005)
        p.send_signal(sig)
        _, err = p.communicate(timeout=60)
        after = set(os.listdir(sig_dir))
        report.check(f"{args[0]} interrupted by {sig.name} leaves nothing behind", p.returncode != 0 and after == before,
                     f"rc {p.returncode} new {sorted(after - before)} {err.strip()[-120:]}")

    # The NaN guard fires before any checkpoint: an update that overflows writes nothing.
    nan_run = os.path.join(tmp, "safety", "nan-run")
    rc, _, err = run("pretrain", "--model", good, "--data", corpus, "--seq-len", "32", "--batch-size", "2", "--max-steps", "3",
                     "--val-fraction", "0", "--save-every", "1", "--lr", "1e38", "--out", nan_run)
    report.check("an update that overflows stops before any checkpoint is written",
                 rc == 1 and "non-finite" in err and not os.path.exists(nan_run), err.strip()[-200:])

    # Disk full (a small tmpfs): the error names the output, and nothing half-written stays.
    full = os.path.join(tmp, "full")
    os.makedirs(full)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k", "tmpfs", full], capture_output=True).returncode == 0
    if mounted:
        try:
            for args in [["init", "--out", os.path.join(full, "m"), "--hidden", "256", "--layers", "4"],
                         ["export-gguf", "--model", good, "--out", os.path.join(full, "m.gguf"), "--outtype", "f32"],
                         ["upscale", "--model", good, "--out", os.path.join(full, "up"), "--drop", "1"]]:
                rc, _, err = run(*args)
                report.check(f"disk full: {args[0]} fails naming the output and leaves nothing",
                             rc == 1 and os.listdir(full) == [] and "error" in err.strip().splitlines()[-1]
                             and full in err.strip().splitlines()[-1],
                             f"rc {rc} left {os.listdir(full)} {err.strip()[:200]!r}")
        finally:
            subprocess.run(["umount", full])
    else:
        print("SKIP disk-full cases: cannot mount a tmpfs here (not root)")


if __name__ == "__main__":
    main()
