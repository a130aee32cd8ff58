"""What the CLI and parity scripts share: running lamina, recording checks, the closing line."""
import json
import os
import struct
import subprocess
import sys


class Report:
    def __init__(self):
        self.results = []

    def check(self, name, ok, detail=""):
        self.results.append(bool(ok))
        print(f"{'PASS' if ok else 'FAIL'} {name} {detail}".rstrip())
        return bool(ok)

    def finish(self):
        passed = sum(self.results)
        print(f"{passed} passed, {len(self.results) - passed} failed")
        sys.exit(0 if self.results and all(self.results) else 1)


def runner(lamina, echo_failures=True):
    def run(*args, stdin=None):
        p = subprocess.run([lamina, *args], capture_output=True, text=True, input=stdin, timeout=300)
        if p.returncode != 0 and echo_failures:
            print(f"command failed ({p.returncode}): lamina {' '.join(args)[:200]}\n{p.stderr}")
        return p

    return run


def write_jsonl(path, rows):
    """One JSON object per line, UTF-8 as written (non-ASCII kept, not escaped)."""
    with open(path, "w", encoding="utf-8") as f:
        for r in rows:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def f32_tensors(path):
    """An F32 .safetensors file -> {name: array of its shape} (the tests' own reader)."""
    import numpy as np  # here: the serve test's environment has no numpy

    blob = open(path, "rb").read()
    (n,) = struct.unpack("<Q", blob[:8])
    h = json.loads(blob[8 : 8 + n])
    h.pop("__metadata__", None)
    return {k: np.frombuffer(blob[8 + n + v["data_offsets"][0] : 8 + n + v["data_offsets"][1]], "<f4").reshape(v["shape"])
            for k, v in h.items()}


def unpack_tokenizer(assets, name, dest):
    """tests/assets/tokenizers/NAME's gzipped tokenizer.json and tokenizer_config.json, unpacked
    into the new directory dest (a model directory with only the tokenizer); returns dest."""
    import gzip
    import shutil

    os.makedirs(dest)
    for f in ("tokenizer.json", "tokenizer_config.json"):
        with gzip.open(os.path.join(assets, "tokenizers", name, f + ".gz"), "rb") as src, \
                open(os.path.join(dest, f), "wb") as dst:
            shutil.copyfileobj(src, dst)
    return dest
