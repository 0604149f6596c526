#!/usr/bin/env bash
# bench/export_bench.sh [N]: export throughput for N pairs (default 1,000,000) against the sqlite3
# shell selecting the same rows as JSON, in the same run, on the same store and disk.
#   baseline  sqlite3 -json STORE "<the export's own query: pairs joined to both generations>"
#   prefcap   prefcap export --format trl-dpo (conversational prompts: the heavier form) to a file
# Each is run twice, the best time kept; pairs/s and MB/s are reported with the ratio (target > 1).
# The store is built once by ingesting N side-by-side choices (3 events a pair) and deriving.
set -euo pipefail
cd "$(dirname "$0")/.."
N=${1:-1000000}
BUILD=${BUILD:-build}
P="$PWD/$BUILD/prefcap"
W=${BENCH_DIR:-$(mktemp -d)}
trap '[ -z "${BENCH_DIR:-}" ] && rm -rf "$W"' EXIT
DB="$W/bench.db"
if [ ! -s "$DB" ]; then
  echo "building a store with $N pairs in $W ..."
  /usr/bin/python3 - "$N" > "$W/events.jsonl" <<'PY'
import json, sys
n = int(sys.argv[1])
out = sys.stdout
for i in range(n):
    u = "user-%d" % (i % 5000)
    msgs = json.dumps([{"role": "system", "content": "You are a helpful assistant."},
                       {"role": "user", "content": "Question number %d: how do I do thing %d well?" % (i, i % 977)}])
    out.write('{"type":"generation","id":"a%d","messages":%s,"completion":"A long and rambling answer to question %d that never quite gets to the point.","model":"m1","user_id":"%s","ts":%d}\n' % (i, msgs, i, u, 1763700000000 + i))
    out.write('{"type":"generation","id":"b%d","messages":%s,"completion":"Do X, then Y. [Source: docs, section %d]","model":"m1","user_id":"%s","ts":%d}\n' % (i, msgs, i % 97, u, 1763700000000 + i))
    out.write('{"type":"choice","chosen":"b%d","rejected":"a%d","event_id":"c%d","ts":%d}\n' % (i, i, i, 1763700000000 + i))
PY
  time "$P" ingest --db "$DB" "$W/events.jsonl"
  time "$P" derive --db "$DB"
fi
SQL="SELECT p.id, p.signal, p.weight, p.source, p.flags, r.system, r.prompt, r.messages, coalesce(p.chosen_text, c.completion) AS chosen, r.completion AS rejected, r.model, c.model FROM pairs p JOIN generations r ON r.id = p.rejected_id LEFT JOIN generations c ON c.id = p.chosen_id ORDER BY p.id"
best() {  # best of 2 wall times, in ms, of the command
  local b=999999999
  for _ in 1 2; do
    local t0=$(date +%s%N); "$@"; local t1=$(date +%s%N)
    local ms=$(( (t1 - t0) / 1000000 )); [ $ms -lt $b ] && b=$ms
  done
  echo $b
}
sqlite_ms=$(best sh -c "sqlite3 -json '$DB' \"$SQL\" > '$W/sqlite.json'")
prefcap_ms=$(best sh -c "'$P' export --db '$DB' --out '$W/export.jsonl' --quiet")
rows=$(wc -l < "$W/export.jsonl")
sb=$(stat -c %s "$W/sqlite.json"); pb=$(stat -c %s "$W/export.jsonl")
/usr/bin/python3 - "$rows" "$sqlite_ms" "$prefcap_ms" "$sb" "$pb" <<'PY'
import sys
rows, sm, pm, sb, pb = map(int, sys.argv[1:])
print("export bench: %d pairs" % rows)
print("  sqlite3 -json (same rows) %6.2f s  %9.0f pairs/s  %6.1f MB/s" % (sm / 1e3, rows / (sm / 1e3), sb / 1e6 / (sm / 1e3)))
print("  prefcap export trl-dpo    %6.2f s  %9.0f pairs/s  %6.1f MB/s  (+ manifest, fsync, lineage)" % (pm / 1e3, rows / (pm / 1e3), pb / 1e6 / (pm / 1e3)))
print("  ratio (prefcap pairs/s over sqlite3's): %.2fx (target > 1)" % (sm / pm))
PY
