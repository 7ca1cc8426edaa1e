#!/usr/bin/env bash
# The main job, end to end on one machine: install and build everything, start
# a local S3 server (s3rver on 127.0.0.1), upload a generated safetensors model,
# mount it with modelfs, load it through the mount and check every byte.
#   scripts/demo.sh              a 512 MiB model in 4 shards
#   MODEL_MIB=4096 scripts/demo.sh
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL_MIB=${MODEL_MIB:-512}
WORK=${WORK:-/var/tmp/modelfs-demo}
PORT=${PORT:-9000}

say() { printf '\n== %s\n' "$*"; }
say "installing dependencies and building"
scripts/deps.sh
scripts/build.sh build
mkdir -p "$WORK/mnt"

S3PID=""
cleanup() {
	mountpoint -q "$WORK/mnt" && fusermount3 -u "$WORK/mnt"
	[ -n "$S3PID" ] && kill "$S3PID" 2>/dev/null
	true
}
trap cleanup EXIT

say "generating a $MODEL_MIB MiB sample model in $WORK/model"
if [ ! -f "$WORK/model.sha256" ] || [ "$(cat "$WORK/model.size" 2>/dev/null)" != "$MODEL_MIB" ]; then
	rm -rf "$WORK/model" "$WORK/s3"
	python3 scripts/make_model.py "$WORK/model" "$MODEL_MIB" 4
	(cd "$WORK/model" && sha256sum ./*) >"$WORK/model.sha256"
	echo "$MODEL_MIB" >"$WORK/model.size"
fi
ls -l "$WORK/model"

say "starting s3rver on 127.0.0.1:$PORT and uploading to s3://models/llama-demo"
mkdir -p "$WORK/s3"
NODE_OPTIONS=--openssl-legacy-provider setsid /opt/s3rver/node_modules/.bin/s3rver \
	-d "$WORK/s3" -a 127.0.0.1 -p "$PORT" -s --configure-bucket models >"$WORK/s3rver.log" 2>&1 </dev/null &
S3PID=$!
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
export S3_ENDPOINT=http://127.0.0.1:$PORT S3_KEY=S3RVER S3_SECRET=S3RVER
export AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
t0=$(date +%s.%N)
python3 tests/integration/s3tool.py putdir models llama-demo "$WORK/model"
echo "uploaded in $(awk -v a="$t0" -v b="$(date +%s.%N)" 'BEGIN{printf "%.1f", b-a}') s"

CACHE=$WORK/cache
rm -rf "$CACHE"
OPTS="endpoint=$S3_ENDPOINT,cache_dir=$CACHE,cache_size=4G"
say "mounting: build/modelfs s3://models/llama-demo $WORK/mnt -o $OPTS"
build/modelfs s3://models/llama-demo "$WORK/mnt" -o "$OPTS"
mount | grep " $WORK/mnt "
ls -l "$WORK/mnt"
df -h "$WORK/mnt"

say "cold load: from the object store (page cache dropped)"
sync; echo 3 >/proc/sys/vm/drop_caches
python3 scripts/load_model.py "$WORK/mnt"
say "hot load: again at once, from the kernel page cache"
python3 scripts/load_model.py "$WORK/mnt"
say "warm load: page cache dropped, from the local chunk cache"
sync; echo 3 >/proc/sys/vm/drop_caches
python3 scripts/load_model.py "$WORK/mnt"
build/modelfs cache stat "$CACHE"

say "checking every file's sha256 against the source"
(cd "$WORK/mnt" && sha256sum -c --quiet "$WORK/model.sha256") && echo "all $(wc -l <"$WORK/model.sha256") files match"

say "restart with the object store down: unmount, stop s3rver, mount again, load"
fusermount3 -u "$WORK/mnt"
kill "$S3PID"; wait "$S3PID" 2>/dev/null || true; S3PID=""
build/modelfs s3://models/llama-demo "$WORK/mnt" -o "$OPTS"
sync; echo 3 >/proc/sys/vm/drop_caches
python3 scripts/load_model.py "$WORK/mnt"
(cd "$WORK/mnt" && sha256sum -c --quiet "$WORK/model.sha256") && echo "all $(wc -l <"$WORK/model.sha256") files match, served from the cache alone"

say "unmounting"
fusermount3 -u "$WORK/mnt"
echo "done"
