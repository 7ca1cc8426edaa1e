# shellcheck shell=bash
# Shared setup of the project's benchmark scripts (sourced): a deterministic
# model in $W/model (made once per size), s3rver on 127.0.0.1:$PORT serving it
# as s3://models/bench, a mountpoint $W/mnt, and cleanup of what was started.
# Callers set SIZE_MIB, W and PORT, then call bench_setup.
BIN=$PWD/build/modelfs
S3PID=""
bench_cleanup() {
	mountpoint -q "$W/mnt" && fusermount3 -u "$W/mnt"
	[ -n "$S3PID" ] && kill "$S3PID" 2>/dev/null
	true
}
now() { date +%s.%N; }
secs() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", b - a }'; }
mbps() { awk -v n="$1" -v a="$2" -v b="$3" 'BEGIN { printf "%.0f", n / 1e6 / (b - a) }'; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

bench_setup() {
	local fresh=0
	mkdir -p "$W/mnt"
	trap bench_cleanup EXIT
	if [ ! -f "$W/model.size" ] || [ "$(cat "$W/model.size")" != "$SIZE_MIB" ]; then
		rm -rf "$W/model" "$W/s3"
		python3 scripts/make_model.py "$W/model" "$SIZE_MIB" 4
		echo "$SIZE_MIB" >"$W/model.size"
		fresh=1
	fi
	mkdir -p "$W/s3"
	NODE_OPTIONS=--openssl-legacy-provider setsid /opt/s3rver/node_modules/.bin/s3rver \
		-d "$W/s3" -a 127.0.0.1 -p "$PORT" -s --configure-bucket models \
		>"$W/s3rver.log" 2>&1 </dev/null &
	S3PID=$!
	for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done
	export S3_ENDPOINT=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=S3RVER AWS_SECRET_ACCESS_KEY=S3RVER
	if [ "$fresh" = 1 ]; then
		python3 tests/integration/s3tool.py putdir models bench "$W/model"
	fi
}
