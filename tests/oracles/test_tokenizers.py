"""tokenizer.json against Hugging Face tokenizers itself (and transformers' AutoTokenizer).

The real tokenizer.json files of Llama 3.1 (byte-level BPE, ignore_merges, <|begin_of_text|>
template), Qwen3 (byte-level BPE, NFC, no BOS) and Gemma 3 (BPE with byte fallback, ' ' -> '▁',
6415 added tokens), vendored gzipped in tests/assets/tokenizers. A corpus of several thousand
lines made here, deterministically: the repository's own C++ source (code), Debian's licence
texts (prose), and generated lines of CJK, Hangul, emoji (ZWJ sequences, skin tones, flags),
digit runs, white-space runs (tabs, CR LF, NBSP, U+3000), Cyrillic / Greek / Arabic /
Devanagari / Thai, decomposed accents (NFC changes them), contractions, and the tokenizer's
own added tokens in running text. For every line and model:
  ids of `lamina tokenize --jsonl` == tokenizers' encode (with and without the special tokens);
  lamina's decode == tokenizers' decode (special tokens kept);
  decode(encode(x)) == x (NFC(x) for Qwen3's NFC normalizer; Gemma: texts without '▁');
and on a sample, tokenizers == transformers' AutoTokenizer (the ids transformers users get).
Then the stages the three real files do not use: small BPE tokenizers trained here with
tokenizers' own BpeTrainer and saved with each normalizer (NFKC, Lowercase, Replace with a regex,
Prepend, Strip, StripAccents), pre-tokenizer (Split in every behavior and inverted, Metaspace with
each prepend scheme and split off, Digits, Punctuation, Whitespace, WhitespaceSplit), decoder
(Metaspace, ByteFallback, Fuse, Strip, Replace), a template with a suffix token, and added tokens
with lstrip / rstrip / single_word / normalized; the same three checks on part of the corpus.

usage: test_tokenizers.py LAMINA ASSETS_DIR        prints 'N passed, M failed'
"""
import glob
import json
import os
import random
import shutil
import sys
import tempfile
import unicodedata

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "cli"))
from harness import Report, runner, unpack_tokenizer  # noqa: E402

from tokenizers import Tokenizer  # noqa: E402

report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]))
assets = os.path.abspath(sys.argv[2])
repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))


def corpus(added, rng):
    lines = []
    # Code: the repository's own sources, whole lines with their indentation.
    for path in sorted(glob.glob(os.path.join(repo, "src", "*", "*.cpp")))[:40]:
        with open(path, encoding="utf-8") as f:
            src = [ln.rstrip("\n") for ln in f]
        lines += [ln for ln in src[:40] if ln.strip()]
    # Several lines at once (newlines inside one text).
    for path in sorted(glob.glob(os.path.join(repo, "tests", "cli", "*.py")))[:10]:
        with open(path, encoding="utf-8") as f:
            lines.append(f.read()[:1500])
    # Prose.
    for name in ("GPL-3", "Apache-2.0", "MPL-2.0"):
        p = os.path.join("/usr/share/common-licenses", name)
        if os.path.exists(p):
            with open(p, encoding="utf-8", errors="replace") as f:
                lines += [ln.rstrip("\n") for ln in f if ln.strip()][:300]

    def chars(lo, hi, n):
        return "".join(chr(rng.randint(lo, hi)) for _ in range(n))

    emoji = ["😀", "👍🏽", "👨‍👩‍👧‍👦", "🏳️‍🌈", "🇯🇵", "🇩🇪", "❤️", "🤖", "🧑🏿‍💻", "✨", "🔥", "🙂"]
    scripts = ["Привет, как дела? Ёжик в тумане.", "Καλημέρα κόσμε, ΣΊΣΥΦΟΣ", "مرحبا بالعالم، كيف حالك؟",
               "नमस्ते दुनिया, यह एक परीक्षण है।", "สวัสดีชาวโลก ภาษาไทยไม่มีช่องว่าง", "שלום עולם",
               "Tiếng Việt có dấu: ắ ằ ẳ ẵ ặ", "Straße, Ärger, naïve café, ﬁne ligature", "İstanbul ıi"]
    ws = [" ", "  ", "\t", "\n", "\r\n", "\n\n\n", "\u00a0", "\u3000", "    ", "\t\t ", " \n "]
    for i in range(2400):
        kind = i % 12
        if kind == 0:
            s = chars(0x4E00, 0x9FFF, rng.randint(1, 40))  # CJK ideographs, no spaces
        elif kind == 1:
            s = chars(0x3041, 0x3096, rng.randint(1, 12)) + "、" + chars(0x30A1, 0x30FA, rng.randint(1, 12)) + "。"
        elif kind == 2:
            s = chars(0xAC00, 0xD7A3, rng.randint(1, 15)) + " " + chars(0xAC00, 0xD7A3, 3)
        elif kind == 3:
            s = " ".join(rng.choice(emoji) * rng.randint(1, 3) for _ in range(rng.randint(1, 5)))
        elif kind == 4:
            s = " ".join(str(rng.randint(0, 10 ** rng.randint(1, 20))) for _ in range(rng.randint(1, 6)))
            s += " 3.14159 -42 1,000,000 0x1F 2024-12-01"
        elif kind == 5:
            s = "".join(rng.choice(ws) + rng.choice(["a", "word", "x1", "é", "中"]) for _ in range(rng.randint(1, 8)))
            s += rng.choice(ws)
        elif kind == 6:
            s = rng.choice(scripts)
        elif kind == 7:  # decomposed accents and Hangul jamo: NFC composes them
            s = unicodedata.normalize("NFD", rng.choice(["café résumé naïve", "Ångström Øre", "한국어 텍스트", "ñandú"]))
        elif kind == 8:
            s = rng.choice(["I'm", "you're", "he'll", "we've", "it's", "THEY'D", "don't", "O'Neil's"]) + " " + \
                rng.choice(["fine", "GOING", "there's'n'", "'s'"])
        elif kind == 9 and added:  # added tokens in running text, with and without spaces
            parts = []
            for _ in range(rng.randint(1, 4)):
                parts.append(rng.choice(added))
                parts.append(rng.choice(["", " ", "\n", "text", " more text ", "é"]))
            s = "".join(parts)
        elif kind == 10:
            s = "".join(chr(rng.randint(0x20, 0x7E)) for _ in range(rng.randint(1, 60)))  # ASCII noise
        else:
            s = "".join(chr(rng.choice([rng.randint(0xA0, 0x2FF), rng.randint(0x2000, 0x206F),
                                        rng.randint(0x1F300, 0x1F64F), rng.randint(0x10000, 0x1000F)]))
                        for _ in range(rng.randint(1, 10)))
        lines.append(s)
    return lines


def synthetic(work, lines):
    from tokenizers import AddedToken, Regex, decoders, models, normalizers, pre_tokenizers, processors, trainers

    def build(name, normalizer, pre, decoder, byte_fallback=False, unk=None, template=False, added=()):
        tok = Tokenizer(models.BPE(unk_token=unk, byte_fallback=byte_fallback, fuse_unk=unk is not None))
        if normalizer is not None:
            tok.normalizer = normalizer
        if pre is not None:
            tok.pre_tokenizer = pre
        if decoder is not None:
            tok.decoder = decoder
        special = ["<s>", "</s>"] + ([unk] if unk else [])
        alphabet = [f"<0x{b:02X}>" for b in range(256)] if byte_fallback else []
        tok.train_from_iterator(lines[:400], trainers.BpeTrainer(
            vocab_size=600, special_tokens=special + alphabet, show_progress=False,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet() if isinstance(pre, pre_tokenizers.ByteLevel) else []))
        if template:
            tok.post_processor = processors.TemplateProcessing(single="<s> $A </s>", special_tokens=[
                ("<s>", tok.token_to_id("<s>")), ("</s>", tok.token_to_id("</s>"))])
        if added:
            tok.add_tokens(list(added))
        d = os.path.join(work, "synthetic-" + name)
        os.makedirs(d)
        tok.save(os.path.join(d, "tokenizer.json"))
        return d, Tokenizer.from_file(os.path.join(d, "tokenizer.json"))

    bl = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    cases = [
        ("bytelevel-prefix", None, pre_tokenizers.ByteLevel(add_prefix_space=True), decoders.ByteLevel(), {}),
        ("nfkc-lower", normalizers.Sequence([normalizers.NFKC(), normalizers.Lowercase()]), bl, decoders.ByteLevel(), {}),
        ("strip-accents", normalizers.Sequence([normalizers.NFD(), normalizers.StripAccents(), normalizers.Strip()]), bl,
         decoders.ByteLevel(), {}),
        ("replace-regex", normalizers.Replace(Regex(r"\d+"), "#"),
         bl, decoders.ByteLevel(), {}),
        ("metaspace-always", None, pre_tokenizers.Metaspace(prepend_scheme="always"), decoders.Metaspace(prepend_scheme="always"),
         {"byte_fallback": True}),
        ("metaspace-first-nosplit", None, pre_tokenizers.Metaspace(prepend_scheme="first", split=False),
         decoders.Metaspace(prepend_scheme="first"), {"byte_fallback": True, "added": ("<tool>",)}),
        ("metaspace-never", None, pre_tokenizers.Metaspace(prepend_scheme="never"), decoders.Metaspace(prepend_scheme="never"),
         {"unk": "<unk>"}),
        ("sp-style", normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")]), None,
         decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]),
         {"byte_fallback": True, "template": True}),
    ]
    for behavior in ("removed", "isolated", "merged_with_previous", "merged_with_next", "contiguous"):
        for invert in (False, True):
            cases.append((f"split-{behavior}-{'inv' if invert else 'fwd'}", None, pre_tokenizers.Sequence([
                pre_tokenizers.Split(Regex(r"[ ,.]+|\d"), behavior, invert=invert), bl]),
                decoders.ByteLevel(), {}))
    cases += [
        ("digits-punct-ws", None, pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True),
                                                          pre_tokenizers.Punctuation(), pre_tokenizers.Whitespace()]),
         None, {"unk": "<unk>"}),
        ("digits-contiguous-wssplit", None, pre_tokenizers.Sequence([pre_tokenizers.WhitespaceSplit(),
                                                                     pre_tokenizers.Digits(individual_digits=False)]),
         decoders.Fuse(), {"unk": "<unk>"}),
        ("added-flags", normalizers.Lowercase(), bl, decoders.ByteLevel(), {"added": (
            AddedToken("[MASK]", lstrip=True, rstrip=True, special=True, normalized=False),
            AddedToken("<Word>", single_word=True, normalized=True), AddedToken("note", single_word=True),
            AddedToken("<|x|>", rstrip=True, special=False, normalized=False))}),
    ]
    rng = random.Random(7)
    probe = lines[:300] + ["a [MASK]  b", "x<word> y", "a <Word> b", "notebook note, note", "<|x|>   z", " 12 34",
                           "<tool>hello <tool> world", "", " ", "  leading and trailing  "]
    for name, norm, pre, dec, kw in cases:
        d, ref = build(name, norm, pre, dec, **kw)
        texts = probe + [rng.choice(lines) for _ in range(50)]
        f = os.path.join(work, "synthetic-" + name + ".jsonl")
        with open(f, "w", encoding="utf-8") as out:
            for t in texts:
                out.write(json.dumps(t) + "\n")
        p = run("tokenize", "--model", d, "--file", f, "--jsonl", "--no-special")
        q = run("tokenize", "--model", d, "--file", f, "--jsonl")
        if not check(f"synthetic {name}: tokenize runs", p.returncode == 0 and q.returncode == 0,
                     (p.stderr + q.stderr)[-300:]):
            continue
        got = [json.loads(x) for x in p.stdout.split("\n") if x]
        got_sp = [json.loads(x) for x in q.stdout.split("\n") if x]
        bad = [(t, g["ids"], ref.encode(t, add_special_tokens=False).ids) for t, g in zip(texts, got)
               if g["ids"] != ref.encode(t, add_special_tokens=False).ids]
        bad_sp = [t for t, g in zip(texts, got_sp) if g["ids"] != ref.encode(t).ids]
        bad_dec = [(t, g["decoded"], ref.decode(g["ids"], skip_special_tokens=False)) for t, g in zip(texts, got)
                   if g["decoded"] != ref.decode(g["ids"], skip_special_tokens=False)]
        check(f"synthetic {name}: ids == tokenizers on {len(texts)} texts", not bad and not bad_sp,
              f"{len(bad)}+{len(bad_sp)} differ, first: {(bad or bad_sp)[:1]!r}"[:600] if bad or bad_sp else "")
        check(f"synthetic {name}: decode == tokenizers", not bad_dec,
              f"{len(bad_dec)} differ, first: {bad_dec[:1]!r}"[:600] if bad_dec else "")


def main():
    work = tempfile.mkdtemp(prefix="lamina-tok-")
    try:
        total_lines = 0
        for name, nfc in (("llama3.1", False), ("qwen3", True), ("gemma3", False)):
            d = unpack_tokenizer(assets, name, os.path.join(work, name))
            ref = Tokenizer.from_file(os.path.join(d, "tokenizer.json"))
            tj = json.load(open(os.path.join(d, "tokenizer.json"), encoding="utf-8"))
            added = [a["content"] for a in tj["added_tokens"]]
            rng = random.Random(1234)
            # A spread of the added tokens (Gemma has 6415: the first ones, and a random sample).
            added = added[:24] + rng.sample(added, min(24, len(added)))
            lines = corpus(added, rng)
            total_lines += len(lines)
            f = os.path.join(work, name + ".jsonl")
            with open(f, "w", encoding="utf-8") as out:
                for s in lines:
                    out.write(json.dumps(s) + "\n")
            for special in (False, True):
                args = ["tokenize", "--model", d, "--file", f, "--jsonl"] + ([] if special else ["--no-special"])
                p = run(*args)
                if not check(f"{name} tokenize runs (special={special})", p.returncode == 0, p.stderr[-300:]):
                    continue
                got = [json.loads(x) for x in p.stdout.split("\n") if x]
                check(f"{name} one result per line (special={special})", len(got) == len(lines),
                      f"{len(got)} vs {len(lines)}")
                bad_ids, bad_dec, bad_rt = [], [], []
                for s, g in zip(lines, got):
                    want = ref.encode(s, add_special_tokens=special).ids
                    if g["ids"] != want:
                        bad_ids.append((s, g["ids"][:30], want[:30]))
                    if g["decoded"] != ref.decode(want, skip_special_tokens=False):
                        bad_dec.append((s, g["decoded"], ref.decode(want, skip_special_tokens=False)))
                    # Gemma's decoder turns every '▁' into a space (its normalizer's image of ' '),
                    # so a text holding '▁' itself does not come back: tokenizers does the same.
                    if not special and "▁" not in s:
                        expect = unicodedata.normalize("NFC", s) if nfc else s
                        if g["decoded"] != expect:
                            bad_rt.append((s, g["decoded"]))
                check(f"{name} ids == tokenizers on {len(lines)} lines (special={special})", not bad_ids,
                      f"{len(bad_ids)} differ, first: {bad_ids[:1]!r}"[:600] if bad_ids else "")
                check(f"{name} decode == tokenizers (special={special})", not bad_dec,
                      f"{len(bad_dec)} differ, first: {bad_dec[:1]!r}"[:600] if bad_dec else "")
                if not special:
                    check(f"{name} decode(encode(x)) == x", not bad_rt,
                          f"{len(bad_rt)} differ, first: {bad_rt[:1]!r}"[:600] if bad_rt else "")
            # transformers' AutoTokenizer (what users of transformers get) on a sample.
            from transformers import AutoTokenizer

            hf = AutoTokenizer.from_pretrained(d, local_files_only=True)
            sample = lines[::25]
            diff = [s for s in sample if hf(s)["input_ids"] != ref.encode(s).ids]
            check(f"{name} transformers AutoTokenizer == tokenizers on {len(sample)} lines", not diff,
                  f"first: {diff[:1]!r}"[:300] if diff else "")
        print(f"corpus: {total_lines} lines over 3 tokenizers")
        synthetic(work, lines[::4])
    finally:
        shutil.rmtree(work, ignore_errors=True)
    report.finish()


main()
