#!/usr/bin/env bash
# What metrics cost: the daemon's CPU seconds per GiB read through a
# file:// mount without a cache disk (every byte through the daemon, no
# store in the way), without and with metrics_port (scraped every second),
# alternating, in one run. Prints the figures; a benchmark, not a test.
#
#   sudo tests/bench/metrics_cost.sh [SIZE_MIB] [ROUNDS]   (default 2048, 3)
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODELFS=${MODELFS:-$ROOT/build/modelfs}
SIZE=${1:-2048}
ROUNDS=${2:-3}
source "$ROOT/tests/integration/lib.sh" "$MODELFS" >/dev/null
M=$WORK/model
MNT=$WORK/mnt
mkdir -p "$M"
head -c $((SIZE << 20)) /dev/urandom >"$M/model.safetensors"
MP=$(free_port)
cpu_of() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in ticks
HZ=$(getconf CLK_TCK)

run() { # OPTS: prints CPU s/GiB of the daemon and MB/s of the read
	local t0 t1 c0 c1 scraper=
	mount_fs "file://$M" "$MNT" "no_cache,no_passthrough${1:+,$1}" || return 1
	if [ -n "$1" ]; then
		(while :; do curl -s -o /dev/null "http://127.0.0.1:$MP/metrics"; sleep 1; done) &
		scraper=$!
	fi
	drop_caches
	c0=$(cpu_of "$MNT_PID")
	t0=$(date +%s.%N)
	cat "$MNT/model.safetensors" >/dev/null
	t1=$(date +%s.%N)
	c1=$(cpu_of "$MNT_PID")
	[ -n "$scraper" ] && kill "$scraper"
	umount_fs "$MNT"
	awk -v c="$((c1 - c0))" -v hz="$HZ" -v mib="$SIZE" -v t0="$t0" -v t1="$t1" \
		'BEGIN { printf "%.3f %.0f\n", c / hz / (mib / 1024), mib * 1.048576 / (t1 - t0) }'
}

printf '%-8s %-14s %12s %8s\n' round metrics cpu-s/GiB MB/s
run "" >/dev/null # warm-up: the first mount of a run is slower either way
offs=() ons=()
for r in $(seq "$ROUNDS"); do
	read -r off_cpu off_rate < <(run "")
	read -r on_cpu on_rate < <(run "metrics_port=$MP")
	printf '%-8s %-14s %12s %8s\n' "$r" off "$off_cpu" "$off_rate" "$r" "on (1 s scrape)" "$on_cpu" "$on_rate"
	offs+=("$off_cpu")
	ons+=("$on_cpu")
done
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
m_off=$(median "${offs[@]}")
m_on=$(median "${ons[@]}")
awk -v a="$m_off" -v b="$m_on" 'BEGIN { printf "median daemon CPU s/GiB: without %.3f, with metrics %.3f: %+.1f%%\n", a, b, (b / a - 1) * 100 }'
