#!/usr/bin/python3
"""tests/sdk/test_sigv4_verify.py: the SigV4 verifier of the upload tests (sigv4_verify.py) against
AWS's published vectors (sigv4_vectors/: the generic Signature Version 4 test suite and the S3 API
reference's worked examples; README.md there says where they come from). For each vector the
canonical request, the string to sign and the Authorization header must equal the published ones
byte for byte (the S3 examples write "," where the suite writes ", " between the Authorization's parts:
compared with the spaces after commas removed). Then verify() must accept each request as published
and refuse it with one byte of the signature, the body or a signed header changed, so the loopback
server's check can fail. Prints PASS/FAIL lines for tests/run.sh."""
import hashlib
import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sigv4_verify as v  # noqa: E402

SETS = [  # (folder, access key, secret, service)
    ("aws4_testsuite", "AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY", "service"),
    ("s3", "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", "s3"),
]
fails = 0


def check(name, ok, detail=""):
    global fails
    print(("PASS " if ok else "FAIL ") + name)
    if not ok:
        fails += 1
        if detail:
            print("  " + detail.replace("\n", "\n  "), file=sys.stderr)


def parse_req(text):
    """A vector's .req: request line, "Name:value" lines (a line starting with white space continues
    the header above as another value), a blank line, the body."""
    head, _, body = text.partition("\n\n")
    lines = head.split("\n")
    method, rest = lines[0].split(" ", 1)
    target = rest.rsplit(" ", 1)[0]
    headers = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t") and headers:
            headers.append((headers[-1][0], line))
        else:
            name, _, value = line.partition(":")
            headers.append((name, value))
    return method, target, headers, body


def read(path):
    with open(path, encoding="utf-8", newline="") as f:
        return f.read()


def nospace(a):
    return a.replace(", ", ",")


total = 0
for folder, access, secret, service in SETS:
    root = os.path.join(HERE, "sigv4_vectors", folder)
    names = [n for n in read(os.path.join(root, "INDEX")).split("\n") if n]
    for name in names:
        total += 1
        base = os.path.join(root, name, os.path.basename(name))
        method, target, headers, body = parse_req(read(base + ".req"))
        hm = v.header_map(headers)
        payload = hm.get("x-amz-content-sha256") or hashlib.sha256(body.encode()).hexdigest()
        creq, sts, authz = v.sign(method, target, headers, payload, access, secret, "us-east-1", service)
        want_creq, want_sts, want_authz = read(base + ".creq"), read(base + ".sts"), read(base + ".authz").strip()
        tag = f"{folder}/{name}"
        check(f"creq {tag}", creq == want_creq, f"got\n{creq}\nwant\n{want_creq}")
        check(f"sts {tag}", sts == want_sts, f"got\n{sts}\nwant\n{want_sts}")
        check(f"authz {tag}", nospace(authz) == nospace(want_authz), f"got  {authz}\nwant {want_authz}")

        # verify(): the request as published passes (its dates are old: no clock-skew check here);
        # a changed signature, body or signed header fails. Only for vectors that sign what S3 needs.
        if service != "s3" or "x-amz-content-sha256" not in hm:
            continue
        sent = headers + [("Authorization", want_authz)]
        body_sha = hashlib.sha256(body.encode()).hexdigest()
        ok = v.verify(method, target, sent, body_sha, secret, max_skew_s=10**10)
        check(f"verify accepts {tag}", ok == "ok", ok)
        sig = want_authz[-1]
        bad_sig = headers + [("Authorization", want_authz[:-1] + ("0" if sig != "0" else "1"))]
        check(f"verify refuses a changed signature {tag}",
              v.verify(method, target, bad_sig, body_sha, secret, max_skew_s=10**10).startswith("signature mismatch"))
        check(f"verify refuses a changed body {tag}",
              v.verify(method, target, sent, hashlib.sha256(body.encode() + b"x").hexdigest(), secret,
                       max_skew_s=10**10) != "ok")
        changed = [(k, val + "x") if k.lower() == "host" else (k, val) for k, val in sent]
        check(f"verify refuses a changed Host {tag}",
              v.verify(method, target, changed, body_sha, secret, max_skew_s=10**10).startswith("signature mismatch"))
        check(f"verify refuses the wrong secret {tag}",
              v.verify(method, target, sent, body_sha, secret + "x", max_skew_s=10**10).startswith("signature mismatch"))

check("vectors found (35: 31 of the suite, 4 of S3)", total == 35, f"found {total}")
print(f"# sigv4 verifier: {total} vectors", file=sys.stderr)
sys.exit(1 if fails else 0)
