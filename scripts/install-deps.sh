#!/usr/bin/env bash
# Installs the Debian packages qtl builds with, only those that are missing (run as root).
# Debian bookworm: GCC 12, CMake 3.25, Eigen 3.4, xsimd 8.1, GoogleTest 1.12, Benchmark 1.7.
set -euo pipefail
packages=(cmake g++ make libeigen3-dev libxsimd-dev xtl-dev libgtest-dev libgmock-dev
          libbenchmark-dev nlohmann-json3-dev libcli11-dev)
# --tests: also clang with its sanitizer runtimes and OpenMP, for scripts/test.sh's sanitizer
# and fuzz build, and Ninja, whose target graph lets a test's files compile while the libraries
# it links are still building (Make's waits left a core idle for minutes of the 2-core CI).
if [[ ${1:-} == --tests ]]; then
  packages+=(clang libclang-rt-14-dev libomp-14-dev ninja-build)
fi
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "install-deps: installing ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "install-deps: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
