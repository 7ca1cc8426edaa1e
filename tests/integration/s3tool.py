#!/usr/bin/env python3
"""A small S3 client for the tests (stdlib only): create buckets, upload
files and trees, delete keys, list. SigV4-signed, path-style, against the
local test server only.

  s3tool.py mb BUCKET
  s3tool.py put BUCKET KEY FILE
  s3tool.py putdir BUCKET PREFIX DIR      (every file below DIR -> PREFIX/relpath)
  s3tool.py rm BUCKET KEY
  s3tool.py ls BUCKET [PREFIX]            (every key, one per line)

Environment: S3_ENDPOINT (http://127.0.0.1:PORT), S3_KEY, S3_SECRET, S3_REGION.
"""
import datetime
import hashlib
import hmac
import http.client
import os
import sys
import urllib.parse
import xml.etree.ElementTree as ET

EP = urllib.parse.urlparse(os.environ.get("S3_ENDPOINT", "http://127.0.0.1:4568"))
KEY = os.environ.get("S3_KEY", "S3RVER")
SECRET = os.environ.get("S3_SECRET", "S3RVER")
REGION = os.environ.get("S3_REGION", "us-east-1")
UNRESERVED = "-_.~"


def enc(s, safe=""):
    return urllib.parse.quote(s, safe=UNRESERVED + safe)


def sign(method, path, query, payload_hash):
    now = datetime.datetime.now(datetime.timezone.utc)
    amz = now.strftime("%Y%m%dT%H%M%SZ")
    host = EP.netloc
    headers = {"host": host, "x-amz-content-sha256": payload_hash, "x-amz-date": amz}
    canon_q = "&".join(f"{enc(k)}={enc(v)}" for k, v in sorted(query.items()))
    signed = ";".join(sorted(headers))
    creq = "\n".join([method, path, canon_q,
                      "".join(f"{k}:{headers[k]}\n" for k in sorted(headers)),
                      signed, payload_hash])
    scope = f"{amz[:8]}/{REGION}/s3/aws4_request"
    sts = "\n".join(["AWS4-HMAC-SHA256", amz, scope,
                     hashlib.sha256(creq.encode()).hexdigest()])
    k = ("AWS4" + SECRET).encode()
    for part in (amz[:8], REGION, "s3", "aws4_request"):
        k = hmac.new(k, part.encode(), hashlib.sha256).digest()
    sig = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    headers["authorization"] = (f"AWS4-HMAC-SHA256 Credential={KEY}/{scope}, "
                                f"SignedHeaders={signed}, Signature={sig}")
    return headers, canon_q


def request(method, bucket, key="", query=None, body=None, size=0, payload_hash=None):
    query = query or {}
    path = "/" + enc(bucket) + ("/" + enc(key, "/") if key else "")
    headers, q = sign(method, path, query,
                      payload_hash or hashlib.sha256(b"").hexdigest())
    if body is not None:
        headers["content-length"] = str(size)
    conn = http.client.HTTPConnection(EP.hostname, EP.port, timeout=600)
    conn.request(method, path + ("?" + q if q else ""), body=body, headers=headers)
    resp = conn.getresponse()
    data = resp.read()
    conn.close()
    if resp.status >= 300:
        sys.exit(f"s3tool: {method} {path}: HTTP {resp.status}: {data[:300]!r}")
    return data


def file_sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def put(bucket, key, path):
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        request("PUT", bucket, key, body=f, size=size, payload_hash=file_sha256(path))


def main(argv):
    if len(argv) < 2:
        sys.exit(__doc__)
    cmd = argv[1]
    if cmd == "mb":
        request("PUT", argv[2])
    elif cmd == "put":
        put(argv[2], argv[3], argv[4])
    elif cmd == "putdir":
        bucket, prefix, top = argv[2], argv[3].strip("/"), argv[4]
        for root, _, files in os.walk(top):
            for name in files:
                full = os.path.join(root, name)
                rel = os.path.relpath(full, top)
                put(bucket, (prefix + "/" if prefix else "") + rel, full)
    elif cmd == "rm":
        request("DELETE", argv[2], argv[3])
    elif cmd == "ls":
        token, prefix = None, argv[3] if len(argv) > 3 else ""
        while True:
            q = {"list-type": "2", "prefix": prefix}
            if token:
                q["continuation-token"] = token
            root = ET.fromstring(request("GET", argv[2], query=q))
            ns = root.tag[:root.tag.index("}") + 1] if root.tag.startswith("{") else ""
            for c in root.iter(ns + "Contents"):
                print(c.find(ns + "Key").text)
            if root.findtext(ns + "IsTruncated") != "true":
                break
            token = root.findtext(ns + "NextContinuationToken")
    else:
        sys.exit(__doc__)


if __name__ == "__main__":
    main(sys.argv)
