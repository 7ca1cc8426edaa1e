# shellcheck shell=bash
# Helpers for the integration tests (sourced). Every test gets its own work
# directory, its own s3rver on a free 127.0.0.1 port and its own mounts; the
# EXIT trap unmounts and stops only what this test started, by PID, even when
# the test fails.
#
#   MODELFS=path/to/modelfs   (first argument of each test script)

set -u
MODELFS=${1:?usage: $0 path/to/modelfs}
MODELFS=$(readlink -f "$MODELFS")
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
S3TOOL="python3 $HERE/s3tool.py"
S3RVER=${S3RVER:-/opt/s3rver/node_modules/.bin/s3rver}
export S3_KEY=S3RVER S3_SECRET=S3RVER S3_REGION=us-east-1
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
unset AWS_SESSION_TOKEN AWS_PROFILE AWS_ENDPOINT_URL AWS_REGION AWS_DEFAULT_REGION
unset AWS_WEB_IDENTITY_TOKEN_FILE AWS_ROLE_ARN ALIBABA_CLOUD_OIDC_TOKEN_FILE ALIBABA_CLOUD_ROLE_ARN
# no instance metadata service is asked (an anonymous mount would): traffic
# stays on 127.0.0.1; t_creds.sh points them at its fake
export AWS_EC2_METADATA_DISABLED=true ALIBABA_CLOUD_ECS_METADATA_DISABLED=true

WORK=$(mktemp -d /var/tmp/modelfs-test.XXXXXX)
PASS=0
FAIL=0
MOUNTS=()
PIDS=()
TMPFS_MOUNTS=()
CLEAN_FILES=() # made outside $WORK by a test (a /dev/log of its own): removed at exit

log() { printf '[%(%H:%M:%S)T] %s\n' -1 "$*" >&2; }
ok() { PASS=$((PASS + 1)); echo "ok - $*"; }
fail() { FAIL=$((FAIL + 1)); echo "FAIL - $*"; }
# check DESCRIPTION COMMAND...: pass when COMMAND succeeds
check() { local d=$1; shift; if "$@"; then ok "$d"; else fail "$d"; fi; }
# check_all DESCRIPTION 'EXPRESSION': pass when the shell expression (with && or ||,
# single-quoted so that all of it is the check) succeeds
check_all() { if eval "$2"; then ok "$1"; else fail "$1"; fi; }

cleanup() {
	local m p
	for m in "${MOUNTS[@]}"; do
		mountpoint -q "$m" 2>/dev/null && fusermount3 -u "$m" 2>/dev/null
		mountpoint -q "$m" 2>/dev/null && fusermount3 -uz "$m" 2>/dev/null
	done
	for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null; done
	for m in "${TMPFS_MOUNTS[@]}"; do umount "$m" 2>/dev/null; done
	for m in "${CLEAN_FILES[@]}"; do rm -f "$m"; done
	sleep 0.2
	for p in "${PIDS[@]}"; do kill -9 "$p" 2>/dev/null; done
	# sanitizer reports in daemon logs fail the test
	if grep -l -E "ERROR: (Address|Leak|Undefined)Sanitizer|runtime error:" "$WORK"/*.log 2>/dev/null; then
		echo "FAIL - sanitizer report in a daemon log"; FAIL=$((FAIL + 1))
	fi
	[ -n "${KEEP_WORK:-}" ] && echo "kept $WORK" || rm -rf "$WORK"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# small_model DIR MIB: a model of random bytes, DIR/model.safetensors (MIB MiB) and
# DIR/sub/config.json
small_model() {
	mkdir -p "$1/sub" && head -c $(($2 << 20)) /dev/urandom >"$1/model.safetensors" &&
		echo '{"layers": 32}' >"$1/sub/config.json"
}

# csi_ready: the CSI plugin just started ($CSI_PID) answers Probe on $SOCK within
# 10 s (the caller's rpc); else its log on stderr, and 1
csi_ready() {
	local i
	for ((i = 0; i < 100; i++)); do
		[ -S "$SOCK" ] && rpc Identity/Probe && return 0
		sleep 0.1
	done
	cat "$WORK/plugin.log" >&2
	return 1
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# s3_start NAME [extra s3rver args...]: start s3rver on a free port with data in $WORK/NAME;
# sets S3_PORT, S3_PID, S3_ENDPOINT. s3rver's continuation tokens use DES, which
# OpenSSL 3 only has in its legacy provider: without it every truncated
# listing (> max-keys) is an HTTP 500.
s3_start() {
	local name=$1 port=${S3_PORT_WANT:-$(free_port)} i
	shift
	mkdir -p "$WORK/$name"
	NODE_OPTIONS=--openssl-legacy-provider setsid "$S3RVER" -d "$WORK/$name" -a 127.0.0.1 \
		-p "$port" -s "$@" >>"$WORK/$name.s3rver.log" 2>&1 </dev/null &
	S3_PID=$!
	PIDS+=("$S3_PID")
	S3_PORT=$port
	S3_ENDPOINT=http://127.0.0.1:$port
	export S3_ENDPOINT
	for ((i = 0; i < 100; i++)); do
		curl -s -o /dev/null --max-time 1 "$S3_ENDPOINT/" && return 0
		sleep 0.1
	done
	echo "s3rver did not start" >&2
	cat "$WORK/$name.s3rver.log" >&2
	exit 1
}
s3_stop() { kill -9 "$S3_PID" 2>/dev/null; wait "$S3_PID" 2>/dev/null; }

# mount_fs SOURCE DIR [OPTS] [extra args]: mount in the background (the daemon forks
# once the mount is live), logging to $WORK/DIRNAME.log. Sets MNT_PID.
mount_fs() {
	local src=$1 dir=$2 opts=${3:-} log
	shift 3 2>/dev/null || shift $#
	log="$WORK/$(basename "$dir").log"
	mkdir -p "$dir"
	MOUNTS+=("$dir")
	# every test keeps its cache in its own work directory
	case ",$opts," in *,cache_dir=*|*,no_cache,*) ;; *) opts="cache_dir=$WORK/cache${opts:+,$opts}" ;; esac
	# the test's S3 server, for S3 sources (another source refuses the option)
	case $src in s3://*) opts="endpoint=$S3_ENDPOINT${opts:+,$opts}" ;; esac
	"$MODELFS" "$src" "$dir" -f -o "$opts" "$@" >>"$log" 2>&1 &
	MNT_PID=$!
	PIDS+=("$MNT_PID")
	local i
	for ((i = 0; i < 300; i++)); do
		# a live FUSE mount on the path, by one statfs (always answered by
		# the daemon): a dead mount that the new daemon is about to clear is a
		# mountpoint as well, and a mountpoint check then a statfs could see
		# the dead mount, then the directory below once it is cleared
		[ "$(stat -f -c %t "$dir" 2>/dev/null)" = 65735546 ] && mountpoint -q "$dir" && return 0
		kill -0 "$MNT_PID" 2>/dev/null || { cat "$log" >&2; return 1; }
		sleep 0.05
	done
	return 1
}
# kill_dead DIR PID: kill -9 the daemon PID of the mount on DIR and its
# holder first (killed alone, the daemon is replaced): a dead mount is left.
kill_dead() {
	local h
	h=$(getfattr --only-values -n user.modelfs.holder "$1" 2>/dev/null | cut -d. -f2)
	[ -n "$h" ] && kill -9 "$h" 2>/dev/null && sleep 0.1
	kill -9 "$2"
	wait "$2" 2>/dev/null
}
umount_fs() {
	local i
	fusermount3 -u "$1" 2>/dev/null
	# bounded: a daemon that does not exit is the test's failure, not a hang
	for ((i = 0; i < 300; i++)); do kill -0 "$MNT_PID" 2>/dev/null || break; sleep 0.1; done
	kill -0 "$MNT_PID" 2>/dev/null || wait "$MNT_PID" 2>/dev/null
}
drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }

finish() {
	echo "$PASS passed, $FAIL failed"
	[ "$FAIL" -eq 0 ]
}

# proxy_start: a signature-checking, fault-injecting proxy in front of the
# current s3rver; sets PROXY_ENDPOINT. proxy_fault MODE [COUNT] [DELAY].
proxy_start() {
	local port i
	port=$(free_port)
	python3 "$HERE/s3proxy.py" "$port" "$S3_PORT" >>"$WORK/proxy.log" 2>&1 &
	PIDS+=($!)
	PROXY_PID=$!
	PROXY_ENDPOINT=http://127.0.0.1:$port
	for ((i = 0; i < 100; i++)); do
		curl -s -o /dev/null --max-time 1 "$PROXY_ENDPOINT/__fault" && return 0
		sleep 0.1
	done
	echo "the proxy did not start" >&2
	exit 1
}
proxy_fault() { curl -s "$PROXY_ENDPOINT/__fault?mode=$1&count=${2:--1}&delay=${3:-0}"; }

# nginx_start ROOT [EXTRA_SERVER_CONF]: nginx (Debian's) on a free 127.0.0.1
# port serving ROOT with a JSON autoindex; sets NGINX_PORT, NGINX_PID.
# Workers run as root: the test's work directory is mode 0700.
nginx_start() {
	local root=$1 extra=${2:-} d=$WORK/nginx i
	NGINX_PORT=${NGINX_PORT_WANT:-$(free_port)}
	mkdir -p "$d"
	cat >"$d/nginx.conf" <<NGX
daemon off;
user root;
worker_processes 2;
error_log $d/error.log warn;
pid $d/nginx.pid;
events { worker_connections 512; }
http {
  access_log $d/access.log;
  default_type application/octet-stream;
  sendfile on;
  client_body_temp_path $d/cb; proxy_temp_path $d/px; fastcgi_temp_path $d/fc;
  uwsgi_temp_path $d/uw; scgi_temp_path $d/sc;
  server {
    listen 127.0.0.1:$NGINX_PORT;
    root $root;
    autoindex on;
    autoindex_format json;
    $extra
  }
}
NGX
	setsid nginx -p "$d" -c "$d/nginx.conf" >>"$d/stderr.log" 2>&1 </dev/null &
	NGINX_PID=$!
	PIDS+=("$NGINX_PID")
	for ((i = 0; i < 100; i++)); do
		curl -s -o /dev/null --max-time 1 "http://127.0.0.1:$NGINX_PORT/" && return 0
		sleep 0.05
	done
	echo "nginx did not start" >&2
	cat "$d/error.log" "$d/stderr.log" >&2
	exit 1
}
nginx_stop() { kill "$NGINX_PID" 2>/dev/null; wait "$NGINX_PID" 2>/dev/null; }
