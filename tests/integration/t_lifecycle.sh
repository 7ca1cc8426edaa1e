#!/usr/bin/env bash
# A mount that follows its bucket and a start that cannot fail silently:
# objects uploaded, overwritten and deleted while mounted show within
# list_ttl although the kernel was told to keep entries and attributes for
# two hours (entry_timeout=attr_timeout=7200), an open file keeps its
# version, `modelfs refresh` shows a change at once; an error after the
# daemon went to the background is the mount command's one line and exit 1,
# leaves no mount, and reaches syslog; SIGTERM takes the mount off its path
# and serves the files open until they are closed or term_grace passes; a
# bucket's root of 200,000 keys mounts lazily (one listing of 500 prefixes),
# lists a prefix when it is looked in, refreshes only what is in use, and
# forgets prefixes nobody uses (listed again when looked in).
source "$(dirname "$0")/lib.sh"

MNT=$WORK/mnt
M=$WORK/model
mkdir -p "$M/sub"
head -c $((6 << 20)) /dev/urandom >"$M/a.bin"
head -c $((3 << 20)) /dev/urandom >"$M/b.bin"
echo "to be deleted" >"$M/sub/c.txt"
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models m "$M" || exit 1
sha() { sha256sum "$1" 2>/dev/null | cut -c1-64; }
within() { # SECONDS 'EXPRESSION': poll until it holds; prints the seconds it took
	local t0=$SECONDS i
	for ((i = 0; i < $1 * 10; i++)); do
		if eval "$2"; then echo $((SECONDS - t0)); return 0; fi
		sleep 0.1
	done
	return 1
}

# --- 1. list_ttl: changes in the store show within it, through long kernel timeouts
mount_fs s3://models/m "$MNT" "list_ttl=2,entry_timeout=7200,attr_timeout=7200,cache_dir=$WORK/c1" || exit 1
ls -la "$MNT" "$MNT/sub" >/dev/null # the kernel now holds entries, attributes, directory pages
a_old=$(sha "$MNT/a.bin")
b_old=$(sha "$MNT/b.bin")
check "the mount shows the model (a.bin's sum is the file's)" [ "$a_old" = "$(sha "$M/a.bin")" ]
exec 3<"$MNT/a.bin" # an open file, cached whole
stat "$MNT/new.bin" >/dev/null 2>&1 # a miss the kernel may keep for entry_timeout
head -c $((2 << 20)) /dev/urandom >"$WORK/new.bin"
head -c $((5 << 20)) /dev/urandom >"$WORK/b2.bin"
head -c $((6 << 20)) /dev/urandom >"$WORK/a2.bin"
$S3TOOL put models m/new.bin "$WORK/new.bin"
$S3TOOL put models m/b.bin "$WORK/b2.bin"
$S3TOOL put models m/a.bin "$WORK/a2.bin"
$S3TOOL rm models m/sub/c.txt
t=$(within 8 '[ "$(sha "$MNT/new.bin")" = "$(sha "$WORK/new.bin")" ]')
check "an uploaded object shows (and reads right) within list_ttl=2 (${t:-never} s)" [ -n "$t" ]
t=$(within 8 'ls "$MNT" | grep -qx new.bin')
check "... and in its directory's listing (${t:-never} s)" [ -n "$t" ]
t=$(within 8 '[ "$(stat -c %s "$MNT/b.bin")" = $((5 << 20)) ] && [ "$(sha "$MNT/b.bin")" = "$(sha "$WORK/b2.bin")" ]')
check "an overwritten object is the new version at its next open: size and bytes (${t:-never} s)" [ -n "$t" ]
t=$(within 8 '! stat "$MNT/sub/c.txt" >/dev/null 2>&1 && ! ls "$MNT/sub" | grep -q c.txt')
check "a deleted object is gone: stat fails, the listing has it no more (${t:-never} s)" [ -n "$t" ]
check_all "a new open of it gets ENOENT" \
	'out=$(cat "$MNT/sub/c.txt" 2>&1); echo "$out" | grep -q "No such file"'
check "a file open across the change keeps its version (the old a.bin, read through the open fd)" \
	[ "$(sha256sum <&3 | cut -c1-64)" = "$a_old" ]
exec 3<&-
t=$(within 8 '[ "$(sha "$MNT/a.bin")" = "$(sha "$WORK/a2.bin")" ]')
check "... and a new open of it reads the new version (${t:-never} s)" [ -n "$t" ]
umount_fs "$MNT"

# --- 1b. an open file of a version the listing dropped, with short kernel
# timeouts (attr_timeout=1: the kernel asks its attributes again on reads)
mount_fs s3://models/m "$MNT" "list_ttl=1,attr_timeout=1,no_passthrough,cache_dir=$WORK/c1b" || exit 1
old_b=$(sha "$MNT/b.bin") # read whole: cached
head -c $((5 << 20)) /dev/urandom >"$WORK/b3.bin"
rm -f "$WORK/r1.state" "$WORK/go1"
READER_WAIT=2.5 python3 - "$MNT/b.bin" "$WORK/go1" "$WORK/r1.state" >"$WORK/r1.out" 2>&1 <<'PY' &
import hashlib, os, sys, time
f = open(sys.argv[1], "rb")
h = hashlib.sha256(f.read(1 << 20))
open(sys.argv[3], "w").write("open\n")
while not os.path.exists(sys.argv[2]):
    time.sleep(0.05)
time.sleep(2.5)  # past attr_timeout and a refresh
try:
    os.fstat(f.fileno())
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        h.update(b)
    print(h.hexdigest())
except OSError as e:
    print("error", e.errno)
PY
R=$!
for _ in $(seq 100); do [ -s "$WORK/r1.state" ] && break; sleep 0.1; done
$S3TOOL put models m/b.bin "$WORK/b3.bin"
touch "$WORK/go1"
timeout 30 tail --pid="$R" -f /dev/null
check_all "a file open across its overwrite, past attr_timeout: fstat and every byte of its version ($(cut -c1-16 "$WORK/r1.out"))" \
	'[ "$(cat "$WORK/r1.out")" = "$old_b" ]'
check "... while a new open reads the new version" [ "$(sha "$MNT/b.bin")" = "$(sha "$WORK/b3.bin")" ]
umount_fs "$MNT"

# --- 2. modelfs refresh: at once, with list_ttl an hour
mount_fs s3://models/m "$MNT" "list_ttl=3600,entry_timeout=7200,attr_timeout=7200,cache_dir=$WORK/c2" || exit 1
ls "$MNT" >/dev/null
stat "$MNT/fresh.txt" >/dev/null 2>&1 # a miss the kernel keeps (for an hour here)
echo fresh >"$WORK/fresh.txt"
$S3TOOL put models m/fresh.txt "$WORK/fresh.txt"
sleep 1
check "with list_ttl=3600 an upload is not seen by itself" bash -c "! ls '$MNT' | grep -qx fresh.txt"
out=$("$MODELFS" refresh "$MNT")
check_all "modelfs refresh: '$out'" '[ "$out" = "$MNT: refreshed: 1 names changed" ]'
check "... and the upload shows at once" bash -c "ls '$MNT' | grep -qx fresh.txt && [ \"\$(cat '$MNT/fresh.txt')\" = fresh ]"
out=$("$MODELFS" refresh "$MNT/a.bin")
check_all "a refresh (through a path in the mount) with nothing new: '$out'" '[ "$out" = "$MNT/a.bin: refreshed: 0 names changed" ]'
check "modelfs refresh of a directory that is no mount: one line, exit 1" \
	bash -c "! '$MODELFS' refresh '$WORK' 2>'$WORK/r.err' && [ \$(wc -l <'$WORK/r.err') -eq 1 ]"
inos1=$(stat -c %i "$MNT/a.bin" "$MNT/fresh.txt" "$MNT/new.bin" | tr '\n' ' ')
umount_fs "$MNT"
mount_fs s3://models/m "$MNT" "list_ttl=3600,cache_dir=$WORK/c2" || exit 1
inos2=$(stat -c %i "$MNT/a.bin" "$MNT/fresh.txt" "$MNT/new.bin" | tr '\n' ' ')
check "a remount keeps the inode numbers of the names it finds again (the snapshot's): $inos1= $inos2" \
	[ "$inos1" = "$inos2" ]
umount_fs "$MNT"
out=$(timeout 10 "$MODELFS" s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,list_ttl=soon" 2>&1)
rc=$?
check_all "a bad list_ttl: one line, exit 2 (a bad option) ($out)" \
	'[ $rc -eq 2 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "list_ttl"'

# --- 3. an error after going to the background: the mount command's line
# and exit 1, no mount left behind, and the line in syslog
LOGSOCK=
if [ ! -e /dev/log ]; then LOGSOCK=/dev/log; CLEAN_FILES+=(/dev/log); else LOGSOCK=$WORK/log.sock; fi
# a /dev/log that is a link (to journald's socket): a bind would cover the host's
[ -L /dev/log ] && LOGSOCK=
[ -n "$LOGSOCK" ] && python3 - "$LOGSOCK" >"$WORK/syslog.txt" <<'PY' &
import os, socket, sys
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
print("listening", flush=True)
s.settimeout(30)
try:
    while True:
        print(s.recv(4096).decode(errors="replace"), flush=True)
except OSError:
    pass
PY
PIDS+=($!)
for _ in $(seq 50); do grep -q listening "$WORK/syslog.txt" && break; sleep 0.1; done
if [ -n "$LOGSOCK" ] && [ "$LOGSOCK" != /dev/log ]; then
	# over the system's /dev/log, for this test only
	mount --bind "$LOGSOCK" /dev/log && TMPFS_MOUNTS+=(/dev/log)
fi
out=$(MODELFS_FAULT=after_daemonize "$MODELFS" s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/c3" 2>&1)
rc=$?
check_all "a failure after the fork: exit 1 and one line ($out)" \
	'[ $rc -eq 1 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q "^modelfs: fault injected after going to the background"'
check "... no mount is left behind (no ENOTCONN)" bash -c "! mountpoint -q '$MNT' && ls '$MNT' >/dev/null"
if [ -n "$LOGSOCK" ]; then
	t=$(within 5 'grep -q "fault injected after going to the background" "$WORK/syslog.txt"')
	check "... and syslog has the line (${t:-never} s)" [ -n "$t" ]
else
	echo "skip - /dev/log is a link here: the syslog line is not looked for"
fi
[ "$LOGSOCK" = /dev/log ] && rm -f /dev/log # the daemons below log to their stderr
[ -n "$LOGSOCK" ] && [ "$LOGSOCK" != /dev/log ] && umount /dev/log
"$MODELFS" s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/c3"
rc=$?
MOUNTS+=("$MNT")
check "the background start without a fault: exit 0 and mounted" bash -c "[ $rc -eq 0 ] && mountpoint -q '$MNT' && [ -s '$MNT/a.bin' ]"
fusermount3 -u "$MNT"

# --- 4. SIGTERM with term_grace: off the path at once, open files served until closed
reader() { # FILE GO_FILE OUT: open, read 1 MiB, say so, wait for GO_FILE, read the rest, print the sum
	python3 - "$@" <<'PY'
import hashlib, os, sys, time
f = open(sys.argv[1], "rb")
h = hashlib.sha256(f.read(1 << 20))
wait_more = float(os.environ.get("READER_WAIT", "0"))
open(sys.argv[3], "w").write("open\n")
t = time.time() + 40
while not os.path.exists(sys.argv[2]) and time.time() < t:
    time.sleep(0.05)
time.sleep(wait_more)
try:
    os.fstat(f.fileno())
    while True:
        b = f.read(1 << 20)
        if not b:
            break
        h.update(b)
    print(h.hexdigest())
except OSError as e:
    print("error", e.errno)
PY
}
mount_fs s3://models/m "$MNT" "cache_dir=$WORK/c4,term_grace=30" || exit 1
P=$MNT_PID
reader "$MNT/a.bin" "$WORK/go4" "$WORK/r4.state" >"$WORK/r4.out" &
R=$!
for _ in $(seq 100); do [ -s "$WORK/r4.state" ] && break; sleep 0.1; done
kill -TERM "$P"
t=$(within 5 '! mountpoint -q "$MNT"')
check "SIGTERM: the mount is off its path at once (${t:-never} s)" [ -n "$t" ]
check "... a new open finds the directory below, not the model" bash -c "[ ! -e '$MNT/a.bin' ]"
check "... the daemon still serves the open file" kill -0 "$P"
touch "$WORK/go4"
timeout 30 tail --pid="$R" -f /dev/null
check_all "... whose reader reads it to the end, every byte right" \
	'[ "$(cat "$WORK/r4.out")" = "$(sha "$WORK/a2.bin")" ]'
t0=$(date +%s%N)
for _ in $(seq 200); do kill -0 "$P" 2>/dev/null || break; sleep 0.1; done
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
wait "$P"
rc=$?
check "... and the daemon exits 0 once that file is closed (rc $rc, $ms ms)" \
	bash -c "[ $rc -eq 0 ] && [ $ms -lt 5000 ]"
grep "SIGTERM" "$WORK/mnt.log" | sed 's/^/  | /'

mount_fs s3://models/m "$MNT" "cache_dir=$WORK/c4,term_grace=2" || exit 1
P=$MNT_PID
rm -f "$WORK/r5.state"
reader "$MNT/b.bin" "$WORK/go5" "$WORK/r5.state" >"$WORK/r5.out" &
R=$!
for _ in $(seq 100); do [ -s "$WORK/r5.state" ] && break; sleep 0.1; done
t0=$(date +%s%N)
kill -TERM "$P"
timeout 20 tail --pid="$P" -f /dev/null
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "term_grace=2 with a file held open: the daemon ends after the grace ($ms ms)" \
	bash -c "! kill -0 $P 2>/dev/null && [ $ms -ge 1900 ] && [ $ms -lt 6000 ]"
touch "$WORK/go5"
timeout 20 tail --pid="$R" -f /dev/null
check_all "... its reader gets an error, not a hang and not wrong bytes ($(cat "$WORK/r5.out"))" \
	'! kill -0 $R 2>/dev/null && grep -q "^error" "$WORK/r5.out"'
check "... and nothing is left mounted" bash -c "! mountpoint -q '$MNT'"

# --- 5. listing=lazy, the default for a bucket's root: 200,000 keys under
# 500 prefixes (bigbucket.py: computed keys, every LIST counted)
python3 "$HERE/bigbucket.py" "$WORK/bb.port" 500 400 4096 &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/bb.port" ] && break; sleep 0.1; done
BB=http://127.0.0.1:$(cat "$WORK/bb.port")
lists() { # PREFIX: how many one-level listings of PREFIX the store answered
	curl -s "$BB/__stats" | python3 -c 'import json,sys; print(sum(1 for l in json.load(sys.stdin)["lists"] if l[0] == sys.argv[1] and l[1] == "/" and l[2] > 1))' "$1"
}
t0=$(date +%s%N)
S3_ENDPOINT=$BB mount_fs s3://big "$MNT" "cache_dir=$WORK/c5,list_ttl=3600" || exit 1
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
check "a bucket root of 200,000 keys mounts in under 2 s ($ms ms), lazily: one listing of its root ($(lists ""))" \
	bash -c "[ $ms -lt 2000 ] && [ $(lists "") -eq 1 ]"
n=$(ls "$MNT" | wc -l)
check "ls of the root: its 500 prefixes, from that one listing ($n; $(lists "") listing)" \
	bash -c "[ $n -eq 500 ] && [ $(lists "") -eq 1 ]"
n=$(ls "$MNT/model-123" | wc -l)
check "ls of one model prefix: its 400 files, one listing of it ($(lists model-123/))" \
	bash -c "[ $n -eq 400 ] && [ $(lists model-123/) -eq 1 ]"
want=$(python3 -c 'import hashlib,sys; b=hashlib.sha256(sys.argv[1].encode()).digest(); print(hashlib.sha256((b*129)[:4096]).hexdigest())' model-123/shard-00017.bin)
check "a file of it reads right (sha256)" [ "$(sha "$MNT/model-123/shard-00017.bin")" = "$want" ]
rss=$(awk '/^VmRSS/ {print $2}' "/proc/$MNT_PID/status")
check "the daemon's RSS stays under 64 MiB ($((rss / 1024)) MiB)" [ "$rss" -lt $((64 << 10)) ]
check "a prefix nobody looked in was never listed" [ "$(lists model-321/)" -eq 0 ]
curl -s "$BB/__add?key=model-123/new.bin" >/dev/null
curl -s "$BB/__del?key=model-123/shard-00000.bin" >/dev/null
out=$("$MODELFS" refresh "$MNT")
check_all "modelfs refresh re-lists what is in use ($out): the upload shows, the deleted key is gone" \
	'ls "$MNT/model-123" | grep -qx new.bin && ! ls "$MNT/model-123" | grep -qx shard-00000.bin && [ "$(lists model-321/)" -eq 0 ]'
"$MODELFS" prefetch --wait --quiet "$MNT/model-200"
rc=$?
check "modelfs prefetch --wait of a prefix never looked in: lists it and warms it (rc $rc, $(lists model-200/) listing)" \
	bash -c "[ $rc -eq 0 ] && [ $(lists model-200/) -ge 1 ] && [ \"\$(getfattr --only-values -n user.modelfs.cached '$MNT/model-200/shard-00399.bin' 2>/dev/null)\" = 4096/4096 ]"
umount_fs "$MNT"

# --- 6. the memory bound of a lazy mount: directories nobody looks in and
# whose entries the kernel forgot are forgotten too, and listed again when
# looked in (MODELFS_FORGET_MS: after 3 s instead of ten list_ttl periods)
MODELFS_FORGET_MS=3000 S3_ENDPOINT=$BB mount_fs s3://big "$MNT" "cache_dir=$WORK/c6,list_ttl=1" || exit 1
for i in $(seq 0 99); do ls -l "$MNT/model-$(printf %03d $i)" >/dev/null; done
before=$(stat -f -c %c "$MNT")
l0=$(lists model-005/)
sync
echo 2 >/proc/sys/vm/drop_caches # the kernel forgets its entries: FORGET for each
t=$(within 20 '[ "$(stat -f -c %c "$MNT")" -le 1000 ]')
after=$(stat -f -c %c "$MNT")
check "100 prefixes looked in, then idle and forgotten by the kernel: the daemon forgets them (${t:-never} s; names $before -> $after; $(grep -o '[0-9]* entries of [0-9]* directories' "$WORK/mnt.log" | tail -1))" \
	bash -c "[ -n '$t' ] && [ $before -gt $((after + 10000)) ] && [ $after -le 1000 ]"
n=$(ls "$MNT/model-005" | wc -l)
check "... looked in again: listed again, all there ($n files; listings of it $l0 -> $(lists model-005/))" \
	bash -c "[ $n -eq 400 ] && [ $(lists model-005/) -gt $l0 ]"
want=$(python3 -c 'import hashlib,sys; b=hashlib.sha256(sys.argv[1].encode()).digest(); print(hashlib.sha256((b*129)[:4096]).hexdigest())' model-005/shard-00017.bin)
check "... and its files read right" [ "$(sha "$MNT/model-005/shard-00017.bin")" = "$want" ]
exec 5<"$MNT/model-007/shard-00001.bin"
sleep 6
check "a directory with a file open is not forgotten (the open file reads; still 400 files, no new listing of it)" \
	bash -c "head -c 10 <&5 >/dev/null && [ \$(ls '$MNT/model-007' | wc -l) -eq 400 ]"
exec 5<&-
umount_fs "$MNT"

finish
