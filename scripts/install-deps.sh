#!/usr/bin/env bash
# Installs lamina's build and test dependencies from Debian's packages, only those missing.
# Called by the Makefile; safe to run again.
set -euo pipefail
want=(cmake g++ make ccache pkg-config libdnnl-dev ocl-icd-opencl-dev opencl-c-headers libsentencepiece-dev nlohmann-json3-dev
      libgtest-dev libbenchmark-dev libyaml-cpp-dev clang libclang-rt-14-dev
      python3 python3-torch python3-numpy libopenblas0-pthread libopenmpi-dev openmpi-bin)
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
