#!/usr/bin/env bash
# Builds and runs every test of qtl: a Release build with warnings as errors (tests, examples,
# benchmarks compiled; the header self-containment, README snippet, install-consumer and GGUF
# checks against the real llama.cpp included), then the unit tests again under
# AddressSanitizer + UndefinedBehaviorSanitizer. Prints how long each stage took.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/install-deps.sh
scripts/install-llama-cpp.sh   # node-llama-cpp 3.21.1 into .deps/llama.cpp (GGUF engine tests)
jobs=${QTL_JOBS:-$(nproc)}
split=()
stage() {  # stage NAME COMMAND...: runs it and records its wall time
  local name=$1 t0=$SECONDS
  shift
  "$@"
  split+=("$name $((SECONDS - t0)) s")
}

stage "configure" cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DQTL_WARNINGS_AS_ERRORS=ON
stage "build" cmake --build build -j"$jobs"
stage "Release tests" ctest --test-dir build -j"$jobs" --output-on-failure

# -O1 without debug info: sanitizer builds of Eigen-heavy tests cost 2-3 min per file at -O2 -g.
stage "sanitizer configure" cmake -S . -B build-asan -DCMAKE_BUILD_TYPE=None -DCMAKE_CXX_FLAGS="-O1" \
      -DQTL_WARNINGS_AS_ERRORS=ON -DQTL_SANITIZE=address,undefined -DQTL_BUILD_BENCHMARKS=OFF -DQTL_BUILD_EXAMPLES=OFF
stage "sanitizer build" cmake --build build-asan -j"$jobs" --target qtl_tests readme_snippet
# Under the sanitizers, skip what the Release run already covers and what only repeats the same
# code over many more tokens: the header/install checks, the fuzz smoke runs (their targets
# are built with clang's own sanitizers) and the whole-model perplexity runs (every code path they
# take is exercised by the lighter real-model tests that do run here).
heavy="header_self_containment|install_consumer|_fuzz_smoke|ReferencePerplexity|GptqAndAwqBeatRtn|TableRecipes|PartialBinaryRecipes|RtnPerplexityRises|CalibrateRealModel"
stage "sanitizer tests" env ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
  ctest --test-dir build-asan -j"$jobs" --output-on-failure -E "$heavy"
printf 'qtl: stage times: %s\n' "$(IFS=,; echo "${split[*]}")"
echo "qtl: all tests passed (Release and ASan+UBSan)"
