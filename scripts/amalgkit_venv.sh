#!/usr/bin/env bash
# A venv of its own for amalgkit (the downstream client the test suite feeds our output into).
#
#   scripts/amalgkit_venv.sh [CACHE_DIR [TARBALL]]
#
# CACHE_DIR defaults to ~/.cache/rnaseq-batch/amalgkit-venv, TARBALL to
# ../shared/clients/amalgkit-8c1a759.tar.gz beside the project root. The venv is built once:
# CACHE_DIR/.stamp holds the tarball's sha256 and the requirements installed, and a later call
# that finds the same stamp (and the executable) does nothing but print. The stamp is written
# last, so an interrupted build is redone in full by the next call; concurrent calls wait on a lock.
#
# Prints the path of the venv's `amalgkit` executable on stdout, and nothing else there (pip's
# output goes to stderr). The interpreter is $AMALGKIT_PYTHON, else the first of python3,
# python3.13, python3.12, python3.11 that is 3.11 or newer (amalgkit needs 3.11).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cache=${1:-${HOME}/.cache/rnaseq-batch/amalgkit-venv}
tarball=${2:-${root}/../shared/clients/amalgkit-8c1a759.tar.gz}
# amalgkit 0.16.71's merge breaks on pandas 3 ("Invalid value '100.0' for dtype 'str'")
requirements=(numpy 'pandas<3' scipy matplotlib statsmodels scikit-learn biopython)

die() { echo "amalgkit_venv: $*" >&2; exit 1; }

[ -f "$tarball" ] || die "no amalgkit tarball at $tarball"
sha=$(sha256sum "$tarball" | cut -d' ' -f1)
stamp_text=$(printf 'sha256 %s\nrequirements %s\n' "$sha" "${requirements[*]}")
exe="$cache/bin/amalgkit"

is_current() { [ -x "$exe" ] && [ -f "$cache/.stamp" ] && [ "$(cat "$cache/.stamp")" = "$stamp_text" ]; }

if is_current; then
    echo "$exe"
    exit 0
fi

mkdir -p "$(dirname "$cache")"
exec 9>"$cache.lock"
flock 9
if is_current; then  # built by another call while this one waited
    echo "$exe"
    exit 0
fi

pick_python() {
    local candidates=("${AMALGKIT_PYTHON:-}" python3 python3.13 python3.12 python3.11) p
    for p in "${candidates[@]}"; do
        [ -n "$p" ] && command -v "$p" >/dev/null || continue
        if "$p" -c 'import sys, venv; sys.exit(sys.version_info < (3, 11))' 2>/dev/null; then
            echo "$p"
            return 0
        fi
    done
    return 1
}
python=$(pick_python) || die "no Python 3.11 or newer with the venv module (set AMALGKIT_PYTHON)"

src=$(mktemp -d "${TMPDIR:-/tmp}/amalgkit-src.XXXXXX")
trap 'rm -rf "$src"' EXIT
tar -xzf "$tarball" -C "$src"
pkg=$(dirname "$(find "$src" -maxdepth 2 -name pyproject.toml | head -n 1)")
[ -f "$pkg/pyproject.toml" ] || die "no pyproject.toml in $tarball"

start=$(date +%s)
rm -rf "$cache"  # a venv cannot be moved once made: it is built where it stays
"$python" -m venv "$cache" >&2
"$cache/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >&2
"$cache/bin/python" -m pip install -q --disable-pip-version-check "${requirements[@]}" >&2
"$cache/bin/python" -m pip install -q --disable-pip-version-check "$pkg" "${requirements[@]}" >&2
"$cache/bin/python" -c 'import pandas, sys; sys.exit(int(pandas.__version__.split(".")[0]) >= 3)' \
    || die "pandas 3 was installed; amalgkit 0.16.71 needs pandas < 3"
[ -x "$exe" ] || die "pip installed no amalgkit executable at $exe"
printf '%s' "$stamp_text" >"$cache/.stamp.tmp"
mv "$cache/.stamp.tmp" "$cache/.stamp"
echo "amalgkit_venv: built $cache in $(($(date +%s) - start)) s" >&2
echo "$exe"
