#!/usr/bin/env bash
# tests/sdk/test_fleet.sh: events across hosts (docs/fleet.md), end to end with the real CLI. One
# simulated traffic stream is split across three stores at random per event; each exports events
# (one store twice, with more traffic between; one export killed with SIGKILL and run again); a fourth
# store ingests every file, some twice, in shuffled order. Its pairs and labels must equal a single
# store fed the whole stream: count, texts, weights. Then erasure across hosts: forget on one host, its
# events export, the central ingest: none of the user's bytes in the central file or its WAL. And bad
# input: a newer events schema and a bad line are reported by file and line, nothing stored is lost.
set -u
BUILD=${BUILD:-build}
P="$PWD/$BUILD/prefcap"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
check() { local name=$1; shift; if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi; }
py() { /usr/bin/python3 -c "$@"; }

# ---- the stream: sessions with regenerates, edits, copies, ratings, choices, across users ---------
py '
import json, random, sys
r = random.Random(17)
out = open(sys.argv[1], "w")
t = 1764000000000
for s in range(300):
    user = "user-%d" % r.randrange(40); sess = "sess-%d" % s
    prompt = "prompt %d about %s" % (s, r.choice(["trains", "soup", "taxes", "cats"]))
    prev = None
    for k in range(r.randrange(1, 4)):
        gid = "g-%d-%d" % (s, k); t += r.randrange(1, 5000)
        g = {"type": "generation", "id": gid, "prompt": prompt, "completion": "answer %d.%d %s" % (s, k, r.random()),
             "user_id": user, "session_id": sess, "model": "m", "model_version": r.choice(["v1", "v2"]), "ts": t}
        if prev: g["regenerates"] = prev
        out.write(json.dumps(g) + "\n")
        for kind in ("edit", "copy", "rating", "accept"):
            if r.random() < 0.3:
                t += 1; e = {"type": kind, "id": gid, "ts": t, "event_id": "e-%s-%s" % (gid, kind)}
                if kind == "edit": e["text"] = "edited %d.%d %s" % (s, k, r.random())
                if kind == "rating": e["value"] = r.choice([1, -1])
                out.write(json.dumps(e) + "\n")
        if prev and r.random() < 0.3:
            t += 1; out.write(json.dumps({"type": "choice", "chosen": gid, "rejected": prev, "ts": t, "event_id": "c-" + gid}) + "\n")
        prev = gid
' "$T/stream.jsonl"
# split at random per event: a (first half and second half), b, c
py '
import random, sys
r = random.Random(5)
lines = open(sys.argv[1]).readlines()
half = len(lines) // 2
files = {k: open(sys.argv[2] + "/" + k + ".jsonl", "w") for k in ("a1", "a2", "b", "c")}
for i, l in enumerate(lines):
    h = r.choice("abc")
    files[("a1" if i < half else "a2") if h == "a" else h].write(l)
' "$T/stream.jsonl" "$T"

"$P" ingest --db "$T/single.db" "$T/stream.jsonl" 2>/dev/null
"$P" ingest --db "$T/a.db" "$T/a1.jsonl" 2>/dev/null
"$P" export --db "$T/a.db" --format events --since-last fleet --out "$T/a-1.events" --quiet
"$P" ingest --db "$T/a.db" "$T/a2.jsonl" 2>/dev/null
"$P" export --db "$T/a.db" --format events --since-last fleet --out "$T/a-2.events" --quiet
"$P" ingest --db "$T/b.db" "$T/b.jsonl" 2>/dev/null
"$P" export --db "$T/b.db" --format events --since-last fleet --out "$T/b.events" --quiet
# c's export killed mid-way (as soon as its range is fixed, or later), then run again
"$P" ingest --db "$T/c.db" "$T/c.jsonl" 2>/dev/null
# killed at growing delays until one kill lands after the range is fixed and before the watermark moved
pending=0
for d in $(seq 0.02 0.004 0.3); do
  "$P" export --db "$T/c.db" --format events --since-last fleet --out "$T/c.events" --quiet & pid=$!
  sleep $d; kill -9 $pid 2>/dev/null; wait $pid 2>/dev/null
  if [ -n "$(sqlite3 "$T/c.db" "SELECT value FROM meta WHERE key = 'events.pending.fleet'" 2>/dev/null)" ]; then pending=1; break; fi
  if [ -n "$(sqlite3 "$T/c.db" "SELECT value FROM meta WHERE key = 'events.watermark.fleet'" 2>/dev/null)" ]; then break; fi
done
echo "# c's export killed with its range pending: $pending (after ${d}s)"
# the killed run's temporary file (export.c's: random name, O_EXCL|O_NOFOLLOW, recorded in the store
# before it exists) is found and removed by forget, as the pair exports' are (forget runs on a copy of
# the store: its tombstone would be new events for c's rerun below)
# (a kill after the files were renamed, before the watermark moved, leaves none: then nothing to check)
left_temps=$(ls "$T" | grep -E '^c\.events\.(manifest\.json\.)?tmp\.' || true)
if [ $pending = 1 ] && [ -n "$left_temps" ]; then
  temps_ok() {
    for f in $left_temps; do
      test "$(sqlite3 "$T/c.db" "SELECT count(*) FROM meta WHERE key = 'export.tmp:' || '$(realpath "$T")/$f'")" = 1 || { echo "  not recorded: $f"; return 1; }
    done
    sqlite3 "$T/c.db" ".backup '$T/c-copy.db'" && "$P" forget --db "$T/c-copy.db" --user nobody-at-all >/dev/null 2>&1 &&
      ! ls "$T" | grep -qE '^c\.events\.(manifest\.json\.)?tmp\.'; }
  check "a killed events export's temporary files are recorded in the store and forget removes them" temps_ok
else echo "# the kill left no temporary file to check (it landed after the renames)"; fi
"$P" export --db "$T/c.db" --format events --since-last fleet --out "$T/c.events" --quiet
"$P" export --db "$T/c.db" --format events --since-last fleet --out "$T/c-again.events" --quiet   # nothing new
check "a rerun after the kill leaves nothing pending and nothing new" test ! -e "$T/c-again.events"
check "no temporary file of the killed run is left" bash -c "! ls '$T' | grep -q 'tmp'"
check "a manifest names the store's UUID and the range" py '
import json, re, sys
m = json.load(open(sys.argv[1]))
assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", m["store_id"]), m
assert m["format"] == "events" and m["range"]["generations"][0] == 0
' "$T/c.events.manifest.json"
check "every event of the stream is in exactly one host export" py '
import json, sys
ids = []
for f in sys.argv[2:]:
    for l in open(f):
        o = json.loads(l)
        if o["type"] == "prefcap_events": continue
        ids.append(o.get("event_id") if o["type"] != "generation" else o["id"])
want = [json.loads(l) for l in open(sys.argv[1])]
want = [o["id"] if o["type"] == "generation" else o["event_id"] for o in want]
assert sorted(ids) == sorted(want), (len(ids), len(want))
' "$T/stream.jsonl" "$T/a-1.events" "$T/a-2.events" "$T/b.events" "$T/c.events"

# central: every file, two of them twice, shuffled
for f in $(printf '%s\n' a-1 a-2 b c a-2 b | shuf --random-source=<(yes)); do
  "$P" ingest --db "$T/central.db" "$T/$f.events" 2>/dev/null || echo "  ingest of $f failed"
done
"$P" derive --db "$T/central.db" >/dev/null 2>&1; "$P" derive --db "$T/single.db" >/dev/null 2>&1
src_ok() {  # stats: events by source store, each file counted once however often it was ingested
  "$P" stats --db "$T/central.db" --json > "$T/stats.json" 2>/dev/null && /usr/bin/python3 -c '
import json, sys
s = json.load(open(sys.argv[1]))["events_by_source_store"]
want = {}
for f in sys.argv[2:]:
    h = json.loads(open(f).readline())
    want[h["store_id"]] = want.get(h["store_id"], 0) + sum(h["counts"].values())
assert s == want and len(s) == 3, (s, want)
' "$T/stats.json" "$T/a-1.events" "$T/a-2.events" "$T/b.events" "$T/c.events"
}
check "stats shows events by source store (three stores, each file once)" src_ok
dump() {  # pairs and labels by content, for comparison across stores
  sqlite3 "$1" "SELECT 'P', p.signal, printf('%.9f', p.weight), p.source, p.flags, r.prompt, coalesce(p.chosen_text, c.completion), r.completion
                FROM pairs p JOIN generations r ON r.id = p.rejected_id LEFT JOIN generations c ON c.id = p.chosen_id
                UNION ALL SELECT 'L', l.signal, printf('%.9f', l.weight), l.source, l.desirable, g.prompt, g.completion, ''
                FROM labels l JOIN generations g ON g.id = l.gen_id ORDER BY 1,2,3,4,5,6,7,8"
}
dump "$T/single.db" > "$T/single.dump"; dump "$T/central.db" > "$T/central.dump"
check "the central store has pairs and labels ($(grep -c '^P' "$T/single.dump") pairs, $(grep -c '^L' "$T/single.dump") labels in one store)" \
  test "$(grep -c '^P' "$T/single.dump")" -gt 50 -a "$(grep -c '^L' "$T/single.dump")" -gt 50
check "central pairs and labels equal one store fed the whole stream (count, texts, weights)" cmp -s "$T/single.dump" "$T/central.dump"
# the hosts alone could not pair across hosts: a planted check that the comparison can fail
dump "$T/b.db" > "$T/b.dump"
check "(a host alone differs: the comparison can fail)" bash -c "! cmp -s '$T/single.dump' '$T/b.dump'"

# ---- erasure across hosts -------------------------------------------------------------------------
U=user-7
mapfile -t ustr < <(sqlite3 "$T/central.db" "SELECT completion FROM generations WHERE user_id = '$U' LIMIT 5")
check "the user is in the central store before" test "${#ustr[@]}" -gt 0
"$P" forget --db "$T/a.db" --user "$U" >/dev/null 2>&1
"$P" export --db "$T/a.db" --format events --since-last fleet --out "$T/a-3.events" --quiet
check "the host's events export holds the erase line" grep -q '"type":"erase"' "$T/a-3.events"
"$P" ingest --db "$T/central.db" "$T/a-3.events" 2>/dev/null
left=0
for s in "${ustr[@]}" "$U\""; do
  grep -q -a -F -- "$s" "$T/central.db" && left=1
  test -e "$T/central.db-wal" && grep -q -a -F -- "$s" "$T/central.db-wal" && left=1
done
check "none of the user's bytes in the central file or its WAL" test $left = 0
# the user's events from b arriving later (b never forgot them) are refused centrally
"$P" ingest --db "$T/central.db" "$T/b.events" 2>/dev/null
check "their later events from another host are refused" test "$(sqlite3 "$T/central.db" "SELECT count(*) FROM generations WHERE user_id = '$U'")" = 0

# ---- bad input ------------------------------------------------------------------------------------
before=$(sqlite3 "$T/central.db" "SELECT count(*) FROM generations")
{ echo '{"type":"prefcap_events","events_schema":99,"store_id":"x"}'; echo '{"type":"generation","id":"new1","prompt":"p","completion":"c"}'; } > "$T/newer.events"
out=$("$P" ingest --db "$T/central.db" "$T/newer.events" 2>&1); rc=$?
newer_ok() { test "$rc" = 1 && grep -q 'newer.events:1:.*events schema 99' <<<"$out" && ! grep -q 'newer.events:2' <<<"$out" &&
  test "$(sqlite3 "$T/central.db" "SELECT count(*) FROM generations WHERE id = 'new1'")" = 0; }
check "a newer events schema is refused by file and line, nothing of it read" newer_ok
{ head -3 "$T/b.events"; echo '{"type":"generation",'; } > "$T/bad.events"
out=$("$P" ingest --db "$T/central.db" "$T/bad.events" 2>&1); rc=$?
badline_ok() { test "$rc" = 1 && grep -q 'bad.events:4:' <<<"$out"; }
check "a bad line is reported by file and line" badline_ok
check "nothing stored was lost" test "$(sqlite3 "$T/central.db" "SELECT count(*) FROM generations")" -ge "$before"

# erase lines are read as strictly as events (docs/events.md, "Refusals"): each bad one is reported by
# file and line and erases nothing; a tombstone may name the user by user_id, hashed as the host does
H=$(printf '%s' user-3 | sha256sum | cut -d' ' -f1)
tombs=$(sqlite3 "$T/central.db" "SELECT count(*) FROM tombstones")
gens=$(sqlite3 "$T/central.db" "SELECT count(*) FROM generations")
cat > "$T/bad-erase.events" <<EOF
{"type":"erase","user_hash":"$H","at":1764000000000,"colour":"red"}
{"type":"erase","user_hash":"$H"}
{"type":"erase","user_hash":7,"at":1764000000000}
{"type":"erase","user_hash":"$H","user_id":"user-3","at":1764000000000}
{"type":"erase","user_hash":"$H","at":1764000000000,"at":1}
{"type":"erase","user_hash":"$H","at":1764000000000} x
{"type":"erase","user_id":"user-3","at":"yesterday"}
{"type":"erase","user_hash":"$H","at":1764000000000,"generations":["g-1"]}
{"type":"prefcap_events","events_schema":1,"store_id":"s","colour":"red"}
EOF
out=$("$P" ingest --db "$T/central.db" "$T/bad-erase.events" 2>&1); rc=$?
bad_erase_ok() {
  test "$rc" = 1 || return 1
  local want=("1:.*unknown field 'colour'" "2:.*'at' is required" "3:.*'user_hash' must be" "4:.*not both" "5:.*'at' appears twice"
              "6:.*unexpected text after" "7:.*'at' must be milliseconds" "8:.*'generations' holds a non-hash" "9:.*unknown field 'colour' in an events header")
  for w in "${want[@]}"; do grep -q "bad-erase.events:$w" <<<"$out" || { echo "  missing: $w"; echo "$out" | sed 's/^/  | /'; return 1; }; done
  test "$(sqlite3 "$T/central.db" "SELECT count(*) FROM tombstones")" = "$tombs" &&
    test "$(sqlite3 "$T/central.db" "SELECT count(*) FROM generations")" = "$gens"
}
check "bad erase lines are refused by file and line (unknown, missing, mistyped, twice, trailing), nothing erased" bad_erase_ok
before3=$(sqlite3 "$T/central.db" "SELECT count(*) FROM generations WHERE user_id = 'user-3'")
echo '{"type":"erase","user_id":"user-3","at":1764000000000}' > "$T/erase-id.events"
"$P" ingest --db "$T/central.db" "$T/erase-id.events" 2>/dev/null
erase_id_ok() { test "$before3" -gt 0 && test "$(sqlite3 "$T/central.db" "SELECT count(*) FROM generations WHERE user_id = 'user-3'")" = 0 &&
  test "$(sqlite3 "$T/central.db" "SELECT count(*) FROM tombstones WHERE user_hash = '$H'")" = 1 &&
  ! grep -q -a -F 'user-3"' "$T/central.db"; }
check "an erase line naming user_id erases that user (tombstone by the same hash as a host's)" erase_id_ok
exit $((fails > 0))
