#!/usr/bin/env bash
# tests/sdk/test_forget.sh: erasure, lineage and retention as the operator meets them, end to end with
# real `prefcap export` runs: two nights of exports hold a victim and a bystander; `prefcap forget`
# names the exports that held the victim (name, path, time), their distinctive strings are gone from
# the database file and its WAL read as raw bytes (and were there before), from every later export,
# late events for them are refused and counted; `prefcap lineage` by export and by user; `prefcap
# prune` with --dry-run; --help, JSON output, exit codes and usage errors.
set -u
BUILD=${BUILD:-build}
P="$PWD/$BUILD/prefcap"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
DB="$T/s.db"
fails=0
check() {  # check NAME CONDITION-COMMAND...
  local name=$1; shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}
py() { /usr/bin/python3 -c "$@"; }
# does the file (or the WAL beside it) hold these bytes? grep -a reads the raw bytes
in_store() { grep -q -a -F -- "$1" "$DB" 2>/dev/null || grep -q -a -F -- "$1" "$DB-wal" 2>/dev/null; }
VICTIM_STRINGS=(ZEBRA-PROMPT-q81 ZEBRA-SYSTEM-k27 ZEBRA-MESSAGE-x55 ZEBRA-COMPLETION-c64 ZEBRA-EDIT-m19
                ZEBRA-CHOSEN-h42 ZEBRA-NIGHT2-n02 alice-zq-7731 zebra-session-99)
none_in_store() { local s; for s in "${VICTIM_STRINGS[@]}"; do in_store "$s" && { echo "  '$s' still in the store"; return 1; }; done; return 0; }
all_in_store() { local s; for s in "${VICTIM_STRINGS[@]}"; do in_store "$s" || { echo "  '$s' not in the store"; return 1; }; done; return 0; }
none_in_file() { local s; for s in "${VICTIM_STRINGS[@]}"; do grep -q -a -F -- "$s" "$1" && { echo "  '$s' in $1"; return 1; }; done; return 0; }

# ---- night 1: both users, every kind of text ------------------------------------------------------
cat > "$T/night1.jsonl" <<'JSONL'
{"type":"generation","id":"a1","prompt":"ZEBRA-PROMPT-q81 plan my trip","system":"ZEBRA-SYSTEM-k27","completion":"ZEBRA-COMPLETION-c64 go north","user_id":"alice-zq-7731","session_id":"zebra-session-99","model":"acme","ts":"2026-11-20T10:00:00Z"}
{"type":"edit","id":"a1","text":"ZEBRA-EDIT-m19 go south instead, by train","ts":"2026-11-20T10:00:05Z"}
{"type":"generation","id":"a2","prompt":"ZEBRA-PROMPT-q81 plan my trip","system":"ZEBRA-SYSTEM-k27","completion":"ZEBRA-CHOSEN-h42 go west","regenerates":"a1","user_id":"alice-zq-7731","session_id":"zebra-session-99","model":"acme","ts":"2026-11-20T10:01:00Z"}
{"type":"accept","id":"a2","ts":"2026-11-20T10:01:05Z"}
{"type":"generation","id":"a3","messages":[{"role":"system","content":"ZEBRA-SYSTEM-k27"},{"role":"user","content":"ZEBRA-MESSAGE-x55 hi"}],"completion":"ZEBRA-COMPLETION-c64 hello","user_id":"alice-zq-7731","model":"acme","ts":"2026-11-20T10:02:00Z"}
{"type":"generation","id":"a4","messages":[{"role":"system","content":"ZEBRA-SYSTEM-k27"},{"role":"user","content":"ZEBRA-MESSAGE-x55 hi"}],"completion":"ZEBRA-COMPLETION-c64 hey there","user_id":"alice-zq-7731","model":"acme","ts":"2026-11-20T10:02:01Z"}
{"type":"choice","chosen":"a3","rejected":"a4","ts":"2026-11-20T10:02:05Z"}
{"type":"generation","id":"b1","prompt":"OKAPI-PROMPT-1 what is rust","completion":"OKAPI-COMPLETION-1 a language","user_id":"bob-okapi","model":"acme","ts":"2026-11-20T11:00:00Z"}
{"type":"edit","id":"b1","text":"OKAPI-EDIT-1 a systems programming language","ts":"2026-11-20T11:00:05Z"}
JSONL
"$P" ingest --db "$DB" --sync "$T/night1.jsonl" 2>/dev/null
check ingest_night1 test "$(sqlite3 "$DB" 'SELECT count(*) FROM generations')" = 5
mkdir -p "$T/exp"
"$P" export --db "$DB" --since-last nightly --out "$T/exp/2026-11-20.jsonl" --quiet
check export_night1_holds_victim grep -q -F ZEBRA-EDIT-m19 "$T/exp/2026-11-20.jsonl"

# ---- night 2: more of both; an ad-hoc export of the victim alone, and one of the bystander alone ---
cat > "$T/night2.jsonl" <<'JSONL'
{"type":"generation","id":"a5","prompt":"ZEBRA-NIGHT2-n02 again","completion":"ZEBRA-NIGHT2-n02 answer","user_id":"alice-zq-7731","model":"acme","ts":"2026-11-21T09:00:00Z"}
{"type":"edit","id":"a5","text":"ZEBRA-NIGHT2-n02 the user's much better answer","ts":"2026-11-21T09:00:05Z"}
{"type":"generation","id":"b2","prompt":"OKAPI-PROMPT-2 what is go","completion":"OKAPI-COMPLETION-2 a game","user_id":"bob-okapi","model":"acme","ts":"2026-11-21T09:30:00Z"}
{"type":"edit","id":"b2","text":"OKAPI-EDIT-2 a programming language from Google","ts":"2026-11-21T09:30:05Z"}
JSONL
"$P" ingest --db "$DB" --sync "$T/night2.jsonl" 2>/dev/null
"$P" export --db "$DB" --since-last nightly --out "$T/exp/2026-11-21.jsonl" --quiet
"$P" export --db "$DB" --user alice-zq-7731 --out "$T/exp/alice-only.jsonl" --quiet
"$P" export --db "$DB" --user bob-okapi --out "$T/exp/bob-only.jsonl" --quiet
check export_night2_holds_victim grep -q -F ZEBRA-NIGHT2-n02 "$T/exp/2026-11-21.jsonl"
check export_bob_only_has_no_victim none_in_file "$T/exp/bob-only.jsonl"
N1=$(py "import json; print(json.load(open('$T/exp/2026-11-20.jsonl.manifest.json'))['export_id'])")
N2=$(py "import json; print(json.load(open('$T/exp/2026-11-21.jsonl.manifest.json'))['export_id'])")
AO=$(py "import json; print(json.load(open('$T/exp/alice-only.jsonl.manifest.json'))['export_id'])")
BO=$(py "import json; print(json.load(open('$T/exp/bob-only.jsonl.manifest.json'))['export_id'])")
AH=$(printf %s alice-zq-7731 | sha256sum | cut -d' ' -f1)

# before: the victim's strings are in the store (so the checks after can fail)
check victim_strings_in_store_before all_in_store

# ---- lineage before the erasure -------------------------------------------------------------------
"$P" lineage --db "$DB" --export "$N1" --json > "$T/lin1.json"; rc=$?
check lineage_export_exit_0 test $rc -eq 0
check lineage_export_matches_manifest py "
import json
l = json.load(open('$T/lin1.json')); m = json.load(open('$T/exp/2026-11-20.jsonl.manifest.json'))
assert l['export']['id'] == m['export_id'] and l['export']['name'] == 'nightly', l['export']
assert l['export']['path'].endswith('2026-11-20.jsonl') and l['export']['records'] == m['records'], (l['export'], m['records'])
assert sorted({r['id'] for r in l['records']}) == sorted(m['record_ids']), (l['records'], m['record_ids'])
assert any(r['user_hash'] == '$AH' for r in l['records'])
"
"$P" lineage --db "$DB" --export "$N1" > "$T/lin1.txt"
check lineage_export_text grep -q "name *nightly" "$T/lin1.txt"
check lineage_export_text_records grep -q "pair .*$AH" "$T/lin1.txt"

# ---- forget ---------------------------------------------------------------------------------------
"$P" forget --db "$DB" --user alice-zq-7731 > "$T/forget.txt" 2> "$T/forget.err"; rc=$?
check forget_exit_0 test $rc -eq 0
check forget_lists_night1 grep -q "nightly .*2026-11-20.jsonl  $N1" "$T/forget.txt"
check forget_lists_night2 grep -q "nightly .*2026-11-21.jsonl  $N2" "$T/forget.txt"
check forget_lists_adhoc grep -q "alice-only.jsonl  $AO" "$T/forget.txt"
check forget_not_bob_only sh -c "! grep -q bob-only '$T/forget.txt'"
check forget_lists_times grep -qE "^  20[0-9]{2}-[0-9]{2}-[0-9]{2}T[0-9:.]+Z +nightly" "$T/forget.txt"
check forget_counts grep -q "erased user sha256:$AH: 5 generation(s)" "$T/forget.txt"
check forget_wal_truncated grep -q "WAL truncated" "$T/forget.txt"
check victim_gone_from_file_and_wal none_in_store
check wal_empty test "$(stat -c %s "$DB-wal" 2>/dev/null || echo 0)" -eq 0
check bystander_still_there in_store OKAPI-EDIT-2
check integrity_ok test "$(sqlite3 "$DB" 'PRAGMA integrity_check')" = ok
check export_filter_scrubbed test "$(sqlite3 "$DB" "SELECT count(*) FROM exports WHERE filters LIKE '%alice-zq-7731%'")" = 0

"$P" forget --db "$DB" --user alice-zq-7731 --json > "$T/forget2.json"; rc=$?
check forget_again_exit_0 test $rc -eq 0
check forget_again_json py "
import json
d = json.load(open('$T/forget2.json'))
assert d['user_hash'] == '$AH' and d['erased']['total'] == 0 and d['wal_truncated'] is True, d
ids = [e['id'] for e in d['exports']]
assert ids == ['$N1', '$N2', '$AO'], ids
assert all(e['published'] and e['user_records'] >= 1 and e['path'] for e in d['exports']), d['exports']
"

# ---- late events are refused and counted ----------------------------------------------------------
cat > "$T/late.jsonl" <<'JSONL'
{"type":"generation","id":"a9","prompt":"ZEBRA-PROMPT-q81 late","completion":"ZEBRA-COMPLETION-c64 late","user_id":"alice-zq-7731"}
{"type":"edit","id":"a1","text":"ZEBRA-EDIT-m19 a late edit"}
{"type":"choice","chosen":"b1","rejected":"a2"}
{"type":"copy","id":"b2"}
JSONL
"$P" ingest --db "$DB" "$T/late.jsonl" > /dev/null 2> "$T/late.err"; rc=$?
check late_ingest_exit_1 test $rc -eq 1
check late_ingest_says_not_stored grep -q "NOT stored" "$T/late.err"
check late_refused_counted test "$(sqlite3 "$DB" "SELECT value FROM counters WHERE name = 'refused'")" = 3
check late_bystander_event_stored test "$(sqlite3 "$DB" "SELECT count(*) FROM events WHERE gen_id = 'b2' AND type = 'copy'")" = 1
check victim_still_gone none_in_store

# ---- later exports hold none of it -----------------------------------------------------------------
"$P" export --db "$DB" --out "$T/exp/all-after.jsonl" --quiet
check later_export_has_bystander grep -q -F OKAPI-EDIT-2 "$T/exp/all-after.jsonl"
check later_export_has_no_victim none_in_file "$T/exp/all-after.jsonl"
"$P" export --db "$DB" --since-last nightly --out "$T/exp/2026-11-22.jsonl" --quiet
[ -f "$T/exp/2026-11-22.jsonl" ] && check later_nightly_has_no_victim none_in_file "$T/exp/2026-11-22.jsonl"

# ---- lineage after the erasure ---------------------------------------------------------------------
"$P" lineage --db "$DB" --user alice-zq-7731 > "$T/linu.txt"; rc=$?
check lineage_user_exit_0 test $rc -eq 0
check lineage_user_outlives_erasure test "$(grep -c "exp-" "$T/linu.txt")" = 3
"$P" lineage --db "$DB" --user bob-okapi --json > "$T/linb.json"
check lineage_user_json py "
import json
d = json.load(open('$T/linb.json'))
ids = {e['id'] for e in d['exports']}
assert {'$N1', '$N2', '$BO'} <= ids and '$AO' not in ids, ids
"
"$P" lineage --db "$DB" --user nobody > "$T/linn.txt"
check lineage_user_none grep -q "(none)" "$T/linn.txt"
"$P" lineage --db "$DB" --export exp-nope > /dev/null 2> "$T/lin404.err"; rc=$?
check lineage_unknown_export_exit_1 test $rc -eq 1
check lineage_unknown_export_message grep -q "no export 'exp-nope'" "$T/lin404.err"

# ---- prune -----------------------------------------------------------------------------------------
cat > "$T/old.jsonl" <<'JSONL'
{"type":"generation","id":"old1","prompt":"PRUNE-ME-p1 old prompt","completion":"old answer","user_id":"bob-okapi","ts":"2020-01-01T00:00:00Z"}
{"type":"edit","id":"old1","text":"PRUNE-ME-p1 a much better old answer","ts":"2020-01-01T00:00:05Z"}
JSONL
"$P" ingest --db "$DB" --sync "$T/old.jsonl" 2>/dev/null
"$P" prune --db "$DB" --older-than 365 --dry-run --json > "$T/dry.json"; rc=$?
check prune_dry_run_exit_0 test $rc -eq 0
check prune_dry_run_counts py "
import json
d = json.load(open('$T/dry.json'))
assert d['dry_run'] is True and d['deleted']['generations'] == 1 and d['deleted']['events'] == 1 and d['deleted']['pairs'] == 1, d
"
check prune_dry_run_deletes_nothing test "$(sqlite3 "$DB" "SELECT count(*) FROM generations WHERE id = 'old1'")" = 1
"$P" prune --db "$DB" --older-than 365 --vacuum > "$T/prune.txt"; rc=$?
check prune_exit_0 test $rc -eq 0
check prune_text grep -q "deleted 1 generation(s), 1 event(s), 1 pair(s)" "$T/prune.txt"
check prune_deleted test "$(sqlite3 "$DB" "SELECT count(*) FROM generations WHERE id = 'old1'")" = 0
check prune_kept_recent test "$(sqlite3 "$DB" "SELECT count(*) FROM generations")" = 2
check prune_text_gone sh -c "! grep -q -a PRUNE-ME-p1 '$DB'"

# ---- help, usage errors, exit codes ----------------------------------------------------------------
for c in forget lineage prune; do
  "$P" $c --help > "$T/help.txt"; rc=$?
  check help_${c} sh -c "[ $rc -eq 0 ] && grep -q 'usage: prefcap $c' '$T/help.txt'"
done
"$P" --help > "$T/top.txt"
check top_help_lists_commands sh -c "grep -q '^  forget' '$T/top.txt' && grep -q '^  lineage' '$T/top.txt' && grep -q '^  prune' '$T/top.txt'"
"$P" forget --db "$DB" 2> "$T/u.err"; rc=$?
check forget_needs_user sh -c "[ $rc -eq 2 ] && grep -q -- '--user ID is required' '$T/u.err'"
"$P" forget --db "$T/missing.db" --user x 2> "$T/u.err"; rc=$?
check forget_missing_store sh -c "[ $rc -eq 1 ] && grep -q 'no store at' '$T/u.err' && [ ! -e '$T/missing.db' ]"
"$P" lineage --db "$DB" 2>/dev/null; rc=$?
check lineage_needs_one test $rc -eq 2
"$P" lineage --db "$DB" --export x --user y 2>/dev/null; rc=$?
check lineage_not_both test $rc -eq 2
"$P" prune --db "$DB" --older-than abc 2> "$T/u.err"; rc=$?
check prune_bad_days sh -c "[ $rc -eq 2 ] && grep -q 'older-than' '$T/u.err'"
"$P" prune --db "$DB" 2>/dev/null; rc=$?
check prune_needs_days test $rc -eq 2
PREFCAP_DB="$DB" "$P" lineage --user bob-okapi > /dev/null; rc=$?
check env_db test $rc -eq 0

[ $fails -eq 0 ]
