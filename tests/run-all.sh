#!/usr/bin/env bash
# run-all.sh -- the one test command: installs what the tests need (Debian 12, as root), builds with
# warnings as errors, and runs every tier through ctest, which starts and stops the services.
# Usage: tests/run-all.sh [--sanitize] [ctest args...]   (e.g. -L unit, -R lifecycle)
set -euo pipefail
cd "$(dirname "$0")/.."

BUILD=build
CMAKE_ARGS=(-DCSPDNS_WERROR=ON)
if [[ "${1:-}" == "--sanitize" ]]; then
    shift
    BUILD=build-asan
    CMAKE_ARGS+=(-DCSPDNS_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug)
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
fi

tests/install-deps.sh

cmake -S . -B "$BUILD" "${CMAKE_ARGS[@]}"
cmake --build "$BUILD" -j "$(nproc)"
ctest --test-dir "$BUILD" --output-on-failure "$@"
