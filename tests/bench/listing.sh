#!/usr/bin/env bash
# What a listing costs on a bucket of many keys (tests/integration/bigbucket.py:
# MODELS prefixes of PER files, computed; every LIST counted): the mount's
# time, RSS and LIST requests with listing=lazy (the default for a bucket's
# root) and listing=full, and what one refresh pass costs (requests and ms:
# `modelfs refresh`, which is the timed pass run at once), with one model
# prefix in use. A benchmark: it prints figures.
#
#   sudo tests/bench/listing.sh [MODELS] [PER]      (default 500 400: 200,000 keys)
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODELFS=${MODELFS:-$ROOT/build/modelfs}
MODELS=${1:-500}
PER=${2:-400}
source "$ROOT/tests/integration/lib.sh" "$MODELFS" >/dev/null
MNT=$WORK/mnt
python3 "$ROOT/tests/integration/bigbucket.py" "$WORK/bb.port" "$MODELS" "$PER" 4096 &
PIDS+=($!)
for _ in $(seq 200); do [ -s "$WORK/bb.port" ] && break; sleep 0.1; done
BB=http://127.0.0.1:$(cat "$WORK/bb.port")
nlists() { curl -s "$BB/__stats" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["lists"]))'; }
ms_since() { echo $(( ($(date +%s%N) - $1) / 1000000 )); }

echo "modelfs listing cost: $((MODELS * PER)) keys under $MODELS prefixes, $(nproc) CPUs"
printf '%-6s %9s %9s %11s %14s %14s\n' listing mount-ms rss-MiB mount-LISTs refresh-LISTs refresh-ms
for mode in lazy full; do
	l0=$(nlists)
	t0=$(date +%s%N)
	S3_ENDPOINT=$BB mount_fs s3://big "$MNT" "cache_dir=$WORK/c-$mode,listing=$mode,list_ttl=0" || exit 1
	mount_ms=$(ms_since "$t0")
	ls "$MNT/model-007" >/dev/null # one model in use
	rss=$(awk '/^VmRSS/ {print $2}' "/proc/$MNT_PID/status")
	l1=$(nlists)
	t0=$(date +%s%N)
	"$MODELFS" refresh "$MNT" >/dev/null
	refresh_ms=$(ms_since "$t0")
	l2=$(nlists)
	printf '%-6s %9s %9s %11s %14s %14s\n' "$mode" "$mount_ms" "$((rss / 1024))" "$((l1 - l0))" \
		"$((l2 - l1))" "$refresh_ms"
	umount_fs "$MNT"
done
