#!/usr/bin/env bash
# Metrics and health (metrics_port=, metrics_dir=): a real Prometheus
# (Debian's) scrapes a live mount every second while a model is read through
# it, and its HTTP API gives a finite P99 of the read and store latencies; the
# bytes counters match the bytes read, by origin too; Prometheus runs every
# expression of the Grafana dashboard; `modelfs stats` prints the figures;
# promtool accepts /metrics; /readyz follows the prefetch; /healthz turns 503
# while the session is wedged (every worker held by a stalled store) and 200
# again after; two mounts on one cache write two textfiles that a real
# node_exporter serves in one scrape, gone after unmount; per-model series;
# every metric the dashboard names is exported; bad metrics options fail the
# mount with a line.
source "$(dirname "$0")/lib.sh"

MNT=$WORK/mnt
M=$WORK/model
mkdir -p "$M"
head -c $((48 << 20)) /dev/urandom >"$M/a.safetensors"
head -c $((16 << 20)) /dev/urandom >"$M/b.bin"
s3_start s3
$S3TOOL mb models
$S3TOOL putdir models m "$M" || exit 1
proxy_start
MP=$(free_port)
metric() { # NAME_AND_LABELS: the value of one series of /metrics
	curl -s "http://127.0.0.1:$MP/metrics" | awk -v k="$1" 'index($0, k) == 1 { print $NF; exit }'
}
code() { curl -s -o /dev/null -w '%{http_code}' --max-time 5 "http://127.0.0.1:$MP/$1"; }

# --- 1. Prometheus scrapes while the model is read
if ! command -v prometheus >/dev/null; then
	echo "FAIL - prometheus is not installed (scripts/deps.sh installs it)"
	exit 1
fi
S3_ENDPOINT=$PROXY_ENDPOINT mount_fs s3://models/m "$MNT" \
	"cache_dir=$WORK/c1,chunk_size=1M,no_passthrough,metrics_port=$MP" || exit 1
PP=$(free_port)
cat >"$WORK/prom.yml" <<EOF
global: {scrape_interval: 1s, evaluation_interval: 1s}
scrape_configs:
  - job_name: modelfs
    static_configs: [{targets: ["127.0.0.1:$MP"]}]
EOF
prometheus --config.file="$WORK/prom.yml" --storage.tsdb.path="$WORK/prom" \
	--web.listen-address="127.0.0.1:$PP" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
PQ="http://127.0.0.1:$PP/api/v1/query"
up=0
for _ in $(seq 150); do
	curl -s "$PQ" --data-urlencode 'query=up{job="modelfs"}' | grep -q '"value":\[[0-9.]*,"1"\]' && { up=1; break; }
	sleep 0.2
done
check "Prometheus scrapes the mount's /metrics (up == 1)" [ "$up" = 1 ]
read_bytes=0
for i in 1 2 3 4 5; do # spread over scrapes: rate() needs samples that grow
	drop_caches
	cat "$MNT/a.safetensors" "$MNT/b.bin" >/dev/null
	read_bytes=$((read_bytes + (64 << 20)))
	sleep 0.8
done
sleep 2.5
p99=$(curl -s "$PQ" --data-urlencode \
	'query=histogram_quantile(0.99, sum by (le) (rate(modelfs_fuse_operation_duration_seconds_bucket{op="read"}[30s])))' |
	python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")')
check_all "Prometheus: histogram_quantile(0.99, rate(read latency buckets[30s])) is finite ($p99 s)" \
	'python3 -c "import math,sys; v=float(sys.argv[1]); sys.exit(not (math.isfinite(v) and v > 0))" "$p99"'
got=$(metric 'modelfs_fuse_read_bytes_total{')
check_all "bytes answered to reads ($got) match the bytes read ($read_bytes; readahead allowed: +5%)" \
	'[ "$got" -ge "$read_bytes" ] && [ "$got" -le $((read_bytes + read_bytes / 20)) ]'
fetched=$(metric 'modelfs_backend_bytes_total{')
check "bytes fetched from the store ($fetched) are the model's, once (64 MiB)" [ "$fetched" -eq $((64 << 20)) ]
by_origin=0
for o in memory disk store; do
	v=$(metric 'modelfs_read_bytes_total{mount="'"$MNT"'",source="s3://models/m",origin="'$o'"}')
	by_origin=$((by_origin + ${v:-0}))
done
check "bytes served by origin (memory + disk + store = $by_origin) add up to the bytes answered ($got)" \
	[ "$by_origin" -eq "$got" ]
gets=$(metric 'modelfs_backend_http_requests_total{mount="'"$MNT"'",source="s3://models/m",op="read",status_class="2xx"}')
reads_ok=$(metric 'modelfs_backend_operations_total{mount="'"$MNT"'",source="s3://models/m",op="read",result="ok"}')
store_p99=$(curl -s "$PQ" --data-urlencode \
	'query=histogram_quantile(0.99, sum by (le) (rate(modelfs_backend_operation_duration_seconds_bucket{op="read"}[30s])))' |
	python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(r[0]["value"][1] if r else "none")')
getfattr -n user.no.such "$MNT/a.safetensors" >/dev/null 2>&1
enodata=$(metric 'modelfs_fuse_errors_total{mount="'"$MNT"'",source="s3://models/m",op="xattr",errno="ENODATA"}')
check "FUSE errors by errno: a getxattr of a missing name counts as ENODATA ($enodata)" [ "${enodata:-0}" -ge 1 ]
objs=$(metric 'modelfs_cache_objects{')
check "the cache's objects ($objs): the model's two files" [ "${objs:-0}" -eq 2 ]
check_all "the store's figures: $gets HTTP 2xx for reads, $reads_ok reads ok, read P99 $store_p99 s (Prometheus)" \
	'[ "${gets:-0}" -gt 0 ] && [ "${reads_ok:-0}" -gt 0 ] && python3 -c "import math,sys; v=float(sys.argv[1]); sys.exit(not (math.isfinite(v) and v > 0))" "$store_p99"'
# the dashboard: every metric its PromQL names is exported, and Prometheus
# runs every expression without an error
DASH=$(dirname "$0")/../../docs/grafana/modelfs.json
python3 - "$DASH" >"$WORK/dash.exprs" <<'PY'
import json, sys
d = json.load(open(sys.argv[1]))
for p in d["panels"]:
    for t in p.get("targets", []):
        print(t["expr"].replace("$mount", ".+").replace("$__rate_interval", "30s"))
PY
n_expr=$(wc -l <"$WORK/dash.exprs")
bad_expr=0
while IFS= read -r e; do
	curl -s "$PQ" --data-urlencode "query=$e" | grep -q '"status":"success"' ||
		{ bad_expr=$((bad_expr + 1)); echo "  Prometheus refused: $e"; }
done <"$WORK/dash.exprs"
check_all "Prometheus runs all $n_expr of the dashboard's expressions ($bad_expr refused)" \
	'[ "$n_expr" -ge 20 ] && [ "$bad_expr" = 0 ]'
out=$("$MODELFS" stats "$MNT")
echo "$out" | sed 's/^/  | /'
check_all "modelfs stats prints the mount's figures (reads, served, cache, store, prefetch, daemon)" \
	'echo "$out" | grep -Eq "^  reads +[1-9][0-9]* answered" && echo "$out" | grep -q "^  served    memory" && echo "$out" | grep -q "^  store     reads [1-9]" && echo "$out" | grep -q "^  prefetch  ready" && echo "$out" | grep -q "^  daemon    RSS"'
(for _ in 1 2 3 4; do drop_caches; cat "$MNT/a.safetensors" >/dev/null; done) &
bg=$!
wout=$(timeout 20 "$MODELFS" stats "$MNT" --watch 0.5 -n 3)
wait "$bg"
echo "$wout" | sed 's/^/  | /'
check_all "modelfs stats --watch 0.5 -n 3: a header and 3 lines of rates, reads seen" \
	'[ "$(echo "$wout" | wc -l)" -eq 4 ] && echo "$wout" | head -1 | grep -q "read MB/s" && echo "$wout" | tail -3 | awk "\$2 > 0 { n++ } END { exit !n }"'
check "modelfs stats of a directory that is no mount: one line, exit 1" \
	bash -c "! '$MODELFS' stats '$WORK' 2>'$WORK/stats.err' && [ \$(wc -l <'$WORK/stats.err') -eq 1 ]"
mem=$(metric 'modelfs_cache_chunk_reads_total{mount="'"$MNT"'",source="s3://models/m",origin="memory"}')
disk=$(metric 'modelfs_cache_chunk_reads_total{mount="'"$MNT"'",source="s3://models/m",origin="disk"}')
check "later reads came from the cache ($mem chunk reads from memory, $disk from disk)" \
	[ $((${mem:-0} + ${disk:-0})) -gt 0 ]
curl -s "http://127.0.0.1:$MP/metrics" >"$WORK/metrics.txt"
check "promtool check metrics accepts /metrics" bash -c "promtool check metrics <'$WORK/metrics.txt'"
check_all "every series carries the mount and source labels" \
	'! grep -v "^#" "$WORK/metrics.txt" | grep -v "mount=\"$MNT\",source=\"s3://models/m\"" | grep -q .'
check "modelfs_build_info names the version" grep -q 'modelfs_build_info{.*version="' "$WORK/metrics.txt"
check "/healthz: 200 on a live mount" [ "$(code healthz)" = 200 ]
umount_fs "$MNT"
check "after unmount the metrics port is closed" [ "$(code metrics)" = 000 ]

# --- 2. /readyz follows the prefetch (its GETs held 3 s by the store)
curl -s "$PROXY_ENDPOINT/__fault?mode=stall&count=-1&delay=3&key=a.safetensors" >/dev/null
rm -f "$WORK/ready"
S3_ENDPOINT=$PROXY_ENDPOINT mount_fs s3://models/m "$MNT" \
	"cache_dir=$WORK/c2,metrics_port=$MP,prefetch=*,ready_file=$WORK/ready" || exit 1
before=$(code readyz)
for _ in $(seq 300); do [ -e "$WORK/ready" ] && break; sleep 0.1; done
after=$(code readyz)
check "/readyz: 503 while the prefetch runs, 200 once it is done ($before -> $after)" \
	[ "$before" = 503 ] && [ "$after" = 200 ]
check "modelfs_ready is 1 once ready" [ "$(metric 'modelfs_ready{')" = 1 ]
curl -s "$PROXY_ENDPOINT/__fault?mode=none" >/dev/null
umount_fs "$MNT"

# --- 3. /healthz when the session is wedged: every FUSE worker waits on a
# store that holds its GETs for 15 s, so the heartbeat's statfs is not answered
S3_ENDPOINT=$PROXY_ENDPOINT mount_fs s3://models/m "$MNT" "no_cache,metrics_port=$MP,request_timeout=60" || exit 1
proxy_fault stall -1 15 >/dev/null
readers=()
for k in $(seq 0 79); do
	dd if="$MNT/a.safetensors" of=/dev/null bs=4096 count=1 skip=$((k * 150)) iflag=direct \
		status=none 2>/dev/null &
	readers+=($!)
done
wedged=
for _ in $(seq 40); do
	[ "$(code healthz)" = 503 ] && { wedged=1; break; }
	sleep 0.5
done
check "/healthz: 503 while every worker is held by a stalled store" [ -n "$wedged" ]
proxy_fault none >/dev/null
for p in "${readers[@]}"; do timeout 60 tail --pid="$p" -f /dev/null; done
healthy=
for _ in $(seq 40); do
	[ "$(code healthz)" = 200 ] && { healthy=1; break; }
	sleep 0.5
done
check "/healthz: 200 again once the store answers" [ -n "$healthy" ]
umount_fs "$MNT"

# --- 4. textfile mode: two mounts on one cache write one file each into one
# metrics_dir, which a real node_exporter (Debian's) serves; per-model series
TD=$WORK/textfile
MNT2=$WORK/mnt2
mkdir -p "$TD" "$WORK/model2"
head -c $((8 << 20)) /dev/urandom >"$WORK/model2/x.bin"
$S3TOOL putdir models m2 "$WORK/model2" || exit 1
mount_fs s3://models "$MNT" "cache_dir=$WORK/c5,metrics_dir=$TD,metrics_per_model" || exit 1
P1=$MNT_PID
mount_fs s3://models/m "$MNT2" "cache_dir=$WORK/c5,metrics_dir=$TD" || exit 1
P2=$MNT_PID
cat "$MNT/m/a.safetensors" "$MNT/m2/x.bin" "$MNT2/b.bin" >/dev/null
# a write of both files after the reads (METRICS_DIR_PERIOD_S is 2)
for _ in $(seq 100); do
	[ "$(grep -h "^modelfs_model_read_bytes_total{.*model=\"m2\"}" "$TD"/*.prom 2>/dev/null | awk '{print $NF}')" = $((8 << 20)) ] &&
		grep -qs "^modelfs_fuse_read_bytes_total{mount=\"$MNT2\",.*} $((16 << 20))\$" "$TD"/*.prom && break
	sleep 0.1
done
ls "$TD" | sed 's/^/  | /'
proms=("$TD"/modelfs-*.prom)
check "two mounts, two textfiles in metrics_dir (${#proms[@]})" [ "${#proms[@]}" -eq 2 ]
check_all "each textfile names its own mount (mount=\"$MNT\" / mount=\"$MNT2\")" \
	'grep -l "mount=\"$MNT\",source=\"s3://models\"" "$TD"/*.prom | grep -q . && grep -l "mount=\"$MNT2\",source=\"s3://models/m\"" "$TD"/*.prom | grep -q . && [ "$(grep -l "mount=\"$MNT\"," "$TD"/*.prom | wc -l)" -eq 1 ]'
check_all "promtool check metrics accepts each textfile" \
	'for f in "$TD"/*.prom; do promtool check metrics <"$f" || exit 1; done'

NP=$(free_port)
prometheus-node-exporter --collector.disable-defaults --collector.textfile \
	--collector.textfile.directory="$TD" --web.listen-address="127.0.0.1:$NP" \
	>"$WORK/node_exporter.log" 2>&1 &
PIDS+=($!)
node=
for _ in $(seq 100); do
	node=$(curl -s "http://127.0.0.1:$NP/metrics") && [ -n "$node" ] && break
	sleep 0.1
done
echo "$node" >"$WORK/node.txt"
check_all "node_exporter's one scrape has both mounts' series, without a textfile error" \
	'grep -q "^modelfs_fuse_read_bytes_total{mount=\"$MNT\",source=\"s3://models\"}" "$WORK/node.txt" && grep -q "^modelfs_fuse_read_bytes_total{mount=\"$MNT2\",source=\"s3://models/m\"}" "$WORK/node.txt" && grep -q "^node_textfile_scrape_error 0" "$WORK/node.txt"'
mb() { awk -v k="$1" 'index($0, k) == 1 { print $NF; exit }' "$TD"/*.prom; }
m1=$(mb 'modelfs_model_read_bytes_total{mount="'"$MNT"'",source="s3://models",model="m"}')
m2=$(mb 'modelfs_model_read_bytes_total{mount="'"$MNT"'",source="s3://models",model="m2"}')
check_all "metrics_per_model: bytes by model (m $m1 of 48 MiB, m2 $m2 of 8 MiB read)" \
	'[ "${m1:-0}" -eq $((48 << 20)) ] && [ "${m2:-0}" -eq $((8 << 20)) ] && ! grep -q "model=" <(grep "mount=\"$MNT2\"" "$TD"/*.prom)'
# the dashboard names only what the daemon exports (/metrics or the textfile)
python3 - "$DASH" "$WORK/metrics.txt" "$TD"/*.prom >"$WORK/dash.missing" <<'PY'
import json, re, sys
d = json.load(open(sys.argv[1]))
have = set()
for f in sys.argv[2:]:
    for line in open(f):
        if line and not line.startswith("#"):
            have.add(re.split(r"[{ ]", line, 1)[0])
names = set()
for p in d["panels"]:
    for t in p["targets"]:
        names |= set(re.findall(r"\b((?:modelfs|process)_[a-z_]+)\b", t["expr"]))
print(len(names))
for n in sorted(names - have):
    print(n)
PY
check_all "every metric the dashboard's PromQL names is exported ($(head -1 "$WORK/dash.missing") names; missing: $(tail -n +2 "$WORK/dash.missing" | tr '\n' ' '))" \
	'[ "$(wc -l <"$WORK/dash.missing")" -eq 1 ] && [ "$(head -1 "$WORK/dash.missing")" -ge 15 ]'
MNT_PID=$P2 umount_fs "$MNT2"
MNT_PID=$P1 umount_fs "$MNT"
left=$(ls -A "$TD" | wc -l)
check "after both unmounts metrics_dir is empty ($left files left)" [ "$left" -eq 0 ]

# --- 5. bad metrics options: one line, exit 2 (a bad option) or 1 (a port in use), nothing mounted
expect_bad() { # DESCRIPTION PATTERN OPTS
	local out rc pat=$2
	out=$(timeout 20 "$MODELFS" s3://models/m "$MNT" -o "endpoint=$S3_ENDPOINT,cache_dir=$WORK/c4,$3" 2>&1)
	rc=$?
	check_all "$1 (rc $rc: $out)" \
		'[ $rc -ge 1 ] && [ $rc -le 2 ] && [ "$(echo "$out" | wc -l)" -eq 1 ] && echo "$out" | grep -q -- "$pat" && ! mountpoint -q "$MNT"'
	mountpoint -q "$MNT" && fusermount3 -u "$MNT"
}
python3 -c 'import socket,sys,time
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); print("bound", flush=True); time.sleep(30)' "$MP" >"$WORK/holder.out" &
holder=$!
PIDS+=("$holder")
for _ in $(seq 50); do grep -q bound "$WORK/holder.out" && break; sleep 0.1; done
expect_bad "metrics_port in use" "metrics_port $MP on 127.0.0.1 cannot be used: Address already in use" "metrics_port=$MP"
kill "$holder"
expect_bad "metrics_port out of range" "bad value for option metrics_port: '70000'" "metrics_port=70000"
expect_bad "metrics_addr not an address" "metrics_addr 'localhost:x' is not an IP address" \
	"metrics_port=$MP,metrics_addr=localhost:x"
expect_bad "metrics_addr without metrics_port" "metrics_addr= needs metrics_port=PORT" "metrics_addr=0.0.0.0"
expect_bad "metrics_dir missing" "metrics_dir $WORK/none cannot be written: No such file or directory" \
	"metrics_dir=$WORK/none"
touch "$WORK/afile"
expect_bad "metrics_dir a file" "metrics_dir $WORK/afile cannot be written: Not a directory" \
	"metrics_dir=$WORK/afile"

finish
