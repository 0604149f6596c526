#!/usr/bin/env bash
# examples/demo.sh: the main job end to end on this machine (what `make demo` runs).
#   1. a chat backend (examples/chat_backend.c) serves simulated users from 4 threads and logs every
#      generation and the users' implicit feedback into a prefcap store;
#   2. `prefcap stats` shows what was captured and the pairs derived from it;
#   3. `prefcap pairs` shows a few of them;
#   4. the nightly export writes them as TRL DPO JSONL with a manifest, and shows both.
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
