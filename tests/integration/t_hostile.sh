#!/usr/bin/env bash
# A broken or hostile store never yields a wrong byte and never stalls the
# mount (issue 12). The fault proxy rewrites s3rver's answers: mislabelled
# ranges, missing ETags, junk on a kept-alive connection, a trickling body,
# Retry-After, a huge Content-Length, listings that loop or are not listings.
# Each fault must end in an error (or a correct read), within seconds, and
# leave nothing wrong in the cache or the saved listing.
source "$(dirname "$0")/lib.sh"

MNT=$WORK/mnt
SRC=$WORK/src
mkdir -p "$SRC"
head -c $((16 << 20)) /dev/urandom >"$SRC/big.bin"
head -c $((1 << 20)) /dev/urandom >"$SRC/small.bin"
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models m "$SRC"
proxy_start

sha() { sha256sum | cut -d' ' -f1; }
want_big=$(sha <"$SRC/big.bin")
want_small=$(sha <"$SRC/small.bin")
want_big4=$(head -c $((4 << 20)) "$SRC/big.bin" | sha)
read_sha() { drop_caches; sha <"$1"; }

# try_read CMD...: run CMD with the page cache dropped; sets RC, MS, ERR (stderr)
try_read() {
	local t0
	drop_caches
	t0=$(date +%s%N)
	ERR=$(timeout 60 "$@" 2>&1 >"$WORK/read.out")
	RC=$?
	MS=$((($(date +%s%N) - t0) / 1000000))
}
# an EIO well within 60 s, not a timeout of the test itself
read_failed_eio() { [ "$RC" -ne 0 ] && [ "$RC" -ne 124 ] && grep -q 'Input/output error' <<<"$ERR"; }

# --- 1. a 206 whose Content-Range is not the range asked ---------------------
mnt_p() { S3_ENDPOINT=$PROXY_ENDPOINT mount_fs s3://models/m "$MNT" "$@"; }

mnt_p "cache_dir=$WORK/c1,retries=1"
proxy_fault shift >/dev/null
try_read head -c $((4 << 20)) "$MNT/big.bin"
check "shifted Content-Range, cached mount: the read fails with EIO (rc $RC: $ERR)" read_failed_eio
proxy_fault none >/dev/null
umount_fs "$MNT"
mnt_p "cache_dir=$WORK/c1,retries=1"
check "after the fault, big.bin reads correctly: nothing wrong was cached" \
	[ "$(read_sha "$MNT/big.bin")" = "$want_big" ]
umount_fs "$MNT"

mnt_p "no_cache,retries=1"
proxy_fault shift >/dev/null
try_read head -c $((4 << 20)) "$MNT/big.bin"
check "shifted Content-Range, no_cache: the read fails with EIO (rc $RC: $ERR)" read_failed_eio
proxy_fault norange >/dev/null
try_read head -c $((4 << 20)) "$MNT/big.bin"
check "a 206 without Content-Range, no_cache: the read fails with EIO (rc $RC: $ERR)" read_failed_eio
proxy_fault none >/dev/null
sleep 1.2 # the failure is remembered for a second (FLIGHT_FAIL_MS)
check "no_cache: after the fault the first 4 MiB read correctly" \
	[ "$(drop_caches; head -c $((4 << 20)) "$MNT/big.bin" | sha)" = "$want_big4" ]
umount_fs "$MNT"

# --- 2. a GET answer without the ETag that If-Match asked for ----------------
mnt_p "cache_dir=$WORK/c2,retries=1"
proxy_fault noetag >/dev/null
try_read cat "$MNT/small.bin"
check "GET answers without an ETag: the read fails (rc $RC: $ERR)" \
	bash -c "[ $RC -ne 0 ] && [ $RC -ne 124 ]"
proxy_fault none >/dev/null
sleep 1.2 # the failure is remembered for a second (FLIGHT_FAIL_MS)
check "with ETags back, small.bin reads correctly" [ "$(read_sha "$MNT/small.bin")" = "$want_small" ]
umount_fs "$MNT"
mnt_p "no_cache,retries=1"
proxy_fault noetag >/dev/null
try_read cat "$MNT/small.bin"
check "no_cache: GET answers without an ETag: the read fails (rc $RC: $ERR)" \
	bash -c "[ $RC -ne 0 ] && [ $RC -ne 124 ]"
proxy_fault none >/dev/null
umount_fs "$MNT"

# --- 6. junk after a body poisons a kept-alive connection --------------------
mnt_p "no_cache,retries=0"
proxy_fault junk >/dev/null
bad=0
for i in 1 2 3; do
	got=$(read_sha "$MNT/small.bin" 2>"$WORK/junk.err")
	[ "$got" = "$want_small" ] || { bad=$i; break; }
done
check "junk after every body (retries=0): three reads are correct (failed at read $bad: $(head -c 200 "$WORK/junk.err"))" \
	[ "$bad" -eq 0 ]
proxy_fault none >/dev/null
umount_fs "$MNT"

# --- 5. a body trickling in at 1 byte/s --------------------------------------
mnt_p "no_cache,request_timeout=30,retries=0"
proxy_fault trickle >/dev/null
# O_DIRECT: one read is one request (a buffered read that fails is tried
# once more by the kernel, which doubles what the reader waits)
try_read python3 -c 'import mmap, os, sys
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT)
os.preadv(fd, [mmap.mmap(-1, 4096)], 0)' "$MNT/small.bin"
check "trickling body (request_timeout=30): EIO in $MS ms, well before 30 s (rc $RC: $(tail -1 <<<"$ERR"))" \
	bash -c "[ $RC -ne 0 ] && [ $RC -ne 124 ] && [ $MS -lt 15000 ]"
proxy_fault none >/dev/null
umount_fs "$MNT"

# --- Retry-After on 503 ------------------------------------------------------
mnt_p "no_cache,retries=1"
proxy_fault slowdown 1 2 >/dev/null
try_read cat "$MNT/small.bin"
got=$(sha <"$WORK/read.out")
check "503 with Retry-After: 2: the retry waits (${MS} ms) and the read succeeds (rc $RC)" \
	bash -c "[ $RC -eq 0 ] && [ $MS -ge 1900 ] && [ $MS -lt 10000 ] && [ $got = $want_small ]"
proxy_fault none >/dev/null
umount_fs "$MNT"

# --- a HEAD claiming 2^63 bytes ----------------------------------------------
mnt_p "no_cache,metadata_ttl=0,attr_timeout=0,entry_timeout=0"
proxy_fault hugelen >/dev/null
cat "$MNT/small.bin" >/dev/null 2>&1
size=$(stat -c %s "$MNT/small.bin")
check "HEAD with Content-Length 2^63 is not believed: size stays $size" [ "$size" = $((1 << 20)) ]
proxy_fault none >/dev/null
umount_fs "$MNT"

# --- 7 and 8: listings that loop or are not listings -------------------------
# expect_mount_fail DESCRIPTION PATTERN OPTS: modelfs must exit non-zero within
# 10 s with a stderr line matching PATTERN, and never mount.
expect_mount_fail() {
	local d=$1 pat=$2 opts=$3 t0 pid rc=0 ms i mounted=0
	mkdir -p "$MNT"
	MOUNTS+=("$MNT")
	t0=$(date +%s%N)
	"$MODELFS" s3://models/m "$MNT" -f -o "endpoint=$PROXY_ENDPOINT,$opts" 2>"$WORK/mf.err" &
	pid=$!
	PIDS+=("$pid")
	for ((i = 0; i < 300; i++)); do
		kill -0 "$pid" 2>/dev/null || break
		mountpoint -q "$MNT" && { mounted=1; break; }
		sleep 0.05
	done
	if kill -0 "$pid" 2>/dev/null; then
		fusermount3 -u "$MNT" 2>/dev/null
		kill "$pid" 2>/dev/null
	fi
	wait "$pid"
	rc=$?
	ms=$((($(date +%s%N) - t0) / 1000000))
	if [ "$mounted" -eq 0 ] && [ "$rc" -ne 0 ] && [ "$ms" -lt 10000 ] &&
		[ "$(grep -cE "$pat" "$WORK/mf.err")" -eq 1 ]; then
		ok "$d: exit $rc in $ms ms: $(grep -E "$pat" "$WORK/mf.err")"
	else
		fail "$d: mounted $mounted, exit $rc in $ms ms, stderr: $(head -c 600 "$WORK/mf.err")"
	fi
}

SNAP=$WORK/snapcache
mnt_p "cache_dir=$SNAP"
check "a good mount first: the listing shows both files" [ "$(ls "$MNT" | wc -l)" -eq 2 ]
umount_fs "$MNT"

proxy_fault listloop >/dev/null
expect_mount_fail "listing that repeats its continuation token" "continuation token" "cache_dir=$SNAP"
proxy_fault html200 >/dev/null
expect_mount_fail "listing answered by an HTML page with status 200" "not a ListBucketResult" "cache_dir=$SNAP"
proxy_fault error200 >/dev/null
expect_mount_fail "listing answered by an <Error> with status 200, no cache" "InternalError" "no_cache"
# an InternalError is an HTTP 500 in disguise: like one, it mounts the saved
# listing (the good one), never an empty tree
mnt_p "cache_dir=$SNAP"
check_all "an <Error> with status 200, saved listing: the old tree is mounted ($(ls "$MNT" | tr '\n' ' '))" \
	'[ "$(ls "$MNT" | sort | tr "\n" " ")" = "big.bin small.bin " ] && grep -q "InternalError" "$WORK/mnt.log"'
umount_fs "$MNT"
proxy_fault none >/dev/null

# the store goes away: the saved listing must still be the good one
kill "$PROXY_PID"
wait "$PROXY_PID" 2>/dev/null
mnt_p "cache_dir=$SNAP"
check "store down: the offline mount shows the snapshot of the good listing ($(ls "$MNT" | tr '\n' ' '))" \
	[ "$(ls "$MNT" | sort | tr '\n' ' ')" = "big.bin small.bin " ]
umount_fs "$MNT"

finish
