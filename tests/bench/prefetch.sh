#!/usr/bin/env bash
# Benchmark: prefetch throughput against the backend's raw parallel-GET limit,
# and the first read after a prefetch against a warm read. Prints figures (not
# a pass/fail test). Needs root; run after a build.
#   tests/bench/prefetch.sh [SIZE_MIB]      default 4096 (4 shards)
set -euo pipefail
cd "$(dirname "$0")/../.."
SIZE_MIB=${1:-4096}
W=${WORK:-/var/tmp/modelfs-bench-prefetch}
PORT=9402
source tests/bench/lib.sh
bench_setup
shards=$(cd "$W/model" && ls ./*.safetensors | sed 's|^\./||')
bytes=$(cd "$W/model" && cat $shards | wc -c)

# the limit: 8 parallel 64 MiB ranged GETs over every shard (curl, SigV4)
ranges=()
for f in $shards; do
	size=$(stat -c %s "$W/model/$f")
	for ((o = 0; o < size; o += 64 << 20)); do
		e=$((o + (64 << 20) - 1)); [ "$e" -lt "$size" ] || e=$((size - 1))
		ranges+=("$f $o-$e")
	done
done
t0=$(now)
printf '%s\n' "${ranges[@]}" | while read -r f r; do echo "$S3_ENDPOINT/models/bench/$f $r"; done |
	xargs -P 8 -n 2 sh -c 'exec curl -sS --fail --aws-sigv4 "aws:amz:us-east-1:s3" --user S3RVER:S3RVER -o /dev/null -H "x-amz-content-sha256: e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855" -r "$1" "$0"'
t1=$(now)
limit=$(mbps "$bytes" "$t0" "$t1")

rm -rf "$W/cache"
"$BIN" s3://models/bench "$W/mnt" -o "endpoint=$S3_ENDPOINT,cache_dir=$W/cache,cache_size=$((SIZE_MIB * 2))M"
drop
t0=$(now); "$BIN" prefetch --wait --quiet "$W/mnt"; t1=$(now)
pf=$(mbps "$bytes" "$t0" "$t1")
drop
t0=$(now); (cd "$W/mnt" && cat $shards >/dev/null); t1=$(now)
first=$(mbps "$bytes" "$t0" "$t1")
drop
t0=$(now); (cd "$W/mnt" && cat $shards >/dev/null); t1=$(now)
warm=$(mbps "$bytes" "$t0" "$t1")
fusermount3 -u "$W/mnt"

printf '\nmodel: %d MiB in 4 shards, s3rver on 127.0.0.1, chunk 4 MiB\n' "$SIZE_MIB"
printf '%-52s %8s %7s\n' "measurement" "MB/s" "ratio"
printf '%-52s %8s %7s\n' "limit: curl, 8 parallel 64 MiB ranged GETs" "$limit" "1.00"
printf '%-52s %8s %7s\n' "modelfs prefetch --wait (empty cache)" "$pf" "$(awk -v a="$pf" -v b="$limit" 'BEGIN{printf "%.2f", a/b}')"
printf '%-52s %8s %7s\n' "first read after prefetch (page cache dropped)" "$first" "$(awk -v a="$first" -v b="$warm" 'BEGIN{printf "%.2f", a/b}')"
printf '%-52s %8s %7s\n' "warm read (again, page cache dropped)" "$warm" "1.00"
