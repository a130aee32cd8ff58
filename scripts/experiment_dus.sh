#!/usr/bin/env bash
# SOLAR's recipe in miniature: pretrain a small base model, depth-up-scale it (DUS), then continue
# pretraining the base and the up-scaled model on the same tokens and compare validation loss.
# usage: scripts/experiment_dus.sh [path/to/lamina] [OUT_DIR] [BASE_STEPS] [CONTINUE_STEPS]
set -euo pipefail
lamina=${1:-build/lamina}
out=${2:-out/experiment-dus}
base_steps=${3:-300}
cont_steps=${4:-200}
rm -rf "$out"/base "$out"/base-continued "$out"/dus-continued
mkdir -p "$out"
# Corpus: the licence texts every Debian system ships (~240 KB of English), symlinks skipped.
corpus=()
for f in /usr/share/common-licenses/*; do [ -L "$f" ] || corpus+=(--data "$f"); done
common=(--seq-len 128 --batch-size 8 --schedule cosine --warmup-ratio 0.05 --val-fraction 0.1 --seed 7 --keep 1
        --cache-dir "$out/.cache")

"$lamina" init --out "$out/base-init" --shape tiny --layers 4 --hidden 128 --intermediate 352 --heads 4 --kv-heads 2 \
  --max-pos 1024 --seed 1 --force
"$lamina" pretrain --model "$out/base-init" --out "$out/base" "${corpus[@]}" "${common[@]}" --max-steps "$base_steps" \
  --lr 2e-3 --eval-every 25
base=$(ls -d "$out"/base/checkpoint-* | tail -n 1)

# DUS with n = 4, m = 1: layers [0, 3) then [1, 4) -> 6 layers.
"$lamina" upscale --model "$base" --drop 1 --out "$out/dus" --force

# Continued pretraining of both on the same data, schedule and number of tokens.
"$lamina" pretrain --model "$base" --out "$out/base-continued" "${corpus[@]}" "${common[@]}" --max-steps "$cont_steps" \
  --lr 1e-3 --eval-every 20
"$lamina" pretrain --model "$out/dus" --out "$out/dus-continued" "${corpus[@]}" "${common[@]}" --max-steps "$cont_steps" \
  --lr 1e-3 --eval-every 20

"$lamina" plot --run "$out/base-continued/metrics.jsonl:base (4 layers), continued" \
  --run "$out/dus-continued/metrics.jsonl:DUS (6 layers), continued" --metric eval_loss \
  --title "validation loss during continued pretraining" --out "$out/continued-eval-loss.svg"
for run in base dus; do
  d="$out/$run-continued"
  first=$(grep -m1 eval_loss "$d/metrics.jsonl")
  last=$(grep eval_loss "$d/metrics.jsonl" | tail -n 1)
  printf '%s: start %s\n%s: end   %s\n' "$run" "$first" "$run" "$last"
done
echo "plot: $out/continued-eval-loss.svg"
