#!/usr/bin/env bash
# Builds the parser fuzzers with clang (libFuzzer + ASan + UBSan) and runs each for a bounded time:
# the safetensors header parser and the GGUF reader. usage: fuzz/run.sh SECONDS [BUILD_DIR]
set -euo pipefail
secs=${1:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$root/build/fuzz}
common=("$root/src/io/mapped_file.cpp" "$root/src/core/dtype.cpp" "$root/src/core/tensor.cpp"
        "$root/src/quant/ggml_blocks.cpp")
run_target() {  # name, seconds, seed glob, sources...
  local name=$1 t=$2 seeds=$3
  shift 3
  local bin=$out/$name corpus=$out/corpus-$name
  mkdir -p "$corpus"
  if [ ! -x "$bin" ] || [ -n "$(find "$@" "$root/src/io" -newer "$bin" -name '*.[ch]*')" ]; then
    clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
      -I"$root/src" "$@" "${common[@]}" -o "$bin"
  fi
  cp -n "$root"/fuzz/seeds/$seeds "$corpus/" 2>/dev/null || true
  echo "== $name"
  "$bin" "$corpus" -max_total_time="$t" -max_len=4096 -timeout=5 -print_final_stats=1 2>&1 | tail -n 12
}
half=$(( (secs + 1) / 2 ))
run_target safetensors_header_fuzz "$half" '*.safetensors' \
  "$root/fuzz/safetensors_header_fuzz.cpp" "$root/src/io/safetensors.cpp"
run_target gguf_fuzz "$half" '*.gguf' "$root/fuzz/gguf_fuzz.cpp" "$root/src/io/gguf_reader.cpp"
