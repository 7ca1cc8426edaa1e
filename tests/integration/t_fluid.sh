#!/usr/bin/env bash
# `modelfs fluid` (modelfs-fluid, beside modelfs): the FUSE container's
# entrypoint of Fluid's ThinRuntime, given config files shaped exactly as
# Fluid writes them (one line of JSON; secrets as paths of files under a
# secrets directory laid out as Kubernetes mounts a Secret). An OSS mount
# (the fake OSS, checking signatures) with fs.oss.* keys from secret files:
# read through the mount (sha256), the keys in the daemon's environment
# and nowhere in ps or a log, the options of every layer on its command
# line, a crash of its daemon survived (the holder), SIGTERM: unmounted and
# exit 0. An S3 mount (s3rver) and an OSS mount together: each at
# targetPath/NAME, the shared metrics port spread over them, keys from both
# shapes of encryptOptions; its daemon and holder killed: exit 1 and
# nothing left mounted. An unmount from outside (Fluid's default preStop):
# exit 0. Broken configs and failed mounts: a non-zero exit, one line on
# stderr, no mount left. And every option `modelfs --help` lists is one
# modelfs fluid takes.
source "$(dirname "$0")/lib.sh"

FLUID=$(dirname "$MODELFS")/modelfs-fluid
[ -x "$FLUID" ] || { echo "FAIL - no $FLUID"; exit 1; }
SEC=$WORK/secrets
ROOT=$WORK/runtime-mnt/thin/default
export MODELFS_FLUID_SECRETS_DIR=$SEC
unset MOUNT_OPTIONS MOUNT_POINT OSS_ACCESS_KEY_ID OSS_ACCESS_KEY_SECRET OSS_SESSION_TOKEN
OSS_AK=fluid-ak-$RANDOM
OSS_SK=fluid-secret-$RANDOM$RANDOM$RANDOM
FLUIDS=()

# what a test leaves running is stopped first (SIGINT: at once, unmounting)
fluid_cleanup() {
	local p
	for p in "${FLUIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
	for p in "${FLUIDS[@]}"; do
		for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
	done
	cleanup
}
trap fluid_cleanup EXIT

# fluid_start CONFIG LOG [ARGS...]: modelfs fluid in a session of its own,
# with no keys in its environment (they come from the config); sets FL_PID
fluid_start() {
	local conf=$1 log=$2
	shift 2
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY setsid "$FLUID" "$@" "$conf" \
		>"$log.out" 2>"$log" </dev/null &
	FL_PID=$!
	PIDS+=("$FL_PID")
	FLUIDS+=("$FL_PID")
}
# live DIR: a live FUSE mount on DIR (one statfs, answered by its daemon)
live() { [ "$(stat -f -c %t "$1" 2>/dev/null)" = 65735546 ] && mountpoint -q "$1"; }
# wait_live DIR...: every DIR live within 30 s, while modelfs fluid runs
wait_live() {
	local d ok
	for _ in $(seq 300); do
		ok=1
		for d in "$@"; do live "$d" || ok=; done
		[ -n "$ok" ] && return 0
		kill -0 "$FL_PID" 2>/dev/null || return 1
		sleep 0.1
	done
	return 1
}
# wait_exit PID SECONDS: sets RC to its exit status, or fails
wait_exit() {
	RC=
	for _ in $(seq $(($2 * 10))); do
		if ! kill -0 "$1" 2>/dev/null; then
			wait "$1"
			RC=$?
			return 0
		fi
		sleep 0.1
	done
	return 1
}
# in_mounts DIR: DIR (or anything below it) in /proc/mounts
in_mounts() { awk -v d="$1" '$2 == d || index($2, d "/") == 1 { f = 1 } END { exit !f }' /proc/mounts; }
# daemon_of DIR: the pid of the daemon serving DIR (a child of modelfs fluid,
# or of the holder after a crash): the process whose arguments name DIR
daemon_of() {
	local f
	for f in /proc/[0-9]*/cmdline; do
		case "$({ tr '\0' ' ' <"$f"; } 2>/dev/null)" in
		"$MODELFS "[!_]*" $1 -f "*) f=${f%/cmdline}; echo "${f#/proc/}"; return 0 ;;
		esac
	done
	return 1
}
# holder_of DIR: the pid of the holder of the mount on DIR
holder_of() {
	local f
	for f in /proc/[0-9]*/cmdline; do
		case "$({ tr '\0' ' ' <"$f"; } 2>/dev/null)" in
		"$MODELFS __holder "*" $1 -f "*) f=${f%/cmdline}; echo "${f#/proc/}"; return 0 ;;
		esac
	done
	return 1
}
# same_sha DIR: sha256 of the model's files through DIR equal the source's
same_sha() { (cd "$1" && sha256sum -c --quiet "$WORK/want.sha"); }
# has_opts OPT...: each is an -o of $ARGS
has_opts() {
	local o
	for o in "$@"; do
		[[ " $ARGS " == *" -o $o "* ]] || { echo "missing -o $o"; return 1; }
	done
}
one_line() { [ "$(wc -l <"$1")" -eq 1 ] && grep -q '^modelfs fluid: ' "$1"; }

log "a model in s3rver and in the fake OSS"
small_model "$WORK/model" 24
echo '{"vocab": ["a", "b"]}' >"$WORK/model/tokenizer.json"
(cd "$WORK/model" && sha256sum model.safetensors sub/config.json tokenizer.json) >"$WORK/want.sha"
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models llama "$WORK/model" || exit 1
mkdir -p "$WORK/ossroot/models"
cp -a "$WORK/model" "$WORK/ossroot/models/llama"
OSS_PORT=$(free_port)
OSSFAKE_AK=$OSS_AK OSSFAKE_SK=$OSS_SK OSSFAKE_REGION=cn-hangzhou OSSFAKE_PORT=$OSS_PORT \
	setsid python3 "$HERE/ossfake.py" "$WORK/ossroot" "$WORK/oss.port" 2>>"$WORK/ossfake.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/oss.port" ] && break; sleep 0.05; done

# Secrets as kubelet mounts them: /etc/fluid/secrets/NAME/KEY, a symlink
# into ..data (the keys of the Secret, with a trailing newline as
# `kubectl create secret --from-file` keeps it)
secret() { # NAME KEY=VALUE...
	local d=$SEC/$1 kv
	shift
	mkdir -p "$d/..2026_01_01_00_00_00.1"
	ln -sfn ..2026_01_01_00_00_00.1 "$d/..data"
	for kv in "$@"; do
		printf '%s\n' "${kv#*=}" >"$d/..data/${kv%%=*}"
		ln -sfn "..data/${kv%%=*}" "$d/${kv%%=*}"
	done
}
secret oss-keys "fs.oss.accessKeyId=$OSS_AK" "fs.oss.accessKeySecret=$OSS_SK"
secret s3-keys ak=S3RVER sk=S3RVER
OSS_EP=http://127.0.0.1:$OSS_PORT

# ---- one OSS mount, at targetPath itself
T1=$ROOT/llama/thin-fuse
MOUNTS+=("$T1")
M1=$(free_port)
# what the controller writes (transform_config.go): one line, the mount's
# options with the encrypt options' secret paths folded in, runtimeOptions
# (the ThinRuntime's fuse.options), accessModes
cat >"$WORK/one.json" <<EOF
{"mounts":[{"mountPoint":"oss://models/llama","options":{"attr_timeout":"7200","cache_dir":"$WORK/cache-one","fs.oss.accessKeyId":"$SEC/oss-keys/fs.oss.accessKeyId","fs.oss.accessKeySecret":"$SEC/oss-keys/fs.oss.accessKeySecret","fs.oss.endpoint":"$OSS_EP","region":"cn-hangzhou"},"name":"llama"}],"targetPath":"$T1","runtimeOptions":{"attr_timeout":"60","kernel_cache":"","list_ttl":"0"},"accessModes":["ReadOnlyMany"]}
EOF
check "the config is one line of JSON, as Fluid writes it" [ "$(wc -l <"$WORK/one.json")" -eq 1 ]
log "one OSS mount"
# the ThinRuntime's fuse.args come after the command: -o options for every mount
fluid_start "$WORK/one.json" "$WORK/one.log" -oentry_timeout=7200 -o "metrics_port=$M1,term_grace=5"
check "modelfs fluid mounts the OSS mount at targetPath ($T1)" wait_live "$T1"
check_all "targetPath was made (mkdir -p), and Fluid's mount check finds it: targetPath and fuse.modelfs in mountinfo" \
	'grep -F " $T1 " /proc/self/mountinfo | grep -qF " - fuse.modelfs oss://models/llama "'
check "the model reads back through the mount (sha256 of every file)" same_sha "$T1"
D1=$(daemon_of "$T1")
check_all "its daemon got the keys in its environment (from the secret files, newline dropped)" \
	'tr "\0" "\n" </proc/$D1/environ | grep -qx "OSS_ACCESS_KEY_SECRET=$OSS_SK" && tr "\0" "\n" </proc/$D1/environ | grep -qx "OSS_ACCESS_KEY_ID=$OSS_AK"'
check_all "the keys are on no command line (ps -eo args lists the daemon, not them)" \
	'PS=$(ps -eo args) && [[ $PS == *"$T1"* && $PS != *"$OSS_SK"* && $PS != *"$OSS_AK"* ]]'
ARGS=$(tr '\0' ' ' </proc/"$D1"/cmdline)
check_all "options of every layer on modelfs's command line, the mount's own winning (attr_timeout=7200 over runtimeOptions' 60), fs.oss.endpoint as endpoint= ($ARGS)" \
	'has_opts allow_other kernel_cache list_ttl=0 entry_timeout=7200 metrics_port=$M1 term_grace=5 attr_timeout=7200 endpoint=$OSS_EP region=cn-hangzhou cache_dir=$WORK/cache-one && [[ $ARGS != *attr_timeout=60* ]]'
check "metrics_port from the command line: /healthz answers" \
	curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:$M1/healthz"
kill -9 "$D1"
sleep 2
check_all "its daemon killed: modelfs fluid stays, the holder's new daemon serves (sha256)" \
	'kill -0 $FL_PID && D1b=$(daemon_of "$T1") && [ "$D1b" != "$D1" ] && drop_caches && same_sha "$T1"'
# SIGTERM with a file open (a model server still reading): the mount leaves
# targetPath at once, the open file reads on until it is closed (or
# term_grace=5 passes), then modelfs fluid ends
exec 7<"$T1/model.safetensors"
kill -TERM "$FL_PID"
sleep 2
check_all "SIGTERM: the mount leaves targetPath at once, modelfs fluid waits for the open file, which reads on" \
	'! in_mounts "$T1" && kill -0 $FL_PID && [ "$(head -c 1048576 <&7 | sha256sum)" = "$(head -c 1048576 "$WORK/model/model.safetensors" | sha256sum)" ]'
exec 7<&-
check "SIGTERM: modelfs fluid ends within 20 s" wait_exit "$FL_PID" 20
check "... with exit status 0 ($RC)" [ "$RC" = 0 ]
check_all "... and its mount is gone from /proc/mounts" '! in_mounts "$T1"'
check_all "... and so is every process of it (daemon, holder)" '! daemon_of "$T1" >/dev/null && ! holder_of "$T1" >/dev/null'
check_all "the secret is in no log (modelfs fluid's stderr, the daemon's lines it passed on)" \
	'! grep -qF -e "$OSS_SK" "$WORK/one.log" "$WORK/one.log.out" && grep -q "mounted oss://models/llama on $T1" "$WORK/one.log"'

# ---- two mounts: targetPath/NAME each
T2=$ROOT/two/thin-fuse
MOUNTS+=("$T2/s3model" "$T2/ossmodel")
# a free port whose next one is free too
M2=$(python3 -c '
import socket
while True:
    a, b = socket.socket(), socket.socket()
    a.bind(("127.0.0.1", 0))
    try:
        b.bind(("127.0.0.1", a.getsockname()[1] + 1))
        print(a.getsockname()[1])
        break
    except OSError:
        pass
')
# the S3 mount: keys from CacheRuntime's encryptOptions (a map of secret
# paths) under Alluxio's names, fs.s3.endpoint; the OSS mount: a Dataset's
# encryptOptions list (name, valueFrom.secretKeyRef) and fs.oss.* names
cat >"$WORK/two.json" <<EOF
{"mounts":[{"mountPoint":"s3://models/llama","options":{"fs.s3.endpoint":"$S3_ENDPOINT","cache_dir":"$WORK/cache-two"},"encryptOptions":{"aws.accessKeyId":"$SEC/s3-keys/ak","aws.secretKey":"$SEC/s3-keys/sk"},"name":"s3model"},{"mountPoint":"oss://models/llama","options":{"fs.oss.endpoint":"$OSS_EP","fs.oss.region":"cn-hangzhou","cache_dir":"$WORK/cache-two"},"encryptOptions":[{"name":"fs.oss.accessKeyId","valueFrom":{"secretKeyRef":{"name":"oss-keys","key":"fs.oss.accessKeyId"}}},{"name":"fs.oss.accessKeySecret","valueFrom":{"secretKeyRef":{"name":"oss-keys","key":"fs.oss.accessKeySecret"}}}],"name":"ossmodel"}],"targetPath":"$T2","runtimeOptions":{"metrics_port":"$M2"},"accessModes":["ReadOnlyMany"]}
EOF
log "two mounts"
fluid_start "$WORK/two.json" "$WORK/two.log"
check "both mounts live, at targetPath/NAME" wait_live "$T2/s3model" "$T2/ossmodel"
check "the S3 mount reads back (sha256)" same_sha "$T2/s3model"
check "the OSS mount reads back (sha256)" same_sha "$T2/ossmodel"
check_all "runtimeOptions' metrics_port: the first mount on it, the second on the next port" \
	'curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:$M2/healthz" && curl -sf -o /dev/null --max-time 5 "http://127.0.0.1:$((M2 + 1))/healthz"'
D2=$(daemon_of "$T2/ossmodel")
check_all "the OSS daemon has the list-shaped encryptOptions' keys, the S3 one the map's; neither the other's" \
	'tr "\0" "\n" </proc/$D2/environ | grep -qx "OSS_ACCESS_KEY_SECRET=$OSS_SK" && tr "\0" "\n" </proc/$(daemon_of "$T2/s3model")/environ | grep -qx "AWS_SECRET_ACCESS_KEY=S3RVER" && ! tr "\0" "\n" </proc/$(daemon_of "$T2/s3model")/environ | grep -q "^OSS_ACCESS_KEY_SECRET="'
check_all "several mounts: the daemons' lines passed on say whose" 'grep -q "^\[mounts\[1\] (\"ossmodel\")\] .*mounted oss://models/llama" "$WORK/two.log"'
kill_dead "$T2/ossmodel" "$D2"
check "its daemon and holder killed: modelfs fluid ends within 15 s" wait_exit "$FL_PID" 15
check "... with a non-zero status ($RC), for Kubernetes to restart it" [ "$RC" -ne 0 ]
check_all "... nothing left mounted under targetPath (the dead mount and the live one)" '! in_mounts "$T2"'
check_all "... and it says so in a line ($(grep -o 'modelfs fluid: .*died.*' "$WORK/two.log" | head -c 150))" \
	'grep -q "^modelfs fluid: mounts\[1\] (\"ossmodel\"): oss://models/llama on $T2/ossmodel died" "$WORK/two.log"'

# ---- an unmount from outside (Fluid's default preStop: umount targetPath)
T3=$ROOT/three/thin-fuse
MOUNTS+=("$T3")
printf '{"mounts":[{"mountPoint":"s3://models/llama","options":{"endpoint":"%s","cache_dir":"%s"},"name":"m"}],"targetPath":"%s","accessModes":["ReadOnlyMany"]}\n' \
	"$S3_ENDPOINT" "$WORK/cache-three" "$T3" >"$WORK/three.json"
# keys from the environment this time, as a pod's env would give them
S3K="AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER"
env $S3K setsid "$FLUID" "$WORK/three.json" >"$WORK/three.log" 2>&1 </dev/null &
FL_PID=$!
PIDS+=("$FL_PID")
FLUIDS+=("$FL_PID")
# up for modelfs fluid too: it passes the daemon's lines on once every mount serves
check_all "keys from the environment: the mount is live" \
	'wait_live "$T3" && for _ in $(seq 100); do grep -q "mounted s3://models/llama on $T3" "$WORK/three.log" && break; sleep 0.1; done; grep -q "mounted s3://models/llama on $T3" "$WORK/three.log"'
umount "$T3"
check "unmounted from outside: modelfs fluid ends within 10 s" wait_exit "$FL_PID" 10
check_all "... with status 0 ($RC) and a line saying so" \
	'[ "$RC" = 0 ] && grep -q "was unmounted, not by modelfs fluid" "$WORK/three.log"'

# ---- a restart of the container: everything of the last one killed (-9),
# its dead mount left on targetPath; the new one mounts over it
env $S3K setsid "$FLUID" "$WORK/three.json" >"$WORK/four.log" 2>&1 </dev/null &
FL_PID=$!
PIDS+=("$FL_PID")
FLUIDS+=("$FL_PID")
wait_live "$T3"
D3=$(daemon_of "$T3")
kill -9 "$FL_PID"
kill_dead "$T3" "$D3"
check_all "the container killed: a dead mount is left on targetPath" \
	'in_mounts "$T3" && stat "$T3" 2>&1 | grep -q "Transport endpoint is not connected"'
env $S3K setsid "$FLUID" "$WORK/three.json" >"$WORK/five.log" 2>&1 </dev/null &
FL_PID=$!
PIDS+=("$FL_PID")
FLUIDS+=("$FL_PID")
check_all "the next modelfs fluid mounts again over it: the model reads back (sha256)" \
	'wait_live "$T3" && same_sha "$T3"'
kill -INT "$FL_PID"
check_all "SIGINT: modelfs fluid ends at once (5 s), status 0, nothing mounted" \
	'wait_exit "$FL_PID" 5 && [ "$RC" = 0 ] && ! in_mounts "$T3"'

# ---- what the layers give, without mounting (--dry-run)
dry() { "$FLUID" --dry-run "$@" 2>&1; }
# shellcheck disable=SC2034 # used in check_all's expressions
NL=$'\n'
cat >"$WORK/layers.json" <<EOF
{"mounts":[{"mountPoint":"oss://b/p","name":"first","options":{"attr_timeout":"4","fs.oss.accessKeySecret":"plain-$OSS_SK","akId":"plain-id","no_passthrough":"true"}},{"mountPoint":"local:///data/models","name":"local","path":"/models/local"},{"mountPoint":"s3://b","name":"named"}],"targetPath":"/x/thin-fuse","runtimeOptions":{"attr_timeout":"2","entry_timeout":"2","kernel_cache":"false"}}
EOF
OUT=$(MOUNT_OPTIONS="attr_timeout=1,entry_timeout=1,list_ttl=1,kernel_cache,ro" dry -o attr_timeout=3 "$WORK/layers.json")
check_all "precedence MOUNT_OPTIONS < runtimeOptions < -o < the mount's options; a flag set false is off" \
	'[[ $OUT == *"-f -o allow_other -o attr_timeout=4 -o entry_timeout=2 -o list_ttl=1 -o ro -o no_passthrough""$NL"* ]] && [[ $OUT != *kernel_cache* ]] && [[ $OUT == *"-o attr_timeout=3"* ]]'
check_all "Fluid's placement: path wins (targetPath/models/local), else the name; local:// is file://" \
	'[[ $OUT == *"target /x/thin-fuse/models/local"* && $OUT == *"target /x/thin-fuse/named"* && $OUT == *"file:///data/models /x/thin-fuse/models/local"* ]]'
check_all "a plain secret (Fluid's \"secret\" storage): in the environment by name, its value printed nowhere" \
	'[[ $OUT == *"env "*OSS_ACCESS_KEY_ID* && $OUT == *"env "*OSS_ACCESS_KEY_SECRET* && $OUT != *"$OSS_SK"* && $OUT != *plain-id* ]]'
OUT=$(dry "$WORK/one.json")
check_all "one mount: at targetPath itself" '[[ $OUT == *"target $T1""$NL"* ]]'
OPTS=$(python3 - "$MODELFS" <<'EOF'
import re, subprocess, sys
names = []
for line in subprocess.run([sys.argv[1], "--help"], capture_output=True, text=True).stdout.splitlines():
    m = re.match(r"^  ([a-z_]+(?:=[^\s,]*)?(?:, [a-z_]+(?:=[^\s,]*)?)*)(?=[\s,])", line)
    if not m:
        continue
    rest = line[m.end():]
    if "=" not in m.group(1) and not rest.startswith("  ") and not rest.startswith(", ..."):
        continue  # prose that starts with a word
    names += [n for n in m.group(1).split(", ") if n not in names]
print(",".join(n if "=" not in n else n.split("=")[0] + "=/x" for n in names))
EOF
)
printf '{"mounts":[{"mountPoint":"s3://b"}],"targetPath":"/x"}\n' >"$WORK/all.json"
OUT=$(dry -o "$OPTS" "$WORK/all.json")
ARGS=$(grep '^  run ' <<<"$OUT")
check_all "every option modelfs --help lists is one modelfs fluid takes, and passes on ($(tr ',' '\n' <<<"$OPTS" | wc -l) options: $(grep -v '^ \|^mounts' <<<"$OUT" | head -1))" \
	'[ "$(tr "," "\n" <<<"$OPTS" | wc -l)" -ge 40 ] && has_opts $(tr "," " " <<<"$OPTS")'

# deploy/examples/fluid-thinruntime.yaml as Fluid's controller turns it into
# the FUSE container's config.json, arguments and environment
secret llama-oss-keys "fs.oss.accessKeyId=$OSS_AK" "fs.oss.accessKeySecret=$OSS_SK"
EX=$(python3 - "$HERE/../../deploy/examples/fluid-thinruntime.yaml" "$SEC" "$WORK/example.json" <<'EOF'
import json, sys, yaml
docs = {d["kind"]: d for d in yaml.safe_load_all(open(sys.argv[1])) if d}
prof, ds, rt = docs["ThinRuntimeProfile"], docs["Dataset"], docs["ThinRuntime"]
mounts = []
for m in ds["spec"]["mounts"]:
    opts = dict(ds["spec"].get("sharedOptions", {}), **m.get("options", {}))
    for e in m.get("encryptOptions", []):
        ref = e["valueFrom"]["secretKeyRef"]
        opts[e["name"]] = "%s/%s/%s" % (sys.argv[2], ref["name"], ref["key"])
    mounts.append({k: v for k, v in (("mountPoint", m["mountPoint"]), ("options", opts),
                                     ("name", m.get("name"))) if v})
target = "/runtime-mnt/thin/%s/%s/thin-fuse" % (rt["metadata"]["namespace"], rt["metadata"]["name"])
json.dump({"mounts": mounts, "targetPath": target, "runtimeOptions": rt["spec"]["fuse"]["options"],
           "accessModes": ds["spec"]["accessModes"]}, open(sys.argv[3], "w"), separators=(",", ":"))
mo = dict(prof["spec"]["fuse"].get("options", {}), **rt["spec"]["fuse"]["options"])
print(" ".join(prof["spec"]["fuse"]["command"][1:] + prof["spec"]["fuse"]["args"]))
print(",".join(k if v == "" else "%s=%s" % (k, v) for k, v in mo.items()))
EOF
)
read -r -a EXARGS <<<"$(sed -n 1p <<<"$EX")" # the container's command and args: "fluid -o..."
OUT=$(MOUNT_OPTIONS=$(sed -n 2p <<<"$EX") "$MODELFS" "${EXARGS[@]}" --dry-run "$WORK/example.json" 2>&1)
ARGS=$(grep '^  run ' <<<"$OUT")
check_all "the example (deploy/examples/fluid-thinruntime.yaml) as Fluid writes it: its options taken, the keys in the environment" \
	'has_opts kernel_cache attr_timeout=7200 entry_timeout=7200 metrics_port=9089 cache_dir=/var/cache/modelfs-fluid/models-llama cache_size=100Gi cache_high=0.95 cache_low=0.7 term_grace=20 endpoint=oss-cn-hangzhou-internal.aliyuncs.com && [[ $OUT == *"env "*OSS_ACCESS_KEY_ID* && $OUT == *"env "*OSS_ACCESS_KEY_SECRET* && $OUT == *"target /runtime-mnt/thin/models/llama/thin-fuse"* && $OUT != *"$OSS_SK"* ]]'

# ---- broken configs: a non-zero exit, one line, nothing mounted
TB=$ROOT/broken/thin-fuse
MOUNTS+=("$TB")
OSSOPTS="\"fs.oss.endpoint\":\"$OSS_EP\",\"region\":\"cn-hangzhou\",\"cache_dir\":\"$WORK/cache-b\""
GOODKEYS="\"fs.oss.accessKeyId\":\"$SEC/oss-keys/fs.oss.accessKeyId\",\"fs.oss.accessKeySecret\":\"$SEC/oss-keys/fs.oss.accessKeySecret\""
# broken DESC STATUS WORDS JSON|@FILE: STATUS "nz" is any non-zero one
broken() {
	local d=$1 want=$2 words=$3 conf=$WORK/broken.json rc
	if [ "${4:0:1}" = @ ]; then conf=${4:1}; else printf '%s\n' "$4" >"$conf"; fi
	env -u AWS_ACCESS_KEY_ID -u AWS_SECRET_ACCESS_KEY timeout 60 "$FLUID" "$conf" \
		>"$WORK/broken.out" 2>"$WORK/broken.err" </dev/null
	rc=$?
	if { [ "$want" = nz ] && [ "$rc" -ne 0 ] && [ "$rc" -ne 124 ]; } || [ "$rc" = "$want" ]; then :; else
		fail "$d: exit status $rc, wanted $want ($(head -c 300 "$WORK/broken.err"))"; return
	fi
	if ! one_line "$WORK/broken.err" || ! grep -qF -- "$words" "$WORK/broken.err"; then
		fail "$d: wanted one line with '$words': $(head -c 400 "$WORK/broken.err")"; return
	fi
	if in_mounts "$ROOT/broken" || grep -qF "$OSS_SK" "$WORK/broken.err"; then
		fail "$d: a mount left, or the secret in the line"; return
	fi
	ok "$d (exit $rc): $(cat "$WORK/broken.err")"
}
broken "no config file" 2 "cannot read $WORK/nosuch.json: No such file" "@$WORK/nosuch.json"
# jansson quotes the token it stopped at: here the secret (Fluid's "secret" storage)
broken "not JSON (the line quotes none of it)" 2 "not JSON: line 1, column" "{\"mounts\":[],\"fs.oss.accessKeySecret\" \"$OSS_SK\"}"
broken "JSON, not an object" 2 "not a JSON object" '["mounts"]'
broken "no mounts" 2 'no mounts ("mounts" is empty)' "{\"mounts\":[],\"targetPath\":\"$TB\"}"
broken "mounts missing" 2 'no mounts ("mounts" is missing)' "{\"targetPath\":\"$TB\"}"
broken "a mount without mountPoint" 2 'mounts[1] ("b") has no mountPoint' \
	"{\"mounts\":[{\"mountPoint\":\"s3://models/llama\",\"name\":\"a\"},{\"name\":\"b\"}],\"targetPath\":\"$TB\"}"
broken "a scheme modelfs does not read" 2 "scheme 'ceph://' is not one modelfs reads" \
	"{\"mounts\":[{\"mountPoint\":\"ceph://10.0.0.1:6789\",\"name\":\"ceph\"}],\"targetPath\":\"$TB\"}"
broken "an unknown option key" 2 "mounts[0] (\"llama\"): options: unknown option 'fs.oss.bogus'" \
	"{\"mounts\":[{\"mountPoint\":\"oss://models/llama\",\"options\":{$OSSOPTS,\"fs.oss.bogus\":\"1\"},\"name\":\"llama\"}],\"targetPath\":\"$TB\"}"
broken "an unknown key in runtimeOptions" 2 "runtimeOptions: unknown option 'max_readahead'" \
	"{\"mounts\":[{\"mountPoint\":\"s3://models/llama\"}],\"targetPath\":\"$TB\",\"runtimeOptions\":{\"max_readahead\":\"1m\"}}"
broken "a secret file that cannot be read (its key is not in the Secret)" 2 \
	"option 'fs.oss.accessKeySecret': cannot read the secret $SEC/oss-keys/nokey: No such file" \
	"{\"mounts\":[{\"mountPoint\":\"oss://models/llama\",\"options\":{$OSSOPTS,\"fs.oss.accessKeyId\":\"$SEC/oss-keys/fs.oss.accessKeyId\",\"fs.oss.accessKeySecret\":\"$SEC/oss-keys/nokey\"}}],\"targetPath\":\"$TB\"}"
broken "a key id without its secret" 2 "give OSS_ACCESS_KEY_ID but not OSS_ACCESS_KEY_SECRET" \
	"{\"mounts\":[{\"mountPoint\":\"oss://models/llama\",\"options\":{$OSSOPTS,\"akId\":\"$SEC/oss-keys/fs.oss.accessKeyId\"}}],\"targetPath\":\"$TB\"}"
broken "two spellings of one option in one place" 2 "options 'endpoint' and 'fs.oss.endpoint' both set" \
	"{\"mounts\":[{\"mountPoint\":\"oss://models/llama\",\"options\":{\"endpoint\":\"x\",\"fs.oss.endpoint\":\"y\"}}],\"targetPath\":\"$TB\"}"
broken "an OSS endpoint from a secret (it would go on a command line)" 2 "comes from a secret" \
	"{\"mounts\":[{\"mountPoint\":\"oss://models/llama\",\"options\":{\"fs.oss.endpoint\":\"$SEC/oss-keys/fs.oss.accessKeyId\"}}],\"targetPath\":\"$TB\"}"
broken "several mounts, one without name or path" 2 "several mounts: each needs a name or a path" \
	"{\"mounts\":[{\"mountPoint\":\"s3://models/a\",\"name\":\"a\"},{\"mountPoint\":\"s3://models/b\"}],\"targetPath\":\"$TB\"}"
broken "no targetPath (and no MOUNT_POINT)" 2 "no targetPath" '{"mounts":[{"mountPoint":"s3://models/llama"}]}'
broken "a password in the mountPoint (it would show in ps)" 2 "has a user or password in it" \
	"{\"mounts\":[{\"mountPoint\":\"https://user:$OSS_SK@example.com/m\"}],\"targetPath\":\"$TB\"}"
broken "a targetPath with '..' in it" 2 "without '.' or '..'" \
	"{\"mounts\":[{\"mountPoint\":\"s3://models/llama\"}],\"targetPath\":\"$ROOT/broken/../../etc/x\"}"
mkdir -p "$SEC/fifo" && mkfifo "$SEC/fifo/key"
broken "a secret that is a FIFO: refused, not waited on" 2 "is not a file" \
	"{\"mounts\":[{\"mountPoint\":\"oss://models/llama\",\"options\":{$OSSOPTS,\"fs.oss.accessKeyId\":\"$SEC/fifo/key\",\"fs.oss.accessKeySecret\":\"$SEC/fifo/key\"}}],\"targetPath\":\"$TB\"}"
python3 -c 'import json,sys; print(json.dumps({"mounts":[{"mountPoint":"s3://models/m%d"%i,"name":"m%d"%i} for i in range(300)],"targetPath":sys.argv[1]}))' "$TB" >"$WORK/many.json"
broken "300 mounts: at most 256" 2 "300 mounts: at most 256" "@$WORK/many.json"
# the config is fine, the mount is not: modelfs's own line and status
broken "a bad option value: modelfs's line, status 2" 2 "bad value for option attr_timeout" \
	"{\"mounts\":[{\"mountPoint\":\"oss://models/llama\",\"options\":{$OSSOPTS,$GOODKEYS,\"attr_timeout\":\"soon\"}}],\"targetPath\":\"$TB\"}"
secret bad-keys "fs.oss.accessKeyId=$OSS_AK" "fs.oss.accessKeySecret=wrong"
broken "a wrong secret: access denied, modelfs's status 4" 4 "access denied" \
	"{\"mounts\":[{\"mountPoint\":\"oss://models/llama\",\"options\":{$OSSOPTS,\"fs.oss.accessKeyId\":\"$SEC/bad-keys/fs.oss.accessKeyId\",\"fs.oss.accessKeySecret\":\"$SEC/bad-keys/fs.oss.accessKeySecret\"}}],\"targetPath\":\"$TB\"}"
broken "the second of two mounts fails (no such bucket): the first is taken down, one line" 3 \
	"mounts[1] (\"b\"): oss://nosuch/x on $TB/b:" \
	"{\"mounts\":[{\"mountPoint\":\"oss://models/llama\",\"options\":{$OSSOPTS,$GOODKEYS},\"name\":\"a\"},{\"mountPoint\":\"oss://nosuch/x\",\"options\":{$OSSOPTS,$GOODKEYS},\"name\":\"b\"}],\"targetPath\":\"$TB\"}"
OUT=$("$MODELFS" fluid --version 2>&1)
check_all "modelfs fluid runs modelfs-fluid beside modelfs ($OUT)" '[[ $OUT == "modelfs-fluid "[0-9]* ]]'

finish
