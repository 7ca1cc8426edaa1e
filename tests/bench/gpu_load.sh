#!/usr/bin/env bash
# Cold, warm and hot model loads on a GPU machine, one run, printed as a table (issue 13).
#
#   sudo tests/bench/gpu_load.sh [-H HARNESS] [-b NAME=BINARY]... [-o OUT] [ROWS...]
#
# The model (SIZE_GIB GiB of bf16 in NSHARDS safetensors shards, made by HARNESS/gen_model.py)
# lives in RAM (/dev/shm), served by HARNESS/s3srv.py, so the store is faster than the cache
# disk. Rows (default: all):
#   limit       parallel 64 MiB ranged GETs with curl (16 at once): the store's limit
#   local       the same readers on the model's local files: page cache (hot) and, for warm,
#               a copy on the cache disk with the page cache dropped
#   disk        modelfs cold, cache on the disk (W, default /var/tmp/mfsgpu)
#   ram         modelfs cold, cache in RAM (/dev/shm)
#   nocache     modelfs no_cache
#   warm        modelfs after a remount, cache full, page cache dropped (passthrough)
#   hot         modelfs, page cache full
# Readers per row: cat1 (one cat of all shards), cat4 (one cat per shard), mmap (mmap and touch
# every page), st (safetensors.torch.load_file(device="cuda")), fast (HARNESS/load.py's 4-thread
# pinned-buffer loader). st and fast check the tensors against the reference of generation.
# Each cell prints "RESULT row reader seconds GB/s"; the table gives each cell's ratio to the
# limit and to the same reader on the local file. READERS="cat1 cat4" picks readers; each -b
# adds a column set for that binary (default: build/modelfs as "modelfs"). MODELFS_* variables
# (e.g. MODELFS_MAX_PAGES) pass through to the daemon. KEEP=1 keeps the model in RAM for the
# next run with KEEP=1.
#
# HARNESS defaults to ../shared/bench/gpu, or .gpu when ../shared/bench/gpu/pack.sh laid the
# harness out there (a GPU machine gets the checkout only). Needs root (mounts, drop_caches),
# python3, curl; torch and safetensors for st/fast (skipped without a GPU).
set -u
# read DIR with READER; prints nothing, returns non-zero on a failed read
readers() { # READER DIR STATE (run as: gpu_load.sh --reader READER DIR STATE)
	case $1 in
	cat1) cat "$2"/*.safetensors >/dev/null ;;
	cat4) local p=() rc=0 f; for f in "$2"/*.safetensors; do cat "$f" >/dev/null & p+=($!); done
		for f in "${p[@]}"; do wait "$f" || rc=1; done; return $rc ;;
	mmap) python3 - "$2" <<'PY'
import glob, mmap, os, sys
for f in sorted(glob.glob(sys.argv[1] + "/*.safetensors")):
    fd = os.open(f, os.O_RDONLY); n = os.fstat(fd).st_size
    m = mmap.mmap(fd, n, prot=mmap.PROT_READ); s = 0
    for i in range(0, n, 4096):
        s += m[i]
    m.close(); os.close(fd)
PY
	;;
	st|fast) [ "$GPU" = 1 ] || return 3
		(cd "$H" && python3 load.py "$1" "$2" "$3" "$W/load.jsonl" "$W/ref.json" >/dev/null) ;;
	esac
}

if [ "${1:-}" = --reader ]; then
	shift; readers "$@"; exit
fi
cd "$(dirname "$0")/../.."
ROOT=$PWD
H=; OUT=/var/tmp/mfsgpu/out; BINS=()
while getopts "H:b:o:" opt; do
	case $opt in
	H) H=$OPTARG ;;
	b) BINS+=("$OPTARG") ;;
	o) OUT=$OPTARG ;;
	*) sed -n 2,4p "$0" >&2; exit 2 ;;
	esac
done
shift $((OPTIND - 1))
ROWS=${*:-limit local disk ram nocache warm hot}
READERS=${READERS:-cat1 cat4 mmap st fast}
[ -n "$H" ] || { [ -f "$ROOT/.gpu/s3srv.py" ] && H=$ROOT/.gpu || H=$ROOT/../shared/bench/gpu; }
H=$(cd "$H" && pwd) || exit 2
[ "${#BINS[@]}" -gt 0 ] || BINS=("modelfs=$( [ -x "$H/modelfs" ] && echo "$H/modelfs" || echo "$ROOT/build/modelfs")")
[ "$(id -u)" = 0 ] || { echo "gpu_load.sh: needs root (mounts, drop_caches)" >&2; exit 2; }
SIZE_GIB=${SIZE_GIB:-8} NSHARDS=${NSHARDS:-4} W=${W:-/var/tmp/mfsgpu}
mkdir -p "$OUT" "$W/lib"
export PYTHONUNBUFFERED=1 AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench PATH=$H/bin:$PATH
chmod +x "$H"/bin/* 2>/dev/null
# libraries the machine lacks (pack.sh brought them)
for b in "${BINS[@]}"; do
	for m in $(ldd "${b#*=}" 2>/dev/null | awk '/not found/ {print $1}'); do ln -sf "$H/lib-all/$m" "$W/lib/$m"; done
done
MNT=$W/mnt SRV= MP= RES=$OUT/results.txt
: >"$RES"
cleanup() {
	grep -qs " $MNT " /proc/mounts && { umount "$MNT" || umount -l "$MNT"; }
	[ -n "$MP" ] && kill "$MP" 2>/dev/null
	[ -n "$SRV" ] && kill "$SRV" 2>/dev/null
	[ -n "${KEEP:-}" ] || rm -rf /dev/shm/mfsgpu-store
	rm -rf /dev/shm/mfsgpu-cache
}
trap cleanup EXIT
now() { date +%s.%N; }
drop() { sync; echo 3 >/proc/sys/vm/drop_caches; }

GPU=0; python3 -c "import torch, safetensors; assert torch.cuda.is_available()" 2>/dev/null && GPU=1
STORE=/dev/shm/mfsgpu-store; M=$STORE/models
if [ -n "${KEEP:-}" ] && [ -s "$W/model.ok" ] && ls "$M"/*.safetensors >/dev/null 2>&1; then
	: # KEEP=1: the model of the last run with KEEP=1 is still in RAM
elif [ "$GPU" = 1 ]; then
	rm -rf "$STORE"; mkdir -p "$M"
	(cd "$H" && python3 gen_model.py "$M" "$W/ref.json" "$SIZE_GIB" "$NSHARDS") >/dev/null || exit 5
else # no torch here: random shards, for the readers that need no GPU
	rm -rf "$STORE"; mkdir -p "$M"
	for i in $(seq "$NSHARDS"); do
		head -c $((SIZE_GIB * 1024 / NSHARDS))M /dev/urandom >"$M/model-$i.safetensors"
	done
fi
echo "$SIZE_GIB $NSHARDS" >"$W/model.ok"
B=$(stat -c %s "$M"/*.safetensors | awk '{s += $1} END {printf "%d", s}')
echo "model: $NSHARDS shards, $B bytes in RAM; $(nproc) CPUs, $(awk '/MemTotal/ {printf "%.0f GiB", $2 / 2^20}' /proc/meminfo), kernel $(uname -r), GPU $GPU"
rm -f "$W/port"; python3 "$H/s3srv.py" "$STORE" 0 "$W/port" 2>"$W/s3srv.log" & SRV=$!
for _ in $(seq 200); do [ -s "$W/port" ] && break; sleep 0.05; done
PORT=$(cat "$W/port")

result() { # ROW READER T0 T1
	awk -v r="$1" -v d="$2" -v t0="$3" -v t1="$4" -v b="$B" \
		'BEGIN { printf "RESULT %-22s %-5s %7.2f s %6.2f GB/s\n", r, d, t1 - t0, b / 1e9 / (t1 - t0) }' | tee -a "$RES"
}

cell() { # ROW READER DIR STATE [prepare]
	local t0 t1
	[ "${5:-}" = drop ] && drop
	t0=$(now)
	# a reader that hangs is killed, not waited for
	H=$H W=$W GPU=$GPU timeout "${CELL_TIMEOUT:-120}" bash "$ROOT/tests/bench/gpu_load.sh" --reader "$2" "$3" "$4"
	case $? in
	0) t1=$(now); result "$1" "$2" "$t0" "$t1" ;;
	3) ;; # no GPU
	*) echo "RESULT $1 $2 FAILED" | tee -a "$RES" ;;
	esac
}

mount_mfs() { # BINARY CACHE_DIR|"" OPTS
	mkdir -p "$MNT"
	LD_LIBRARY_PATH=$W/lib "$1" s3://models "$MNT" -f -o "endpoint=http://127.0.0.1:$PORT${3:+,$3}${2:+,cache_dir=$2,cache_size=$((SIZE_GIB * 3))G}" 2>"$W/mfs.log" &
	MP=$!
	for _ in $(seq 400); do grep -qs " $MNT " /proc/mounts && return 0; sleep 0.025; done
	cat "$W/mfs.log"; return 1
}
umount_mfs() {
	timeout 30 umount "$MNT" || { echo "umount stuck: lazy, kill -9"; umount -l "$MNT"; kill -9 "$MP"; }
	wait "$MP" 2>/dev/null; MP=
	grep -o 'cache: [0-9].*' "$W/mfs.log" | tail -1 | sed 's/^/  /'
}

for row in $ROWS; do
	case $row in
	limit)
		python3 - "$M" "$PORT" >"$W/ranges" <<'PY'
import os, sys
for f in sorted(os.listdir(sys.argv[1])):
    if f.endswith(".safetensors"):
        n = os.path.getsize(os.path.join(sys.argv[1], f)); s = 64 << 20
        for a in range(0, n, s):
            print(f"http://127.0.0.1:{sys.argv[2]}/models/{f} {a}-{min(n, a + s) - 1}")
PY
		t0=$(now); xargs -P 16 -n 2 sh -c 'curl -s -o /dev/null -r "$1" "$0"' <"$W/ranges"; t1=$(now)
		result limit curl16 "$t0" "$t1" ;;
	local)
		for r in $READERS; do cell "local hot" "$r" "$M" hot; done
		rm -rf "$W/local"; cp -r "$M" "$W/local"
		for r in $READERS; do cell "local warm" "$r" "$W/local" warm drop; done
		rm -rf "$W/local" ;;
	disk|ram|nocache|warm|hot)
		for b in "${BINS[@]}"; do
			name=${b%%=*} bin=${b#*=}
			for r in $READERS; do
				case $row in
				disk) C=$W/cache; O= ;;
				ram) C=/dev/shm/mfsgpu-cache; O= ;;
				nocache) C=; O=no_cache ;;
				warm|hot) C=$W/cache; O= ;;
				esac
				case $row in disk|ram) rm -rf "$C" ;; esac
				if [ "$row" = warm ] || [ "$row" = hot ]; then
					# fill the cache first, with a prefetch: a cat may leave chunks
					# out when the disk is behind (filled in later, by a daemon that
					# lives on; this one is unmounted at once)
					rm -rf "$C"; mount_mfs "$bin" "$C" "$O" || continue
					LD_LIBRARY_PATH=$W/lib "$bin" prefetch --wait --quiet "$MNT" >/dev/null 2>&1; umount_mfs >/dev/null
				fi
				mount_mfs "$bin" "$C" "$O" || continue
				if [ "$row" = hot ]; then cat "$MNT"/*.safetensors >/dev/null; cell "$name $row" "$r" "$MNT" hot
				else cell "$name $row" "$r" "$MNT" "$row" drop; fi
				umount_mfs
				case $row in disk|ram) rm -rf "$C" ;; esac
			done
		done ;;
	*) echo "unknown row $row" >&2 ;;
	esac
done
rm -rf "$W/cache" /dev/shm/mfsgpu-cache
python3 - "$RES" <<'PY' | tee "$OUT/table.md"
import sys
rows = {}
order = []
for line in open(sys.argv[1]):
    p = line.split()
    if len(p) < 6 or p[-1] != "GB/s":
        continue
    rate = float(p[-2]); reader = p[-5]; row = " ".join(p[1:-5])
    rows[(row, reader)] = rate
    if row not in order:
        order.append(row)
limit = rows.get(("limit", "curl16"))
print("| row | reader | GB/s | x limit | x local file |")
print("|---|---|---|---|---|")
for row in order:
    for (r, reader), rate in rows.items():
        if r != row:
            continue
        ref = None
        if not row.startswith("local") and row != "limit":
            ref = rows.get(("local warm" if row.endswith("warm") else "local hot", reader))
        xl = f"{rate / limit:.2f}" if limit else "-"
        xr = f"{rate / ref:.2f}" if ref else "-"
        print(f"| {row} | {reader} | {rate:.2f} | {xl} | {xr} |")
PY
