#!/usr/bin/env bash
# API benchmark at provider scale (figures for rel/BENCH.md; nothing asserted). A release node
# whose store holds BENCH_FAXES finished faxes (default 100 000) in BENCH_ACCOUNTS accounts
# (default 100), seeded straight into the store by examples/seed_faxes (loading them through
# the API would take hours); everything measured goes through real HTTP with wrk (Debian
# package `wrk`), client on the same machine:
#   GET /v2/about (the HTTP ceiling), GET …/faxes/outbox/{id}, GET …/faxes/outbox?page_size=50,
#   PUT …/faxes multipart (1-page PDF): accepted/s, then faxes/s reaching `pending`
#   (conversion included), and the node's RSS.
# The node runs the `script` media engine and the bench sends to +15550005xxx (a far end that
# answers and never finishes): queued faxes stay queued, no transmission competes with the API.
# Store: embedded by default; BENCH_STORE=couchdb uses $FAXD_TEST_COUCH_URL (run it under
# tests/couchdb/with-server.sh). The node's rate limits are off (wrk is one client address at
# full speed). The reads run in BENCH_ROUNDS rounds (default 3) of about, single fax, listing:
# each ratio is taken within its round (the machine's speed drifts between runs) and the median
# round is the figure. Usage: rel/bench-api.sh [seconds per run] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
conns="${2:-8}"
accounts="${BENCH_ACCOUNTS:-100}"
faxes="${BENCH_FAXES:-100000}"
store="${BENCH_STORE:-embedded}"
rounds="${BENCH_ROUNDS:-3}"
target="${CARGO_TARGET_DIR:-$PWD/target}"
faxd="$target/release/faxd"
seed="$target/release/examples/seed_faxes"
command -v wrk >/dev/null || { echo "wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ -x "$faxd" ] || { echo "build first: cargo build --release -p faxd-supervisors" >&2; exit 1; }
[ -x "$seed" ] || { echo "build first: cargo build --release -p faxd --example seed_faxes" >&2; exit 1; }
tmp="$(mktemp -d)"
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(free_port)
cport=$(free_port)
export FAXD_NODE_DATA_DIR="$tmp/var" FAXD_API_LISTEN="127.0.0.1:$port" FAXD_CLUSTER_LISTEN="127.0.0.1:$cport" \
    FAXD_LOG_LEVEL=warn FAXD_MEDIA_ENGINE=script FAXD_API_RATE_LIMIT_ENABLED=false
if [ "$store" = couchdb ]; then
    [ -n "${FAXD_TEST_COUCH_URL:-}" ] || { echo "BENCH_STORE=couchdb needs FAXD_TEST_COUCH_URL" >&2; exit 1; }
    export FAXD_STORE_BACKEND=couchdb FAXD_STORE_COUCH_URL="$FAXD_TEST_COUCH_URL"
    seed_to=(--couch "$FAXD_TEST_COUCH_URL")
else
    seed_to=(--data-dir "$tmp/var")
fi

echo "== seeding $faxes faxes in $accounts accounts ($store store)"
start=$(date +%s.%N)
read -r account_name account < <("$seed" "${seed_to[@]}" --accounts "$accounts" --faxes "$faxes")
echo "seeded in $(python3 -c "print(round($(date +%s.%N) - $start, 1))") s"

"$faxd" serve >"$tmp/node.log" 2>&1 &
pid=$!
trap 'kill $pid 2>/dev/null; wait $pid 2>/dev/null; rm -rf "$tmp"' EXIT
for _ in $(seq 1 300); do curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && break; sleep 0.1; done
api="http://127.0.0.1:$port/v2"
rss() { awk '/VmRSS/ {printf "%.1f MiB\n", $2/1024}' "/proc/$pid/status"; }

# A one-page PDF (Ghostscript when present, else a minimal hand-written one).
pdf="$tmp/page.pdf"
if command -v ps2pdf >/dev/null; then
    printf '%%!PS\n/Helvetica findfont 24 scalefont setfont 72 700 moveto (faxd benchmark page) show\n72 660 moveto (Lorem ipsum dolor sit amet) show showpage\n' >"$tmp/page.ps"
    ps2pdf "$tmp/page.ps" "$pdf"
else
    printf '%%PDF-1.4\n1 0 obj<</Type/Catalog/Pages 2 0 R>>endobj\n2 0 obj<</Type/Pages/Kids[3 0 R]/Count 1>>endobj\n3 0 obj<</Type/Page/Parent 2 0 R/MediaBox[0 0 612 792]>>endobj\ntrailer<</Root 1 0 R>>\n%%%%EOF\n' >"$pdf"
fi

creds=$(printf '%s' 'boss:benchpw' | md5sum | cut -d' ' -f1)
login=$(curl -s -X PUT "$api/user_auth" -d "{\"data\":{\"credentials\":\"$creds\",\"account_name\":\"$account_name\"}}")
token=$(printf '%s' "$login" | python3 -c 'import json,sys; print(json.load(sys.stdin)["auth_token"])')
faxes_url="$api/accounts/$account/faxes"
one=$(curl -s -H "X-Auth-Token: $token" "$faxes_url/outbox?page_size=1" \
    | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"][0]["id"])')
echo "== node RSS with $faxes stored faxes, idle: $(rss)"

run() { # title, then wrk arguments
    local title="$1"; shift
    echo "== $title, $conns connections, ${secs}s"
    wrk -t2 -c"$conns" -d"${secs}s" --latency -H "X-Auth-Token: $token" "$@"
}
# One read run, summed up as "req/s p99" on the last line of its output file.
read_run() { # output file, title, url
    run "$2" "$3" | tee "$1" | grep -E 'Requests/sec|99%| requests in'
}
echo "== reads: $rounds rounds of about, single fax, listing ($((faxes / accounts)) faxes in the account)"
for r in $(seq 1 "$rounds"); do
    read_run "$tmp/about.$r" "round $r: GET /v2/about (HTTP ceiling)" "$api/about"
    read_run "$tmp/single.$r" "round $r: GET /faxes/outbox/{id}" "$faxes_url/outbox/$one"
    read_run "$tmp/listing.$r" "round $r: GET /faxes/outbox?page_size=50" "$faxes_url/outbox?page_size=50"
done
python3 - "$tmp" "$rounds" <<'PY'
import re, statistics, sys
tmp, rounds = sys.argv[1], int(sys.argv[2])
def figures(name, r):
    text = open(f"{tmp}/{name}.{r}").read()
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", text).group(1))
    p99 = re.search(r"99%\s+(\S+)", text).group(1)
    return rps, p99
rows = []
print("== reads, per round (ratios to /about of the same round)")
for r in range(1, rounds + 1):
    (a, ap), (s, sp), (l, lp) = (figures(n, r) for n in ("about", "single", "listing"))
    rows.append((s / a, l / a))
    print(f"   round {r}: about {a:,.0f}/s p99 {ap} | single {s:,.0f}/s = {s / a:.3f}x p99 {sp}"
          f" | listing {l:,.0f}/s = {l / a:.3f}x p99 {lp}")
print(f"== median of {rounds} rounds: single fax {statistics.median(x for x, _ in rows):.3f}x, "
      f"listing {statistics.median(y for _, y in rows):.3f}x of /about "
      f"(lowest single {min(x for x, _ in rows):.3f}x, listing {min(y for _, y in rows):.3f}x)")
PY
echo "== node RSS after the reads: $(rss)"

cat >"$tmp/submit.lua" <<LUA
wrk.method = "PUT"
wrk.headers["X-Auth-Token"] = "$token"
wrk.headers["Content-Type"] = "multipart/mixed; boundary=b3nchB0undary"
local f = assert(io.open("$pdf", "rb"))
local pdf = f:read("*a")
f:close()
wrk.body = "--b3nchB0undary\r\nContent-Type: application/json\r\n\r\n"
  .. '{"data":{"from_number":"+14155550100","to_number":"+15550005123"}}'
  .. "\r\n--b3nchB0undary\r\nContent-Type: application/pdf\r\n\r\n" .. pdf .. "\r\n--b3nchB0undary--\r\n"
accepted = 0
function response(status, headers, body)
  if status == 202 then accepted = accepted + 1 end
end
LUA
t0=$(date +%s.%N)
run "PUT /faxes multipart (1-page PDF, $(wc -c <"$pdf") bytes): accepted" -s "$tmp/submit.lua" "$faxes_url"
t1=$(date +%s.%N)
# Conversion included: wait until no submitted fax is still attaching files.
python3 - "$faxes_url" "$token" "$t0" "$t1" <<'PY'
import json, sys, time, urllib.request
url, token, t0, t1 = sys.argv[1], sys.argv[2], float(sys.argv[3]), float(sys.argv[4])
def jobs():
    out, key = [], None
    while True:
        q = f"{url}/outgoing?page_size=500" + (f"&start_key={key}" if key else "")
        with urllib.request.urlopen(urllib.request.Request(q, headers={"X-Auth-Token": token})) as r:
            body = json.load(r)
        out += body["data"]
        key = body.get("next_start_key")
        if not key:
            return out
while True:
    js = jobs()
    waiting = sum(1 for j in js if j.get("status") == "attaching_files")
    if waiting == 0:
        break
    time.sleep(0.5)
done = time.time()
ready = sum(1 for j in js if j.get("status") in ("pending", "locked", "processing"))
failed = sum(1 for j in js if j.get("status") == "failed")
print(f"== {len(js)} submitted faxes queued; {ready} pending/locked/processing, {failed} failed")
print(f"   all converted {done - t1:.1f} s after the submissions ended: "
      f"{len(js) / (done - t0):.0f} faxes/s reached pending (conversion included)")
PY
echo "== node RSS after the submissions: $(rss)"
