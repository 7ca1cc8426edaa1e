#!/usr/bin/env bash
# One body run against every source: the tree of t_mount (nested prefixes,
# > 1,000 keys in one directory, spaces, '+', '%', '=', '&', unicode, empty
# files, an empty directory) compared by find and sha256, random ranges byte
# for byte, a prefetch, a remount with the store gone (the offline snapshot
# and the cache) and passthrough of the cached files. Then what only one
# source has: file:// symlinks, special files, and a file changed under an
# open reader.
source "$(dirname "$0")/lib.sh"

MANY=${MANY:-1100}
SRC=$WORK/src
MNT=$WORK/mnt
python3 "$HERE/gen_tree.py" "$SRC" "$MANY" 40
(cd "$SRC" && find . | LC_ALL=C sort) >"$WORK/find.want"
# git (the Hub) keeps no empty directories
grep -v '^\./emptydir$' "$WORK/find.want" >"$WORK/find.want-noempty"
FIND_WANT=$WORK/find.want
(cd "$SRC" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | LC_ALL=C sort -k2) >"$WORK/sha.want"

gets() { grep -c "debug: GET " "$1" 2>/dev/null || true; }
hits() { "$MODELFS" cache stat "$1" | sed -n "s/^reads *\([0-9]*\) chunk reads.*/\1/p"; }
same_tree() { # DIR: find and sha256 as the source
	(cd "$1" && find . | LC_ALL=C sort) >"$WORK/find.got" &&
		cmp -s "$FIND_WANT" "$WORK/find.got" || { diff "$FIND_WANT" "$WORK/find.got" | head -5; return 1; }
	(cd "$1" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 -P 4 -n 100 sha256sum | LC_ALL=C sort -k2) >"$WORK/sha.got"
	cmp -s "$WORK/sha.want" "$WORK/sha.got"
}
ranges() { # DIR: random ranged reads equal the source
	python3 - "$SRC" "$1" <<'PY'
import os, random, sys
src, mnt = sys.argv[1], sys.argv[2]
rng = random.Random(11)
files = ["big/model-big.safetensors", "a/b/c/deep.bin", "a/b/shard-00001.safetensors"]
for _ in range(200):
    rel = rng.choice(files)
    size = os.path.getsize(os.path.join(src, rel))
    off = rng.randrange(size); n = rng.randrange(1, 3 << 20)
    with open(os.path.join(src, rel), "rb") as a, open(os.path.join(mnt, rel), "rb") as b:
        a.seek(off); b.seek(off)
        if a.read(n) != b.read(n):
            print("mismatch", rel, off, n); sys.exit(1)
PY
}

# body NAME SOURCE STORE_DOWN STORE_UP [OPTS]  (NOEMPTY=1: no empty directories)
body() {
	local name=$1 src=$2 down=$3 up=$4 c=$WORK/cache-$1 h0 h1
	local opts="cache_dir=$c,chunk_size=1M,metadata_ttl=3600${5:+,$5}"
	log "$name: $src"
	mount_fs "$src" "$MNT" "$opts" -d || { fail "$name: mount"; return; }
	check "$name: find and sha256 of every file equal the source" same_tree "$MNT"
	drop_caches
	check "$name: random ranged reads equal the source" ranges "$MNT"
	check "$name: > 1000 entries in one directory" [ "$(ls "$MNT/many" | wc -l)" -eq "$MANY" ]
	[ -n "${NOEMPTY:-}" ] ||
		check_all "$name: the empty directory is there, empty" '[ -d "$MNT/emptydir" ] && [ -z "$(ls -A "$MNT/emptydir")" ]'
	check_all "$name: writes fail with EROFS" '! touch "$MNT/new" 2>"$WORK/erofs" && grep -q "Read-only" "$WORK/erofs"'
	umount_fs "$MNT"

	# a prefetch of everything, then the store goes away
	rm -f "$WORK/ready"
	mount_fs "$src" "$MNT" "$opts,prefetch=*,ready_file=$WORK/ready" -d
	for _ in $(seq 600); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
	check "$name: the prefetch of every file ends (ready_file)" [ -e "$WORK/ready" ]
	umount_fs "$MNT"
	$down
	: >"$WORK/mnt.log"
	h0=$(hits "$c")
	mount_fs "$src" "$MNT" "$opts" -d || { fail "$name: offline mount"; $up; return; }
	check "$name: store gone: mounted from the saved listing" grep -q "mounting the listing saved" "$WORK/mnt.log"
	drop_caches
	check "$name: store gone: every file reads back from the cache" same_tree "$MNT"
	umount_fs "$MNT"
	h1=$(hits "$c")
	if grep -q "kernel passthrough on" "$WORK/mnt.log"; then
		check "$name: cached files passed through: no chunk read by the daemon ($((h1 - h0)))" \
			[ "$((h1 - h0))" -le 2 ]
	else
		echo "ok - $name: passthrough skipped (the kernel has none)"
	fi
	$up
}

# ---- s3:// (s3rver)
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models llama "$SRC" || exit 1
$S3TOOL put models llama/emptydir/ /dev/null
S3_PORT_WANT=$S3_PORT
s3_down() { s3_stop; }
s3_up() { s3_start s3; }
body s3 s3://models/llama s3_down s3_up

# ---- oss:// (the fake OSS of ossfake.py, checking every signature)
export OSS_ACCESS_KEY_ID=ossak OSS_ACCESS_KEY_SECRET=osssk
mkdir -p "$WORK/ossroot/models"
cp -a "$SRC" "$WORK/ossroot/models/llama"
OSS_PORT=$(free_port)
oss_up() {
	rm -f "$WORK/oss.port"
	OSSFAKE_AK=ossak OSSFAKE_SK=osssk OSSFAKE_REGION=cn-hangzhou OSSFAKE_PORT=$OSS_PORT \
		OSSFAKE_LOG=$WORK/oss-signed.jsonl OSSFAKE_VHOST=.oss.localhost \
		setsid python3 "$HERE/ossfake.py" "$WORK/ossroot" "$WORK/oss.port" 2>>"$WORK/ossfake.log" &
	OSS_PID=$!
	PIDS+=("$OSS_PID")
	for _ in $(seq 100); do [ -s "$WORK/oss.port" ] && return 0; sleep 0.05; done
	fail "the fake OSS starts"
}
oss_down() { kill "$OSS_PID"; wait "$OSS_PID" 2>/dev/null; }
oss_up
OSS_EP=endpoint=http://127.0.0.1:$OSS_PORT,region=cn-hangzhou
body oss oss://models/llama oss_down oss_up "$OSS_EP"
# virtual-host style (BUCKET.ENDPOINT), as against OSS itself: curl resolves
# *.localhost to the loopback address
mount_fs oss://models/llama "$MNT" "cache_dir=$WORK/cache-vh,endpoint=http://oss.localhost:$OSS_PORT,region=cn-hangzhou" -d
check_all "oss:// virtual-host style (Host: models.oss.localhost), V4: bytes match" \
	'cmp -s "$MNT/a/b/c/deep.bin" "$SRC/a/b/c/deep.bin" && grep -q "\"host\": \"models.oss.localhost\"" "$WORK/oss-signed.jsonl"'
umount_fs "$MNT"
mount_fs oss://models/llama "$MNT" "cache_dir=$WORK/cache-vh1,endpoint=http://oss.localhost:$OSS_PORT,sigv=1" -d
check "oss:// virtual-host style, V1: bytes match" cmp -s "$MNT/a/b/c/deep.bin" "$SRC/a/b/c/deep.bin"
umount_fs "$MNT"
mount_fs oss://models/llama "$MNT" "cache_dir=$WORK/cache-v1,endpoint=http://127.0.0.1:$OSS_PORT,sigv=1" -d
check "oss:// with V1 signatures (sigv=1): bytes match" cmp -s "$MNT/a/b/c/deep.bin" "$SRC/a/b/c/deep.bin"
umount_fs "$MNT"
if [ -f /opt/ali-oss/node_modules/ali-oss/lib/common/signUtils.js ]; then
	check "Alibaba's SDK (ali-oss) signs every V4 and V1 request modelfs sent the same, byte for byte ($(node "$HERE/oss_sdk_check.js" /opt/ali-oss "$WORK/oss-signed.jsonl" ossak osssk | tail -1))" \
		node "$HERE/oss_sdk_check.js" /opt/ali-oss "$WORK/oss-signed.jsonl" ossak osssk
else
	echo "ok - ali-oss check skipped: no /opt/ali-oss (scripts/deps.sh installs it)"
fi
# an ossfs passwd file instead of the environment
printf 'other:AKX:SKX\nmodels:ossak:osssk\n' >"$WORK/passwd-ossfs"
chmod 600 "$WORK/passwd-ossfs"
( export OSS_ACCESS_KEY_SECRET=wrong # the named file wins over the environment
  mount_fs oss://models/llama "$MNT" "cache_dir=$WORK/cache-pw,$OSS_EP,passwd_file=$WORK/passwd-ossfs" -d &&
	cmp -s "$MNT/config.json" "$SRC/config.json"; rc=$?; fusermount3 -u "$MNT"; exit $rc )
check "oss:// keys from an ossfs passwd file (its bucket's line, over wrong keys in the environment): bytes match" [ $? -eq 0 ]

# keys from a mounted Kubernetes secret (creds_dir=: files behind the ..data
# symlink), rotated while mounted; and a throttling OSS (503 with
# x-oss-qos-delay-time) on a second fake that reads its one key pair from a file
S=$WORK/secret
mkdir -p "$S/v1"
printf 'AK1' >"$S/v1/fs.oss.accessKeyId"
printf 'SK1\n' >"$S/v1/fs.oss.accessKeySecret"
ln -s v1 "$S/..data"
ln -s ..data/fs.oss.accessKeyId "$S/fs.oss.accessKeyId"
ln -s ..data/fs.oss.accessKeySecret "$S/fs.oss.accessKeySecret"
echo AK1:SK1 >"$WORK/osskeys"
OSS2_PORT=$(free_port)
OSSFAKE_KEYS=$WORK/osskeys OSSFAKE_THROTTLE=3 OSSFAKE_THROTTLE_LOG=$WORK/throttle.log \
	OSSFAKE_PORT=$OSS2_PORT setsid python3 "$HERE/ossfake.py" "$WORK/ossroot" "$WORK/oss2.port" \
	2>>"$WORK/ossfake.log" &
PIDS+=($!)
for _ in $(seq 100); do [ -s "$WORK/oss2.port" ] && break; sleep 0.05; done
mount_fs oss://models/llama "$MNT" "cache_dir=$WORK/cache-sec,endpoint=http://127.0.0.1:$OSS2_PORT,region=cn-hangzhou,creds_dir=$S" -d
check "oss:// creds_dir=: keys from the secret's files (over the environment's): bytes match" \
	cmp -s "$MNT/a/top.txt" "$SRC/a/top.txt"
check_all "oss:// throttled (3 answers 503 with x-oss-qos-delay-time: 500): the reads succeed, each retry $(tr '\n' ' ' <"$WORK/throttle.log")s later (>= 0.45)" \
	'[ "$(wc -l <"$WORK/throttle.log")" -ge 1 ] && awk "\$1 < 0.45 {bad=1} END {exit bad}" "$WORK/throttle.log"'
mkdir -p "$S/v2"
printf 'AK2' >"$S/v2/fs.oss.accessKeyId"
printf 'SK2' >"$S/v2/fs.oss.accessKeySecret"
ln -s v2 "$S/..data_tmp" && mv -T "$S/..data_tmp" "$S/..data" # as the kubelet swaps it
echo AK2:SK2 >"$WORK/osskeys"                                 # the old keys stop working
sleep 1.2
check "oss:// creds_dir= rotated while mounted: a new read signs with the new keys" \
	cmp -s "$MNT/a/b/c/deep.bin" "$SRC/a/b/c/deep.bin"
check "oss:// creds_dir= rotated: said in the log, the keys not" \
	bash -c "grep -q 'creds_dir .* changed' '$WORK/mnt.log' && ! grep -q 'SK2' '$WORK/mnt.log'"
umount_fs "$MNT"

# ---- file:// (a network share: here a FUSE mount of the same bucket, so
# that "the share is down" is what a dead network filesystem gives, ENOTCONN)
FSRC=$WORK/share
share_up() { mount_fs s3://models/llama "$FSRC" no_cache && SHARE_PID=$MNT_PID; }
share_down() { kill_dead "$FSRC" "$SHARE_PID"; }
share_again() { fusermount3 -uz "$FSRC"; share_up; }
share_up || fail "the share mounts"
body file "file://$FSRC" share_down share_again

# a share that hangs (its daemon stopped: every access waits, as on a hard
# NFS mount whose server is gone): the probe gives up in 5 s and the mount
# starts from the saved listing, serving the cache
kill -STOP "$SHARE_PID"
t0=$(date +%s)
mount_fs "file://$FSRC" "$MNT" "cache_dir=$WORK/cache-file,chunk_size=1M,metadata_ttl=3600"
t1=$(date +%s)
check_all "a hung share: mounted from the saved listing in $((t1 - t0)) s (<= 10)" \
	'[ $((t1 - t0)) -le 10 ] && grep -q "mounting the listing saved" "$WORK/mnt.log"'
check "a hung share: a cached file reads back" cmp -s "$MNT/a/b/c/deep.bin" "$SRC/a/b/c/deep.bin"
kill -CONT "$SHARE_PID"
umount_fs "$MNT"

# ---- http:// (nginx, a real server): its JSON autoindex, then a manifest
mkdir -p "$WORK/www"
cp -a "$SRC" "$WORK/www/llama"
printf 's3cret-token\n' >"$WORK/token"
# /private/ wants a bearer token, as a mirror behind auth does
nginx_start "$WORK/www" 'location /private/ { alias '"$WORK/www/llama/"'; if ($http_authorization != "Bearer s3cret-token") { return 401; } }'
NGINX_PORT_WANT=$NGINX_PORT
web_up() { nginx_start "$WORK/www"  'location /private/ { alias '"$WORK/www/llama/"'; if ($http_authorization != "Bearer s3cret-token") { return 401; } }'; }
body http "http://127.0.0.1:$NGINX_PORT/llama/" nginx_stop web_up
check "http:// without a manifest: listed from nginx's JSON index, directory by directory" \
	grep -q 'GET /llama/a/b/c/ HTTP' "$WORK/nginx/access.log"
"$MODELFS" manifest "$WORK/www/llama" >"$WORK/manifest.json" &&
	cp "$WORK/manifest.json" "$WORK/www/llama/modelfs-manifest.json"
check "modelfs manifest lists every file and the empty directory ($(grep -c '"path"' "$WORK/manifest.json") entries)" \
	[ "$(grep -c '"path"' "$WORK/manifest.json")" -eq "$(($(find "$SRC" -type f | wc -l) + 1))" ]
: >"$WORK/nginx/access.log"
NOEMPTY= body http-manifest "http://127.0.0.1:$NGINX_PORT/llama/" nginx_stop web_up
check "http:// with a manifest: no directory index read" \
	[ "$(grep -c 'GET /llama/[^ ]*/ HTTP' "$WORK/nginx/access.log")" -eq 0 ]
mount_fs "http://127.0.0.1:$NGINX_PORT/private/" "$MNT" "cache_dir=$WORK/cache-tok,token_file=$WORK/token" -d
check "http:// with token_file=: bytes match behind a bearer token" cmp -s "$MNT/a/b/c/deep.bin" "$SRC/a/b/c/deep.bin"
check "http:// with token_file=: the token is not in the log" bash -c "! grep -q s3cret-token '$WORK/mnt.log'"
umount_fs "$MNT"
# a file changed on the server under an open reader: If-Range fails, ESTALE
head -c $((16 << 20)) /dev/urandom >"$WORK/www/llama/changing.bin"
rm -f "$WORK/www/llama/modelfs-manifest.json"
mount_fs "http://127.0.0.1:$NGINX_PORT/llama/" "$MNT" "cache_dir=$WORK/cache-chg,chunk_size=1M" -d
stale_read() { # MNTFILE SRCFILE: read a bit, change the source (size kept, mtime moved), read a chunk not fetched yet
	python3 - "$1" "$2" <<'PY' 2>&1
import errno, mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECT) # no kernel readahead
buf = mmap.mmap(-1, 4096)
os.preadv(fd, [buf], 0)
with open(sys.argv[2], "r+b") as f:
    f.seek(12 << 20); f.write(os.urandom(4096))
st = os.stat(sys.argv[2]); os.utime(sys.argv[2], (st.st_atime, st.st_mtime + 5))
try:
    os.preadv(fd, [buf], 12 << 20)
    print("read succeeded")
except OSError as e:
    print(errno.errorcode.get(e.errno, e.errno))
PY
}
out=$(stale_read "$MNT/changing.bin" "$WORK/www/llama/changing.bin")
check "http://: a file changed on the server under an open reader: ESTALE, not mixed bytes ($out)" [ "$out" = ESTALE ]
umount_fs "$MNT"

# ---- http:// from a server that ignores Range (Python's http.server
# answers 200 with the whole file): slow, never wrong bytes
"$MODELFS" manifest "$WORK/www/llama" >"$WORK/www/llama/modelfs-manifest.json"
PY_PORT=$(free_port)
setsid python3 -m http.server --bind 127.0.0.1 "$PY_PORT" --directory "$WORK/www/llama" \
	>>"$WORK/pyhttp.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PY_PORT/" && break; sleep 0.05; done
mount_fs "http://127.0.0.1:$PY_PORT/" "$MNT" "cache_dir=$WORK/cache-py,chunk_size=1M" -d
check "a server that ignores Range: random ranged reads equal the source" ranges "$MNT"
check "a server that ignores Range: said once in the log" \
	[ "$(grep -c "ignores Range requests" "$WORK/mnt.log")" -eq 1 ]
out=$(stale_read "$MNT/changing.bin" "$WORK/www/llama/changing.bin")
check "a server that ignores Range, file changed under a reader: ESTALE ($out)" [ "$out" = ESTALE ]
umount_fs "$MNT"
rm -f "$WORK/www/llama/modelfs-manifest.json" "$WORK/www/llama/changing.bin"

# ---- hf:// (the fake Hub of hubfake.py: revisions, the tree in pages of 50
# joined by Link headers, resolve, LFS files redirected to a CDN on another port)
H=$WORK/hub
C1=$(printf one | sha1sum | cut -c1-40)
C2=$(printf two | sha1sum | cut -c1-40)
mkdir -p "$H/org1/llama/commits" "$H/org1/gated/commits/$C1"
cp -a "$SRC" "$H/org1/llama/commits/$C1"
echo "{\"main\": \"$C1\"}" >"$H/org1/llama/refs.json"
cp "$SRC/a/b/c/deep.bin" "$H/org1/gated/commits/$C1/weights.safetensors"
echo "{\"main\": \"$C1\"}" >"$H/org1/gated/refs.json"
echo hf_goodtoken >"$H/org1/gated/gated"
HUB_PORT=$(free_port)
hub_up() {
	rm -f "$WORK/hub.port"
	HUBFAKE_PORT=$HUB_PORT HUBFAKE_LOG=$WORK/hub-requests.jsonl \
		setsid python3 "$HERE/hubfake.py" "$H" "$WORK/hub.port" 2>>"$WORK/hubfake.log" &
	HUB_PID=$!
	PIDS+=("$HUB_PID")
	for _ in $(seq 100); do [ -s "$WORK/hub.port" ] && return 0; sleep 0.05; done
	fail "the fake Hub starts"
}
hub_down() { kill "$HUB_PID"; wait "$HUB_PID" 2>/dev/null; }
hub_up
HUB=http://127.0.0.1:$HUB_PORT
unset HF_TOKEN HF_TOKEN_PATH HF_ENDPOINT
export HF_HOME=$WORK/hf-home # no token file of the machine's user
FIND_WANT=$WORK/find.want-noempty NOEMPTY=1 body hf hf://org1/llama hub_down hub_up "endpoint=$HUB"
FIND_WANT=$WORK/find.want
check "hf://: the tree was read in pages (Link: rel=next): $(grep -c '/tree/' "$WORK/hub-requests.jsonl") tree requests" \
	[ "$(grep -c "/api/models/org1/llama/tree/$C1" "$WORK/hub-requests.jsonl")" -ge 20 ]
check "hf://: LFS files were read from the CDN, never with the Hub's token" python3 -c "
import json, sys
cdn = [r for r in map(json.loads, open(sys.argv[1])) if r['path'].startswith('/lfs/')]
sys.exit(not (cdn and not any(r['auth'] for r in cdn)))" "$WORK/hub-requests.jsonl"
# the branch moves while mounted: the mount keeps its commit
mount_fs hf://org1/llama "$MNT" "cache_dir=$WORK/cache-rev,chunk_size=1M,endpoint=$HUB" -d
cp -a "$H/org1/llama/commits/$C1" "$H/org1/llama/commits/$C2"
printf 'TOP\n' >"$H/org1/llama/commits/$C2/a/top.txt"
echo "{\"main\": \"$C2\"}" >"$H/org1/llama/refs.json"
check "hf://: main moved to another commit while mounted: the mount still reads its own" \
	cmp -s "$MNT/a/top.txt" "$SRC/a/top.txt"
check "hf://: the commit was resolved once, at mount, and said" grep -q "files at commit $C1 (revision 'main')" "$WORK/mnt.log"
if [ -f /opt/hf-hub/node_modules/@huggingface/hub/dist/index.js ]; then
	out=$(node "$HERE/hub_sdk_check.js" /opt/hf-hub "$HUB" org1/llama "$C1" "$MNT" 2>&1)
	check "Hugging Face's client (@huggingface/hub) lists and downloads what the mount shows ($(echo "$out" | tail -1))" \
		[ $? -eq 0 ]
else
	echo "ok - @huggingface/hub check skipped: no /opt/hf-hub (scripts/deps.sh installs it)"
fi
umount_fs "$MNT"
mount_fs "hf://org1/llama@$C2" "$MNT" "cache_dir=$WORK/cache-rev,chunk_size=1M,endpoint=$HUB" -d
check "hf://ORG/MODEL@COMMIT: that commit's bytes" grep -q TOP "$MNT/a/top.txt"
umount_fs "$MNT"
HF_TOKEN=hf_goodtoken mount_fs hf://org1/gated "$MNT" "cache_dir=$WORK/cache-gated,endpoint=$HUB" -d
check "hf:// of a gated model with an accepted token (HF_TOKEN): bytes match" \
	cmp -s "$MNT/weights.safetensors" "$SRC/a/b/c/deep.bin"
check "hf://: the token is not in the log" bash -c "! grep -q hf_goodtoken '$WORK/mnt.log'"
umount_fs "$MNT"

# ---- file:// only: symlinks, special files, a file changed under a reader
F=$WORK/f
mkdir -p "$F/models/blobs" "$F/models/snap" "$WORK/outside"
head -c $((3 << 20)) /dev/urandom >"$F/models/blobs/b1"
echo secret >"$WORK/outside/secret"
ln -s ../blobs/b1 "$F/models/snap/model.bin"       # inside: followed (the HF cache layout)
ln -s ../../outside/secret "$F/models/snap/escape" # leaves the tree: not shown
ln -s "$F/models/blobs/b1" "$F/models/snap/abs"    # absolute: not followed
ln -s . "$F/models/snap/loop"                      # a loop: not walked twice
mkfifo "$F/models/fifo"
python3 -c "import socket,sys; s=socket.socket(socket.AF_UNIX); s.bind(sys.argv[1])" "$F/models/sock"
head -c $((16 << 20)) /dev/urandom >"$F/models/changing.bin"
mount_fs "file://$F/models" "$MNT" "cache_dir=$WORK/cache-f,chunk_size=1M" -d
check "a symlink inside the tree is followed: bytes match" cmp -s "$MNT/snap/model.bin" "$F/models/blobs/b1"
check_all "a symlink out of the tree, an absolute one, a fifo and a socket are not shown" \
	'[ ! -e "$MNT/snap/escape" ] && [ ! -e "$MNT/snap/abs" ] && [ ! -e "$MNT/fifo" ] && [ ! -e "$MNT/sock" ]'
check "a symlink loop is not followed" [ ! -e "$MNT/snap/loop" ]
out=$(stale_read "$MNT/changing.bin" "$F/models/changing.bin")
check "a file changed under an open reader: ESTALE, not mixed bytes ($out)" [ "$out" = ESTALE ]
umount_fs "$MNT"

# ---- bad sources: one line, non-zero, within seconds
expect_line() { # DESCRIPTION PATTERN ARGS...
	local d=$1 p=$2 rc out
	shift 2
	# EXPECT_ENV: words for env(1) before the command (VAR=x, -u VAR)
	out=$(timeout 20 env ${EXPECT_ENV:-} "$MODELFS" "$@" 2>&1)
	rc=$?
	check_all "$d: exit $rc, '$(echo "$out" | head -1)'" \
		'[ "$rc" -ne 0 ] && [ "$rc" -ne 124 ] && echo "$out" | grep -q -- "$p"'
}
mkdir -p "$WORK/m2"
expect_line "file:// of a missing directory" "directory '$WORK/nonexistent' does not exist" \
	"file://$WORK/nonexistent" "$WORK/m2" -o "cache_dir=$WORK/c2"
expect_line "file:// of a relative path" "expected file:///ABSOLUTE/DIRECTORY" "file://rel/dir" "$WORK/m2"
expect_line "an S3 option on a file:// source" "not used by file:// sources" \
	"file://$F/models" "$WORK/m2" -o "region=x"
expect_line "an unknown scheme: the schemes there are" \
	"expected s3://BUCKET\[/PREFIX\], oss://BUCKET\[/PREFIX\], file:///DIR, http\[s\]://HOST\[:PORT\]/PATH/, hf://ORG/MODEL" "gs://models" "$WORK/m2"
mkdir -p "$WORK/www/html"
echo '<html>hello</html>' >"$WORK/www/html/index.html"
expect_line "http:// of a server with neither a manifest nor a JSON index" \
	"has no modelfs-manifest.json and its index is not JSON" \
	"http://127.0.0.1:$NGINX_PORT/html/" "$WORK/m2" -o "cache_dir=$WORK/c3"
expect_line "http:// behind a token, without one" "give a bearer token with -o token_file=PATH" \
	"http://127.0.0.1:$NGINX_PORT/private/" "$WORK/m2" -o "cache_dir=$WORK/c4"
echo wrong >"$WORK/token-bad"
expect_line "http:// with a wrong token" "the token (token_file=) is refused" \
	"http://127.0.0.1:$NGINX_PORT/private/" "$WORK/m2" -o "cache_dir=$WORK/c4,token_file=$WORK/token-bad"
expect_line "hf:// of a gated model without a token" "model 'org1/gated' is gated: ask for access" \
	hf://org1/gated "$WORK/m2" -o "cache_dir=$WORK/c6,endpoint=$HUB"
echo hf_othertoken >"$WORK/hf-token"
expect_line "hf:// of a gated model with a token without access" "the token given has no access yet" \
	hf://org1/gated "$WORK/m2" -o "cache_dir=$WORK/c6,endpoint=$HUB,token_file=$WORK/hf-token"
expect_line "hf:// of a missing model" "model 'org1/nothere' not found on $HUB" \
	hf://org1/nothere "$WORK/m2" -o "cache_dir=$WORK/c6,endpoint=$HUB"
expect_line "hf:// of a missing revision" "revision 'v9' not found in model 'org1/llama'" \
	hf://org1/llama@v9 "$WORK/m2" -o "cache_dir=$WORK/c6,endpoint=$HUB"
expect_line "hf:// with a bad repository name" "expected hf://ORG/MODEL" hf://just-a-name "$WORK/m2"
expect_line "http:// of a missing directory" "HTTP 404" \
	"http://127.0.0.1:$NGINX_PORT/nothing/" "$WORK/m2" -o "cache_dir=$WORK/c5"
EXPECT_ENV="OSS_ACCESS_KEY_SECRET=wrong" expect_line "oss://: a wrong secret (OSS's Code and RequestId)" \
	"SignatureDoesNotMatch.*RequestId" oss://models/llama \
	"$WORK/m2" -o "cache_dir=$WORK/c2,$OSS_EP"
expect_line "oss://: a missing bucket" "bucket 'nosuch' does not exist.*NoSuchBucket" \
	oss://nosuch "$WORK/m2" -o "cache_dir=$WORK/c2,$OSS_EP"
expect_line "oss://: a region that is not the bucket's" "SignatureDoesNotMatch.*region" \
	oss://models "$WORK/m2" -o "cache_dir=$WORK/c2,endpoint=http://127.0.0.1:$OSS_PORT,region=cn-beijing"
expect_line "oss://: an endpoint with a path" "without a path" \
	oss://models "$WORK/m2" -o "cache_dir=$WORK/c2,endpoint=http://127.0.0.1:$OSS_PORT/gw,region=x"
expect_line "oss://: no region to sign with" "set -o region=NAME" \
	oss://models "$WORK/m2" -o "cache_dir=$WORK/c2,endpoint=http://127.0.0.1:$OSS_PORT"
chmod 644 "$WORK/passwd-ossfs"
EXPECT_ENV="-u OSS_ACCESS_KEY_ID -u OSS_ACCESS_KEY_SECRET" expect_line \
	"oss://: a passwd file others may read" "mode 0644: others may read the keys" oss://models "$WORK/m2" \
	-o "cache_dir=$WORK/c2,$OSS_EP,passwd_file=$WORK/passwd-ossfs"
expect_line "oss://: keys on the command line are refused" "not accepted on the command line" \
	oss://models "$WORK/m2" -o "$OSS_EP,akSecret=s3cr3t"
oss_down
OSSFAKE_SKEW=3600 oss_up
expect_line "oss://: a clock an hour off" "RequestTimeTooSkewed" \
	oss://models "$WORK/m2" -o "cache_dir=$WORK/c2,$OSS_EP"
oss_down
finish
