#!/usr/bin/env bash
# A cache disk slower than the store never slows a reader (issue 13): the
# cache lives on a small ext4 filesystem on a loop device whose writes the
# daemon's cgroup throttles to 16 MiB/s (blkio or io.max), and the daemon's
# memory is limited so its chunk pool is the smallest (128 MiB). A cold read
# of a 256 MiB file, which the disk would need 16 s to take, runs at the
# store's speed: chunks the disk cannot take in time are left out of the
# cache (counted as dropped), the bytes are right, and the mount fills in
# what is missing in the background, so that the store can then be down.
# A prefetch, whose point is the cache, goes at the disk's speed and drops
# nothing.
source "$(dirname "$0")/lib.sh"

RATE=$((16 << 20))
SIZE=$((256 << 20))
MNT=$WORK/mnt
SRC=$WORK/src
IMG=$WORK/cache.img
CDIR=$WORK/slowfs
LOOP= CG_DIRS=()
extra_cleanup() {
	mountpoint -q "$MNT" 2>/dev/null && fusermount3 -u "$MNT" 2>/dev/null
	sleep 0.2
	mountpoint -q "$CDIR" 2>/dev/null && umount "$CDIR"
	[ -n "$LOOP" ] && losetup -d "$LOOP"
	local d
	for d in "${CG_DIRS[@]}"; do rmdir "$d" 2>/dev/null; done
}
trap 'extra_cleanup; cleanup' EXIT

skip() { echo "SKIP - $*"; echo "0 passed, 0 failed"; exit 0; }
command -v losetup >/dev/null && command -v mkfs.ext4 >/dev/null || skip "no losetup or mkfs.ext4"
truncate -s 1G "$IMG"
mkfs.ext4 -q -F "$IMG" || skip "mkfs.ext4 failed"
LOOP=$(losetup -f --show "$IMG" 2>/dev/null) || skip "no loop device"
mkdir -p "$CDIR"
mount "$LOOP" "$CDIR" || skip "cannot mount the loop device"
DEV=$(lsblk -ndo MAJ:MIN "$LOOP" | tr -d ' ')

# a cgroup for the daemon: writes to the loop device throttled, memory limited
CG=modelfs-test-$$
if [ -f /sys/fs/cgroup/cgroup.controllers ]; then # v2
	grep -qw io /sys/fs/cgroup/cgroup.subtree_control || echo +io >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
	grep -qw memory /sys/fs/cgroup/cgroup.subtree_control || echo +memory >/sys/fs/cgroup/cgroup.subtree_control 2>/dev/null
	mkdir "/sys/fs/cgroup/$CG" && CG_DIRS+=("/sys/fs/cgroup/$CG") || skip "cannot make a cgroup"
	echo "$DEV wbps=$RATE" >"/sys/fs/cgroup/$CG/io.max" || skip "no io.max"
	echo $((2 << 30)) >"/sys/fs/cgroup/$CG/memory.max" || skip "no memory.max"
	PROCS=("/sys/fs/cgroup/$CG/cgroup.procs")
elif [ -d /sys/fs/cgroup/blkio ] && [ -d /sys/fs/cgroup/memory ]; then # v1
	mkdir "/sys/fs/cgroup/blkio/$CG" "/sys/fs/cgroup/memory/$CG" || skip "cannot make a cgroup"
	CG_DIRS+=("/sys/fs/cgroup/blkio/$CG" "/sys/fs/cgroup/memory/$CG")
	echo "$DEV $RATE" >"/sys/fs/cgroup/blkio/$CG/blkio.throttle.write_bps_device" || skip "no blkio throttle"
	echo $((2 << 30)) >"/sys/fs/cgroup/memory/$CG/memory.limit_in_bytes" || skip "no memory limit"
	PROCS=("/sys/fs/cgroup/blkio/$CG/cgroup.procs" "/sys/fs/cgroup/memory/$CG/cgroup.procs")
else
	skip "no cgroup controllers for io and memory"
fi
# the daemon enters the cgroup before it starts (its pool is sized at start)
REAL=$MODELFS
MODELFS=$WORK/modelfs-in-cgroup
{
	echo '#!/bin/sh'
	for p in "${PROCS[@]}"; do echo "echo \$\$ >$p"; done
	echo "exec $REAL \"\$@\""
} >"$MODELFS"
chmod +x "$MODELFS"

# the throttle is real: a direct write from inside the cgroup goes at about RATE
t0=$(date +%s%N)
sh -c "for p in ${PROCS[*]}; do echo \$\$ >\$p; done; exec dd if=/dev/zero of=$CDIR/probe bs=1M count=32 oflag=direct status=none"
probe_ms=$((($(date +%s%N) - t0) / 1000000))
rm -f "$CDIR/probe"
check "the cache disk takes 32 MiB in >= 1.5 s from the daemon's cgroup ($probe_ms ms)" [ "$probe_ms" -ge 1500 ]

mkdir -p "$SRC"
head -c "$SIZE" /dev/urandom >"$SRC/big.bin"
head -c $((160 << 20)) /dev/urandom >"$SRC/pf.bin"
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models m "$SRC"
sha() { sha256sum "$1" | cut -d' ' -f1; }
want=$(sha "$SRC/big.bin")

# ---- a cold read at the store's speed, not the disk's
mount_fs s3://models/m "$MNT" "cache_dir=$CDIR/c"
grep -o 'cache: [0-9]* fetch streams.*' "$WORK/mnt.log" | head -1
drop_caches
t0=$(date +%s%N)
got=$(sha "$MNT/big.bin")
read_ms=$((($(date +%s%N) - t0) / 1000000))
check "a cold read of 256 MiB gives the right bytes" [ "$got" = "$want" ]
disk_ms=$((SIZE / RATE * 1000))
check "... in $read_ms ms, under half the $disk_ms ms the cache disk needs" [ "$read_ms" -lt $((disk_ms / 2)) ]

# ---- the dropped chunks are filled in behind the reader, at the disk's speed
chunks() { "$REAL" cache stat "$CDIR/c" 2>/dev/null | awk '/^chunks/ {print $2}'; }
for ((i = 0; i < 600; i++)); do [ "$(chunks)" = $((SIZE >> 22)) ] && break; sleep 0.1; done
check "the mount fills in the dropped chunks in the background ($(chunks) of $((SIZE >> 22)) chunks cached)" \
	[ "$(chunks)" = $((SIZE >> 22)) ]
umount_fs "$MNT"
line=$(grep -o 'cache: [0-9]* chunk reads.*' "$WORK/mnt.log" | tail -1)
echo "# $line"
dropped=$(echo "$line" | sed -n 's/.*(\([0-9]*\) of them dropped.*/\1/p')
check "chunks the disk could not take in time were dropped, not waited for (${dropped:-?})" \
	[ "${dropped:-0}" -gt 0 ]

# ---- so the next mount reads all of it from the cache, with the store down
s3_stop
mount_fs s3://models/m "$MNT" "cache_dir=$CDIR/c"
drop_caches
check "with the store down, every byte of the file is read from the cache" \
	[ "$(sha "$MNT/big.bin")" = "$want" ]
umount_fs "$MNT"
S3_PORT_WANT=$S3_PORT s3_start s3
# ---- a prefetch goes at the disk's speed and drops nothing
mount_fs s3://models/m "$MNT" "cache_dir=$CDIR/p,prefetch=pf.bin,ready_file=$WORK/ready"
for ((i = 0; i < 600; i++)); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
check "the prefetch of 160 MiB ends" [ -e "$WORK/ready" ]
umount_fs "$MNT"
line3=$(grep -o 'cache: [0-9]* chunk reads.*' "$WORK/mnt.log" | tail -1)
echo "# $line3"
check "... and dropped nothing" grep -q '(0 of them dropped' <<<"$line3"
s3_stop
mount_fs s3://models/m "$MNT" "cache_dir=$CDIR/p"
drop_caches
check "... so with the store down every byte is read from the cache" \
	[ "$(sha "$MNT/pf.bin")" = "$(sha "$SRC/pf.bin")" ]
umount_fs "$MNT"
finish
