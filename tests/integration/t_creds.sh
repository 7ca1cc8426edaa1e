#!/usr/bin/env bash
# Temporary credentials, the way pods and instances get them: AWS IRSA (STS
# AssumeRoleWithWebIdentity), EC2 IMDSv2, Alibaba RRSA (STS
# AssumeRoleWithOIDC) and ECS RAM-role metadata, all from credfake.py with
# keys that live LIFE seconds; the stores (s3proxy.py before s3rver, and
# ossfake.py) refuse a key once it has expired. A reader on each mount reads
# the model (no_cache: every read is a signed GET) across three expiries and
# must see no error. Then the STS goes away: reads fail once the keys
# expire (an error, not a hang or stale bytes), and work again when it is
# back. Tokens and keys never show in a log or on a command line.
source "$(dirname "$0")/lib.sh"

LIFE=${LIFE:-4}
RUN=$((3 * LIFE + 2))
TOKEN=$WORK/token
echo "eyJhbGciOiJSUzI1NiJ9.pod-token-1.sig" >"$TOKEN"
chmod 600 "$TOKEN"
STATE=$WORK/sts.json
ROLE_AWS=arn:aws:iam::123456789012:role/model-reader
ROLE_ALI=acs:ram::1234567890:role/model-reader
PROVIDER_ALI=acs:ram::1234567890:oidc-provider/ack-rrsa-c123

cred_up() { # NAME ROLE_ARN [PORT]: prints the port
	rm -f "$WORK/cred.port.$1"
	CREDFAKE_LIFETIME=$LIFE CREDFAKE_TOKEN_FILE=$TOKEN CREDFAKE_ROLE_ARN=$2 \
		CREDFAKE_PROVIDER_ARN=$PROVIDER_ALI CREDFAKE_PORT=${3:-0} \
		setsid python3 "$HERE/credfake.py" "$WORK/cred.port.$1" "$STATE" >/dev/null 2>>"$WORK/credfake.log" &
	echo $! >"$WORK/cred.pid.$1"
	for _ in $(seq 100); do [ -s "$WORK/cred.port.$1" ] && break; sleep 0.05; done
	cat "$WORK/cred.port.$1"
}
# two fakes: one for the AWS role, one for Alibaba's (each checks its ARN)
CRED_AWS=http://127.0.0.1:$(cred_up aws "$ROLE_AWS")
CRED_ALI=http://127.0.0.1:$(cred_up ali "$ROLE_ALI")
PIDS+=("$(cat "$WORK/cred.pid.aws")" "$(cat "$WORK/cred.pid.ali")")

log "the model, in s3rver (behind the checking proxy) and in the fake OSS"
python3 -c 'import os,sys; open(sys.argv[1],"wb").write(os.urandom(24<<20))' "$WORK/model.bin"
WANT=$(sha256sum "$WORK/model.bin" | cut -d' ' -f1)
s3_start s3
$S3TOOL mb models
$S3TOOL put models m/model.bin "$WORK/model.bin" >/dev/null || exit 1
export S3PROXY_STS=$STATE
proxy_start
mkdir -p "$WORK/ossroot/models/m"
cp "$WORK/model.bin" "$WORK/ossroot/models/m/"
OSSFAKE_STS=$STATE OSSFAKE_AK=fixed-ak OSSFAKE_SK=fixed-sk \
	setsid python3 "$HERE/ossfake.py" "$WORK/ossroot" "$WORK/oss.port" 2>>"$WORK/ossfake.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/oss.port" ] && break; sleep 0.05; done
OSS_EP=http://127.0.0.1:$(cat "$WORK/oss.port")

# no long-lived keys anywhere: each mount gets only its pod's or instance's way
NOKEYS=(env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY -u OSS_ACCESS_KEY_ID -u OSS_ACCESS_KEY_SECRET)
S3_ENDPOINT=$PROXY_ENDPOINT
REAL=$MODELFS
# mount_fs runs "$MODELFS": a wrapper that sets each mount's environment
wrap() { # NAME ENV... : a script that runs modelfs with that environment
	local w=$WORK/modelfs-$1
	shift
	printf '#!/bin/sh\nexec %s %s %q "$@"\n' "${NOKEYS[*]}" "$*" "$REAL" >"$w"
	chmod +x "$w"
	echo "$w"
}
MODELFS=$(wrap irsa AWS_WEB_IDENTITY_TOKEN_FILE="$TOKEN" AWS_ROLE_ARN="$ROLE_AWS" \
	AWS_ROLE_SESSION_NAME=llama-server AWS_ENDPOINT_URL_STS="$CRED_AWS")
check "IRSA: s3:// mounts with a web identity token" mount_fs s3://models/m "$WORK/irsa" no_cache -d
MODELFS=$(wrap imds AWS_EC2_METADATA_DISABLED=false AWS_EC2_METADATA_SERVICE_ENDPOINT="$CRED_AWS")
check "IMDSv2: s3:// mounts with the instance's role" mount_fs s3://models/m "$WORK/imds" no_cache -d
MODELFS=$(wrap rrsa ALIBABA_CLOUD_OIDC_TOKEN_FILE="$TOKEN" ALIBABA_CLOUD_ROLE_ARN="$ROLE_ALI" \
	ALIBABA_CLOUD_OIDC_PROVIDER_ARN="$PROVIDER_ALI" ALIBABA_CLOUD_STS_ENDPOINT="$CRED_ALI")
check "RRSA: oss:// mounts with an OIDC token" \
	mount_fs oss://models/m "$WORK/rrsa" "no_cache,endpoint=$OSS_EP,region=cn-hangzhou" -d
MODELFS=$(wrap ecs ALIBABA_CLOUD_ECS_METADATA_DISABLED=false ALIBABA_CLOUD_ECS_METADATA_ENDPOINT="$CRED_ALI")
check "ECS RAM role: oss:// mounts with the instance's role" \
	mount_fs oss://models/m "$WORK/ecs" "no_cache,endpoint=$OSS_EP,region=cn-hangzhou" -d
MODELFS=$REAL

log "four readers across three expiries ($LIFE s keys, $RUN s)"
RD=()
for n in irsa imds rrsa ecs; do
	python3 "$HERE/reader.py" seq "$WORK/$n/model.bin" "$WANT" "$WORK/stop" >"$WORK/reader-$n.out" 2>&1 &
	RD+=($!)
	PIDS+=($!)
done
sleep $((RUN / 2))
echo "eyJhbGciOiJSUzI1NiJ9.pod-token-2.sig" >"$TOKEN.new" && mv "$TOKEN.new" "$TOKEN" # kubelet rotates it
sleep $((RUN - RUN / 2))
touch "$WORK/stop"
i=0
for n in irsa imds rrsa ecs; do
	wait "${RD[$i]}"
	rc=$?
	i=$((i + 1))
	issued=$(grep -c "^$(case $n in irsa) echo sts ;; imds) echo ec2 ;; rrsa) echo oidc ;; ecs) echo ecs ;; esac) " "$STATE.log")
	check_all "$n: a reader across three expiries sees no error ($(cat "$WORK/reader-$n.out"); $issued keys issued)" \
		'[ $rc -eq 0 ] && grep -q "errors=0" "$WORK/reader-$n.out" && [ "$issued" -ge 4 ]'
done
used=$(sort -u "$STATE.used" | wc -l)
check_all "the S3 store saw requests signed with $used temporary keys, none expired" \
	'[ "$used" -ge 8 ] && ! grep -q ExpiredToken "$WORK"/irsa.log "$WORK"/imds.log'
check_all "the OIDC token was read again after kubelet rotated it (no call refused)" \
	'! grep -q "^error" "$STATE.log"'
check_all "the refreshes are logged, without a key or token" \
	'grep -q "credentials: STS AssumeRoleWithWebIdentity for $ROLE_AWS: new keys" "$WORK/irsa.log" &&
	 grep -q "credentials: ECS instance metadata at $CRED_ALI: new keys" "$WORK/ecs.log"'
secrets_seen=0
for s in $(python3 -c 'import json,sys; [print(v["sk"]+"\n"+v["token"]) for v in json.load(open(sys.argv[1])).values()]' "$STATE") pod-token-1 pod-token-2; do
	grep -qF -- "$s" "$WORK"/irsa.log "$WORK"/imds.log "$WORK"/rrsa.log "$WORK"/ecs.log && secrets_seen=$((secrets_seen + 1))
	for p in $(pgrep -f "$REAL"); do grep -qaF -- "$s" /proc/$p/cmdline 2>/dev/null && secrets_seen=$((secrets_seen + 1)); done
done
check "no key, session token or pod token in any log or command line" [ $secrets_seen -eq 0 ]

log "the STS goes away: reads fail once the keys expire, and work again when it is back"
CRED_AWS_PID=$(cat "$WORK/cred.pid.aws")
kill "$CRED_AWS_PID"
wait "$CRED_AWS_PID" 2>/dev/null
sleep $((LIFE + 1))
drop_caches # the reader's last pass is in the page cache
t0=$(date +%s)
timeout 30 cat "$WORK/irsa/model.bin" >/dev/null 2>"$WORK/cat.err"
rc=$?
took=$(($(date +%s) - t0))
check_all "  ... a read with expired keys is an error, in ${took} s (rc $rc: $(head -c 80 "$WORK/cat.err"))" \
	'[ $rc -ne 0 ] && [ $rc -ne 124 ]'
check_all "  ... and the log says why" 'grep -q "cannot refresh" "$WORK/irsa.log"'
cred_up aws "$ROLE_AWS" "${CRED_AWS##*:}" >/dev/null
PIDS+=("$(cat "$WORK/cred.pid.aws")")
ok_after=
for _ in $(seq 150); do
	if cmp -s "$WORK/irsa/model.bin" "$WORK/model.bin" 2>/dev/null; then ok_after=1; break; fi
	sleep 0.2
done
check "  ... the STS back: the same mount reads the model again" [ -n "$ok_after" ]

for n in irsa imds rrsa ecs; do umount_fs "$WORK/$n"; done
finish
