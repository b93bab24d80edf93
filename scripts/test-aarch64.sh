#!/usr/bin/env bash
# Builds qtl's kernel unit tests (tests/kernel) for AArch64 and runs them under qemu: the
# portable kernels then run their NEON code (xsimd's neon64 arch). Not part of CI (too slow for
# its time budget); run it by hand after touching a portable kernel:
#   scripts/test-aarch64.sh [build-dir]          (default /tmp/qtl-aarch64; run as root the
#                                                 first time, to apt-get the cross tools)
# Installs g++-aarch64-linux-gnu and qemu-user-static when missing, cross-compiles GoogleTest
# from Debian's sources (/usr/src/googletest, package libgtest-dev), then qtl with
# cmake/aarch64-toolchain.cmake.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${1:-/tmp/qtl-aarch64}
jobs=${QTL_JOBS:-2}

packages=(g++-aarch64-linux-gnu qemu-user-static libgtest-dev cmake)
missing=()
for p in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if ((${#missing[@]})); then
  echo "test-aarch64: installing ${missing[*]}" >&2
  if [[ $(id -u) -ne 0 ]]; then
    echo "test-aarch64: need root to apt-get install ${missing[*]}" >&2
    exit 1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

export QEMU_LD_PREFIX=/usr/aarch64-linux-gnu
toolchain=$root/cmake/aarch64-toolchain.cmake
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)

# GoogleTest for the target, installed into the build folder.
gtest=$build/googletest
if [[ ! -f $gtest/install/lib/cmake/GTest/GTestConfig.cmake ]]; then
  cmake -S /usr/src/googletest -B "$gtest/build" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
        -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_INSTALL_PREFIX="$gtest/install" -DBUILD_GMOCK=ON
  cmake --build "$gtest/build" -j"$jobs"
  cmake --install "$gtest/build" >/dev/null
fi

# xsimd's CMake package sits in the host's multiarch folder (/usr/lib/x86_64-linux-gnu/cmake),
# which a cross build does not search; its headers serve every architecture.
xsimd_config=$(dpkg -L libxsimd-dev | grep '/xsimdConfig\.cmake$' | head -n1)

# qtl's kernel tests: no -march=native (the portable kernels take xsimd's AArch64 baseline,
# NEON), no benchmarks, examples or C API.
cmake -S "$root" -B "$build/qtl" "${generator[@]}" -DCMAKE_BUILD_TYPE=Release \
      -DCMAKE_TOOLCHAIN_FILE="$toolchain" -DCMAKE_PREFIX_PATH="$gtest/install" -Dxsimd_DIR="$(dirname "$xsimd_config")" \
      -DQTL_NATIVE=OFF -DQTL_WARNINGS_AS_ERRORS=ON -DQTL_BUILD_BENCHMARKS=OFF \
      -DQTL_BUILD_EXAMPLES=OFF -DQTL_BUILD_C_API=OFF -DQTL_TEST_FOLDERS=kernel
cmake --build "$build/qtl" -j"$jobs" --target qtl_tests_kernel
# Only the kernel unit tests: the header and layer checks are architecture-independent and
# run in CI.
ctest --test-dir "$build/qtl" -j"$jobs" --output-on-failure \
      -E '^(header_self_containment|include_.*|readme_snippet|install_consumer)$'
