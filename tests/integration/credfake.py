#!/usr/bin/env python3
"""A fake of the four places a pod or an instance gets temporary keys from,
on one port, each handing out keys that live a few seconds:

  POST /                              AWS STS AssumeRoleWithWebIdentity (form
                                      body, unsigned; XML answer)
  POST /?Action=AssumeRoleWithOIDC... Alibaba STS (RPC style: Action, Format,
                                      Version, Timestamp in the query; RoleArn,
                                      OIDCProviderArn, OIDCToken, ... in the
                                      form body; JSON answer)
  PUT  /latest/api/token              a metadata session token: EC2's (header
                                      X-aws-ec2-metadata-token-ttl-seconds) or
                                      ECS's (X-aliyun-ecs-metadata-token-ttl-seconds)
  GET  /latest/meta-data/iam/security-credentials/[ROLE]   EC2 (IMDSv2 only)
  GET  /latest/meta-data/ram/security-credentials/[ROLE]   ECS (token required)

Written from the vendors' API documents (docs/kubernetes.md names them).

  credfake.py PORTFILE STATE
  env: CREDFAKE_LIFETIME=SEC   how long issued keys live (default 4)
       CREDFAKE_TOKEN_FILE=F   the OIDC token the STS calls must carry: F's
                               text at the time of the call (kubelet rotates it)
       CREDFAKE_ROLE_ARN, CREDFAKE_PROVIDER_ARN   what the calls must name
       CREDFAKE_ROLE=NAME      the instance's role (default model-reader)
       CREDFAKE_PORT=N         listen on N (default: a free port)
STATE is JSON, rewritten at each issue: {AK: {"sk", "token", "expires" (epoch
s), "kind"}}; the fake stores (ossfake.py, s3proxy.py) accept those keys until
"expires" and refuse them after. STATE.log gets a line per call: KIND AK|ERROR.
"""
import fcntl, json, os, secrets, sys, threading, time, urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

PORTFILE, STATE = sys.argv[1], sys.argv[2]
LIFETIME = int(os.environ.get("CREDFAKE_LIFETIME", "4"))
TOKEN_FILE = os.environ.get("CREDFAKE_TOKEN_FILE")
ROLE_ARN = os.environ.get("CREDFAKE_ROLE_ARN", "")
PROVIDER_ARN = os.environ.get("CREDFAKE_PROVIDER_ARN", "")
ROLE = os.environ.get("CREDFAKE_ROLE", "model-reader")
LOCK = threading.Lock()
MD_TOKENS = {}  # metadata session token -> "ec2" | "ecs"
COUNT = [0]


def note(line):
    with open(STATE + ".log", "a") as f:
        f.write(line + "\n")


def issue(kind):
    with LOCK:
        COUNT[0] += 1
        ak = "%s%d%04d" % ("ASIA" if kind in ("sts", "ec2") else "STS.", os.getpid(), COUNT[0])
        rec = {"sk": secrets.token_urlsafe(30), "token": secrets.token_urlsafe(60),
               "expires": int(time.time()) + LIFETIME, "kind": kind}
        # STATE may be shared with another credfake: merged under a lock
        with open(STATE + ".lock", "w") as lk:
            fcntl.flock(lk, fcntl.LOCK_EX)
            try:
                with open(STATE) as f:
                    keys = json.load(f)
            except FileNotFoundError:
                keys = {}
            keys[ak] = rec
            tmp = "%s.tmp.%d" % (STATE, os.getpid())
            with open(tmp, "w") as f:
                json.dump(keys, f)
            os.replace(tmp, STATE)
    note("%s %s" % (kind, ak))
    return ak, rec


def iso(t):
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(t))


def token_ok(given):
    with open(TOKEN_FILE) as f:
        return given == f.read().strip()


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def send(self, status, body, ctype="application/json"):
        body = body.encode()
        self.send_response(status)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        u = urllib.parse.urlsplit(self.path)
        query = dict(urllib.parse.parse_qsl(u.query))
        n = int(self.headers.get("Content-Length") or 0)
        form = dict(urllib.parse.parse_qsl(self.rfile.read(n).decode()))
        if query.get("Action") == "AssumeRoleWithOIDC":
            return self.oidc(query, form)
        if form.get("Action") == "AssumeRoleWithWebIdentity" and form.get("Version") == "2011-06-15":
            return self.web_identity(form)
        note("error bad-call")
        self.send(400, "<ErrorResponse><Error><Code>InvalidAction</Code></Error></ErrorResponse>",
                  "text/xml")

    def web_identity(self, form):
        if form.get("RoleArn") != ROLE_ARN or not form.get("RoleSessionName"):
            note("error sts-role")
            return self.send(403, "<ErrorResponse><Error><Code>AccessDenied</Code><Message>Not "
                             "authorized to perform sts:AssumeRoleWithWebIdentity</Message>"
                             "</Error></ErrorResponse>", "text/xml")
        if not token_ok(form.get("WebIdentityToken")):
            note("error sts-token")
            return self.send(400, "<ErrorResponse><Error><Code>InvalidIdentityToken</Code>"
                             "<Message>Token is not valid</Message></Error></ErrorResponse>",
                             "text/xml")
        ak, r = issue("sts")
        self.send(200, """<AssumeRoleWithWebIdentityResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
  <AssumeRoleWithWebIdentityResult>
    <SubjectFromWebIdentityToken>system:serviceaccount:models:reader</SubjectFromWebIdentityToken>
    <AssumedRoleUser><Arn>%s/%s</Arn><AssumedRoleId>AROA:%s</AssumedRoleId></AssumedRoleUser>
    <Credentials>
      <SessionToken>%s</SessionToken>
      <SecretAccessKey>%s</SecretAccessKey>
      <Expiration>%s</Expiration>
      <AccessKeyId>%s</AccessKeyId>
    </Credentials>
  </AssumeRoleWithWebIdentityResult>
  <ResponseMetadata><RequestId>ad4156e9-bce1-11e2-82e6-6b6efEXAMPLE</RequestId></ResponseMetadata>
</AssumeRoleWithWebIdentityResponse>""" % (ROLE_ARN, form["RoleSessionName"], form["RoleSessionName"],
                                          r["token"], r["sk"], iso(r["expires"]), ak), "text/xml")

    def oidc(self, query, form):
        if query.get("Format") != "JSON" or query.get("Version") != "2015-04-01" or \
                not query.get("Timestamp"):
            note("error oidc-query")
            return self.send(400, json.dumps({"Code": "MissingParameter", "Message": "query"}))
        if form.get("RoleArn") != ROLE_ARN or form.get("OIDCProviderArn") != PROVIDER_ARN:
            note("error oidc-role")
            return self.send(403, json.dumps({"RequestId": "1", "Code": "NoPermission",
                                              "Message": "You are not authorized"}))
        if not token_ok(form.get("OIDCToken")):
            note("error oidc-token")
            return self.send(400, json.dumps({"RequestId": "1", "Code": "AuthenticationFail.OIDCToken.Invalid",
                                              "Message": "the token is invalid"}))
        ak, r = issue("oidc")
        self.send(200, json.dumps({
            "RequestId": "3D57EAD2-8723-1F26-B69C-F8707D8B565D",
            "OIDCTokenInfo": {"Subject": "system:serviceaccount:models:reader",
                              "Issuer": "https://oidc-ack-cn-beijing.oss-cn-beijing.aliyuncs.com/x"},
            "AssumedRoleUser": {"AssumedRoleId": "33157794895460****", "Arn": ROLE_ARN},
            "Credentials": {"SecurityToken": r["token"], "Expiration": iso(r["expires"]),
                            "AccessKeySecret": r["sk"], "AccessKeyId": ak}}))

    def do_PUT(self):
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        if self.path != "/latest/api/token":
            return self.send(404, "")
        kind = "ec2" if self.headers.get("X-aws-ec2-metadata-token-ttl-seconds") else \
            "ecs" if self.headers.get("X-aliyun-ecs-metadata-token-ttl-seconds") else None
        if not kind:
            note("error md-ttl")
            return self.send(400, "", "text/plain")
        tok = secrets.token_urlsafe(20)
        with LOCK:
            MD_TOKENS[tok] = kind
        self.send(200, tok, "text/plain")

    def do_GET(self):
        for kind, base, hdr in (("ec2", "/latest/meta-data/iam/security-credentials/",
                                 "X-aws-ec2-metadata-token"),
                                ("ecs", "/latest/meta-data/ram/security-credentials/",
                                 "X-aliyun-ecs-metadata-token")):
            if not self.path.startswith(base):
                continue
            if MD_TOKENS.get(self.headers.get(hdr, "")) != kind:
                note("error %s-token" % kind)
                return self.send(401, "", "text/plain")
            role = self.path[len(base):]
            if not role:
                return self.send(200, ROLE, "text/plain")
            if role != ROLE:
                return self.send(404, "", "text/plain")
            ak, r = issue(kind)
            rec = {"Code": "Success", "LastUpdated": iso(time.time()), "AccessKeyId": ak,
                   "Expiration": iso(r["expires"])}
            if kind == "ec2":
                rec.update({"Type": "AWS-HMAC", "SecretAccessKey": r["sk"], "Token": r["token"]})
            else:
                rec.update({"AccessKeySecret": r["sk"], "SecurityToken": r["token"]})
            return self.send(200, json.dumps(rec))
        self.send(404, "", "text/plain")


srv = ThreadingHTTPServer(("127.0.0.1", int(os.environ.get("CREDFAKE_PORT", "0"))), Handler)
with open(PORTFILE + ".tmp", "w") as f:
    f.write(str(srv.server_address[1]))
os.replace(PORTFILE + ".tmp", PORTFILE)
srv.serve_forever()
