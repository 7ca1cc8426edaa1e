#!/usr/bin/env bash
# The CSI plugin's daemons outlive the plugin's *container*: a container
# runtime stopping it kills every process in the container's cgroup, so each
# daemon goes into a systemd scope of its own (StartTransientUnit on the
# node's systemd, over its private socket). No cluster and no systemd as
# PID 1 here: the container is a cgroup2 directory of this test's holding
# the plugin, killed with cgroup.kill, and systemd is systemdfake.py (the
# same calls on the same kind of socket), first checked against Debian's own
# `systemd-run --scope`. Shown: reads through both pod targets go on across
# the container's kill, the restarted plugin finds the volume healthy, the
# same kill without scopes takes a mount down, and each way a systemd can let
# the plugin down fails the stage cleanly. Exits 77 (skipped) where no
# cgroup2 hierarchy can be written.
source "$(dirname "$0")/lib.sh"

CSI=$(dirname "$MODELFS")/modelfs-csi
PY=/usr/bin/python3 # Debian's: python3-grpcio, python3-dbus, python3-gi
[ -x "$CSI" ] || { echo "FAIL - no $CSI (build with -DMODELFS_CSI=ON)"; exit 1; }
$PY -c 'import dbus, gi, grpc' || { echo "FAIL - $PY lacks dbus, gi or grpc (scripts/deps.sh)"; exit 1; }
CG2=$(awk '$3 == "cgroup2" {print $2; exit}' /proc/mounts)
CG=${CG2:-/nonexistent}/modelfs-test.$$
if [ -z "$CG2" ] || ! mkdir "$CG" 2>/dev/null || ! mkdir "$CG/container" "$CG/scopes"; then
	echo "SKIP - no cgroup2 hierarchy to write here: no container can be made"
	rmdir "$CG" 2>/dev/null
	exit 77
fi

# the container gets a memory limit, and each scope should get the same one:
# cgroup2's memory controller where it has one to give (and the scopes then
# have memory.max), else a v1 memory cgroup beside (a hybrid node)
MEM=
MEM2=
V1MEM=
if grep -qw memory "$CG2/cgroup.subtree_control" 2>/dev/null &&
	echo +memory >"$CG/cgroup.subtree_control" && echo +memory >"$CG/scopes/cgroup.subtree_control"; then
	MEM=$((1 << 30))
	MEM2=1
	echo "$MEM" >"$CG/container/memory.max"
elif [ -d /sys/fs/cgroup/memory ] && mkdir "/sys/fs/cgroup/memory/modelfs-test.$$" 2>/dev/null; then
	V1MEM=/sys/fs/cgroup/memory/modelfs-test.$$
	MEM=$((1 << 30))
	echo "$MEM" >"$V1MEM/memory.limit_in_bytes"
else
	log "no memory controller to give: the scopes' MemoryMax is not shown here"
fi

# kill_cg DIR: every process in the cgroup DIR, as a container runtime does
kill_cg() {
	local i p
	if [ -e "$1/cgroup.kill" ]; then
		echo 1 >"$1/cgroup.kill"
	else
		for p in $(cat "$1/cgroup.procs"); do kill -9 "$p"; done
	fi
	for ((i = 0; i < 100; i++)); do
		grep -q "populated 0" "$1/cgroup.events" && return 0
		sleep 0.05
	done
	return 1
}
# after lib.sh's cleanup (which unmounts, so the daemons end): what is left
# in this test's cgroups is this test's, and goes with them
cg_clean() {
	local d p
	for d in $(find "$CG" -mindepth 1 -depth -type d 2>/dev/null) "$CG"; do
		kill_cg "$d" 2>/dev/null
		rmdir "$d" 2>/dev/null
	done
	if [ -n "$V1MEM" ]; then
		for p in $(cat "$V1MEM/cgroup.procs"); do kill -9 "$p"; done
		for ((p = 0; p < 50; p++)); do rmdir "$V1MEM" 2>/dev/null && break; sleep 0.1; done
	fi
}
trap 'cleanup; cg_clean' EXIT

GEN=$WORK/gen
mkdir -p "$GEN" "$WORK/run" "$WORK/pods/a" "$WORK/pods/b" "$WORK/staging"
protoc --python_out="$GEN" -I"$HERE/../../csi" "$HERE/../../csi/csi.proto" || exit 1
mount -t tmpfs -o size=4m,mode=0700 tmpfs "$WORK/run" && TMPFS_MOUNTS+=("$WORK/run")
SOCK=$WORK/csi.sock
BUS=$WORK/systemd.sock
STAGING=$WORK/staging/vol1
TA=$WORK/pods/a/mount
TB=$WORK/pods/b/mount
S2=$WORK/staging/vol2
S3=$WORK/staging/vol3
MOUNTS+=("$TA" "$TB" "$STAGING" "$S2" "$S3")

rpc() { OUT=$($PY "$HERE/csi_client.py" "$GEN" "$SOCK" "$@" 2>&1); }
# plugin_start [--systemd X]: the plugin, alone in the "container"
plugin_start() {
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY setsid sh -c \
		'echo $$ >"$0/cgroup.procs" && { [ -z "$1" ] || echo $$ >"$1/cgroup.procs"; } && shift &&
		exec "$@"' "$CG/container" "$V1MEM" "$CSI" \
		--endpoint="unix://$SOCK" --node-id node-1 --state-dir="$WORK/state" \
		--run-dir "$WORK/run" --cache-dir "$WORK/cache" --check-interval 1 "$@" \
		>>"$WORK/plugin.log" 2>&1 </dev/null &
	CSI_PID=$!
	PIDS+=("$CSI_PID")
	csi_ready
}
# the container stopped, as a runtime does; the socket goes with it
container_kill() {
	{ kill_cg "$CG/container" && wait "$CSI_PID"; } 2>/dev/null # no "Killed" from bash
	rm -f "$SOCK"
	! kill -0 "$CSI_PID" 2>/dev/null
}
daemons() { pgrep -f "modelfs s3://models/llama $1" | sort -n; }
calls() { [ -f "$WORK/fake.log" ] && wc -l <"$WORK/fake.log" || echo 0; }

log "a model in s3rver"
s3_start s3
$S3TOOL mb models
small_model "$WORK/model" 24
$S3TOOL putdir models llama "$WORK/model" || exit 1
(cd "$WORK/model" && sha256sum model.safetensors sub/config.json) >"$WORK/want.sha"

# ---- the fake systemd, checked against systemd's own client
$PY "$HERE/systemdfake.py" "$BUS" "$CG/scopes" "$WORK/fake.log" "$WORK/fake.ctl" \
	>"$WORK/fake.out" 2>&1 &
PIDS+=($!)
for ((i = 0; i < 100; i++)); do [ -S "$BUS" ] && break; sleep 0.1; done
# systemd-run finds systemd at /run/systemd/private (and /run/systemd/system
# says systemd runs): both on a /run of its own, in a mount namespace of its own
got=$(timeout 20 unshare -m sh -c 'mount -t tmpfs tmpfs /run && mkdir -p /run/systemd/system &&
	touch /run/systemd/private && mount --bind "$0" /run/systemd/private &&
	exec systemd-run --scope --unit=modelfs-check.scope --description=check cat /proc/self/cgroup' \
	"$BUS" 2>"$WORK/systemd-run.err")
check_all "systemd-run --scope (Debian's systemd $(systemd-run --version | head -1 | awk '{print $2}')) runs in the fake's scope ($(grep '^0::' <<<"$got"))" \
	'grep -q "^0::.*/scopes/modelfs-check.scope$" <<<"$got" && grep -q "Running scope as unit: modelfs-check.scope" "$WORK/systemd-run.err"'
: >"$WORK/fake.log"

# ---- a plugin that cannot use the systemd it is given: one line, exit 2
mkdir -p "$WORK/state-x"
"$CSI" --endpoint "unix://$WORK/x.sock" --node-id n --state-dir "$WORK/state-x" \
	--run-dir "$WORK/run" --systemd "$WORK/no-such.sock" >"$WORK/x.out" 2>&1
rc=$?
check_all "--systemd at no socket: exit 2, one line ($(head -1 "$WORK/x.out"))" \
	'[ $rc -eq 2 ] && [ "$(wc -l <"$WORK/x.out")" -eq 1 ] && grep -q "cannot reach systemd at unix:path=$WORK/no-such.sock" "$WORK/x.out"'
# without hostPID: the plugin's pid namespace is not systemd's
unshare -pf --mount-proc "$CSI" --endpoint "unix://$WORK/x.sock" --node-id n \
	--state-dir "$WORK/state-x" --run-dir "$WORK/run" --systemd "$BUS" >"$WORK/x.out" 2>&1
rc=$?
check_all "a plugin in a pid namespace of its own: exit 2 ($(head -1 "$WORK/x.out"))" \
	'[ $rc -eq 2 ] && grep -q "is in another pid namespace: run the plugin with hostPID: true" "$WORK/x.out"'
# the default: /run/systemd/private where there is one
timeout 20 unshare -m sh -c 'mount -t tmpfs tmpfs /run && mkdir /run/systemd && touch /run/systemd/private &&
	mount --bind "$0" /run/systemd/private && exec "$1" --endpoint "unix://$2/x.sock" --node-id n \
	--state-dir "$2/state-x" --run-dir "$2/run"' "$BUS" "$CSI" "$WORK" >"$WORK/x.out" 2>&1 &
XP=$!
PIDS+=("$XP")
for ((i = 0; i < 100; i++)); do grep -q "serving" "$WORK/x.out" && break; sleep 0.1; done
kill "$XP"
wait "$XP"
check_all "with no --systemd it uses /run/systemd/private ($(grep systemd "$WORK/x.out"))" \
	'grep -q "daemons go into systemd scopes (unix:path=/run/systemd/private, systemd 252-fake; " "$WORK/x.out"'
# a socket that takes the connection and never answers: bounded, not sd-bus's 90 s
$PY -c 'import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.bind(sys.argv[1])
s.listen()
c = s.accept()
time.sleep(60)' "$WORK/mute.sock" &
PIDS+=($!)
for ((i = 0; i < 100; i++)); do [ -S "$WORK/mute.sock" ] && break; sleep 0.1; done
t0=$(date +%s%N)
"$CSI" --endpoint "unix://$WORK/x.sock" --node-id n --state-dir "$WORK/state-x" \
	--run-dir "$WORK/run" --systemd "$WORK/mute.sock" >"$WORK/x.out" 2>&1
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
check_all "--systemd at a socket that never answers: exit 2 in $ms ms ($(head -1 "$WORK/x.out"))" \
	'[ $rc -eq 2 ] && [ $ms -lt 9000 ] && grep -q "did not answer: no handshake within 5 s" "$WORK/x.out"'

# ---- stage and publish, the daemon in a scope
check "the plugin starts in its container" plugin_start --systemd "$BUS"
limit="no MemoryMax: this container has no memory limit"
[ -n "$MEM" ] && limit="MemoryMax 1024 MiB, this container's limit"
want="daemons go into systemd scopes (unix:path=$BUS, systemd 252-fake; $limit)"
# a hybrid or v1 node: the scope may not take the daemon out of the runtime's v1 cgroups
[ "$(stat -f -c %T /sys/fs/cgroup)" = cgroup2fs ] ||
	want="$want; but this node's cgroups are not cgroup v2 alone: a container runtime may still end them with this container"
check_all "  ... and says where daemons go ($(grep "daemons go" "$WORK/plugin.log"))" \
	'grep -qxF "modelfs-csi: $want" "$WORK/plugin.log"'
CAP='"volumeCapability": {"mount": {"mountFlags": ["endpoint='$S3_ENDPOINT'"]}, "accessMode": {"mode": "MULTI_NODE_READER_ONLY"}}'
SEC='"secrets": {"AWS_ACCESS_KEY_ID": "S3RVER", "AWS_SECRET_ACCESS_KEY": "S3RVER"}'
stage() { rpc Node/NodeStageVolume '{"volumeId": "'$1'", "stagingTargetPath": "'$2'", '"$CAP"', "volumeContext": {"source": "s3://models/llama"}, '"$SEC"'}'; }
PUB='"stagingTargetPath": "'$STAGING'", '$CAP', "readonly": true'
stage pv-1 "$STAGING"
check_all "NodeStageVolume: OK ($OUT)" '[[ $OUT == "OK {}" ]]'
for t in "$TA" "$TB"; do
	rpc Node/NodePublishVolume '{"volumeId": "pv-1", "targetPath": "'$t'", '"$PUB"'}'
	check_all "NodePublishVolume to $t: OK" '[[ $OUT == "OK {}" ]]'
done
call=$(head -1 "$WORK/fake.log")
UNIT=$($PY -c 'import json, sys; print(json.loads(sys.argv[1])["name"])' "$call" 2>/dev/null)
check_all "one StartTransientUnit: mode fail; Description, PIDs, CollectMode${MEM:+, MemoryMax $MEM}; no aux ($call)" \
	'[ "$(calls)" -eq 1 ] && $PY -c "import json, sys, re
c, mem = json.loads(sys.argv[1]), sys.argv[2]
assert re.fullmatch(r\"modelfs-[0-9a-f]{12}-[0-9]+\.scope\", c[\"name\"]), c
assert c[\"mode\"] == \"fail\" and c[\"aux\"] == []
assert sorted(c[\"props\"]) == [\"CollectMode\", \"Description\"] + ([\"MemoryMax\"] if mem else []) + [\"PIDs\"]
assert not mem or c[\"props\"][\"MemoryMax\"] == int(mem)
assert c[\"props\"][\"CollectMode\"] == \"inactive-or-failed\" and len(c[\"props\"][\"PIDs\"]) == 1
assert \"staged at $STAGING\" in c[\"props\"][\"Description\"]" "$call" "$MEM"'
[ -n "$MEM2" ] && check_all "  ... the scope's memory.max is the container's ($(cat "$CG/scopes/$UNIT/memory.max"))" \
	'[ "$(cat "$CG/scopes/$UNIT/memory.max")" = "$MEM" ]'
DPIDS=$(daemons "$STAGING" | tr '\n' ' ')
check_all "the daemon and its fd holder ($DPIDS) are in $UNIT, the plugin alone in the container" \
	'[ -n "$DPIDS" ] && [ "$(sort -n "$CG/scopes/$UNIT/cgroup.procs" | tr "\n" " ")" = "$DPIDS" ] &&
	 [ "$(cat "$CG/container/cgroup.procs")" = "$CSI_PID" ]'
drop_caches
(cd "$TA" && sha256sum -c --quiet "$WORK/want.sha") >"$WORK/sha-a.log" 2>&1
check "the model through pod a: sha256 matches" [ $? -eq 0 ]

# ---- the container killed while a pod reads, then started again
want=$(awk '/model.safetensors/ {print $1}' "$WORK/want.sha")
python3 "$HERE/reader.py" seq "$TA/model.safetensors" "$want" "$WORK/stop" >"$WORK/reader.log" 2>&1 &
RD=$!
PIDS+=("$RD")
sleep 0.5
check "the container is killed (cgroup.kill), the plugin with it" container_kill
check_all "  ... the daemon lives on in its scope ($DPIDS)" \
	'[ "$(daemons "$STAGING" | tr "\n" " ")" = "$DPIDS" ]'
drop_caches
(cd "$TA" && sha256sum -c --quiet "$WORK/want.sha") >"$WORK/sha-a2.log" 2>&1 &&
	(cd "$TB" && sha256sum -c --quiet "$WORK/want.sha") >"$WORK/sha-b2.log" 2>&1
check "  ... both targets read the model with no plugin running (sha256)" [ $? -eq 0 ]
check "the container starts again" plugin_start --systemd "$BUS"
check_all "  ... and the plugin finds the volume healthy, its mounts left alone" \
	'grep -q "volume pv-1: healthy at $STAGING, 2 target(s)" "$WORK/plugin.log" && [ "$(calls)" -eq 1 ]'
sleep 1
touch "$WORK/stop"
wait "$RD"
rd=$?
check_all "a reader across the container's kill and restart: no error ($(tail -1 "$WORK/reader.log"))" \
	'[ $rd -eq 0 ] && grep -q "errors=0" "$WORK/reader.log"'

# ---- while its scope's job runs, modelfs's first process holds none of the
# plugin's files (its lock, kubelet's socket, other spawns' pipes)
echo slowfail >"$WORK/fake.ctl"
stage pv-2 "$S2" &
SP=$!
for ((i = 0; i < 100; i++)); do [ "$(calls)" -eq 2 ] && break; sleep 0.05; done
kid=$(tail -1 "$WORK/fake.log" | $PY -c 'import json, sys; print(json.load(sys.stdin)["props"]["PIDs"][0])')
fds=$(ls /proc/"$kid"/fd 2>/dev/null | sort -n | tr '\n' ' ')
wait $SP
check_all "waiting for its scope, modelfs's first process ($kid) has only fds 0 1 2 ($fds)" \
	'[ "$fds" = "0 1 2 " ]'

# ---- systemd letting the plugin down: the stage fails, nothing is left
for how in failed nomove; do
	echo "$how" >"$WORK/fake.ctl"
	stage pv-2 "$S2"
	case $how in failed) why="could not start modelfs-.*: failed" ;; nomove) why="is not in it" ;; esac
	check_all "a scope job that $how: UNAVAILABLE ($OUT)" \
		'[[ $OUT == "ERROR UNAVAILABLE:"* ]] && grep -q "$why" <<<"$OUT"'
	check_all "  ... no mount, no daemon, no state, no secrets for it" \
		'! mountpoint -q "$S2" && [ -z "$(daemons "$S2")" ] && [ "$(ls "$WORK/state" | grep -vc "\.log$")" -eq 1 ] && [ "$(ls "$WORK/run" | wc -l)" -eq 1 ]'
done
rm -f "$WORK/fake.ctl"

# ---- the same kill without scopes takes a mount down
kill "$CSI_PID"
wait "$CSI_PID"
check "the container starts again without scopes (--systemd none)" plugin_start --systemd none
stage pv-3 "$S3"
check_all "NodeStageVolume of a second volume: OK, no scope asked for" '[[ $OUT == "OK {}" ]] && [ "$(calls)" -eq 4 ]'
D3=$(daemons "$S3" | tr '\n' ' ')
check_all "  ... its daemon ($D3) is in the container" \
	'[ -n "$D3" ] && (for p in $D3; do grep -qx "$p" "$CG/container/cgroup.procs" || exit 1; done)'
check "the container is killed again" container_kill
check_all "  ... the second volume's mount is dead ($(stat "$S3/sub/config.json" 2>&1 | head -1))" \
	'! stat "$S3/sub/config.json" >/dev/null 2>&1 && [ -z "$(daemons "$S3")" ]'
check_all "  ... the first volume's reads on (its daemon in its scope)" \
	'cmp -s "$TA/sub/config.json" "$WORK/model/sub/config.json" && [ "$(daemons "$STAGING" | tr "\n" " ")" = "$DPIDS" ]'
check "the container starts again, with scopes" plugin_start --systemd "$BUS"
for ((i = 0; i < 100; i++)); do grep -q "volume pv-3: repaired" "$WORK/plugin.log" && break; sleep 0.1; done
check_all "  ... it mounts the dead volume again in place, in a scope of its own" \
	'grep -q "volume pv-3: repaired" "$WORK/plugin.log" && [ "$(calls)" -eq 5 ] &&
	 cmp -s "$S3/sub/config.json" "$WORK/model/sub/config.json" &&
	 (for p in $(daemons "$S3"); do grep -q "^0::.*/scopes/modelfs-" /proc/$p/cgroup || exit 1; done)'

# ---- unstage: the daemons end, their scopes empty
for t in "$TA" "$TB"; do rpc Node/NodeUnpublishVolume '{"volumeId": "pv-1", "targetPath": "'$t'"}'; done
rpc Node/NodeUnstageVolume '{"volumeId": "pv-1", "stagingTargetPath": "'$STAGING'"}'
u1=$OUT
rpc Node/NodeUnstageVolume '{"volumeId": "pv-3", "stagingTargetPath": "'$S3'"}'
for ((i = 0; i < 50; i++)); do [ -z "$(daemons "$STAGING")$(daemons "$S3")" ] && break; sleep 0.1; done
check_all "unstage of both: OK, the daemons gone, the scopes empty" \
	'[[ $u1 == "OK {}" && $OUT == "OK {}" ]] && [ -z "$(daemons "$STAGING")$(daemons "$S3")" ] &&
	 (for f in "$CG"/scopes/modelfs-*/cgroup.procs; do [ -z "$(cat "$f")" ] || exit 1; done)'
kill "$CSI_PID"
wait "$CSI_PID"
check "the plugin exits 0 on SIGTERM" [ $? -eq 0 ]
check_all "no sanitizer report in the daemons' logs" \
	'! grep -lqE "ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:" "$WORK"/state/*.log'

finish
