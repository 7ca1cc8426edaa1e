#!/usr/bin/env bash
# What a new user and an SRE rely on: mount(8) and fstab through the installed
# helper, a prefixed install, refusing to stack mounts, clearing a dead mount,
# a bounded exit on SIGTERM with a stalled store, a fast mount-time probe,
# cache_dir and configuration errors that fail the mount, logs without
# syslog, and the small things (--foreground, prefetch progress, cache stat,
# --help, df).
#
# Runs in its own mount and network namespaces: the helper is put on /sbin by
# an overlay that only this test sees, /dev/log and /var/cache can be hidden,
# and a name that does not resolve fails at once without a DNS query leaving
# the machine.
if [ -z "${MODELFS_T_USAGE_NS:-}" ]; then
	exec unshare --mount --net --propagation private env MODELFS_T_USAGE_NS=1 bash "$0" "$@"
fi
ip link set lo up
source "$(dirname "$0")/lib.sh"

MNT=$WORK/mnt
SRC=$WORK/src
mkdir -p "$MNT" "$SRC/sub"
head -c $((8 << 20)) /dev/urandom >"$SRC/shard.bin"
echo hello >"$SRC/sub/hello.txt"
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models m "$SRC"
want=$(sha256sum <"$SRC/shard.bin" | cut -d' ' -f1)
sum() { sha256sum <"$1" 2>/dev/null | cut -d' ' -f1; }
# lines TEXT PATTERN: how many lines of TEXT match PATTERN (no quoting games)
lines() { grep -cE -- "$2" <<<"$1"; }
one_line() { [ "$(grep -c . <<<"$1")" -eq 1 ]; }
ms_since() { echo $((($(date +%s%N) - $1) / 1000000)); }

# --- 2. a prefixed install into a scratch root (DESTDIR), then into a prefix
BUILD=$(dirname "$MODELFS")
if [ -f "$BUILD/cmake_install.cmake" ]; then
	DESTDIR=$WORK/root cmake --install "$BUILD" --prefix /opt/mfs >"$WORK/install.log" 2>&1
	check "DESTDIR + --prefix: everything lands under DESTDIR/prefix" bash -c "
		cd '$WORK/root' && [ -x opt/mfs/bin/modelfs ] && [ -x opt/mfs/sbin/mount.fuse.modelfs ] &&
		[ -x opt/mfs/sbin/mount.modelfs ] && [ -f opt/mfs/lib/systemd/system/modelfs@.service ] &&
		[ -f opt/mfs/share/man/man8/modelfs.8 ] && [ -z \"\$(find . -type f ! -path './opt/mfs/*')\" ]"
	check "the helper and the unit run the installed binary (/opt/mfs/bin/modelfs)" bash -c "
		grep -q '^exec \"/opt/mfs/bin/modelfs\"' '$WORK/root/opt/mfs/sbin/mount.fuse.modelfs' &&
		grep -q '^ExecStart=/opt/mfs/bin/modelfs ' '$WORK/root/opt/mfs/lib/systemd/system/modelfs@.service'"
	check "the man page renders without warnings" bash -c "
		groff -man -Tutf8 -ww -z '$WORK/root/opt/mfs/share/man/man8/modelfs.8' 2>&1 | { ! grep -q .; }"
	cmake --install "$BUILD" --prefix "$WORK/prefix" >>"$WORK/install.log" 2>&1
	# mount(8) looks for helpers in /sbin: give it ours, in this namespace only
	mkdir -p "$WORK/ov/up" "$WORK/ov/work"
	mount -t overlay overlay -o "lowerdir=/usr/sbin,upperdir=$WORK/ov/up,workdir=$WORK/ov/work" /usr/sbin
	TMPFS_MOUNTS+=(/usr/sbin)
	ln -s "$WORK/prefix/sbin/mount.fuse.modelfs" /usr/sbin/mount.fuse.modelfs
	HAVE_HELPER=1
else
	fail "no cmake_install.cmake beside $MODELFS: cannot test the install"
	HAVE_HELPER=0
fi

# --- 1. the real mount(8) and a real fstab line
if [ "$HAVE_HELPER" = 1 ]; then
	MOUNTS+=("$MNT")
	out=$(mount -t fuse.modelfs s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/c8" 2>&1)
	rc=$?
	check "mount -t fuse.modelfs (mount(8) adds rw): rc $rc" [ "$rc" -eq 0 ]
	check "... it says once that the mount is read-only" [ "$(lines "$out" "read-only \('rw' ignored\)")" -eq 1 ]
	check "... and reads the model" [ "$(sum "$MNT/shard.bin")" = "$want" ]
	check "... mounted read-only" bash -c "findmnt -no OPTIONS '$MNT' | grep -qw ro"
	umount "$MNT"
	check "umount(8) unmounts it" bash -c "! mountpoint -q '$MNT'"
	printf 's3://models/m %s fuse.modelfs _netdev,nofail,endpoint=%s,cache_dir=%s 0 0\n' \
		"$MNT" "$S3_ENDPOINT" "$WORK/c8" >"$WORK/fstab"
	mount -T "$WORK/fstab" "$MNT" >"$WORK/fstab.out" 2>&1
	rc=$?
	check "mount -T FSTAB MOUNTPOINT (an fstab line): rc $rc" [ "$rc" -eq 0 ]
	check "... reads the model" grep -qx hello "$MNT/sub/hello.txt"
	umount "$MNT"
	mount -a -T "$WORK/fstab" >>"$WORK/fstab.out" 2>&1
	check "mount -a -T FSTAB: rc $?" mountpoint -q "$MNT"
	umount "$MNT"
fi

# --- 3. no stacking, no mounting over files
mount_fs s3://models/m "$MNT" ""
first=$MNT_PID
t0=$(date +%s%N)
err=$(timeout 20 "$MODELFS" s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/cache" 2>&1)
rc=$?
check_all "a second mount on a live mountpoint is refused (rc $rc: $err)" \
	'[ $rc -eq 1 ] && [ "$(lines "$err" "already mounted \(fuse.modelfs s3://models/m\)")" -eq 1 ] && one_line "$err"'
check "... and the first daemon still serves" [ "$(sum "$MNT/shard.bin")" = "$want" ]
check "... and only one modelfs mount is there" [ "$(grep -c " $MNT fuse.modelfs" /proc/mounts)" -eq 1 ]
for ((i = 0; i < 5; i++)); do mountpoint -q "$MNT" && fusermount3 -u "$MNT"; done # every layer
umount_fs "$MNT"
mkdir -p "$WORK/full"
echo x >"$WORK/full/file"
err=$(timeout 20 "$MODELFS" s3://models/m "$WORK/full" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/cache" 2>&1)
rc=$?
check_all "a non-empty mountpoint is refused (rc $rc: $err)" \
	'[ $rc -eq 1 ] && [ "$(lines "$err" "is not empty: -o nonempty")" -eq 1 ]'
mount_fs s3://models/m "$WORK/full" "nonempty"
check "-o nonempty mounts over it" grep -qx hello "$WORK/full/sub/hello.txt"
umount_fs "$WORK/full"

# --- 9. a dead mount (daemon and holder killed) is cleared and mounted again
mount_fs s3://models/m "$MNT" ""
kill_dead "$MNT" "$MNT_PID"
check "after kill -9 the mountpoint is dead (ENOTCONN)" bash -c "stat -f '$MNT' 2>&1 | grep -q 'not connected'"
mount_fs s3://models/m "$MNT/" "" # a trailing slash, as tab completion leaves it
rc=$?
if [ "$(sum "$MNT/shard.bin")" = "$want" ]; then
	ok "mounting again on it works (rc $rc)"
else
	# (was about once in 20 runs: mount_fs's wait saw the dead mount, then
	# the directory below it; what was there, if it comes back)
	fail "mounting again on it works (rc $rc)"
	sleep 1
	echo "  a second later: $( [ "$(sum "$MNT/shard.bin")" = "$want" ] && echo readable || echo 'still not')"
	ls -la "$MNT" | head -5
	grep " ${MNT%/} " /proc/self/mountinfo
	tail -8 "$WORK/mnt.log"
fi
check "... saying once that it cleared the dead mount" \
	[ "$(grep -c 'cleared a dead modelfs mount of s3://models/m' "$WORK/mnt.log")" -eq 1 ]
check "... and only one modelfs mount is there" [ "$(grep -c " $MNT fuse.modelfs" /proc/mounts)" -eq 1 ]
umount_fs "$MNT"

# --- 4. SIGTERM during a read from a stalled store exits in seconds
proxy_start
S3_ENDPOINT=$PROXY_ENDPOINT mount_fs s3://models/m "$MNT" "cache_dir=$WORK/c4,retries=3,request_timeout=30,term_grace=0"
daemon=$MNT_PID
proxy_fault stall -1 120 >/dev/null
drop_caches
timeout 120 cat "$MNT/shard.bin" >/dev/null 2>"$WORK/reader4.err" &
reader=$!
sleep 1.5
t0=$(date +%s%N)
kill -TERM "$daemon"
timeout 30 tail --pid="$daemon" -f /dev/null
ms=$(ms_since "$t0")
check "SIGTERM with a read stalled in the store: the daemon exits in $ms ms (< 5000)" \
	bash -c "! kill -0 $daemon 2>/dev/null && [ $ms -lt 5000 ]"
check "... and the mount is gone" bash -c "! mountpoint -q '$MNT'"
timeout 10 tail --pid="$reader" -f /dev/null
check "... and the reader is not left hanging" bash -c "! kill -0 $reader 2>/dev/null"
check "... the log says the requests were cancelled" grep -q "cancelling the backend requests in flight" "$WORK/mnt.log"
proxy_fault none >/dev/null

# SIGTERM on an idle mount, again and again: the exit is clean every time
# (a late signal once killed the daemon between the loop and the unmount)
bad=0
for k in $(seq 1 15); do
	mount_fs s3://models/m "$MNT" "cache_dir=$WORK/c4" || { bad=$((bad + 1)); continue; }
	kill -TERM "$MNT_PID"
	wait "$MNT_PID"
	rc=$?
	if [ "$rc" -ne 0 ] || mountpoint -q "$MNT" || grep -q " $MNT " /proc/mounts; then
		bad=$((bad + 1))
		fusermount3 -uz "$MNT" 2>/dev/null
	fi
done
check "15 x SIGTERM on an idle mount: exit 0 and no mount left every time ($bad bad)" [ "$bad" -eq 0 ]

# --- 5. a store that connects but never answers fails the mount in seconds
proxy_fault stall -1 60 >/dev/null
t0=$(date +%s%N)
err=$(timeout 40 "$MODELFS" s3://models/m "$MNT" -o "endpoint=$PROXY_ENDPOINT,cache_dir=$WORK/c5" 2>&1)
rc=$?
ms=$(ms_since "$t0")
check_all "stalled endpoint: the mount fails in $ms ms (< 8000) saying it connected (rc $rc: $err)" \
	'[ $rc -eq 5 ] && [ $ms -lt 8000 ] && [ "$(lines "$err" "did not answer in time: connected, but no answer")" -eq 1 ]'
proxy_fault none >/dev/null

# --- 6. a cache_dir that cannot be used fails the mount; the default falls back loudly
expect_err() { # DESCRIPTION PATTERN ARGS...: a failure's status (1-5, modelfs(8)), one line matching, nothing mounted
	local d=$1 pat=$2 err rc
	shift 2
	err=$(timeout 20 "$MODELFS" "$@" 2>&1)
	rc=$?
	check_all "$d (rc $rc: $err)" \
		'[ $rc -ge 1 ] && [ $rc -le 5 ] && [ "$(lines "$err" "$pat")" -eq 1 ] && one_line "$err" && ! mountpoint -q "$MNT"'
}
echo x >"$WORK/afile"
mkdir -p "$WORK/rofs"
mount -t tmpfs -o ro,size=1m tmpfs "$WORK/rofs"
TMPFS_MOUNTS+=("$WORK/rofs")
expect_err "cache_dir is a file" "cache_dir .*afile cannot be used: not a directory" \
	s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/afile"
expect_err "cache_dir in /proc" "cache_dir /proc/modelfs-x cannot be used: cannot create it" \
	s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=/proc/modelfs-x"
expect_err "cache_dir on a read-only filesystem" "cannot be used: cannot write in it: Read-only file system" \
	s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/rofs"
# usable at a glance, refused by the cache itself (after going to the background):
# its reason, not a "see above" that the caller never sees
mkdir -p "$WORK/baddata" && echo x >"$WORK/baddata/data"
expect_err "cache_dir whose data/ is a file" "cache_dir .*baddata cannot be used: cannot .*baddata.*: Not a directory: unmounting" \
	s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/baddata,log_file=$WORK/baddata.log"
# two pid namespaces, a daemon in each with the same pid (the same steps from
# a new namespace's pid 1), one cache_dir: LMDB tells readers apart by pid
mkdir -p "$WORK/pns/src" "$WORK/pns/m1" "$WORK/pns/m2"
echo hello >"$WORK/pns/src/a.txt"
pns() { # MOUNTPOINT THEN: modelfs in a pid and mount namespace of its own, then the shell THEN
	unshare -pf --kill-child --mount-proc sh -c '"$0" file://$1/src $1/$2 -o cache_dir=$1/cache,log_file=$1/$2.log || exit; eval "$3"' \
		"$MODELFS" "$WORK/pns" "$1" "$2"
}
pns m1 'cat $1/m1/a.txt; sleep 60' >"$WORK/pns/one.out" 2>&1 &
PNS=$!
PIDS+=("$PNS")
for ((i = 0; i < 100; i++)); do grep -q hello "$WORK/pns/one.out" && break; sleep 0.1; done
err=$(timeout 20 unshare -pf --kill-child --mount-proc sh -c '"$0" file://$1/src $1/m2 -o cache_dir=$1/cache,log_file=$1/m2.log' "$MODELFS" "$WORK/pns" 2>&1)
rc=$?
check_all "a second pid namespace's daemon with the same pid on one cache_dir: refused, saying why (rc $rc: $err)" \
	'grep -q hello "$WORK/pns/one.out" && [ $rc -eq 1 ] && one_line "$err" &&
	 [[ $err == *"cache_dir $WORK/pns/cache cannot be used: a process in another pid namespace with this daemon'"'"'s pid ("[0-9]*") reads its index"*"give each pid namespace its own cache_dir"* ]]'
kill "$PNS"
wait "$PNS" 2>/dev/null
(cd "$WORK" && "$MODELFS" s3://models/m mnt -o "endpoint=$S3_ENDPOINT,cache_dir=relcache" 2>"$WORK/rel.err")
MOUNTS+=("$MNT")
cat "$MNT/sub/hello.txt" >/dev/null
fusermount3 -u "$MNT"
for ((i = 0; i < 50; i++)); do mountpoint -q "$MNT" || break; sleep 0.1; done
check "a relative cache_dir and mountpoint mean the caller's directory, also after going to the background" \
	bash -c "[ -d '$WORK/relcache/index' ] && [ ! -e /relcache ] && ! mountpoint -q '$MNT'"
mount -t tmpfs -o ro,size=1m tmpfs /var/cache
TMPFS_MOUNTS+=(/var/cache)
"$MODELFS" s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT" 2>"$WORK/default.err"
rc=$?
MOUNTS+=("$MNT")
check "the default cache_dir unusable: mounts anyway (rc $rc)" grep -qx hello "$MNT/sub/hello.txt"
check "... and says so on stderr" grep -q "no disk cache: the default cache_dir /var/cache/modelfs cannot be used" "$WORK/default.err"
fusermount3 -u "$MNT"
umount /var/cache

# --- 7. a setting that cannot work is not mistaken for an outage
expect_err "an endpoint host that does not resolve" "cannot reach endpoint http://no-such-host.invalid:9000" \
	s3://models "$MNT" -o "endpoint=http://no-such-host.invalid:9000,path_style,cache_dir=$WORK/c7"

mount_fs s3://models/m "$MNT" "cache_dir=$WORK/c7"
cat "$MNT/sub/hello.txt" >/dev/null
umount_fs "$MNT" # the listing is saved in c7: an outage would mount it
expect_err "virtual_host on an IP endpoint fails (no offline mount)" "cannot resolve models\.127\.0\.0\.1.*path_style" \
	s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/c7,virtual_host"
s3_stop
mount_fs s3://models/m "$MNT" "cache_dir=$WORK/c7"
check "a real outage (connection refused) still mounts the saved listing" grep -qx hello "$MNT/sub/hello.txt"
umount_fs "$MNT"
S3_PORT_WANT=$S3_PORT s3_start s3

# --- 8. logs without syslog; log_file, log_level; status shows the prefetch's error
if [ -e /dev/log ]; then : >"$WORK/nolog"; mount --bind "$WORK/nolog" /dev/log; TMPFS_MOUNTS+=(/dev/log); fi
"$MODELFS" s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/c8b,cache_size=1M,prefetch=*.bin" \
	2>"$WORK/bg.err"
MOUNTS+=("$MNT")
for ((i = 0; i < 50; i++)); do grep -q "do not fit" "$WORK/bg.err" && break; sleep 0.1; done
check "no syslog: the background daemon logs to the stderr it was started with" \
	grep -q "error: prefetch: 1 files, 0.01 GiB, do not fit in the cache" "$WORK/bg.err"
st=$("$MODELFS" status "$MNT")
check_all "modelfs status shows why it is not ready" \
	'[ "$(lines "$st" "^ready=0")" -eq 1 ] && [ "$(lines "$st" "^error=prefetch: 1 files.*do not fit")" -eq 1 ]'
fusermount3 -u "$MNT"
"$MODELFS" s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/c8c,log_file=$WORK/daemon.log,log_level=debug" \
	2>"$WORK/lf.err"
MOUNTS+=("$MNT")
cat "$MNT/sub/hello.txt" >/dev/null
fusermount3 -u "$MNT"
for ((i = 0; i < 50; i++)); do grep -q "unmounting" "$WORK/daemon.log" && break; sleep 0.1; done
check "log_file gets the daemon's lines (mounted ... unmounting)" \
	bash -c "grep -q 'info: mounted s3://models/m' '$WORK/daemon.log' && grep -q 'info: unmounting' '$WORK/daemon.log'"
check "log_level=debug logs the GETs" grep -q "debug: GET s3://models/m/sub/hello.txt" "$WORK/daemon.log"
: >"$WORK/mnt.log"
mount_fs s3://models/m "$MNT" "log_level=error"
cat "$MNT/sub/hello.txt" >/dev/null
umount_fs "$MNT"
check "log_level=error keeps info lines out" bash -c "! grep -q 'info:' '$WORK/mnt.log'"
expect_err "a bad log_level" "bad value for option log_level: 'loud'" s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,log_level=loud"
expect_err "a log_file that cannot be opened" "log_file /proc/x/y: " s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,log_file=/proc/x/y"

# --- 10. the small things
"$MODELFS" s3://models/m "$MNT" --foreground -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/c10" >"$WORK/fg.log" 2>&1 &
fg=$!
PIDS+=("$fg")
MOUNTS+=("$MNT")
for ((i = 0; i < 100; i++)); do mountpoint -q "$MNT" && break; sleep 0.05; done
check "--foreground stays in the foreground" bash -c "mountpoint -q '$MNT' && kill -0 $fg"
cat "$MNT/shard.bin" >/dev/null
"$MODELFS" prefetch --wait "$MNT/shard.bin" >/dev/null 2>"$WORK/pf.err"
check "prefetch of a cached file: no absurd rate, no ETA ($(tail -1 "$WORK/pf.err"))" \
	bash -c "tail -1 '$WORK/pf.err' | grep -qE ' 0 MB/s  done\$'"
df -B1 "$MNT" >"$WORK/df.out"
read -r _ size used avail pct _ < <(tail -1 "$WORK/df.out")
check "df: used is the model's size, available the cache's room ($size $used $avail $pct)" \
	bash -c "[ $used -ge $((8 << 20)) ] && [ $used -lt $((9 << 20)) ] && [ $avail -gt 0 ] && [ '$pct' != 100% ]"
fusermount3 -u "$MNT"
wait "$fg"
cs=$("$MODELFS" cache stat "$WORK/c10")
check_all "cache stat reports reads and fetches apart, no hit ratio" \
	'[ "$(lines "$cs" "^reads +[0-9]+ chunk reads")" -eq 1 ] && [ "$(lines "$cs" "^fetches +[0-9]+ chunks fetched")" -eq 1 ] && [ "$(lines "$cs" "hit ratio")" -eq 0 ]'
help=$("$MODELFS" --help)
check_all "--help names AWS_ENDPOINT_URL_S3 and AWS_SHARED_CREDENTIALS_FILE" \
	'[ "$(lines "$help" AWS_ENDPOINT_URL_S3)" -ge 1 ] && [ "$(lines "$help" AWS_SHARED_CREDENTIALS_FILE)" -ge 1 ]'
AWS_REGION=eu-west-3 expect_err "no endpoint: the message names the URL tried" "https://models\.s3\.eu-west-3\.amazonaws\.com" \
	s3://models/m "$MNT" -o "cache_dir=$WORK/c10"

# --- 11. log_format=json: every line one object, for log pipelines
"$MODELFS" s3://models/m "$MNT" -f -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/c11,log_format=json" \
	2>"$WORK/json.log" &
jfg=$!
PIDS+=("$jfg")
for _ in $(seq 100); do mountpoint -q "$MNT" && break; sleep 0.05; done
cat "$MNT/shard.bin" >/dev/null
fusermount3 -u "$MNT"
wait "$jfg"
out=$(python3 - "$WORK/json.log" "$MNT" <<'PY'
import json, sys
n = 0
for line in open(sys.argv[1], encoding="utf-8"):
    d = json.loads(line)
    assert set(d) == {"time", "level", "message", "mount"}, d
    assert d["mount"] == sys.argv[2] and d["time"].endswith("Z"), d
    n += 1
assert n >= 3
print(n, "lines")
PY
)
check_all "log_format=json: every line is one JSON object with time, level, message, mount ($out)" \
	'[ -n "$out" ] && grep -q "mounted s3://models/m" "$WORK/json.log"'
expect_err "log_format=xml" "bad value for option log_format: 'xml' \\(text or json\\)" \
	s3://models/m "$MNT" -o "cache_dir=$WORK/c11,log_format=xml"

finish
