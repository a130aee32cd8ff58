"""lamina recipe: a whole recipe (upscale -> pretrain -> sft -> dpo -> eval -> export-gguf) from one
YAML file, each step's --model chained from the previous output; options of every step checked
before the first runs; finished steps skipped on a rerun; a failed step resumes from itself.

usage: test_recipe.py LAMINA        prints 'N passed, M failed'
"""
import json
import os
import subprocess
import sys
import tempfile

import numpy as np

from harness import Report, f32_tensors, runner, write_jsonl

report = Report()
check = report.check
LAMINA = os.path.abspath(sys.argv[1])
run = runner(LAMINA)
run_quiet = runner(os.path.abspath(sys.argv[1]), echo_failures=False)

TEXT = "The river runs past the old mill and under the stone bridge. " * 40



def recipe_text(tmp, last_step_options="{outtype: q8_0}"):
    return f"""name: miniature
model: {tmp}/base
out: {tmp}/run
steps:
  - upscale: {{drop: 1}}
  - pretrain: {{data: [{tmp}/corpus.txt], seq-len: 32, batch-size: 2, max-steps: 3, lr: 1e-3}}
  - sft: {{data: {tmp}/chats.jsonl, seq-len: 64, batch-size: 2, max-steps: 3, lr: 1e-3}}
  - dpo: {{data: {tmp}/pairs.jsonl, seq-len: 64, batch-size: 2, max-steps: 2, lr: 1e-5, beta: 0.1}}
  - eval: {{task: [{tmp}/add.yaml]}}
  - export-gguf: {last_step_options}
"""


def main():
    tmp = tempfile.mkdtemp()
    run("init", "--out", f"{tmp}/base", "--shape", "tiny", "--layers", "4", "--seed", "1")
    open(f"{tmp}/corpus.txt", "w").write(TEXT)
    write_jsonl(f"{tmp}/chats.jsonl", [{"items": [{"role": "user", "content": f"{a}+1="},
                                                  {"role": "assistant", "content": str(a + 1)}]} for a in range(10)])
    write_jsonl(f"{tmp}/pairs.jsonl", [{"prompt": f"{a}+1=", "chosen": str(a + 1), "rejected": str(a + 2)} for a in range(10)])
    write_jsonl(f"{tmp}/add.jsonl", [{"q": f"{a}+1=", "a": str(a + 1)} for a in range(4)])
    open(f"{tmp}/add.yaml", "w").write('task: add\ntype: generate\ndata: add.jsonl\nchat: true\ndoc_to_text: "{{q}}"\n'
                                       'doc_to_target: "{{a}}"\nmax_new_tokens: 3\nmetrics: [exact_match]\n')
    recipe = f"{tmp}/recipe.yaml"

    # A typo in the last step stops the recipe before the first step runs.
    open(recipe, "w").write(recipe_text(tmp, "{outtype: q8_0, out-type: q4_0}"))
    p = run_quiet("recipe", "--recipe", recipe)
    check("every step's options are checked before anything runs", p.returncode != 0 and "step 6 (export-gguf)" in p.stderr
          and "--out-type" in p.stderr and not os.path.exists(f"{tmp}/run/01-upscale.done"), p.stderr.strip()[:200])
    open(f"{tmp}/bad.yaml", "w").write(f"model: {tmp}/base\nout: {tmp}/x\nsteps:\n  - finetune: {{lr: 1}}\n")
    p = run_quiet("recipe", "--recipe", f"{tmp}/bad.yaml")
    check("an unknown step is named", p.returncode != 0 and "unknown step 'finetune'" in p.stderr, p.stderr.strip()[:160])

    open(recipe, "w").write(recipe_text(tmp))
    p = run("recipe", "--recipe", recipe, "--dry-run")
    check("--dry-run prints the chained command lines and runs nothing", p.returncode == 0
          and f"--model {tmp}/run/01-upscale" in p.stdout and not os.path.exists(f"{tmp}/run/01-upscale"), p.stdout[-300:])

    p = run("recipe", "--recipe", recipe)
    done = {n: json.load(open(f"{tmp}/run/{n}.done")) for n in
            ["01-upscale", "02-pretrain", "03-sft", "04-dpo", "05-eval", "06-export-gguf"] if os.path.exists(f"{tmp}/run/{n}.done")}
    check("the whole recipe runs and records every step", p.returncode == 0 and len(done) == 6, p.stderr[-300:])
    if len(done) == 6:
        cfg = json.load(open(f"{tmp}/run/01-upscale/config.json"))
        # SOLAR's stack of 4 layers with drop 1: [0, 3) then [1, 4) -> 6 layers, the seam at 3 (a
        # plain copy of the model would neither have 6 layers nor layer 3 = source layer 1).
        src = f32_tensors(f"{tmp}/base/model.safetensors")
        got = f32_tensors(f"{tmp}/run/01-upscale/model.safetensors")
        order = [0, 1, 2, 1, 2, 3]
        same = all(np.array_equal(got[k], src[k.replace(f"layers.{i}.", f"layers.{order[i]}.", 1)])
                   for k in got for i in range(6) if k.startswith(f"model.layers.{i}."))
        check("upscale: 4 layers, drop 1 -> 6 layers, source layers 0 1 2 1 2 3", cfg["num_hidden_layers"] == 6 and same)
        chain = (done["02-pretrain"]["model_before"] == f"{tmp}/run/01-upscale"
                 and done["03-sft"]["model_before"] == f"{tmp}/run/02-pretrain/checkpoint-3"
                 and done["04-dpo"]["model_before"] == f"{tmp}/run/03-sft/checkpoint-3"
                 and done["05-eval"]["model_before"] == f"{tmp}/run/04-dpo/checkpoint-2"
                 and done["06-export-gguf"]["model_before"] == f"{tmp}/run/04-dpo/checkpoint-2")
        check("each step's --model is the previous step's output (newest checkpoint)", chain,
              json.dumps({k: v["model_before"] for k, v in done.items()})[:300])
        res = json.load(open(f"{tmp}/run/05-eval.json"))
        check("eval results and the GGUF file are written", "add" in res["results"]
              and open(f"{tmp}/run/06-export-gguf.gguf", "rb").read(4) == b"GGUF")
        check("the summary table ends the run", "recipe done" in p.stdout and "final model:" in p.stdout)

    p = run("recipe", "--recipe", recipe)
    check("a rerun skips the finished steps", p.returncode == 0 and p.stdout.count("done earlier, skipped") == 6, p.stdout[-300:])

    os.remove(f"{tmp}/run/04-dpo.done")
    os.remove(f"{tmp}/run/05-eval.done")
    p = run("recipe", "--recipe", recipe)
    check("after a failure the recipe continues from the unfinished step (training resumes)",
          p.returncode == 0 and p.stdout.count("done earlier, skipped") == 4 and "lamina dpo" in p.stdout
          and "--resume" in p.stdout, p.stdout[-400:])
    # The examples' data files are the user's: a dry run needs them present (it checks that every
    # input file exists), so run it where placeholders stand at the paths the recipes name.
    repo = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
    work = f"{tmp}/example-work"
    os.makedirs(work)
    os.symlink(os.path.join(repo, "tasks"), f"{work}/tasks")
    for f in ["corpus/part-000.txt", "corpus/part-001.txt", "prefs/ultrafeedback-binarized.jsonl",
              "eval/arc_challenge.jsonl", "eval/truthfulqa_mc2.jsonl"]:
        os.makedirs(os.path.dirname(f"{work}/{f}"), exist_ok=True)
        open(f"{work}/{f}", "w").write("placeholder\n")
    for name, n in [("recipe-solar.yaml", 6), ("recipe-notux.yaml", 4)]:
        example = os.path.join(repo, "examples", name)
        p = subprocess.run([LAMINA, "recipe", "--recipe", example, "--dry-run", "--out", f"{tmp}/example"],
                           capture_output=True, text=True, cwd=work, timeout=60)
        check(f"examples/{name} is a valid recipe (every option known to its command)", p.returncode == 0
              and p.stdout.count("== step") == n, p.stderr[-200:])
    os.remove(f"{work}/prefs/ultrafeedback-binarized.jsonl")
    p = subprocess.run([LAMINA, "recipe", "--recipe", os.path.join(repo, "examples", "recipe-notux.yaml"),
                        "--dry-run", "--out", f"{tmp}/example"], capture_output=True, text=True, cwd=work, timeout=60)
    check("a dry run refuses a data file that does not exist, naming the step and the option",
          p.returncode == 1 and "step 1 (dpo): --data prefs/ultrafeedback-binarized.jsonl: not found" in p.stderr,
          p.stderr.strip())

    # LoRA: merge-lora folds the adapter of the step before into the model that step started from.
    open(f"{tmp}/lora.yaml", "w").write(f"""model: {tmp}/base
out: {tmp}/lora-run
steps:
  - pretrain: {{data: [{tmp}/corpus.txt], seq-len: 32, batch-size: 2, max-steps: 2, lr: 1e-3, lora-r: 4}}
  - merge-lora: {{out: {tmp}/merged}}
  - score: {{text: {tmp}/short.txt}}
""")
    open(f"{tmp}/short.txt", "w").write("The river runs past the old mill.")
    p = run("recipe", "--recipe", f"{tmp}/lora.yaml")
    merge = json.load(open(f"{tmp}/lora-run/02-merge-lora.done")) if os.path.exists(f"{tmp}/lora-run/02-merge-lora.done") else {}
    check("merge-lora gets the base the LoRA step started from and its adapter; a step's own --out is what the "
          "next step gets",
          p.returncode == 0 and f"--model {tmp}/base --adapter {tmp}/lora-run/01-pretrain/checkpoint-2" in p.stdout
          and merge.get("model_after") == f"{tmp}/merged" and f"--model {tmp}/merged" in p.stdout
          and os.path.exists(f"{tmp}/merged/config.json") and "perplexity" in p.stdout, p.stdout[-400:])
    report.finish()


if __name__ == "__main__":
    main()
