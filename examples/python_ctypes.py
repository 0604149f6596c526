#!/usr/bin/env python3
"""examples/python_ctypes.py: prefcap from Python through examples/prefcap.py, the small module over
libprefcap.so's C ABI (ctypes, nothing else). Copy both from here.

Two doors exist from any language: the typed C calls (prefcap_log_generation with a struct), and
prefcap_log_json, which takes the same JSON events `prefcap ingest` reads (docs/events.md). The module
uses the JSON door: the simplest to bind, and it depends on no C struct layout.

usage: python3 examples/python_ctypes.py [--lib build/libprefcap.so] [--db /tmp/py.db]
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import prefcap  # noqa: E402  (examples/prefcap.py)

ap = argparse.ArgumentParser()
ap.add_argument("--lib", default=None, help="libprefcap.so (default: $PREFCAP_LIB, build/, or installed)")
ap.add_argument("--db", default="prefcap-python.db")
args = ap.parse_args()

try:
    pc = prefcap.open(args.db, durability=prefcap.SYNC, lib=args.lib)
except prefcap.PrefcapError as e:
    sys.exit(f"cannot open {args.db}: {e}")

with pc:
    question = [{"role": "user", "content": "Capital of Australia?"}]
    first = pc.log_generation(messages=question, completion="Sydney is the capital.", model="acme-chat",
                              user_id="py-user")
    pc.log_feedback("regenerate", first)
    second = pc.log_generation(messages=question, completion="Canberra. [Source: australia.gov.au]",
                               model="acme-chat", user_id="py-user", regenerates=first)
    pc.log_feedback("copy", second)
    try:
        pc.log_feedback("rating", second, rating=5)
    except prefcap.PrefcapError as e:
        print("refused as expected:", e)
print(f"logged {first} (regenerated) and {second} (copied) into {args.db}")
