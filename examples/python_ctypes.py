#!/usr/bin/env python3
"""examples/python_ctypes.py: prefcap from another language through its C ABI (libprefcap.so), with
nothing but Python's standard library. Copy from here.

Two doors exist from any language: the typed calls (prefcap_log_generation with a struct), and
prefcap_log_json, which takes the same JSON events `prefcap ingest` reads (docs/events.md): this
example uses the JSON door, the simplest to bind.

usage: python3 examples/python_ctypes.py [--lib build/libprefcap.so] [--db /tmp/py.db]
"""
import argparse
import ctypes
import json
import sys

ap = argparse.ArgumentParser()
ap.add_argument("--lib", default="build/libprefcap.so")
ap.add_argument("--db", default="prefcap-python.db")
args = ap.parse_args()

lib = ctypes.CDLL(args.lib)
lib.prefcap_options_new.restype = ctypes.c_void_p
lib.prefcap_options_set_path.argtypes = [ctypes.c_void_p, ctypes.c_char_p]
lib.prefcap_options_set_durability.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.prefcap_options_free.argtypes = [ctypes.c_void_p]
lib.prefcap_open.argtypes = [ctypes.c_void_p, ctypes.POINTER(ctypes.c_void_p)]
lib.prefcap_close.argtypes = [ctypes.c_void_p, ctypes.c_int]
lib.prefcap_log_json.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_size_t, ctypes.c_char_p]
lib.prefcap_errmsg.argtypes = [ctypes.c_void_p]
lib.prefcap_errmsg.restype = ctypes.c_char_p
lib.prefcap_strerror.restype = ctypes.c_char_p
PREFCAP_SYNC, PREFCAP_ASYNC = 0, 1
ID_MAX = 128

opts = lib.prefcap_options_new()
lib.prefcap_options_set_path(opts, args.db.encode())
lib.prefcap_options_set_durability(opts, PREFCAP_SYNC)
handle = ctypes.c_void_p()
rc = lib.prefcap_open(opts, ctypes.byref(handle))
lib.prefcap_options_free(opts)
if rc:
    sys.exit(f"cannot open {args.db}: {lib.prefcap_strerror(rc).decode()}: {lib.prefcap_errmsg(None).decode()}")


def log(event):
    """Logs one event; returns the generation id (the caller's, or the one prefcap made)."""
    data = json.dumps(event, ensure_ascii=False).encode()
    id_out = ctypes.create_string_buffer(ID_MAX + 1)
    rc = lib.prefcap_log_json(handle, data, len(data), id_out)
    if rc:
        raise RuntimeError(f"{lib.prefcap_strerror(rc).decode()}: {lib.prefcap_errmsg(handle).decode()}")
    return id_out.value.decode()


first = log({"type": "generation", "messages": [{"role": "user", "content": "Capital of Australia?"}],
             "completion": "Sydney is the capital.", "model": "acme-chat", "user_id": "py-user"})
log({"type": "regenerate", "id": first})
second = log({"type": "generation", "messages": [{"role": "user", "content": "Capital of Australia?"}],
              "completion": "Canberra. [Source: australia.gov.au]", "model": "acme-chat",
              "user_id": "py-user", "regenerates": first})
log({"type": "copy", "id": second})
try:
    log({"type": "rating", "id": second, "value": 5})
except RuntimeError as e:
    print("refused as expected:", e)
lib.prefcap_close(handle, -1)
print(f"logged {first} (regenerated) and {second} (copied) into {args.db}")
