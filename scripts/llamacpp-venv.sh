#!/usr/bin/env bash
# Builds (once) the virtual environment of scripts/llamacpp-requirements.txt — llama-cpp-python
# compiled from source for this CPU, and llama.cpp's gguf package — outside the clone, keyed by
# the requirements' hash so clones, CI runs and benchmarks share it. Prints its python.
# Called by install-deps.sh (for the tests) and bench/llamacpp_compare.py.
set -euo pipefail
req="$(cd "$(dirname "$0")" && pwd)/llamacpp-requirements.txt"
key=$(sha256sum "$req" | cut -c1-12)
venv="${LAMINA_LLAMACPP_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lamina/llamacpp-$key}"
if [ ! -f "$venv/.complete" ]; then
  echo "llamacpp-venv: building llama-cpp-python (llama.cpp from source, ~11 minutes on 2 cores) into $venv" >&2
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check pip==25.3 >&2
  CMAKE_BUILD_PARALLEL_LEVEL=$(nproc) "$venv/bin/pip" install -q --disable-pip-version-check --no-input \
    --no-deps -r "$req" >&2
  "$venv/bin/python" -c "import llama_cpp, gguf" >&2 \
    || { echo "llamacpp-venv: $venv does not import llama_cpp and gguf; remove it and retry" >&2; exit 1; }
  touch "$venv/.complete"
fi
echo "$venv/bin/python"
