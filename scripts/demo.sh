#!/usr/bin/env bash
# The main job end to end on the embedded default model: create it, inspect it, generate, chat,
# and score. usage: scripts/demo.sh path/to/lamina
set -euo pipefail
lamina=${1:-build/lamina}
out=${DEMO_OUT:-out/demo}
mkdir -p "$out"
model=$out/tiny-openchat
step() { printf '\n== %s\n$ %s\n' "$1" "${*:2}"; "${@:2}"; }

step "1. a new model directory (random weights, a tokenizer trained on embedded text, OpenChat's added tokens and template)" \
  "$lamina" init --out "$model" --shape tiny-mistral --add-tokens '<|end_of_turn|>,<|pad_0|>' --chat-template openchat --force
step "2. what it is" "$lamina" info --model "$model"
step "3. greedy continuation (random weights: expect gibberish, but real tokens)" \
  "$lamina" generate --model "$model" --prompt "The river runs" --max-new-tokens 24 --stats
step "4. a chat turn in the OpenChat template (GPT4 Correct User: ...<|end_of_turn|>GPT4 Correct Assistant:)" \
  "$lamina" generate --model "$model" --chat --prompt "What is the capital of France?" --max-new-tokens 16 \
  --temperature 0.8 --top-p 0.9 --seed 1
printf 'The scientist wrote her results in a notebook and checked every number twice.\n' > "$out/sample.txt"
step "5. per-token log-likelihood and perplexity" "$lamina" score --model "$model" --text "$out/sample.txt"
"$lamina" score --model "$model" --text "$out/sample.txt" --json > "$out/score.json"

step "6. SOLAR depth up-scaling: layers [0, n-m) then [m, n) of two copies; first a base with n = 4" \
  "$lamina" init --out "$out/base-4l" --shape tiny-mistral --layers 4 --force
step "   ... stacked with m = 1 into 2(n - m) = 6 layers, streamed tensor by tensor" \
  "$lamina" upscale --model "$out/base-4l" --drop 1 --out "$out/dus-6l" --force
step "7. LLaMA-Pro block expansion: identity blocks after every 2nd layer (same logits as the base)" \
  "$lamina" upscale --model "$out/base-4l" --expand-every 2 --out "$out/pro-6l" --force
"$lamina" score --model "$out/base-4l" --text "$out/sample.txt" | grep perplexity | sed 's/^/   base:     /'
"$lamina" score --model "$out/pro-6l" --text "$out/sample.txt" | grep perplexity | sed 's/^/   expanded: /'

corpus=()
for f in /usr/share/common-licenses/GPL-3 /usr/share/common-licenses/Apache-2.0 /usr/share/common-licenses/MPL-2.0; do
  [ -f "$f" ] && corpus+=(--data "$f")
done
[ ${#corpus[@]} -gt 0 ] || { printf '%s\n' "$(cat "$out/sample.txt")" > "$out/corpus.txt"; corpus=(--data "$out/corpus.txt"); }
rm -rf "$out/pretrain" "$out/continued"
step "8. pretraining the 4-layer base on licence texts (loss, lr, tokens/s in the progress bar; metrics JSONL; SVG plot)" \
  "$lamina" pretrain --model "$out/base-4l" "${corpus[@]}" --out "$out/pretrain" --seq-len 64 --batch-size 8 \
  --max-steps 80 --lr 3e-3 --warmup-ratio 0.05 --eval-every 20
step "9. SOLAR: depth-up-scale the trained base, then continue pretraining the 6-layer model" \
  "$lamina" upscale --model "$out/pretrain/checkpoint-80" --drop 1 --out "$out/pretrained-dus-6l" --force
step "   ... continued pretraining (resumable: --resume continues from the newest checkpoint)" \
  "$lamina" pretrain --model "$out/pretrained-dus-6l" "${corpus[@]}" --out "$out/continued" --seq-len 64 --batch-size 8 \
  --max-steps 40 --lr 1e-3 --eval-every 20
# C-RLFT: two sources of different quality, no preference labels.
python3 - "$out" <<'PY'
import json, random, sys
out, rnd = sys.argv[1], random.Random(0)
with open(f"{out}/expert.jsonl", "w") as e, open(f"{out}/weak.jsonl", "w") as w:
    for i in range(2000):  # expert: always right; weak: off by one 70% of the time
        a, b = rnd.randint(0, 9), rnd.randint(0, 9)
        ans = a + b if i < 600 or rnd.random() >= 0.7 else a + b + 1
        (e if i < 600 else w).write(json.dumps({"items": [{"role": "user", "content": f"{a}+{b}="},
                                                         {"role": "assistant", "content": str(ans)}]}) + "\n")
PY
rm -rf "$out/crlft"
step "10. OpenChat's C-RLFT: source = condition in the prompt, coarse reward = token weight (1.0 vs 0.1)" \
  "$lamina" sft --model "$out/pretrain/checkpoint-80" --objective crlft --out "$out/crlft" --seq-len 64 --batch-size 8 \
  --max-steps 600 --lr 3e-3 --warmup-ratio 0.05 --source "gpt4=$out/expert.jsonl:weight=1.0:condition=GPT4" \
  --source "gpt35=$out/weak.jsonl:weight=0.1:condition=GPT3"
step "   ... chat with it (template and condition come from the model: GPT4 User: 3+4=<|end_of_turn|>GPT4 Assistant:)" \
  "$lamina" generate --model "$out/crlft/checkpoint-600" --chat --prompt "3+4=" --max-new-tokens 4
python3 - "$out" <<'PY'
import json, random, sys
out, rnd = sys.argv[1], random.Random(1)
with open(f"{out}/pairs.jsonl", "w") as f:
    for _ in range(400):
        a, b = rnd.randint(0, 9), rnd.randint(0, 9)
        f.write(json.dumps({"prompt": f"{a}+{b}=", "chosen": str(a + b), "rejected": str(a + b + 1)}) + "\n")
PY
rm -rf "$out/dpo"
step "11. DPO on top of C-RLFT (Notux's recipe: the starting policy is the reference; TRL's metric names)" \
  "$lamina" dpo --model "$out/crlft/checkpoint-600" --data "$out/pairs.jsonl" --out "$out/dpo" --seq-len 96 \
  --batch-size 8 --max-steps 100 --lr 1e-5 --beta 0.1 --warmup-ratio 0.1 --schedule linear --eval-every 50
tail -n 1 "$out/dpo/metrics.jsonl" | python3 -c 'import json,sys; m=json.loads(sys.stdin.read()); print("   eval:", {k: round(v, 3) for k, v in m.items() if k.startswith("eval_")})'
python3 - "$out" <<'PY'
import json, random, sys
out, rnd = sys.argv[1], random.Random(3)
with open(f"{out}/addition.jsonl", "w") as f:
    for a in range(10):
        for b in range(0, 10, 3):
            f.write(json.dumps({"question": f"{a}+{b}=", "answer": str(a + b)}) + "\n")
with open(f"{out}/addition_chat.jsonl", "w") as f:
    for a in range(10):
        for b in range(10):
            f.write(json.dumps({"question": f"{a}+{b}=", "answer": str(a + b)}) + "\n")
with open(f"{out}/addition_chat.yaml", "w") as f:  # the chat models: their template, zero-shot
    f.write('task: addition_chat\ntype: generate\ndata: addition_chat.jsonl\nchat: true\n'
            'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\nmax_new_tokens: 4\n'
            'answer_regex: "(-?[0-9]+)"\nmetrics: [exact_match]\n')
with open(f"{out}/addition.yaml", "w") as f:
    f.write('task: addition\ntype: generate\ndata: addition.jsonl\nnum_fewshot: 3\n'
            'doc_to_text: "{{question}}"\ndoc_to_target: "{{answer}}"\ntarget_delimiter: ""\nfewshot_delimiter: "\\n"\n'
            'until: ["\\n"]\nmax_new_tokens: 4\nanswer_regex: "(-?[0-9]+)"\nmetrics: [exact_match]\n')
# Multiple choice on the licence text: which ending continues the sentence?
lines = [l.strip() for l in open("/usr/share/common-licenses/GPL-3") if len(l.split()) >= 10][:300]
with open(f"{out}/licence_mc.jsonl", "w") as f:
    for i in range(0, 120, 3):
        words = lines[i].split()
        others = [" ".join(lines[(i + k * 37) % len(lines)].split()[6:]) for k in (1, 2)]
        f.write(json.dumps({"question": " ".join(words[:6]), "choices": [" ".join(words[6:])] + others, "answer": 0}) + "\n")
with open(f"{out}/licence_mc.yaml", "w") as f:
    f.write('task: licence_mc\ntype: multiple_choice\ndata: licence_mc.jsonl\nnum_fewshot: 0\n'
            'doc_to_text: "{{question}}"\ndoc_to_target: answer\nmetrics: [acc, acc_norm]\n')
PY
models=("base:$out/pretrain/checkpoint-80" "up-scaled (DUS, continued):$out/continued/checkpoint-40"
        "fine-tuned (C-RLFT):$out/crlft/checkpoint-600" "aligned (DPO):$out/dpo/checkpoint-100")
printf '\n== 12. evaluation of the demo models (lamina eval: generated task files, lm-eval scoring)\n'
for m in "${models[@]}"; do
  name=${m%%:*}; dir=${m#*:}
  chat=(); [[ $name == fine-tuned* || $name == aligned* ]] && chat=(--task "$out/addition_chat.yaml")
  "$lamina" eval --model "$dir" --task "$out/addition.yaml" --task "$out/licence_mc.yaml" "${chat[@]}" \
    --output "$out/eval-$(echo "$name" | cut -d' ' -f1).json" > /dev/null
done
python3 - "$out" <<'PY'
import json, sys
out = sys.argv[1]
rows = [("base", "eval-base.json"), ("up-scaled (DUS, continued)", "eval-up-scaled.json"),
        ("fine-tuned (C-RLFT)", "eval-fine-tuned.json"), ("aligned (DPO)", "eval-aligned.json")]
print("| model | addition, 3-shot text | addition, chat | licence_mc acc | licence_mc acc_norm |\n|---|---|---|---|---|")
cell = lambda r, k: f"{r['metrics'][k]:.3f} ± {r['stderr'][k]:.3f}"
for name, f in rows:
    r = json.load(open(f"{out}/{f}"))["results"]
    a, m = r["addition"]["default"], r["licence_mc"]["default"]
    c = cell(r["addition_chat"]["default"], "exact_match") if "addition_chat" in r else "— (no chat template)"
    print(f"| {name} | {cell(a, 'exact_match')} | {c} | {cell(m, 'acc')} | {cell(m, 'acc_norm')} |")
PY
step "   ... any two side by side" "$lamina" eval compare "$out/eval-fine-tuned.json" "$out/eval-aligned.json"
"$lamina" plot --run "$out/pretrain/metrics.jsonl:base pretraining" --run "$out/continued/metrics.jsonl:DUS, continued" \
  --metric eval_loss --out "$out/eval-loss.svg" > /dev/null

step "13. the aligned model as one 4-bit GGUF file for llama.cpp (ggml's Q4_0 blocks, its tensor names and RoPE layout)" \
  "$lamina" export-gguf --model "$out/dpo/checkpoint-100" --out "$out/aligned-q4_0.gguf" --outtype q4_0 --force

printf '\n== done. Produced:\n'
printf '  %s/  a Hugging Face model directory:\n' "$model"
ls -1 "$model" | sed 's/^/      /'
printf '  %s  its score of %s\n' "$out/score.json" "$out/sample.txt"
printf '  %s/  the depth-up-scaled model (README.md = model card with the mergekit recipe)\n' "$out/dus-6l"
printf '  %s/  the LLaMA-Pro expansion (expanded_layers.json lists the new layers)\n' "$out/pro-6l"
printf '  %s/  pretraining run: checkpoint-80/ (HF model), metrics.jsonl, loss.svg\n' "$out/pretrain"
printf '  %s/  continued pretraining of the up-scaled model\n' "$out/continued"
printf '  %s  validation loss of both runs\n' "$out/eval-loss.svg"
printf '  %s/  C-RLFT run: checkpoint-600/ (HF model with <|end_of_turn|> added, chat condition GPT4)\n' "$out/crlft"
printf '  %s/  DPO run: checkpoint-100/, metrics.jsonl with rewards/chosen, rewards/margins, ...\n' "$out/dpo"
printf '  %s/eval-*.json  evaluation results of the four demo models (lamina eval)\n' "$out"
printf '  %s  the aligned model for llama.cpp (Q4_0)\n' "$out/aligned-q4_0.gguf"
