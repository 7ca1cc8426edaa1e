#!/usr/bin/env bash
# Run-time backend failures: a reader gets EIO after bounded retries, never a
# hang; the daemon keeps serving and recovers when the backend does.
source "$(dirname "$0")/lib.sh"

MNT=$WORK/mnt
SRC=$WORK/src
mkdir -p "$SRC"
head -c $((256 << 20)) /dev/urandom >"$SRC/shard.bin"
head -c $((1 << 20)) /dev/urandom >"$SRC/small.bin"
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models m "$SRC"
proxy_start

# read_file FILE: sha256 of FILE, read with the page cache dropped first
read_sha() { drop_caches; sha256sum <"$1" | cut -d' ' -f1; }
want_small=$(sha256sum <"$SRC/small.bin" | cut -d' ' -f1)

S3_ENDPOINT=$PROXY_ENDPOINT mount_fs s3://models/m "$MNT" "no_cache,retries=3,request_timeout=2"

proxy_fault error500 2 >/dev/null
check "two HTTP 500s are retried and the read succeeds" [ "$(read_sha "$MNT/small.bin")" = "$want_small" ]
proxy_fault reset 2 >/dev/null
check "two reset connections are retried and the read succeeds" [ "$(read_sha "$MNT/small.bin")" = "$want_small" ]

proxy_fault error500 >/dev/null
t0=$(date +%s%N)
out=$(drop_caches; timeout 60 cat "$MNT/small.bin" 2>&1 >/dev/null)
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
check "persistent HTTP 500: EIO in $ms ms (rc $rc: $out)" \
	bash -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $ms -lt 15000 ] && grep -q 'Input/output error' <<<'$out'"

sleep 1.2 # a failure is remembered for a second (FLIGHT_FAIL_MS): let it go
proxy_fault stall -1 30 >/dev/null
t0=$(date +%s%N)
out=$(drop_caches; timeout 60 cat "$MNT/small.bin" 2>&1 >/dev/null)
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
check "stalled server: request_timeout gives EIO in $ms ms, not a hang (rc $rc)" \
	bash -c "[ $rc -ne 0 ] && [ $rc -ne 124 ] && [ $ms -lt 30000 ]"
proxy_fault none >/dev/null
sleep 1.2
check "after the faults clear, reads are correct again" [ "$(read_sha "$MNT/small.bin")" = "$want_small" ]
umount_fs "$MNT"

# The server killed in the middle of a read of a large file.
mount_fs s3://models/m "$MNT" "retries=2"
drop_caches
python3 - "$MNT/shard.bin" "$WORK/started" >"$WORK/reader.out" 2>&1 <<'PY' &
import errno, os, sys, time
path, flag = sys.argv[1], sys.argv[2]
fd = os.open(path, os.O_RDONLY)
off, t_kill = 0, None
while True:
    try:
        b = os.pread(fd, 1 << 20, off)
    except OSError as e:
        print("errno", errno.errorcode.get(e.errno, e.errno), "after", off, "bytes")
        sys.exit(0 if e.errno == errno.EIO else 1)
    if not b:
        print("read to the end without an error"); sys.exit(1)
    off += len(b)
    if off == 8 << 20:
        open(flag, "w").close()
        time.sleep(0.5)   # give the test time to kill the server
PY
reader=$!
for ((i = 0; i < 200; i++)); do [ -e "$WORK/started" ] && break; sleep 0.05; done
s3_stop
t0=$(date +%s%N)
timeout 60 tail --pid="$reader" -f /dev/null
wait "$reader"
rc=$?
ms=$((($(date +%s%N) - t0) / 1000000))
check "server killed mid-read: the reader gets EIO in $ms ms ($(cat "$WORK/reader.out"))" \
	bash -c "[ $rc -eq 0 ] && [ $ms -lt 20000 ]"
check "the daemon is still serving (ls works)" ls "$MNT/shard.bin"
S3_PORT_WANT=$S3_PORT s3_start s3
sleep 1.2 # the last failure is remembered for a second (FLIGHT_FAIL_MS)
check "after the server restarts, reads are correct" \
	[ "$(read_sha "$MNT/shard.bin")" = "$(sha256sum <"$SRC/shard.bin" | cut -d' ' -f1)" ]
umount_fs "$MNT"

finish
