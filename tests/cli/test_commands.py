"""End-to-end checks of every command on tiny models (no torch needed).

usage: test_commands.py LAMINA_BINARY SHARED_DIR      prints 'N passed, M failed'
"""
import json
import math
import os
import shutil
import sys
import tempfile

from harness import Report, runner

SHARED = sys.argv[2]
report = Report()
check = report.check
run = runner(os.path.abspath(sys.argv[1]))


def safetensors_header(path):
    """The JSON header of a .safetensors file (8-byte little-endian length, then the JSON)."""
    with open(path, "rb") as f:
        n = int.from_bytes(f.read(8), "little")
        return json.loads(f.read(n))


def main():
    tmp = tempfile.mkdtemp()
    try:
        for cmd in ["init", "info", "generate", "chat", "score", "upscale", "pretrain", "plot", "merge-lora", "sft", "dpo",
                    "eval", "export-gguf", "bench", "serve", "imatrix"]:
            p = run(cmd, "--help")
            check(f"{cmd} --help", p.returncode == 0 and "usage: lamina " + cmd in p.stdout and "--" in p.stdout)
        p = run("--help")
        check("lamina --help lists commands", p.returncode == 0 and all(c in p.stdout for c in ["init", "score", "chat"]))

        # info on real shapes from config.json alone (no weights).
        for fname, params, active in [("mistral-7b-v0.1.json", 7241732096, None),
                                      ("solar-10.7b-v1.0.json", 10731524096, None),
                                      ("mixtral-8x7b-instruct-v0.1.json", 46702792704, 12879925248)]:
            d = os.path.join(tmp, fname)
            os.makedirs(d)
            shutil.copy(os.path.join(SHARED, "model-configs", fname), os.path.join(d, "config.json"))
            j = json.loads(run("info", "--model", d, "--json").stdout)
            ok = j["parameters"] == params and (active is None or j["active_parameters"] == active)
            check(f"info {fname}", ok, f"{j['parameters']} / {j['active_parameters']}")
            if fname.startswith("solar"):
                text = run("info", "--model", d).stdout
                check("info text shows 48 layers and 10.73B", "48 layers" in text and "10.73B" in text)

        # Sharded and unsharded checkpoints of the same seed give identical scores.
        one, many = os.path.join(tmp, "one"), os.path.join(tmp, "many")
        run("init", "--out", one, "--seed", "3", "--std", "0.1")
        run("init", "--out", many, "--seed", "3", "--std", "0.1", "--shard-size", "100KB")
        shards = sorted(f for f in os.listdir(many) if f.endswith(".safetensors"))
        index = json.load(open(os.path.join(many, "model.safetensors.index.json")))
        check("sharded init writes shards and an index", len(shards) > 2 and set(index["weight_map"].values()) == set(shards),
              f"{len(shards)} shards")
        s1 = json.loads(run("score", "--model", one, "--ids", "1,5,9,200,7,3", "--json").stdout)
        s2 = json.loads(run("score", "--model", many, "--ids", "1,5,9,200,7,3", "--json").stdout)
        check("sharded == single-file scores", s1["logprobs"] == s2["logprobs"])
        lp = s1["logprobs"][1:]
        check("score totals are consistent", abs(sum(lp) - s1["total_logprob"]) < 1e-9
              and abs(math.exp(-s1["total_logprob"] / 5) - s1["perplexity"]) < 1e-9 and s1["logprobs"][0] is None)

        # Text scoring, per-token listing.
        txt = os.path.join(tmp, "t.txt")
        open(txt, "w").write("The river runs past the old mill.")
        p = run("score", "--model", one, "--text", txt, "--per-token")
        check("score --text", p.returncode == 0 and "perplexity:" in p.stdout)

        # Generation: greedy is deterministic; the completion is printed alone; seeds matter.
        g1 = run("generate", "--model", one, "--prompt", "The river", "--max-new-tokens", "16").stdout
        g2 = run("generate", "--model", one, "--prompt", "The river", "--max-new-tokens", "16").stdout
        check("greedy generation is deterministic", g1 == g2 and len(g1) > 0)
        samples = {run("generate", "--model", one, "--prompt", "The river", "--max-new-tokens", "16", "--temperature", "1.5",
                       "--seed", str(s)).stdout for s in range(4)}
        check("sampling depends on the seed", len(samples) > 1)
        p = run("generate", "--model", one, "--prompt", "The river", "--max-new-tokens", "5", "--stats")
        check("--stats reports speed", "tok/s" in p.stderr)
        # A vocabulary padded beyond the tokenizer (rows that are no token): never generated.
        padded = os.path.join(tmp, "padded")
        run("init", "--out", padded, "--vocab-size", "4096", "--std", "0.5", "--seed", "3")
        p = run("generate", "--model", padded, "--prompt", "The river", "--max-new-tokens", "64", "--temperature", "2")
        check("padded vocabulary rows are never sampled", p.returncode == 0, p.stderr.strip()[-200:])

        # bench: llama-bench's pp / tg on the model as stored and quantized, with the CPU named.
        p = run("bench", "--model", one, "--n-prompt", "16", "--n-gen", "4", "--repetitions", "2", "--json")
        j = json.loads(p.stdout) if p.returncode == 0 else {}
        check("bench --json: pp16 and tg4 tokens/s, the CPU and its quantized kernel, peak memory",
              j.get("pp", {}).get("tokens", 0) == 16 and j["pp"]["tokens_per_s"] > 0 and j["tg"]["tokens_per_s"] > 0
              and "flags:" in j["cpu"] and j["quant_kernel"] and j["peak_rss_gib"] > 0, p.stderr[-300:])
        # Decode's ceiling: the weight bytes a token reads (every matrix but the embedding, from the
        # checkpoint's own header) over the measured bandwidth.
        hdr = safetensors_header(os.path.join(one, "model.safetensors"))
        want_bytes = sum(v["data_offsets"][1] - v["data_offsets"][0] for k, v in hdr.items()
                         if k != "__metadata__" and len(v["shape"]) == 2 and k != "model.embed_tokens.weight")
        tg = j.get("tg", {})
        check(f"bench --json: decode bytes per token {j.get('decode_bytes_per_token')} = the matrices' {want_bytes}, "
              f"bandwidth {j.get('read_bandwidth_gb_s', 0):.1f} GB/s, fraction of its limit",
              j.get("decode_bytes_per_token") == want_bytes and j.get("read_bandwidth_gb_s", 0) > 0
              and tg.get("bandwidth_limit_tokens_per_s", 0) > 0
              and abs(tg.get("fraction_of_bandwidth_limit", 0) * tg.get("bandwidth_limit_tokens_per_s", 0)
                      - tg.get("tokens_per_s", -1)) < 1e-6 * tg.get("tokens_per_s", 1), json.dumps(j)[:400])
        p = run("bench", "--model", one, "--dtype", "q4_0", "--n-prompt", "16", "--n-gen", "2", "--repetitions", "1")
        check("bench text table (q4_0) with the bandwidth and decode's share of its limit",
              p.returncode == 0 and "| pp16 |" in p.stdout and "| tg2 |" in p.stdout
              and "quantized products:" in p.stdout and "memory read bandwidth:" in p.stdout and "% |" in p.stdout,
              p.stdout + p.stderr[-300:])
        for bad, says in [(["--repetitions", "0"], "--repetitions"), (["--n-prompt", "0", "--n-gen", "0"], "--n-prompt"),
                          (["--n-prompt", "-3"], "--n-prompt"), (["--n-prompt", "100000"], "context")]:
            p = run("bench", "--model", one, *bad)
            check(f"bench {' '.join(bad)} is refused naming {says}", p.returncode == 1 and says in p.stderr, p.stderr[-200:])

        # OpenChat-style model: added tokens, chat template, EOS = <|end_of_turn|>.
        oc = os.path.join(tmp, "oc")
        run("init", "--out", oc, "--shape", "tiny-mistral", "--tokenizer", os.path.join(SHARED, "tokenizers/llama2/tokenizer.model"),
            "--add-tokens", "<|end_of_turn|>,<|pad_0|>", "--chat-template", "openchat")
        cfg = json.load(open(os.path.join(oc, "config.json")))
        tcfg = json.load(open(os.path.join(oc, "tokenizer_config.json")))
        check("init with added tokens", cfg["vocab_size"] == 32002 and cfg["eos_token_id"] == 32000
              and tcfg["eos_token"] == "<|end_of_turn|>" and "GPT4 Correct" in tcfg["chat_template"])
        p = run("generate", "--model", oc, "--prompt", "Hi", "--chat", "--max-new-tokens", "4")
        check("generate --chat (openchat template)", p.returncode == 0)
        p = run("chat", "--model", oc, "--max-new-tokens", "3", "--context", "256", stdin="Hello\nHow are you?\n/reset\nAgain\n")
        check("chat answers every turn", p.returncode == 0 and p.stdout.count("\n") >= 3, repr(p.stdout[:80]))

        # A tokenizer trained on a corpus, used by a new model.
        corpus = os.path.join(tmp, "corpus.txt")
        open(corpus, "w").write(("The river runs past the old mill and under the stone bridge.\n"
                                 "A language model reads a sequence of tokens and predicts the next one.\n") * 50)
        tk = os.path.join(tmp, "tk")
        p = run("tokenizer", "train", "--data", corpus, "--vocab-size", "500", "--out", tk, "--add-tokens", "<|end_of_turn|>")
        tcfg = json.load(open(os.path.join(tk, "tokenizer_config.json")))
        m2 = os.path.join(tmp, "m2")
        run("init", "--out", m2, "--tokenizer", os.path.join(tk, "tokenizer.model"))
        sample = os.path.join(tmp, "sample.txt")
        open(sample, "w").write("The river runs past the old mill.")
        sc = json.loads(run("score", "--model", m2, "--text", sample, "--json").stdout)
        check("tokenizer train -> init -> score", p.returncode == 0 and "<|end_of_turn|>" in json.dumps(tcfg)
              and len(sc["pieces"]) < 0.5 * 33, f"{len(sc['pieces'])} tokens for 33 characters")

        # Mixtral fused layout and bf16 load and run.
        mx = os.path.join(tmp, "mx")
        run("init", "--out", mx, "--shape", "tiny-mixtral", "--moe-layout", "fused", "--dtype", "bf16")
        j = json.loads(run("info", "--model", mx, "--json").stdout)
        check("info mixtral", j["experts"]["num_local_experts"] == 4 and j["checkpoint"]["dtypes"] == {"BF16": len(
            [0 for _ in range(j["checkpoint"]["tensors"])])})
        p = run("generate", "--model", mx, "--prompt", "The", "--max-new-tokens", "4", "--dtype", "f32")
        check("mixtral generate", p.returncode == 0)
    finally:
        shutil.rmtree(tmp)
    report.finish()


if __name__ == "__main__":
    main()
