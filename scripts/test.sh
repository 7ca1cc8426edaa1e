#!/usr/bin/env bash
# Set everything up and run every test: unit and integration tests (real FUSE
# mounts against a real S3 server on 127.0.0.1), first on a normal -Werror
# build, then on an ASan+UBSan build. Needs root (mounts, drop_caches).
#   scripts/test.sh            all of it
#   SANITIZE=0 scripts/test.sh skip the sanitizer pass
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/deps.sh

echo "== build (-Werror)"
scripts/build.sh build
echo "== tests"
(cd build && ctest --output-on-failure)

if [ "${SANITIZE:-1}" = 1 ]; then
	echo "== build (ASan+UBSan, -Werror)"
	scripts/build.sh build-asan -DMODELFS_SANITIZE=address,undefined -DCMAKE_BUILD_TYPE=Debug
	echo "== tests under ASan+UBSan"
	(cd build-asan && ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 \
		UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 ctest --output-on-failure)
fi
