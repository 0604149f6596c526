#!/usr/bin/env bash
# bench/report_bench.sh [STORE]: `prefcap report` on a big store: wall time and peak memory (RSS), and
# whether the page stays readable: its size and its count of SVG marks and text labels, which the
# report bounds by aggregating in SQL with row limits (sdk/report.c), whatever the store holds.
# STORE defaults to the million-event central store that fleet_bench leaves with FLEET_BENCH_KEEP=1:
#   FLEET_BENCH_KEEP=1 build/bench/fleet_bench 1000000 /tmp && bench/report_bench.sh
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build}
P="$PWD/$BUILD/prefcap"
DB=${1:-/tmp/fleet-bench-1000000/central.db}
[ -s "$DB" ] || { echo "no store at $DB (see the comment at the top of $0)" >&2; exit 1; }
OUT=$(mktemp --suffix=.html); trap 'rm -f "$OUT" "$OUT.time"' EXIT
events=$(sqlite3 "$DB" "SELECT (SELECT count(*) FROM generations) + (SELECT count(*) FROM events)")
pairs=$(sqlite3 "$DB" "SELECT (SELECT count(*) FROM pairs) || ' pairs, ' || (SELECT count(*) FROM labels) || ' labels, '
                      || (SELECT count(DISTINCT strftime('%Y-%m-%d', ts / 1000, 'unixepoch')) FROM generations) || ' days'")
for run in 1 2; do   # the second run reads a warm page cache: both are shown
  /usr/bin/time -f '%e %M' -o "$OUT.time" "$P" report --db "$DB" --out "$OUT" >/dev/null
  read -r secs kib < "$OUT.time"
  echo "report run $run: $events events ($pairs): ${secs} s, peak RSS $((kib / 1024)) MiB"
done
echo "page: $(stat -c %s "$OUT") bytes, $(grep -o '<svg' "$OUT" | wc -l) charts, $(grep -o '<rect' "$OUT" | wc -l) bars," \
     "$(grep -o '<text' "$OUT" | wc -l) text labels, $(grep -o '<line' "$OUT" | wc -l) interval lines"
