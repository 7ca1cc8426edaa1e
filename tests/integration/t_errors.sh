#!/usr/bin/env bash
# Mount-time failures are fast and clear: each cause has its own message and a
# non-zero exit within a few seconds, and nothing stays mounted. Also TLS:
# verification is on by default, ca_file makes a private CA work, insecure_tls
# works and says so.
source "$(dirname "$0")/lib.sh"

MNT=$WORK/mnt
mkdir -p "$MNT"
s3_start s3
$S3TOOL mb models
echo hello >"$WORK/hello"
$S3TOOL put models m/hello.txt "$WORK/hello"

# expect_fail DESCRIPTION PATTERN ENV... -- ARGS...: modelfs must exit non-zero
# in under 5 s with one stderr line matching PATTERN, and leave no mount.
expect_fail() {
	local d=$1 pat=$2 envs=() t0 t1 rc err
	shift 2
	while [ "$1" != "--" ]; do envs+=("$1"); shift; done
	shift
	t0=$(date +%s%N)
	err=$(env "${envs[@]}" timeout 20 "$MODELFS" "$@" 2>&1 >/dev/null)
	rc=$?
	t1=$(date +%s%N)
	local ms=$(((t1 - t0) / 1000000))
	if [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && [ "$ms" -lt 5000 ] && grep -qE "$pat" <<<"$err" &&
		[ "$(wc -l <<<"$err")" -eq 1 ] && ! mountpoint -q "$MNT"; then
		ok "$d: exit $rc in $ms ms: $err"
	else
		fail "$d: exit $rc in $ms ms, stderr: $err"
	fi
}

EP="endpoint=$S3_ENDPOINT"
# s3rver checks the key id but not the signature: the proxy checks signatures
proxy_start
expect_fail "wrong secret (403 SignatureDoesNotMatch)" "access denied" AWS_SECRET_ACCESS_KEY=wrong -- s3://models/m "$MNT" -o "endpoint=$PROXY_ENDPOINT"
expect_fail "unknown access key (403)" "access denied" AWS_ACCESS_KEY_ID=NOBODY -- s3://models/m "$MNT" -o "$EP"
expect_fail "missing bucket (404)" "bucket 'nosuchbucket' does not exist" -- s3://nosuchbucket "$MNT" -o "$EP"
expect_fail "unreachable endpoint" "cannot reach endpoint" -- s3://models "$MNT" -o "endpoint=http://127.0.0.1:$(free_port)"
expect_fail "bad endpoint URL" "bad endpoint" -- s3://models "$MNT" -o "endpoint=ftp://x"
expect_fail "bad option value" "bad value for option uid" -- s3://models "$MNT" -o "$EP,uid=abc"
expect_fail "unknown option" "unknown option|bad mount options" -- s3://models "$MNT" -o "$EP,no_such_option"
expect_fail "secret on the command line" "not accepted on the command line" -- s3://models "$MNT" -o "$EP,secret_key=x"
expect_fail "missing mountpoint" "mountpoint .*: No such file or directory" -- s3://models "$WORK/nope" -o "$EP"
expect_fail "mountpoint is a file" "not a directory" -- s3://models "$WORK/hello" -o "$EP"
expect_fail "unsupported scheme" "unsupported source" -- gs://models "$MNT" -o "$EP"
expect_fail "bad source" "bad source" -- s3:// "$MNT" -o "$EP"
expect_fail "missing arguments" "usage" -- s3://models
expect_fail "missing creds_file" "cannot read credentials file" AWS_ACCESS_KEY_ID= AWS_SECRET_ACCESS_KEY= -- s3://models "$MNT" -o "$EP,creds_file=$WORK/none"
printf '[default]\naws_access_key_id = S3RVER\n' >"$WORK/creds-incomplete"
chmod 600 "$WORK/creds-incomplete"
expect_fail "incomplete profile" "lacks aws_access_key_id or aws_secret_access_key" AWS_ACCESS_KEY_ID= AWS_SECRET_ACCESS_KEY= -- s3://models "$MNT" -o "$EP,creds_file=$WORK/creds-incomplete"

# Signatures as the server computes them: a listing of > 1,000 keys (continuation
# tokens hold '+', '/' and '=') and keys with special characters, through the proxy.
mkdir -p "$WORK/sig/many" "$WORK/sig/special"
for i in $(seq 1 1100); do echo "$i" >"$WORK/sig/many/$i"; done
for n in "sp ace" "plus+sign" "pct%41" "eq=val&amp" "tilde~x" "unicodé-日本語" "semi;colon" "star*" "comma,x"; do
	echo "$n" >"$WORK/sig/special/$n"
done
$S3TOOL putdir models sig "$WORK/sig"
S3_ENDPOINT=$PROXY_ENDPOINT mount_fs s3://models/sig "$MNT" ""
check "signed listing of 1100 keys through the checking proxy" [ "$(ls "$MNT/many" | wc -l)" -eq 1100 ]
check "special-character keys read through the checking proxy" \
	diff -r "$WORK/sig/special" "$MNT/special"
umount_fs "$MNT"
# a session token is sent and signed (x-amz-security-token); the proxy checks it
AWS_SESSION_TOKEN="FQoGZXIvYXdzE+token/with=special" S3_ENDPOINT=$PROXY_ENDPOINT mount_fs s3://models/sig "$MNT" ""
check "session token: signed requests with x-amz-security-token are accepted" \
	diff -r "$WORK/sig/special" "$MNT/special"
umount_fs "$MNT"
check "the proxy saw exactly one bad signature (the deliberate wrong secret)" bash -c "curl -s '$PROXY_ENDPOINT/__fault' | grep -q 'bad_signatures=1\$'"

check "--help lists the options" bash -c "'$MODELFS' --help | grep -q 'endpoint=URL'"
check "--version prints a version" bash -c "'$MODELFS' --version | grep -qE '^modelfs [0-9]+\.[0-9]+'"

# credentials from a file and a profile (no environment)
printf '[default]\naws_access_key_id = WRONG\naws_secret_access_key = WRONG\n\n[test]\naws_access_key_id = S3RVER\naws_secret_access_key = S3RVER\n' >"$WORK/creds"
chmod 600 "$WORK/creds"
AWS_ACCESS_KEY_ID= AWS_SECRET_ACCESS_KEY= mount_fs s3://models/m "$MNT" "creds_file=$WORK/creds,profile=test"
check "creds_file + profile: mounts and reads" grep -qx hello "$MNT/hello.txt"
umount_fs "$MNT"
AWS_ACCESS_KEY_ID= AWS_SECRET_ACCESS_KEY= HOME=$WORK/home AWS_SHARED_CREDENTIALS_FILE=$WORK/creds AWS_PROFILE=test \
	mount_fs s3://models/m "$MNT" ""
check "AWS_SHARED_CREDENTIALS_FILE + AWS_PROFILE: mounts and reads" grep -qx hello "$MNT/hello.txt"
umount_fs "$MNT"
check "no secret in the daemon's logs" bash -c "! grep -rq 'S3RVER\$\|aws_secret' '$WORK'/mnt.log"

# AWS_ENDPOINT_URL instead of -o endpoint
AWS_ENDPOINT_URL=$S3_ENDPOINT timeout 20 "$MODELFS" s3://models/m "$MNT" -o "cache_dir=$WORK/cache" &&
	MOUNTS+=("$MNT")
check "AWS_ENDPOINT_URL is used when no endpoint= is given" grep -qx hello "$MNT/hello.txt"
fusermount3 -u "$MNT"

# The helper's own argument handling, pointed at this build (t_usage.sh runs
# the installed one through the real mount(8))
helper_in=$HERE/../../systemd/mount.fuse.modelfs.in
if [ -f "$helper_in" ]; then
	sed "s|@MODELFS_BIN@|$MODELFS|" "$helper_in" >"$WORK/mount.fuse.modelfs"
	sh "$WORK/mount.fuse.modelfs" s3://models/m "$MNT" -f -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/cache"
	check "mount helper: -f (fake) mounts nothing" bash -c "! mountpoint -q '$MNT'"
	sh "$WORK/mount.fuse.modelfs" s3://models/m "$MNT" -n -o "endpoint=$S3_ENDPOINT,nofail" -o "ro,cache_dir=$WORK/cache" &&
		MOUNTS+=("$MNT")
	check "mount helper: mounts with fstab-style options and reads" grep -qx hello "$MNT/hello.txt"
	fusermount3 -u "$MNT"
fi

# --- TLS: s3rver with a certificate signed by a private CA
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=modelfs test CA" \
	-keyout "$WORK/ca.key" -out "$WORK/ca.pem" 2>/dev/null
openssl req -newkey rsa:2048 -nodes -subj "/CN=127.0.0.1" -keyout "$WORK/srv.key" \
	-out "$WORK/srv.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$WORK/san.ext"
openssl x509 -req -in "$WORK/srv.csr" -CA "$WORK/ca.pem" -CAkey "$WORK/ca.key" -CAcreateserial \
	-days 2 -extfile "$WORK/san.ext" -out "$WORK/srv.pem" 2>/dev/null
plain_endpoint=$S3_ENDPOINT
tls_port=$(free_port)
NODE_OPTIONS=--openssl-legacy-provider setsid "$S3RVER" -d "$WORK/s3" -a 127.0.0.1 -p "$tls_port" -s \
	--key "$WORK/srv.key" --cert "$WORK/srv.pem" >>"$WORK/tls.s3rver.log" 2>&1 </dev/null &
PIDS+=($!)
for ((i = 0; i < 100; i++)); do curl -sk -o /dev/null "https://127.0.0.1:$tls_port/" && break; sleep 0.1; done
TLS=https://127.0.0.1:$tls_port
expect_fail "TLS: unknown CA is refused" "unexpected answer from .* \\(TLS, protocol or format\\)" -- s3://models/m "$MNT" -o "endpoint=$TLS"
S3_ENDPOINT=$TLS mount_fs s3://models/m "$MNT" "ca_file=$WORK/ca.pem"
check "TLS: ca_file verifies the server and reads" grep -qx hello "$MNT/hello.txt"
umount_fs "$MNT"
S3_ENDPOINT=$TLS mount_fs s3://models/m "$MNT" "insecure_tls"
check "TLS: insecure_tls reads" grep -qx hello "$MNT/hello.txt"
check "TLS: insecure_tls is logged as a warning" grep -q "warning: insecure_tls" "$WORK/mnt.log"
umount_fs "$MNT"
S3_ENDPOINT=$plain_endpoint

finish
