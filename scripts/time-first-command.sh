#!/usr/bin/env bash
# Times README's first quick-start command as a new user meets it: a `git clone` of REPO (default:
# this repository) into an empty temporary folder with nothing beside it, a cold build folder,
# then each step of the command timestamped. Prints the recipe table and one line of times.
#   scripts/time-first-command.sh [REPO]
set -euo pipefail
repo=${1:-$(cd "$(dirname "$0")/.." && pwd)}
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
git clone -q "$repo" "$work/qtl"
cd "$work/qtl"
now() { date +%s.%N; }
t0=$(now)
scripts/install-deps.sh
t1=$(now)
cmake -S . -B build -DCMAKE_BUILD_TYPE=Release > /dev/null
t2=$(now)
cmake --build build -j2 --target quantize_model > /dev/null
t3=$(now)
build/examples/quantize_model
t4=$(now)
awk -v a="$t0" -v b="$t1" -v c="$t2" -v d="$t3" -v e="$t4" 'BEGIN {
  printf "time-first-command: packages %.1f s, configure %.1f s, build (-j2) %.1f s, run %.1f s\n",
         b - a, c - b, d - c, e - d }'
