#!/usr/bin/python3
"""tests/sdk/test_python.py: examples/prefcap.py, the Python module over libprefcap.so, as an
application uses it: open (async and sync), log generations and feedback, flush, derive, stats,
close, a with-block, several threads at once, and its errors (a bad event, a store that is not one).

What the module stored is read back with Python's own sqlite3 module, a reader this project did not
write: the rows, their ids, text and times, and the pairs the library derived from them.
Prints PASS/FAIL/SKIP lines; exits non-zero on any failure.
"""
import os
import sqlite3
import sys
import tempfile
import threading
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), os.pardir, os.pardir))
BUILD = os.environ.get("BUILD", "build")
LIB = os.path.join(ROOT, BUILD, "libprefcap.so")
sys.path.insert(0, os.path.join(ROOT, "examples"))

fails = 0


def check(name, cond, detail=""):
    global fails
    if cond:
        print(f"PASS {name}")
    else:
        fails += 1
        print(f"FAIL {name}{': ' + str(detail) if detail else ''}")


def rows(db, sql, *args):
    c = sqlite3.connect(db)
    try:
        return c.execute(sql, args).fetchall()
    finally:
        c.close()


def main():
    if "asan" in BUILD:
        # an instrumented .so cannot be loaded into an uninstrumented interpreter
        print(f"SKIP python_module: {BUILD} is an AddressSanitizer build")
        return 0
    if not os.path.exists(LIB):
        print(f"FAIL python_module: {LIB} missing (make {LIB})")
        return 1
    os.environ["PREFCAP_LIB"] = LIB
    import prefcap

    tmp = tempfile.mkdtemp()
    db = os.path.join(tmp, "py.db")

    # ---- async (the default): log, flush, read back with sqlite3 -------------------------------------
    pc = prefcap.open(db)
    t0 = int(time.time() * 1000)
    g1 = pc.log_generation(messages=[{"role": "user", "content": "Capital of Australia?"}],
                           completion="Sydney.", model="acme", model_version="v1", user_id="u1",
                           session_id="s1", params={"temperature": 0.7})
    pc.log_feedback("regenerate", g1)
    g2 = pc.log_generation(prompt=None, messages=[{"role": "user", "content": "Capital of Australia?"}],
                           completion="Canberra. [Source: australia.gov.au]", model="acme", user_id="u1",
                           session_id="s1", regenerates=g1, id="my-id-2")
    pc.log_feedback("copy", g2)
    g3 = pc.log_generation(prompt="Say hi", completion="Hello there, how may I be of assistance today?", user_id="u2")
    pc.log_feedback("edit", g3, text="Hi!")
    pc.log_feedback("rating", g3, rating=-1)
    pc.flush(10000)
    check("generated_id_returned", g1.startswith("g-") and len(g1) == 34, g1)
    check("given_id_returned", g2 == "my-id-2", g2)
    got = rows(db, "SELECT id, user_id, session_id, model, model_version, completion, messages, ts FROM generations ORDER BY seq")
    check("flush_means_stored", [r[0] for r in got] == [g1, g2, g3], got)
    check("fields_stored", got[0][1:6] == ("u1", "s1", "acme", "v1", "Sydney.") and '"Capital of Australia?"' in got[0][6], got[0])
    check("time_of_the_call", all(t0 - 1000 <= r[7] <= int(time.time() * 1000) + 1000 for r in got), [r[7] for r in got])
    ev = rows(db, "SELECT type, gen_id, text, value FROM events ORDER BY seq")
    check("feedback_stored", ev == [("regenerate", g1, None, None), ("copy", g2, None, None), ("edit", g3, "Hi!", None),
                                    ("rating", g3, None, -1)], ev)
    pc.derive()
    pairs = rows(db, "SELECT signal, chosen_id, rejected_id, chosen_text FROM pairs ORDER BY id")
    check("pairs_derived", ("regenerate", g2, g1, None) in pairs and ("edit", None, g3, "Hi!") in pairs, pairs)
    st = pc.stats()
    check("stats_dict", st["events"]["generation"] == 3 and st["pairs_by_signal"]["edit"]["count"] == 1, st)

    # ---- errors: the library's code and detail -------------------------------------------------------
    try:
        pc.log_feedback("rating", g3, rating=5)
        check("bad_event_raises", False, "no exception")
    except prefcap.PrefcapError as e:
        check("bad_event_raises", e.code == 1 and "value" in e.detail, (e.code, e.detail))
    try:
        pc.log_feedback("teleport", g3)
        check("unknown_kind_raises", False, "no exception")
    except prefcap.PrefcapError as e:
        check("unknown_kind_raises", e.code == 1, e)
    pc.close()
    pc.close()   # harmless
    try:
        pc.log_feedback("copy", g3)
        check("closed_raises", False, "no exception")
    except prefcap.PrefcapError:
        check("closed_raises", True)

    noise = os.path.join(tmp, "noise.db")
    with open(noise, "wb") as f:
        f.write(os.urandom(8192))
    try:
        prefcap.open(noise)
        check("open_non_store_raises", False, "no exception")
    except prefcap.PrefcapError as e:
        check("open_non_store_raises", e.code == 11 and "not a database" in e.detail, (e.code, e.detail))

    # ---- sync mode, with-block, replay stores nothing twice ------------------------------------------
    db2 = os.path.join(tmp, "sync.db")
    with prefcap.open(db2, durability=prefcap.SYNC) as s:
        a = s.log_generation(prompt="p", completion="c", ts=1700000000000, event_id="e-1")
        check("sync_stored_at_return", rows(db2, "SELECT count(*) FROM generations") == [(1,)])
        b = s.log_generation(prompt="p", completion="c", ts=1700000000000, event_id="e-1")
        check("replay_same_id", a == b, (a, b))
        s.log_feedback("choice", a, rejected_id="other", source="ai:judge-1")
    check("replay_stored_once", rows(db2, "SELECT count(*) FROM generations") == [(1,)])
    check("choice_source", rows(db2, "SELECT type, gen_id, other_id, source FROM events") == [("choice", a, "other", "ai:judge-1")])

    # ---- several threads on one handle ---------------------------------------------------------------
    db3 = os.path.join(tmp, "threads.db")
    with prefcap.open(db3) as t:
        def work(k):
            for i in range(200):
                t.log_generation(prompt=f"t{k} q{i}", completion="a", id=f"t{k}-{i}")
        ths = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for th in ths:
            th.start()
        for th in ths:
            th.join()
        t.flush(10000)
        check("threads_all_stored", rows(db3, "SELECT count(*) FROM generations") == [(800,)])

    # ---- the example script built on the module ------------------------------------------------------
    import subprocess
    out = subprocess.run([sys.executable, os.path.join(ROOT, "examples", "python_ctypes.py"), "--lib", LIB,
                          "--db", os.path.join(tmp, "ex.db")], capture_output=True, text=True)
    check("example_script", out.returncode == 0 and "refused as expected" in out.stdout, out.stdout + out.stderr)

    print(f"# python: {fails} failure(s)")
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
