#!/usr/bin/env bash
# API benchmark (figures for the issue notes; nothing asserted): a release node on the embedded
# store, `GET /faxes/outbox` (page of 50) and fax submission by multipart (1-page PDF), with wrk
# (Debian package `wrk`); the node's rate limits are off (wrk is one client address at full
# speed). Usage: rel/bench-api.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
conns="${2:-8}"
faxd="$PWD/target/release/faxd"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ -x "$faxd" ] || { echo "build first: cargo build --release -p faxd-supervisors" >&2; exit 1; }
tmp="$(mktemp -d)"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cport=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
export FAXD_NODE_DATA_DIR="$tmp/var" FAXD_API_LISTEN="127.0.0.1:$port" FAXD_CLUSTER_LISTEN="127.0.0.1:$cport" \
    FAXD_LOG_LEVEL=warn FAXD_API_RATE_LIMIT_ENABLED=false
"$faxd" serve >"$tmp/node.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
api="http://127.0.0.1:$port/v2"

# A one-page PDF (Ghostscript when present, else a minimal hand-written one).
pdf="$tmp/page.pdf"
if command -v ps2pdf >/dev/null; then
    printf '%%!PS\n/Helvetica findfont 24 scalefont setfont 72 700 moveto (faxd benchmark page) show\n72 660 moveto (Lorem ipsum dolor sit amet) show showpage\n' >"$tmp/page.ps"
    ps2pdf "$tmp/page.ps" "$pdf"
else
    printf '%%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\ntrailer<</Root 1 0 R>>\n%%%%EOF\n' >"$pdf"
fi

"$faxd" sup crossbar_maintenance create_account Bench bench.example.com boss benchpw >/dev/null
creds=$(printf '%s' 'boss:benchpw' | md5sum | cut -d' ' -f1)
login=$(curl -s -X PUT "$api/user_auth" -d "{\"data\":{\"credentials\":\"$creds\",\"account_name\":\"Bench\"}}")
token=$(printf '%s' "$login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["auth_token"])')
account=$(printf '%s' "$login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["account_id"])')

# 200 faxes in the outbox: submitted, then cancelled (a cancelled fax is kept in the outbox).
for i in $(seq 1 200); do
    id=$(curl -s -X PUT "$api/accounts/$account/faxes" -H "X-Auth-Token: $token" -H 'Content-Type: multipart/mixed' \
        -F 'json={"data":{"from_number":"+14155550100","to_number":"+14155550199"}};type=application/json' \
        -F "file=@$pdf;type=application/pdf" | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
    curl -s -o /dev/null -X DELETE "$api/accounts/$account/faxes/outgoing/$id" -H "X-Auth-Token: $token"
done

echo "== GET /faxes/outbox?page_size=50 (200 faxes in the outbox), $conns connections, ${secs}s"
wrk -t2 -c"$conns" -d"${secs}s" --latency -H "X-Auth-Token: $token" \
    "$api/accounts/$account/faxes/outbox?page_size=50"

cat >"$tmp/submit.lua" <<LUA
wrk.method = "PUT"
wrk.headers["X-Auth-Token"] = "$token"
wrk.headers["Content-Type"] = "multipart/mixed; boundary=b3nchB0undary"
local f = assert(io.open("$pdf", "rb"))
local pdf = f:read("*a")
f:close()
wrk.body = "--b3nchB0undary\r\nContent-Type: application/json\r\n\r\n"
  .. '{"data":{"from_number":"+14155550100","to_number":"+14155550199"}}'
  .. "\r\n--b3nchB0undary\r\nContent-Type: application/pdf\r\n\r\n" .. pdf .. "\r\n--b3nchB0undary--\r\n"
LUA
echo "== PUT /faxes multipart (1-page PDF, $(wc -c <"$pdf") bytes), $conns connections, ${secs}s"
wrk -t2 -c"$conns" -d"${secs}s" --latency -s "$tmp/submit.lua" "$api/accounts/$account/faxes"
