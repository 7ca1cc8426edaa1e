#!/usr/bin/env python3
"""A fake Hugging Face Hub for the tests of the hf:// backend: the read API of
the Hub (model info, tree listing with Link pagination, resolve with ranges,
LFS files redirected to a second listener that plays the signed-URL CDN,
gated repos, the Hub's X-Error-Code errors) over a directory. Python standard
library only; checked against Hugging Face's JS client (@huggingface/hub) by
hub_sdk_check.js.

  hubfake.py ROOT PORTFILE
  ROOT/<org>/<name>/refs.json            {"main": "<40-hex commit>", "v2": "<commit>", ...}
  ROOT/<org>/<name>/commits/<commit>/... the files of that commit
  ROOT/<org>/<name>/gated                optional: the one token that may download
  ROOT/<org>/<name>/lastModified         optional: ISO 8601 date of the repo
  (re-read on every request)
  env: HUBFAKE_PORT=N       the Hub's port (default 0: any free port)
       HUBFAKE_CDN_PORT=N   the CDN's port (default 0: any free port)
       HUBFAKE_PAGE=N       tree entries per page at most (default 50)
       HUBFAKE_URL_TTL=SEC  X-Amz-Expires of the CDN URLs (default 3600)
       HUBFAKE_LOG=FILE     one JSON line per request (both ports)
  Once both listen, PORTFILE holds "PORT CDNPORT\\n".
  GET /_hubfake/stats (Hub port): request counters as JSON.
"""
import base64, calendar, email.utils, hashlib, hmac, json, os, re, signal, sys, threading, time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ROOT, PORTFILE = sys.argv[1], sys.argv[2]
PORT = int(os.environ.get("HUBFAKE_PORT", "0"))
CDN_PORT = int(os.environ.get("HUBFAKE_CDN_PORT", "0"))
PAGE = max(1, int(os.environ.get("HUBFAKE_PAGE", "50")))
URL_TTL = int(os.environ.get("HUBFAKE_URL_TTL", "3600"))
LOG = os.environ.get("HUBFAKE_LOG")
SECRET = os.urandom(32)  # signs the CDN URLs of this process
DEFAULT_LAST_MODIFIED = "2025-01-01T00:00:00.000Z"
LFS_SUFFIXES = (".safetensors", ".bin", ".gguf", ".pt", ".pth")
LFS_MIN = 1 << 20
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")

LOCK = threading.Lock()
STATS = {"resolve": 0, "cdn": 0, "tree": 0, "revision": 0, "cdn_with_auth": 0}
DIGESTS = {}      # (path, mtime_ns, size) -> (git oid, sha256)
HASHING = {}      # path -> lock, so that one file is hashed once at a time
LFS_INDEX = {}    # sha256 -> path of a file that resolve redirected to the CDN


class HubError(Exception):
    def __init__(self, status, code, message, headers=()):
        self.status, self.code, self.message, self.headers = status, code, message, list(headers)


def count(key):
    with LOCK:
        STATS[key] += 1


def digests(path, st):
    """(git blob oid, sha256) of a file, hashed once per (path, mtime, size)."""
    key = (path, st.st_mtime_ns, st.st_size)
    with LOCK:
        if key in DIGESTS:
            return DIGESTS[key]
        plock = HASHING.setdefault(path, threading.Lock())
    with plock:
        with LOCK:
            if key in DIGESTS:
                return DIGESTS[key]
        g, s = hashlib.sha1(b"blob %d\0" % st.st_size), hashlib.sha256()
        with open(path, "rb") as f:
            while True:
                buf = f.read(1 << 20)
                if not buf:
                    break
                g.update(buf)
                s.update(buf)
        d = (g.hexdigest(), s.hexdigest())
        with LOCK:
            for k in [k for k in DIGESTS if k[0] == path]:
                del DIGESTS[k]  # an older version of the file
            DIGESTS[key] = d
        return d


def is_lfs(path, size):
    return size >= LFS_MIN or path.lower().endswith(LFS_SUFFIXES)


def lfs_pointer(sha, size):
    return b"version https://git-lfs.github.com/spec/v1\noid sha256:%s\nsize %d\n" % (sha.encode(), size)


def git_oid(data):
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def read_text(path):
    try:
        with open(path, encoding="utf-8") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError):
        return None


def safe_name(s):
    return s not in ("", ".", "..") and "/" not in s and "\0" not in s


class Repo:
    def __init__(self, org, name, authed):
        self.org, self.name, self.id = org, name, org + "/" + name
        if not (safe_name(org) and safe_name(name)):
            raise HubError(400, None, "Invalid repo name")
        self.dir = os.path.join(ROOT, org, name)
        refs = read_text(os.path.join(self.dir, "refs.json"))
        if refs is None:
            # anonymous users get 401 for a repo that does not exist (it could be private)
            raise HubError(404 if authed else 401, "RepoNotFound", "Repository not found")
        self.refs = json.loads(refs)
        gated = read_text(os.path.join(self.dir, "gated"))
        self.token = None if gated is None else gated.strip()
        lm = read_text(os.path.join(self.dir, "lastModified"))
        self.last_modified = lm.strip() if lm and lm.strip() else DEFAULT_LAST_MODIFIED

    def commit_of(self, rev):
        """The commit a revision names, or None."""
        if rev == "HEAD":
            rev = "main"
        c = self.refs.get(rev)
        if c is None and HEX40.match(rev):
            c = rev
        if c and HEX40.match(c) and os.path.isdir(os.path.join(self.dir, "commits", c)):
            return c
        return None

    def split_rev(self, segs):
        """segs: the decoded path segments that start with a revision. A revision
        comes percent-encoded as one segment (refs%2Fpr%2F1); refs/... as several
        segments is accepted too. Returns (rev, commit, remaining segments)."""
        if not segs or segs[0] == "":
            raise HubError(404, "RevisionNotFound", "Invalid rev id: ")
        c = self.commit_of(segs[0])
        if c:
            return segs[0], c, segs[1:]
        if segs[0] == "refs":
            for k in range(len(segs), 1, -1):
                rev = "/".join(segs[:k])
                if rev in self.refs:
                    c = self.commit_of(rev)
                    if c:
                        return rev, c, segs[k:]
        raise HubError(404, "RevisionNotFound", "Invalid rev id: " + segs[0])

    def commit_dir(self, commit):
        return os.path.join(self.dir, "commits", commit)

    def check_download(self, auth):
        """A gated repo lets only its token download."""
        if self.token is None:
            return
        if not auth:
            raise HubError(401, "GatedRepo", "Access to model %s is restricted. You must have access to it and be "
                           "authenticated to access it. Please log in." % self.id)
        scheme, _, tok = auth.partition(" ")
        if scheme.lower() != "bearer" or not self.token or \
                not hmac.compare_digest(tok.strip().encode(), self.token.encode()):
            raise HubError(403, "GatedRepo", "Access to model %s is restricted and you are not in the authorized "
                           "list. Visit https://huggingface.co/%s to ask for access." % (self.id, self.id))


def repo_path(segs):
    """A path inside a commit from decoded segments ('' for the top); refuses
    anything that could leave the commit directory."""
    parts = "/".join(segs).split("/") if segs else []
    if parts == [""]:
        return ""
    for p in parts:
        if p in ("", ".", "..") or "\0" in p:
            raise HubError(400, None, "Invalid path")
    return "/".join(parts)


def inside(cdir, rel):
    """The file system path of rel in cdir, if no symbolic link is on the way."""
    full = os.path.join(cdir, rel) if rel else cdir
    want = os.path.join(os.path.realpath(cdir), rel) if rel else os.path.realpath(cdir)
    return full if os.path.realpath(full) == want else None


def walk(cdir, top, recursive):
    """Sorted [(repo path, is_dir)] below top, git-like: regular files only, and
    a directory only if some file is below it."""
    out = []
    base = os.path.join(cdir, top) if top else cdir

    def scan(d, rel):
        try:
            ents = list(os.scandir(d))
        except OSError:
            return False
        found = False
        for e in ents:
            p = rel + "/" + e.name if rel else e.name
            if e.is_file(follow_symlinks=False):
                out.append((p, False))
                found = True
            elif e.is_dir(follow_symlinks=False):
                if recursive:
                    n = len(out)
                    if scan(e.path, p):
                        out.insert(n, (p, True))
                        found = True
                elif has_file(e.path):
                    out.append((p, True))
                    found = True
        return found

    scan(base, top)
    out.sort()
    return out


def has_file(d):
    for _, _, files in os.walk(d):
        for f in files:
            return True
    return False


def truthy(v):
    return v is not None and v.lower() in ("1", "true")


def http_date(t):
    return email.utils.formatdate(t, usegmt=True)


def parse_range(h, size):
    """(status, a, b) for a Range header: 200 for none/ignored, 206, or 416."""
    if not h or not h.startswith("bytes=") or "," in h:
        return 200, 0, size - 1
    s, dash, e = h[6:].strip().partition("-")
    try:
        if not dash:
            raise ValueError
        if s == "":
            n = int(e)  # the last n bytes
            if n <= 0:
                return 416, 0, 0
            return 206, max(0, size - n), size - 1
        a = int(s)
        b = int(e) if e != "" else None
        if a < 0 or (b is not None and b < a):
            raise ValueError
    except ValueError:
        return 200, 0, size - 1  # not a valid range: ignored
    if a >= size:
        return 416, 0, 0
    return 206, a, size - 1 if b is None else min(b, size - 1)


def sign(sha, date, expires):
    return hmac.new(SECRET, ("%s\n%s\n%s" % (sha, date, expires)).encode(), hashlib.sha256).hexdigest()


def header_value(s):
    """A header value as latin-1 safe ASCII without control characters."""
    return "".join(c if 32 <= ord(c) < 127 else urllib.parse.quote(c) for c in s)


class Base(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def log(self, status):
        if not LOG:
            return
        rec = {"port": self.server.server_address[1], "method": self.command, "path": self.path,
               "status": status, "auth": self.headers.get("Authorization") is not None,
               "range": self.headers.get("Range")}
        with LOCK, open(LOG, "a") as f:
            f.write(json.dumps(rec) + "\n")

    def send(self, status, body=b"", headers=(), length=None):
        """Status and headers (always a Content-Length), then body unless HEAD."""
        self.send_response(status)
        self.send_header("X-Request-Id", "Root=1-%08x-%024x" % (int(time.time()), threading.get_ident()))
        for k, v in headers:
            self.send_header(k, header_value(v))
        self.send_header("Content-Length", str(len(body) if length is None else length))
        self.end_headers()
        self.log(status)
        if self.command != "HEAD" and body:
            self.wfile.write(body)

    def send_file(self, path, status, a, n, headers):
        self.send(status, headers=headers, length=n)
        if self.command == "HEAD" or n <= 0:
            return
        with open(path, "rb") as f:
            self.connection.sendfile(f, offset=a, count=n)

    def serve_range(self, path, st, headers):
        size = st.st_size
        status, a, b = parse_range(self.headers.get("Range"), size)
        if status == 416:
            return self.send(416, b"", headers + [("Content-Range", "bytes */%d" % size)])
        hdrs = headers + [("Accept-Ranges", "bytes"), ("Content-Type", "application/octet-stream"),
                          ("Last-Modified", http_date(st.st_mtime))]
        if status == 206:
            hdrs.append(("Content-Range", "bytes %d-%d/%d" % (a, b, size)))
        self.send_file(path, status, a, b - a + 1 if size else 0, hdrs)

    def handle(self):
        try:
            super().handle()
        except (BrokenPipeError, ConnectionResetError, TimeoutError):
            pass  # the client went away

    def do_HEAD(self):
        self.handle_one()

    def do_GET(self):
        self.handle_one()

    def handle_one(self):
        try:
            self.route()
        except HubError as e:
            self.error(e)
        except (BrokenPipeError, ConnectionResetError):
            self.close_connection = True


class Hub(Base):
    def error(self, e):
        body = json.dumps({"error": e.message}).encode()
        hdrs = [("Content-Type", "application/json; charset=utf-8"), ("X-Error-Message", e.message)]
        if e.code:
            hdrs.insert(1, ("X-Error-Code", e.code))
        self.send(e.status, body, hdrs + e.headers)

    def json(self, obj, headers=()):
        self.send(200, json.dumps(obj).encode(), [("Content-Type", "application/json; charset=utf-8")] + list(headers))

    def route(self):
        u = urllib.parse.urlsplit(self.path)
        self.query = urllib.parse.parse_qs(u.query, keep_blank_values=True)
        try:
            segs = [urllib.parse.unquote(s, errors="strict") for s in u.path.split("/")[1:]]
        except UnicodeDecodeError:
            raise HubError(400, None, "Invalid URL encoding")
        auth = self.headers.get("Authorization")
        if segs == ["_hubfake", "stats"]:
            with LOCK:
                stats = dict(STATS)
            return self.json(stats)
        if len(segs) >= 3 and segs[0] == "api" and segs[1] == "models":
            if self.command != "GET":
                raise HubError(405, None, "Method not allowed")
            if len(segs) == 4 or (len(segs) == 5 and segs[4] == ""):
                count("revision")
                return self.info(Repo(segs[2], segs[3], auth), ["main"])
            if len(segs) >= 6 and segs[4] == "revision":
                count("revision")
                return self.info(Repo(segs[2], segs[3], auth), segs[5:])
            if len(segs) >= 6 and segs[4] == "tree":
                count("tree")
                return self.tree(Repo(segs[2], segs[3], auth), segs[5:])
        if len(segs) >= 5 and segs[2] == "resolve":
            count("resolve")
            return self.resolve(Repo(segs[0], segs[1], auth), segs[3:], auth)
        raise HubError(404, None, "Not Found")

    def info(self, repo, segs):
        rev, commit, rest = repo.split_rev(segs)
        if rest and rest != [""]:
            raise HubError(404, None, "Not Found")
        cdir = repo.commit_dir(commit)
        files = [p for p, d in walk(cdir, "", True) if not d]
        self.json({"_id": hashlib.sha1(repo.id.encode()).hexdigest()[:24], "id": repo.id, "modelId": repo.id,
                   "author": repo.org, "sha": commit, "lastModified": repo.last_modified,
                   "createdAt": DEFAULT_LAST_MODIFIED, "private": False,
                   "gated": "manual" if repo.token is not None else False, "disabled": False,
                   "downloads": 0, "likes": 0, "tags": [], "library_name": None,
                   "siblings": [{"rfilename": p} for p in files]})

    def tree(self, repo, segs):
        rev, commit, rest = repo.split_rev(segs)
        if len(rest) > 1 and rest[-1] == "":
            rest = rest[:-1]  # a/b/ names the directory a/b
        top = repo_path(rest)
        cdir = repo.commit_dir(commit)
        base = inside(cdir, top)
        if base is None or not os.path.isdir(base) or (top and not has_file(base)):
            what = "is not a directory" if base and os.path.isfile(base) else "does not exist"
            raise HubError(404, "EntryNotFound", "Entry not found: %s %s on %s" % (top or "/", what, rev))
        q = lambda k: self.query.get(k, [None])[-1]
        recursive = truthy(q("recursive"))
        expand = truthy(q("expand"))
        limit = PAGE
        if q("limit"):
            try:
                limit = max(1, min(PAGE, int(q("limit"))))
            except ValueError:
                raise HubError(400, None, "Invalid limit")
        ents = walk(cdir, top, recursive)
        start = 0
        if q("cursor"):
            try:
                c = q("cursor")
                after = base64.urlsafe_b64decode(c + "=" * (-len(c) % 4)).decode()
            except (ValueError, UnicodeDecodeError):
                raise HubError(400, None, "Invalid cursor")
            while start < len(ents) and ents[start][0] <= after:
                start += 1
        page = ents[start:start + limit]
        out = []
        for p, is_dir in page:
            if is_dir:
                out.append({"type": "directory", "oid": hashlib.sha1(("tree %s %s" % (commit, p)).encode()).hexdigest(),
                            "size": 0, "path": p})
                continue
            fp = os.path.join(cdir, p)
            st = os.stat(fp)
            oid, sha = digests(fp, st)
            e = {"type": "file", "oid": oid, "size": st.st_size, "path": p}
            if is_lfs(p, st.st_size):
                e["oid"] = git_oid(lfs_pointer(sha, st.st_size))  # git holds the pointer file
                e["lfs"] = {"oid": sha, "size": st.st_size, "pointerSize": len(lfs_pointer(sha, st.st_size))}
            if expand:
                e["lastCommit"] = {"id": commit, "title": "Upload %s" % p, "date": repo.last_modified}
                e["securityFileStatus"] = {"status": "safe"}
            out.append(e)
        hdrs = []
        if start + limit < len(ents):
            host = self.headers.get("Host") or "127.0.0.1:%d" % self.server.server_address[1]
            path = "/api/models/%s/%s/tree/%s" % (urllib.parse.quote(repo.org, safe=""),
                                                  urllib.parse.quote(repo.name, safe=""),
                                                  urllib.parse.quote(rev, safe=""))
            if top:
                path += "/" + "/".join(urllib.parse.quote(s, safe="") for s in top.split("/"))
            qs = "recursive=%s" % ("true" if recursive else "false")
            if q("expand") is not None:
                qs += "&expand=%s" % ("true" if expand else "false")
            if q("limit"):
                qs += "&limit=%d" % limit
            cur = base64.urlsafe_b64encode(page[-1][0].encode()).decode().rstrip("=")
            hdrs.append(("Link", '<http://%s%s?%s&cursor=%s>; rel="next"' % (host, path, qs, cur)))
        self.json(out, hdrs)

    def resolve(self, repo, segs, auth):
        try:
            rev, commit, rest = repo.split_rev(segs)
        except HubError as e:
            repo.check_download(auth)  # a gated repo answers that first
            raise e
        rc = [("X-Repo-Commit", commit)]
        try:
            repo.check_download(auth)
        except HubError as e:
            e.headers += rc
            raise
        rel = repo_path(rest)
        cdir = repo.commit_dir(commit)
        full = inside(cdir, rel) if rel else None
        if full is None or not os.path.isfile(full) or os.path.islink(full):
            raise HubError(404, "EntryNotFound", "Entry not found", rc)
        st = os.stat(full)
        oid, sha = digests(full, st)
        if not is_lfs(rel, st.st_size):
            return self.serve_range(full, st, rc + [("ETag", '"%s"' % oid)])
        with LOCK:
            LFS_INDEX[sha] = full
        date = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        loc = "http://127.0.0.1:%d/lfs/%s?X-Amz-Expires=%d&X-Amz-Date=%s&X-Amz-Signature=%s" % (
            CDN.server_address[1], sha, URL_TTL, date, sign(sha, date, URL_TTL))
        body = ("Found. Redirecting to %s" % loc).encode()
        self.send(302, body, rc + [("Location", loc), ("ETag", '"%s"' % git_oid(lfs_pointer(sha, st.st_size))),
                                   ("X-Linked-Etag", '"%s"' % sha), ("X-Linked-Size", str(st.st_size)),
                                   ("Content-Type", "text/plain; charset=utf-8")])


class Cdn(Base):
    def error(self, e):
        body = ('<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>%s</Code><Message>%s</Message></Error>' %
                (e.code, e.message)).encode()
        self.send(e.status, body, [("Content-Type", "application/xml")])

    def route(self):
        u = urllib.parse.urlsplit(self.path)
        parts = u.path.split("/")
        if len(parts) != 3 or parts[1] != "lfs":
            raise HubError(404, "NoSuchKey", "The specified key does not exist.")
        count("cdn")
        if self.headers.get("Authorization") is not None:
            count("cdn_with_auth")
            raise HubError(400, "InvalidArgument", "Only one auth mechanism allowed; only the X-Amz-Algorithm query "
                           "parameter, Signature query string parameter or the Authorization header should be specified")
        sha = parts[2]
        q = {k: v[-1] for k, v in urllib.parse.parse_qs(u.query, keep_blank_values=True).items()}
        date, expires, sig = q.get("X-Amz-Date", ""), q.get("X-Amz-Expires", ""), q.get("X-Amz-Signature", "")
        if not (HEX64.match(sha) and hmac.compare_digest(sign(sha, date, expires), sig)):
            raise HubError(403, "SignatureDoesNotMatch",
                           "The request signature we calculated does not match the signature you provided.")
        try:
            t = calendar.timegm(time.strptime(date, "%Y%m%dT%H%M%SZ"))
        except ValueError:
            raise HubError(403, "AccessDenied", "X-Amz-Date is malformed")
        if time.time() > t + int(expires):
            raise HubError(403, "AccessDenied", "Request has expired")
        with LOCK:
            path = LFS_INDEX.get(sha)
        try:
            st = os.stat(path) if path else None
        except OSError:
            st = None
        if st is None or digests(path, st)[1] != sha:
            raise HubError(404, "NoSuchKey", "The specified key does not exist.")
        self.serve_range(path, st, [("ETag", '"%s"' % sha)])


class Server(ThreadingHTTPServer):
    daemon_threads = True
    request_queue_size = 128


def listen(handler, port):
    return Server(("127.0.0.1", port), handler)


signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGTERM, signal.SIGINT})  # the threads leave them to sigwait
HUB, CDN = listen(Hub, PORT), listen(Cdn, CDN_PORT)
for s in (HUB, CDN):
    threading.Thread(target=s.serve_forever, args=(0.1,), daemon=True).start()
with open(PORTFILE + ".tmp", "w") as f:
    f.write("%d %d\n" % (HUB.server_address[1], CDN.server_address[1]))
os.rename(PORTFILE + ".tmp", PORTFILE)
signal.sigwait({signal.SIGTERM, signal.SIGINT})
for s in (HUB, CDN):
    s.shutdown()
    s.server_close()
sys.exit(0)
