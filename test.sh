#!/usr/bin/env bash
# The project's whole check: formatting, lints, every test, the loom models
# of the memory-ordering protocols, one pass of each benchmark (criterion's
# --test mode: runs each once, measures nothing), and the packaging (man
# pages, completions, the systemd unit, the Debian package).
#
# It first installs what the tests need when missing (scripts/install-deps.sh:
# as root through apt-get, else it stops naming the missing packages).
# The strace check of the hot path skips itself when strace is missing;
# MMSTATS_REQUIRE_STRACE=1 turns that skip into a failure (CI sets it).
set -euo pipefail
cd "$(dirname "$0")"
target=${CARGO_TARGET_DIR:-target}

echo "== tools the tests need"
scripts/install-deps.sh

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets -- -D warnings

echo "== cargo test"
cargo test --workspace

if [ -x python/run-tests.sh ]; then
  echo "== the Python package, against the Rust binaries"
  cargo build -p slurpstats -p pollstats -p mmash -p check_mmash
  cargo build -p mmstats --example demo
  MMSTATS_BIN_DIR="$(cd "$target/debug" && pwd)" python/run-tests.sh
fi

echo "== loom models of the memory-ordering protocols"
# A target dir of their own: --cfg loom would rebuild the normal one.
RUSTFLAGS="--cfg loom" CARGO_TARGET_DIR="$target/loom" \
    cargo test -p mmstats --lib --release protocol::

echo "== benches, one pass each"
cargo bench --bench hot_path --bench lifecycle --bench aggregate -- --test
