#!/usr/bin/env bash
# Builds the parser fuzzers with clang (libFuzzer + ASan + UBSan) and runs each for a bounded time
# (SECONDS in all, split among them): the safetensors header parser, the GGUF reader and the text
# readers (JSONL, task / mergekit YAML, tokenizer JSON files, config.json; see
# text_readers_fuzz.cpp) and lamina serve's OpenAI request parser. usage: fuzz/run.sh SECONDS [BUILD_DIR]
set -euo pipefail
secs=${1:-30}
root=$(cd "$(dirname "$0")/.." && pwd)
out=${2:-$root/build/fuzz}
common=("$root/src/io/mapped_file.cpp" "$root/src/core/dtype.cpp" "$root/src/core/tensor.cpp"
        "$root/src/quant/ggml_blocks.cpp" "$root/src/quant/k_quants.cpp" "$root/src/quant/nf4.cpp" "$root/src/core/interrupt.cpp")
export LAMINA_FUZZ_ASSETS=$root/tests/assets  # text_readers_fuzz: tokenizers/llama2/tokenizer.model
run_target() {  # name, seconds, seed glob, sources, libraries (-l...) and -dict=FILE...
  local name=$1 t=$2 seeds=$3
  shift 3
  local srcs=() libs=() flags=() a
  for a in "$@"; do
    case $a in -l*) libs+=("$a") ;; -dict=*) flags+=("$a") ;; *) srcs+=("$a") ;; esac
  done
  local bin=$out/$name corpus=$out/corpus-$name
  mkdir -p "$corpus"
  if [ ! -x "$bin" ] || [ -n "$(find "${srcs[@]}" "$root/src" "$0" -newer "$bin" -name '*.[ch]*' \
                                  -o -newer "$bin" -name run.sh)" ]; then
    local t0=$SECONDS
    clang++ -std=c++20 -O1 -g -fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined \
      -I"$root/src" -DLAMINA_FUZZ_ASSETS="\"$LAMINA_FUZZ_ASSETS\"" "${srcs[@]}" "${common[@]}" \
      ${libs[@]+"${libs[@]}"} -o "$bin"
    echo "== $name: built in $((SECONDS - t0)) s"
  fi
  cp -n "$root"/fuzz/seeds/$seeds "$corpus/" 2>/dev/null || true
  echo "== $name (full output: $out/$name.log)"
  "$bin" "$corpus" -max_total_time="$t" -max_len=4096 -timeout=5 -print_final_stats=1 \
    ${flags[@]+"${flags[@]}"} 2>&1 |
    tee "$out/$name.log" | tail -n 12
}
# A quarter each; the text readers (eight in one binary) get the remainder. -max_total_time=0
# would mean no limit, so at least 1 s each.
third=$(( secs / 4 > 0 ? secs / 4 : 1 ))
rest=$(( secs - 3 * third > 0 ? secs - 3 * third : 1 ))
run_target safetensors_header_fuzz "$third" '*.safetensors' \
  "$root/fuzz/safetensors_header_fuzz.cpp" "$root/src/io/safetensors.cpp"
run_target gguf_fuzz "$third" '*.gguf' "$root/fuzz/gguf_fuzz.cpp" "$root/src/io/gguf_reader.cpp" \
  "$root/src/io/imatrix_file.cpp" "$root/src/io/gguf_writer.cpp" "$root/src/io/output_dir.cpp" \
  "$root/src/io/file_lock.cpp"
run_target openai_request_fuzz "$third" 'openai-*.seed' "$root/fuzz/openai_request_fuzz.cpp" \
  "$root/src/serve/openai_api.cpp"
s=$root/src
run_target text_readers_fuzz "$rest" 'text-*.seed' "$root/fuzz/text_readers_fuzz.cpp" \
  "$s/io/jsonl.cpp" "$s/io/yaml_file.cpp" "$s/eval/task.cpp" "$s/surgery/recipe.cpp" \
  "$s/eval/dataset_rows.cpp" "$s/eval/python_random.cpp" "$s/eval/answer_filter.cpp" \
  "$s/eval/template_expr.cpp" \
  "$s/tokenizer/tokenizer.cpp" "$s/tokenizer/hf_tokenizer.cpp" "$s/tokenizer/hf_pipeline.cpp" \
  "$s/tokenizer/bpe_model.cpp" "$s/tokenizer/split_regex.cpp" "$s/tokenizer/unicode_text.cpp" \
  "$s/io/model_config.cpp" "$s/io/generation_config.cpp" \
  -lyaml-cpp -lsentencepiece -lpcre2-8 -lutf8proc -dict="$root/fuzz/text_readers.dict"
