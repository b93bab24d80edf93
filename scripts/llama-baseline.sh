#!/usr/bin/env bash
# The llama.cpp reference protocol on the bundled model: what llama.cpp's own tools make of
# stories260K, which qtl's GGUF output is compared against (perplexity at the same file size,
# and the exact type llama-quantize gives every tensor).
#
#   scripts/llama-baseline.sh [BUILD_DIR [WORK_DIR]]
#
# BUILD_DIR  the build folder of tests/llama (llama-convert-llama2c, llama-imatrix,
#            llama-quantize, llama-perplexity and the CPU backend variants beside them);
#            default $QTL_LLAMA_BUILD_DIR, else build/tests/llama. Build it with
#              cmake -S . -B build -DQTL_LLAMA_CPP_DIR=<install dir of scripts/install-llama-cpp.sh>
#              cmake --build build -j2 --target qtl_llama_tools
# WORK_DIR   where the texts, GGUF files and logs go; default $QTL_LLAMA_WORK_DIR, else
#            build/llama-baseline. Everything in it is regenerated on every run.
#
# Environment: THREADS (default 2), CHUNKS (perplexity chunks of 512 tokens, default 60),
# QTL_DATA_DIR (holds stories260K/ and tinystories_val_dev.txt; default examples/data, else
# ../shared/data), TYPES (default "Q8_0 Q5_1 Q5_0 Q4_1 IQ4_NL Q4_0 Q4_K_M Q3_K_M Q2_K").
#
# The protocol:
#  1. stories260K.bin -> f32.gguf with llama-convert-llama2c, vocabulary from tok512.bin (the
#     converter reads llama2.c tokenizer files as well as GGUF). It writes the classifier as its
#     own output.weight tensor (a copy of the tied token embedding), so llama-quantize chooses a
#     type for each of the two separately.
#  2. tinystories_val_dev.txt holds 500 stories separated by lines "<|endoftext|>"; each story
#     is stripped of surrounding whitespace. calib.txt = stories 0-249 and eval.txt = stories
#     250-499, joined by blank lines.
#  3. llama-imatrix -m f32.gguf -f calib.txt -c 512 -o imatrix.gguf (all of calib.txt).
#  4. For each type: llama-quantize f32.gguf TYPE.gguf TYPE, and with --imatrix imatrix.gguf.
#  5. llama-perplexity -m X.gguf -f eval.txt -c 512 -b 512 --chunks 60 for f32.gguf and every
#     quantized file: the "Final estimate: PPL" value.
#
# Output (stdout): a Markdown table of file sizes and perplexities (beside the values measured
# before with this protocol, where there are some), then a table of the type llama-quantize gave
# each weight tensor (per layer, blk.0..blk.4, where the layers differ). WORK_DIR keeps every
# log, results.md (the same tables) and tensor-types.tsv (file, tensor, type, shape).
# Takes about 10 minutes on 2 cores, mostly perplexity and the importance matrix.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
bin=$(cd "${1:-${QTL_LLAMA_BUILD_DIR:-$root/build/tests/llama}}" && pwd)
work=${2:-${QTL_LLAMA_WORK_DIR:-$root/build/llama-baseline}}
threads=${THREADS:-2}
chunks=${CHUNKS:-60}
types=${TYPES:-"Q8_0 Q5_1 Q5_0 Q4_1 IQ4_NL Q4_0 Q4_K_M Q3_K_M Q2_K"}
if [[ -n ${QTL_DATA_DIR:-} ]]; then
  data=$QTL_DATA_DIR
elif [[ -f $root/examples/data/stories260K/stories260K.bin ]]; then
  data=$root/examples/data
else
  data=$root/../shared/data
fi

for tool in llama-convert-llama2c llama-imatrix llama-quantize llama-perplexity; do
  if [[ ! -x $bin/$tool ]]; then
    echo "llama-baseline: $bin/$tool missing (cmake --build <build> --target qtl_llama_tools)" >&2
    exit 1
  fi
done
for f in stories260K/stories260K.bin stories260K/tok512.bin tinystories_val_dev.txt; do
  [[ -f $data/$f ]] || { echo "llama-baseline: $data/$f missing (set QTL_DATA_DIR)" >&2; exit 1; }
done
mkdir -p "$work/logs"
cd "$work"
rm -f ./*.gguf logs/*.log results.md tensor-types.tsv
say() { echo "llama-baseline: $*" >&2; }

# Perplexity measured before with this protocol (without / with the importance matrix).
declare -A expected=([F32]=3.8899 [Q8_0]="3.8957 3.8957" [Q5_1]="3.9178 3.9282" [Q5_0]="3.9759 3.9524"
                     [Q4_1]="4.0925 4.0763" [IQ4_NL]="4.1174 4.0949" [Q4_0]="4.1811 4.1453")

say "texts from $data/tinystories_val_dev.txt"
python3 - "$data/tinystories_val_dev.txt" <<'EOF'
import re, sys
text = open(sys.argv[1], encoding='utf-8').read()
stories = [s.strip() for s in re.split(r'^<\|endoftext\|>$', text, flags=re.M)]
assert len(stories) == 500, len(stories)
open('calib.txt', 'w', encoding='utf-8').write('\n\n'.join(stories[:250]) + '\n')
open('eval.txt', 'w', encoding='utf-8').write('\n\n'.join(stories[250:]) + '\n')
EOF

say "converting stories260K.bin to f32.gguf"
"$bin/llama-convert-llama2c" --copy-vocab-from-model "$data/stories260K/tok512.bin" \
  --llama2c-model "$data/stories260K/stories260K.bin" --llama2c-output-model f32.gguf >logs/convert.log 2>&1

say "importance matrix of calib.txt"
"$bin/llama-imatrix" -m f32.gguf -f calib.txt -c 512 -o imatrix.gguf -t "$threads" >logs/imatrix.log 2>&1

for type in $types; do
  say "quantizing to $type"
  "$bin/llama-quantize" f32.gguf "$type.gguf" "$type" "$threads" >"logs/quantize-$type.log" 2>&1
  "$bin/llama-quantize" --imatrix imatrix.gguf f32.gguf "$type-imatrix.gguf" "$type" "$threads" \
    >"logs/quantize-$type-imatrix.log" 2>&1
done
# llama-quantize logs which CPU backend variant ggml loaded (the other tools load the same one).
sed -n 's/^.*load_backend: /llama-baseline: /p' logs/quantize-*.log | head -1 >&2

# ppl NAME: perplexity of NAME.gguf on eval.txt. On a shared machine a run can be killed from
# outside: one retry, said on stderr (the result is deterministic, so the retry is the same run).
ppl() {
  local v try rc
  for try in 1 2; do
    rc=0
    "$bin/llama-perplexity" -m "$1.gguf" -f eval.txt -c 512 -b 512 --chunks "$chunks" -t "$threads" \
      >"logs/perplexity-$1.log" 2>&1 || rc=$?
    v=$(sed -n 's/^.*Final estimate: PPL = \([0-9.]*\).*$/\1/p' "logs/perplexity-$1.log")
    [[ $rc -eq 0 && -n $v ]] && { echo "$v"; return 0; }
    say "llama-perplexity on $1.gguf failed (exit status $rc, see logs/perplexity-$1.log)"
  done
  return 1
}

# The tensor table of each GGUF file: name, type, shape (tensor-types.tsv), and the bytes of
# tensor data (file size - data offset).
gguf_tensors() {
  python3 - "$@" <<'EOF'
import struct, sys
TYPES = {0: 'f32', 1: 'f16', 2: 'q4_0', 3: 'q4_1', 6: 'q5_0', 7: 'q5_1', 8: 'q8_0', 9: 'q8_1', 10: 'q2_K',
         11: 'q3_K', 12: 'q4_K', 13: 'q5_K', 14: 'q6_K', 15: 'q8_K', 16: 'iq2_xxs', 17: 'iq2_xs',
         18: 'iq3_xxs', 19: 'iq1_s', 20: 'iq4_nl', 21: 'iq3_s', 22: 'iq2_s', 23: 'iq4_xs', 24: 'i8',
         25: 'i16', 26: 'i32', 27: 'i64', 28: 'f64', 29: 'iq1_m', 30: 'bf16', 34: 'tq1_0', 35: 'tq2_0',
         39: 'mxfp4', 40: 'nvfp4', 41: 'q1_0', 42: 'q2_0'}
SCALAR = {0: 'B', 1: 'b', 2: 'H', 3: 'h', 4: 'I', 5: 'i', 6: 'f', 7: '?', 10: 'Q', 11: 'q', 12: 'd'}
for path in sys.argv[1:]:
    b = open(path, 'rb').read()
    o = 0
    def get(fmt):
        global o
        v = struct.unpack_from('<' + fmt, b, o); o += struct.calcsize('<' + fmt); return v[0]
    def string():
        global o
        n = get('Q'); s = b[o:o + n].decode('utf-8'); o += n; return s
    def value(t):
        if t == 8: return string()
        if t == 9:
            et, n = get('I'), get('Q')
            return [value(et) for _ in range(n)]
        return get(SCALAR[t])
    assert b[:4] == b'GGUF', path
    o = 4
    version, n_tensors, n_kv = get('I'), get('Q'), get('Q')
    align = 32
    for _ in range(n_kv):
        k = string(); v = value(get('I'))
        if k == 'general.alignment': align = v
    for _ in range(n_tensors):
        name = string(); nd = get('I'); shape = [get('Q') for _ in range(nd)]; t = get('I'); get('Q')
        print(f"{path}\t{name}\t{TYPES.get(t, t)}\t{'x'.join(map(str, shape))}")
    data_start = (o + align - 1) // align * align
    print(f"{path}\t#tensor-bytes\t{len(b) - data_start}\t")
EOF
}

say "perplexity of f32.gguf"
declare -A result
result[F32]=$(ppl f32)
for type in $types; do
  say "perplexity of $type.gguf and $type-imatrix.gguf"
  plain=$(ppl "$type")
  imat=$(ppl "$type-imatrix")
  result[$type]="$plain $imat"
done
gguf_tensors f32.gguf $(for t in $types; do echo "$t.gguf $t-imatrix.gguf"; done) >tensor-types.tsv

tensor_bytes() { awk -F'\t' -v f="$1" '$1 == f && $2 == "#tensor-bytes" { print $3 }' tensor-types.tsv; }
size_of() { stat -c %s "$1"; }
# The types one file gave its weight tensors (the 1-D norm weights stay f32 in every file), one
# Markdown row: token_embd, output, then per role the type, or the five layers' types when
# they differ.
type_row() {
  awk -F'\t' -v f="$1" '
    $1 == f && $2 !~ /^#/ && $2 !~ /norm/ {
      n = $2; sub(/\.weight$/, "", n)
      if (n ~ /^blk\./) { split(n, p, "."); role = p[3]; layer = p[2]; t[role, layer] = $3; roles[role] = 1
                          if (layer + 1 > nl) nl = layer + 1 }
      else t[n] = $3
    }
    END {
      row = "| " t["token_embd"] " | " t["output"]
      split("attn_q attn_k attn_v attn_output ffn_gate ffn_up ffn_down", order, " ")
      for (i = 1; i <= 7; i++) {
        r = order[i]; s = t[r, 0]; same = 1
        for (l = 1; l < nl; l++) { s = s "," t[r, l]; if (t[r, l] != t[r, 0]) same = 0 }
        row = row " | " (same ? t[r, 0] : s)
      }
      print row " |"
    }' tensor-types.tsv
}

{
  echo "| type | file bytes | tensor bytes | PPL | PPL imatrix | measured before |"
  echo "|---|---:|---:|---:|---:|---|"
  echo "| F32 | $(size_of f32.gguf) | $(tensor_bytes f32.gguf) | ${result[F32]} | | ${expected[F32]} |"
  for type in $types; do
    read -r plain imat <<<"${result[$type]}"
    fb=$(size_of "$type.gguf"); tb=$(tensor_bytes "$type.gguf")
    fbi=$(size_of "$type-imatrix.gguf"); tbi=$(tensor_bytes "$type-imatrix.gguf")
    [[ $fb == "$fbi" ]] || fb="$fb / $fbi"
    [[ $tb == "$tbi" ]] || tb="$tb / $tbi"
    exp=${expected[$type]:-}
    echo "| $type | $fb | $tb | $plain | $imat | ${exp/ / / } |"
  done
  echo
  echo "Types llama-quantize gave the weight tensors (per layer blk.0..4 where they differ; the"
  echo "norm weights stay f32):"
  echo
  echo "| file | token_embd | output | attn_q | attn_k | attn_v | attn_output | ffn_gate | ffn_up | ffn_down |"
  echo "|---|---|---|---|---|---|---|---|---|---|"
  for type in $types; do
    plain=$(type_row "$type.gguf"); imat=$(type_row "$type-imatrix.gguf")
    if [[ $plain == "$imat" ]]; then
      echo "| $type (both) $plain"
    else
      echo "| $type $plain"
      echo "| $type imatrix $imat"
    fi
  done
} | tee results.md
