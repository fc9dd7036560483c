#!/usr/bin/env bash
# Checks and tests the Python package in python/: ruff, then pytest against
# the real Rust readers (slurpstats, mmash), real gunicorn and real
# processes. Run from anywhere; the lead's ./test.sh calls it after the
# cargo build.
#
# Needs the Rust binaries built first, in the debug profile:
#   cargo build -p slurpstats -p mmash -p pollstats --bins
#   cargo build --example demo            # the demo writer some tests read
# They are taken from $MMSTATS_BIN_DIR (default: <repo>/target/debug) and
# the demo from $MMSTATS_DEMO (default: <repo>/target/debug/examples/demo).
# A test that needs a missing binary, or gunicorn, fails: nothing is skipped.
#
# Makes (or reuses) a virtualenv in <repo>/target/pyvenv with pytest,
# gunicorn, prometheus_client (for the benchmark) and ruff from PyPI, and
# installs ./python into it as a user would (pip install ./python).
set -euo pipefail

here="$(cd "$(dirname "$0")" && pwd)"
repo="$(cd "$here/.." && pwd)"
venv="$repo/target/pyvenv"

export MMSTATS_BIN_DIR="${MMSTATS_BIN_DIR:-$repo/target/debug}"
export MMSTATS_DEMO="${MMSTATS_DEMO:-$repo/target/debug/examples/demo}"

if [ ! -x "$venv/bin/python" ]; then
    echo "== making the virtualenv $venv"
    python3 -m venv "$venv"
fi
py="$venv/bin/python"

echo "== installing test tools and ./python into $venv"
"$py" -m pip install --quiet pytest gunicorn prometheus_client ruff
# --force-reinstall: the package's version stays 0.9.0 while its code changes.
"$py" -m pip install --quiet --force-reinstall --no-deps "$here"

cd "$repo"
echo "== ruff check python"
"$venv/bin/ruff" check python
echo "== ruff format --check python"
"$venv/bin/ruff" format --check python

echo "== pytest python/tests"
# Exit status 5 (no test collected) is a failure like any other non-zero.
"$py" -m pytest -p no:cacheprovider -q python/tests "$@"
