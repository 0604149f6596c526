#!/usr/bin/env bash
# tests/sdk/test_abi.sh: the shared library's ABI. A program built against 0.1's header (frozen in
# tests/sdk/abi/prefcap-0.1.h, whose structs have no size) runs against today's libprefcap.so and gets
# 0.1's behaviour from the PREFCAP_0.1 symbol versions (sdk/prefcap.map, sdk/compat/compat01.c); a
# program built against today's header checks the growable structs and the error channel
# (tests/sdk/abi/client0{1,2}.c say what each checks). Also: the library links libcrypto, and nothing
# internal is exported, from the .so or from the static archive.
set -u
BUILD=${BUILD:-build}
SO="$PWD/$BUILD/libprefcap.so"
A="$PWD/$BUILD/tests/abi"
T=$(mktemp -d); trap 'rm -rf "$T"' EXIT
fails=0
check() {  # check NAME CONDITION-COMMAND...
  local name=$1; shift
  if "$@"; then echo "PASS $name"; else echo "FAIL $name"; fails=$((fails + 1)); fi
}
# the run-time directory: today's library under the soname the clients ask for
ln -s "$SO" "$T/libprefcap.so.0"

check so_links_libcrypto bash -c "readelf -d '$SO' | grep -q 'NEEDED.*libcrypto'"
check so_has_0.1_entry_points bash -c "readelf --dyn-syms -W '$SO' | grep -q ' prefcap_log_generation@PREFCAP_0.1\$'"
check so_default_is_0.2 bash -c "readelf --dyn-syms -W '$SO' | grep -q ' prefcap_log_generation@@PREFCAP_0.2\$'"
check so_exports_only_prefcap_names bash -c "! readelf --dyn-syms -W '$SO' | awk '\$5 == \"GLOBAL\" && \$7 != \"UND\" {print \$8}' | grep -v '^prefcap_[a-z]' | grep -v '^PREFCAP_[0-9.]*$' | grep -q ."
check client01_refs_unversioned_like_0.1 bash -c "! readelf -V '$A/client01' | grep -q PREFCAP_"

LD_LIBRARY_PATH="$T" "$A/client01" "$T/s1.db" "$T/out1.jsonl" > "$T/c1.out" 2>&1; rc=$?
cat "$T/c1.out" >&2
check client01_built_against_0.1_runs_on_today test $rc -eq 0
check client01_saw_today_s_library grep -q "running with libprefcap $(sed -n 's/^#define PREFCAP_VERSION "\(.*\)"/\1/p' include/prefcap.h)" "$T/c1.out"

echo "plain text, not a database, long enough for SQLite to read a header from it" > "$T/notes.txt"
LD_LIBRARY_PATH="$T" "$A/client02" "$T/s2.db" "$T/notes.txt" > "$T/c2.out" 2>&1; rc=$?
cat "$T/c2.out" >&2
check client02_today_s_header test $rc -eq 0
# The static archive: only prefcap_* (public) and prefcap__* (internal) names are defined, so an
# application's own pc_read_file neither clashes with common/'s nor is called by the library.
AR="$PWD/$BUILD/libprefcap.a"
check archive_defines_only_prefcap_names bash -c "! nm -g --defined-only '$AR' | awk 'NF == 3 {print \$3}' | grep -v '^prefcap_' | grep -q ."
"$A/own_pc" "$T/own.db" "$T/own.jsonl" >&2; rc=$?
check app_with_own_pc_functions_links_and_runs test $rc -eq 0
check library_used_its_own_escaper /usr/bin/python3 -c "
import json, sys
gens = [r for r in map(json.loads, open(sys.argv[1])) if r.get('type') == 'generation']
assert [g['prompt'] for g in gens] == ['Say \"hi\"\n\tin French.'], gens" "$T/own.jsonl"
echo "-- test_abi.sh: $fails failed" >&2
[ $fails -eq 0 ]
