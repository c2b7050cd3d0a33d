#!/usr/bin/env bash
# Benchmarks (`make bench`): figures go into the issue notes; nothing here is asserted.
# T30_BENCH_PAGES and T30_BENCH_REALTIME_CALLS size the T.30 part.
# Needs a release build and FAXD_TEST_COUCH_URL (make bench starts the test server).
set -euo pipefail
cd "$(dirname "$0")/.."
faxd=./target/release/faxd
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT

echo "== store writes: 2000 documents, each with a 4 KiB attachment (2 writes per document)"
echo "-- embedded (SQLite, WAL, synchronous=FULL)"
FAXD_NODE_DATA_DIR="$tmp/embedded" "$faxd" store bench --docs 2000 --attachment-bytes 4096 | tail -1
if [ -n "${FAXD_TEST_COUCH_URL:-}" ]; then
    echo "-- couchdb ($FAXD_TEST_COUCH_URL)"
    FAXD_STORE_BACKEND=couchdb FAXD_STORE_COUCH_URL="$FAXD_TEST_COUCH_URL" \
        FAXD_NODE_DATA_DIR="$tmp/couch" "$faxd" store bench --docs 2000 --attachment-bytes 4096 | tail -1
fi

echo "== T.30 loopback (spandsp): CPU per page, accelerated throughput, real-time calls on this machine"
./target/release/examples/t30_bench "${T30_BENCH_PAGES:-4}" "${T30_BENCH_REALTIME_CALLS:-100}"

echo
echo "== outbound scheduler: ${FAXD_BENCH_JOBS:-10000} jobs over 100 accounts, null engine"
echo "-- embedded"
FAXD_NODE_DATA_DIR="$tmp/outbound-embedded" "$faxd" outbound bench --jobs "${FAXD_BENCH_JOBS:-10000}" --accounts 100
if [ -n "${FAXD_TEST_COUCH_URL:-}" ]; then
    echo "-- couchdb ($FAXD_TEST_COUCH_URL)"
    FAXD_STORE_BACKEND=couchdb FAXD_STORE_COUCH_URL="$FAXD_TEST_COUCH_URL" \
        FAXD_NODE_DATA_DIR="$tmp/outbound-couch" "$faxd" outbound bench --jobs "${FAXD_BENCH_JOBS:-10000}" --accounts 100
fi
