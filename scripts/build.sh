#!/usr/bin/env bash
# Configure and build into DIR (default build/) with -Werror; extra arguments
# go to cmake, e.g. scripts/build.sh build-asan -DMODELFS_SANITIZE=address,undefined
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-build}
shift || true
cmake -S . -B "$dir" -DMODELFS_WERROR=ON "$@" >/dev/null
cmake --build "$dir" -j"$(nproc)" >/dev/null
