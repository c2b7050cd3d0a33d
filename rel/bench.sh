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
echo "== ESL codec: FreeSWITCH frames captured from a real 1.10.12, framed and typed"
./target/release/examples/esl_bench "${ESL_BENCH_ROUNDS:-2000}"

echo
echo "== e-mail to fax: messages with a 100 KB PDF accepted per second, SMTP session memory"
./target/release/examples/smtp_bench "${SMTP_BENCH_CLIENTS:-4}" "${SMTP_BENCH_MESSAGES:-10}" "${SMTP_BENCH_IDLE:-200}"

echo
echo "== notifications: final write -> mail delivered (maildir, then an aiosmtpd relay)"
./target/release/examples/notify_bench "${NOTIFY_BENCH_FAXES:-200}"
relay_port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
aiosmtpd -n -l "127.0.0.1:$relay_port" -c aiosmtpd.handlers.Sink &
relay_pid=$!
for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$relay_port") 2>/dev/null && break
    sleep 0.1
done
./target/release/examples/notify_bench "${NOTIFY_BENCH_FAXES:-200}" "$relay_port"
kill "$relay_pid" 2>/dev/null; wait "$relay_pid" 2>/dev/null || true

echo
echo "== outbound scheduler: ${FAXD_BENCH_JOBS:-10000} jobs over 100 accounts, null engine"
# Every transmission writes its fax-ready TIFF to the file cache (file_cache_path): first on
# tmpfs (/dev/shm; /tmp is tmpfs on Debian 13), then on the disk of the data directory.
shm=/dev/shm
[ -d "$shm" ] && [ -w "$shm" ] || shm="$tmp"
echo "-- embedded, file cache on $shm"
FAXD_NODE_DATA_DIR="$tmp/outbound-embedded" "$faxd" outbound bench --jobs "${FAXD_BENCH_JOBS:-10000}" --accounts 100 --file-cache "$shm"
echo "-- embedded, file cache on disk ($tmp)"
FAXD_NODE_DATA_DIR="$tmp/outbound-embedded-disk" "$faxd" outbound bench --jobs "${FAXD_BENCH_JOBS:-10000}" --accounts 100 --file-cache "$tmp"
if [ -n "${FAXD_TEST_COUCH_URL:-}" ]; then
    # The test server (PouchDB in one node process) is far slower than CouchDB: fewer jobs.
    echo "-- couchdb ($FAXD_TEST_COUCH_URL), file cache on $shm"
    FAXD_STORE_BACKEND=couchdb FAXD_STORE_COUCH_URL="$FAXD_TEST_COUCH_URL" \
        FAXD_NODE_DATA_DIR="$tmp/outbound-couch" "$faxd" outbound bench --jobs "${FAXD_BENCH_COUCH_JOBS:-1000}" --accounts 10 --file-cache "$shm"
fi

# ---------------------------------------------------------------------------------------------
# Document conversion: faxd's pipeline beside Kazoo's own default commands (kazoo_convert,
# spec §3.2), on the same documents, in one run. CPU = user+sys of the whole process tree,
# minimum of 3 runs; wall in brackets. Needs `rel/deps.sh bench` (ImageMagick, libtiff tools).
echo
echo "== document conversion (CPU ms, min of 3; wall ms in brackets)"
docs="$tmp/docs"
mkdir -p "$docs"
/usr/bin/python3 rel/bench_docs.py "$docs"
# Office documents from the RTF sources (LibreOffice, once).
soffice -env:UserInstallation="file://$tmp/lo-profile" --headless --convert-to docx \
    --outdir "$docs" "$docs/tiny.rtf" "$docs/contract.rtf" >/dev/null 2>&1
imagick=/usr/bin/convert   # ImageMagick itself, not another convert earlier in PATH
out="$tmp/out"
mkdir -p "$out"

# cpu LABEL PAGES CMD…: runs CMD 3 times (each time REPS times in a row, for short jobs that
# the 10 ms clock cannot resolve); prints CPU ms total and per page, wall ms, and the output
# size per page (from $TO, which holds OUT_PAGES pages, PAGES unless set).
cpu() {
    local label="$1" pages="$2"
    shift 2
    local best="" wall="" status=0 reps="${REPS:-1}"
    for _ in 1 2 3; do
        rm -f "$TO"
        if ! /usr/bin/time -f "%U %S %e" -o "$tmp/time" bash -c \
            'n=$1; shift; for _ in $(seq "$n"); do "$@" || exit 1; done' _ "$reps" "$@" >"$tmp/log" 2>&1; then
            status=1
            break
        fi
        read -r u s e <"$tmp/time"
        local ms w
        ms=$(awk -v u="$u" -v s="$s" -v r="$reps" 'BEGIN { printf "%d", (u + s) * 1000 / r }')
        w=$(awk -v e="$e" -v r="$reps" 'BEGIN { printf "%d", e * 1000 / r }')
        if [ -z "$best" ] || [ "$ms" -lt "$best" ]; then best=$ms; wall=$w; fi
    done
    if [ "$status" -ne 0 ]; then
        printf '%-58s FAILED: %s\n' "$label" "$(tail -1 "$tmp/log")"
        return 0
    fi
    last_bytes=$(stat -c %s "$TO" 2>/dev/null || echo 0)
    printf '%-58s %7d ms  %8.1f ms/page  [%6d ms]  %9d B/page\n' "$label" "$best" \
        "$(awk -v b="$best" -v p="$pages" 'BEGIN { print b / p }')" "$wall" $((last_bytes / ${OUT_PAGES:-$pages}))
}
# Kazoo's convert_pdf_command, as a script so that `sh -c` (Kazoo runs commands through sh)
# can call it.
kz_gs="$tmp/kz_gs"
cat >"$kz_gs" <<'GS'
#!/bin/sh
exec /usr/bin/gs -q -r200x200 -g1728x2200 -dPDFFitPage -dNOPAUSE -dBATCH -dSAFER -sDEVICE=tiffg4 -sOutputFile="$2" -- "$1"
GS
chmod +x "$kz_gs"
export kz_gs

# CCITT codec alone (every output page is encoded and then validated by decoding every row):
# CPU ms per page for encode/check/decode on fine text pages and a halftoned photo page.
echo "-- CCITT codec (faxd in-process, CPU ms per page)"
./target/release/examples/ccitt_bench "$docs" 20

# faxd renders PDFs in a warm Ghostscript: `faxd convert --repeat N` runs N jobs in one process
# and reaps its Ghostscript before it exits, so /usr/bin/time counts the child's CPU too; the
# per-page figure of those rows is per job. One-shot rows pay a Ghostscript start each.
echo "-- PDF to fax TIFF"
TO="$out/f.tif"; cpu "faxd   text100.pdf fine" 100 "$faxd" convert "$docs/text100.pdf" "$TO"
TO="$out/f.tif"; cpu "faxd   text100.pdf normal" 100 "$faxd" convert "$docs/text100.pdf" "$TO" --resolution normal
TO="$out/k.tif"; cpu "kazoo  text100.pdf (gs 200x200 tiffg4)" 100 sh -c '$kz_gs "$0" "$1"' "$docs/text100.pdf" "$TO"
TO="$out/f.tif"; REPS=10 cpu "faxd   photo.pdf fine, one-shot" 1 "$faxd" convert "$docs/photo.pdf" "$TO"
TO="$out/f.tif"; OUT_PAGES=1 cpu "faxd   photo.pdf fine, 10 jobs in one process" 10 "$faxd" convert "$docs/photo.pdf" "$TO" --repeat 10
TO="$out/f.tif"; OUT_PAGES=1 cpu "faxd   photo.pdf fine, floyd-steinberg, 10 jobs" 10 \
    env FAXD_CONVERT_DITHER=floyd-steinberg "$faxd" convert "$docs/photo.pdf" "$TO" --repeat 10
TO="$out/k.tif"; REPS=10 cpu "kazoo  photo.pdf (gs 200x200 tiffg4)" 1 sh -c '$kz_gs "$0" "$1"' "$docs/photo.pdf" "$TO"

echo "-- whole job, 1-page PDF: convert + validate + page count"
TO="$out/f.tif"; OUT_PAGES=1 cpu "faxd   20 jobs in one process (warm Ghostscript)" 20 "$faxd" convert "$docs/text1.pdf" "$TO" --repeat 20
TO="$out/f.tif"; REPS=20 cpu "faxd   one-shot (starts Ghostscript)" 1 "$faxd" convert "$docs/text1.pdf" "$TO"
kazoo_job() {
    sh -c '$kz_gs "$FROM" "$TO"' || return 1
    sh -c 'tiffinfo "$TO" >/dev/null' || return 1
    sh -c "tiffinfo \"\$TO\" | egrep 'Width|Length|Resolution|Compression Scheme|Page Number' | sed 's/^ *//' >/dev/null" || return 1
    sh -c "tiffinfo \"\$TO\" | grep 'Page Number' | grep -c P >/dev/null"
}
export -f kazoo_job
TO="$out/k.tif"; REPS=20 cpu "kazoo  gs, tiffinfo validate, info, page count" 1 \
    env FROM="$docs/text1.pdf" TO="$out/k.tif" bash -c kazoo_job

echo "-- images to fax TIFF"
TO="$out/f.tif"; REPS=10 cpu "faxd   doc.png (1275x1650)" 1 "$faxd" convert "$docs/doc.png" "$TO"
TO="$out/k.tif"; cpu "kazoo  doc.png (convert_image_command)" 1 "$imagick" "$docs/doc.png" -resample 200x200 \
    -units PixelsPerInch -size 1728x2200 -compress group4 "$TO"
TO="$out/f.tif"; REPS=5 cpu "faxd   color3.tif (3 pages RGB)" 3 "$faxd" convert "$docs/color3.tif" "$TO"
TO="$out/k.tif"; cpu "kazoo  color3.tif (large_tiff_command)" 3 "$imagick" "$docs/color3.tif" -resample 200x200 \
    -units PixelsPerInch -resize '1728!x2200' -compress group4 "$TO"

echo "-- Office to fax TIFF (compare wall ms: faxd's soffice is not a reaped child, so its CPU is not counted)"
for d in tiny:1 contract:12; do
    n=${d#*:}; d=${d%:*}
    TO="$out/f.tif"; cpu "faxd   $d.docx cold (starts LibreOffice)" "$n" "$faxd" convert "$docs/$d.docx" "$TO"
    TO="$out/k.tif"; cpu "kazoo  $d.docx (libreoffice --convert-to pdf, then gs)" "$n" sh -c \
        'libreoffice -env:UserInstallation=file://$2/kz-profile --headless --convert-to pdf "$0" --outdir "$2" >/dev/null 2>&1 && $kz_gs "$2/$(basename "$0" .docx).pdf" "$1"' \
        "$docs/$d.docx" "$out/k.tif" "$out"
    "$faxd" convert "$docs/$d.docx" "$out/w.tif" --repeat 4 | grep -v ' runs: ' | tail -3 \
        | awk -v d="$d" '{ printf "faxd   %s.docx warm (LibreOffice kept running): %s wall\n", d, $(NF-1) " " $NF }'
done

echo "-- fax TIFF to PDF (100 fine text pages)"
"$faxd" convert "$docs/text100.pdf" "$out/g4.tif" >/dev/null
tiffcp -c g3:2d:fill -f lsb2msb -r 128 "$out/g4.tif" "$out/g3.tif"
for c in g4 g3; do
    TO="$out/f.pdf"; REPS=10 cpu "faxd   $c.tif -> pdf (CCITT wrapped as is)" 100 "$faxd" convert "$out/$c.tif" "$TO" --format pdf
    TO="$out/k.pdf"; REPS=10 cpu "kazoo  $c.tif -> pdf (tiff2pdf)" 100 tiff2pdf -o "$TO" "$out/$c.tif"
done
echo "-- geometry: faxd 1728x2156 @204x196 (letter) / 1728x2292 (A4), fit to page; Kazoo 1728x2200 @200x200"
