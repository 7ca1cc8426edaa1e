#!/usr/bin/env bash
# The chunk cache with real mounts and a real S3 server: restart with the
# server down, quota and watermarks, overwritten objects, damaged cache files,
# kill -9 in a loop, two daemons on one cache, a full cache disk, single flight.
source "$(dirname "$0")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
MNT2=$WORK/mnt2
mkdir -p "$SRC/sub" "$MNT" "$MNT2"
for i in 1 2 3; do head -c $((24 << 20)) /dev/urandom >"$SRC/shard-$i.safetensors"; done
head -c 3000000 /dev/urandom >"$SRC/sub/odd-size.bin"
echo '{"model_type": "test"}' >"$SRC/config.json"
: >"$SRC/empty"
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models m "$SRC"
(cd "$SRC" && find . -type f | LC_ALL=C sort | xargs sha256sum) >"$WORK/sha.want"
sha_ok() { drop_caches; (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum) | cmp -s - "$WORK/sha.want"; }
gets() { grep -c "debug: GET s3://" "$1" 2>/dev/null || true; }
stat_field() { "$MODELFS" cache stat "$1" | awk -v f="$2" '$1 == f {print $2}'; }
usage_bytes() { "$MODELFS" cache stat "$1" | sed -n 's/^usage .*(\([0-9]*\) bytes.*/\1/p'; }
COMMON="chunk_size=1M,metadata_ttl=3600"

# --- 1. restart, then read with the server stopped
C1=$WORK/cache1
mount_fs s3://models/m "$MNT" "cache_dir=$C1,$COMMON" -d
check "cold read through the cache: every sha256 matches" sha_ok "$MNT"
fetched=$(gets "$WORK/mnt.log")
check "user.modelfs.cached of a fully read file is SIZE/SIZE" \
	[ "$(getfattr --only-values -n user.modelfs.cached "$MNT/shard-1.safetensors")" = "$((24 << 20))/$((24 << 20))" ]
umount_fs "$MNT"
hits0=$("$MODELFS" cache stat "$C1" | sed -n "s/^reads *\([0-9]*\) chunk reads.*/\1/p")
s3_stop
: >"$WORK/mnt.log"
t0=$(date +%s%N)
mount_fs s3://models/m "$MNT" "cache_dir=$C1,$COMMON" -d
ms=$((($(date +%s%N) - t0) / 1000000))
check "with the server down and a snapshot, the mount starts ($ms ms) with one warning" \
	grep -q "unreachable.*mounting the listing saved" "$WORK/mnt.log"
check "server down: every sha256 matches, served from the cache" sha_ok "$MNT"
umount_fs "$MNT"
sleep 0.2
hits1=$("$MODELFS" cache stat "$C1" | sed -n "s/^reads *\([0-9]*\) chunk reads.*/\1/p")
served=$((hits1 - hits0))
# with kernel passthrough the complete files are read by the kernel from the
# cache files, not by the daemon: then only the 0 GETs say "from the cache"
via="the daemon served $served chunk reads from disk"
pt=0
grep -q "kernel passthrough on" "$WORK/mnt.log" && pt=1 &&
	via="$via, the kernel read the rest from the cache files (passthrough)"
g=$(gets "$WORK/mnt.log")
check_all "restart: $fetched chunks fetched cold; server down: $via, $g GETs" \
	'[ "$g" -eq 0 ] && { [ "$pt" = 1 ] || [ "$served" -ge "$fetched" ]; }'
echo "figure: restart test: cold run fetched $fetched chunks (1 MiB); warm run with the server down: $via; 0 GETs"
t0=$(date +%s%N)
out=$(timeout 20 "$MODELFS" s3://models/m "$MNT" -o "cache_dir=$WORK/nocache-here,endpoint=$S3_ENDPOINT" 2>&1)
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
check_all "server down and no snapshot: the mount fails fast ($ms ms: $out)" \
	'[ "$rc" -ne 0 ] && [ "$ms" -lt 5000 ] && grep -q "cannot reach endpoint" <<<"$out"'
S3_PORT_WANT=$S3_PORT s3_start s3

# --- 2. a quota smaller than the model, watermarks
C2=$WORK/cache2
mount_fs s3://models/m "$MNT" "cache_dir=$C2,$COMMON,cache_size=30M,cache_high=0.9,cache_low=0.5"
check "model (75 MiB) larger than the quota (30 MiB) reads correctly" sha_ok "$MNT"
sleep 2
umount_fs "$MNT"
usage=$(usage_bytes "$C2")
quota=$((30 << 20))
check "usage after the run ($usage) is within the quota ($quota)" [ "$usage" -le "$quota" ]
ev=$(grep -c "cache eviction:" "$WORK/mnt.log")
# "K KiB removed ... usage A -> B KiB": each round removes what takes usage A
# down to low x quota (within a chunk of 1 MiB). B is read after the round,
# so chunks the reader fetched meanwhile (its readahead, the writers) are in
# it: B is only held to the quota.
bad=$(grep "cache eviction:" "$WORK/mnt.log" |
	sed -E 's/.*\(([0-9]+) KiB\) removed.*usage ([0-9]+) -> ([0-9]+) KiB.*/\1 \2 \3/' |
	awk -v low=$(((30 << 10) / 2)) -v q=$((30 << 10)) '$1 + 1024 < $2 - low || $3 > q' | wc -l)
check_all "$ev eviction rounds, each removing usage down to low x quota (15 MiB)" '[ "$ev" -ge 1 ] && [ "$bad" -eq 0 ]'
grep "cache eviction:" "$WORK/mnt.log" | head -3 | sed 's/^/  /'
echo "figure: watermarks: quota 30 MiB, high 0.9 (27 MiB), low 0.5 (15 MiB): $(grep "cache eviction:" "$WORK/mnt.log" | head -1 | sed 's/.*usage/usage/')"

# --- 3. an object overwritten on the server
C3=$WORK/cache3
mount_fs s3://models/m "$MNT" "cache_dir=$C3,chunk_size=1M,metadata_ttl=0"
old_sha=$(sha256sum <"$SRC/sub/odd-size.bin")
python3 - "$MNT/sub/odd-size.bin" "$WORK/fd-ready" "$WORK/overwritten" >"$WORK/stale.out" 2>&1 <<'PY' &
import errno, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY)
os.pread(fd, 4096, 0)                      # first chunk now cached for this version
open(sys.argv[2], "w").close()
while not os.path.exists(sys.argv[3]):
    time.sleep(0.05)
try:
    os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
    data = os.pread(fd, 4096, 2 << 20)     # an uncached chunk of the old version
    print("read", len(data), "bytes: no error")
except OSError as e:
    print("errno", errno.errorcode.get(e.errno))
PY
reader=$!
for ((i = 0; i < 100; i++)); do [ -e "$WORK/fd-ready" ] && break; sleep 0.05; done
head -c 3000000 /dev/urandom >"$WORK/new.bin"
$S3TOOL put models m/sub/odd-size.bin "$WORK/new.bin"
touch "$WORK/overwritten"
wait "$reader"
check "open file, object overwritten: reading an uncached part gives ESTALE ($(cat "$WORK/stale.out"))" \
	grep -q "errno ESTALE" "$WORK/stale.out"
check "the next open reads the new version" [ "$(sha256sum <"$MNT/sub/odd-size.bin")" = "$(sha256sum <"$WORK/new.bin")" ]
drop_caches
check "and again with the page cache dropped (no old chunk served)" \
	[ "$(sha256sum <"$MNT/sub/odd-size.bin")" = "$(sha256sum <"$WORK/new.bin")" ]
head -c 1234567 /dev/urandom >"$WORK/new2.bin"
$S3TOOL put models m/sub/odd-size.bin "$WORK/new2.bin"
check "overwritten with another size: the next open reads it whole" \
	[ "$(cat "$MNT/sub/odd-size.bin" | sha256sum)" = "$(sha256sum <"$WORK/new2.bin")" ]
umount_fs "$MNT"
$S3TOOL put models m/sub/odd-size.bin "$SRC/sub/odd-size.bin"   # restore for what follows
[ "$old_sha" = "$(sha256sum <"$SRC/sub/odd-size.bin")" ] || fail "restore"

# --- 4. damaged cache files (no_passthrough: the daemon checks every block
# it serves; passthrough reads trust a complete file, see docs/design.md)
C4=$WORK/cache4
mount_fs s3://models/m "$MNT" "cache_dir=$C4,$COMMON" -d
sha_ok "$MNT" || fail "fill cache4"
umount_fs "$MNT"
files=($(find "$C4/data" -type f -size +20M | sort))   # the three 24 MiB shards
printf 'XXXXXXXX' | dd of="${files[0]}" bs=1 seek=$((5 << 20)) conv=notrunc status=none
check "cache verify finds the flipped bytes and exits non-zero" bash -c "! '$MODELFS' cache verify '$C4' | grep -q ' 0 damaged'"
printf 'YYYYYYYY' | dd of="${files[1]}" bs=1 seek=$((7 << 20)) conv=notrunc status=none
rm -f "${files[2]}"
small=$(find "$C4/data" -type f -size -20M -size +1M | head -1)   # the 3 MB file
truncate -s $((1 << 20)) "$small"
: >"$WORK/mnt.log"
mount_fs s3://models/m "$MNT" "cache_dir=$C4,$COMMON,no_passthrough" -d
check "flipped, deleted and truncated cache files: every sha256 still matches" sha_ok "$MNT"
check "damaged chunks are detected and fetched again ($(gets "$WORK/mnt.log") GETs)" \
	bash -c "grep -q 'failed its check' '$WORK/mnt.log' && [ $(gets "$WORK/mnt.log") -gt 0 ]"
umount_fs "$MNT"
check "cache verify afterwards: 0 damaged" bash -c "'$MODELFS' cache verify '$C4' | grep -q ' 0 damaged'"

# --- 5. kill -9 in a loop, during reads and during eviction
C5=$WORK/cache5
for round in 1 2 3 4 5 6; do
	mount_fs s3://models/m "$MNT" "cache_dir=$C5,$COMMON,cache_size=30M,cache_high=0.8,cache_low=0.4" || break
	drop_caches
	(cd "$MNT" && cat ./*.safetensors sub/* >/dev/null 2>&1) &
	rd=$!
	sleep "0.$((RANDOM % 9 + 1))"
	kill -9 "$MNT_PID"
	wait "$MNT_PID" 2>/dev/null
	wait "$rd" 2>/dev/null
	fusermount3 -uz "$MNT" 2>/dev/null
done
mount_fs s3://models/m "$MNT" "cache_dir=$C5,$COMMON,cache_size=30M,cache_high=0.8,cache_low=0.4"
check "after 6 kill -9 during reads and eviction: every sha256 matches" sha_ok "$MNT"
umount_fs "$MNT"
check "after the kill loop the index and data agree (cache verify: 0 damaged)" \
	bash -c "'$MODELFS' cache verify '$C5' | grep -q ' 0 damaged'"
check "usage within the quota after the kill loop" [ "$(usage_bytes "$C5")" -le $((30 << 20)) ]

# --- 6. two daemons sharing one cache directory
C6=$WORK/cache6
: >"$WORK/mnt.log"
: >"$WORK/mnt2.log"
mount_fs s3://models/m "$MNT" "cache_dir=$C6,$COMMON" -d
pid1=$MNT_PID
mount_fs s3://models/m "$MNT2" "cache_dir=$C6,$COMMON" -d
pid2=$MNT_PID
drop_caches
cat "$MNT/shard-2.safetensors" >"$WORK/a.out" &
ra=$!
cat "$MNT2/shard-2.safetensors" >"$WORK/b.out" &
rb=$!
wait "$ra" "$rb"
# bytes fetched by both daemons together (readahead fetches runs of chunks
# with one GET): each of the 24 chunks exactly once
get_bytes() { grep -o "GET s3://models/m/shard-2.safetensors bytes=[0-9]*-[0-9]*" "$@" |
	sed 's/.*bytes=//' | awk -F- '{s += $2 - $1 + 1} END {print s + 0}'; }
b1=$(get_bytes "$WORK/mnt.log")
b2=$(get_bytes "$WORK/mnt2.log")
check "two daemons read one 24 MiB file at once: $b1 + $b2 bytes fetched, each chunk once" \
	[ $((b1 + b2)) -eq $((24 << 20)) ]
check "both readers got correct bytes" cmp -s "$WORK/a.out" "$SRC/shard-2.safetensors" && cmp -s "$WORK/b.out" "$SRC/shard-2.safetensors"
check "cache clear refuses while mounts use the directory" bash -c "! '$MODELFS' cache clear '$C6' 2>/dev/null"
kill "$pid1" "$pid2"; wait "$pid1" "$pid2" 2>/dev/null
check "cache clear after unmount" "$MODELFS" cache clear "$C6"
check "nothing left after clear" [ -z "$(find "$C6/data" -type f 2>/dev/null)" ]

# --- 7. single flight: 16 readers of one cold chunk
C7=$WORK/cache7
: >"$WORK/mnt.log"
mount_fs s3://models/m "$MNT" "cache_dir=$C7,chunk_size=4M" -d
drop_caches
readers=()
for k in $(seq 0 15); do
	dd if="$MNT/shard-3.safetensors" of=/dev/null bs=4k count=1 skip=$((4096 + k * 16)) status=none &
	readers+=($!)
done
wait "${readers[@]}"
n=$(grep -c "GET s3://models/m/shard-3.safetensors bytes=16777216-" "$WORK/mnt.log")
check "16 readers of one cold 4 MiB chunk: $n GET" [ "$n" -eq 1 ]
umount_fs "$MNT"

# --- 8. a full cache disk (16 MiB tmpfs, quota larger than the disk)
T=$WORK/tmpfs
mkdir -p "$T"
mount -t tmpfs -o size=16m tmpfs "$T" && TMPFS_MOUNTS+=("$T")
mount_fs s3://models/m "$MNT" "cache_dir=$T/cache,$COMMON,cache_size=1G"
check "cache disk full (ENOSPC): every read still correct" sha_ok "$MNT"
check "the full disk is said in the log" grep -q "cannot write to the cache" "$WORK/mnt.log"
umount_fs "$MNT"

check "cache stat prints usage, quota, watermarks, reads and fetches" \
	bash -c "'$MODELFS' cache stat '$C1' | grep -q '^fetches' && '$MODELFS' cache stat '$C1' | grep -q '^watermarks'"
check "cache stat of a non-cache directory fails clearly" bash -c "! '$MODELFS' cache stat '$WORK' 2>&1 | grep -q usage"

finish
