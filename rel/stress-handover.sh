#!/bin/sh
# Stress run of the outbound queue handover: runs the cluster test
# `a_paused_owner_hands_over_without_exceeding_the_limit` RUNS times in a row (default 20)
# while two bounded CPU burners keep both cores busy, and stops at the first failure.
# The burners end with the script (and after BURN_SECS in any case).
#
#   rel/stress-handover.sh [RUNS]        BURN_SECS=1800 by default
set -eu
runs=${1:-20}
burn_secs=${BURN_SECS:-1800}
test=a_paused_owner_hands_over_without_exceeding_the_limit
cd "$(dirname "$0")/.."
log=$(mktemp)
burners=""
cleanup() {
    for pid in $burners; do kill "$pid" 2>/dev/null || true; done
    rm -f "$log"
}
trap cleanup EXIT INT TERM

cargo test -q -p faxd-supervisors --test cluster_outbound --no-run

for _ in 1 2; do
    timeout "$burn_secs" sh -c 'while :; do :; done' &
    burners="$burners $!"
done
echo "CPU burners:$burners (bounded to ${burn_secs}s)"

i=1
while [ "$i" -le "$runs" ]; do
    start=$(date +%s)
    if cargo test -q -p faxd-supervisors --test cluster_outbound -- --exact "$test" \
        --nocapture >"$log" 2>&1; then
        most=$(grep -o 'at most [0-9]* of [0-9]* transmissions' "$log" || echo '?')
        echo "run $i/$runs: ok in $(($(date +%s) - start))s, $most at once"
    else
        echo "run $i/$runs: FAILED after $(($(date +%s) - start))s"
        grep -E 'panicked|transmissions at once|assert' "$log" | head -20
        exit 1
    fi
    i=$((i + 1))
done
echo "$runs runs in a row passed with both cores busy"
