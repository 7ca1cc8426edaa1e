#!/usr/bin/env bash
# Build the libFuzzer targets (if needed) and run each for a while.
#
#   tests/fuzz/run.sh [seconds] [target...]
#
# seconds defaults to 30 per target (libFuzzer -max_total_time); targets
# default to all of them. Environment: BUILD_DIR (default build-fuzz at the
# repository root), CC (default clang), FUZZ_ARGS (extra libFuzzer flags).
# Each target fuzzes a working corpus in $BUILD_DIR/fuzz-work/<target>/corpus,
# seeded from tests/fuzz/corpus/<target> (which it never writes); crash, leak,
# timeout and OOM inputs land in $BUILD_DIR/fuzz-work/<target>/artifacts/.
# Prints one line per target: executions and whether it crashed. Exits 1 if
# any target crashed (or failed to run), 0 otherwise.
set -u

here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/../.." && pwd)
build=${BUILD_DIR:-$root/build-fuzz}
secs=${1:-30}
[ $# -gt 0 ] && shift
all_targets="fuzz_s3xml fuzz_tree_load fuzz_creds fuzz_sigv4_query fuzz_uri fuzz_jsonlist"
targets=${*:-$all_targets}

case $secs in
'' | *[!0-9]*) echo "usage: $0 [seconds] [target...]" >&2; exit 2 ;;
esac

if [ ! -f "$build/CMakeCache.txt" ]; then
	cmake -S "$root" -B "$build" -DCMAKE_C_COMPILER="${CC:-clang}" -DMODELFS_FUZZ=ON \
		-DCMAKE_BUILD_TYPE=RelWithDebInfo >/dev/null || exit 1
fi
cmake --build "$build" --target fuzzers -j"$(nproc)" >/dev/null || {
	echo "build failed; run: cmake --build $build --target fuzzers" >&2
	exit 1
}

# Per-target input size limits: big enough for real documents (a listing page
# of a few dozen keys, a snapshot with PATH_MAX paths), small enough to stay fast.
max_len() {
	case $1 in
	fuzz_s3xml | fuzz_tree_load | fuzz_jsonlist) echo 16384 ;;
	fuzz_sigv4_query) echo 8192 ;;
	*) echo 4096 ;;
	esac
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0:symbolize=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

failed=0
printf '%-18s %12s %8s  %s\n' target execs exec/s result
for t in $targets; do
	bin=$(find "$build" -type f -name "$t" -perm -u+x | head -n1)
	work=$build/fuzz-work/$t
	mkdir -p "$work/corpus" "$work/artifacts"
	if [ -z "$bin" ]; then
		printf '%-18s %12s %8s  %s\n' "$t" - - "NOT BUILT"
		failed=1
		continue
	fi
	dict=()
	[ -f "$here/dict/$t.dict" ] && dict=(-dict="$here/dict/$t.dict")
	log=$work/last.log
	# shellcheck disable=SC2086
	"$bin" -max_total_time="$secs" -max_len="$(max_len "$t")" -timeout=10 \
		-rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$work/artifacts/" \
		"${dict[@]}" ${FUZZ_ARGS:-} "$work/corpus" "$here/corpus/$t" >"$log" 2>&1
	rc=$?
	execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
	rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
	if [ -z "$execs" ]; then # a crash ends the run before the final stats
		execs=$(grep -o '^#[0-9]*' "$log" | tail -n1 | tr -d '#')
	fi
	if [ $rc -eq 0 ]; then
		result=ok
	else
		failed=1
		why=$(grep -m1 -E 'ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:|invariant failed' "$log" |
			sed 's/^==[0-9]*==//')
		art=$(sed -n 's/.*Test unit written to //p' "$log" | tail -n1)
		result="CRASHED (rc $rc): ${why:-see log}; input: ${art:-none}; log: $log"
	fi
	printf '%-18s %12s %8s  %s\n' "$t" "${execs:-?}" "${rate:-?}" "$result"
done
exit $failed
