#!/usr/bin/env python3
"""A fake Alibaba OSS for the tests: the read API of OSS over a directory
(ROOT/BUCKET/KEY; an empty directory is the marker object "dir/"), checking
every request's signature as OSS does, V4 (OSS4-HMAC-SHA256) and V1 (HMAC-SHA1),
and answering OSS's error XML. Written from OSS's documentation
(docs/oss-protocol.md); its V4 check is itself checked against Alibaba's SDK
(ali-oss) in t_sources.sh.

  ossfake.py ROOT PORTFILE
  env: OSSFAKE_AK, OSSFAKE_SK   the one key pair that is accepted
       OSSFAKE_REGION=ID       the region V4 requests must name (default: any)
       OSSFAKE_SKEW=SEC        the server's clock is off by SEC (RequestTimeTooSkewed)
       OSSFAKE_LOG=FILE        one JSON line per signed request: what a signer needs
       OSSFAKE_KEYS=FILE       "AK:SK" read from FILE at every request (key rotation)
       OSSFAKE_STS=FILE        also the temporary keys credfake.py issued (its STATE):
                               each with its x-oss-security-token, until it expires
       OSSFAKE_VHOST=SUFFIX    a Host BUCKET+SUFFIX names the bucket (virtual-host style)
       OSSFAKE_THROTTLE=N      the first N object GETs get 503 with x-oss-qos-delay-time: 500;
                               the gap before each retry goes to OSSFAKE_THROTTLE_LOG
"""
import base64, calendar, email.utils, hashlib, hmac, json, os, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT, PORTFILE = sys.argv[1], sys.argv[2]
AK, SK = os.environ.get("OSSFAKE_AK", "ossak"), os.environ.get("OSSFAKE_SK", "osssk")
SKEW = int(os.environ.get("OSSFAKE_SKEW", "0"))
REGION = os.environ.get("OSSFAKE_REGION")  # the bucket's region: V4 must sign with it
LOG = os.environ.get("OSSFAKE_LOG")
KEYS = os.environ.get("OSSFAKE_KEYS")
STS = os.environ.get("OSSFAKE_STS")
VHOST = os.environ.get("OSSFAKE_VHOST")  # ".oss.localhost": Host BUCKET.oss.localhost is virtual-host style
THROTTLE = [int(os.environ.get("OSSFAKE_THROTTLE", "0"))]
THROTTLE_LOG = os.environ.get("OSSFAKE_THROTTLE_LOG")
THROTTLED = {}  # key -> time of its last 503
LOG_LOCK = threading.Lock()
ETAGS = {}


class OssError(Exception):
    def __init__(self, status, code, message):
        self.status, self.code, self.message = status, code, message


def q(s, safe):
    return urllib.parse.quote(s, safe=safe)


def canonical_query(raw):
    out = []
    for part in raw.split("&") if raw else []:
        if not part:
            continue
        k, eq, v = part.partition("=")
        k = q(urllib.parse.unquote(k), "-_.~")
        v = q(urllib.parse.unquote(v), "-_.~")
        out.append((k, v))
    out.sort()
    return "&".join(k if v == "" else k + "=" + v for k, v in out)


def secret_of(ak, headers):
    """The secret of @ak: the fixed pair's, or a temporary key's while it lives."""
    if ak == AK:
        return SK
    if STS and os.path.exists(STS):
        with open(STS) as f:
            rec = json.load(f).get(ak)
        if rec:
            if headers.get("x-oss-security-token") != rec["token"]:
                raise OssError(403, "InvalidAccessKeyId", "The security token you provided is invalid.")
            if time.time() >= rec["expires"]:
                raise OssError(403, "SecurityTokenExpired", "The security token you provided has expired.")
            return rec["sk"]
    raise OssError(403, "InvalidAccessKeyId",
                   "The OSS Access Key Id you provided does not exist in our records.")


def check_v4(method, bucket, key, raw_query, headers, auth):
    fields = {}
    for part in auth[len("OSS4-HMAC-SHA256 "):].split(","):
        k, _, v = part.strip().partition("=")
        if k in fields or k not in ("Credential", "AdditionalHeaders", "Signature"):
            raise OssError(400, "InvalidArgument", "bad Authorization field %r" % k)
        fields[k] = v
    cred = fields.get("Credential", "").split("/")
    if len(cred) != 5 or cred[3] != "oss" or cred[4] != "aliyun_v4_request":
        raise OssError(400, "InvalidArgument", "bad Credential")
    sk = secret_of(cred[0], headers)
    date = headers.get("x-oss-date", "")
    try:
        t = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
    except ValueError:
        raise OssError(403, "AccessDenied", "x-oss-date is missing or malformed")
    if abs(time.time() + SKEW - t) > 900:
        raise OssError(403, "RequestTimeTooSkewed",
                       "The difference between the request time and the current time is too large.")
    if REGION and cred[2] != REGION:
        raise OssError(403, "SignatureDoesNotMatch", "the Credential's region is not the bucket's (%s)" % REGION)
    if date[:8] != cred[1]:
        raise OssError(403, "SignatureDoesNotMatch", "the scope's date is not x-oss-date's")
    extra = [h for h in fields.get("AdditionalHeaders", "").lower().split(";") if h]
    names = sorted({h for h in headers if h in ("content-type", "content-md5") or
                    h.startswith("x-oss-")} | set(extra))
    uri = "/" + bucket + "/" + (q(key, "/-_.~") if key else "")
    creq = "\n".join([method, uri, canonical_query(raw_query),
                      "".join("%s:%s\n" % (h, headers.get(h, "").strip()) for h in names),
                      ";".join(sorted(extra)), headers.get("x-oss-content-sha256", "UNSIGNED-PAYLOAD")])
    scope = "/".join(cred[1:])
    sts = "OSS4-HMAC-SHA256\n%s\n%s\n%s" % (date, scope, hashlib.sha256(creq.encode()).hexdigest())
    k = ("aliyun_v4" + sk).encode()
    for m in (cred[1], cred[2], "oss", "aliyun_v4_request"):
        k = hmac.new(k, m.encode(), hashlib.sha256).digest()
    want = hmac.new(k, sts.encode(), hashlib.sha256).hexdigest()
    if not hmac.compare_digest(want, fields.get("Signature", "")):
        raise OssError(403, "SignatureDoesNotMatch",
                       "The request signature we calculated does not match the signature you provided.")
    return {"v": 4, "method": method, "bucket": bucket, "key": key, "query": raw_query,
            "headers": {h: headers[h] for h in names if h in headers},
            "additional": extra, "region": cred[2], "authorization": auth, "ak": cred[0]}


def check_v1(method, bucket, key, params, headers, auth):
    ak, _, sig = auth[4:].partition(":")
    sk = secret_of(ak, headers)
    date = headers.get("x-oss-date") or headers.get("date", "")
    try:
        t = email.utils.parsedate_to_datetime(date).timestamp()
    except (TypeError, ValueError):
        raise OssError(403, "AccessDenied", "Date is missing or malformed")
    if abs(time.time() + SKEW - t) > 900:
        raise OssError(403, "RequestTimeTooSkewed",
                       "The difference between the request time and the current time is too large.")
    oss_hdrs = "".join("%s:%s\n" % (h, headers[h].strip()) for h in sorted(headers) if h.startswith("x-oss-"))
    res = "/" + bucket + "/" + key
    sub = sorted((k, v) for k, v in params.items() if k == "continuation-token")
    if sub:
        res += "?" + "&".join(k + ("=" + v if v else "") for k, v in sub)
    sts = "%s\n%s\n%s\n%s\n%s%s" % (method, headers.get("content-md5", ""),
                                    headers.get("content-type", ""), date, oss_hdrs, res)
    want = base64.b64encode(hmac.new(sk.encode(), sts.encode(), hashlib.sha1).digest()).decode()
    if not hmac.compare_digest(want, sig):
        raise OssError(403, "SignatureDoesNotMatch",
                       "The request signature we calculated does not match the signature you provided.")
    return {"v": 1, "method": method, "resource": "/" + bucket + "/" + key, "parameters": dict(sub),
            "headers": {h: headers[h] for h in headers if h.startswith("x-oss-") or
                        h in ("content-md5", "content-type")},
            "date": date, "authorization": auth}


def etag_of(path, st):
    k = (path, st.st_size, st.st_mtime_ns)
    if k not in ETAGS:
        h = hashlib.md5()
        with open(path, "rb") as f:
            for b in iter(lambda: f.read(1 << 20), b""):
                h.update(b)
        ETAGS[k] = h.hexdigest().upper()
    return ETAGS[k]


def keys_of(bucket_dir):
    out = []
    for d, dirs, files in os.walk(bucket_dir):
        rel = os.path.relpath(d, bucket_dir)
        rel = "" if rel == "." else rel + "/"
        if rel and not dirs and not files:
            out.append(rel)  # an empty directory: its marker object
        out.extend(rel + f for f in files)
    return sorted(out)


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, status, body=b"", headers=()):
        self.send_response(status)
        self.send_header("x-oss-request-id", "5C3D9175B6FC201293AD%04X" % (threading.get_ident() & 0xFFFF))
        self.send_header("Server", "AliyunOSS")
        for k, v in headers:
            self.send_header(k, v)
        if not any(k.lower() == "content-length" for k, _ in headers):
            self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def error(self, e):
        rid = "5C3D9175B6FC201293AD%04X" % (threading.get_ident() & 0xFFFF)
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message>'
                '<RequestId>%s</RequestId><HostId>%s</HostId></Error>' %
                (e.code, e.message, rid, self.headers.get("Host", ""))).encode()
        extra = [("x-oss-qos-delay-time", "500")] if e.code == "QpsLimitExceeded" else []
        self.send(e.status, body, [("Content-Type", "application/xml")] + extra)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        try:
            self.serve()
        except OssError as e:
            self.error(e)
        except (BrokenPipeError, ConnectionResetError):
            pass

    def serve(self):
        u = urllib.parse.urlsplit(self.path)
        raw_query = u.query
        params = dict(urllib.parse.parse_qsl(raw_query, keep_blank_values=True))
        host = self.headers.get("Host", "").rsplit(":", 1)[0]
        if VHOST and host.endswith(VHOST) and len(host) > len(VHOST):
            # virtual-host style: BUCKET.SUFFIX, the whole path is the key
            bucket, key = host[:-len(VHOST)], urllib.parse.unquote(u.path)[1:]
        else:
            parts = urllib.parse.unquote(u.path).lstrip("/").split("/", 1)
            bucket, key = parts[0], parts[1] if len(parts) > 1 else ""
        headers = {k.lower(): v for k, v in self.headers.items()}
        auth = headers.get("authorization", "")
        global AK, SK
        if KEYS:
            with open(KEYS) as f:
                AK, SK = f.read().strip().split(":", 1)
        if auth.startswith("OSS4-HMAC-SHA256 "):
            rec = check_v4(self.command, bucket, key, raw_query, headers, auth)
            rec["host"] = host
            if LOG:
                with LOG_LOCK, open(LOG, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        elif auth.startswith("OSS "):
            rec = check_v1(self.command, bucket, key, params, headers, auth)
            rec["host"] = host
            if LOG:
                with LOG_LOCK, open(LOG, "a") as f:
                    f.write(json.dumps(rec) + "\n")
        else:
            raise OssError(403, "AccessDenied", "You have no right to access this object.")
        bdir = os.path.join(ROOT, bucket)
        if not bucket or not os.path.isdir(bdir):
            raise OssError(404, "NoSuchBucket", "The specified bucket does not exist.")
        if not key:
            return self.listing(bdir, params)
        with LOG_LOCK:
            if key in THROTTLED and THROTTLE_LOG:
                with open(THROTTLE_LOG, "a") as f:
                    f.write("%.3f\n" % (time.monotonic() - THROTTLED.pop(key)))
            throttle = self.command == "GET" and THROTTLE[0] > 0
            if throttle:
                THROTTLE[0] -= 1
                THROTTLED[key] = time.monotonic()
        if throttle:
            raise OssError(503, "QpsLimitExceeded", "Please reduce your request rate.")
        return self.object(bdir, key, headers)

    def listing(self, bdir, p):
        if p.get("list-type") != "2":
            raise OssError(400, "InvalidArgument", "only ListObjectsV2 here")
        prefix, delim = p.get("prefix", ""), p.get("delimiter", "")
        maxk = int(p.get("max-keys", "100"))
        if not 0 < maxk <= 1000:
            raise OssError(400, "InvalidArgument", "max-keys out of range")
        after = base64.urlsafe_b64decode(p["continuation-token"]).decode() if p.get("continuation-token") else ""
        items, seen = [], set()
        for k in keys_of(bdir):
            if not k.startswith(prefix) or k <= after:
                continue
            rest = k[len(prefix):]
            if delim and delim in rest:
                cp = prefix + rest[:rest.index(delim) + len(delim)]
                if cp in seen:
                    continue
                seen.add(cp)
                items.append((cp, None))
            else:
                items.append((k, k))
        trunc = len(items) > maxk
        items = items[:maxk]
        # encoding-type=url: keys, prefixes, the delimiter and the token percent-encoded
        enc = (lambda v: urllib.parse.quote(v, safe="")) if p.get("encoding-type") == "url" else (lambda v: v)
        x = ['<?xml version="1.0" encoding="UTF-8"?>\n<ListBucketResult>',
             "<Name>%s</Name><Prefix>%s</Prefix><MaxKeys>%d</MaxKeys>" % (esc(os.path.basename(bdir)), esc(enc(prefix)), maxk)]
        if p.get("encoding-type") == "url":
            x.append("<EncodingType>url</EncodingType>")
        if delim:
            x.append("<Delimiter>%s</Delimiter>" % esc(enc(delim)))
        x.append("<IsTruncated>%s</IsTruncated><KeyCount>%d</KeyCount>" % ("true" if trunc else "false", len(items)))
        if trunc:
            last = items[-1][0]
            if items[-1][1] is None:  # a common prefix: skip all of it
                last = last + "\U0010ffff"
            x.append("<NextContinuationToken>%s</NextContinuationToken>" %
                     enc(base64.urlsafe_b64encode(last.encode()).decode()))
        for name, k in items:
            if k is None:
                x.append("<CommonPrefixes><Prefix>%s</Prefix></CommonPrefixes>" % esc(enc(name)))
                continue
            path = os.path.join(bdir, k)
            st = os.stat(path)
            etag = etag_of(path, st) if os.path.isfile(path) else "D41D8CD98F00B204E9800998ECF8427E"
            x.append("<Contents><Key>%s</Key><LastModified>%s</LastModified><ETag>&quot;%s&quot;</ETag>"
                     "<Type>Normal</Type><Size>%d</Size><StorageClass>Standard</StorageClass></Contents>" %
                     (esc(enc(k)), time.strftime("%Y-%m-%dT%H:%M:%S.000Z", time.gmtime(st.st_mtime)), etag,
                      st.st_size if os.path.isfile(path) else 0))
        x.append("</ListBucketResult>")
        self.send(200, "".join(x).encode(), [("Content-Type", "application/xml")])

    def object(self, bdir, key, h):
        path = os.path.join(bdir, key)
        if key.endswith("/") and os.path.isdir(path):
            data_size, etag, st = 0, "D41D8CD98F00B204E9800998ECF8427E", os.stat(path)
        elif os.path.isfile(path):
            st = os.stat(path)
            data_size, etag = st.st_size, etag_of(path, st)
        else:
            raise OssError(404, "NoSuchKey", "The specified key does not exist.")
        if "if-match" in h and h["if-match"].strip('"').upper() != etag:
            raise OssError(412, "PreconditionFailed", "At least one of the pre-conditions you specified did not hold.")
        common = [("ETag", '"%s"' % etag), ("Last-Modified", email.utils.formatdate(st.st_mtime, usegmt=True)),
                  ("Accept-Ranges", "bytes"), ("Content-Type", "application/octet-stream")]
        a, b, status = 0, data_size - 1, 200
        rng = h.get("range", "")
        if rng.startswith("bytes=") and "," not in rng:
            s, _, e = rng[6:].partition("-")
            try:
                a = int(s) if s else max(0, data_size - int(e))
                b = min(int(e), data_size - 1) if s and e else data_size - 1
                status = 206
            except ValueError:
                a, b = 0, data_size - 1
            if status == 206 and a >= data_size:
                if h.get("x-oss-range-behavior") == "standard":
                    raise OssError(416, "InvalidRange", "The requested range is not satisfiable")
                a, b, status = 0, data_size - 1, 200
        n = max(0, b - a + 1)
        hdrs = common + [("Content-Length", str(n))]
        if status == 206:
            hdrs.append(("Content-Range", "bytes %d-%d/%d" % (a, b, data_size)))
        self.send_response(status)
        self.send_header("x-oss-request-id", "5C3D9175B6FC201293AD0000")
        for k, v in hdrs:
            self.send_header(k, v)
        self.end_headers()
        if self.command == "HEAD" or n == 0:
            return
        with open(path, "rb") as f:
            f.seek(a)
            left = n
            while left:
                buf = f.read(min(left, 1 << 20))
                if not buf:
                    break
                self.wfile.write(buf)
                left -= len(buf)


def esc(s):
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("OSSFAKE_PORT", "0"))), Handler)
srv.daemon_threads = True
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.rename(PORTFILE + ".tmp", PORTFILE)
srv.serve_forever()
