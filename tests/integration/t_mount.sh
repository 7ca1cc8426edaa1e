#!/usr/bin/env bash
# The foundation end to end: a tree with nested prefixes, > 1,000 keys in one
# prefix, special-character keys, empty objects, a "dir/" marker, a file/dir
# name conflict and a multi-GiB file is uploaded to s3rver, mounted, and read
# back with find, stat, sha256sum and random ranged reads. Writes fail with
# EROFS; a reader of 4 KiB at 2 GiB causes one small ranged GET.
source "$(dirname "$0")/lib.sh"

MANY=${MANY:-1200}
BIG_MIB=${BIG_MIB:-2200}
SRC=$WORK/src
MNT=$WORK/mnt

log "generating the tree ($MANY small keys, a $BIG_MIB MiB file)"
python3 "$HERE/gen_tree.py" "$SRC" "$MANY" "$BIG_MIB"
s3_start s3
log "uploading"
$S3TOOL mb models
$S3TOOL putdir models llama "$SRC" || exit 1
$S3TOOL put models llama/emptydir/ /dev/null             # directory marker
echo conflict >"$WORK/conflict"
$S3TOOL put models llama/a/b/c "$WORK/conflict"         # object "c" and prefix "c/"
$S3TOOL put models other/unrelated.txt "$WORK/conflict"  # outside the mounted prefix
$S3TOOL put models llama-not-a-child "$WORK/conflict"    # shares the prefix's first bytes

log "mounting"
mkdir -p "$MNT"
t0=$(date +%s.%N)
"$MODELFS" s3://models/llama "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/cache" 2>"$WORK/mount-stderr.log" &&
	MOUNTS+=("$MNT")
rc=$?
t1=$(date +%s.%N)
check "mount without -f exits 0" [ "$rc" -eq 0 ]
check "mount is live when modelfs returns" mountpoint -q "$MNT"
log "mounted in $(awk -v a="$t0" -v b="$t1" 'BEGIN{printf "%.2f", b-a}') s"
check "mount is read-only (ro in /proc/mounts)" \
	awk -v m="$MNT" '$2 == m && $3 == "fuse.modelfs" && $4 ~ /(^|,)ro(,|$)/ {f=1} END {exit !f}' /proc/mounts

# --- the listing
(cd "$SRC" && find . | LC_ALL=C sort) >"$WORK/find.want"
(cd "$MNT" && find . | LC_ALL=C sort) >"$WORK/find.got"
check "find output equals the source tree ($(wc -l <"$WORK/find.want") entries)" \
	cmp -s "$WORK/find.want" "$WORK/find.got" ||
	diff "$WORK/find.want" "$WORK/find.got" | head -10
check "> 1000 keys in one prefix all listed" [ "$(ls "$MNT/many" | wc -l)" -eq "$MANY" ]
check_all "dir/ marker is an empty directory" '[ -d "$MNT/emptydir" ] && [ -z "$(ls -A "$MNT/emptydir")" ]'
check "object and prefix with one name: the directory wins" [ -d "$MNT/a/b/c" ]
check "the hidden object is logged" grep -q "hidden by directory" "$WORK/mount-stderr.log"
check_all "keys outside the prefix are not visible" '[ ! -e "$MNT/../other" ] && [ ! -e "$MNT/unrelated.txt" ]'

# --- attributes
check "file size equals the object size" \
	[ "$(stat -c %s "$MNT/big/model-big.safetensors")" -eq $((BIG_MIB << 20)) ]
check_all "empty object has size 0" '[ "$(stat -c %s "$MNT/empty.bin")" -eq 0 ] && [ ! -s "$MNT/empty.bin" ]'
check_all "file mode 0444, dir mode 0555" \
	'[ "$(stat -c %a "$MNT/config.json")" = 444 ] && [ "$(stat -c %a "$MNT/a")" = 555 ]'
check "mtime comes from LastModified (within a day of now)" \
	[ $(($(date +%s) - $(stat -c %Y "$MNT/config.json"))) -lt 86400 ]
ino1=$(stat -c %i "$MNT/a/b/shard-00001.safetensors")
drop_caches
ino2=$(stat -c %i "$MNT/a/b/shard-00001.safetensors")
check "inode numbers are stable within the mount ($ino1 = $ino2)" [ "$ino1" = "$ino2" ]
check "df shows the mount" df -B1 "$MNT" >/dev/null
total=$(du -sb --apparent-size "$SRC" | cut -f1)
dfsize=$(df -B1 --output=size "$MNT" | tail -1)
check "statfs size covers the model ($dfsize >= $((total - 1048576)))" [ "$dfsize" -ge $((total - 1048576)) ]

# --- contents
(cd "$SRC" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -P 4 -n 50 sha256sum | LC_ALL=C sort -k2) >"$WORK/sha.want"
(cd "$MNT" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -P 4 -n 50 sha256sum | LC_ALL=C sort -k2) >"$WORK/sha.got"
check "sha256 of every file equals the source ($(wc -l <"$WORK/sha.want") files, 4 readers at once)" \
	cmp -s "$WORK/sha.want" "$WORK/sha.got"
drop_caches
check "random ranged reads equal the source byte for byte" python3 - "$SRC" "$MNT" <<'PY'
import os, random, sys
src, mnt = sys.argv[1], sys.argv[2]
rng = random.Random(7)
files = ["big/model-big.safetensors", "a/b/c/deep.bin", "a/b/shard-00001.safetensors"]
for i in range(300):
    rel = rng.choice(files)
    size = os.path.getsize(os.path.join(src, rel))
    off = rng.randrange(0, size)
    n = rng.choice([1, 7, 4096, 65536, 1 << 20, 3 << 20])
    with open(os.path.join(src, rel), "rb") as a, open(os.path.join(mnt, rel), "rb") as b:
        if os.pread(a.fileno(), n, off) != os.pread(b.fileno(), n, off):
            print("mismatch", rel, off, n); sys.exit(1)
PY
fusermount3 -u "$MNT"
check "fusermount3 -u unmounts the daemonized mount" bash -c "! mountpoint -q '$MNT'"

# --- one small read far into a big file is one small ranged GET: one chunk
# (4 MiB) through the cache, the 4 KiB itself without it
small_read() {
	: >"$WORK/mnt.log"
	mount_fs s3://models/llama "$MNT" "$1" -d || fail "debug mount"
	python3 -c '
import os, sys
fd = os.open(sys.argv[1], os.O_RDONLY)
data = os.pread(fd, 4096, 2 * 2**30 - 4096)
assert len(data) == 4096' "$MNT/big/model-big.safetensors"
	gets=$(grep -c "GET s3://models/llama/big/model-big.safetensors bytes=" "$WORK/mnt.log")
	bytes=$(grep -o "GET s3://models/llama/big/model-big.safetensors bytes=[0-9]*-[0-9]*" "$WORK/mnt.log" |
		sed 's/.*bytes=//' | awk -F- '{s += $2 - $1 + 1} END {print s + 0}')
}
small_read "cache_dir=$WORK/cache-small"
check_all "4 KiB at offset 2 GiB through the cache: $gets GET, $bytes bytes (one 4 MiB chunk)" \
	'[ "$gets" -eq 1 ] && [ "$bytes" -le $((4 << 20)) ]'
umount_fs "$MNT"
small_read "no_cache"
check_all "4 KiB at offset 2 GiB with no_cache: $gets GET, $bytes bytes" \
	'[ "$gets" -eq 1 ] && [ "$bytes" -le 131072 ]'

# --- read-only
for op in "touch $MNT/new" "mkdir $MNT/newdir" "rm -f $MNT/config.json" "mv $MNT/config.json $MNT/x" \
	"chmod 600 $MNT/config.json" "ln -s x $MNT/link" "truncate -s 0 $MNT/config.json" \
	"setfattr -n user.x -v 1 $MNT/config.json"; do
	out=$($op 2>&1)
	check "EROFS: $op" grep -q "Read-only file system" <<<"$out"
done
check "open for writing fails with EROFS" python3 -c '
import errno, os, sys
try:
    os.open(sys.argv[1], os.O_WRONLY)
except OSError as e:
    sys.exit(0 if e.errno == errno.EROFS else 1)
sys.exit(1)' "$MNT/config.json"

# --- SIGTERM unmounts cleanly
kill -TERM "$MNT_PID"
wait "$MNT_PID"
rc=$?
check "SIGTERM: the daemon exits 0 ($rc)" [ "$rc" -eq 0 ]
check "SIGTERM: the mount is gone" bash -c "! mountpoint -q '$MNT'"

# --- uid, gid, umask
mount_fs s3://models/llama "$MNT" "uid=1234,gid=4321,umask=027" || fail "mount with uid/gid/umask"
check "uid/gid options" [ "$(stat -c %u:%g "$MNT/config.json")" = 1234:4321 ]
check_all "umask=027: files 0440, dirs 0550" \
	'[ "$(stat -c %a "$MNT/config.json")" = 440 ] && [ "$(stat -c %a "$MNT/a")" = 550 ]'
umount_fs "$MNT"

finish
