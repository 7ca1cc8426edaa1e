#!/usr/bin/env bash
# Cold, warm and hot reads of one model through every source, in one run:
# s3:// (s3rver), oss:// (the fake OSS of the tests, signatures checked) and
# file:// (a local directory), each against the same bytes read raw. Prints
# MB/s per row; a benchmark, not a pass/fail test.
#
#   sudo tests/bench/sources.sh [SIZE_MIB]      (default 1024, in 4 files)
#
# cold: empty cache, page cache dropped; warm: a remount, the cache full
# (from a prefetch), page cache dropped; hot: the page cache full. "raw" is
# `cat` of the source files themselves with the page cache dropped.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODELFS=$ROOT/build/modelfs
SIZE=${1:-1024}
source "$ROOT/tests/integration/lib.sh" "$MODELFS" >/dev/null
M=$WORK/model
mkdir -p "$M"
for i in 1 2 3 4; do head -c $((SIZE / 4 << 20)) /dev/urandom >"$M/model-$i.safetensors"; done
B=$((SIZE << 20))
rate() { awk -v b="$B" -v t0="$1" -v t1="$2" 'BEGIN { printf "%8.0f", b / 1048576 / (t1 - t0) }'; }
read_all() { local t0 t1; t0=$(date +%s.%N); cat "$1"/*.safetensors >/dev/null; t1=$(date +%s.%N); rate "$t0" "$t1"; }

s3_start s3
$S3TOOL mb models >/dev/null
$S3TOOL putdir models m "$M" >/dev/null
export OSS_ACCESS_KEY_ID=ossak OSS_ACCESS_KEY_SECRET=osssk
mkdir -p "$WORK/oss/models"
cp -a "$M" "$WORK/oss/models/m"
OSSFAKE_AK=ossak OSSFAKE_SK=osssk python3 "$HERE/ossfake.py" "$WORK/oss" "$WORK/oss.port" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/oss.port" ] && break; sleep 0.05; done
OSS_EP=endpoint=http://127.0.0.1:$(cat "$WORK/oss.port"),region=cn-hangzhou

MNT=$WORK/mnt
printf '%-8s %8s %8s %8s %8s   (MB/s, %d MiB)\n' source raw cold warm hot "$SIZE"
for src in s3 oss file; do
	case $src in
	s3) url=s3://models/m opts= raw=$M ;;
	oss) url=oss://models/m opts=$OSS_EP raw=$WORK/oss/models/m ;;
	file) url=file://$M opts= raw=$M ;;
	esac
	C=$WORK/cache-$src
	drop_caches
	r_raw=$(read_all "$raw")
	mount_fs "$url" "$MNT" "cache_dir=$C${opts:+,$opts}" || { echo "$src: mount failed"; continue; }
	drop_caches
	r_cold=$(read_all "$MNT")
	"$MODELFS" prefetch --wait --quiet "$MNT" >/dev/null 2>&1
	umount_fs "$MNT"
	mount_fs "$url" "$MNT" "cache_dir=$C${opts:+,$opts}"
	drop_caches
	r_warm=$(read_all "$MNT")
	r_hot=$(read_all "$MNT")
	umount_fs "$MNT"
	printf '%-8s %8s %8s %8s %8s\n' "$src" "$r_raw" "$r_cold" "$r_warm" "$r_hot"
done
