#!/usr/bin/env bash
# Checks that every external program faxd, its tests and its benchmarks spawn is installed by
# rel/deps.sh in the mode that needs it, so a fresh machine runs `make run`, `make test` and
# `make bench` with no hand-installed extras. Run by `make test` after `rel/deps.sh test`.
#
# Programs come from two places:
#   - every `Command::new("<name>")` literal in the Rust sources (found here, not listed);
#   - the lists below, for programs started through a shell string, a script or a helper.
# A program passes when it is on this machine and its file belongs to a Debian package that
# `rel/deps.sh --list <mode>` names, or to an Essential or Priority: required package (both
# are on every Debian system).
set -euo pipefail
cd "$(dirname "$0")/.."

# Started by faxd itself (`make run`): the LibreOffice helper (python3 → soffice), shells for
# Kazoo-style command overrides, Ghostscript.
run_programs=(sh python3 soffice gs)
# Started by the tests: shell strings in sandbox and conversion tests, the CouchDB-API test
# server (node, npm via deps.sh), kill for SIGSTOP/SIGCONT/SIGKILL of faxd nodes, the
# aiosmtpd relay and /usr/bin/python3 (its e-mail parser reads the notification mail).
test_programs=(sh sleep cp test awk cat grep head env stat kill true node npm aiosmtpd
    /usr/bin/python3)
# Started by `make bench` and `make bench-api` (rel/bench.sh, rel/bench-api.sh).
bench_programs=(tiffcp tiff2pdf tiffinfo /usr/bin/convert /usr/bin/time wrk curl ps python3
    soffice gs sed egrep bash)

rust_programs=()
while IFS= read -r name; do
    rust_programs+=("$name")
done < <(grep -rhoE 'Command::new\("[^"]+"\)' --include='*.rs' src actors supervisors tests examples \
    | sed -E 's/Command::new\("([^"]+)"\)/\1/' | sort -u)
[ "${#rust_programs[@]}" -gt 0 ] || { echo "check-programs: found no Command::new in the sources" >&2; exit 1; }

mapfile -t run_pkgs < <(rel/deps.sh --list)
mapfile -t test_pkgs < <(rel/deps.sh --list test)
mapfile -t bench_pkgs < <(rel/deps.sh --list bench)

# package_of PROGRAM: the Debian package that owns the program's file ("" when none does).
package_of() {
    local prog="$1" path candidates=() c owner
    if [[ "$prog" == /* ]]; then
        candidates=("$prog")
    else
        path="$(type -P "$prog" || true)"
        [ -n "$path" ] && candidates+=("$path")
        for dir in /usr/bin /bin /usr/sbin /sbin /usr/lib/libreoffice/program; do
            candidates+=("$dir/$prog")
        done
    fi
    for c in "${candidates[@]}"; do
        [ -e "$c" ] || continue
        for f in "$c" "$(readlink -f "$c")"; do
            owner="$(dpkg -S "$f" 2>/dev/null | grep -v '^diversion by' | head -n1 | cut -d: -f1 || true)"
            if [ -n "$owner" ]; then
                echo "${owner%%,*}"
                return
            fi
        done
    done
}

failures=0
# check MODE PROGRAM PACKAGES…
check() {
    local mode="$1" prog="$2"
    shift 2
    local pkg essential
    pkg="$(package_of "$prog")"
    if [ -z "$pkg" ]; then
        echo "check-programs: $prog ($mode) is not on this machine from any Debian package;" \
            "add its package to rel/deps.sh ($mode)" >&2
        failures=$((failures + 1))
        return
    fi
    essential="$(dpkg-query -W -f='${Essential}/${Priority}' "$pkg" 2>/dev/null || true)"
    if [ "${essential%%/*}" = "yes" ] || [ "${essential#*/}" = "required" ]; then
        printf '  %-18s %-6s %s (base system)\n' "$prog" "$mode" "$pkg"
        return
    fi
    for p in "$@"; do
        if [ "$p" = "$pkg" ]; then
            printf '  %-18s %-6s %s\n' "$prog" "$mode" "$pkg"
            return
        fi
    done
    echo "check-programs: $prog ($mode) comes from package $pkg, which rel/deps.sh $mode does not install" >&2
    failures=$((failures + 1))
}

echo "check-programs: programs spawned by faxd, its tests and benchmarks → Debian package"
for p in "${run_programs[@]}"; do check run "$p" "${run_pkgs[@]}"; done
for p in "${rust_programs[@]}" "${test_programs[@]}"; do check test "$p" "${test_pkgs[@]}"; done
# The bench tools are checked only where `rel/deps.sh bench` has run (make bench installs them).
if [ "${CHECK_BENCH:-}" = 1 ]; then
    for p in "${bench_programs[@]}"; do check bench "$p" "${bench_pkgs[@]}"; done
else
    for p in "${bench_programs[@]}"; do
        pkg="$(package_of "$p")"
        [ -z "$pkg" ] && continue
        found=""
        for q in "${bench_pkgs[@]}"; do [ "$q" = "$pkg" ] && found=1; done
        essential="$(dpkg-query -W -f='${Essential}/${Priority}' "$pkg" 2>/dev/null || true)"
        if [ -z "$found" ] && [ "${essential%%/*}" != yes ] && [ "${essential#*/}" != required ]; then
            echo "check-programs: $p (bench) comes from package $pkg, which rel/deps.sh bench does not install" >&2
            failures=$((failures + 1))
        fi
    done
fi
if [ "$failures" -gt 0 ]; then
    echo "check-programs: $failures program(s) not provided by rel/deps.sh" >&2
    exit 1
fi
echo "check-programs: all provided"
