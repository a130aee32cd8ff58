#!/usr/bin/env bash
# Builds the safetensors header fuzzer with clang (libFuzzer + ASan + UBSan) and runs it for a
# bounded time. usage: fuzz/run.sh SECONDS [BUILD_DIR]
set -euo pipefail
secs=${1:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$root/build/fuzz}
mkdir -p "$out/corpus"
bin=$out/safetensors_header_fuzz
srcs=("$root/fuzz/safetensors_header_fuzz.cpp" "$root/src/io/safetensors.cpp" "$root/src/io/mapped_file.cpp"
      "$root/src/core/dtype.cpp" "$root/src/core/tensor.cpp" "$root/src/quant/ggml_blocks.cpp")
if [ ! -x "$bin" ] || [ -n "$(find "${srcs[@]}" "$root/src/io/safetensors.h" -newer "$bin")" ]; then
  clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
    -I"$root/src" "${srcs[@]}" -o "$bin"
fi
cp -n "$root"/fuzz/seeds/* "$out/corpus/" 2>/dev/null || true
"$bin" "$out/corpus" -max_total_time="$secs" -max_len=4096 -timeout=5 -print_final_stats=1 2>&1 | tail -n 12
