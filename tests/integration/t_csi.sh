#!/usr/bin/env bash
# The CSI node plugin (modelfs-csi, beside modelfs) over its unix socket, with
# a real gRPC client doing what kubelet does: identity, stage, publish to two
# pod targets, read the model through both (sha256; one daemon, one fetch
# per chunk), every call twice (the spec's idempotence), bad requests
# answered with the spec's codes and nothing half-made, secrets never on a
# command line or in a log, the plugin killed with SIGKILL and started again
# while both targets are published (reads go on; it finds them healthy), a
# volume whose daemon and holder die mounted again in place, then unpublish
# and unstage.
source "$(dirname "$0")/lib.sh"

CSI=$(dirname "$MODELFS")/modelfs-csi
[ -x "$CSI" ] || { echo "FAIL - no $CSI (build with -DMODELFS_CSI=ON)"; exit 1; }
GEN=$WORK/gen
mkdir -p "$GEN" "$WORK/run" "$WORK/pods/a" "$WORK/pods/b" "$WORK/staging"
protoc --python_out="$GEN" -I"$HERE/../../csi" "$HERE/../../csi/csi.proto" || exit 1
mount -t tmpfs -o size=4m,mode=0700 tmpfs "$WORK/run" && TMPFS_MOUNTS+=("$WORK/run")
SOCK=$WORK/csi.sock
STAGING=$WORK/staging/vol1
TA=$WORK/pods/a/mount
TB=$WORK/pods/b/mount
# longer than a line buffer would hold (STS session tokens are kilobytes)
SECRET=csi-secret-$RANDOM$RANDOM-$(head -c 15000 /dev/urandom | base64 -w0 | tr -d "+/=")

# rpc METHOD JSON: the answer in $OUT, exit status of the call
# Debian's python3, with Debian's python3-grpcio and python3-protobuf
rpc() { OUT=$(/usr/bin/python3 "$HERE/csi_client.py" "$GEN" "$SOCK" "$@" 2>&1); }
# expect_code DESC CODE METHOD JSON
expect_code() {
	local d=$1 c=$2
	shift 2
	rpc "$@"
	case $OUT in "ERROR $c:"*) ok "$d ($OUT)" ;; *) fail "$d: wanted $c, got $OUT" ;; esac
}

plugin_start() {
	# the plugin's own environment has no keys: the volume's come from its secrets
	# --name=value as deploy/csi/node-plugin.yaml writes them, and --name value
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY setsid "$CSI" --endpoint="unix://$SOCK" \
		--node-id node-1 --state-dir="$WORK/state" --run-dir "$WORK/run" --systemd none \
		--cache-dir "$WORK/cache" --check-interval 1 >>"$WORK/plugin.log" 2>&1 </dev/null &
	CSI_PID=$!
	PIDS+=("$CSI_PID")
	csi_ready
}

log "a model in s3rver"
s3_start s3
$S3TOOL mb models
small_model "$WORK/model" 48
$S3TOOL putdir models llama "$WORK/model" || exit 1
(cd "$WORK/model" && sha256sum model.safetensors sub/config.json) >"$WORK/want.sha"

# ---- identity
check "the plugin starts and answers Probe" plugin_start
check_all "Probe: ready" '[[ $OUT == *"\"ready\": {\"value\": true}"* ]]'
env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY "$CSI" --endpoint="unix://$WORK/csi2.sock" \
	--node-id node-1 --state-dir="$WORK/state" --run-dir "$WORK/run" --systemd none >"$WORK/plugin2.log" 2>&1 </dev/null &
P2=$!
PIDS+=("$P2")
sleep 1.5
check_all "a second plugin on the same state dir waits for the first ($(head -1 "$WORK/plugin2.log"))" \
	'[ ! -e "$WORK/csi2.sock" ] && kill -0 $P2 && grep -q "another modelfs-csi holds $WORK/state/.lock: waiting" "$WORK/plugin2.log"'
kill "$P2"
wait "$P2" 2>/dev/null
rpc Identity/GetPluginInfo
check_all "GetPluginInfo: csi.modelfs.io and a version ($OUT)" \
	'[[ $OUT == OK*"\"name\": \"csi.modelfs.io\""* && $OUT == *vendorVersion* ]]'
rpc Identity/GetPluginCapabilities
check_all "GetPluginCapabilities: a node plugin only, no controller" '[[ $OUT == "OK {}" ]]'
rpc Node/NodeGetCapabilities
check_all "NodeGetCapabilities: STAGE_UNSTAGE_VOLUME and GET_VOLUME_STATS" \
	'[[ $OUT == *STAGE_UNSTAGE_VOLUME* && $OUT == *GET_VOLUME_STATS* ]]'
rpc Node/NodeGetInfo
check_all "NodeGetInfo: the node id" '[[ $OUT == *"\"nodeId\": \"node-1\""* ]]'

CAP='"volumeCapability": {"mount": {"mountFlags": ["endpoint='$S3_ENDPOINT'"]}, "accessMode": {"mode": "MULTI_NODE_READER_ONLY"}}'
CTX='"volumeContext": {"source": "s3://models/llama", "otherOpts": "-o metadata_ttl=60 -o attr_timeout=7200"}'
SEC='"secrets": {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER", "HF_TOKEN": "'$SECRET'"}'
STAGE='{"volumeId": "pv-llama", "stagingTargetPath": "'$STAGING'", '$CAP', '$CTX', '$SEC'}'

# ---- bad requests: the spec's codes, nothing left behind
expect_code "stage without volume_id" INVALID_ARGUMENT Node/NodeStageVolume \
	'{"stagingTargetPath": "'$STAGING'", '"$CAP"', '"$CTX"'}'
expect_code "stage without volume_capability" INVALID_ARGUMENT Node/NodeStageVolume \
	'{"volumeId": "v", "stagingTargetPath": "'$STAGING'", '"$CTX"'}'
expect_code "stage of a block volume" INVALID_ARGUMENT Node/NodeStageVolume \
	'{"volumeId": "v", "stagingTargetPath": "'$STAGING'", "volumeCapability": {"block": {}, "accessMode": {"mode": "MULTI_NODE_READER_ONLY"}}, '"$CTX"'}'
expect_code "stage with a writer access mode" INVALID_ARGUMENT Node/NodeStageVolume \
	'{"volumeId": "v", "stagingTargetPath": "'$STAGING'", "volumeCapability": {"mount": {}, "accessMode": {"mode": "MULTI_NODE_MULTI_WRITER"}}, '"$CTX"'}'
expect_code "an attribute not known (the message names it)" INVALID_ARGUMENT \
	Node/NodeStageVolume '{"volumeId": "v", "stagingTargetPath": "'$STAGING'", '"$CAP"', "volumeContext": {"source": "s3://models/llama", "bukket": "x"}}'
check_all "  ... and says which" '[[ $OUT == *bukket* ]]'
expect_code "no source at all" INVALID_ARGUMENT Node/NodeStageVolume \
	'{"volumeId": "v", "stagingTargetPath": "'$STAGING'", '"$CAP"', "volumeContext": {"otherOpts": "-o ro"}}'
expect_code "otherOpts with something not -o" INVALID_ARGUMENT Node/NodeStageVolume \
	'{"volumeId": "v", "stagingTargetPath": "'$STAGING'", '"$CAP"', "volumeContext": {"source": "s3://models/llama", "otherOpts": "-f"}}'
expect_code "akId without akSecret (a secret missing its pair)" INVALID_ARGUMENT \
	Node/NodeStageVolume '{"volumeId": "v", "stagingTargetPath": "'$STAGING'", '"$CAP"', "volumeContext": {"bucket": "models", "url": "'$S3_ENDPOINT'"}, "secrets": {"akId": "AK"}}'
check_all "  ... and names both" '[[ $OUT == *OSS_ACCESS_KEY_ID* && $OUT == *OSS_ACCESS_KEY_SECRET* ]]'
expect_code "a modelfs option that does not exist" INVALID_ARGUMENT Node/NodeStageVolume \
	'{"volumeId": "v", "stagingTargetPath": "'$STAGING'", '"$CAP"', "volumeContext": {"source": "s3://models/llama", "mountOptions": "no_such_option_zz"}, '"$SEC"'}'
expect_code "a bucket that does not exist" NOT_FOUND Node/NodeStageVolume \
	'{"volumeId": "v", "stagingTargetPath": "'$STAGING'", '"$CAP"', "volumeContext": {"source": "s3://no-such-bucket"}, '"$SEC"'}'
expect_code "a store that cannot be reached" UNAVAILABLE Node/NodeStageVolume \
	'{"volumeId": "v", "stagingTargetPath": "'$STAGING'", "volumeCapability": {"mount": {"mountFlags": ["endpoint=http://127.0.0.1:1"]}, "accessMode": {"mode": "MULTI_NODE_READER_ONLY"}}, '"$CTX"', '"$SEC"'}'
check_all "  ... nothing half-made: no mount, no state, no secrets file" \
	'! mountpoint -q "$STAGING" && [ -z "$(ls "$WORK/state" | grep -v "\.log$")" ] && [ -z "$(ls "$WORK/run")" ]'
expect_code "publish of a volume never staged" FAILED_PRECONDITION Node/NodePublishVolume \
	'{"volumeId": "pv-llama", "stagingTargetPath": "'$STAGING'", "targetPath": "'$TA'", '"$CAP"', "readonly": true}'

# ---- stage, twice
rpc Node/NodeStageVolume "$STAGE"
check_all "NodeStageVolume: OK ($OUT)" '[[ $OUT == "OK {}" ]]'
check "  ... the staging path is a live modelfs mount" mountpoint -q "$STAGING"
rpc Node/NodeStageVolume "$STAGE"
check_all "NodeStageVolume again: OK (idempotent)" '[[ $OUT == "OK {}" ]]'
expect_code "NodeStageVolume of the same volume with other attributes" ALREADY_EXISTS \
	Node/NodeStageVolume '{"volumeId": "pv-llama", "stagingTargetPath": "'$STAGING'", '"$CAP"', "volumeContext": {"source": "s3://models/other"}, '"$SEC"'}'
envf=$(ls "$WORK/run"/*.env 2>/dev/null | head -1)
check_all "the secrets: one file on the tmpfs, mode 0600" \
	'[ -n "$envf" ] && [ "$(stat -c %a "$envf")" = 600 ] && [ "$(stat -f -c %T "$envf")" = tmpfs ]'
daemons() { pgrep -f "modelfs s3://models/llama $STAGING" | while read -r p; do grep -qa __holder /proc/$p/cmdline || echo "$p"; done; }
DPID=$(daemons | head -1)
check_all "no secret on any command line (daemon $DPID, its holder, the plugin)" \
	'[ -n "$DPID" ] && ! grep -qa "$SECRET" /proc/[0-9]*/cmdline 2>/dev/null'
check_all "the daemon has it in its environment, all ${#SECRET} bytes" 'grep -qa "HF_TOKEN=$SECRET" /proc/$DPID/environ'

# ---- publish to two pods, twice each
PUB='"stagingTargetPath": "'$STAGING'", '$CAP', "readonly": true, "volumeContext": {"source": "s3://models/llama", "csi.storage.k8s.io/pod.name": "p"}'
rpc Node/NodePublishVolume '{"volumeId": "pv-llama", "targetPath": "'$TA'", '"$PUB"'}'
check_all "NodePublishVolume to pod a: OK ($OUT)" '[[ $OUT == "OK {}" ]]'
rpc Node/NodePublishVolume '{"volumeId": "pv-llama", "targetPath": "'$TB'", '"$PUB"'}'
check_all "NodePublishVolume to pod b: OK" '[[ $OUT == "OK {}" ]]'
rpc Node/NodePublishVolume '{"volumeId": "pv-llama", "targetPath": "'$TA'", '"$PUB"'}'
check_all "NodePublishVolume to pod a again: OK (idempotent)" '[[ $OUT == "OK {}" ]]'
check_all "both targets are read-only bind mounts" \
	'for t in "$TA" "$TB"; do awk -v m="$t" '"'"'$2 == m && $4 ~ /(^|,)ro(,|$)/ {f=1} END {exit !f}'"'"' /proc/mounts || exit 1; done'
drop_caches
(cd "$TA" && sha256sum -c --quiet "$WORK/want.sha") >"$WORK/sha-a.log" 2>&1
check "the model through pod a: sha256 matches" [ $? -eq 0 ]
reads_a=$("$MODELFS" stats "$STAGING" | awk '/store +reads/ {print $3}')
drop_caches
(cd "$TB" && sha256sum -c --quiet "$WORK/want.sha") >"$WORK/sha-b.log" 2>&1
check "the model through pod b: sha256 matches" [ $? -eq 0 ]
reads_b=$("$MODELFS" stats "$STAGING" | awk '/store +reads/ {print $3}')
check_all "one fetch per chunk: pod b's read cost the store nothing ($reads_a store reads, then $reads_b)" \
	'[ -n "$reads_a" ] && [ "$reads_a" -gt 0 ] && [ "$reads_a" = "$reads_b" ]'
check_all "one daemon for the volume ($(daemons | wc -l))" '[ "$(daemons | wc -l)" -eq 1 ]'
(echo x >"$TA/new") 2>/dev/null
check "a write through a target fails" [ ! -e "$TA/new" ]

rpc Node/NodeGetVolumeStats '{"volumeId": "pv-llama", "volumePath": "'$TA'"}'
check_all "NodeGetVolumeStats: bytes and inodes, condition normal ($OUT)" \
	'[[ $OUT == OK*BYTES*INODES* && $OUT != *"\"abnormal\": true"* ]]'
expect_code "NodeGetVolumeStats of a path that is no volume" NOT_FOUND Node/NodeGetVolumeStats \
	'{"volumeId": "pv-llama", "volumePath": "'$WORK/pods'"}'

# ---- the plugin killed and started again while both are published
want=$(awk '/model.safetensors/ {print $1}' "$WORK/want.sha")
python3 "$HERE/reader.py" seq "$TA/model.safetensors" "$want" "$WORK/stop" >"$WORK/reader.log" 2>&1 &
RD=$!
PIDS+=("$RD")
sleep 0.5
kill -9 "$CSI_PID"
wait "$CSI_PID" 2>/dev/null
check_all "after kill -9 of the plugin both targets still read" \
	'cmp -s "$TA/sub/config.json" "$WORK/model/sub/config.json" && cmp -s "$TB/sub/config.json" "$WORK/model/sub/config.json"'
check "the plugin starts again" plugin_start
check_all "  ... and finds the volume healthy, its mounts left alone" \
	'grep -q "volume pv-llama: healthy at $STAGING, 2 target(s)" "$WORK/plugin.log"'
check_all "  ... the same daemon serves ($DPID)" '[ "$(daemons)" = "$DPID" ]'
sleep 1
touch "$WORK/stop"
wait "$RD"
rd=$?
check_all "a reader across the plugin's kill and restart: no error ($(tail -1 "$WORK/reader.log"))" \
	'[ $rd -eq 0 ] && grep -q "errors=0" "$WORK/reader.log"'
rpc Node/NodeStageVolume "$STAGE"
check_all "NodeStageVolume after the restart: OK" '[[ $OUT == "OK {}" ]]'

# ---- a daemon that does not answer (stopped): reported, never waited on
kill -STOP "$DPID"
t0=$(date +%s%N)
rpc Node/NodeGetVolumeStats '{"volumeId": "pv-llama", "volumePath": "'$STAGING'"}'
ms=$((($(date +%s%N) - t0) / 1000000))
check_all "NodeGetVolumeStats of a hung daemon: abnormal, within the 5 s probe ($ms ms)" \
	'[[ $OUT == *"\"abnormal\": true"* && $OUT == *"does not answer"* ]] && [ $ms -lt 9000 ]'
rpc Identity/Probe
check_all "  ... the plugin answers other calls meanwhile" '[[ $OUT == OK* ]]'
for ((i = 0; i < 150; i++)); do
	grep -q "volume pv-llama: cannot repair.*does not answer (left alone)" "$WORK/plugin.log" && break
	sleep 0.1
done
check_all "  ... the checker finds it hung and leaves it alone" \
	'grep -q "volume pv-llama: cannot repair.*does not answer (left alone) (again in 10 s)" "$WORK/plugin.log" && [ "$(daemons)" = "$DPID" ]'
kill -CONT "$DPID"
rpc Node/NodeGetVolumeStats '{"volumeId": "pv-llama", "volumePath": "'$TA'"}'
check_all "  ... and once it answers again, it is well" \
	'[[ $OUT == OK*BYTES* && $OUT != *"\"abnormal\": true"* ]]'

# ---- the daemon and its holder die: the plugin mounts again in place
kill_dead "$STAGING" "$DPID"
for ((i = 0; i < 100; i++)); do
	grep -q "volume pv-llama: repaired" "$WORK/plugin.log" && break
	sleep 0.1
done
check_all "a dead mount is found and mounted again ($(grep -o 'repaired.*' "$WORK/plugin.log" | head -1))" \
	'grep -q "volume pv-llama: repaired: $STAGING mounted again, 2 target(s) bound" "$WORK/plugin.log"'
drop_caches
(cd "$TA" && sha256sum -c --quiet "$WORK/want.sha") >"$WORK/sha-a2.log" 2>&1
check "  ... pod a's target reads the model again (sha256)" [ $? -eq 0 ]
(cd "$TB" && sha256sum -c --quiet "$WORK/want.sha") >"$WORK/sha-b2.log" 2>&1
check "  ... pod b's too" [ $? -eq 0 ]

# ---- unpublish, unstage, each twice
expect_code "NodeUnstageVolume while published" FAILED_PRECONDITION Node/NodeUnstageVolume \
	'{"volumeId": "pv-llama", "stagingTargetPath": "'$STAGING'"}'
for t in "$TA" "$TB" "$TA"; do
	rpc Node/NodeUnpublishVolume '{"volumeId": "pv-llama", "targetPath": "'$t'"}'
	check_all "NodeUnpublishVolume $(basename "$(dirname "$t")"): OK" '[[ $OUT == "OK {}" ]]'
done
check_all "  ... the targets are gone" '[ ! -e "$TA" ] && [ ! -e "$TB" ]'
DPID=$(daemons | head -1)
rpc Node/NodeUnstageVolume '{"volumeId": "pv-llama", "stagingTargetPath": "'$STAGING'"}'
check_all "NodeUnstageVolume: OK" '[[ $OUT == "OK {}" ]]'
rpc Node/NodeUnstageVolume '{"volumeId": "pv-llama", "stagingTargetPath": "'$STAGING'"}'
check_all "NodeUnstageVolume again: OK (idempotent)" '[[ $OUT == "OK {}" ]]'
for ((i = 0; i < 50; i++)); do kill -0 "$DPID" 2>/dev/null || break; sleep 0.1; done
check_all "  ... no mount, no state, no secrets, the daemon gone" \
	'! mountpoint -q "$STAGING" && [ -z "$(ls "$WORK/state" | grep -v "\.log$")" ] && [ -z "$(ls "$WORK/run")" ] && ! kill -0 "$DPID" 2>/dev/null'
check_all "no secret in the plugin's or the daemon's log" \
	'! grep -rqa "$SECRET" "$WORK/plugin.log" "$WORK/state"'
kill "$CSI_PID"
wait "$CSI_PID"
check "the plugin exits 0 on SIGTERM" [ $? -eq 0 ]
# the daemons log beside the plugin's state
check_all "no sanitizer report in the daemons' logs" \
	'! grep -lqE "ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:" "$WORK"/state/*.log'

finish
