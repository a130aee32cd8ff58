"""Bad input gives a one-line error naming the file/tensor/field and a non-zero exit, never a crash.

usage: test_bad_input.py LAMINA_BINARY        (no torch needed; prints 'N passed, M failed')
"""
import json
import os
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


def check(name, args, want_in_stderr, code=1):
    rc, out, err = run(*args)
    lines = [l for l in err.strip().splitlines() if l]
    ok = rc == code and len(lines) == 1 and all(w in lines[0] for w in want_in_stderr) and "error" in lines[0]
    report.check(name, ok, f": exit {rc}; {err.strip()[:300]!r}")


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
    tmp = tempfile.mkdtemp()
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
        check("missing tokenizer", ["generate", "--model", d, "--prompt", "hi"], ["tokenizer.model", "tokenizer not found"])

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
    finally:
        shutil.rmtree(tmp)
    report.finish()


if __name__ == "__main__":
    main()
