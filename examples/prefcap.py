"""examples/prefcap.py: prefcap from Python, as a small importable module over libprefcap.so's C ABI,
with nothing but the standard library (ctypes). Copy it into your project, or put examples/ on
sys.path:

    import prefcap
    with prefcap.open("/var/lib/app/prefcap.db") as pc:
        gid = pc.log_generation(prompt="Capital of Australia?", completion="Canberra.",
                                model="acme-chat", user_id="u1", session_id="s1")
        pc.log_feedback("copy", gid)
        pc.flush(5000)
        print(pc.stats()["pairs_by_signal"])

Events go through prefcap_log_json (the JSON events of docs/events.md), so this module depends on
no C struct layout: it keeps working when the library's structs grow. Like the C calls, a log call
without a time is stamped with the time of the call, so two identical answers served at different
moments stay two events. Every failure raises PrefcapError with the library's code and detail.

Thread safety is the library's: log_generation, log_feedback and log_json may be called from any
number of threads on one handle; open, flush, derive and close may not run at once on one handle.

The library is found at $PREFCAP_LIB, else build/libprefcap.so beside this file's folder (a source
tree), else wherever the dynamic loader finds libprefcap.so (make install).
"""
import ctypes
import ctypes.util
import json
import os
import threading
import time

__all__ = ["open", "Prefcap", "PrefcapError", "SYNC", "ASYNC", "FEEDBACK_KINDS"]

SYNC, ASYNC = 0, 1
ID_MAX = 128
FEEDBACK_KINDS = ("regenerate", "edit", "copy", "accept", "rating", "abandon", "choice")

_lib = None
_lib_lock = threading.Lock()


class PrefcapError(Exception):
    """A prefcap call failed: code is the PREFCAP_E* number, name its prefcap_strerror, detail the
    library's message (the field, the file, SQLite's own words)."""

    def __init__(self, code, name, detail):
        super().__init__(f"{name}: {detail}" if detail else name)
        self.code, self.name, self.detail = code, name, detail


def _find_library():
    env = os.environ.get("PREFCAP_LIB")
    if env:
        return env
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), os.pardir, "build", "libprefcap.so")
    if os.path.exists(here):
        return here
    return ctypes.util.find_library("prefcap") or "libprefcap.so"


def _load(path=None):
    """Loads libprefcap once (or the one at path) and declares the functions this module calls."""
    global _lib
    with _lib_lock:
        if _lib is not None and path is None:
            return _lib
        lib = ctypes.CDLL(path or _find_library())
        P, S, I = ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int
        sig = {
            "prefcap_options_new": ([], P), "prefcap_options_free": ([P], None),
            "prefcap_options_set_path": ([P, S], I), "prefcap_options_set_durability": ([P, I], I),
            "prefcap_options_set_redact": ([P, I], I),
            "prefcap_open": ([P, ctypes.POINTER(P)], I), "prefcap_close": ([P, I], I),
            "prefcap_log_json": ([P, S, ctypes.c_size_t, S], I), "prefcap_flush": ([P, I], I),
            "prefcap_derive": ([P, I], I), "prefcap_errmsg": ([P], S), "prefcap_strerror": ([I], S),
            "prefcap_stats_json": ([P, I, ctypes.POINTER(P)], I), "prefcap_free": ([P], None),
            "prefcap_version": ([], S),
        }
        for name, (args, res) in sig.items():
            fn = getattr(lib, name)
            fn.argtypes, fn.restype = args, res
        if path is None:
            _lib = lib
        return lib


def _now_ms():
    return time.time_ns() // 1_000_000


class Prefcap:
    """An open store. Use prefcap.open(); close with close() or a with-block."""

    def __init__(self, path, durability=ASYNC, redact=False, lib=None):
        self._lib = _load(lib)
        o = self._lib.prefcap_options_new()
        if not o:
            raise MemoryError("prefcap_options_new")
        try:
            self._check(self._lib.prefcap_options_set_path(o, os.fsencode(path)))
            self._check(self._lib.prefcap_options_set_durability(o, durability))
            self._check(self._lib.prefcap_options_set_redact(o, 1 if redact else 0))
            h = ctypes.c_void_p()
            rc = self._lib.prefcap_open(o, ctypes.byref(h))
        finally:
            self._lib.prefcap_options_free(o)
        self._check(rc)   # why an open failed: prefcap_errmsg(NULL), this thread's, read at once
        self._h = h
        self.path = path

    # ---- errors ----
    def _check(self, rc, handle=None):
        """Raises for a failed call: the detail is prefcap_errmsg(handle), or prefcap_errmsg(NULL) for a
        call without one (open, the options' setters), kept per thread like errno."""
        if rc:
            detail = self._lib.prefcap_errmsg(handle).decode("utf-8", "replace")
            raise PrefcapError(rc, self._lib.prefcap_strerror(rc).decode(), detail)
        return rc

    def _handle(self):
        if self._h is None:
            raise PrefcapError(10, "handle closing", "the store is closed")
        return self._h

    # ---- logging ----
    def log_json(self, event):
        """Logs one event given as a dict (or a JSON string) in the shape of docs/events.md; returns
        the generation's id for a generation (the one given, or the one made from the content)."""
        data = (event if isinstance(event, str) else json.dumps(event, ensure_ascii=False)).encode("utf-8")
        id_out = ctypes.create_string_buffer(ID_MAX + 1)
        h = self._handle()
        self._check(self._lib.prefcap_log_json(h, data, len(data), id_out), h)
        return id_out.value.decode() or None

    def log_generation(self, completion, prompt=None, messages=None, id=None, **fields):
        """Logs a generation: completion and either prompt (text) or messages ([{"role","content"}]);
        any other field of docs/events.md by name (model, model_version, user_id, session_id, system,
        params (a dict), regenerates, event_id, latency_ms, prompt_tokens, completion_tokens, ts in
        Unix ms). Returns its id."""
        ev = {"type": "generation", "completion": completion}
        if prompt is not None:
            ev["prompt"] = prompt
        if messages is not None:
            ev["messages"] = list(messages)
        if id is not None:
            ev["id"] = id
        ev.update({k: v for k, v in fields.items() if v is not None})
        ev.setdefault("ts", _now_ms())
        return self.log_json(ev)

    def log_feedback(self, kind, id=None, text=None, rating=None, rejected_id=None, source=None, **fields):
        """Logs feedback on generation id: kind is one of FEEDBACK_KINDS; edit takes text, rating
        takes rating (+1 or -1), choice takes id (the chosen one) and rejected_id. source is "human"
        (default) or "ai:<judge model>"."""
        if kind not in FEEDBACK_KINDS:
            raise PrefcapError(1, "invalid argument", f"unknown feedback kind {kind!r}; one of {', '.join(FEEDBACK_KINDS)}")
        ev = {"type": kind}
        if kind == "choice":
            ev.update(chosen=id, rejected=rejected_id)
        else:
            ev["id"] = id
        if text is not None:
            ev["text"] = text
        if rating is not None:
            ev["value"] = rating
        if source is not None:
            ev["source"] = source
        ev.update({k: v for k, v in fields.items() if v is not None})
        ev.setdefault("ts", _now_ms())
        self.log_json(ev)

    # ---- flush, derive, read, close ----
    def flush(self, timeout_ms=-1):
        """Waits until every event logged before the call is stored (async mode), at most timeout_ms
        (negative: no limit); raises PrefcapError (timed out) otherwise."""
        h = self._handle()
        self._check(self._lib.prefcap_flush(h, int(timeout_ms)), h)

    def derive(self, all=False):
        """Derives pairs and labels from what is stored (all: re-derive the whole history)."""
        h = self._handle()
        self._check(self._lib.prefcap_derive(h, 1 if all else 0), h)

    def stats(self, days=14):
        """The store's breakdowns as a dict (what `prefcap stats --json` prints)."""
        h = self._handle()
        out = ctypes.c_void_p()
        self._check(self._lib.prefcap_stats_json(h, int(days), ctypes.byref(out)), h)
        try:
            return json.loads(ctypes.string_at(out).decode("utf-8"))
        finally:
            self._lib.prefcap_free(out)

    def close(self, timeout_ms=-1):
        """Flushes (at most timeout_ms; negative: as long as it takes), derives and closes. Closing
        twice is harmless."""
        if self._h is None:
            return
        h, self._h = self._h, None
        rc = self._lib.prefcap_close(h, int(timeout_ms))
        if rc:
            raise PrefcapError(rc, self._lib.prefcap_strerror(rc).decode(), "events still queued at the deadline were dropped")

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()
        return False

    def __del__(self):
        if getattr(self, "_h", None) is not None:
            self._lib.prefcap_close(self._h, -1)
            self._h = None


def open(path="prefcap.db", durability=ASYNC, redact=False, lib=None):  # noqa: A001 (like io.open)
    """Opens (creating it 0600 if missing) the store at path. durability: prefcap.ASYNC (the default:
    a log call queues the event, about a microsecond) or prefcap.SYNC (it returns after the commit).
    redact: replace e-mails, phone and card numbers and keys before storing (docs/redaction.md).
    lib: the path of libprefcap.so, if not the one found as the module's docstring says."""
    return Prefcap(path, durability, redact, lib)


def version():
    """The library's version string."""
    return _load().prefcap_version().decode()
