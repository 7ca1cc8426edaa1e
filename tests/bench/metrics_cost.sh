#!/usr/bin/env bash
# What metrics cost: the daemon's CPU per GiB read with the request metrics
# compiled in and served (metrics_port= scraped every second, metrics_dir=
# written every 2 s) against a build with them compiled out
# (-DMODELFS_BENCH_NO_METRICS=ON), alternating, in one run. A file:// mount
# with a warm disk cache and no passthrough: every byte goes through the
# daemon from its cache, with no store in the way, so the daemon's own work
# per request is all there is to measure. The reader is dd iflag=direct (no
# page cache of the mount, none dropped: the cache's files stay in memory,
# so no disk time varies between runs), with 4 MiB requests (what the
# kernel's readahead sends) and with 128 KiB ones (32 times as many
# requests: the worst case for a per-request cost).
# CPU is utime+stime from /proc (10 ms ticks); where perf counts instructions
# (not in most VMs) their count per GiB is printed too. A benchmark, not a
# test: it prints figures.
#
#   sudo tests/bench/metrics_cost.sh [SIZE_MIB] [ROUNDS]     (default 2048, 5)
#   MODELFS=build/modelfs MODELFS_NOMETRICS=other/modelfs ...   (else built here)
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODELFS=${MODELFS:-$ROOT/build/modelfs}
SIZE=${1:-2048}
ROUNDS=${2:-5}
source "$ROOT/tests/integration/lib.sh" "$MODELFS" >/dev/null
if [ -z "${MODELFS_NOMETRICS:-}" ]; then
	echo "building the comparison binary (-DMODELFS_BENCH_NO_METRICS=ON) in $WORK/nomet"
	cmake -S "$ROOT" -B "$WORK/nomet" -DMODELFS_BENCH_NO_METRICS=ON >/dev/null &&
		make -C "$WORK/nomet" -j"$(nproc)" modelfs >/dev/null || exit 1
	MODELFS_NOMETRICS=$WORK/nomet/modelfs
fi
WITH=$MODELFS
WITHOUT=$(readlink -f "$MODELFS_NOMETRICS")
M=$WORK/model
MNT=$WORK/mnt
mkdir -p "$M" "$WORK/textfile"
python3 - "$M/model.safetensors" "$SIZE" <<'PY'
import os, sys
block = os.urandom(64 << 20)
with open(sys.argv[1], "wb") as f:
    for _ in range(int(sys.argv[2]) // 64):
        f.write(block)
PY
SIZE=$(($(stat -c %s "$M/model.safetensors") >> 20))
MP=$(free_port)
HZ=$(getconf CLK_TCK)
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in ticks
PERF=
perf stat -e instructions -x, true 2>&1 | grep -q '^[0-9]' && PERF=1

run() { # BINARY READER OPTS: prints CPU s/GiB, instructions/GiB (or -), MB/s
	local bin=$1 reader=$2 opts=$3 t0 t1 c0 c1 scraper= perfpid= ins=-
	MODELFS=$bin mount_fs "file://$M" "$MNT" "cache_dir=$WORK/cache,no_passthrough${opts:+,$opts}" ||
		return 1
	if [ -n "$opts" ]; then
		(while :; do curl -s -o /dev/null "http://127.0.0.1:$MP/metrics"; sleep 1; done) &
		scraper=$!
	fi
	if [ -n "$PERF" ]; then
		perf stat -e instructions -x, -o "$WORK/perf.out" -p "$MNT_PID" 2>/dev/null &
		perfpid=$!
		sleep 0.2
	fi
	c0=$(cpu_of "$MNT_PID")
	t0=$(date +%s.%N)
	dd if="$MNT/model.safetensors" of=/dev/null bs="$reader" iflag=direct status=none
	t1=$(date +%s.%N)
	c1=$(cpu_of "$MNT_PID")
	if [ -n "$perfpid" ]; then
		kill -INT "$perfpid"
		wait "$perfpid" 2>/dev/null
		ins=$(awk -F, '/instructions/ { print $1; exit }' "$WORK/perf.out")
	fi
	[ -n "$scraper" ] && kill "$scraper"
	umount_fs "$MNT"
	awk -v c="$((c1 - c0))" -v hz="$HZ" -v mib="$SIZE" -v t0="$t0" -v t1="$t1" -v ins="$ins" \
		'BEGIN { printf "%.4f %s %.0f\n", c / hz / (mib / 1024),
			 ins == "-" || ins == "" ? "-" : sprintf("%.4g", ins / (mib / 1024)),
			 mib * 1.048576 / (t1 - t0) }'
}

median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }

echo "modelfs metrics cost: $SIZE MiB file:// from a warm disk cache, no passthrough, $ROUNDS rounds, $(nproc) CPUs${PERF:+, perf instructions}"
echo "  with:    $WITH (metrics_port scraped each second, metrics_dir)"
echo "  without: $WITHOUT (request metrics compiled out)"
run "$WITHOUT" 4M "" >/dev/null # fills the cache; the first mount of a run is slower either way
run "$WITHOUT" 4M "" >/dev/null
printf '%-7s %-7s %-8s %11s %14s %8s\n' reader round build cpu-s/GiB instr/GiB MB/s
for reader in 4M 128k; do
	a_cpu=() b_cpu=() a_ins=() b_ins=()
	for r in $(seq "$ROUNDS"); do
		# alternate which goes first: drift over the run falls on both
		if [ $((r % 2)) = 1 ]; then order="without with"; else order="with without"; fi
		for which in $order; do
			if [ "$which" = with ]; then
				read -r cpu ins rate < <(run "$WITH" "$reader" "metrics_port=$MP,metrics_dir=$WORK/textfile")
				a_cpu+=("$cpu"); a_ins+=("$ins")
			else
				read -r cpu ins rate < <(run "$WITHOUT" "$reader" "")
				b_cpu+=("$cpu"); b_ins+=("$ins")
			fi
			printf '%-7s %-7s %-8s %11s %14s %8s\n' "$reader" "$r" "$which" "$cpu" "$ins" "$rate"
		done
	done
	ma=$(median "${a_cpu[@]}")
	mb=$(median "${b_cpu[@]}")
	awk -v a="$ma" -v b="$mb" -v r="$reader" 'BEGIN { printf "%s: median daemon CPU s/GiB: without %.4f, with %.4f: %+.1f%%\n", r, b, a, (b > 0 ? (a / b - 1) * 100 : 0) }'
	if [ -n "$PERF" ]; then
		ia=$(median "${a_ins[@]}")
		ib=$(median "${b_ins[@]}")
		awk -v a="$ia" -v b="$ib" -v r="$reader" 'BEGIN { printf "%s: median daemon instructions/GiB: without %.4g, with %.4g: %+.2f%%\n", r, b, a, (b > 0 ? (a / b - 1) * 100 : 0) }'
	fi
done
