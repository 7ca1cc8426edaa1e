#!/usr/bin/env bash
# The speed benchmark of issue 4, one command, one run, on this machine:
#
#   sudo tests/bench/speed.sh [-b s3rver|s3front] [-s SIZE_GIB] [-S "SYSTEMS"] [-m "METHODS"]
#
# 1. ../shared/bench/bench-peers.sh with modelfs plugged in: the limits (curl 1 stream and
#    8 x 64 MiB ranged GETs, the disk with the page cache dropped, the page cache), then
#    modelfs, s3fs and rclone mount, cold / warm / hot, each reader method (default: dd = one
#    reader of all shards, par4 = one reader per shard, rand4 = fio 4 jobs of 1 MiB random
#    reads), with MB/s, ratios, daemon CPU s/GiB and peak RSS per row;
# 2. time to first byte of a cold shard: curl's first byte (the limit), modelfs, s3fs;
# 3. warm against the same bytes read raw: the model cached by a cold read through modelfs,
#    then (page cache dropped each time) the cache's data files read raw and the model read
#    through modelfs, in alternating order (see the comment there);
# 4. a PNG bar chart (gnuplot) and a Markdown table of it all, in the output directory.
#
# Needs root (mounts, drop_caches). Output: OUT (default /var/tmp/modelfs-speed/out-DATE).
set -u
cd "$(dirname "$0")/../.."
ROOT=$PWD
BENCH=${BENCH:-$ROOT/../shared/bench}
BACKEND=s3rver SIZE=4 SYSTEMS="modelfs s3fs rclone" METHODS="dd par4 rand4"
OUT=/var/tmp/modelfs-speed/out-$(date +%Y%m%d-%H%M%S)
while getopts "b:s:S:m:o:" opt; do
	case $opt in
	b) BACKEND=$OPTARG ;;
	s) SIZE=$OPTARG ;;
	S) SYSTEMS=$OPTARG ;;
	m) METHODS=$OPTARG ;;
	o) OUT=$OPTARG ;;
	*) echo "usage: $0 [-b s3rver|s3front] [-s SIZE_GIB] [-S SYSTEMS] [-m METHODS] [-o OUT]" >&2; exit 2 ;;
	esac
done
[ "$(id -u)" = 0 ] || { echo "speed.sh: needs root (mounts, drop_caches)" >&2; exit 2; }
[ -x "$BENCH/bench-peers.sh" ] || { echo "speed.sh: no harness at $BENCH (set BENCH=)" >&2; exit 2; }
[ -x build/modelfs ] || scripts/build.sh >/dev/null || exit 1
command -v gnuplot >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q gnuplot-nox >/dev/null
mkdir -p "$OUT"
W=/var/tmp/bench-peers
PORT=4580
case $BACKEND in s3rver) URL=http://127.0.0.1:$PORT ;; s3front) URL=http://127.0.0.1:$((PORT + 2)) ;; *) exit 2 ;; esac
# nginx in front answers object GETs with its own ETags
OPTS=
[ "$BACKEND" = s3front ] && OPTS=no_etag_match

# ---- 1. limits and peers (servers left running for the rest: -k)
MODELFS_BIN=$ROOT/build/modelfs MODELFS_OPTS=$OPTS "$BENCH/bench-peers.sh" -s "$SIZE" -b "$BACKEND" \
	-S "$SYSTEMS" -m "$METHODS" -o "$OUT/peers" -p "$PORT" -k | tee "$OUT/peers.txt"

stop_servers() {
	"$BENCH/s3-server.sh" stop "$W/s3data" >/dev/null 2>&1
	"$BENCH/http-server.sh" stop $((PORT + 1)) >/dev/null 2>&1
	"$BENCH/http-server.sh" stop $((PORT + 2)) >/dev/null 2>&1
}
MNT=$W/mnt-ttfb
cleanup() { mountpoint -q "$MNT" && fusermount3 -u "$MNT"; stop_servers; }
trap cleanup EXIT

# ---- 2. time to first byte of a cold shard (page cache dropped, empty cache, new mount)
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
SHARD=$(cd "$W/model" && ls ./*.safetensors | head -1)
SHARD=${SHARD#./}
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }
ttfb_curl() {
	local t0
	sync; echo 3 >/proc/sys/vm/drop_caches
	t0=$(date +%s%N)
	curl -s -o /dev/null -r 0-0 --aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER \
		"$URL/models/model/$SHARD"
	ms_since "$t0"
}
# ttfb_mount CMD...: mount with CMD, then time one byte of the shard (open + read)
ttfb_mount() {
	local t0 ms
	mkdir -p "$MNT"
	rm -rf "$W/ttfb-cache"
	mkdir -p "$W/ttfb-cache"
	"$@" || return 1
	for _ in $(seq 300); do [ -e "$MNT/model/$SHARD" ] && break; sleep 0.1; done
	sync; echo 3 >/proc/sys/vm/drop_caches
	t0=$(date +%s%N)
	head -c 1 "$MNT/model/$SHARD" >/dev/null
	ms=$(ms_since "$t0")
	fusermount3 -u "$MNT"
	echo "$ms"
}
echo "$AWS_ACCESS_KEY_ID:$AWS_SECRET_ACCESS_KEY" >"$W/ttfb.passwd"
chmod 600 "$W/ttfb.passwd"
{
	echo "system,ttfb_ms_run1,ttfb_ms_run2,ttfb_ms_run3"
	printf 'curl (limit)'
	for _ in 1 2 3; do printf ',%s' "$(ttfb_curl)"; done
	echo
	printf 'modelfs'
	for _ in 1 2 3; do
		printf ',%s' "$(ttfb_mount build/modelfs s3://models "$MNT" \
			-o "endpoint=$URL,cache_dir=$W/ttfb-cache${OPTS:+,$OPTS}")"
	done
	echo
	if command -v s3fs >/dev/null; then
		printf 's3fs'
		for _ in 1 2 3; do
			printf ',%s' "$(ttfb_mount s3fs models "$MNT" -o "ro,url=$URL,use_path_request_style,passwd_file=$W/ttfb.passwd,endpoint=us-east-1,use_cache=$W/ttfb-cache,parallel_count=8,multipart_size=16")"
		done
		echo
	fi
} >"$OUT/ttfb.csv"
echo
echo "== time to first byte of a cold $SHARD (ms; 3 runs)"
column -s, -t <"$OUT/ttfb.csv"

# ---- 3. warm against the raw read of the cache's own data files
# The cache is filled by a cold read through modelfs, as in the harness. Then, each time with
# the page cache dropped: the data files read raw and the model read through modelfs, in
# alternating order. On this VM the first big read after the cold run is slow whoever does
# it (freed guest memory goes back to the host, and pages it must hand out again cost more),
# so the order is alternated and every read is reported.
mbps_of() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / 1e6 / ((b - a) / 1e9) }'; }
C=$W/warm-cache
rm -rf "$C"
mkdir -p "$MNT"
BYTES=$(cat "$W"/model/*.safetensors | wc -c)
build/modelfs s3://models "$MNT" -o "endpoint=$URL,cache_dir=$C${OPTS:+,$OPTS}"
cat "$MNT"/model/*.safetensors >/dev/null
fusermount3 -u "$MNT"
warm_raw() {
	local t0
	sync; echo 3 >/proc/sys/vm/drop_caches
	t0=$(date +%s%N)
	find "$C/data" -type f -size +1M -exec cat {} + >/dev/null
	echo "cache data files (raw),$1,$(mbps_of "$BYTES" "$t0" "$(date +%s%N)")"
}
warm_modelfs() {
	local t0
	build/modelfs s3://models "$MNT" -o "endpoint=$URL,cache_dir=$C${OPTS:+,$OPTS}"
	sync; echo 3 >/proc/sys/vm/drop_caches
	t0=$(date +%s%N)
	cat "$MNT"/model/*.safetensors >/dev/null
	echo "modelfs warm,$1,$(mbps_of "$BYTES" "$t0" "$(date +%s%N)")"
	fusermount3 -u "$MNT"
}
{
	echo "read,run,MBps"
	warm_raw 1; warm_modelfs 1
	warm_modelfs 2; warm_raw 2
	warm_raw 3; warm_modelfs 3
} >"$OUT/warm-raw.csv"
rm -rf "$C"
echo
echo "== warm: the cache's data files read raw vs through modelfs (MB/s, page cache dropped)"
column -s, -t <"$OUT/warm-raw.csv"

# ---- 4. chart and Markdown table from the harness's results.csv
python3 tests/bench/speed_report.py "$OUT/peers/results.csv" "$OUT/ttfb.csv" "$OUT" "$BACKEND" \
	"$OUT/warm-raw.csv"
echo
echo "results: $OUT (table.md, chart.png, peers/results.csv, ttfb.csv)"
