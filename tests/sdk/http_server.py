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
  /sigv4/...                 200 only if the Authorization header verifies (SigV4 recomputed by
                             sigv4_verify.py, secret from --secret) and x-amz-content-sha256 matches
                             the body; else 403
Every PUT also checks Content-MD5 when present (400 BadDigest on mismatch). GET /_log returns a JSON
list of every request: method, path, headers, body length and SHA-256, status, time (monotonic s),
and the SigV4 verdict.
"""
import argparse, base64, email.utils, hashlib, json, os, socket, sys, threading, time
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import sigv4_verify   # the verifier, checked against AWS's vectors by test_sigv4_verify.py
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

LOG, COUNTS, LOCK = [], {}, threading.Lock()
SECRET = None


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
            verdict = sigv4_verify.verify("PUT", self.path, self.headers.items(), sha, SECRET)
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
