#!/usr/bin/env bash
# bench/soak.sh: crash testing at scale (not part of `make test`; about 15-40 minutes on 2 shared cores).
#   1. the crash test (tests/sdk/test_crash.c) with 1,000 SIGKILLs in sync mode: every acknowledged
#      event must be in the file, nothing stored twice, PRAGMA integrity_check ok after each kill;
#   2. the export kill test (tests/sdk/test_export.sh) with 200 SIGKILLed nightly exports while traffic
#      keeps arriving: the published files together must equal one clean export (no record missing,
#      none twice), the store intact, and no temporary file left behind.
# Prints the figures to record in bench/RESULTS.md; the goal is 0 lost, 0 duplicates, integrity ok.
# usage: bench/soak.sh [CRASH_KILLS [EXPORT_KILLS]]   (run from the repository root after `make`)
set -u
BUILD=${BUILD:-build}
crash_kills=${1:-1000}
export_kills=${2:-200}
for f in "$BUILD/tests/test_crash" "$BUILD/tests/crashchild" "$BUILD/prefcap" "$BUILD/examples/chat_backend"; do
  [ -x "$f" ] || { echo "soak: missing $f: run make first" >&2; exit 2; }
done
log=$(mktemp); trap 'rm -f "$log"' EXIT
status=0

if [ "$crash_kills" -gt 0 ]; then   # 0 skips this part
  echo "== crash test: $crash_kills SIGKILLs in sync mode"
  t0=$(date +%s)
  PREFCAP_CRASH_RUNS=$crash_kills PREFCAP_CRASH_MODES=sync "$BUILD/tests/test_crash" > "$log" 2>&1 || status=1
  grep -E '^(# sync|PASS|FAIL)|seed' "$log"
  grep -E 'missing|duplicate|not killed' "$log" | grep -v '^#' | head -20
  echo "   ($(( $(date +%s) - t0 )) s)"
fi

if [ "$export_kills" -gt 0 ]; then
  echo "== export kill test: $export_kills SIGKILLed exports"
  t0=$(date +%s)
  EXPORT_KILLS=$export_kills BUILD=$BUILD tests/sdk/test_export.sh > "$log" 2>&1 || status=1
  grep -E 'crash loop seed|export kills|exports killed mid-run|^(PASS|FAIL) crash_' "$log"
  grep -E '^FAIL' "$log"
  echo "   ($(( $(date +%s) - t0 )) s)"
fi

[ $status -eq 0 ] && echo "soak: ok" || echo "soak: FAILED"
exit $status
