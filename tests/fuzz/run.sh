#!/usr/bin/env bash
# run.sh -- builds the libFuzzer targets with clang and runs each for a bounded time over its
# checked-in corpus. New inputs go to a scratch directory, never into the repository; a crash
# leaves crash-<sha1> under <build>/fuzz-artifacts/<target>/ and fails the run: copy it into
# tests/fuzz/corpus/<target>/ so the replay unit test keeps checking it.
# Usage: tests/fuzz/run.sh [SECONDS_PER_TARGET (default 60)] [BUILD_DIR (default build-fuzz)]
# Must not: write into tests/fuzz/corpus, or run without a time bound.
set -euo pipefail
cd "$(dirname "$0")/../.."

SECONDS_PER_TARGET=${1:-60}
BUILD=${2:-build-fuzz}
TARGETS=(fuzz_cs_event fuzz_json fuzz_dns fuzz_policy)

CC=clang cmake -S . -B "$BUILD" -DCSPDNS_FUZZ=ON -DCSPDNS_WERROR=ON >/dev/null
cmake --build "$BUILD" -j "$(nproc)" --target fuzz

export CSPDNS_RELIABILITY_DIR=${CSPDNS_RELIABILITY_DIR:-$PWD/$BUILD/reliability}
python3 tests/e2e/reliability.py --dir "$CSPDNS_RELIABILITY_DIR" --start fuzz
failed=0
for t in "${TARGETS[@]}"; do
    work="$BUILD/fuzz-work/$t" artifacts="$BUILD/fuzz-artifacts/$t"
    mkdir -p "$work" "$artifacts"
    log="$BUILD/fuzz-artifacts/$t.log"
    echo "== $t: ${SECONDS_PER_TARGET} s"
    rc=0
    # -timeout: one input may take 10 s at most (a hang is a finding too).
    "$BUILD/tests/fuzz/$t" -max_total_time="$SECONDS_PER_TARGET" -timeout=10 -rss_limit_mb=2048 \
        -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" "tests/fuzz/corpus/$t" \
        >"$log" 2>&1 || rc=$?
    runs=$(sed -n 's/^Done \([0-9]*\) runs.*/\1/p' "$log" | tail -1)
    grep -E '^(Done|stat::)' "$log" | head -3 || true
    if [[ $rc -ne 0 ]]; then
        failed=1
        echo "$t FAILED (status $rc); the input is in $artifacts/:"
        tail -40 "$log"
    fi
    python3 tests/e2e/reliability.py --dir "$CSPDNS_RELIABILITY_DIR" --record fuzz \
        "libFuzzer $t, ${SECONDS_PER_TARGET} s (inputs run)" "${runs:-0}" "$((rc != 0))"
done
exit $failed
