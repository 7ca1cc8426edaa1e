#!/usr/bin/env bash
# What an upgrade and a crash cost the readers: a file:// mount with a warm
# disk cache and no passthrough (every read reaches the daemon), a sha256
# reader of a SIZE MiB file and an mmap reader, each printing its slowest
# read. Three phases of the same length, in one run: nothing happens (the
# baseline), five `modelfs upgrade` (their "N ms without answers"), five
# kill -9 of the daemon (the time from the kill to the new daemon's "took
# over" line). A benchmark, not a test: it prints figures.
#
#   sudo MODELFS=build/modelfs tests/bench/upgrade.sh [SIZE_MIB]     (default 1024)
set -u
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
MODELFS=${MODELFS:-$ROOT/build/modelfs}
SIZE=${1:-1024}
source "$ROOT/tests/integration/lib.sh" "$MODELFS" >/dev/null
SRC=$WORK/src
MNT=$WORK/mnt
mkdir -p "$SRC"
head -c $((SIZE << 20)) /dev/urandom >"$SRC/big.bin"
head -c $((48 << 20)) /dev/urandom >"$SRC/model.safetensors"
SHA=$(sha256sum <"$SRC/big.bin" | cut -c1-64)
mount_fs "file://$SRC" "$MNT" "no_passthrough,cache_dir=$WORK/cache" || exit 1
cat "$MNT/big.bin" "$MNT/model.safetensors" >/dev/null
daemon_of() {
	local h c
	h=$(getfattr --only-values -n user.modelfs.holder "$MNT" 2>/dev/null | cut -d. -f2)
	c=$(pgrep -P "$h" | head -1)
	echo "${c:-$(ps -o ppid= -p "$h" | tr -d ' ')}"
}
ms() { date +%s%3N; }

phase() { # NAME ACTION: readers for 5 rounds of ACTION (or a sleep) 2 s apart
	local name=$1 action=$2 i out
	rm -f "$WORK/stop"
	python3 "$ROOT/tests/integration/reader.py" seq "$MNT/big.bin" "$SHA" "$WORK/stop" >"$WORK/seq.out" &
	local r1=$!
	python3 "$ROOT/tests/integration/reader.py" mmap "$MNT/model.safetensors" "$SRC/model.safetensors" "$WORK/stop" >"$WORK/mmap.out" &
	local r2=$!
	sleep 1
	NOTES=""
	for i in 1 2 3 4 5; do
		case $action in
		none) sleep 0.1 ;;
		upgrade)
			out=$("$MODELFS" upgrade "$MNT" 2>&1)
			NOTES="$NOTES $(echo "$out" | grep -o '[0-9]* ms without' | cut -d' ' -f1)" ;;
		kill)
			local before t0 t1 d
			before=$(grep -c "took over" "$WORK/mnt.log")
			d=$(daemon_of)
			t0=$(ms)
			kill -9 "$d"
			while [ "$(grep -c "took over" "$WORK/mnt.log")" -le "$before" ]; do sleep 0.002; done
			t1=$(ms)
			NOTES="$NOTES $((t1 - t0))" ;;
		esac
		sleep 2
	done
	touch "$WORK/stop"
	wait $r1 $r2
	printf '%-10s %-42s %-42s %s\n' "$name" "$(cut -d' ' -f1-3 "$WORK/seq.out")" \
		"$(cut -d' ' -f1-3 "$WORK/mmap.out")" "${NOTES:- -}"
}

echo "modelfs upgrade/crash: $SIZE MiB file:// from a warm disk cache, no passthrough, $(nproc) CPUs"
printf '%-10s %-42s %-42s %s\n' phase "sha256 reader (1 MiB reads)" "mmap reader (4 KiB pages)" "per event, ms"
phase baseline none
phase upgrade upgrade
phase "kill -9" kill
echo "(upgrade: what modelfs upgrade said, 'ms without answers'; kill -9: from the kill to the new daemon's 'took over' line; the 4th and 5th crash within a minute wait 1 and 2 s by design)"
umount_fs "$MNT"
