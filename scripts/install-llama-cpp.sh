#!/usr/bin/env bash
# Installs the real llama.cpp that qtl's GGUF tests check against: the prebuilt linux-x64 shared
# libraries of the npm package node-llama-cpp (pinned; libggml-base, libggml, the CPU backend
# variants, libllama, libllama-common) and the llama.cpp source of the same release, which the
# package ships as a git bundle (headers, tools/perplexity, tools/quantize, tools/imatrix,
# examples/convert-llama2c-to-ggml). Nothing of it is vendored into qtl.
#
#   scripts/install-llama-cpp.sh [DIR]      (default: $QTL_LLAMA_CPP_DIR, else .deps/llama.cpp)
#
# Node.js and npm come from Debian when missing (needs root then). Idempotent: a finished
# install leaves a stamp and is not repeated. On machines other than x86-64 Linux the package
# has no libraries for us: the script says so and exits 0, and CMake builds no GGUF engine tests.
set -euo pipefail
version=3.21.1
root=$(cd "$(dirname "$0")/.." && pwd)
dir=${1:-${QTL_LLAMA_CPP_DIR:-$root/.deps/llama.cpp}}
stamp="$dir/.installed-node-llama-cpp-$version"
[[ -f $stamp ]] && exit 0
if [[ $(uname -s) != Linux || $(uname -m) != x86_64 ]]; then
  echo "install-llama-cpp: node-llama-cpp ships linux-x64 libraries only; skipped on $(uname -sm)" >&2
  exit 0
fi
if ! command -v npm >/dev/null || ! command -v git >/dev/null; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-llama-cpp: need root to apt-get install nodejs npm git" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends nodejs npm git ca-certificates
fi
mkdir -p "$dir"
echo "install-llama-cpp: npm install node-llama-cpp@$version into $dir" >&2
(cd "$dir" && npm install --prefix "$dir" -E --omit=optional --ignore-scripts --no-audit --no-fund \
   --loglevel=error "node-llama-cpp@$version" "@node-llama-cpp/linux-x64@$version" >&2)
bundle="$dir/node_modules/node-llama-cpp/llama/gitRelease.bundle"
rm -rf "$dir/src"
git -c advice.detachedHead=false clone -q "$bundle" "$dir/src"
touch "$stamp"
