#!/usr/bin/env bash
# A damaged cache index (issue 12 item 9): data.mdb truncated, or garbage
# written over its pages after the two meta pages. A mount must start, say so
# once, set the index aside, serve correct bytes and stay alive; "cache stat"
# and "cache verify" must say "damaged" in one line and exit non-zero, never
# die of a signal. Two mounts starting at once on one damaged cache: one of
# them sets it aside, both serve correct bytes.
source "$(dirname "$0")/lib.sh"

SRC=$WORK/src
MNT=$WORK/mnt
MNT2=$WORK/mnt2
mkdir -p "$SRC" "$MNT" "$MNT2"
head -c $((24 << 20)) /dev/urandom >"$SRC/shard-1.safetensors"
head -c 3000000 /dev/urandom >"$SRC/odd-size.bin"
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models m "$SRC"
(cd "$SRC" && find . -type f | LC_ALL=C sort | xargs sha256sum) >"$WORK/sha.want"
sha_ok() { drop_caches; (cd "$1" && find . -type f | LC_ALL=C sort | xargs sha256sum) | cmp -s - "$WORK/sha.want"; }
# 64 KiB chunks: ~430 chunk records, an index of a few dozen pages
COMMON="chunk_size=64K,metadata_ttl=3600"
PSIZE=$(getconf PAGESIZE)

# a cache filled by one mount, copied for each kind of damage
GOOD=$WORK/good
mount_fs s3://models/m "$MNT" "cache_dir=$GOOD,$COMMON"
check "the first mount fills the cache: every sha256 matches" sha_ok "$MNT"
umount_fs "$MNT"
sleep 0.2
size=$(stat -c %s "$GOOD/index/data.mdb")
echo "figure: the filled index is $size bytes ($((size / PSIZE)) pages)"

# damage DIR KIND: truncN (to N%) or garbageSEED (random bytes over every
# page after the first two, or over a random run of pages for seeds > 3)
damage() {
	local f=$1/index/data.mdb kind=$2
	case $kind in
	trunc*) truncate -s $((size * ${kind#trunc} / 100)) "$f" ;;
	garbage*)
		python3 - "$f" "${kind#garbage}" "$PSIZE" <<-'EOF'
			import os, random, sys
			f, seed, ps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
			r = random.Random(seed)
			n = os.path.getsize(f) // ps
			first, count = 2, n - 2
			if seed > 3:
			    first = r.randrange(2, n)
			    count = r.randrange(1, n - first + 1)
			with open(f, "r+b") as fh:
			    fh.seek(first * ps)
			    fh.write(r.randbytes(count * ps))
		EOF
		;;
	esac
}

# cli CMD DIR: sets OUT, RC (timeout 20 s: a hang is a failure too)
cli() { OUT=$(timeout 20 "$MODELFS" cache "$1" "$2" 2>&1); RC=$?; }

for kind in trunc25 trunc50 trunc75 garbage1 garbage2 garbage3 garbage4 garbage5; do
	C=$WORK/c-$kind
	cp -a "$GOOD" "$C"
	damage "$C" "$kind"
	cli stat "$C"
	# garbage over a random run of pages may hit free pages only: then the
	# index is sound and nothing may be reported; the CLI and the daemon agree
	seen=1
	case $kind in garbage4|garbage5) [ "$RC" -eq 0 ] && seen=0 ;; esac
	if [ "$seen" = 1 ]; then
		check_all "$kind: cache stat exits non-zero, no signal, one line (rc $RC: $OUT)" \
			'[ "$RC" -ne 0 ] && [ "$RC" -lt 124 ] && [ "$(wc -l <<<"$OUT")" -eq 1 ] && grep -q damaged <<<"$OUT"'
		cli verify "$C"
		check_all "$kind: cache verify exits non-zero, no signal, one line (rc $RC: $OUT)" \
			'[ "$RC" -ne 0 ] && [ "$RC" -lt 124 ] && [ "$(wc -l <<<"$OUT")" -eq 1 ] && grep -q damaged <<<"$OUT"'
	else
		echo "note: $kind hit free pages only: the index is sound"
		cli verify "$C"
		check_all "$kind: sound index, cache verify passes (rc $RC: $OUT)" '[ "$RC" -eq 0 ]'
	fi
	: >"$WORK/mnt.log"
	check "$kind: the mount starts" mount_fs s3://models/m "$MNT" "cache_dir=$C,$COMMON"
	n=$(find "$C/data" -type f | wc -l)
	check "$kind: $((1 - seen)) data files of the old index are left ($n)" [ $((n > 0)) -eq $((1 - seen)) ]
	check "$kind: every sha256 matches" sha_ok "$MNT"
	check "$kind: the daemon is alive after the reads" kill -0 "$MNT_PID"
	n=$(grep -c "cache index .* is damaged" "$WORK/mnt.log")
	check "$kind: $seen warning line(s) in the daemon log ($n: $(grep damaged "$WORK/mnt.log"))" \
		[ "$n" -eq "$seen" ]
	umount_fs "$MNT"
	if [ "$seen" = 1 ]; then
		check_all "$kind: the damaged index was set aside" 'ls "$C"/index/data.mdb.damaged-* >/dev/null 2>&1'
	fi
	cli verify "$C"
	check_all "$kind: afterwards cache verify passes (rc $RC: $OUT)" \
		'[ "$RC" -eq 0 ] && grep -q " 0 damaged" <<<"$OUT"'
done

# a second mount after the reset uses the new index: no warning, no GET
C=$WORK/c-trunc50
: >"$WORK/mnt.log"
mount_fs s3://models/m "$MNT" "cache_dir=$C,$COMMON" -d
check "the reset cache serves the next mount" sha_ok "$MNT"
g=$(grep -c "debug: GET s3://" "$WORK/mnt.log")
check "... from disk ($g GETs), with no warning" \
	bash -c "[ $g -eq 0 ] && ! grep -q damaged '$WORK/mnt.log'"
umount_fs "$MNT"

# two mounts starting at once on one damaged cache
C=$WORK/c-two
cp -a "$GOOD" "$C"
damage "$C" trunc50
: >"$WORK/mnt.log"
: >"$WORK/mnt2.log"
for m in "$MNT" "$MNT2"; do
	"$MODELFS" s3://models/m "$m" -f -o "endpoint=$S3_ENDPOINT,cache_dir=$C,$COMMON" \
		>>"$WORK/$(basename "$m").log" 2>&1 &
	PIDS+=($!)
	MOUNTS+=("$m")
done
for ((i = 0; i < 300; i++)); do
	mountpoint -q "$MNT" && mountpoint -q "$MNT2" && break
	sleep 0.05
done
check "two mounts at once on a damaged cache: both start" \
	bash -c "mountpoint -q '$MNT' && mountpoint -q '$MNT2'"
check "... the first reads correct bytes" sha_ok "$MNT"
check "... the second reads correct bytes" sha_ok "$MNT2"
n=$(cat "$WORK/mnt.log" "$WORK/mnt2.log" | grep -c "cache index .* is damaged")
check "... one of them set the index aside ($n warnings)" [ "$n" -eq 1 ]
fusermount3 -u "$MNT"
fusermount3 -u "$MNT2"
sleep 0.5

finish
