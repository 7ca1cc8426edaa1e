#!/usr/bin/env bash
# Cold, warm and hot reads of one model through every source, in one run:
# s3:// (s3rver), oss:// (the fake OSS of the tests, signatures checked),
# http:// (nginx), hf:// (the fake Hub of the tests, LFS files redirected to
# its CDN port) and file:// (a local directory); then s3fs and rclone on the
# same s3rver bucket, when they are installed (apt-get install s3fs rclone).
# Each row also reads the same bytes raw from where its server reads them.
# Prints MB/s per row; a benchmark, not a pass/fail test.
#
#   sudo tests/bench/sources.sh [SIZE_MIB]      (default 1024, in 4 files)
#
# cold: empty cache, page cache dropped; warm: a remount, the cache full
# (modelfs: from a prefetch; s3fs and rclone: from the cold read), page cache
# dropped; hot: the page cache full. "raw" is `cat` of the source files
# themselves with the page cache dropped.
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODELFS=${MODELFS:-$ROOT/build/modelfs}
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
# the other servers read hard links of the same files
export OSS_ACCESS_KEY_ID=ossak OSS_ACCESS_KEY_SECRET=osssk
mkdir -p "$WORK/oss/models" "$WORK/www"
cp -al "$M" "$WORK/oss/models/m"
cp -al "$M" "$WORK/www/m"
OSSFAKE_AK=ossak OSSFAKE_SK=osssk python3 "$HERE/ossfake.py" "$WORK/oss" "$WORK/oss.port" 2>/dev/null &
PIDS+=($!)
nginx_start "$WORK/www"
COMMIT=$(printf bench | sha1sum | cut -c1-40)
mkdir -p "$WORK/hub/org/m/commits"
cp -al "$M" "$WORK/hub/org/m/commits/$COMMIT"
echo "{\"main\": \"$COMMIT\"}" >"$WORK/hub/org/m/refs.json"
python3 "$HERE/hubfake.py" "$WORK/hub" "$WORK/hub.port" 2>/dev/null &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/oss.port" ] && [ -s "$WORK/hub.port" ] && break; sleep 0.05; done
OSS_EP=endpoint=http://127.0.0.1:$(cat "$WORK/oss.port"),region=cn-hangzhou
HUB=http://127.0.0.1:$(cut -d' ' -f1 "$WORK/hub.port")
# the fake Hub hashes a file at its first resolve: not part of a cold read
for f in "$M"/*.safetensors; do
	curl -s -o /dev/null -I "$HUB/org/m/resolve/main/$(basename "$f")"
done

MNT=$WORK/mnt
mkdir -p "$MNT"
echo "S3RVER:S3RVER" >"$WORK/s3fs.passwd"
chmod 600 "$WORK/s3fs.passwd"
printf '[b]\ntype = s3\nprovider = Other\naccess_key_id = S3RVER\nsecret_access_key = S3RVER\nendpoint = %s\nregion = us-east-1\nforce_path_style = true\n' \
	"$S3_ENDPOINT" >"$WORK/rclone.conf"
# s3fs and rclone as the peers benchmark (../shared/bench) tunes them
peer_mount() { # NAME CACHE
	case $1 in
	s3fs) s3fs models:/m "$MNT" -o "ro,passwd_file=$WORK/s3fs.passwd,use_path_request_style,url=$S3_ENDPOINT,endpoint=us-east-1,parallel_count=8,multipart_size=16,kernel_cache,max_stat_cache_size=100000,stat_cache_expire=3600,use_cache=$2" ;;
	rclone) env -u AWS_CA_BUNDLE rclone --config "$WORK/rclone.conf" mount b:models/m "$MNT" --read-only --daemon \
		--cache-dir "$2" --vfs-cache-mode full --vfs-read-ahead 256M --dir-cache-time 1h \
		--attr-timeout 1h --buffer-size 64M --vfs-read-chunk-size 64M ;;
	esac
	for _ in $(seq 100); do mountpoint -q "$MNT" && ls "$MNT" >/dev/null 2>&1 && return 0; sleep 0.1; done
	return 1
}
peer_umount() { fusermount3 -u "$MNT" 2>/dev/null || umount "$MNT"; sleep 1; }

printf '%-8s %8s %8s %8s %8s   (MB/s, %d MiB)\n' source raw cold warm hot "$SIZE"
for src in s3 oss http hf file s3fs rclone; do
	case $src in
	s3) url=s3://models/m opts= raw=$M ;;
	oss) url=oss://models/m opts=$OSS_EP raw=$WORK/oss/models/m ;;
	http) url=http://127.0.0.1:$NGINX_PORT/m/ opts= raw=$WORK/www/m ;;
	hf) url=hf://org/m opts=endpoint=$HUB raw=$WORK/hub/org/m/commits/$COMMIT ;;
	file) url=file://$M opts= raw=$M ;;
	s3fs | rclone) raw=$M ;;
	esac
	C=$WORK/cache-$src
	drop_caches
	r_raw=$(read_all "$raw")
	if [ "$src" = s3fs ] || [ "$src" = rclone ]; then
		command -v "$src" >/dev/null || { printf '%-8s not installed\n' "$src"; continue; }
		peer_mount "$src" "$C" || { echo "$src: mount failed"; continue; }
		drop_caches
		r_cold=$(read_all "$MNT")
		peer_umount
		peer_mount "$src" "$C"
		drop_caches
		r_warm=$(read_all "$MNT")
		r_hot=$(read_all "$MNT")
		peer_umount
	else
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
	fi
	printf '%-8s %8s %8s %8s %8s\n' "$src" "$r_raw" "$r_cold" "$r_warm" "$r_hot"
done
