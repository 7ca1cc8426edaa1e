#!/usr/bin/env python3
"""A checking and fault-injecting HTTP proxy in front of the test S3 server.

s3rver checks the access key id but not the SigV4 signature itself, so this
proxy recomputes every request's signature from what arrived on the wire
(method, raw path, query, signed headers) with the known secret and answers
403 SignatureDoesNotMatch when it differs. It also injects faults, set at run
time with a request to the proxy itself:

  GET /__fault?mode=MODE[&count=N][&delay=SEC]
    none       forward everything (default)
    error500   answer N requests (default: all) with HTTP 500
    stall      hold N requests for SEC seconds before forwarding
    reset      close the connection of N requests without an answer
    slowdown   answer N requests with HTTP 503 and Retry-After: SEC
  Modes that rewrite upstream's answer (each applies to one kind of request;
  the others pass untouched and do not count):
    shift      object GET: serve the range 4 KiB away (after the one asked, or
               before it when that fits), with its own Content-Range: the
               right length, the wrong bytes
    norange    object GET: drop Content-Range from a 206
    noetag     object GET: drop the ETag header
    junk       object GET: after the body, the connection carries junk bytes;
               they are sent when the next request arrives on it, so that the
               client's idle-connection check cannot see them
    trickle    object GET: headers, then the body at 1 byte per second
    listloop   listing: IsTruncated=true and the same NextContinuationToken on
               every page (the token is not passed upstream)
    html200    listing: HTTP 200 with an HTML page
    error200   listing: HTTP 200 with an <Error> body
    hugelen    HEAD: Content-Length 2^63
    badtotal   object GET: the Content-Range total one byte more than the object
  &key=SUFFIX limits the fault to requests whose path ends in SUFFIX (one
  slow object among healthy ones).

  s3proxy.py LISTEN_PORT UPSTREAM_PORT [PORTFILE]
Credentials: S3_KEY / S3_SECRET (default S3RVER / S3RVER); with S3PROXY_STS=FILE
also the temporary keys credfake.py issued (its STATE), each with its
x-amz-security-token until it expires (403 ExpiredToken after): such a
request is checked here and passed upstream unsigned, and its key id is
appended to FILE.used.
"""
import hashlib
import hmac
import http.client
import http.server
import os
import re
import socket
import socketserver
import sys
import threading
import time
import urllib.parse

KEYS = {os.environ.get("S3_KEY", "S3RVER"): os.environ.get("S3_SECRET", "S3RVER")}
STS = os.environ.get("S3PROXY_STS")
UPSTREAM = ("127.0.0.1", int(sys.argv[2]))
fault = {"mode": "none", "count": -1, "delay": 0.0}
lock = threading.Lock()
stats = {"requests": 0, "bad_signatures": 0}


def enc(s):
    return urllib.parse.quote(s, safe="-_.~")


def canonical_query(raw):
    pairs = []
    for part in raw.split("&") if raw else []:
        k, _, v = part.partition("=")
        pairs.append((enc(urllib.parse.unquote(k)), enc(urllib.parse.unquote(v))))
    return "&".join(f"{k}={v}" for k, v in sorted(pairs))


def self_headers_lower(headers):
    return {k.lower() for k in headers.keys()}


def check_signature(method, raw_path, headers):
    auth = headers.get("Authorization")
    if not auth:
        return True  # anonymous
    try:
        algo, rest = auth.split(" ", 1)
        fields = dict(p.strip().split("=", 1) for p in rest.split(","))
        if "x-amz-security-token" in self_headers_lower(headers) and \
                "x-amz-security-token" not in fields["SignedHeaders"].split(";"):
            return False  # a token must be signed
        cred = fields["Credential"].split("/")
        signed = fields["SignedHeaders"].split(";")
        secret = KEYS.get(cred[0])
        if secret is None and STS and os.path.exists(STS):
            import json
            with open(STS) as f:
                rec = json.load(f).get(cred[0])
            if not rec or headers.get("x-amz-security-token") != rec["token"]:
                return False
            if time.time() >= rec["expires"]:
                return "expired"
            secret = rec["sk"]
        if algo != "AWS4-HMAC-SHA256" or secret is None:
            return False
        path, _, query = raw_path.partition("?")
        canon_headers = "".join(
            f"{h}:{' '.join(headers.get(h, '').split())}\n" for h in signed)
        creq = "\n".join([method, path, canonical_query(query), canon_headers,
                          fields["SignedHeaders"], headers.get("x-amz-content-sha256", "")])
        amz = headers.get("x-amz-date", "")
        scope = "/".join(cred[1:])
        sts = "\n".join([algo, amz, scope, hashlib.sha256(creq.encode()).hexdigest()])
        k = ("AWS4" + secret).encode()
        for part in cred[1:]:
            k = hmac.new(k, part.encode(), hashlib.sha256).digest()
        want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
        if not hmac.compare_digest(want, fields["Signature"]):
            return False
        if cred[0] not in KEYS:
            with open(STS + ".used", "a") as f:
                f.write(cred[0] + "\n")
            return "temporary"
        return True
    except (KeyError, ValueError, IndexError):
        return False


# which kind of request each rewriting mode applies to; the rest apply to all
MODE_KIND = {"shift": "object", "norange": "object", "noetag": "object", "junk": "object",
             "trickle": "object", "listloop": "list", "html200": "list", "error200": "list",
             "hugelen": "head", "badtotal": "object"}
JUNK = b"JUNK-AFTER-THE-BODY\r\n"
LOOP_TOKEN = "modelfs-loop-token"


def request_kind(method, raw_path):
    path, _, query = raw_path.partition("?")
    if method == "HEAD":
        return "head"
    if method != "GET":
        return "other"
    if "list-type=2" in query.split("&"):
        return "list"
    return "object" if "/" in path.strip("/") else "other"


def take_fault(kind, raw_path):
    with lock:
        if fault["mode"] == "none" or fault["count"] == 0:
            return "none", 0
        if MODE_KIND.get(fault["mode"], kind) != kind:
            return "none", 0
        if fault.get("key") and not raw_path.partition("?")[0].endswith(fault["key"]):
            return "none", 0
        if fault["count"] > 0:
            fault["count"] -= 1
        return fault["mode"], fault["delay"]


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_control(self):
        q = urllib.parse.parse_qs(urllib.parse.urlparse(self.path).query)
        with lock:
            if "mode" in q:
                fault["mode"] = q["mode"][0]
                fault["count"] = int(q.get("count", ["-1"])[0])
                fault["delay"] = float(q.get("delay", ["0"])[0])
                fault["key"] = q.get("key", [""])[0]
            body = (f"mode={fault['mode']} count={fault['count']} "
                    f"requests={stats['requests']} bad_signatures={stats['bad_signatures']}\n").encode()
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def send_answer(self, status, headers, body):
        self.send_response(status)
        for k, v in headers:
            self.send_header(k, v)
        self.end_headers()
        if body:
            self.wfile.write(body)

    def forward(self):
        if self.path.startswith("/__fault"):
            return self.do_control()
        if getattr(self, "poisoned", False):
            # the junk "after the previous body", late on the wire
            self.poisoned = False
            self.wfile.write(JUNK)
        with lock:
            stats["requests"] += 1
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else None
        verdict = check_signature(self.command, self.path, self.headers)
        if verdict == "expired":
            msg = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ExpiredToken</Code>'
                   b'<Message>The provided token has expired.</Message></Error>')
            self.send_answer(403, [("Content-Length", str(len(msg)))], msg)
            return
        self.temporary = verdict == "temporary"
        if not verdict:
            with lock:
                stats["bad_signatures"] += 1
            msg = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>SignatureDoesNotMatch'
                   b'</Code><Message>The request signature we calculated does not match the '
                   b'signature you provided.</Message></Error>')
            self.send_response(403)
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        mode, delay = take_fault(request_kind(self.command, self.path), self.path)
        if mode == "slowdown":
            msg = b"<Error><Code>SlowDown</Code><Message>injected</Message></Error>"
            self.send_answer(503, [("Content-Length", str(len(msg))),
                                   ("Retry-After", str(int(delay)))], msg)
            return
        if mode == "html200":
            msg = (b"<html><head><title>Sign in</title></head><body><p>Please sign in to "
                   b"continue.</p></body></html>")
            self.send_answer(200, [("Content-Type", "text/html"),
                                   ("Content-Length", str(len(msg)))], msg)
            return
        if mode == "error200":
            msg = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>InternalError'
                   b'</Code><Message>injected with status 200</Message></Error>')
            self.send_answer(200, [("Content-Type", "application/xml"),
                                   ("Content-Length", str(len(msg)))], msg)
            return
        if mode in ("shift", "norange", "noetag", "junk", "trickle", "listloop", "hugelen",
                    "badtotal"):
            return self.rewrite(mode, body)
        if mode == "error500":
            msg = b"<Error><Code>InternalError</Code><Message>injected</Message></Error>"
            self.send_response(500)
            self.send_header("Content-Length", str(len(msg)))
            self.end_headers()
            self.wfile.write(msg)
            return
        if mode == "reset":
            self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
            self.close_connection = True
            return
        if mode == "stall":
            time.sleep(delay)
        up = http.client.HTTPConnection(*UPSTREAM, timeout=120)
        hdrs = {k: v for k, v in self.headers.items()}
        if getattr(self, "temporary", False):
            # checked here; s3rver knows one key id (and checks no signature)
            hdrs = {k: v for k, v in hdrs.items() if k.lower() != "x-amz-security-token"}
            for k in hdrs:
                if k.lower() == "authorization":
                    hdrs[k] = re.sub(r"Credential=[^/]+/", "Credential=%s/" % next(iter(KEYS)), hdrs[k])
        up.request(self.command, self.path, body=body, headers=hdrs)
        resp = up.getresponse()
        self.send_response(resp.status)
        for k, v in resp.getheaders():
            if k.lower() not in ("connection", "keep-alive", "date", "server"):
                self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            while True:
                chunk = resp.read(1 << 20)
                if not chunk:
                    break
                self.wfile.write(chunk)
        up.close()

    def rewrite(self, mode, body):
        """Forward, then change the answer as @mode says (buffered)."""
        hdrs = {k: v for k, v in self.headers.items()}
        path = self.path
        if mode == "shift":
            m = re.fullmatch(r"bytes=(\d+)-(\d+)", hdrs.get("Range", ""))
            if m:
                a, b = int(m.group(1)), int(m.group(2))
                d = -4096 if a >= 4096 else 4096
                hdrs["Range"] = f"bytes={a + d}-{b + d}"
        if mode == "listloop":
            p, _, q = path.partition("?")
            q = "&".join(x for x in q.split("&") if not x.startswith("continuation-token="))
            path = p + "?" + q
        up = http.client.HTTPConnection(*UPSTREAM, timeout=120)
        up.request(self.command, path, body=body, headers=hdrs)
        resp = up.getresponse()
        data = resp.read() if self.command != "HEAD" else b""
        up.close()
        out = [(k, v) for k, v in resp.getheaders()
               if k.lower() not in ("connection", "keep-alive", "date", "server")]
        if mode == "norange":
            out = [(k, v) for k, v in out if k.lower() != "content-range"]
        if mode == "noetag":
            out = [(k, v) for k, v in out if k.lower() != "etag"]
        if mode == "badtotal":
            out = [(k, re.sub(r"/(\d+)$", lambda m: "/" + str(int(m.group(1)) + 1), v))
                   if k.lower() == "content-range" else (k, v) for k, v in out]
        if mode == "listloop" and resp.status == 200:
            text = data.decode()
            text = re.sub(r"<NextContinuationToken>.*?</NextContinuationToken>", "", text)
            text = re.sub(r"<IsTruncated>\w+</IsTruncated>",
                          "<IsTruncated>true</IsTruncated><NextContinuationToken>"
                          + LOOP_TOKEN + "</NextContinuationToken>", text)
            data = text.encode()
            out = [(k, v) for k, v in out if k.lower() != "content-length"]
            out.append(("Content-Length", str(len(data))))
        if mode == "hugelen":
            out = [(k, v) for k, v in out if k.lower() != "content-length"]
            out.append(("Content-Length", str(1 << 63)))
        if mode == "trickle":
            self.send_answer(resp.status, out, b"")
            self.wfile.flush()
            for i in range(len(data)):
                self.wfile.write(data[i:i + 1])
                self.wfile.flush()
                time.sleep(1)
            return
        self.send_answer(resp.status, out, data)
        if mode == "junk":
            self.poisoned = True

    do_GET = do_HEAD = do_PUT = do_DELETE = do_POST = forward


class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
    allow_reuse_address = True


if __name__ == "__main__":
    srv = Server(("127.0.0.1", int(sys.argv[1])), Handler)
    srv.serve_forever()
