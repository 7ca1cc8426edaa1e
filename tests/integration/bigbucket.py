#!/usr/bin/env python3
"""A synthetic S3 bucket of many keys, for the lazy-listing test: what s3rver
cannot hold (it keeps two files per object and walks them all for every
listing). Read API only, no signature check (like ../shared/bench's s3srv.py):
ListObjectsV2 (prefix, delimiter "/", max-keys, continuation-token), HEAD and
ranged GET. The keys are computed, not stored:

  model-NNN/shard-MMMMM.bin   for NNN < MODELS, MMMMM < PER_MODEL

each SIZE bytes of content(key) (a repeated sha256 of the key), ETag its md5.
Every LIST is counted: GET /__stats answers {"lists": [[prefix, delimiter,
keys+prefixes returned, ms], ...]}; GET /__add?key=K adds a key (a new
upload), /__del?key=K deletes one.

  bigbucket.py PORTFILE [MODELS [PER_MODEL [SIZE]]]     (default 500 400 4096)
"""
import bisect, hashlib, json, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORTFILE = sys.argv[1]
MODELS = int(sys.argv[2]) if len(sys.argv) > 2 else 500
PER = int(sys.argv[3]) if len(sys.argv) > 3 else 400
SIZE = int(sys.argv[4]) if len(sys.argv) > 4 else 4096
BUCKET = "big"
KEYS = sorted("model-%03d/shard-%05d.bin" % (m, s) for m in range(MODELS) for s in range(PER))
LOCK = threading.Lock()
LISTS = []


def content(key):
    block = hashlib.sha256(key.encode()).digest()
    return (block * (SIZE // len(block) + 1))[:SIZE]


def etag(key):
    return hashlib.md5(content(key)).hexdigest()


def xml_escape(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, code, body=b"", headers=None, head=False):
        self.send_response(code)
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head:
            self.wfile.write(body)

    def key_of(self, path):
        parts = path.lstrip("/").split("/", 1)
        if parts[0] != BUCKET:
            return None, None
        return parts[0], urllib.parse.unquote(parts[1]) if len(parts) > 1 else ""

    def do_HEAD(self):
        self.do_GET(head=True)

    def do_GET(self, head=False):
        u = urllib.parse.urlsplit(self.path)
        q = dict(urllib.parse.parse_qsl(u.query, keep_blank_values=True))
        if u.path == "/__stats":
            with LOCK:
                return self.send(200, json.dumps({"lists": LISTS}).encode())
        if u.path in ("/__add", "/__del"):
            with LOCK:
                i = bisect.bisect_left(KEYS, q["key"])
                present = i < len(KEYS) and KEYS[i] == q["key"]
                if u.path == "/__add" and not present:
                    KEYS.insert(i, q["key"])
                elif u.path == "/__del" and present:
                    del KEYS[i]
            return self.send(200, b"ok\n")
        bucket, key = self.key_of(u.path)
        if bucket is None:
            return self.send(404, b"<Error><Code>NoSuchBucket</Code></Error>")
        if key == "":
            return self.list(q, head)
        with LOCK:
            i = bisect.bisect_left(KEYS, key)
            present = i < len(KEYS) and KEYS[i] == key
        if not present:
            return self.send(404, b"<Error><Code>NoSuchKey</Code></Error>", head=head)
        body = content(key)
        hdr = {"ETag": '"%s"' % etag(key), "Last-Modified": "Tue, 01 Dec 2026 00:00:00 GMT",
               "Accept-Ranges": "bytes"}
        rng = self.headers.get("Range")
        if rng and rng.startswith("bytes="):
            a, b = rng[6:].split("-")
            a = int(a)
            b = min(int(b) if b else len(body) - 1, len(body) - 1)
            if a >= len(body):
                return self.send(416, b"", head=head)
            hdr["Content-Range"] = "bytes %d-%d/%d" % (a, b, len(body))
            return self.send(206, body[a:b + 1], hdr, head)
        return self.send(200, body, hdr, head)

    def list(self, q, head):
        t0 = time.time()
        prefix, delim = q.get("prefix", ""), q.get("delimiter", "")
        maxk = min(int(q.get("max-keys", "1000")), 1000)
        token, after = q.get("continuation-token"), q.get("start-after")
        out, prefixes, nxt = [], [], None
        with LOCK:
            # the token is the next key to give (past a whole common prefix)
            i = (bisect.bisect_left(KEYS, token) if token else
                 bisect.bisect_right(KEYS, after) if after else bisect.bisect_left(KEYS, prefix))
            while i < len(KEYS) and len(out) + len(prefixes) < maxk:
                k = KEYS[i]
                if not k.startswith(prefix):
                    break
                rest = k[len(prefix):]
                if delim and delim in rest:
                    cp = prefix + rest[:rest.index(delim) + len(delim)]
                    prefixes.append(cp)
                    # past every key under this prefix
                    i = bisect.bisect_left(KEYS, cp[:-1] + chr(ord(cp[-1]) + 1))
                    continue
                out.append(k)
                i += 1
            truncated = i < len(KEYS) and KEYS[i].startswith(prefix)
            nxt = KEYS[i] if truncated else None
        body = ['<?xml version="1.0" encoding="UTF-8"?>',
                '<ListBucketResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">',
                "<Name>%s</Name><Prefix>%s</Prefix><MaxKeys>%d</MaxKeys>" % (BUCKET, xml_escape(prefix), maxk),
                "<KeyCount>%d</KeyCount><IsTruncated>%s</IsTruncated>" % (len(out) + len(prefixes), "true" if truncated else "false")]
        if truncated:
            body.append("<NextContinuationToken>%s</NextContinuationToken>" % xml_escape(nxt))
        for k in out:
            body.append("<Contents><Key>%s</Key><LastModified>2026-12-01T00:00:00.000Z</LastModified>"
                        "<ETag>&quot;%s&quot;</ETag><Size>%d</Size><StorageClass>STANDARD</StorageClass></Contents>"
                        % (xml_escape(k), etag(k), SIZE))
        for p in prefixes:
            body.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % xml_escape(p))
        body.append("</ListBucketResult>")
        with LOCK:
            LISTS.append([prefix, delim, len(out) + len(prefixes), round((time.time() - t0) * 1000, 2)])
        self.send(200, "".join(body).encode(), {"Content-Type": "application/xml"}, head)


srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
srv.daemon_threads = True
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
import os
os.rename(PORTFILE + ".tmp", PORTFILE)
srv.serve_forever()
