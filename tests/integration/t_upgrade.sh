#!/usr/bin/env bash
# A mount that outlives its daemon: `modelfs upgrade` five times in a row
# under a sha256 reader of a 1 GiB file and an mmap reader (every sum right,
# no error, a new daemon each time; the longest read across them is the
# stall); a file open in passthrough across an upgrade; five kill -9 of the
# daemon under readers (the holder starts another on the same connection:
# no ENOTCONN, no error, no hang); a read in flight at the kill is sent
# again (FUSE_NOTIFY_RESEND), or, where the kernel cannot, answered EIO at
# once; the holder's socket refuses other users; bad use of the command.
source "$(dirname "$0")/lib.sh"

MNT=$WORK/mnt
SRC=$WORK/src
mkdir -p "$SRC/sub"
head -c $((1 << 30)) /dev/urandom >"$SRC/big.bin"
head -c $((48 << 20)) /dev/urandom >"$SRC/model.safetensors"
echo small >"$SRC/sub/small.txt"
BIG_SHA=$(sha256sum <"$SRC/big.bin" | cut -c1-64)
sha() { sha256sum "$1" 2>/dev/null | cut -c1-64; }
# the daemon serving $1 now: the holder's child, or (before any) its parent
daemon_of() {
	local h c
	h=$(getfattr --only-values -n user.modelfs.holder "$1" 2>/dev/null | cut -d. -f2)
	[ -n "$h" ] || return 1
	c=$(pgrep -P "$h" | head -1)
	echo "${c:-$(ps -o ppid= -p "$h" | tr -d ' ')}"
}
READER="python3 $HERE/reader.py"

# --- 1. five upgrades under a sha256 reader and an mmap reader
# no_passthrough: every read reaches the daemon (through its disk cache)
mount_fs "file://$SRC" "$MNT" "no_passthrough,cache_dir=$WORK/c1" || exit 1
FIRST=$MNT_PID
check "the mount has a holder (user.modelfs.holder names its socket in /run/modelfs)" \
	bash -c "getfattr --only-values -n user.modelfs.holder '$MNT' | grep -Eq '^/run/modelfs/holder\.[0-9]+\.[0-9a-f]{12}\.sock$'"
check "warm: big.bin reads right" [ "$(sha "$MNT/big.bin")" = "$BIG_SHA" ]
rm -f "$WORK/stop1"
timeout 300 $READER seq "$MNT/big.bin" "$BIG_SHA" "$WORK/stop1" >"$WORK/seq1.out" 2>&1 &
r1=$!
timeout 300 $READER mmap "$MNT/model.safetensors" "$SRC/model.safetensors" "$WORK/stop1" >"$WORK/mmap1.out" 2>&1 &
r2=$!
sleep 1
pids=$(daemon_of "$MNT")
ups=0 lines=""
for i in 1 2 3 4 5; do
	out=$(timeout 60 "$MODELFS" upgrade "$MNT" 2>&1) && ups=$((ups + 1))
	lines="$lines${lines:+; }$out"
	sleep 0.3
	pids="$pids $(daemon_of "$MNT")"
	sleep 1.5
done
touch "$WORK/stop1"
wait $r1
wait $r2
echo "  upgrades: $lines"
echo "  daemons: $pids"
echo "  sha256 reader: $(cat "$WORK/seq1.out")"
echo "  mmap reader: $(cat "$WORK/mmap1.out")"
check "5 upgrades in a row, each 'upgraded' (exit 0): $ups" [ "$ups" -eq 5 ]
check "a new daemon each time (6 different pids: $pids)" \
	[ "$(echo $pids | tr ' ' '\n' | sort -u | wc -l)" -eq 6 ]
check_all "the sha256 reader: passes across them, every sum right, no error ($(cat "$WORK/seq1.out"))" \
	'grep -Eq "passes=([3-9]|[1-9][0-9]+) errors=0 " "$WORK/seq1.out"'
check_all "the mmap reader (one open for all): every page right, no error ($(cat "$WORK/mmap1.out"))" \
	'grep -Eq "passes=[1-9][0-9]* errors=0 " "$WORK/mmap1.out"'
check "the first daemon ended (exit 0) once it handed over" \
	bash -c "! kill -0 $FIRST 2>/dev/null"
wait "$FIRST"
check "... with exit 0" [ $? -eq 0 ]
check "the mount serves after them (small.txt)" grep -qx small "$MNT/sub/small.txt"
check "the kernel's inode numbers held across them (stat of a file before and after)" \
	bash -c "a=\$(stat -c %i '$MNT/sub/small.txt'); '$MODELFS' upgrade '$MNT' >/dev/null && [ \"\$(stat -c %i '$MNT/sub/small.txt')\" = \"\$a\" ] && grep -qx small '$MNT/sub/small.txt'"
d=$(daemon_of "$MNT")
h=$(getfattr --only-values -n user.modelfs.holder "$MNT" | cut -d. -f2)
fusermount3 -u "$MNT"
for ((i = 0; i < 100; i++)); do kill -0 "$d" 2>/dev/null || kill -0 "$h" 2>/dev/null || break; sleep 0.1; done
check "unmounted: the daemon and the holder end" \
	bash -c "! kill -0 $d 2>/dev/null && ! kill -0 $h 2>/dev/null"

# --- 2. a file open in passthrough across an upgrade
mount_fs "file://$SRC" "$MNT" "cache_dir=$WORK/c1" || exit 1
sha "$MNT/model.safetensors" >/dev/null # cached whole: the next open is passed through
exec 7<"$MNT/model.safetensors"
pt=$(grep -c "kernel passthrough on" "$WORK/mnt.log")
out=$("$MODELFS" upgrade "$MNT" 2>&1)
check "upgrade with a file open (passthrough: $([ "$pt" -gt 0 ] && echo on || echo 'off here')): $out" \
	bash -c "echo '$out' | grep -q upgraded"
check "... the open file reads right through its old fd" \
	[ "$(sha256sum <&7 | cut -c1-64)" = "$(sha "$SRC/model.safetensors")" ]
exec 7<&-
check "... closed, opened again: right" [ "$(sha "$MNT/model.safetensors")" = "$(sha "$SRC/model.safetensors")" ]
umount_fs "$MNT"

# --- 3. five kill -9 of the daemon under readers (s3 store)
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models m "$SRC/sub" >/dev/null
$S3TOOL put models m/model.safetensors "$SRC/model.safetensors" >/dev/null
MS_SHA=$(sha "$SRC/model.safetensors")
mount_fs s3://models/m "$MNT" "no_passthrough,cache_dir=$WORK/c3" || exit 1
rm -f "$WORK/stop3"
timeout 300 $READER seq "$MNT/model.safetensors" "$MS_SHA" "$WORK/stop3" >"$WORK/seq3.out" 2>&1 &
r1=$!
timeout 300 $READER mmap "$MNT/model.safetensors" "$SRC/model.safetensors" "$WORK/stop3" >"$WORK/mmap3.out" 2>&1 &
r2=$!
sleep 1
kills=0 pids=""
for i in 1 2 3 4 5; do
	d=$(daemon_of "$MNT")
	pids="$pids $d"
	kill -9 "$d" && kills=$((kills + 1))
	sleep 2
done
t0=$(date +%s%N)
ok_after=0
for ((i = 0; i < 100; i++)); do grep -qx small "$MNT/small.txt" 2>/dev/null && { ok_after=1; break; }; sleep 0.05; done
touch "$WORK/stop3"
wait $r1
wait $r2
echo "  killed: $pids"
echo "  sha256 reader: $(cat "$WORK/seq3.out")"
echo "  mmap reader: $(cat "$WORK/mmap3.out")"
check "5 x kill -9 ($kills), and the mount serves after them" [ "$kills" -eq 5 ] && [ $ok_after -eq 1 ]
check_all "the sha256 reader saw no error, no ENOTCONN ($(cat "$WORK/seq3.out"))" \
	'grep -Eq "passes=[1-9][0-9]* errors=0 " "$WORK/seq3.out"'
check_all "the mmap reader saw no error ($(cat "$WORK/mmap3.out"))" \
	'grep -Eq "passes=[1-9][0-9]* errors=0 " "$WORK/mmap3.out"'
check "the holder said each time that it started another daemon" \
	[ "$(grep -c 'ended without unmounting: starting another' "$WORK/mnt.log")" -eq 5 ]
umount_fs "$MNT"

# --- 3b. two mounts of one source on one cache: after a crash, a mount
# has its own inode numbers back (the holder's copy of its tree), not the
# other mount's (the snapshot in the cache directory is shared)
S2=$WORK/src2
mkdir -p "$S2"
echo x-old >"$S2/x.bin"
echo y >"$S2/y.bin"
K="cache_dir=$WORK/c3b,list_ttl=3600,metadata_ttl=1,entry_timeout=3600,attr_timeout=3600,no_passthrough"
mount_fs "file://$S2" "$WORK/A" "$K" || exit 1
A_PID=$MNT_PID
mount_fs "file://$S2" "$WORK/B" "$K" || exit 1
cat "$WORK/A/x.bin" "$WORK/B/x.bin" >/dev/null
echo z >"$S2/z.bin"
"$MODELFS" refresh "$WORK/A" >/dev/null # A: z.bin gets the next number
sleep 1.2
echo x-new >"$S2/x.bin"
touch -d '+1 min' "$S2/x.bin"
cat "$WORK/A/x.bin" >/dev/null # A: an open's HEAD finds the new x.bin: the number after
"$MODELFS" refresh "$WORK/B" >/dev/null # B: both in listing order, the other way round
stat "$WORK/A/x.bin" "$WORK/A/z.bin" >/dev/null # the kernel holds A's numbers
kill -9 "$(daemon_of "$WORK/A")"
sleep 1
xa=$(cat "$WORK/A/x.bin" 2>&1)
za=$(cat "$WORK/A/z.bin" 2>&1)
ya=$(cat "$WORK/A/y.bin" 2>&1)
check_all "after a crash, A reads its own files by the numbers its kernel holds, at the first read (x.bin: $xa, z.bin: $za, y.bin: $ya)" \
	'[ "$xa" = x-new ] && [ "$za" = z ] && [ "$ya" = y ]'
umount_fs "$WORK/B"
MNT_PID=$A_PID
umount_fs "$WORK/A"

# --- 4. a read in flight at the kill: sent again, or (no resend) EIO at once
proxy_start
resend_case() { # FAULT LABEL
	local f=$1 out rc t0 t1
	rm -rf "$WORK/c4"
	MODELFS_FAULT=$f mount_fs s3://models/m "$MNT" "endpoint=$PROXY_ENDPOINT,no_passthrough,cache_dir=$WORK/c4,retries=0" || return 1
	proxy_fault stall 2 3 >/dev/null
	# O_DIRECT: the reader's own read is the request in flight (a
	# readahead's error would be dropped, and the page read again)
	( timeout 60 dd if="$MNT/model.safetensors" of="$WORK/inflight.bin" iflag=direct bs=4M count=2 >"$WORK/inflight.out" 2>&1
	  echo "rc=$?" >>"$WORK/inflight.out" ) &
	local rd=$!
	sleep 1 # its reads wait on the store
	kill -9 "$(daemon_of "$MNT")"
	t0=$(date +%s%N)
	wait $rd
	t1=$(date +%s%N)
	proxy_fault none >/dev/null
	INFLIGHT="$(grep -v records "$WORK/inflight.out" | tr '\n' ' ')($(((t1 - t0) / 1000000)) ms after the kill)"
	umount_fs "$MNT"
}
WANT8=$(head -c $((8 << 20)) "$SRC/model.safetensors" | sha256sum | cut -c1-64)
resend_case none
check_all "a read in flight at kill -9 is sent again: the right bytes ($INFLIGHT)" \
	'grep -q "rc=0" "$WORK/inflight.out" && [ "$(sha "$WORK/inflight.bin")" = "$WANT8" ]'
resend_case no_resend
check_all "no FUSE_NOTIFY_RESEND (MODELFS_FAULT=no_resend): EIO, not a hang nor ENOTCONN ($INFLIGHT)" \
	'grep -q "Input/output error" "$WORK/inflight.out" && ! grep -q "not connected" "$WORK/inflight.out"'
check "... and the new daemon says so" grep -q "answered EIO (the kernel cannot send" "$WORK/mnt.log"

# --- 5. the command's bad uses, and other users
out=$("$MODELFS" upgrade "$WORK" 2>&1)
rc=$?
check_all "upgrade of a directory that is no mount: one line, exit 1 (rc $rc: $out)" \
	'[ $rc -eq 1 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "no holder"'
check "upgrade without a mountpoint: usage, exit 2" bash -c "'$MODELFS' upgrade >/dev/null 2>&1; [ \$? -eq 2 ]"
mount_fs "file://$SRC" "$MNT" "cache_dir=$WORK/c1" || exit 1
name=$(getfattr --only-values -n user.modelfs.holder "$MNT")
if id nobody >/dev/null 2>&1 && command -v setpriv >/dev/null; then
	out=$(setpriv --reuid=nobody --regid=nogroup --clear-groups /usr/bin/python3 -c '
import socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
try:
    s.connect(sys.argv[1])
    s.send(b"U/bin/true")
    print(s.recv(200).decode())
except OSError as e:
    print(e)' "$name" 2>&1)
	check_all "another user cannot reach the holder (its socket $name: $out)" \
		'echo "$out" | grep -Eq "Permission denied|^1not allowed" && [ "$(stat -c %a "$(dirname "$name")")" = 700 ]'
fi
check "... and the mount goes on" grep -qx small "$MNT/sub/small.txt"
umount_fs "$MNT"

# a killed holder's socket (no unlink at its end) is swept by the next holder
dead=/run/modelfs/holder.999999999.000000000000.sock
python3 -c 'import socket,sys; s=socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET); s.bind(sys.argv[1])' "$dead"
mount_fs "file://$SRC" "$WORK/m2" "cache_dir=$WORK/c1" || exit 1
check "a dead holder's socket is removed by the next holder" [ ! -e "$dead" ]
umount_fs "$WORK/m2"

finish
