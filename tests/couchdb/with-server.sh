#!/usr/bin/env bash
# Runs a command with the CouchDB-API test server started on a free loopback port and
# FAXD_TEST_COUCH_URL pointing at it; stops the server afterwards and keeps the command's
# exit status. If FAXD_TEST_COUCH_URL is already set, uses that CouchDB instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"

if [ -n "${FAXD_TEST_COUCH_URL:-}" ]; then
    exec "$@"
fi

portfile="$(mktemp -u /tmp/faxd-couch-XXXXXX)"
node "$here/server.js" --host 127.0.0.1 --port 0 --port-file "$portfile" >/dev/null &
pid=$!
cleanup() {
    kill "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
    rm -f "$portfile"
}
trap cleanup EXIT

for _ in $(seq 1 300); do
    [ -s "$portfile" ] && break
    kill -0 "$pid" 2>/dev/null || { echo "CouchDB-API test server failed to start" >&2; exit 1; }
    sleep 0.1
done
[ -s "$portfile" ] || { echo "CouchDB-API test server did not start within 30 s" >&2; exit 1; }
FAXD_TEST_COUCH_URL="$(cat "$portfile")"
export FAXD_TEST_COUCH_URL
echo "CouchDB-API test server at $FAXD_TEST_COUCH_URL"
set +e
"$@"
status=$?
set -e
exit "$status"
