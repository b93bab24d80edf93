#!/usr/bin/env bash
# qtl's GGUF output against llama-quantize's, measured by llama.cpp's own llama-perplexity on
# the protocol of scripts/llama-baseline.sh (run that first: it makes f32.gguf, calib.txt,
# eval.txt and the llama-quantize files in its work folder).
#
#   scripts/qtl-vs-llama.sh QTL_QUANTIZE LLAMA_BIN_DIR BASELINE_WORK_DIR [OUT_DIR]
#
# For every TYPE in $TYPES (default "Q4_0 Q4_1 Q5_0 IQ4_NL Q5_1 Q8_0") and every recipe in
# $RECIPES (default "rtn gptq-clip"): qtl-quantize f32.gguf OUT/TYPE-RECIPE.gguf TYPE --recipe
# RECIPE --ctx $CTX (512), calibrating on stories 0-249 of the bundled text (the stories of
# calib.txt) in sequences of up to 512 tokens, then
# llama-perplexity -c 512 -b 512 --chunks $CHUNKS (60) on eval.txt. Prints a Markdown table:
# type, recipe, tensor bytes, perplexity, and llama-quantize's (without / with imatrix) from the
# baseline's results.md. $QTL_FLAGS adds flags to every qtl-quantize call (e.g.
# QTL_FLAGS=--finetune-norms); they are part of the recipe column and of the file names.
set -euo pipefail
qq=$(realpath "$1")
bin=$(realpath "$2")
base=$(realpath "$3")
out=${4:-$base/qtl}
types=${TYPES:-"Q4_0 Q4_1 Q5_0 IQ4_NL Q5_1 Q8_0"}
recipes=${RECIPES:-"rtn gptq-clip"}
chunks=${CHUNKS:-60}
threads=${THREADS:-2}
ctx=${CTX:-512}  # the converter writes 128 for this 512-token model: calibrate on 512
flags=${QTL_FLAGS:-}
tag=$(echo "$flags" | tr -c 'A-Za-z0-9\n' '_')  # for file names
mkdir -p "$out"
ppl() {  # ppl FILE.gguf -> the final perplexity estimate
  "$bin/llama-perplexity" -m "$1" -f "$base/eval.txt" -c 512 -b 512 --chunks "$chunks" -t "$threads" \
    > "$1.ppl.log" 2>&1 || { echo "qtl-vs-llama: llama-perplexity failed on $1 (log: $1.ppl.log)" >&2; exit 1; }
  grep -o 'Final estimate: PPL = [0-9.]*' "$1.ppl.log" | awk '{print $5}'
}
echo "| type | recipe | tensor bytes | llama-perplexity |"
echo "|---|---|---|---|"
for t in $types; do
  for r in $recipes; do
    f="$out/$t-$r$tag.gguf"
    # shellcheck disable=SC2086  # $flags is a list of flags
    "$qq" --recipe "$r" --ctx "$ctx" $flags "$base/f32.gguf" "$f" "$t" > "$f.log" 2> "$f.err" ||
      { echo "qtl-vs-llama: qtl-quantize failed for $t $r:" >&2; tail -5 "$f.err" >&2; exit 1; }
    bytes=$(grep -o 'tensor data [0-9]* bytes' "$f.log" | awk '{print $3}')
    echo "| $t | $r${flags:+ $flags} | $bytes | $(ppl "$f") |"
  done
done
