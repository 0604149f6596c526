#!/usr/bin/env bash
# tests/sdk/test_cli.sh: the `prefcap` command as a shell user meets it: ingest with good and bad
# lines (reported by line number, the good ones still stored, exit 1), replay, stats (text and JSON),
# pairs, derive with weights, --help everywhere, usage errors, $PREFCAP_DB.
set -u
BUILD=${BUILD:-build}
P="$PWD/$BUILD/prefcap"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
check() {  # check NAME CONDITION-COMMAND...
  local name=$1; shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}
json() { /usr/bin/python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print($1)" "$2"; }

cat > "$T/events.jsonl" <<'JSONL'
{"type":"generation","id":"g1","prompt":"What is 2+2?","completion":"5","model":"acme","model_version":"v1","user_id":"u1","session_id":"s1","ts":"2026-11-20T10:00:00Z"}
{"type":"regenerate","id":"g1"}
this is not json
{"type":"generation","id":"g2","prompt":"What is 2+2?","completion":"4","regenerates":"g1","model":"acme","user_id":"u1","session_id":"s1"}

{"type":"copy","id":"g2"}
{"type":"teleport","id":"g2"}
{"type":"generation","id":"g3","messages":[{"role":"system","content":"Be brief."},{"role":"user","content":"Hi"}],"completion":"Hello! How can I help you today?","model":"acme"}
{"type":"edit","id":"g3","text":"Hello!"}
{"type":"generation","id":"g4","prompt":"p"}
{"type":"choice","chosen":"g2","rejected":"g1","source":"ai:judge-1"}
{"type":"accept","id":"never-seen"}
{"type":"generation","id":"g5","prompt":"x\u0000y","completion":"c"}
JSONL
printf '{"type":"generation","id":"g6","prompt":"bad \xff utf8","completion":"c"}\n' >> "$T/events.jsonl"

"$P" ingest --db "$T/s.db" "$T/events.jsonl" > "$T/out" 2> "$T/err"; rc=$?
check ingest_exit_1_on_bad_lines test $rc -eq 1
check ingest_reports_line_numbers grep -q "events.jsonl:3: invalid JSON" "$T/err"
check ingest_reports_unknown_type grep -q "events.jsonl:7: invalid argument: unknown event type 'teleport'" "$T/err"
check ingest_reports_missing_field grep -q "events.jsonl:10: .*'completion' is required" "$T/err"
check ingest_reports_nul grep -q "events.jsonl:13: .*NUL" "$T/err"
check ingest_reports_bad_utf8 grep -q "events.jsonl:14: .*UTF-8" "$T/err"
check ingest_summary grep -q "8 event(s) read, 8 new, 0 already stored, 5 bad line(s)" "$T/err"

"$P" ingest --db "$T/s.db" < "$T/events.jsonl" > /dev/null 2> "$T/err2"
check replay_stores_nothing grep -q "8 event(s) read, 0 new, 8 already stored" "$T/err2"

"$P" stats --db "$T/s.db" --json > "$T/stats.json"; rc=$?
check stats_json_exit_0 test $rc -eq 0
check stats_counts_generations test "$(json "d['events']['generation']" "$T/stats.json")" = 3
check stats_counts_feedback test "$(json "d['events']['copy']" "$T/stats.json")" = 1
check stats_pairs_by_signal test "$(json "sorted(d['pairs_by_signal'])" "$T/stats.json")" = "['choice', 'edit', 'regenerate']"
check stats_ai_source test "$(json "d['pairs_by_source']['ai']" "$T/stats.json")" = 1
check stats_unknown_feedback test "$(json "d['problems']['feedback for unknown generations']" "$T/stats.json")" = 1
check stats_by_model test "$(json "d['generations_by_model']['acme v1']" "$T/stats.json")" = 1
# a file that is not a store: the reason follows the colon (0.1 printed nothing after it)
echo "plain text, not a database, long enough for SQLite to read a header from it" > "$T/notes.txt"
"$P" stats --db "$T/notes.txt" 2> "$T/nostore.err"; rc=$?
check stats_non_store_exit_1 test $rc -eq 1
check stats_non_store_says_why grep -q "damaged: .*notes.txt: file is not a database" "$T/nostore.err"
"$P" stats --db "$T/s.db" > "$T/stats.txt"
check stats_text grep -q "feedback for unknown generations *1" "$T/stats.txt"

"$P" pairs --db "$T/s.db" --json > "$T/pairs.jsonl"
check pairs_json_lines test "$(/usr/bin/python3 -c "import json,sys; print(len([json.loads(l) for l in open(sys.argv[1])]))" "$T/pairs.jsonl")" = 3
check pairs_json_messages /usr/bin/python3 -c "
import json,sys
p=[json.loads(l) for l in open(sys.argv[1])]
e=[x for x in p if x['signal']=='edit'][0]
assert e['messages'][0]=={'role':'system','content':'Be brief.'}, e
assert e['chosen']=='Hello!' and e['rejected'].startswith('Hello! How'), e
r=[x for x in p if x['signal']=='regenerate'][0]
assert r['chosen']=='4' and r['rejected']=='5' and r['prompt']=='What is 2+2?', r
" "$T/pairs.jsonl"
"$P" pairs --db "$T/s.db" --signal edit > "$T/pairs.txt"
check pairs_text grep -q "chosen:   Hello!" "$T/pairs.txt"

"$P" derive --db "$T/s.db" --weight choice=0.25 2> "$T/derive.err"; rc=$?
check derive_with_weight test $rc -eq 0
check derive_weight_applied test "$("$P" pairs --db "$T/s.db" --json --signal choice | /usr/bin/python3 -c "import json,sys; print(json.loads(sys.stdin.readline())['weight'])")" = 0.25
"$P" derive --db "$T/s.db" --weight nonsense=2 2> "$T/derive.err"; rc=$?
check derive_bad_weight_usage test $rc -eq 2
check derive_bad_weight_message grep -q "bad --weight 'nonsense'" "$T/derive.err"

ok=1
for c in ingest stats pairs derive upload; do "$P" $c --help > /dev/null || ok=0; done
check help_on_every_command test $ok = 1
"$P" frobnicate 2> /dev/null; check unknown_command_exit_2 test $? -eq 2
"$P" stats --db "$T/none.db" 2> "$T/e"; rc=$?
check stats_missing_store test $rc -eq 1 -a ! -e "$T/none.db"
(cd "$T" && PREFCAP_DB="$T/env.db" "$P" ingest - <<< '{"type":"generation","id":"e1","prompt":"p","completion":"c"}' 2>/dev/null)
check env_default_db test -s "$T/env.db"
check file_mode_0600 test "$(stat -c %a "$T/s.db")" = 600

# ---- upload through the CLI, against the loopback server of test_upload (tests/sdk/http_server.py)
/usr/bin/python3 tests/sdk/http_server.py --lifetime 60 > "$T/srv.out" 2> "$T/srv.err" &
srv=$!
for _ in $(seq 50); do grep -q PORT "$T/srv.out" 2>/dev/null && break; sleep 0.1; done
port=$(awk '/PORT/ {print $2}' "$T/srv.out")
head -c 300000 /dev/urandom > "$T/data.bin"
"$P" upload "$T/data.bin" --to "http://127.0.0.1:$port/fail/500/1/data.bin" --no-manifest --retries 2 > "$T/up.out" 2> "$T/up.err"; rc=$?
check upload_retries_500_then_succeeds test $rc -eq 0
sha=$(sha256sum "$T/data.bin" | cut -d' ' -f1)
curl -s "http://127.0.0.1:$port/_log" > "$T/log.json"
check upload_bytes_arrive_intact /usr/bin/python3 -c "
import json,sys
log=json.load(open(sys.argv[1]))
puts=[r for r in log if r['method']=='PUT']
assert [r['status'] for r in puts]==[500,200], [r['status'] for r in puts]
assert puts[-1]['sha256']==sys.argv[2], (puts[-1]['sha256'], sys.argv[2])
" "$T/log.json" "$sha"
"$P" upload "$T/data.bin" --to "http://127.0.0.1:$port/status/403/data.bin" --no-manifest > "$T/up.out" 2> "$T/up.err"; rc=$?
check upload_403_fails_clearly test $rc -eq 1
check upload_403_message grep -q "403" "$T/up.err"
"$P" upload "$T/missing.bin" --to "http://127.0.0.1:$port/ok/x" 2> "$T/up.err"; rc=$?
check upload_missing_file test $rc -ne 0
curl -s "http://127.0.0.1:$port/_quit" > /dev/null || true
kill $srv 2> /dev/null; wait $srv 2> /dev/null

# ---- redaction on the way in: the store never holds the address or the key ----------------------
printf '%s\n' '{"type":"generation","id":"r1","prompt":"Mail me at jane.doe@example.com","completion":"Use key sk-abcdefghijklmnopqrstuvwx1234 now"}' \
  | "$P" ingest --db "$T/red.db" --redact - 2>/dev/null
check redact_on_ingest test "$(sqlite3 "$T/red.db" "SELECT prompt || ' | ' || completion FROM generations")" = "Mail me at [EMAIL] | Use key [API_KEY] now"
check redact_leaves_no_bytes sh -c "! grep -aq 'jane.doe@example.com' '$T/red.db' '$T/red.db-wal' 2>/dev/null"

# ---- the examples a user copies from ---------------------------------------------------------------
case "$BUILD" in
  *asan*)  # an instrumented .so cannot be loaded into an uninstrumented interpreter
    echo "SKIP example_python_ctypes: $BUILD is an AddressSanitizer build"
    echo "SKIP example_python_pairs: $BUILD is an AddressSanitizer build" ;;
  *)
    check example_python_ctypes sh -c "/usr/bin/python3 examples/python_ctypes.py --lib '$BUILD/libprefcap.so' --db '$T/py.db' > '$T/py.out' 2>&1 && grep -q 'refused as expected' '$T/py.out'"
    check example_python_pairs test "$("$P" pairs --db "$T/py.db" --json | wc -l)" = 1 ;;
esac
check example_chat_backend sh -c "'$BUILD/examples/chat_backend' --db '$T/cb.db' --users 3 --threads 2 > /dev/null && test \$('$P' stats --db '$T/cb.db' --json | /usr/bin/python3 -c 'import json,sys; print(sum(v[\"count\"] for v in json.load(sys.stdin)[\"pairs_by_signal\"].values()))') -gt 0"

# ---- install: headers, libraries, CLI and a pkg-config file an application builds against ---------
if [ "$BUILD" != build ]; then
  # an instrumented build (make asan) installs libraries an uninstrumented app cannot link
  echo "SKIP install_layout: only for the plain build (BUILD=build), not $BUILD"
  echo "SKIP install_pkg_config_builds_an_app: only for the plain build (BUILD=build), not $BUILD"
else
  make -s install PREFIX=/opt/prefcap DESTDIR="$T/root" > /dev/null 2>&1
  check install_layout test -f "$T/root/opt/prefcap/include/prefcap.h" -a -f "$T/root/opt/prefcap/lib/libprefcap.a" -a -x "$T/root/opt/prefcap/bin/prefcap" -a -f "$T/root/opt/prefcap/lib/pkgconfig/prefcap.pc"
  cat > "$T/app.c" <<'C'
#include <prefcap.h>
#include <stdio.h>
int main(void) { printf("%s %s\n", prefcap_version(), prefcap_strerror(PREFCAP_EFULL)); return 0; }
C
  lib="$T/root/opt/prefcap/lib"
  check install_pkg_config_builds_an_app sh -c "cc '$T/app.c' -o '$T/app' \$(PKG_CONFIG_PATH='$lib/pkgconfig' PKG_CONFIG_SYSROOT_DIR='$T/root' pkg-config --cflags --libs prefcap) && LD_LIBRARY_PATH='$lib' '$T/app' | grep -q 'disk full'"
fi

echo "# cli: $fails failure(s)"
[ $fails -eq 0 ]
