#!/usr/bin/env bash
# Benchmark: load a model cold through modelfs, then restart the daemon with
# the object store stopped and load it again from the chunk cache. Prints the
# figures (a benchmark, not a pass/fail test). Needs root; run after a build.
#   tests/bench/restart.sh [SIZE_MIB]      default 4096 (4 shards)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-4096}
W=${WORK:-/var/tmp/modelfs-bench-restart}
PORT=9401
source tests/bench/lib.sh
bench_setup
bytes=$(du -sb --apparent-size "$W/model" | cut -f1)

rm -rf "$W/cache"
OPTS="endpoint=$S3_ENDPOINT,cache_dir=$W/cache,cache_size=$((SIZE_MIB * 2))M"
"$BIN" s3://models/bench "$W/mnt" -o "$OPTS"
drop
t0=$(now); (cd "$W/mnt" && cat ./*.safetensors >/dev/null); t1=$(now)
cold_s=$(secs "$t0" "$t1"); cold=$(mbps "$bytes" "$t0" "$t1")
fusermount3 -u "$W/mnt"
stat_before=$("$BIN" cache stat "$W/cache")
misses=$(sed -n 's/.*, \([0-9]*\) fetched.*/\1/p' <<<"$stat_before")
hits0=$(sed -n 's/.*(\([0-9]*\) chunk reads from disk.*/\1/p' <<<"$stat_before")

kill "$S3PID"; wait "$S3PID" 2>/dev/null || true; S3PID=""
t0=$(now)
"$BIN" s3://models/bench "$W/mnt" -o "$OPTS" 2>"$W/remount.log"
t1=$(now)
mount_s=$(secs "$t0" "$t1")
drop
t0=$(now); (cd "$W/mnt" && cat ./*.safetensors >/dev/null); t1=$(now)
warm_s=$(secs "$t0" "$t1"); warm=$(mbps "$bytes" "$t0" "$t1")
t0=$(now); (cd "$W/mnt" && cat ./*.safetensors >/dev/null); t1=$(now)
hot=$(mbps "$bytes" "$t0" "$t1")
fusermount3 -u "$W/mnt"
sleep 1.2
hits1=$("$BIN" cache stat "$W/cache" | sed -n 's/.*(\([0-9]*\) chunk reads from disk.*/\1/p')
drop
t0=$(now); find "$W/cache/data" -type f -exec cat {} + >/dev/null; t1=$(now)
disk=$(mbps "$bytes" "$t0" "$t1")

printf '\nmodel: %d MiB in 4 shards, chunk 4 MiB, s3rver on 127.0.0.1\n' "$SIZE_MIB"
printf '%-44s %10s %8s\n' "measurement" "MB/s" "seconds"
printf '%-44s %10s %8s\n' "cold load (server up, empty cache)" "$cold" "$cold_s"
printf '%-44s %10s %8s\n' "mount after restart, server stopped" "-" "$mount_s"
printf '%-44s %10s %8s\n' "warm load after restart (page cache dropped)" "$warm" "$warm_s"
printf '%-44s %10s %8s\n' "hot load (page cache)" "$hot" "-"
printf '%-44s %10s %8s\n' "raw disk: cat of the cache files, cold" "$disk" "-"
printf 'warm / raw disk: %s\n' "$(awk -v a="$warm" -v b="$disk" 'BEGIN { printf "%.2f", a / b }')"
printf 'chunks fetched cold: %s; chunk reads served from the cache after the restart: %s; GETs after the restart: 0 (server stopped)\n' \
	"$misses" "$((hits1 - hits0))"
grep -h "unreachable" "$W/remount.log" | sed 's/^/remount: /' || true
echo "$stat_before" | sed 's/^/cache after the cold load: /'
