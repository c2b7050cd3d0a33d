#!/usr/bin/env bash
# Installs what building, running and testing faxd needs on Debian 12, skipping what is
# already there: Debian packages, and the CouchDB-API test server's npm packages.
#   rel/deps.sh          build + run dependencies
#   rel/deps.sh test     also the test dependencies
#   rel/deps.sh bench    also what the benchmark compares with (ImageMagick)
#   rel/deps.sh --list [test|bench]   prints the Debian packages of that mode, installs nothing
# rel/check-programs.sh (run by `make test`) checks that every program faxd, its tests and its
# benchmarks spawn comes from a package listed here for the mode that needs it.
set -euo pipefail
cd "$(dirname "$0")/.."
list_only=""
if [ "${1:-}" = "--list" ]; then
    list_only=1
    shift
fi
mode="${1:-}"

# Build: the C parts of dependencies (SQLite is bundled; spandsp needs clang/tiff/jpeg;
# libssl-dev: the system OpenSSL that `[smtp] legacy_tls` links, never vendored).
packages=(pkg-config libclang-dev libtiff-dev libjpeg-dev libssl-dev curl)
if [ "$mode" = "test" ] || [ "$mode" = "bench" ]; then
    # nodejs/npm: the CouchDB-API test server. libtiff-tools: ppm2tiff and tiffcp make the
    # reference fax TIFFs of the CCITT tests. procps: kill, which the node tests use to pause
    # (SIGSTOP/SIGCONT) and kill faxd processes. swaks and python3 (smtplib, email): real SMTP
    # clients of the e-mail-to-fax tests. python3-aiosmtpd: the SMTP relay the notification
    # tests deliver to. openssl: certificates of the TLS tests.
    packages+=(nodejs npm libtiff-tools procps swaks python3 python3-aiosmtpd openssl)
fi
# Document conversion at run time (installed without Recommends, which would pull the GUI):
# Ghostscript for PDF; LibreOffice headless (Writer, Calc, Impress: soffice is in
# libreoffice-common) with python3-uno for the warm converter, started by /usr/bin/python3
# (python3-minimal); metric-compatible fonts (Carlito/Caladea for Calibri/Cambria, Liberation
# for Arial/Times/Courier) so Office layouts keep their page breaks.
lean=(ghostscript python3-minimal libreoffice-common libreoffice-writer-nogui libreoffice-calc-nogui libreoffice-impress-nogui
    python3-uno fonts-crosextra-carlito fonts-crosextra-caladea fonts-liberation2 fonts-dejavu-core)
if [ "$mode" = "bench" ]; then
    # Kazoo's own conversion commands, for comparison only (faxd does not use them); GNU time
    # for the CPU figures; wrk drives `make bench-api`.
    lean+=(imagemagick time wrk)
fi

if [ -n "$list_only" ]; then
    printf '%s\n' "${packages[@]}" "${lean[@]}"
    exit 0
fi

missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
# Node and npm may come from outside Debian (a preinstalled Node 20): accept those.
if command -v node >/dev/null && command -v npm >/dev/null; then
    filtered=()
    for p in "${missing[@]}"; do
        case "$p" in nodejs|npm) ;; *) filtered+=("$p") ;; esac
    done
    missing=("${filtered[@]}")
fi
if [ "${#missing[@]}" -gt 0 ]; then
    echo "deps: installing ${missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}"
fi
lean_missing=()
for p in "${lean[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || lean_missing+=("$p")
done
if [ "${#lean_missing[@]}" -gt 0 ]; then
    echo "deps: installing ${lean_missing[*]}"
    SUDO=""
    [ "$(id -u)" -eq 0 ] || SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${lean_missing[@]}"
fi

if ! command -v cargo >/dev/null; then
    echo "deps: cargo (Rust 1.95) is required; install it with rustup" >&2
    exit 1
fi

if [ "$mode" = "test" ] || [ "$mode" = "bench" ]; then
    # The CouchDB-API test server (pouchdb-server + fixes) into tests/couchdb/node_modules.
    if [ ! -f tests/couchdb/node_modules/.package-lock.json ] \
        || [ tests/couchdb/package-lock.json -nt tests/couchdb/node_modules/.package-lock.json ]; then
        echo "deps: installing the CouchDB-API test server (npm ci)"
        npm ci --prefix tests/couchdb --no-audit --no-fund --loglevel=error
    fi
fi
