#!/usr/bin/env bash
# Builds and runs every test of qtl, in two builds, each file compiled once:
#  1. Release with GCC (-O3, warnings as errors) for the x86-64 baseline (QTL_NATIVE=OFF: no
#     -march=native, as a library is built to ship): the benchmarks, the header self-containment,
#     README snippet and install-consumer checks, and the unit tests of the code whose behaviour
#     depends most on the optimizer (the SIMD kernels, packed formats, file readers: tests/core,
#     io, format, kernel). The AVX2 / AVX-512 kernels still run where the CPU has them (they carry
#     target attributes and are picked at run time); the portable kernels run on SSE2 here and on
#     the CPU's own vectors (-march=native) in stage 2, so both builds of them are tested, and a
#     kernel that only compiles with -march=native fails here.
#  2. AddressSanitizer + UndefinedBehaviorSanitizer with clang (-O1, warnings as errors): every
#     unit test (the kernels' again, and calibration, quantizers, the model, GGUF against the
#     real llama.cpp, the whole-model perplexity checks), the examples, run on the bundled
#     model, and the libFuzzer smoke runs. Clang, not GCC, because it compiles these sanitized,
#     Eigen-heavy files in ~60% of GCC 12's time and half its memory (one recipe-instances TU:
#     109 s vs 177 s); and so CI sees two compilers' warnings.
# Prints how long each stage took.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh --tests
scripts/install-llama-cpp.sh   # node-llama-cpp 3.21.1 into .deps/llama.cpp (GGUF engine tests)
jobs=${QTL_JOBS:-$(nproc)}
generator=()
command -v ninja >/dev/null && generator=(-G Ninja)  # installed by install-deps.sh --tests
split=()
stage() {  # stage NAME COMMAND...: runs it and records its wall time
  local name=$1 t0=$SECONDS
  shift
  "$@"
  split+=("$name $((SECONDS - t0)) s")
}

stage "configure" cmake -S . -B build "${generator[@]}" -DCMAKE_BUILD_TYPE=Release -DQTL_WARNINGS_AS_ERRORS=ON \
      -DQTL_NATIVE=OFF -DQTL_BUILD_EXAMPLES=OFF -DQTL_BUILD_C_API=OFF -DQTL_TEST_FOLDERS="core;io;format;kernel"
stage "build" cmake --build build -j"$jobs"
stage "Release tests" ctest --test-dir build -j"$jobs" --output-on-failure

# -O1 without debug info: sanitizer builds of Eigen-heavy tests cost 2-3 min per file at -O2 -g.
stage "sanitizer configure" env CC=clang CXX=clang++ cmake -S . -B build-asan "${generator[@]}" -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1" \
      -DQTL_WARNINGS_AS_ERRORS=ON -DQTL_SANITIZE=address,undefined -DQTL_BUILD_BENCHMARKS=OFF \
      -DQTL_TEST_FOLDERS=""
stage "sanitizer build" cmake --build build-asan -j"$jobs"
# The header and install checks ran in the Release tree.
# KMP_HOT_TEAMS_MAX_LEVEL=0: LLVM's OpenMP runtime (libomp 14) otherwise keeps the thread team a
# region grows beyond OMP_NUM_THREADS and never frees it, which LeakSanitizer reports at exit.
stage "sanitizer tests" env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  KMP_HOT_TEAMS_MAX_LEVEL=0 \
  ctest --test-dir build-asan -j"$jobs" --output-on-failure -E "header_self_containment|install_consumer"
printf 'qtl: stage times: %s\n' "$(IFS=,; echo "${split[*]}")"
echo "qtl: all tests passed (Release and ASan+UBSan)"
