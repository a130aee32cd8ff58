#!/usr/bin/env bash
# Peak memory and time of fine-tuning steps at real shapes over a frozen base (--base-dtype):
# LoRA r = 16 on every linear layer, batch 1, recomputation on, one optimizer step each.
# Synthetic checkpoints of the real shapes (random weights, the Llama 2 tokenizer), made once.
# Not part of `make test`: it needs ~15 GB of disk per shape and minutes per step.
#
# usage: bench/finetune_memory.sh [BUILD_DIR] [WORK_DIR] [CASE...]
#   CASE: sft-bf16 sft-q8_0 sft-q4_0 sft-nf4 dpo-bf16 dpo-q4_0 dpo-nf4 (Mistral-7B shape, bf16
#         checkpoint, 14.5 GB; SFT 1024 tokens, DPO 2 x 512)
#         sft2048-DTYPE (the same SFT at 2048 tokens)
#         solar-sft-DTYPE, solar-dpo-DTYPE (SOLAR-10.7B: the DUS output of the 7B shape, 48 layers,
#         bf16, 21.5 GB, made with lamina upscale)
#         dpo-mixtral-gguf (Mixtral-8x7B shape as a Q4_0 GGUF written by init, 26 GB; 2 x 256)
#   (default: the Mistral-7B cases)
#   Environment: THREADS (default 2), RECOMPUTE_DTYPE (f32 or bf16: --recompute-dtype, default f32).
#   Prints one markdown row per case: peak resident memory (/usr/bin/time -v), the anonymous part
#   (RssAnon at its peak, sampled), and the wall time of the step.
set -euo pipefail
build=$(realpath "${1:-build}")
work=${2:-/tmp/lamina-bench}
shift 2 || shift $# || true
cases=("$@")
[ ${#cases[@]} -gt 0 ] || cases=(sft-bf16 sft-q8_0 sft-q4_0 dpo-bf16 dpo-q4_0)
lamina=$build/lamina
threads=${THREADS:-2}
rdtype=${RECOMPUTE_DTYPE:-f32}
root=$(cd "$(dirname "$0")/.." && pwd)
mkdir -p "$work"
model=$work/mistral-7b-bf16
solar=$work/solar-10.7b-bf16
mixtral=$work/mixtral-8x7b-q4_0.gguf
if [[ " ${cases[*]} " == *" dpo-mixtral-gguf "* ]] && [ ! -f "$mixtral" ]; then
  echo "writing the Mixtral-8x7B shape as a Q4_0 GGUF (26 GB) to $mixtral" >&2
  "$lamina" init --shape mixtral-8x7b --out "$mixtral" --outtype q4_0 \
    --tokenizer "$root/tests/assets/tokenizers/llama2/tokenizer.model" >&2
fi
if [[ " ${cases[*]} " =~ \ (solar-)?(sft|sft2048|dpo)-(bf16|f16|q8_0|q4_0|nf4) ]] && [ ! -f "$model/config.json" ]; then
  echo "writing the Mistral-7B shape (bf16, 14.5 GB) to $model" >&2
  "$lamina" init --shape mistral-7b --dtype bf16 --out "$model" \
    --tokenizer "$root/tests/assets/tokenizers/llama2/tokenizer.model" >&2
fi
if [[ " ${cases[*]} " == *" solar-"* ]] && [ ! -f "$solar/config.json" ]; then
  echo "writing the SOLAR-10.7B shape (DUS of the 7B shape, bf16, 21.5 GB) to $solar" >&2
  "$lamina" upscale --model "$model" --out "$solar" --drop 8 >&2
fi
# Data: long conversations (SFT, truncated to 1024 tokens) and long preference pairs (DPO, 2 x 512).
/usr/bin/python3 - "$work" <<'PY'
import json, random, sys
work = sys.argv[1]
random.seed(0)
words = "the river runs past an old mill under a stone bridge while children walk to school".split()
text = lambda n: " ".join(random.choice(words) for _ in range(n))
with open(f"{work}/sft.jsonl", "w") as f:
    for _ in range(1):
        f.write(json.dumps({"messages": [{"role": "user", "content": text(200)},
                                         {"role": "assistant", "content": text(2600)}]}) + "\n")
with open(f"{work}/dpo.jsonl", "w") as f:
    for _ in range(1):
        f.write(json.dumps({"prompt": text(100), "chosen": text(600), "rejected": text(600)}) + "\n")
PY
echo "CPU: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); flags: $(grep -m1 '^flags' /proc/cpuinfo | tr ' ' '\n' | grep -E '^(avx2|avx512f|avx512_bf16|avx512_vnni|avx_vnni|amx_bf16|amx_int8)$' | xargs); threads: $threads; layer inputs kept in $rdtype"
echo
echo "| case | tokens | peak RSS | peak RssAnon | step time | tokens/s | whole run (load + step) |"
echo "|---|---|---|---|---|---|---|"
for c in "${cases[@]}"; do
  m=$model
  cc=$c
  if [[ $c == solar-* ]]; then m=$solar; cc=${c#solar-}; fi
  kind=${cc%%-*}
  dt=${cc#*-}
  seq=1024
  if [ "$kind" = sft2048 ]; then kind=sft; seq=2048; fi
  out=$work/run-$c
  rm -rf "$out"
  common=(--model "$m" --out "$out" --batch-size 1 --save-every 0 --max-steps 1 --val-fraction 0 --lora-r 16
    --lora-alpha 32 --lora-targets all --recompute --recompute-dtype "$rdtype" --base-dtype "$dt" --threads "$threads")
  if [ "$c" = dpo-mixtral-gguf ]; then
    common=(--model "$mixtral" --tokenizer "${mixtral%.gguf}-tokenizer" --out "$out" --batch-size 1
      --save-every 0 --max-steps 1 --val-fraction 0 --lora-r 16 --lora-alpha 32 --lora-targets all
      --recompute --recompute-dtype "$rdtype" --threads "$threads")
    args=(dpo --data "$work/dpo.jsonl" --template mistral-instruct --seq-len 512 "${common[@]}")
  elif [ "$kind" = sft ]; then
    args=(sft --data "$work/sft.jsonl" --template mistral-instruct --seq-len $seq "${common[@]}")
  else
    args=(dpo --data "$work/dpo.jsonl" --template mistral-instruct --seq-len 1024 "${common[@]}")
  fi
  log=$work/$c.time
  /usr/bin/time -v "$lamina" "${args[@]}" >"$work/$c.log" 2>"$log" &
  pid=$!
  anon=0
  # RssAnon of the lamina process itself (the child of time), sampled every second.
  while kill -0 $pid 2>/dev/null; do
    child=$(pgrep -P $pid || true)
    if [ -n "$child" ] && [ -r /proc/$child/status ]; then
      a=$(awk '/^RssAnon/ {print $2}' /proc/$child/status 2>/dev/null || echo 0)
      [ -n "$a" ] && [ "$a" -gt "$anon" ] && anon=$a
    fi
    sleep 1
  done
  wait $pid || { echo "| $c | failed: $(grep -m1 error "$log" || tail -n1 "$log") | | | |"; continue; }
  rss=$(awk '/Maximum resident set size/ {print $6}' "$log")
  wall=$(awk '/Elapsed \(wall clock\)/ {print $8}' "$log")
  tokens=$([ "$kind" = sft ] && echo "$seq" || echo "2 x 512")
  [ "$c" = dpo-mixtral-gguf ] && tokens="2 x 256"
  tps=$(/usr/bin/python3 -c 'import json,sys; print([json.loads(l) for l in open(sys.argv[1]) if "tokens_per_s" in l][0]["tokens_per_s"])' "$out/metrics.jsonl")
  awk -v c="$c" -v s="$tokens" -v n="$([ "$c" = dpo-mixtral-gguf ] && echo 512 || { [ "$kind" = sft ] && echo "$seq" || echo 1024; })" -v r="$rss" -v a="$anon" -v w="$wall" -v t="$tps" \
    'BEGIN { printf "| %s | %s | %.2f GiB | %.2f GiB | %.0f s | %.2f | %s |\n", c, s, r / 1048576, a / 1048576, n / t, t, w }'
done
