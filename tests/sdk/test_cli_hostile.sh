#!/usr/bin/env bash
# tests/sdk/test_cli_hostile.sh: the `prefcap` command against hostile input and real faults (issue 13,
# items 4-7), and the CLI's promise to use only the public API (issue 12, section 4):
#  - a damaged SQLite file (pages overwritten on disk) is an error with SQLite's message and exit 1
#    in stats, pairs and ingest, and `prefcap check` lists what is wrong;
#  - ingest into a read-only file (a real one: as nobody, or chmod when not root) and onto a full
#    disk (RLIMIT_FSIZE) gives up after --timeout with exit 1 instead of hanging;
#  - URL passwords never printed (upload progress and errors, export --upload, lineage);
#  - control bytes from outside (a server's error body, an event, stored text) never reach the
#    terminal raw;
#  - the CLI's objects link against libprefcap.so's exported symbols alone.
set -u
BUILD=${BUILD:-build}
P="$PWD/$BUILD/prefcap"
T=$(mktemp -d); trap '[ -n "${KEEP:-}" ] || rm -rf "$T"' EXIT; [ -n "${KEEP:-}" ] && echo "# scratch: $T"
chmod 755 "$T"
fails=0
check() {  # check NAME CONDITION-COMMAND...
  local name=$1; shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}
# no control byte but \n (and \t) in a file: nothing that a terminal would act on
clean_text() { /usr/bin/python3 -c "import sys; d=open(sys.argv[1],'rb').read(); sys.exit(any((b<32 and b not in (9,10)) or b==127 for b in d))" "$1"; }
elapsed_below() { [ $(( $(date +%s) - $1 )) -lt "$2" ]; }

# ---- the CLI uses the public API only ------------------------------------------------------------
check cli_includes_no_internal_header sh -c "! grep -nE '#include \"(internal|forget|redact|upload|sha256|md5|sigv4)\.h\"' sdk/cli/*.c sdk/cli/*.h"
check cli_uses_no_internal_symbol sh -c "! nm -u $BUILD/sdk/cli/*.o | grep -E ' (prefcap__|sqlite3_)'"
if [ "$BUILD" = build ]; then
  # hidden visibility: the .so exports prefcap.h's functions and nothing else; common/'s helpers
  # (progress bar, JSON escaper: hidden inside the .so) come from libpccommon.a, as in the real link
  check cli_links_against_exported_symbols_only cc -o "$T/prefcap-so" $BUILD/sdk/cli/*.o $BUILD/libprefcap.so $BUILD/libpccommon.a -lcjson -lm -pthread
else
  echo "SKIP cli_links_against_exported_symbols_only: only for the plain build"
fi

# ---- a store with pairs, then pages of its pairs table overwritten on disk -------------------------
/usr/bin/python3 - "$T/ev.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(1500):
        f.write(json.dumps({"type": "generation", "id": f"a{i}", "prompt": f"question {i} " + "x" * 100,
                            "completion": f"first answer {i}", "user_id": f"u{i % 9}"}) + "\n")
        f.write(json.dumps({"type": "regenerate", "id": f"a{i}"}) + "\n")
        f.write(json.dumps({"type": "generation", "id": f"b{i}", "prompt": f"question {i} " + "x" * 100,
                            "completion": f"second answer {i}", "regenerates": f"a{i}", "user_id": f"u{i % 9}"}) + "\n")
        f.write(json.dumps({"type": "copy", "id": f"b{i}"}) + "\n")   # regenerated, then the new one used: a pair
PY
"$P" ingest --db "$T/good.db" "$T/ev.jsonl" 2> /dev/null
sqlite3 "$T/good.db" "PRAGMA wal_checkpoint(TRUNCATE)" > /dev/null
cp "$T/good.db" "$T/bad.db"
/usr/bin/python3 - "$T/bad.db" <<'PY'
import sqlite3, sys
db = sys.argv[1]
c = sqlite3.connect(db)
size = c.execute("PRAGMA page_size").fetchone()[0]
pages = [r[0] for r in c.execute("SELECT pageno FROM dbstat WHERE name = 'pairs' AND pagetype = 'leaf'")]
c.close()
assert len(pages) >= 3, pages
with open(db, "r+b") as f:
    for p in pages[1:]:
        f.seek((p - 1) * size)
        f.write(b"\x5a" * size)
PY
cp "$T/bad.db" "$T/bad0.db"   # as damaged, before anything below writes to it
"$P" stats --db "$T/bad.db" > "$T/st.out" 2> "$T/st.err"; rc=$?
check corrupt_stats_exit_1 test $rc -eq 1
check corrupt_stats_says_sqlite_message grep -q "malformed" "$T/st.err"
"$P" pairs --db "$T/bad.db" --limit 0 > /dev/null 2> "$T/pa.err"; rc=$?
check corrupt_pairs_exit_1 test $rc -eq 1
check corrupt_pairs_says_why grep -q "malformed" "$T/pa.err"
# the last unit's pair lies on a damaged page (the first leaf is left intact): deriving it must fail
printf '%s\n' '{"type":"generation","id":"late","prompt":"question 1499","completion":"late answer","regenerates":"b1499"}' \
  | "$P" ingest --db "$T/bad.db" > /dev/null 2> "$T/in.err"; rc=$?
check corrupt_ingest_exit_1 test $rc -eq 1
check corrupt_ingest_says_why grep -q "malformed" "$T/in.err"
"$P" check --db "$T/bad.db" > "$T/ck.out" 2> "$T/ck.err"; rc=$?
check check_damaged_exit_1 test $rc -eq 1
check check_lists_problems grep -qE "^  .*(Page|page|btree|malformed)" "$T/ck.out"
check check_says_damaged grep -q "DAMAGED" "$T/ck.out"
"$P" check --db "$T/good.db" > "$T/ck2.out"; rc=$?
check check_sound_exit_0 test $rc -eq 0
check check_sound_says_ok grep -q "^ok" "$T/ck2.out"
# the recovery docs/storage.md gives, word for word: what the damaged pages held is re-derived
( cd "$T" && sqlite3 bad0.db .dump 2> /dev/null | sed 's/^ROLLBACK; -- due to errors$/COMMIT;/' | sqlite3 recovered.db &&
  sqlite3 recovered.db "PRAGMA application_id = $(sqlite3 bad0.db 'PRAGMA application_id');
                        PRAGMA user_version = $(sqlite3 bad0.db 'PRAGMA user_version')" )
"$P" check --db "$T/recovered.db" > /dev/null 2>&1; rc=$?
check recovered_store_checks_ok test $rc -eq 0
"$P" derive --all --db "$T/recovered.db" 2> /dev/null
check recovered_store_has_every_pair test "$(sqlite3 "$T/bad0.db" "SELECT sum(weight) FROM pairs" 2>&1 | grep -c malformed)" = 1 -a "$(sqlite3 "$T/recovered.db" "SELECT count(*) FROM pairs")" = "$(sqlite3 "$T/good.db" "SELECT count(*) FROM pairs")"
head -c 20000 /dev/urandom > "$T/noise.db"
"$P" stats --db "$T/noise.db" 2> "$T/noise.err"; rc=$?
check not_a_store_exit_1 test $rc -eq 1
check not_a_store_says_why grep -qE "damaged: .*(not a database|encrypted)" "$T/noise.err"
"$P" check --db "$T/missing.db" 2> /dev/null; rc=$?
check check_missing_store_exit_1 test $rc -eq 1
check check_missing_creates_nothing test ! -e "$T/missing.db"

# ---- never hang: a read-only store, a full disk ----------------------------------------------------
head -20 "$T/ev.jsonl" | sed 's/"\([ab]\)\([0-9]*\)"/"\1x\2"/g' > "$T/few.jsonl"
mkdir "$T/ro"; cp "$T/good.db" "$T/ro/s.db"; chmod 644 "$T/few.jsonl"
if [ "$(id -u)" = 0 ]; then
  # root writes any file: run as nobody, on a file nobody owns and may not write
  chown -R 65534:65534 "$T/ro"; chmod 0400 "$T/ro/s.db"
  AS=(setpriv --reuid=65534 --regid=65534 --clear-groups)
else
  chmod 0400 "$T/ro/s.db"; AS=()
fi
t0=$(date +%s)
timeout 60 "${AS[@]}" "$P" ingest --timeout 2 --db "$T/ro/s.db" "$T/few.jsonl" > /dev/null 2> "$T/ro.err"; rc=$?
check readonly_ingest_gives_up_exit_1 test $rc -eq 1
check readonly_ingest_within_timeout elapsed_below "$t0" 15
check readonly_ingest_says_why grep -q "no event could be stored for 2 s: .*readonly" "$T/ro.err"
check readonly_ingest_counts_lost grep -q "20 event(s) NOT stored" "$T/ro.err"

# a slow producer is not a stalled store: nothing is pending while ingest waits for input
(sleep 3; head -1 "$T/few.jsonl") | "$P" ingest --timeout 1 --db "$T/slow.db" > /dev/null 2> "$T/slow.err"; rc=$?
check slow_producer_is_not_a_stall sh -c "test $rc -eq 0 && grep -q '1 new' '$T/slow.err'"

/usr/bin/python3 - "$T/big.jsonl" <<'PY'
import json, sys
with open(sys.argv[1], "w") as f:
    for i in range(70000):   # more than the CLI's queue (65536): the wait for space is bounded too
        f.write(json.dumps({"type": "generation", "id": f"f{i}", "prompt": f"fill {i}", "completion": "y" * 100}) + "\n")
PY
# --sync: every line fails at once; the run still ends after --timeout, not after every line
t0=$(date +%s)
timeout 60 "${AS[@]}" "$P" ingest --sync --timeout 1 --db "$T/ro/s.db" "$T/big.jsonl" > /dev/null 2> "$T/ros.err"; rc=$?
check readonly_sync_ingest_gives_up_exit_1 test $rc -eq 1
check readonly_sync_ingest_within_timeout elapsed_below "$t0" 15
check readonly_sync_ingest_says_why grep -q "no event could be stored for 1 s: .*readonly" "$T/ros.err"
printf '%s\n' '{"type":"generation","id":"seed","prompt":"p","completion":"c"}' | "$P" ingest --db "$T/full.db" 2> /dev/null
t0=$(date +%s)
# a 3 MB file-size limit (RLIMIT_FSIZE) is a full disk to SQLite; SIGXFSZ ignored so writes fail with EFBIG
(trap '' XFSZ; ulimit -f 3000; exec timeout 60 "$P" ingest --timeout 2 --db "$T/full.db" "$T/big.jsonl") > /dev/null 2> "$T/full.err"; rc=$?
check diskfull_ingest_gives_up_exit_1 test $rc -eq 1
check diskfull_ingest_within_timeout elapsed_below "$t0" 30
check diskfull_ingest_says_why grep -q "no event could be stored for 2 s: .*File too large" "$T/full.err"
check diskfull_ingest_counts_lost grep -qE "[1-9][0-9]* event\(s\) NOT stored" "$T/full.err"
check diskfull_store_intact test "$(sqlite3 "$T/full.db" "PRAGMA integrity_check")" = ok

# ---- secrets and terminals: a loopback server ------------------------------------------------------
/usr/bin/python3 tests/sdk/http_server.py --lifetime 60 > "$T/srv.out" 2> /dev/null &
srv=$!
for _ in $(seq 50); do grep -q PORT "$T/srv.out" 2> /dev/null && break; sleep 0.1; done
port=$(awk '/PORT/ {print $2}' "$T/srv.out")
head -c 50000 /dev/urandom > "$T/data.bin"
"$P" upload "$T/data.bin" --to "http://alice:s3cretPW@127.0.0.1:$port/status/403/data.bin" --no-manifest > /dev/null 2> "$T/up1.err"; rc=$?
check userinfo_upload_error_exit_1 test $rc -eq 1
check userinfo_upload_error_hides_password sh -c "! grep -q s3cretPW '$T/up1.err'"
check userinfo_upload_error_names_host grep -q "http://\*\*\*@127.0.0.1:$port/status/403" "$T/up1.err"
"$P" upload "$T/data.bin" --to "http://alice:s3cretPW@127.0.0.1:$port/ok/data.bin" --no-manifest > /dev/null 2> "$T/up2.err"; rc=$?
check userinfo_upload_ok test $rc -eq 0
check userinfo_upload_progress_hides_password sh -c "! grep -q s3cretPW '$T/up2.err' && grep -q '\*\*\*@127.0.0.1' '$T/up2.err'"
"$P" export --db "$T/good.db" --out "$T/exp.jsonl" --upload "http://alice:s3cretPW@127.0.0.1:$port/ok/exp.jsonl" > /dev/null 2> "$T/ex.err"; rc=$?
check userinfo_export_upload_ok test $rc -eq 0
check userinfo_export_hides_password sh -c "! grep -q s3cretPW '$T/ex.err' && grep -q 'uploaded to http://\*\*\*@127.0.0.1' '$T/ex.err'"
"$P" export --db "$T/good.db" --out "$T/exp2.jsonl" --upload "http://alice:s3cretPW@127.0.0.1:$port/status/500/exp2.jsonl" > /dev/null 2> "$T/ex2.err"
check userinfo_export_upload_error_hides_password sh -c "! grep -q s3cretPW '$T/ex2.err' && grep -q '\*\*\*@127.0.0.1' '$T/ex2.err'"
"$P" lineage --db "$T/good.db" --user u1 > "$T/lin.out" 2>&1
check userinfo_lineage_hides_password sh -c "! grep -q s3cretPW '$T/lin.out' && grep -q 'uploaded to http://\*\*\*@' '$T/lin.out'"
check userinfo_store_keeps_no_password sh -c "test \"\$(sqlite3 '$T/good.db' \"SELECT count(*) FROM exports WHERE upload_url LIKE 'http://***@127.0.0.1:%/ok/exp.jsonl'\")\" = 1 && ! grep -qa s3cretPW '$T/good.db'"

"$P" upload "$T/data.bin" --to "http://127.0.0.1:$port/hostile/data.bin" --no-manifest > /dev/null 2> "$T/ho.err"; rc=$?
check hostile_body_exit_1 test $rc -eq 1
check hostile_body_no_control_bytes clean_text "$T/ho.err"
check hostile_body_shown_escaped grep -qF '\x1B[31mred' "$T/ho.err"
check hostile_body_forges_no_line sh -c "! grep -q '^prefcap upload: FORGED' '$T/ho.err'"
curl -s "http://127.0.0.1:$port/_quit" > /dev/null || true
kill $srv 2> /dev/null; wait $srv 2> /dev/null

# ---- control bytes in events: in error lines, and in stored text shown by `pairs` -------------------
printf '%s\n' '{"type":"tele\u001b[2Jport\u0007","id":"z"}' \
  '{"type":"generation","id":"e1","prompt":"q\u001b]0;title\u0007","completion":"bad \u001b[31mred"}' \
  '{"type":"regenerate","id":"e1"}' \
  '{"type":"generation","id":"e2","prompt":"q\u001b]0;title\u0007","completion":"good","regenerates":"e1"}' \
  '{"type":"copy","id":"e2"}' > "$T/esc.jsonl"
"$P" ingest --db "$T/esc.db" "$T/esc.jsonl" > /dev/null 2> "$T/esc.err"
check escape_in_event_error_line_escaped clean_text "$T/esc.err"
check escape_in_event_error_line_shown grep -qF 'tele\x1B[2Jport\x07' "$T/esc.err"
"$P" pairs --db "$T/esc.db" > "$T/esc.out" 2>&1
check escape_in_pairs_text_escaped grep -qF 'rejected: bad \x1B[31mred' "$T/esc.out"
check escape_in_pairs_no_control_bytes clean_text "$T/esc.out"

echo "# cli_hostile: $fails failure(s)"
[ $fails -eq 0 ]
