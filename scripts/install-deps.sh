#!/usr/bin/env bash
# Installs lamina's build and test dependencies from Debian's packages, only those missing.
# Called by the Makefile; safe to run again.
set -euo pipefail
want=(cmake g++ make ccache pkg-config libdnnl-dev ocl-icd-opencl-dev opencl-c-headers libsentencepiece-dev nlohmann-json3-dev
      libgtest-dev libbenchmark-dev libyaml-cpp-dev libpcre2-dev libutf8proc-dev clang libclang-rt-14-dev
      python3 python3-venv python3-torch python3-numpy libopenblas0-pthread libopenmpi-dev openmpi-bin
      libcpp-httplib-dev chromium)
missing=()
for p in "${want[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}"
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO=sudo
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# The original tools the oracle tests compare lamina with (transformers, PEFT, TRL, lm-eval, mergekit, with
# torch 2.x), pinned in scripts/oracles-requirements.txt, in a virtual environment kept outside the clone
# (keyed by the requirements' hash, so clones and CI runs share it). tests/CMakeLists.txt finds it the same way.
req="$(dirname "$0")/oracles-requirements.txt"
key=$(sha256sum "$req" | cut -c1-12)
venv="${LAMINA_ORACLES_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lamina/oracles-$key}"
if [ ! -f "$venv/.complete" ]; then
  # A venv's scripts name its own path, so it is built in place; .complete marks a finished one.
  echo "install-deps: building the oracle tools' virtual environment in $venv (~3 GB of wheels, once)"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check pip==25.3
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$req"
  "$venv/bin/python" -c "import torch, transformers, peft, trl, lm_eval, mergekit" \
    || { echo "install-deps: the oracle environment $venv does not import; remove it and retry" >&2; exit 1; }
  touch "$venv/.complete"
fi

# The clients lamina serve is tested with (the OpenAI Python client, Playwright over Debian's
# chromium), pinned in scripts/serve-requirements.txt, in a small environment of their own, found
# by the same rule (LAMINA_SERVE_VENV, else ~/.cache/lamina/serve-<hash>).
req="$(dirname "$0")/serve-requirements.txt"
key=$(sha256sum "$req" | cut -c1-12)
venv="${LAMINA_SERVE_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/lamina/serve-$key}"
if [ ! -f "$venv/.complete" ]; then
  echo "install-deps: building the serve test clients' virtual environment in $venv"
  rm -rf "$venv"
  mkdir -p "$(dirname "$venv")"
  /usr/bin/python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check pip==25.3
  "$venv/bin/pip" install -q --disable-pip-version-check --no-deps -r "$req"
  "$venv/bin/python" -c "import openai, playwright.sync_api" \
    || { echo "install-deps: the serve environment $venv does not import; remove it and retry" >&2; exit 1; }
  touch "$venv/.complete"
fi

# llama.cpp itself for the tests of lamina's GGUF files (tests/oracles/test_llamacpp.py) and the
# benchmarks' peer: llama-cpp-python built from source for this CPU, and the gguf package.
bash "$(dirname "$0")/llamacpp-venv.sh" > /dev/null
