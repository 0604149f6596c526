#!/usr/bin/env bash
# Runs every test program named on the command line (a binary, or a script with its interpreter, as
# one quoted word each), streams their output, and counts the "PASS/FAIL/SKIP name" lines they print.
# A program that exits non-zero without printing a FAIL line counts as one failure of its own (a crash
# is never a pass). Ends with the one closing line CI reads: "N passed, N failed, N skipped".
set -u
pass=0; fail=0; skip=0; failed_progs=()
logdir=${TEST_LOGDIR:-build/test-logs}; mkdir -p "$logdir"
# The trainer's reference cache (and anything else under XDG_CACHE_HOME) starts empty for every test
# run and never touches the user's: a cached reference sum carries the rounding of the run that stored
# it, which would make one test's numbers depend on what ran before it.
export XDG_CACHE_HOME="$(cd "$logdir" && pwd)/xdg-cache"; rm -rf "$XDG_CACHE_HOME"; mkdir -p "$XDG_CACHE_HOME"
for cmd in "$@"; do
  name=$(basename "${cmd##* }"); log="$logdir/$name.log"
  echo "== $cmd"
  start=$(date +%s)
  bash -c "$cmd" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  p=$(grep -c '^PASS ' "$log"); f=$(grep -c '^FAIL ' "$log"); s=$(grep -c '^SKIP ' "$log")
  if [ "$rc" -ne 0 ] && [ "$f" -eq 0 ]; then f=1; echo "FAIL $name: exited with status $rc"; fi
  pass=$((pass + p)); fail=$((fail + f)); skip=$((skip + s))
  [ "$f" -eq 0 ] || failed_progs+=("$name")
  echo "-- $name: $p passed, $f failed, $s skipped ($(( $(date +%s) - start ))s)"
done
[ ${#failed_progs[@]} -eq 0 ] || echo "failing programs: ${failed_progs[*]}"
echo "$pass passed, $fail failed, $skip skipped"
[ "$fail" -eq 0 ]
