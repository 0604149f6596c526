#!/usr/bin/python3
"""tests/sdk/http_server.py: a loopback HTTP server with scripted misbehaviour, for the upload tests.

Binds 127.0.0.1 on a free port, prints "PORT <n>" on stdout, and serves until --lifetime seconds have
passed (default 120) or GET /_quit. Stdlib only. The behaviour of a PUT is chosen by its path:

  /ok/...                    200 after reading the body
  /fail/<status>/<n>/...     answer <status> to the first <n> PUTs of this path, then 200
  /status/<code>/...         always answer <code> (with an S3-style XML error body)
  /retry-after/<n>/<s>/...   429 with "Retry-After: <s>" for the first <n> PUTs, then 200
  /retry-date/<n>/<s>/...    503 with Retry-After as an HTTP date <s> seconds ahead, then 200
  /stall/...                 read the headers, then send nothing (holds the connection 8 s)
  /drop/<n>/...              read part of the body and close the socket, <n> times, then 200
  /hostile/...               400 with an error body full of terminal escapes, a bell and a forged line
  /sigv4/...                 200 only if the Authorization header verifies (SigV4 recomputed here,
                             secret from --secret) and x-amz-content-sha256 matches the body; else 403
Every PUT also checks Content-MD5 when present (400 BadDigest on mismatch). GET /_log returns a JSON
list of every request: method, path, headers, body length and SHA-256, status, time (monotonic s),
and the SigV4 verdict.
"""
import argparse, base64, email.utils, hashlib, hmac, json, os, socket, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG, COUNTS, LOCK = [], {}, threading.Lock()
SECRET = None


def sigv4_check(method, raw_path, headers, body_sha):
    """Recomputes the SigV4 signature the way S3 does; returns "ok" or what is wrong."""
    auth = headers.get("Authorization", "")
    if not auth.startswith("AWS4-HMAC-SHA256 "):
        return "no AWS4-HMAC-SHA256 Authorization"
    parts = dict(p.strip().split("=", 1) for p in auth[len("AWS4-HMAC-SHA256 "):].split(","))
    access, date8, region, service, term = parts["Credential"].split("/")
    signed = parts["SignedHeaders"].split(";")
    path, _, query = raw_path.partition("?")
    curi = urllib.parse.quote(urllib.parse.unquote(path), safe="/-_.~")
    q = []
    for kv in filter(None, query.split("&")):
        k, _, v = kv.partition("=")
        q.append((urllib.parse.quote(urllib.parse.unquote(k), safe="-_.~"),
                  urllib.parse.quote(urllib.parse.unquote(v), safe="-_.~")))
    cquery = "&".join(f"{k}={v}" for k, v in sorted(q))
    chead = "".join(f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed)
    payload = headers.get("x-amz-content-sha256", "")
    if payload != "UNSIGNED-PAYLOAD" and payload != body_sha:
        return "x-amz-content-sha256 does not match the body"
    for need in ("host", "x-amz-date", "x-amz-content-sha256"):
        if need not in signed:
            return f"{need} is not signed"
    creq = f"{method}\n{curi}\n{cquery}\n{chead}\n{';'.join(signed)}\n{payload}"
    amz_date = headers.get("x-amz-date", "")
    scope = f"{date8}/{region}/{service}/aws4_request"
    sts = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(creq.encode()).hexdigest()}"
    k = ("AWS4" + SECRET).encode()
    for m in (date8, region, service, "aws4_request"):
        k = hmac.new(k, m.encode(), hashlib.sha256).digest()
    want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, parts["Signature"]):
        return "signature mismatch; canonical request was:\n" + creq
    if abs(time.mktime(time.strptime(amz_date, "%Y%m%dT%H%M%SZ")) - time.mktime(time.gmtime())) > 900:
        return "x-amz-date more than 15 minutes off"
    return "ok"


class H(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def reply(self, status, body=b"", headers=()):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Connection", "close")
        self.end_headers()
        try:
            self.wfile.write(body)
        except OSError:   # the client gave up (cancelled, timed out): nothing to answer
            pass
        self.close_connection = True

    def do_GET(self):
        if self.path == "/_log":
            with LOCK:
                body = json.dumps(LOG).encode()
            self.reply(200, body, [("Content-Type", "application/json")])
        elif self.path == "/_quit":
            self.reply(200)
            threading.Thread(target=self.server.shutdown).start()
        else:
            self.reply(404)

    def do_PUT(self):
        t0 = time.monotonic()
        seg = self.path.split("?")[0].strip("/").split("/")
        key = self.path.split("?")[0]
        with LOCK:
            COUNTS[key] = COUNTS.get(key, 0) + 1
            nth = COUNTS[key]
        rec = {"method": "PUT", "path": self.path, "t": t0, "n": nth,
               "headers": {k.lower(): v for k, v in self.headers.items()}}
        length = int(self.headers.get("Content-Length", "0"))
        if seg[0] == "stall":
            rec["status"] = 0
            with LOCK:
                LOG.append(rec)
            time.sleep(8)
            self.close_connection = True
            return
        if seg[0] == "drop" and nth <= int(seg[1]):
            self.rfile.read(min(length, max(1, length // 2)))
            rec["status"] = -1
            with LOCK:
                LOG.append(rec)
            self.connection.shutdown(socket.SHUT_RDWR)
            self.close_connection = True
            return
        body = self.rfile.read(length)
        sha = hashlib.sha256(body).hexdigest()
        rec.update(length=len(body), sha256=sha)
        status, extra, err = 200, [], None
        md5 = self.headers.get("Content-MD5")
        if md5 is not None and md5 != base64.b64encode(hashlib.md5(body).digest()).decode():
            status, err = 400, ("BadDigest", "The Content-MD5 you specified did not match what we received.")
        elif seg[0] == "fail" and nth <= int(seg[2]):
            status = int(seg[1])
        elif seg[0] == "hostile":
            status, err = 400, ("Bad\x1b]0;pwned\x07Request", "\x1b[31mred\x1b[0m \x07bell\nprefcap upload: FORGED LINE\r")
        elif seg[0] == "status":
            status = int(seg[1])
            err = ("AccessDenied", "Access Denied") if status == 403 else ("Error", f"status {status}")
        elif seg[0] == "retry-after" and nth <= int(seg[1]):
            status, extra = 429, [("Retry-After", seg[2])]
        elif seg[0] == "retry-date" and nth <= int(seg[1]):
            status = 503
            extra = [("Retry-After", email.utils.formatdate(time.time() + int(seg[2]), usegmt=True))]
        elif seg[0] == "sigv4":
            verdict = sigv4_check("PUT", self.path, {k: v for k, v in self.headers.items()} | {k.lower(): v for k, v in self.headers.items()}, sha)
            rec["sigv4"] = verdict
            if verdict != "ok":
                status, err = 403, ("SignatureDoesNotMatch", verdict.split("\n")[0])
        rec["status"] = status
        with LOCK:
            LOG.append(rec)
        out = b""
        if err:
            out = (f'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>{err[0]}</Code>'
                   f"<Message>{err[1]}</Message></Error>").encode()
        self.reply(status, out, extra + ([("ETag", '"' + hashlib.md5(body).hexdigest() + '"')] if status == 200 else []))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--lifetime", type=float, default=120)
    ap.add_argument("--secret", default="")
    a = ap.parse_args()
    global SECRET
    SECRET = a.secret
    srv = ThreadingHTTPServer(("127.0.0.1", 0), H)
    srv.daemon_threads = True
    t = threading.Timer(a.lifetime, lambda: os._exit(0))   # never outlive a crashed test
    t.daemon = True
    t.start()
    print("PORT", srv.server_address[1], flush=True)
    srv.serve_forever()


if __name__ == "__main__":
    main()
