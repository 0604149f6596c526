"""tests/sdk/sigv4_verify.py: AWS Signature Version 4 (header-based), written from AWS's documented
algorithm ("Create a canonical request", "Create a string to sign", "Calculate the signature" in the
AWS General Reference / IAM user guide, and the S3 API reference's "Signature calculations for the
Authorization header"), independently of the signer the SDK uses (libcurl's CURLOPT_AWS_SIGV4).

The upload tests' loopback server (http_server.py) verifies every signed PUT with verify(); AWS's own
test vectors (tests/sdk/sigv4_vectors/, run by test_sigv4_verify.py) check these functions first, so
a request the server accepts is one AWS's rules accept. Stdlib only.

Rules, as documented:
- canonical URI: S3 takes the path as sent, decodes it once and encodes it once (no dot-segment
  removal); other services remove "." and ".." segments and repeated slashes, then encode the path as
  given (a '%' becomes %25: AWS's double encoding). Encoding keeps RFC 3986's unreserved characters
  (A-Z a-z 0-9 - . _ ~) and '/'.
- canonical query: each name and value decoded and encoded (unreserved kept, '/' encoded), sorted by
  name then value, "name=value" joined with '&'.
- canonical headers: names lower-cased; values trimmed with inner runs of white space made one space;
  a header given more than once, or continued on following lines, is one line with the values joined by
  ','; sorted by name; each "name:value\\n".
- string to sign: "AWS4-HMAC-SHA256", the X-Amz-Date, the scope DATE/REGION/SERVICE/aws4_request, and
  the hex SHA-256 of the canonical request, one per line.
- signing key: HMAC-SHA256 chained from "AWS4" + secret over date, region, service, "aws4_request".
"""
import hashlib
import hmac
import time
import urllib.parse

ALGORITHM = "AWS4-HMAC-SHA256"
UNRESERVED = "-_.~"


def _enc(s, keep_slash):
    return urllib.parse.quote(s, safe=UNRESERVED + ("/" if keep_slash else ""))


def canonical_uri(path, s3):
    if not path.startswith("/"):
        path = "/" + path
    if s3:
        return _enc(urllib.parse.unquote(path), True)
    segs = []
    for s in path.split("/"):
        if s in ("", "."):
            continue
        if s == "..":
            if segs:
                segs.pop()
            continue
        segs.append(s)
    norm = "/" + "/".join(segs)
    if segs and (path.endswith("/") or path.endswith("/.") or path.endswith("/..")):
        norm += "/"
    return _enc(norm, True)


def canonical_query(query):
    pairs = []
    for kv in filter(None, (query or "").split("&")):
        k, _, v = kv.partition("=")
        pairs.append((_enc(urllib.parse.unquote(k), False), _enc(urllib.parse.unquote(v), False)))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def header_map(headers):
    """headers: (name, value) pairs in the order sent (a repeated name is kept). -> {lower name: value}"""
    out = {}
    for name, value in headers:
        v = " ".join(str(value).split())
        k = name.strip().lower()
        out[k] = out[k] + "," + v if k in out else v
    return out


def canonical_request(method, path, query, headers, signed, payload_hash, s3):
    hm = header_map(headers)
    chead = "".join(f"{h}:{hm.get(h, '')}\n" for h in signed)
    return "\n".join([method, canonical_uri(path, s3), canonical_query(query), chead, ";".join(signed), payload_hash])


def string_to_sign(amz_date, scope, creq):
    return "\n".join([ALGORITHM, amz_date, scope, hashlib.sha256(creq.encode()).hexdigest()])


def signature(secret, scope, sts):
    k = ("AWS4" + secret).encode()
    for part in scope.split("/"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    return hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()


def authorization(access, scope, signed, sig):
    return f"{ALGORITHM} Credential={access}/{scope}, SignedHeaders={';'.join(signed)}, Signature={sig}"


def sign(method, target, headers, payload_hash, access, secret, region, service):
    """Signs every header given. -> (canonical request, string to sign, Authorization value)"""
    path, _, query = target.partition("?")
    hm = header_map(headers)
    amz_date = hm["x-amz-date"]
    scope = f"{amz_date[:8]}/{region}/{service}/aws4_request"
    signed = sorted(hm)
    creq = canonical_request(method, path, query, headers, signed, payload_hash, service == "s3")
    sts = string_to_sign(amz_date, scope, creq)
    return creq, sts, authorization(access, scope, signed, signature(secret, scope, sts))


def verify(method, target, headers, body_sha256, secret, max_skew_s=900, now=None):
    """What an S3 server checks of a signed request. headers: (name, value) pairs as received.
    Returns "ok", or why the request is refused."""
    hm = header_map(headers)
    auth = hm.get("authorization", "")
    if not auth.startswith(ALGORITHM + " "):
        return "no AWS4-HMAC-SHA256 Authorization"
    try:
        parts = dict(p.strip().split("=", 1) for p in auth[len(ALGORITHM) + 1:].split(","))
        access, date8, region, service, term = parts["Credential"].split("/")
        signed = parts["SignedHeaders"].split(";")
        given = parts["Signature"]
    except (ValueError, KeyError):
        return "malformed Authorization: " + auth
    if term != "aws4_request":
        return "scope does not end in aws4_request"
    if signed != sorted(signed):
        return "SignedHeaders not sorted"
    for need in ("host", "x-amz-date", "x-amz-content-sha256"):
        if need not in signed:
            return f"{need} is not signed"
    amz_date = hm.get("x-amz-date", "")
    if amz_date[:8] != date8:
        return "the credential's date is not the X-Amz-Date's"
    payload = hm.get("x-amz-content-sha256", "")
    if payload != "UNSIGNED-PAYLOAD" and payload != body_sha256:
        return "x-amz-content-sha256 does not match the body"
    path, _, query = target.partition("?")
    creq = canonical_request(method, path, query, headers, signed, payload, service == "s3")
    scope = f"{date8}/{region}/{service}/aws4_request"
    want = signature(secret, scope, string_to_sign(amz_date, scope, creq))
    if not hmac.compare_digest(want, given):
        return "signature mismatch; canonical request was:\n" + creq
    try:
        t = time.mktime(time.strptime(amz_date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        return "malformed X-Amz-Date"
    if abs(t - time.mktime(time.gmtime(now))) > max_skew_s:
        return "x-amz-date more than 15 minutes off"
    return "ok"
