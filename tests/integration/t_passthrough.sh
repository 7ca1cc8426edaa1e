#!/usr/bin/env bash
# Kernel FUSE passthrough of fully cached files: when it is used, that the
# daemon then serves no reads, that eviction leaves a pinned file alone, and
# that the kernel's rules on mixing modes never turn into an error for a
# reader (mixed opens, many opens at once, a new version while the old one
# is open). Skipped when the kernel has no passthrough.
source "$(dirname "$0")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC" "$MNT"
for i in 1 2 3 4; do head -c $((8 << 20)) /dev/urandom >"$SRC/shard-$i.bin"; done
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models m "$SRC"
gets() { grep -c "debug: GET s3://" "$1" 2>/dev/null || true; }
hits() { "$MODELFS" cache stat "$1" | sed -n "s/^reads *\([0-9]*\) chunk reads.*/\1/p"; }
same() { [ "$(sha256sum <"$1")" = "$(sha256sum <"$2")" ]; }
# same_fd N FILE: what open descriptor N reads (not a new open, as /dev/fd/N would be)
same_fd() { [ "$(sha256sum <&"$1")" = "$(sha256sum <"$2")" ]; }
C=$WORK/cache
OPTS="cache_dir=$C,chunk_size=1M,metadata_ttl=3600"

mount_fs s3://models/m "$MNT" "$OPTS" -d
if ! grep -q "kernel passthrough on" "$WORK/mnt.log"; then
	echo "ok - skipped: $(grep -o 'the kernel has no FUSE passthrough.*' "$WORK/mnt.log" || echo 'passthrough not taken')"
	finish
	exit $?
fi

# --- 1. a cold file goes through the daemon; once complete, through the kernel
check "cold read through the daemon: bytes match" same "$MNT/shard-1.bin" "$SRC/shard-1.bin"
umount_fs "$MNT"
h0=$(hits "$C")
: >"$WORK/mnt.log"
mount_fs s3://models/m "$MNT" "$OPTS" -d
drop_caches
check "complete file, page cache dropped: bytes match" same "$MNT/shard-1.bin" "$SRC/shard-1.bin"
check "python mmap of a passed-through file: bytes match" python3 -c "
import hashlib, mmap, sys
a = open(sys.argv[1], 'rb'); m = mmap.mmap(a.fileno(), 0, prot=mmap.PROT_READ)
sys.exit(hashlib.sha256(m).digest() != hashlib.sha256(open(sys.argv[2], 'rb').read()).digest())
" "$MNT/shard-1.bin" "$SRC/shard-1.bin"
umount_fs "$MNT"
h1=$(hits "$C")
g=$(gets "$WORK/mnt.log")
check_all "the daemon served no read of it ($((h1 - h0)) chunk reads, $g GETs)" \
	'[ "$((h1 - h0))" -eq 0 ] && [ "$g" -eq 0 ]'
mount_fs s3://models/m "$MNT" "$OPTS,no_passthrough" -d
drop_caches
same "$MNT/shard-1.bin" "$SRC/shard-1.bin" || fail "read with no_passthrough"
umount_fs "$MNT"
h2=$(hits "$C")
check "with no_passthrough the daemon serves it ($((h2 - h1)) chunk reads)" [ "$((h2 - h1))" -ge 8 ]

# --- 2. mixed modes on one inode: a reader that opened it while it was not
# complete keeps it open; later opens must not fail (the kernel forbids
# mixing, so they go through the daemon too), then pass through once it closes
: >"$WORK/mnt.log"
mount_fs s3://models/m "$MNT" "$OPTS" -d
exec 7<"$MNT/shard-2.bin"                       # cold: through the daemon
head -c $((1 << 20)) <&7 >/dev/null
cat "$MNT/shard-2.bin" >/dev/null               # completes the cache file
ok_mixed=1
for i in 1 2 3; do same "$MNT/shard-2.bin" "$SRC/shard-2.bin" || ok_mixed=0; done
check "opens while an older open is in daemon mode: no error, bytes match" [ "$ok_mixed" = 1 ]
exec 7<&-
sleep 0.2
check "after it closes: bytes match" same "$MNT/shard-2.bin" "$SRC/shard-2.bin"

# --- 3. many opens and closes of one passed-through file at once (shard-1:
# complete, and not read through the daemon in this mount)
pids=()
for i in $(seq 8); do
	(for j in $(seq 20); do same "$MNT/shard-1.bin" "$SRC/shard-1.bin" || exit 1; done) &
	pids+=($!)
done
bad=0
for p in "${pids[@]}"; do wait "$p" || bad=$((bad + 1)); done
check "8 readers x 20 opens of one file at once: all bytes match" [ "$bad" -eq 0 ]

# --- 4. a new version while the old one is open in passthrough
umount_fs "$MNT"
mount_fs s3://models/m "$MNT" "cache_dir=$C,chunk_size=1M,metadata_ttl=0" -d
exec 8<"$MNT/shard-1.bin"                       # complete: passthrough
head -c $((8 << 20)) /dev/urandom >"$WORK/new.bin"
$S3TOOL put models m/shard-1.bin "$WORK/new.bin"
# the open's HEAD sees another version: a new inode for the name (the open
# answers ESTALE, the kernel looks the path up again and opens that one)
check "opening the new version while the old is passed through: the new bytes, not the old" \
	same "$MNT/shard-1.bin" "$WORK/new.bin"
check "the open old version still reads the old bytes" same_fd 8 "$SRC/shard-1.bin"
exec 8<&-
sleep 0.2
check "after it closes, the new version reads" same "$MNT/shard-1.bin" "$WORK/new.bin"
$S3TOOL put models m/shard-1.bin "$SRC/shard-1.bin"
umount_fs "$MNT"

# --- 5. eviction leaves a pinned file alone
C2=$WORK/cache2
mount_fs s3://models/m "$MNT" "cache_dir=$C2,chunk_size=1M,metadata_ttl=3600,cache_size=20M,cache_high=0.9,cache_low=0.3"
# prefetch completes it without a read through the daemon (which would keep
# the inode in daemon mode for this mount)
"$MODELFS" prefetch --wait --quiet "$MNT/shard-3.bin"
exec 9<"$MNT/shard-3.bin"                       # complete and pinned
cat "$MNT/shard-4.bin" "$MNT/shard-1.bin" "$MNT/shard-2.bin" >/dev/null
sleep 2
check "eviction ran and skipped the pinned chunks" grep -q "cache eviction:.*[1-9][0-9]* skipped in use" "$WORK/mnt.log"
s3_stop
drop_caches
check "the pinned file reads correctly with the server stopped" same_fd 9 "$SRC/shard-3.bin"
exec 9<&-
grep "cache eviction:" "$WORK/mnt.log" | head -2 | sed 's/^/  /'
umount_fs "$MNT"
finish
