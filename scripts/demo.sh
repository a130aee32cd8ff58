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

printf '\n== done. Produced:\n'
printf '  %s/  a Hugging Face model directory:\n' "$model"
ls -1 "$model" | sed 's/^/      /'
printf '  %s  its score of %s\n' "$out/score.json" "$out/sample.txt"
