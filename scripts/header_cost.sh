#!/usr/bin/env bash
# What each umbrella header costs a translation unit that includes it: compile time (wall and
# CPU), compiler memory, and how many headers it pulls in (qtl's own and all).
#
#   scripts/header_cost.sh [CXX]         (default g++; run from anywhere, one compile at a time)
#   scripts/header_cost.sh --each [CXX]  front-end time (-fsyntax-only) of every public header
#                                        alone, slowest first (README's "Build times" table)
#
# Each TU is `#include <qtl/X.hpp>` plus an empty main(), compiled like qtl's own code
# (-std=c++20 -O2 -march=native -fopenmp, Eigen as a system header), in the default
# header-only mode and with QTL_KERNELS_SEPARATE (the SIMD kernels compiled elsewhere, see
# include/qtl/kernel/common/separate.hpp). Prints a Markdown table.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
each=0
if [[ ${1:-} == --each ]]; then
  each=1
  shift
fi
cxx=${1:-g++}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
if ((each)); then
  echo "| header | -fsyntax-only (s) |"
  echo "|---|---|"
  (cd "$root/include" && ls qtl/*.hpp qtl/*/*.hpp qtl/*/*/*.hpp) | while read -r h; do
    printf '#include <%s>\n' "$h" > "$work/h.cpp"
    /usr/bin/time -f '%e' -o "$work/t" "$cxx" -std=c++20 -march=native -fopenmp -I"$root/include" \
      -isystem /usr/include/eigen3 -fsyntax-only "$work/h.cpp"
    echo "$(cat "$work/t") $h"
  done | sort -rn | while read -r t h; do echo "| \`$h\` | $t |"; done
  exit 0
fi
flags=(-std=c++20 -O2 -march=native -fopenmp -I"$root/include" -isystem /usr/include/eigen3 -c)
echo "| header | qtl headers | all headers | compile wall (s) | CPU (s) | memory (MB) | with QTL_KERNELS_SEPARATE: wall (s) |"
echo "|---|---|---|---|---|---|---|"
for h in quant kernels calib model qtl; do
  printf '#include <qtl/%s.hpp>\nint main() { return 0; }\n' "$h" > "$work/$h.cpp"
  deps=$("$cxx" "${flags[@]}" -M "$work/$h.cpp" | tr ' \\' '\n\n' | grep -c '\.h' || true)
  own=$("$cxx" "${flags[@]}" -M "$work/$h.cpp" | tr ' \\' '\n\n' | grep -c "$root/include/qtl/" || true)
  /usr/bin/time -f '%e %U %M' -o "$work/t" "$cxx" "${flags[@]}" "$work/$h.cpp" -o "$work/$h.o"
  read -r wall cpu kb < "$work/t"
  /usr/bin/time -f '%e' -o "$work/t2" "$cxx" "${flags[@]}" -DQTL_KERNELS_SEPARATE "$work/$h.cpp" -o "$work/$h.o"
  echo "| \`qtl/$h.hpp\` | $own | $deps | $wall | $cpu | $((kb / 1024)) | $(cat "$work/t2") |"
done
